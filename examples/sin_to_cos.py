"""Sequence to sequence: read a sine wave, write its cosine, step by step.

Each sample is a window of a sine wave sin(w t + phi) with a random phase phi and a random
frequency w; the target at every step is the cosine cos(w t + phi) at the same step. An LSTM
with ``return_sequences=True`` followed by ``Dense(1)`` (applied at every time step) learns
the mapping. The cosine at step t is the scaled derivative of the sine, so the model has to
infer the phase and the frequency from what it has read so far: its first outputs are
guesses (at t = 0 one value cannot tell a rising sine from a falling one) and they improve as
the sequence goes on. The plot shows both: example sequences, and the error by time step.

Run:  python examples/sin_to_cos.py            (well under a minute on 2 cores)
      python examples/sin_to_cos.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes sin_to_cos.png.
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from edgernn import Sequential  # noqa: E402
from edgernn.layers import LSTM, Dense  # noqa: E402
from edgernn.optimizers import Adam  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG (default: current directory)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 30, quick 2)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.epochs is None:
        args.epochs = 2 if args.quick else 30
    return args


def make_data(n, T, rng):
    """n windows of T steps: x = sin(w t + phi), y = cos(w t + phi); shapes (n, T, 1)."""
    t = np.arange(T)[None, :] * 0.1  # 10 samples per time unit
    w = rng.uniform(1.0, 3.0, size=(n, 1))  # between ~2 and ~5 periods per window of 10 units
    phi = rng.uniform(0, 2 * np.pi, size=(n, 1))
    x = np.sin(w * t + phi)[:, :, None].astype(np.float32)
    y = np.cos(w * t + phi)[:, :, None].astype(np.float32)
    return x, y


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    T = 100
    n_train = 256 if args.quick else 2000
    X_train, y_train = make_data(n_train, T, rng)
    X_test, y_test = make_data(500, T, rng)

    model = Sequential([LSTM(32, return_sequences=True, input_shape=(None, 1)),
                        Dense(1)],  # one output per time step
                       seed=args.seed)
    model.compile(loss="mse", optimizer=Adam(learning_rate=0.01))
    model.summary()
    t0 = time.perf_counter()
    history = model.fit(X_train, y_train, batch_size=32, epochs=args.epochs, validation_split=0.1,
                        verbose=0)
    seconds = time.perf_counter() - t0
    print(f"trained {args.epochs} epochs on {n_train} sequences of {T} steps in {seconds:.1f} s")

    pred = model.predict(X_test)  # (500, T, 1)
    err = (pred - y_test)[:, :, 0] ** 2  # (500, T)
    mse = float(err.mean())
    mse_after10 = float(err[:, 10:].mean())
    print(f"\ntest MSE over all steps         {mse:.5f}")
    print(f"test MSE from step 10 onwards   {mse_after10:.5f}")
    print(f"test MSE of predicting 0        {float((y_test ** 2).mean()):.5f}  (the cosine's variance)")
    # The model also generalises to a longer sequence than it was trained on (T is free):
    X_long, y_long = make_data(100, 4 * T, rng)
    mse_long = float(((model.predict(X_long) - y_long)[:, 10:] ** 2).mean())
    print(f"test MSE on sequences 4x longer than in training (from step 10): {mse_long:.5f}")

    # ---- plot ------------------------------------------------------------------------------
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    tt = np.arange(T)
    for k, ax in zip((0, 1), axes[:2], strict=True):
        ax.plot(tt, X_test[k, :, 0], color="0.6", lw=1, label="input: sine")
        ax.plot(tt, y_test[k, :, 0], color="k", lw=1.8, label="target: cosine")
        ax.plot(tt, pred[k, :, 0], color="tab:red", lw=1.4, ls="--", label="LSTM output")
        ax.set_title(f"test sequence {k + 1}")
        ax.set_xlabel("time step")
    axes[2].semilogy(tt, err.mean(axis=0), color="tab:red", label="test")
    axes[2].set_title(f"test MSE by time step (overall {mse:.4f})")
    axes[2].set_xlabel("time step")
    axes[2].set_ylabel("MSE")
    ax_in = axes[2].inset_axes([0.55, 0.6, 0.42, 0.35])
    ax_in.semilogy(history.history["loss"], label="train")
    ax_in.semilogy(history.history["val_loss"], label="val")
    ax_in.set_title("loss by epoch", fontsize=8)
    ax_in.tick_params(labelsize=7)
    ax_in.legend(fontsize=6, loc="best", frameon=False)
    # one legend for the two sequence panels, above them: nothing drawn over the curves
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.06, 1.0), ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    png = os.path.join(args.out, "sin_to_cos.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
