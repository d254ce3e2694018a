#!/usr/bin/env python3
"""SRU against LSTM of the same size: functional forward, forward + backward, ``train_on_batch``,
stream step, and the exported graphs in onnxruntime (SRU: a Scan; LSTM: a native node).

One thread everywhere (``edgernn.set_num_threads(1)``, onnxruntime ``intra_op_num_threads=1``),
float32, medians of the calling thread's CPU time (``time.thread_time``: robust on a shared
machine; see README.md "Clock"). Usage::

    python benchmarks/bench_sru.py            # about two minutes
    python benchmarks/bench_sru.py --quick
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402

import edgernn  # noqa: E402
import edgernn.functional as F  # noqa: E402
from edgernn import Sequential  # noqa: E402
from edgernn.layers import LSTM, SRU, Dense  # noqa: E402


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


def params(rng, I, H, cell):
    f32 = np.float32
    if cell == "sru":
        K = 3 if I == H else 4
        return dict(W=(rng.standard_normal((1, K * H, I)) / np.sqrt(I)).astype(f32),
                    v=rng.uniform(-1, 1, (1, 2 * H)).astype(f32), b=np.zeros((1, 2 * H), f32))
    return dict(W=(rng.standard_normal((1, 4 * H, I)) / np.sqrt(I)).astype(f32),
                R=(rng.standard_normal((1, 4 * H, H)) / np.sqrt(H)).astype(f32), Wb=np.zeros((1, 4 * H), f32))


def functional_case(I, H, B, T, reps, rows):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B, T, I)).astype(np.float32)
    res = {}
    for cell in ("lstm", "sru"):
        p = params(rng, I, H, cell)
        fn = getattr(F, cell)
        bwd = getattr(F, f"{cell}_backward")
        fwd = median_time(lambda: fn(X, **p), reps)  # noqa: B023

        def fb():
            out = fn(X, **p, train=True)  # noqa: B023
            bwd(out[-1], np.ones_like(out[0]))  # noqa: B023

        res[cell] = (fwd, median_time(fb, reps))
    for k, what in enumerate(("forward", "forward+backward")):
        rows.append((f"functional {what} ({I},{H}) B={B} T={T}", res["lstm"][k], res["sru"][k]))


def train_case(I, H, B, T, reps, rows, stacked=False):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((B, T, I)).astype(np.float32)
    y = rng.standard_normal((B, 1)).astype(np.float32)
    res = {}
    for cls in (LSTM, SRU):
        layers = [cls(H, input_shape=(None, I), return_sequences=stacked)]
        if stacked:
            layers.append(cls(H))
        m = Sequential(layers + [Dense(1)], seed=0)
        m.compile(loss="mse", optimizer="adam")
        res[cls.__name__] = median_time(lambda: m.train_on_batch(X, y), reps)  # noqa: B023
    name = f"train_on_batch {'2x ' if stacked else ''}({I},{H})+Dense B={B} T={T}"
    rows.append((name, res["LSTM"], res["SRU"]))


def stream_case(I, H, reps, rows):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, I)).astype(np.float32)
    res = {}
    for cls in (LSTM, SRU):
        st = Sequential([cls(H, input_shape=(None, I))], seed=0).stream(batch_size=1)
        res[cls.__name__] = median_time(lambda: [st.step(x) for _ in range(100)], reps) / 100  # noqa: B023
    rows.append((f"stream step ({I},{H}) B=1", res["LSTM"], res["SRU"]))


def ort_case(I, H, T, reps, rows):
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        return None
    import edgernn.onnx as eo

    rng = np.random.default_rng(3)
    X = rng.standard_normal((1, T, I)).astype(np.float32)
    res, nodes = {}, None
    with tempfile.TemporaryDirectory() as d:
        for cls in (LSTM, SRU):
            m = Sequential([cls(H, input_shape=(None, I), return_sequences=True)], seed=0)
            path = os.path.join(d, f"{cls.__name__}.onnx")
            eo.export(m, path)
            if cls is SRU:
                g = onnx.load(path).graph
                scan = next(n for n in g.node if n.op_type == "Scan")
                nodes = [n.op_type for n in onnx.helper.get_attribute_value(scan.attribute[0]).node]
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            name = s.get_inputs()[0].name
            np.testing.assert_allclose(s.run(None, {name: X})[0], m.predict(X), atol=1e-4)
            res[cls.__name__] = median_time(lambda: s.run(None, {name: X}), reps)  # noqa: B023
    rows.append((f"onnxruntime full graph ({I},{H}) B=1 T={T}", res["LSTM"], res["SRU"]))
    return nodes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    edgernn.set_num_threads(1)
    reps = 5 if a.quick else 21
    rows = []
    functional_case(64, 64, 32, 100, reps, rows)
    functional_case(128, 128, 32, 100, reps, rows)
    functional_case(16, 64, 1, 1000, reps, rows)
    train_case(16, 64, 32, 50, reps, rows)
    train_case(64, 128, 32, 100, reps, rows, stacked=True)
    stream_case(16, 64, reps, rows)
    nodes = ort_case(16, 64, 1000, reps, rows)
    print("| case (inputs, units) | LSTM | SRU | LSTM / SRU |")
    print("|---|---|---|---|")
    for name, lstm, sru in rows:
        print(f"| {name} | {fmt(lstm)} | {fmt(sru)} | {lstm / sru:.2f}x |")
    if nodes is not None:
        ops = [o for o in nodes if o != "Identity"]
        print(f"\nSRU Scan body: {len(nodes)} nodes ({len(ops)} of the step: {', '.join(ops)}; "
              f"{len(nodes) - len(ops)} Identity for the body outputs)")


if __name__ == "__main__":
    main()
