"""QRNN vs LSTM of the same size (units), one thread, float32: functional forward,
forward + backward, ``train_on_batch``, and onnxruntime on the exported full graphs.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_qrnn.py [--quick]

Times are medians of CPU time of the calling thread (``time.thread_time``; all work runs on it
at one thread), so a busy shared machine disturbs them less than wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import edgernn
import edgernn.functional as F
from edgernn import Sequential
from edgernn.layers import LSTM, QRNN, Dense


def median_time(fn, reps, warm=2):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.thread_time()
        fn()
        ts.append(time.thread_time() - t0)
    return float(np.median(ts))


def fmt(s):
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    edgernn.set_num_threads(1)
    reps = 5 if args.quick else 21
    rng = np.random.default_rng(0)
    rows = []
    for B, T, I, H in ((32, 100, 32, 128), (32, 100, 64, 256)):
        X = rng.standard_normal((B, T, I)).astype(np.float32)
        Wq = (rng.standard_normal((1, 3 * H, 2 * I)) * 0.1).astype(np.float32)
        bq = np.zeros((1, 3 * H), np.float32)
        Wl = (rng.standard_normal((1, 4 * H, I)) * 0.1).astype(np.float32)
        Rl = (rng.standard_normal((1, 4 * H, H)) * 0.05).astype(np.float32)
        bl = np.zeros((1, 4 * H), np.float32)
        dY = np.ones((B, T, 1, H), np.float32)

        def q_fb(X=X, Wq=Wq, bq=bq, dY=dY):
            *_, c = F.qrnn(X, Wq, bq, train=True)
            F.qrnn_backward(c, dY)

        def l_fb(X=X, Wl=Wl, Rl=Rl, bl=bl, dY=dY):
            *_, c = F.lstm(X, Wl, Rl, bl, train=True)
            F.lstm_backward(c, dY)

        tag = f"B={B} T={T} I={I} H={H}"
        rows.append((f"functional forward, {tag}", median_time(lambda X=X, Wq=Wq, bq=bq: F.qrnn(X, Wq, bq), reps),
                     median_time(lambda X=X, Wl=Wl, Rl=Rl, bl=bl: F.lstm(X, Wl, Rl, bl), reps)))
        rows.append((f"functional forward + backward, {tag}", median_time(q_fb, reps), median_time(l_fb, reps)))
        y = rng.standard_normal((B, 1)).astype(np.float32)
        ms = []
        for cls in (QRNN, LSTM):
            m = Sequential([cls(H, input_shape=(None, I)), Dense(1)], seed=0)
            m.compile(loss="mse", optimizer="adam")
            ms.append(median_time(lambda m=m, X=X, y=y: m.train_on_batch(X, y), reps))
        rows.append((f"train_on_batch (Adam, MSE, +Dense(1)), {tag}", *ms))
    try:
        import onnxruntime as ort

        import edgernn.onnx as eo
    except ImportError:
        ort = None
    if ort is not None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        for I, H in ((16, 64), (64, 256)):
            x = rng.standard_normal((1, 1000, I)).astype(np.float32)
            ts = []
            with tempfile.TemporaryDirectory() as tmp:
                for cls in (QRNN, LSTM):
                    m = Sequential([cls(H, input_shape=(None, I), return_sequences=True)], seed=0)
                    path = Path(tmp) / f"{cls.__name__}.onnx"
                    eo.export(m, path)
                    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                    ts.append(median_time(lambda s=sess, x=x: s.run(None, {"x": x}), reps))
            rows.append((f"onnxruntime full graph, B=1 T=1000 I={I} H={H} (QRNN: Scan)", *ts))
    print("| case | QRNN (window 2, fo) | LSTM | QRNN / LSTM |")
    print("|---|---|---|---|")
    for name, q, lstm in rows:
        print(f"| {name} | {fmt(q)} | {fmt(lstm)} | {q / lstm:.2f} |")


if __name__ == "__main__":
    main()
