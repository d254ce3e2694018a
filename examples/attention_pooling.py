"""Attention pooling against the last-step readout: Japanese Vowels speaker recognition.

A recurrent classifier usually reads out its state at the last step of each sequence. With
attention pooling (Yang et al. 2016, "Hierarchical Attention Networks") it reads out a
weighted mean of the states of all steps instead: ``u_t = tanh(W h_t + b)``,
``a_t = softmax_t(u_t . u_w)``, ``s = sum_t a_t h_t`` (``edgernn.layers.AttentionPooling1D``;
padded steps get zero weight). This script trains, on the official split of Japanese Vowels
(9 speakers, 12 LPC cepstrum coefficients per frame, 7 to 29 frames, 270 training and 370 test
utterances; the list of variable-length arrays goes in as it is):

* GRU(units) -> Dense(9, softmax)                                  (last-step readout)
* GRU(units, return_sequences=True) -> AttentionPooling1D -> Dense(9, softmax)

with the same budget (units, epochs, optimizer, batch size, one thread) and three seeds each,
at three widths (8, 16 and 32 units), and prints the test accuracy of every run and its mean
and standard deviation per model and width. The plot shows the accuracies against the width
and the attention weights of a few test utterances over their frames.

Run:  python examples/attention_pooling.py            (under 2 minutes on one core)
      python examples/attention_pooling.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes attention_pooling.png.
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
from edgernn.datasets import load_japanese_vowels, pad_sequences  # noqa: E402
from edgernn.layers import GRU, AttentionPooling1D, Dense  # noqa: E402
from edgernn.optimizers import Adam  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG (default: current directory)")
    p.add_argument("--units", type=int, nargs="+", default=None, help="GRU widths (default 8 16 32, quick 8)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 40, quick 2)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.epochs is None:
        args.epochs = 2 if args.quick else 40
    if args.units is None:
        args.units = [8] if args.quick else [8, 16, 32]
    return args


def build(readout, units, n_classes, seed):
    if readout == "last step":
        layers = [GRU(units, input_shape=(None, 12))]
    else:
        layers = [GRU(units, return_sequences=True, input_shape=(None, 12)), AttentionPooling1D()]
    model = Sequential(layers + [Dense(n_classes, activation="softmax")], seed=seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(learning_rate=0.003),
                  metrics=["accuracy"])
    return model


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    edgernn.set_num_threads(1)  # one core: the budget is the same for both models
    data = load_japanese_vowels()
    frames = np.concatenate(data.X_train)
    mean, std = frames.mean(axis=0), frames.std(axis=0)  # training frames only
    X_train = [(x - mean) / std for x in data.X_train]
    X_test = [(x - mean) / std for x in data.X_test]
    k = len(data.class_names)
    print(f"Japanese Vowels: {len(X_train)} training and {len(X_test)} test utterances, {k} speakers; "
          f"GRU of {args.units} units, Adam(0.003), batch 16, {args.epochs} epochs, seeds {args.seeds}, "
          "one thread\n")

    readouts = ["last step", "attention pooling"]
    acc = {(r, u): [] for r in readouts for u in args.units}
    models = {}
    for units in args.units:
        for readout in readouts:
            for seed in args.seeds:
                model = build(readout, units, k, seed)
                t0 = time.perf_counter()
                model.fit(X_train, data.y_train, batch_size=16, epochs=args.epochs, verbose=0)
                sec = time.perf_counter() - t0
                a = float((model.predict(X_test).argmax(axis=1) == data.y_test).mean())
                acc[readout, units].append(a)
                models.setdefault((readout, units), model)
                print(f"GRU({units:>2}) {readout:<18} seed {seed}: test accuracy {a:.4f}  "
                      f"({model.count_params():,} parameters, trained in {sec:.1f} s)")
    print("\ntest accuracy, mean and std over the seeds:")
    for units in args.units:
        for readout in readouts:
            a = np.array(acc[readout, units])
            print(f"GRU({units:>2}) {readout:<18} mean {a.mean():.4f}  std {a.std():.4f}  "
                  f"(min {a.min():.4f}, max {a.max():.4f}; {len(a)} seeds)")

    # ---- attention weights of a few test utterances (first seed, widest GRU) ------------------------
    model = models["attention pooling", args.units[-1]]
    gru, pool = model.layers[0], model.layers[1]
    picks = [int(np.flatnonzero(data.y_test == c)[0]) for c in range(0, k, 3)]
    padded, lens = pad_sequences([X_test[i] for i in picks], value=0.0)
    h = gru.forward(padded.astype(np.float32), lengths=lens, need_grad=False)  # (n, T, units)
    weights = pool.attention_weights(h, lens)  # (n, T), zero on padding

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.arange(len(args.units))
    for j, readout in enumerate(readouts):
        off = (j - 0.5) * 0.2
        for i, units in enumerate(args.units):
            ax1.scatter(np.full(len(args.seeds), i + off), acc[readout, units], s=18, color=f"C{j}",
                        alpha=0.6)
        means = [np.mean(acc[readout, u]) for u in args.units]
        stds = [np.std(acc[readout, u]) for u in args.units]
        ax1.errorbar(x + off, means, yerr=stds, fmt="o-", color=f"C{j}", capsize=4, label=readout)
    ax1.set_xticks(x, [f"GRU({u})" for u in args.units])
    ax1.set_ylabel("test accuracy (370 utterances)")
    ax1.set_title(f"{args.epochs} epochs, {len(args.seeds)} seeds: runs and mean +- std")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for i, n in zip(range(len(picks)), lens, strict=True):
        ax2.plot(np.arange(1, n + 1), weights[i, :n], marker=".",
                 label=f"speaker {data.class_names[data.y_test[picks[i]]]}")
    ax2.set_xlabel("frame")
    ax2.set_ylabel("attention weight a_t")
    ax2.set_title(f"attention pooling, GRU({args.units[-1]}): weights over the frames")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    png = os.path.join(args.out, "attention_pooling.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
