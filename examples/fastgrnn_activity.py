"""FastGRNN on the smartwatch: the accuracy of a GRU or an LSTM in a fraction of the kilobytes.

BasicMotions (UEA archive, shipped): 3-axis accelerometer + gyroscope (6 channels), 100
samples at 10 Hz, four activities, 40 training and 40 test recordings. As in
``activity_watch.py``, each model trains on random 2-10 s excerpts of the training recordings
and is tested on the whole test recordings. Four models, 16 units each, + Dense(4, softmax):

- GRU(16) and LSTM(16), the usual choices;
- FastGRNN(16) (Kusupati et al. 2018): one W and one U shared by the gate and the candidate;
- FastGRNN(16, wrank=3, urank=4, sparsity=0.5): low-rank W = W1 W2 and U = U1 U2, half of
  their weights zeroed by iterative hard thresholding during training (dense for the first
  third of the updates, thresholded after every update in the second, fixed support in the
  last: the paper's three phases).

For each: the test accuracy and the model size in bytes (float32; the FastGRNN layers count
their sparsified matrices by nonzeros, as the paper and EdgeML do). The compressed FastGRNN
is then exported as an ONNX streaming graph, verified in onnxruntime, and streamed.

Run:  python examples/fastgrnn_activity.py            (about a minute on 2 cores)
      python examples/fastgrnn_activity.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes fastgrnn_activity.png and fastgrnn_activity_stream.onnx.
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import edgernn.onnx  # noqa: E402
from edgernn import Sequential  # noqa: E402
from edgernn.datasets import load_basic_motions  # noqa: E402
from edgernn.layers import GRU, LSTM, Dense, FastGRNN  # noqa: E402
from edgernn.optimizers import Adam  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG and the ONNX file")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 40, quick 2)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.epochs is None:
        args.epochs = 2 if args.quick else 40
    return args


def size_bytes(model):
    """float32 bytes of every parameter; FastGRNN layers report their own (sparse) size."""
    return sum(la.model_size_bytes() if hasattr(la, "model_size_bytes") else 4 * la.count_params()
               for la in model.layers)


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = load_basic_motions()
    X_train, X_test = np.stack(data.X_train), np.stack(data.X_test)
    mean = X_train.reshape(-1, 6).mean(axis=0)
    std = X_train.reshape(-1, 6).std(axis=0)
    X_train = ((X_train - mean) / std).astype(np.float32)
    X_test = ((X_test - mean) / std).astype(np.float32)
    names = data.class_names
    rng = np.random.default_rng(args.seed)
    excerpts, labels = [], []
    for x, label in zip(X_train, data.y_train, strict=True):
        for _ in range(2 if args.quick else 10):
            n = int(rng.integers(20, 101))
            start = int(rng.integers(0, 101 - n))
            excerpts.append(x[start:start + n])
            labels.append(label)
    labels = np.array(labels)
    batch = 16
    updates = args.epochs * -(-len(excerpts) // batch)
    candidates = {
        "GRU(16)": lambda: GRU(16, input_shape=(None, 6)),
        "LSTM(16)": lambda: LSTM(16, input_shape=(None, 6)),
        "FastGRNN(16)": lambda: FastGRNN(16, input_shape=(None, 6)),
        "FastGRNN(16) low rank + 50% sparse": lambda: FastGRNN(
            16, wrank=3, urank=4, sparsity=0.5, sparsity_warmup=updates // 3, sparsity_freeze=2 * updates // 3,
            input_shape=(None, 6)),
    }
    results = {}
    models = {}
    for label, make in candidates.items():
        model = Sequential([make(), Dense(len(names), activation="softmax")], seed=args.seed)
        model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(learning_rate=0.01),
                      metrics=["accuracy"])
        t0 = time.perf_counter()
        model.fit(excerpts, labels, batch_size=batch, epochs=args.epochs, verbose=0)
        secs = time.perf_counter() - t0
        acc = float((model.predict(X_test).argmax(axis=1) == data.y_test).mean())
        results[label] = (acc, size_bytes(model), model.count_params(), secs)
        models[label] = model
        print(f"{label:<36} test accuracy {acc:.3f}   size {size_bytes(model) / 1024:6.2f} KB "
              f"({model.count_params():,} parameters)   trained in {secs:.1f} s")

    best = models["FastGRNN(16) low rank + 50% sparse"]
    best.summary()
    path = os.path.join(args.out, "fastgrnn_activity_stream.onnx")
    edgernn.onnx.export(best, path, streaming=True)
    report = edgernn.onnx.verify(best, path)
    print(f"\nexported {path} ({os.path.getsize(path)} bytes; it stores W = W1 W2 and U = U1 U2 multiplied "
          f"out, dense)\nverified against onnxruntime: {report}")
    stream = best.stream(batch_size=1)
    ts, correct = [], 0
    for r in range(len(X_test)):
        stream.reset()
        for t in range(X_test.shape[1]):
            t0 = time.perf_counter()
            y = stream.step(X_test[r, t])
            ts.append(time.perf_counter() - t0)
        correct += int(y.argmax() == data.y_test[r])
    print(f"edgernn model.stream(): accuracy {correct / len(X_test):.3f} after the whole recording, "
          f"median {np.median(ts) * 1e6:.1f} us per sample")

    fig, ax = plt.subplots(figsize=(8, 4))
    for k, (label, (acc, nbytes, _, _)) in enumerate(results.items()):
        ax.scatter(nbytes / 1024, acc, s=60, label=label, color=f"C{k}")
    ax.set_xscale("log")
    ax.set_xlabel("model size (KB, float32; sparse weights by nonzeros)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("BasicMotions: accuracy vs model size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    png = os.path.join(args.out, "fastgrnn_activity.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
