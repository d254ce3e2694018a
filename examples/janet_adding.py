"""JANET against LSTM on a long-memory task: the adding problem at long sequence lengths.

JANET (van der Westhuizen & Lasenby 2018) is an LSTM that keeps only its forget gate (the input
gate is tied to it, there is no output gate): half the LSTM's weights. With the chrono
initialisation of its forget bias (``chrono_t_max`` = the sequence length) its units start with
memories spread over time scales up to the whole sequence, which the paper credits for its
results on long sequences.

The adding problem (see ``long_term_dependency.py``): two channels, a value in [0, 1) and a
marker at two steps, one in each half; the target is the sum of the two marked values.
Predicting the mean gives MSE 1/6 = 0.167; "solved" is a test MSE below 0.01. Both cells get
the same number of units, optimizer (Adam 0.01, gradient norm clipped at 1), batch size (64),
fresh data every round and the same step budget. The LSTM uses Keras' ``unit_forget_bias``.

Writes ``janet_adding.png``: validation MSE against training steps, one panel per T.

Run:  python examples/janet_adding.py            (a few minutes on 2 cores)
      python examples/janet_adding.py --quick    (seconds; also EDGERNN_QUICK=1)
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from edgernn import Sequential, TrainingDiverged  # noqa: E402
from edgernn.datasets import adding_problem  # noqa: E402
from edgernn.layers import JANET, LSTM, Dense  # noqa: E402
from edgernn.optimizers import Adam  # noqa: E402

COLORS = {"JANET": "tab:purple", "LSTM": "tab:blue"}
MEAN_MSE = 1.0 / 6.0
SOLVED = 0.01


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG file (default: current directory)")
    p.add_argument("--T", type=int, nargs="+", default=None, help="sequence lengths (default 100 300)")
    p.add_argument("--units", type=int, default=None, help="hidden units of both cells (default 32)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps per model (default 1500)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    defaults = dict(T=[20], units=8, max_steps=30) if args.quick else dict(T=[100, 300], units=32, max_steps=1500)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def build(cell, T, units, seed):
    layer = JANET(units, chrono_t_max=T, input_shape=(None, 2)) if cell == "JANET" else \
        LSTM(units, input_shape=(None, 2))
    model = Sequential([layer, Dense(1)], seed=seed)
    model.compile(loss="mse", optimizer=Adam(learning_rate=0.01, global_clipnorm=1.0))
    return model


def train(cell, T, args, log_every, batch_size=64):
    """Fresh training data every round; stop once clearly solved."""
    model = build(cell, T, args.units, args.seed)
    X_val, y_val = adding_problem(300 if args.quick else 1000, T, seed=10_000 + T)
    steps, curve = [0], [float(model.evaluate(X_val, y_val))]
    t0 = time.perf_counter()
    round_ = 0
    while steps[-1] < args.max_steps:
        X, y = adding_problem(log_every * batch_size, T, seed=(args.seed, T, round_))
        round_ += 1
        try:
            model.fit(X, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
        except TrainingDiverged as exc:
            print(f"    {cell} T={T}: {exc}")
            break
        steps.append(steps[-1] + log_every)
        curve.append(float(model.evaluate(X_val, y_val)))
        if curve[-1] < SOLVED / 4:
            break
    seconds = time.perf_counter() - t0
    X_test, y_test = adding_problem(300 if args.quick else 2000, T, seed=20_000 + T)
    solved_at = next((s for s, c in zip(steps, curve, strict=True) if c < SOLVED), None)
    return dict(steps=steps, curve=curve, test_mse=float(model.evaluate(X_test, y_test)), seconds=seconds,
                solved_at=solved_at, params=model.count_params(), step_ms=1e3 * seconds / max(1, steps[-1]))


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    log_every = 10 if args.quick else 50
    print(f"Adding problem, T = {args.T}; JANET (chrono_t_max = T) vs LSTM, {args.units} units each, Adam(0.01), "
          f"batch 64, at most {args.max_steps} steps. Solved = test MSE < {SOLVED} (mean predictor {MEAN_MSE:.3f}).")
    results = {}
    for T in args.T:
        for cell in ("JANET", "LSTM"):
            r = train(cell, T, args, log_every)
            results[cell, T] = r
            solved = f"solved (val) at step {r['solved_at']}" if r["solved_at"] is not None else "not solved"
            print(f"  T={T:4d} {cell:5s} ({r['params']} parameters): test MSE {r['test_mse']:.4f} after "
                  f"{r['steps'][-1]} steps, {solved}; {r['seconds']:.1f} s of training "
                  f"({r['step_ms']:.1f} ms per step with evaluation)")
    fig, axes = plt.subplots(1, len(args.T), figsize=(5.2 * len(args.T), 4.5), squeeze=False)
    for ax, T in zip(axes[0], args.T, strict=True):
        for cell in ("JANET", "LSTM"):
            r = results[cell, T]
            ax.plot(r["steps"], r["curve"], color=COLORS[cell], lw=1.6,
                    label=f"{cell} ({r['params']} params): test {r['test_mse']:.4f}")
        ax.axhline(MEAN_MSE, color="gray", ls=":", lw=1, label="predict the mean")
        ax.axhline(SOLVED, color="black", ls="--", lw=1, label="solved")
        ax.set_yscale("log")
        ax.set_title(f"adding problem, T = {T}")
        ax.set_xlabel("training steps (batch 64)")
        ax.set_ylabel("validation MSE")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(args.out, "janet_adding.png")
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
