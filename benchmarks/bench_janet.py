"""JANET against LSTM of the same size, one thread, float32: ``functional`` forward, forward +
backward, ``Sequential.train_on_batch``, and the exported graph in onnxruntime.

    python benchmarks/bench_janet.py [--clock cpu|wall] [--repeat N]

Medians of ``--repeat`` calls after two warm-up calls (compilation excluded). ``--clock cpu``
(default) uses ``time.thread_time``: with one thread everything runs on the calling thread, so
it measures the same work while ignoring time descheduled on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402

import edgernn  # noqa: E402
import edgernn.functional as F  # noqa: E402
from edgernn import Sequential  # noqa: E402
from edgernn.layers import JANET, LSTM, Dense  # noqa: E402


def median_time(fn, repeat, clock):
    fn()
    fn()
    ts = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return statistics.median(ts)


def fmt(s):
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    edgernn.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []

    def row(case, tj, tl):
        rows.append((case, tj, tl))
        print(f"| {case} | {fmt(tj)} | {fmt(tl)} | {tj / tl:.2f} |", flush=True)

    print("| case | JANET | LSTM | JANET / LSTM |\n|---|---|---|---|")
    for I, H in ((16, 64), (64, 256)):
        Wj = (rng.standard_normal((1, 2 * H, I)) * 0.1).astype(np.float32)
        Uj = (rng.standard_normal((1, 2 * H, H)) * 0.1).astype(np.float32)
        bj = np.zeros((1, 2 * H), np.float32)
        Wl = (rng.standard_normal((1, 4 * H, I)) * 0.1).astype(np.float32)
        Rl = (rng.standard_normal((1, 4 * H, H)) * 0.1).astype(np.float32)
        bl = np.zeros((1, 4 * H), np.float32)
        for B, T in ((1, 1000), (32, 100)):
            X = rng.standard_normal((B, T, I)).astype(np.float32)
            dY = np.ones((B, T, 1, H), np.float32)
            jargs, largs = (X, Wj, Uj, bj), (X, Wl, Rl, bl)
            tj = median_time(lambda a=jargs: F.janet(*a), args.repeat, clock)
            tl = median_time(lambda a=largs: F.lstm(*a), args.repeat, clock)
            row(f"forward ({I},{H}) B={B} T={T}", tj, tl)
            tj = median_time(lambda a=jargs, d=dY: F.janet_backward(F.janet(*a, train=True)[-1], d), args.repeat,
                             clock)
            tl = median_time(lambda a=largs, d=dY: F.lstm_backward(F.lstm(*a, train=True)[-1], d), args.repeat,
                             clock)
            row(f"forward+backward ({I},{H}) B={B} T={T}", tj, tl)
    for I, H, B, T in ((16, 64, 32, 50), (64, 256, 32, 100)):
        X = rng.standard_normal((B, T, I)).astype(np.float32)
        y = rng.standard_normal((B, 1)).astype(np.float32)
        ts = []
        for cls in (JANET, LSTM):
            m = Sequential([cls(H, input_shape=(None, I)), Dense(1)], seed=0)
            m.compile(loss="mse", optimizer="adam")
            ts.append(median_time(lambda m=m, X=X, y=y: m.train_on_batch(X, y), args.repeat, clock))
        row(f"train_on_batch cell({I}->{H})+Dense(1) B={B} T={T}", *ts)
    try:
        import onnxruntime as ort

        import edgernn.onnx as eo
    except ImportError:
        print("onnxruntime not installed: export rows skipped", file=sys.stderr)
        return
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    for I, H in ((16, 64), (64, 256)):
        X = rng.standard_normal((1, 1000, I)).astype(np.float32)
        ts = []
        for cls in (JANET, LSTM):
            m = Sequential([cls(H, input_shape=(None, I), return_sequences=True)], seed=0)
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "m.onnx")
                eo.export(m, path)
                sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            ts.append(median_time(lambda s=sess, X=X: s.run(None, {"x": X}), args.repeat, clock))
        row(f"onnxruntime, exported full graph ({I},{H}) B=1 T=1000", *ts)


if __name__ == "__main__":
    main()
