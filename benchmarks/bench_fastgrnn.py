"""FastGRNN / FastRNN against LSTM and GRU of the same size (I=16, H=64), one thread, CPU time
of the calling thread, medians: ``functional`` forward (B=1, T=1000) and forward+backward
(B=32, T=50), ``train_on_batch`` (B=32, T=50, + Dense(1)), one streaming step (B=1), and
onnxruntime on the exported full-sequence graph (B=1, T=1000: a Scan for the Fast cells,
native nodes for LSTM/GRU).

    python benchmarks/bench_fastgrnn.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402

import edgernn  # noqa: E402
import edgernn.functional as F  # noqa: E402
from edgernn import Sequential, layers  # noqa: E402

I, H = 16, 64


def med(fn, reps):
    fn()
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.thread_time()
        fn()
        ts.append(time.thread_time() - t0)
    return float(np.median(ts))


def params(cell, rng):
    r = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)  # noqa: E731
    if cell == "lstm":
        return dict(W=r(1, 4 * H, I), R=r(1, 4 * H, H), Wb=r(1, 4 * H))
    if cell == "gru":
        return dict(W=r(1, 3 * H, I), R=r(1, 3 * H, H), Wb=r(1, 3 * H))
    if cell == "fastrnn":
        return dict(W=r(1, H, I), U=r(1, H, H), b=r(1, H), alpha=r(1, 1), beta=r(1, 1))
    return dict(W=r(1, H, I), U=r(1, H, H), bz=r(1, H), bh=r(1, H), zeta=r(1, 1), nu=r(1, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    reps = 5 if args.quick else 21
    edgernn.set_num_threads(1)
    rng = np.random.default_rng(0)
    cells = ["lstm", "gru", "fastrnn", "fastgrnn"]
    layer_cls = {"lstm": layers.LSTM, "gru": layers.GRU, "fastrnn": layers.FastRNN, "fastgrnn": layers.FastGRNN}
    rows = []
    X1 = rng.standard_normal((1, 1000, I)).astype(np.float32)
    X32 = rng.standard_normal((32, 50, I)).astype(np.float32)
    y32 = rng.standard_normal((32, 1)).astype(np.float32)
    for cell in cells:
        fn = getattr(F, cell)
        bw = getattr(F, cell + "_backward")
        P = params(cell, rng)
        fwd = med(lambda: fn(X1, **P), reps)  # noqa: B023

        def fb():
            *outs, cache = fn(X32, **P, train=True)  # noqa: B023
            bw(cache, np.ones_like(outs[0]))  # noqa: B023

        fbt = med(fb, reps)
        m = Sequential([layer_cls[cell](H, input_shape=(None, I)), layers.Dense(1)], seed=0)
        m.compile(loss="mse", optimizer="adam")
        tr = med(lambda: m.train_on_batch(X32, y32), reps)  # noqa: B023
        st = m.stream(batch_size=1)
        x = X1[0, 0]
        step = med(lambda: [st.step(x) for _ in range(1000)], reps) / 1000  # noqa: B023
        ort = None
        try:
            import onnxruntime as ort_mod

            import edgernn.onnx as eo

            so = ort_mod.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "m.onnx")
                eo.export(m, path)
                sess = ort_mod.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                name = sess.get_inputs()[0].name
                ort = med(lambda: sess.run(None, {name: X1}), reps)  # noqa: B023
        except ImportError:
            pass
        rows.append((cell, m.layers[0].count_params(), fwd, fbt, tr, step, ort))
    base = {r[0]: r for r in rows}["lstm"]
    print(f"| cell (I={I}, H={H}) | params | functional fwd B=1 T=1000 | fwd+bwd B=32 T=50 | train_on_batch B=32 T=50 "
          "| stream step B=1 | onnxruntime full graph B=1 T=1000 |")
    print("|---|---|---|---|---|---|---|")
    for cell, n, fwd, fbt, tr, step, ort in rows:
        def c(v, b):
            return f"{v * 1e3:.2f} ms ({v / b:.2f}x)"
        o = "-" if ort is None else c(ort, base[6])
        print(f"| {cell} | {n:,} | {c(fwd, base[2])} | {c(fbt, base[3])} | {c(tr, base[4])} | "
              f"{step * 1e6:.2f} us ({step / base[5]:.2f}x) | {o} |")


if __name__ == "__main__":
    main()
