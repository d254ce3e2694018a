"""A character-level language model on Plato's Republic (Karpathy's "unreasonable effectiveness").

The model reads text one character at a time and predicts the next character:
Embedding(vocabulary, 32) -> LSTM(128, return_sequences=True) -> Dense(vocabulary) (logits at
every step), trained on the first 90 % of about 250 KB of Jowett's translation of the
Republic (shipped with edgernn), cut into windows of 50 characters (truncated
backpropagation through time). We report the validation loss on the last 10 %, in the same
50-character windows, in bits per character (bpc; lower is better): a model that knows
nothing but the alphabet needs log2(vocabulary) bits, one that only knows character
frequencies needs their entropy.

Then we generate text one character at a time through ``model.stream()`` (the state is
carried from step to step, as on a device), sampling from softmax(logits / temperature):
a low temperature gives safe, repetitive text, a high one more adventurous text.

Finally the model is saved to ``char_lm.npz``, loaded back, and checked to give identical
predictions.

Run:  python examples/char_lm.py            (about 1.5 minutes on 2 cores)
      python examples/char_lm.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes char_lm_bpc.png and char_lm.npz.
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
from edgernn.datasets import load_text_sample  # noqa: E402
from edgernn.layers import LSTM, Dense, Embedding  # noqa: E402
from edgernn.losses import SparseCategoricalCrossentropy  # noqa: E402
from edgernn.optimizers import Adam  # noqa: E402

LN2 = np.log(2.0)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG and the model (default: current directory)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 30, quick 1)")
    p.add_argument("--units", type=int, default=None, help="LSTM units (default 128, quick 32)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.epochs is None:
        args.epochs = 1 if args.quick else 30
    if args.units is None:
        args.units = 32 if args.quick else 128
    return args


def windows(ids, seq_len, offset=0):
    """Non-overlapping (input, target) windows; the target is the input shifted by one."""
    n = (len(ids) - 1 - offset) // seq_len
    x = ids[offset: offset + n * seq_len].reshape(n, seq_len)
    y = ids[offset + 1: offset + 1 + n * seq_len].reshape(n, seq_len)
    return x, y


def sample(model, stoi, itos, prime, n, temperature, rng):
    """Generate n characters after `prime`, one step at a time through the streaming engine."""
    stream = model.stream(batch_size=1)
    logits = None
    for ch in prime:  # read the prime; the state carries it
        logits = stream.step(np.array([stoi[ch]], dtype=np.int64))[0]
    out = []
    for _ in range(n):
        z = logits.astype(np.float64) / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        k = int(rng.choice(len(p), p=p))
        out.append(itos[k])
        logits = stream.step(np.array([k], dtype=np.int64))[0]
    return prime + "".join(out)


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    text = load_text_sample()
    if args.quick:
        text = text[:20_000]
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    itos = np.array(chars)
    ids = np.array([stoi[c] for c in text], dtype=np.int64)
    V = len(chars)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    counts = np.bincount(train_ids, minlength=V) / len(train_ids)
    unigram_bpc = float(-(counts[counts > 0] * np.log2(counts[counts > 0])).sum())
    print(f"Plato's Republic: {len(text):,} characters, vocabulary of {V}; "
          f"train {len(train_ids):,}, validation {len(val_ids):,}")
    print(f"yardsticks: uniform over the vocabulary {np.log2(V):.2f} bpc, "
          f"character frequencies only {unigram_bpc:.2f} bpc")

    seq_len = 50  # truncated backpropagation through time over 50 characters
    x_val, y_val = windows(val_ids, seq_len)
    model = Sequential([Embedding(V, 32, input_shape=(None,)),
                        LSTM(args.units, return_sequences=True),
                        Dense(V)],  # logits for the next character, at every step
                       seed=args.seed)
    model.compile(loss=SparseCategoricalCrossentropy(from_logits=True),
                  optimizer=Adam(learning_rate=0.01, global_clipnorm=5.0))
    model.summary()

    history = {"train": [], "val": []}
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.optimizer.learning_rate = 0.01 * 0.9 ** max(0, epoch - 10)  # decay after 10 epochs
        # a different cut of the training text every epoch
        x_tr, y_tr = windows(train_ids, seq_len, offset=(epoch * 17) % seq_len)
        h = model.fit(x_tr, y_tr, batch_size=32, epochs=1, verbose=0, seed=args.seed + epoch)
        val = model.evaluate(x_val, y_val) / LN2
        history["train"].append(h.history["loss"][-1] / LN2)
        history["val"].append(val)
        print(f"  epoch {epoch + 1:3d}: train {history['train'][-1]:.3f} bpc, validation {val:.3f} bpc "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    seconds = time.perf_counter() - t0
    val_bpc = history["val"][-1]
    print(f"trained {args.epochs} epochs in {seconds:.1f} s")
    print(f"\nvalidation: {val_bpc:.3f} bits per character "
          f"(frequencies only: {unigram_bpc:.2f}, uniform: {np.log2(V):.2f})")

    # ---- generate text ------------------------------------------------------------------------
    prime = "Socrates"
    for temperature in (0.5, 1.0):
        rng = np.random.default_rng(args.seed)
        n = 200 if args.quick else 400
        print(f"\n--- sampled text, temperature {temperature} ---")
        print(sample(model, stoi, itos, prime, n, temperature, rng))

    # ---- save, reload, compare ------------------------------------------------------------------
    path = os.path.join(args.out, "char_lm.npz")
    model.save(path)
    loaded = edgernn.load_model(path)
    a = model.predict(x_val[:32])
    b = loaded.predict(x_val[:32])
    same = np.array_equal(a, b)
    print(f"\nsaved {path} ({os.path.getsize(path) / 1024:.0f} KiB), reloaded: predictions identical: {same}")
    if not same:
        raise SystemExit(f"reloaded model differs: max abs difference {np.abs(a - b).max():.3g}")

    # ---- plot ----------------------------------------------------------------------------------
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ep = np.arange(1, args.epochs + 1)
    ax.plot(ep, history["train"], marker="o", ms=3, label="training")
    ax.plot(ep, history["val"], marker="o", ms=3, label=f"validation (final {val_bpc:.2f})")
    ax.axhline(unigram_bpc, color="0.5", ls="--", lw=1, label=f"character frequencies only ({unigram_bpc:.2f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits per character")
    ax.set_title(f"character-level LSTM({args.units}) on Plato's Republic")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = os.path.join(args.out, "char_lm_bpc.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
