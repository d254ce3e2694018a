"""Sequence to sequence with attention: dates written many ways -> ISO dates.

An encoder (a bidirectional GRU over the characters of "Thu 07 Mar 1991", "march 7, 1991",
"07/03/1991", "91-03-07"...) and a decoder GRU that writes "1991-03-07" one character at a time,
started from the encoder's final states. With attention, at every output character the decoder
looks back over the encoder's outputs (``AdditiveAttention``: Bahdanau's score
``v^T tanh(W q + U k)``, the query being the decoder's output at that step: the "Luong" placement);
without, everything must pass through the encoder's final state. Both are trained the same way
(teacher forcing: the decoder reads the true previous character), and decoded greedily on
held-back dates (each predicted character fed back). The figure shows the attention weights:
which input characters the decoder read for each output character.

Run: ``python examples/seq2seq_attention.py`` (``EDGERNN_QUICK=1`` for a short run).
"""

from __future__ import annotations

import datetime as dt
import os
import time

import numpy as np

import edgernn
from edgernn import Input, Model
from edgernn.layers import GRU, AdditiveAttention, Bidirectional, Concatenate, Dense, Embedding

QUICK = os.environ.get("EDGERNN_QUICK") == "1"
N_TRAIN, N_TEST = (1500, 300) if QUICK else (12000, 1000)
EPOCHS = 2 if QUICK else 12
UNITS = 32

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def render(d, rng):
    """One of many ways people write a date."""
    m, mon = MONTHS[d.month - 1], MONTHS[d.month - 1][:3]
    day = DAYS[d.weekday()][:3]
    forms = [
        f"{d.day} {m} {d.year}", f"{d.day:02d} {m} {d.year}", f"{m} {d.day}, {d.year}", f"{mon} {d.day} {d.year}",
        f"{d.day:02d}/{d.month:02d}/{d.year}", f"{d.day}.{d.month}.{d.year}", f"{d.year}.{d.month:02d}.{d.day:02d}",
        f"{day} {d.day:02d} {mon} {d.year}", f"{d.day:02d}-{mon}-{d.year % 100:02d}",
        f"{d.year % 100:02d}-{d.month:02d}-{d.day:02d}", f"{day}, {m} {d.day} {d.year}", f"{d.day} {mon} {d.year}",
    ]
    s = forms[rng.integers(len(forms))]
    case = rng.integers(3)
    return s.lower() if case == 1 else s.upper() if case == 2 else s


def make_data(n, rng):
    start = dt.date(1950, 1, 1).toordinal()
    days = rng.integers(0, dt.date(2049, 12, 31).toordinal() - start + 1, size=n)
    dates = [dt.date.fromordinal(start + int(k)) for k in days]  # two-digit years: 50-99 -> 19xx, else 20xx
    return [render(d, rng) for d in dates], [d.isoformat() for d in dates]


IN_CHARS = sorted(set("".join(MONTHS + DAYS) + "".join(MONTHS + DAYS).lower() + "".join(MONTHS + DAYS).upper()
                      + "0123456789 ,./-"))
IN_ID = {c: i + 1 for i, c in enumerate(IN_CHARS)}  # 0 is padding (mask_zero)
OUT_CHARS = list("0123456789-")
START = len(OUT_CHARS)  # the decoder's first input
OUT_ID = {c: i for i, c in enumerate(OUT_CHARS)}
T_OUT = 10


def encode(texts):
    T = max(len(s) for s in texts)
    X = np.zeros((len(texts), T), np.int64)
    for i, s in enumerate(texts):
        X[i, : len(s)] = [IN_ID[c] for c in s]
    return X


def targets(isos):
    Y = np.array([[OUT_ID[c] for c in s] for s in isos], np.int64)  # (N, 10)
    dec_in = np.concatenate([np.full((len(isos), 1), START), Y[:, :-1]], axis=1)  # teacher forcing
    return dec_in, Y


