"""QRNN against LSTM at the same width: training time per epoch and accuracy.

The task of ``sin_to_cos.py``: read a sine of random phase and frequency, write its cosine at
every step (T = 100). Two stacked QRNN layers (Bradbury et al. 2017; window 2, fo pooling)
and two stacked LSTM layers, 64 units each, feed a ``Dense(1)`` at every step; same
optimizer, batch and epochs (the paper stacks QRNN layers: one layer's pooling is
element-wise, units mix only through the next layer's convolution). QRNN's heavy products depend only on the input (a causal convolution over the
last two steps, one matrix product for the whole batch and sequence); only an element-wise
pooling runs step by step, so it trains faster. The cosine is the scaled derivative of the
sine: the window of two inputs sees the local slope directly, which suits the QRNN.

Run:  python examples/qrnn_sin_to_cos.py            (about 3 minutes, one thread)
      python examples/qrnn_sin_to_cos.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes qrnn_sin_to_cos.png.
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import edgernn  # noqa: E402
from edgernn import Sequential  # noqa: E402
from edgernn.layers import LSTM, QRNN, Dense  # noqa: E402
from edgernn.optimizers import Adam  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG (default: current directory)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 20, quick 2)")
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="edgernn threads (default 1: both models timed alike on a shared machine)")
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.epochs is None:
        args.epochs = 2 if args.quick else 20
    return args


def make_data(n, T, rng):
    """n windows of T steps: x = sin(w t + phi), y = cos(w t + phi); shapes (n, T, 1)."""
    t = np.arange(T)[None, :] * 0.1
    w = rng.uniform(1.0, 3.0, size=(n, 1))
    phi = rng.uniform(0, 2 * np.pi, size=(n, 1))
    return (np.sin(w * t + phi)[:, :, None].astype(np.float32),
            np.cos(w * t + phi)[:, :, None].astype(np.float32))


def main():
    args = parse_args()
    edgernn.set_num_threads(args.threads)
    # one thread: all the work runs on this thread, so its CPU time is the work itself, undisturbed
    # by other jobs on a shared machine; with more threads, wall time
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    T = 100
    n_train = 256 if args.quick else 2000
    X, y = make_data(n_train, T, rng)
    Xte, yte = make_data(500, T, rng)
    results = {}
    H = args.units
    for name, layers in (("2 x QRNN", [QRNN(H, return_sequences=True, input_shape=(None, 1)),
                                       QRNN(H, return_sequences=True)]),
                         ("2 x LSTM", [LSTM(H, return_sequences=True, input_shape=(None, 1)),
                                       LSTM(H, return_sequences=True)])):
        model = Sequential([*layers, Dense(1)], seed=args.seed)
        model.compile(loss="mse", optimizer=Adam(learning_rate=0.01))
        # compile (or load) the kernels outside the timing: one pass over 64 sequences
        model.fit(X[:64], y[:64], batch_size=32, epochs=1, verbose=0)
        model.predict(Xte[:2])
        times, mses = [], []
        for _ in range(args.epochs):
            t0 = clock()
            model.fit(X, y, batch_size=32, epochs=1, verbose=0)
            times.append(clock() - t0)
            mses.append(float(((model.predict(Xte) - yte)[:, 10:] ** 2).mean()))
        params = sum(v.size for la in model.layers for v in la.params.values())
        results[name] = dict(times=times, mses=mses, params=params)
        print(f"{name}({H}): {params} parameters, {np.median(times):.2f} s per epoch (median of "
              f"{len(times)}; {'CPU' if args.threads == 1 else 'wall'} time), test MSE from step 10 on after {args.epochs} epochs: {mses[-1]:.5f}")
    q, lstm = results["2 x QRNN"], results["2 x LSTM"]
    print(f"\n2 x QRNN trains {np.median(lstm['times']) / np.median(q['times']):.2f}x faster per epoch than "
          f"2 x LSTM of the same width ({H} units)")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in results.items():
        ax.plot(np.cumsum(r["times"]), r["mses"], marker="o", ms=3,
                label=f"{name}({H}), {r['params']} params, {np.median(r['times']):.2f} s/epoch")
    ax.set_yscale("log")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test MSE (steps 10-99)")
    ax.set_title("sine -> cosine, T = 100: QRNN vs LSTM at the same width")
    ax.legend()
    fig.tight_layout()
    png = os.path.join(args.out, "qrnn_sin_to_cos.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
