"""A smartwatch that recognises what you are doing: train, export to ONNX, run it as a device would.

BasicMotions (UEA archive): a smartwatch's 3-axis accelerometer and 3-axis gyroscope (6
channels), 100 samples at 10 Hz per recording, four activities (badminton, running,
standing, walking); 40 training and 40 test recordings.

1. Train a small GRU, GRU(16) -> Dense(4, softmax), on random excerpts of the training
   recordings (2 to 10 seconds long, given as a list of arrays of different lengths): a
   watch must recognise an activity it has been watching only for a few seconds, and the
   excerpts make 400 training sequences out of 40 recordings.
2. Export it to ONNX as a *streaming* graph (one time step in; the GRU state is an explicit
   input and output), and verify the graph against edgernn with onnxruntime.
3. Play the device: for each test recording, start from a zero state and feed the samples to
   onnxruntime one at a time, carrying the state, exactly as firmware reading a sensor would.
   The prediction after the last sample classifies the recording; we also record how the
   prediction evolves as samples arrive, and the time each step takes.

Run:  python examples/activity_watch.py            (under a minute on 2 cores)
      python examples/activity_watch.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes activity_watch.png and activity_watch_stream.onnx.
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import onnxruntime as ort  # noqa: E402

import edgernn.onnx  # noqa: E402
from edgernn import Sequential  # noqa: E402
from edgernn.datasets import load_basic_motions  # noqa: E402
from edgernn.layers import GRU, Dense  # noqa: E402
from edgernn.optimizers import Adam  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG and the ONNX file (default: current directory)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 40, quick 2)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.epochs is None:
        args.epochs = 2 if args.quick else 40
    return args


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = load_basic_motions()
    X_train, X_test = np.stack(data.X_train), np.stack(data.X_test)  # (40, 100, 6) each
    # Standardise each channel with training statistics; a device applies the same two vectors.
    mean = X_train.reshape(-1, 6).mean(axis=0)
    std = X_train.reshape(-1, 6).std(axis=0)
    X_train = ((X_train - mean) / std).astype(np.float32)
    X_test = ((X_test - mean) / std).astype(np.float32)
    names = data.class_names
    print(f"BasicMotions: {len(X_train)} training and {len(X_test)} test recordings of "
          f"{X_train.shape[1]} samples x {X_train.shape[2]} channels; classes {names}")

    # ---- 1. train on random excerpts -------------------------------------------------------------
    rng = np.random.default_rng(args.seed)
    excerpts, labels = [], []
    for x, label in zip(X_train, data.y_train, strict=True):
        for _ in range(2 if args.quick else 10):
            n = int(rng.integers(20, 101))  # 20 to 100 samples = 2 to 10 s
            start = int(rng.integers(0, 101 - n))
            excerpts.append(x[start:start + n])
            labels.append(label)
    model = Sequential([GRU(16, input_shape=(None, 6)),
                        Dense(len(names), activation="softmax")], seed=args.seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(learning_rate=0.003),
                  metrics=["accuracy"])
    model.summary()
    t0 = time.perf_counter()
    model.fit(excerpts, np.array(labels), batch_size=16, epochs=args.epochs, verbose=0)
    print(f"trained {args.epochs} epochs on {len(excerpts)} excerpts in {time.perf_counter() - t0:.1f} s")
    acc_edgernn = float((model.predict(X_test).argmax(axis=1) == data.y_test).mean())
    print(f"test accuracy with model.predict on whole recordings: {acc_edgernn:.3f}")

    # ---- 2. export the streaming graph and verify it -------------------------------------------
    path = os.path.join(args.out, "activity_watch_stream.onnx")
    edgernn.onnx.export(model, path, streaming=True)
    report = edgernn.onnx.verify(model, path)
    print(f"\nexported {path} ({os.path.getsize(path)} bytes)")
    print(f"verified against onnxruntime: {report}")

    # ---- 3. the device: one sample at a time through onnxruntime --------------------------------
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # a small device runs one stream on one core
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    state_inputs = [i for i in sess.get_inputs() if i.name.startswith("state_")]
    out_names = [o.name for o in sess.get_outputs()]  # "y", then the new states "..._out"
    print(f"graph inputs {[i.name for i in sess.get_inputs()]}, outputs {out_names}")
    n_test, T, _ = X_test.shape
    probs = np.zeros((n_test, T, len(names)), np.float32)  # the prediction after each sample
    latency = []
    for r in range(n_test):
        states = {i.name: np.zeros((1, i.shape[-1]), np.float32) for i in state_inputs}  # power-on
        for t in range(T):
            sample = X_test[r, t][None, :]  # (1, 6): what the sensor delivers now
            t0 = time.perf_counter()
            y, *new_states = sess.run(out_names, {"x": sample, **states})
            latency.append(time.perf_counter() - t0)
            states = {i.name: s for i, s in zip(state_inputs, new_states, strict=True)}
            probs[r, t] = y[0]
    latency_us = np.array(latency) * 1e6
    final = probs[:, -1].argmax(axis=1)
    acc_device = float((final == data.y_test).mean())
    diff = float(np.abs(probs[:, -1] - model.predict(X_test)).max())
    acc_by_t = (probs.argmax(axis=2) == data.y_test[:, None]).mean(axis=0)  # (T,)

    # edgernn's own streaming engine, for comparison (same weights, same step)
    stream = model.stream(batch_size=1)
    ts = []
    for r in range(n_test):
        stream.reset()  # zero state
        for t in range(T):
            x = np.ascontiguousarray(X_test[r, t])  # (6,) float32
            t0 = time.perf_counter()
            stream.step(x)
            ts.append(time.perf_counter() - t0)
    edgernn_us = np.array(ts) * 1e6

    print(f"\nDevice simulation, {n_test} test recordings x {T} samples through onnxruntime, one sample per call:")
    print(f"  accuracy after the whole recording: {acc_device:.3f} "
          f"({int((final == data.y_test).sum())} of {n_test})")
    print(f"  max |streamed probabilities - model.predict| = {diff:.1e}")
    print("  accuracy after " + " / ".join(str(k) for k in (10, 25, 50, 75)) + " samples: "
          + " / ".join(f"{acc_by_t[k - 1]:.3f}" for k in (10, 25, 50, 75)))
    print(f"  onnxruntime latency per sample: median {np.median(latency_us):.1f} us, "
          f"p99 {np.percentile(latency_us, 99):.1f} us")
    print(f"  edgernn model.stream() step, same model: median {np.median(edgernn_us):.1f} us, "
          f"p99 {np.percentile(edgernn_us, 99):.1f} us")

    # ---- plot ----------------------------------------------------------------------------------
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot(np.arange(1, T + 1), acc_by_t, color="tab:blue")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("samples received (10 Hz)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"accuracy as samples arrive (final {acc_device:.3f})")
    ax.grid(alpha=0.3)
    ax = axes[1]
    r = int(np.flatnonzero(data.y_test == names.index("Walking"))[0]) if "Walking" in names else 0
    for k, name in enumerate(names):
        ax.plot(np.arange(1, T + 1), probs[r, :, k], label=name)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("samples received")
    ax.set_ylabel("predicted probability")
    ax.set_title(f"one test recording (truth: {names[data.y_test[r]]})")
    ax.legend(fontsize=8)
    ax = axes[2]
    hi = np.percentile(np.concatenate([latency_us, edgernn_us]), 99.5)
    bins = np.linspace(0, hi, 60)
    ax.hist(np.clip(latency_us, 0, hi), bins=bins, alpha=0.7,
            label=f"onnxruntime session.run (median {np.median(latency_us):.1f} us)")
    ax.hist(np.clip(edgernn_us, 0, hi), bins=bins, alpha=0.7,
            label=f"edgernn stream.step (median {np.median(edgernn_us):.1f} us)")
    ax.set_xlabel("latency per sample (us)")
    ax.set_ylabel("count")
    ax.set_title("time to process one sensor sample")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = os.path.join(args.out, "activity_watch.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
