"""SRU against LSTM: training time per epoch at the same width and the same accuracy.

SRU (Lei et al. 2018) moves every matrix product out of the recurrence: the products of all
steps are one matrix multiplication before the time loop, and the loop itself is
element-wise. It should therefore train faster than an LSTM of the same width (measured: see
examples/README.md; at this small width it does not, per stacked layer); the paper
stacks SRU layers to make up for the simpler recurrence. This script trains, on the same data
(the sine-to-cosine task of ``sin_to_cos.py``: read a sine of random phase and frequency,
output its cosine at every step) with the same optimizer and batch size:

* LSTM(32) + Dense(1), and
* SRU(32) x 2 + Dense(1) (two layers: one SRU layer's recurrence is an exponential moving
  average per unit, which reaches a lower accuracy on its own; shown as well),

epoch by epoch until the validation MSE reaches a target (or an epoch cap), and reports the
time per epoch (one thread, compilation excluded), the epochs and the time to the target,
and the test MSE. The plot shows validation MSE against training time.

Run:  python examples/sru_vs_lstm.py            (about a minute on 2 cores)
      python examples/sru_vs_lstm.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes sru_vs_lstm.png.
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
from edgernn.layers import LSTM, SRU, Dense  # noqa: E402
from edgernn.optimizers import Adam  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG (default: current directory)")
    p.add_argument("--max-epochs", type=int, default=None, help="epoch cap per model (default 40, quick 2)")
    p.add_argument("--target", type=float, default=0.02, help="validation MSE to reach (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.max_epochs is None:
        args.max_epochs = 2 if args.quick else 40
    return args


def make_data(n, T, rng):
    """n windows of T steps: x = sin(w t + phi), y = cos(w t + phi); shapes (n, T, 1)."""
    t = np.arange(T)[None, :] * 0.1
    w = rng.uniform(1.0, 3.0, size=(n, 1))
    phi = rng.uniform(0, 2 * np.pi, size=(n, 1))
    return (np.sin(w * t + phi)[:, :, None].astype(np.float32),
            np.cos(w * t + phi)[:, :, None].astype(np.float32))


def build(kind, units, seed):
    if kind == "LSTM(32)":
        layers = [LSTM(units, return_sequences=True, input_shape=(None, 1))]
    elif kind == "SRU(32) x 2":
        layers = [SRU(units, return_sequences=True, input_shape=(None, 1)), SRU(units, return_sequences=True)]
    else:
        layers = [SRU(units, return_sequences=True, input_shape=(None, 1))]
    m = Sequential(layers + [Dense(1)], seed=seed)
    m.compile(loss="mse", optimizer=Adam(learning_rate=0.01))
    return m


def train(model, X, y, Xv, yv, max_epochs, target):
    """Epoch by epoch until the validation MSE <= target; returns per-epoch (seconds, val MSE)."""
    model.train_on_batch(X[:32], y[:32])  # compile (or load from the cache) outside the timing
    log = []
    for _ in range(max_epochs):
        t0 = time.thread_time()
        model.fit(X, y, batch_size=32, epochs=1, verbose=0, shuffle=True)
        sec = time.thread_time() - t0
        log.append((sec, float(model.evaluate(Xv, yv))))
        if log[-1][1] <= target:
            break
    return log


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    edgernn.set_num_threads(1)  # one thread: the comparison is per core
    rng = np.random.default_rng(args.seed)
    T = 100
    n = 128 if args.quick else 1000
    X, y = make_data(n, T, rng)
    Xv, yv = make_data(200, T, rng)
    Xt, yt = make_data(500, T, rng)
    kinds = ["LSTM(32)", "SRU(32) x 2", "SRU(32)"]
    results = {}
    for kind in kinds:
        m = build(kind, 32, args.seed)
        log = train(m, X, y, Xv, yv, args.max_epochs, args.target)
        secs = np.array([s for s, _ in log])
        reached = log[-1][1] <= args.target
        results[kind] = dict(log=log, params=m.count_params(), per_epoch=float(np.median(secs)),
                             epochs=len(log), total=float(secs.sum()), reached=reached,
                             test=float(m.evaluate(Xt, yt)))
    print(f"{n} sequences of {T} steps, batch 32, Adam(0.01), one thread; target validation MSE "
          f"{args.target}\n")
    print(f"{'model':<13} {'params':>7} {'s/epoch':>8} {'epochs':>7} {'s to target':>12} {'test MSE':>9}")
    for kind in kinds:
        r = results[kind]
        to = f"{r['total']:.2f}" if r["reached"] else f"> {r['total']:.2f}"
        print(f"{kind:<13} {r['params']:>7} {r['per_epoch']:>8.3f} {r['epochs']:>7} {to:>12} {r['test']:>9.5f}")
    a, b = results["LSTM(32)"], results["SRU(32) x 2"]
    print(f"\ntime per epoch, LSTM(32) / SRU(32) x 2: {a['per_epoch'] / b['per_epoch']:.2f}x")
    if a["reached"] and b["reached"]:
        print(f"time to the target, LSTM(32) / SRU(32) x 2: {a['total'] / b['total']:.2f}x")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind in kinds:
        log = results[kind]["log"]
        ax.semilogy(np.cumsum([s for s, _ in log]), [v for _, v in log], marker="o", ms=3,
                    label=f"{kind} ({results[kind]['per_epoch']:.2f} s/epoch)")
    ax.axhline(args.target, color="0.5", ls=":", lw=1, label=f"target {args.target}")
    ax.set_xlabel("training time, one thread (s)")
    ax.set_ylabel("validation MSE")
    ax.set_title("sine -> cosine: SRU vs LSTM, same width")
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    png = os.path.join(args.out, "sru_vs_lstm.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