def build(attention, seed):
    enc_in = Input(shape=(None,), dtype="int64", name="text")
    dec_in = Input(shape=(None,), dtype="int64", name="previous")
    e = Embedding(len(IN_CHARS) + 1, 16, mask_zero=True)(enc_in)
    enc_seq, h_fw, h_bw = Bidirectional(GRU(UNITS, return_sequences=True, return_state=True))(e)
    h0 = Concatenate()([h_fw, h_bw])  # (B, 2 * UNITS)
    d = Embedding(START + 1, 16)(dec_in)
    dec_seq = GRU(2 * UNITS, return_sequences=True)(d, initial_state=h0)  # (B, T_OUT, 2 * UNITS)
    attn = AdditiveAttention(units=UNITS, name="attention") if attention else None
    feats = Concatenate()([dec_seq, attn([dec_seq, enc_seq])]) if attention else dec_seq
    probs = Dense(len(OUT_CHARS), activation="softmax", name="char")(feats)
    model = Model([enc_in, dec_in], probs, name="with_attention" if attention else "no_attention", seed=seed)
    model.compile(optimizer=edgernn.optimizers.Adam(0.005, clipnorm=1.0), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    scores = None
    if attention:  # the same layers, also returning the attention weights (a second call of the layer)
        _, w = attn([dec_seq, enc_seq], return_attention_scores=True)
        scores = Model([enc_in, dec_in], w)
    return model, scores


def greedy(model, X):
    """Decode one character at a time, feeding each prediction back."""
    prev = np.full((len(X), 1), START, np.int64)
    for _ in range(T_OUT):
        p = model.predict([X, prev])  # (N, steps so far, V)
        nxt = p[:, -1].argmax(axis=-1)
        prev = np.concatenate([prev, nxt[:, None]], axis=1)
    return ["".join(OUT_CHARS[k] for k in row[1:]) for row in prev]


def main():
    rng = np.random.default_rng(0)
    tr_text, tr_iso = make_data(N_TRAIN, rng)
    te_text, te_iso = make_data(N_TEST, rng)
    Xtr, Xte = encode(tr_text), encode(te_text)
    Dtr, Ytr = targets(tr_iso)
    results = {}
    for attention in (False, True):
        model, scores = build(attention, seed=1)
        t0 = time.perf_counter()
        hist = model.fit([Xtr, Dtr], Ytr, batch_size=64, epochs=EPOCHS, verbose=0, validation_split=0.1)
        secs = time.perf_counter() - t0
        pred = greedy(model, Xte)
        exact = float(np.mean([p == t for p, t in zip(pred, te_iso, strict=True)]))
        results[attention] = (model, scores, pred, exact)
        print(f"{model.name:15s} params {model.count_params():6d}  train {secs:5.1f} s  "
              f"val char accuracy {hist.history['val_accuracy'][-1]:.3f}  exact-match (greedy, {N_TEST} held-back "
              f"dates) {exact:.3f}")
    model, scores, pred, exact = results[True]
    for s, p, t in list(zip(te_text, pred, te_iso, strict=True))[:6]:
        print(f"  {s!r:32s} -> {p}  ({'ok' if p == t else 'expected ' + t})")
    print(f"attention: {results[True][3]:.3f} exact match, without: {results[False][3]:.3f}")
    plot(scores, te_text[:4], pred[:4], Xte[:4])


def plot(scores, texts, preds, X):
    try:
        import matplotlib

        matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    prev = np.array([[START] + [OUT_ID[c] for c in p[:-1]] for p in preds])
    W = scores.predict([X, prev])  # (4, T_OUT, T_in)
    fig, axes = plt.subplots(1, len(texts), figsize=(4.2 * len(texts), 4))
    for ax, w, s, p in zip(axes, W, texts, preds, strict=True):
        ax.imshow(w[:, : len(s)], cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set_xticks(range(len(s)), list(s), fontsize=8)
        ax.set_yticks(range(T_OUT), list(p), fontsize=8)
        ax.set_xlabel("input characters")
        ax.set_title(repr(s), fontsize=9)
    axes[0].set_ylabel("output characters (greedy)")
    fig.suptitle("AdditiveAttention weights: where the decoder looks for each output character")
    fig.tight_layout()
    fig.savefig("seq2seq_attention.png", dpi=110)
    print("wrote seq2seq_attention.png")


if __name__ == "__main__":
    main()
