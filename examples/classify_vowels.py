"""Who is speaking? Japanese Vowels with a bidirectional GRU on variable-length sequences.

Nine male speakers each said the vowels /ae/; every utterance is a sequence of 12 LPC
cepstrum coefficients per frame, 7 to 29 frames long (Kudo, Toyama & Shimbo, 1999). The
task is to name the speaker: 270 training and 370 test utterances (the official split).
Published accuracies on this test set are about 0.95 to 0.99.

The utterances have different lengths. We give the model the list of arrays as it is:
edgernn pads the batch internally and passes each sequence's length to the recurrent
kernels, so padded steps neither change the state nor reach the output, and the backward
direction of the bidirectional layer starts at each utterance's real last frame, not in the
padding. The script checks that: predictions of the batch equal predictions made one
utterance at a time, and do not change when the padding is filled with garbage.

Run:  python examples/classify_vowels.py            (under a minute on 2 cores)
      python examples/classify_vowels.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes classify_vowels_confusion.png.
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
from edgernn.datasets import load_japanese_vowels, pad_sequences  # noqa: E402
from edgernn.layers import GRU, Bidirectional, Dense, Dropout  # noqa: E402
from edgernn.optimizers import Adam  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG (default: current directory)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 60, quick 2)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.epochs is None:
        args.epochs = 2 if args.quick else 60
    return args


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = load_japanese_vowels()
    lengths = [len(x) for x in data.X_train + data.X_test]
    print(f"Japanese Vowels: {len(data.X_train)} training and {len(data.X_test)} test utterances, "
          f"{data.X_train[0].shape[1]} features, {min(lengths)} to {max(lengths)} frames, "
          f"{len(data.class_names)} speakers")

    # Standardise each feature with statistics of the training frames only.
    frames = np.concatenate(data.X_train)
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    X_train = [(x - mean) / std for x in data.X_train]  # still a list of (T_i, 12) arrays
    X_test = [(x - mean) / std for x in data.X_test]

    model = Sequential([
        Bidirectional(GRU(32), input_shape=(None, 12)),  # reads each utterance both ways
        Dropout(0.3),
        Dense(len(data.class_names), activation="softmax"),
    ], seed=args.seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(learning_rate=0.003),
                  metrics=["accuracy"])
    model.summary()
    t0 = time.perf_counter()
    model.fit(X_train, data.y_train, batch_size=16, epochs=args.epochs, verbose=0)
    seconds = time.perf_counter() - t0
    print(f"trained {args.epochs} epochs in {seconds:.1f} s")

    proba = model.predict(X_test)  # the list goes in as it is
    pred = proba.argmax(axis=1)
    acc = float((pred == data.y_test).mean())
    print(f"\ntest accuracy {acc:.4f}  ({int((pred == data.y_test).sum())} of {len(pred)}; "
          f"published results: about 0.95 to 0.99)")

    # ---- no padding leaks into the result ---------------------------------------------------
    one_by_one = np.concatenate([model.predict([x]) for x in X_test[:40]])  # no padding at all
    padded, lens = pad_sequences(X_test, value=0.0)
    garbage = padded.copy()
    for i, n in enumerate(lens):
        garbage[i, n:] = 1e3  # absurd values in the padding
    with_garbage = model.predict(garbage, lengths=lens)
    d1 = float(np.abs(one_by_one - proba[:40]).max())
    d2 = float(np.abs(with_garbage - proba).max())
    print(f"padding check: max |batch - one at a time| = {d1:.1e}; "
          f"max |zero padding - garbage padding| = {d2:.1e}")
    if d1 > 1e-5 or d2 > 1e-5:
        raise SystemExit("padding changed the predictions")

    # ---- confusion matrix -----------------------------------------------------------------------
    k = len(data.class_names)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (data.y_test, pred), 1)
    fig, ax = plt.subplots(figsize=(5.8, 5))
    im = ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(k), data.class_names)
    ax.set_yticks(range(k), data.class_names)
    ax.set_xlabel("predicted speaker")
    ax.set_ylabel("true speaker")
    ax.set_title(f"Japanese Vowels, bidirectional GRU\ntest accuracy {acc:.3f} ({len(pred)} utterances)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    png = os.path.join(args.out, "classify_vowels_confusion.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
