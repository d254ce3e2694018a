"""Long-term dependencies: why LSTM and GRU remember what a plain RNN forgets.

The adding problem (Hochreiter & Schmidhuber, 1997): each sequence has T steps of two
channels, a random value in [0, 1) and a marker that is 1 at exactly two steps, one in each
half of the sequence. The target is the sum of the two marked values. Predicting the mean
(1.0) gives a mean squared error of 1/6 = 0.167; a model "solves" the task when its test MSE
is below 0.01, which it can only do by carrying the first marked value across up to T steps.

We train a SimpleRNN, an LSTM and a GRU of the same size (units) with the same optimizer,
batch size and step budget at several T, and write two plots:

- ``long_term_dependency_loss.png``: validation MSE against training steps, one panel per T;
- ``long_term_dependency_gradients.png``: the norm of the gradient of the loss with respect
  to the input at each time step, ||dL/dx_t||, averaged over a batch -- how much of the
  error signal reaches step t going backwards through time, at initialisation and after
  training. At initialisation it fades for all three cells (the gates of LSTM and GRU start
  half closed). Training opens the gates of LSTM and GRU, and the gradient then reaches step
  1 undiminished; the SimpleRNN has no gate to open, and its gradient still shrinks
  geometrically with the distance from the end: the vanishing gradient, made visible.

Run:  python examples/long_term_dependency.py            (2 to 3 minutes on 2 cores)
      python examples/long_term_dependency.py --quick    (seconds; also EDGERNN_QUICK=1)
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from edgernn import Sequential, TrainingDiverged  # noqa: E402
from edgernn.datasets import adding_problem  # noqa: E402
from edgernn.layers import GRU, LSTM, Dense, SimpleRNN  # noqa: E402
from edgernn.optimizers import Adam  # noqa: E402

CELLS = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
COLORS = {"SimpleRNN": "tab:red", "LSTM": "tab:blue", "GRU": "tab:green"}
MEAN_MSE = 1.0 / 6.0  # MSE of always predicting 1.0
SOLVED = 0.01  # test MSE below this = solved


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG files (default: current directory)")
    p.add_argument("--T", type=int, nargs="+", default=None, help="sequence lengths (default 20 50 100 200)")
    p.add_argument("--units", type=int, default=None, help="hidden units of every cell (default 32)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps per model (default 3000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.quick:
        defaults = dict(T=[10, 20], units=8, max_steps=40)
    else:
        defaults = dict(T=[20, 50, 100, 200], units=32, max_steps=3000)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def build(cell, units, seed):
    """One recurrent layer reading the whole sequence, then a linear output."""
    model = Sequential([CELLS[cell](units, input_shape=(None, 2)), Dense(1)], seed=seed)
    # The same optimizer for all three cells; clipping keeps the SimpleRNN from exploding.
    model.compile(loss="mse", optimizer=Adam(learning_rate=0.01, global_clipnorm=1.0))
    return model


def input_gradient_norms(model, X, y):
    """||dL/dx_t|| for every time step t, averaged over the batch (one forward + backward).

    Uses the layers' own forward/backward: exactly the signal BPTT propagates. Computed on a
    float64 copy of the model, so that gradients far below float32's range (1e-38) are still
    measured instead of becoming 0.
    """
    m64 = Sequential.from_config(model.get_config())
    m64.set_weights(model.get_weights())
    m64.astype("float64")
    out = X.astype(np.float64)
    for layer in m64.layers:
        out = layer.forward(out, training=False, need_grad=True)
    _, dy = model.loss.value_and_grad(y.astype(np.float64), out)
    for layer in reversed(m64.layers):
        dy = layer.backward(dy)
    return np.linalg.norm(dy, axis=2).mean(axis=0)  # (T,)


def validation_set(T, quick):
    """The fixed validation sequences at length T (the same for every model)."""
    return adding_problem(500 if quick else 1000, T, seed=10_000 + T)


def test_set_mse(model, T):
    """MSE on 2000 fixed test sequences of length T (never seen in training or validation)."""
    X_test, y_test = adding_problem(2000, T, seed=20_000 + T)
    return float(model.evaluate(X_test, y_test))


def train_on_fresh_data(model, name, T, X_val, y_val, max_steps, log_every, batch_size, seed):
    """Train `model` (compiled) on the adding problem at length T, on fresh data every round.

    Each round of `log_every` steps trains on a new chunk of sequences (seeded by
    ``(seed, T, round)``: the model never sees a sequence twice), then records the
    validation MSE. Stops after `max_steps` steps, early once clearly solved
    (validation MSE < SOLVED / 4), or if training diverges. Also used by indrnn_adding.py.

    Returns dict(steps, curve, seconds, diverged): ``curve[i]`` is the validation MSE after
    ``steps[i]`` steps (``steps[0] = 0``, before training); seconds of training only.
    """
    steps, curve = [0], [float(model.evaluate(X_val, y_val))]
    t0 = time.perf_counter()
    diverged = False
    round_ = 0
    while steps[-1] < max_steps:
        # a new chunk of training data each round: the model never sees a sequence twice
        X, y = adding_problem(log_every * batch_size, T, seed=(seed, T, round_))
        round_ += 1
        try:
            model.fit(X, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
        except TrainingDiverged as exc:
            print(f"    {name} T={T}: {exc}")
            diverged = True
            break
        steps.append(steps[-1] + log_every)
        curve.append(float(model.evaluate(X_val, y_val)))
        if curve[-1] < SOLVED / 4:  # well below the threshold: stop spending time
            break
    return dict(steps=steps, curve=curve, seconds=time.perf_counter() - t0, diverged=diverged)


def train(cell, T, args, log_every, batch_size=64):
    """Train on fresh data every `log_every` steps; stop early once clearly solved."""
    model = build(cell, args.units, args.seed)
    X_val, y_val = validation_set(T, args.quick)
    grad_init = input_gradient_norms(model, X_val[:256], y_val[:256])
    r = train_on_fresh_data(model, cell, T, X_val, y_val, args.max_steps, log_every, batch_size, args.seed)
    grad_trained = input_gradient_norms(model, X_val[:256], y_val[:256])
    return dict(r, test_mse=test_set_mse(model, T), grad_init=grad_init, grad_trained=grad_trained)


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    log_every = 10 if args.quick else 50
    print(f"Adding problem, T = {args.T}; SimpleRNN vs LSTM vs GRU, {args.units} units each, Adam(0.01), "
          f"batch 64, at most {args.max_steps} steps per model. Solved = test MSE < {SOLVED} "
          f"(predicting the mean: {MEAN_MSE:.3f}).")
    for cell in CELLS:
        print(f"  {cell}({args.units}) + Dense(1): {_nparams(cell, args.units)} parameters")
    results = {}
    t_start = time.perf_counter()
    for T in args.T:
        for cell in CELLS:
            r = train(cell, T, args, log_every)
            results[cell, T] = r
            print(f"  T={T:4d} {cell:9s} test MSE {r['test_mse']:.4f} after {r['steps'][-1]:5d} steps "
                  f"({r['seconds']:.1f} s){'  SOLVED' if r['test_mse'] < SOLVED else ''}")
    total = time.perf_counter() - t_start

    # ---- plot 1: validation loss curves, one panel per T --------------------------------
    fig, axes = plt.subplots(1, len(args.T), figsize=(5.2 * len(args.T), 4.8), squeeze=False)
    for ax, T in zip(axes[0], args.T, strict=True):
        for cell in CELLS:
            r = results[cell, T]
            ax.plot(r["steps"], r["curve"], color=COLORS[cell], lw=1.6,
                    label=f"{cell} (test {r['test_mse']:.3f})")
        ax.axhline(MEAN_MSE, color="0.5", ls="--", lw=1)
        ax.axhline(SOLVED, color="k", ls=":", lw=1)
        ax.text(0.01, MEAN_MSE * 1.15, "predict the mean", fontsize=8, color="0.4",
                transform=ax.get_yaxis_transform())
        ax.text(0.01, SOLVED * 1.15, "solved", fontsize=8, transform=ax.get_yaxis_transform())
        ax.set_yscale("log")
        ax.set_ylim(5e-4, 0.5)
        ax.set_title(f"adding problem, T = {T}")
        ax.set_xlabel("training step (batch 64)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    axes[0][0].set_ylabel("validation MSE")
    fig.tight_layout(w_pad=2.0)
    loss_png = os.path.join(args.out, "long_term_dependency_loss.png")
    fig.savefig(loss_png, dpi=100)
    plt.close(fig)

    # ---- plot 2: gradient reaching each time step (largest T that is <= 100, else largest) ---
    T_g = max([T for T in args.T if T <= 100] or args.T)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, key, title in ((axes[0], "grad_init", "at initialisation"), (axes[1], "grad_trained", "after training")):
        for cell in CELLS:
            g = results[cell, T_g][key]
            ax.semilogy(np.arange(1, T_g + 1), g, color=COLORS[cell], lw=1.6, label=cell)
        ax.set_title(f"||dL/dx_t|| reaching step t, T = {T_g},\n{title}", fontsize=10)
        ax.set_xlabel("time step t (the loss is computed after the last step)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("gradient norm (mean over 256 sequences)")
    fig.tight_layout(w_pad=2.0)
    grad_png = os.path.join(args.out, "long_term_dependency_gradients.png")
    fig.savefig(grad_png, dpi=100)
    plt.close(fig)

    # ---- the verdict ----------------------------------------------------------------------
    print(f"\nGradient reaching the first step relative to the last step, ||dL/dx_1|| / ||dL/dx_T||, T = {T_g}:")
    print("  " + "cell".ljust(10) + "at initialisation".rjust(20) + "after training".rjust(18))
    for cell in CELLS:
        r = results[cell, T_g]
        print("  " + cell.ljust(10) + f"{r['grad_init'][0] / r['grad_init'][-1]:.1e}".rjust(20)
              + f"{r['grad_trained'][0] / r['grad_trained'][-1]:.1e}".rjust(18))
    print("  (At initialisation the gates of LSTM and GRU are half closed and the signal fades too; "
          "training opens them.\n   A SimpleRNN has no gate to open: its gradient keeps vanishing, "
          "so it never learns to carry the first value.)")
    print("\nWhich cells solved which T (test MSE < 0.01; predicting the mean gives 0.167):")
    print("  " + "cell".ljust(10) + "".join(f"T={T}".rjust(16) for T in args.T))
    for cell in CELLS:
        row = ""
        for T in args.T:
            r = results[cell, T]
            row += (f"{r['test_mse']:.4f} {'solved' if r['test_mse'] < SOLVED else 'FAILED'}").rjust(16)
        print("  " + cell.ljust(10) + row)
    for cell in CELLS:
        solved = [T for T in args.T if results[cell, T]["test_mse"] < SOLVED]
        print(f"  {cell} solved T = {solved if solved else 'none'}")
    print(f"\ntotal training time {total:.1f} s")
    print(f"plots: {loss_png}, {grad_png}")


def _nparams(cell, units):
    m = Sequential([CELLS[cell](units, input_shape=(None, 2)), Dense(1)], seed=0)
    m.build((None, 2))
    return m.count_params()


if __name__ == "__main__":
    main()
