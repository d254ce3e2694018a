#!/usr/bin/env python3
"""edgernn vs onnxruntime vs PyTorch, side by side, on the same weights.

Every measurement runs in a fresh Python process (``bench.py --worker SPEC``), so import
state, caches and thread pools of one framework never touch another. Times are medians over
many repetitions after warm-up. Ratios are edgernn / other: below 1 means edgernn is faster.

Cases (float32), each at one thread and at the frameworks' default thread counts:

1. ``stream``: one time step, batch 1 (LSTM and GRU, (inputs, units) = (16, 64) and (64, 256)).
   edgernn ``model.stream().step``; onnxruntime on the exporter's streaming graph with
   ``io_binding`` (its fastest call style) and with ``session.run``; PyTorch ``nn.LSTMCell`` /
   ``nn.GRUCell`` under ``inference_mode``.
2. ``seq``: one sequence, batch 1, T=1000. edgernn ``functional.lstm/gru``; onnxruntime on a
   single LSTM/GRU node built directly (time-major input, its native layout); PyTorch
   ``nn.LSTM/GRU``.
3. ``batch``: batch 32, T=100, two stacked layers. edgernn ``functional`` twice; onnxruntime
   on two nodes; PyTorch ``nn.LSTM(num_layers=2)``.
4. ``train``: one training step (forward + backward + Adam) of LSTM(16->64)+Dense(1) on every
   step, batch 32, T=50, MSE; and of LSTM(64->256)x2+Dense(1), batch 32, T=100; the same with
   GRU; the newer cells (IndRNN, Jordan, SRU, QRNN, JANET, FastGRNN) in edgernn only, next to
   them. edgernn ``Sequential.train_on_batch``; PyTorch the usual zero_grad/forward/backward/step.
5. ``cold``: a fresh process imports the framework, loads a saved LSTM(16->64)+Dense(1)
   model and predicts one sequence (T=100): wall time from process start to the answer and
   peak RSS; for edgernn with the numba cache warm and empty.

Usage::

    python benchmarks/bench.py                 # everything (about 10-20 minutes on 2 cores)
    python benchmarks/bench.py --quick         # smoke run: fewer repetitions, one size
    python benchmarks/bench.py --cases stream,seq --threads 1 --json out.json

PyTorch is optional (``pip install torch``); missing frameworks are skipped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SIZES = [(16, 64), (64, 256)]
CELLS = ["lstm", "gru"]
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")


# =========================================================================================
# shared helpers (worker side)
# =========================================================================================
# The clock: "wall" (time.perf_counter) or "cpu" (time.thread_time: CPU time of the calling
# thread). With one thread every framework here computes on the calling thread, so "cpu"
# measures the same work while ignoring the time the thread is descheduled: use it on a
# shared or busy machine. It is meaningless with several threads (the default-threads runs
# always use the wall clock).
CLOCK = time.perf_counter


def _stats(ts, n_per):
    ts.sort()
    return {"median": ts[len(ts) // 2], "min": ts[0], "reps": len(ts) * n_per}


def _timeit(fn, reps, min_time=0.0, warmup=3):
    """Median and min seconds per call of ``fn`` over ``reps`` calls (at least ``min_time`` s)."""
    for _ in range(warmup):
        fn()
    ts = []
    t_end = time.perf_counter() + min_time
    while len(ts) < reps or time.perf_counter() < t_end:
        t0 = CLOCK()
        fn()
        ts.append(CLOCK() - t0)
    return _stats(ts, 1)


def _timeit_inner(fn, inner, reps, warmup=2):
    """For very short calls: time ``inner`` calls per sample; returns per-call stats."""
    for _ in range(warmup):
        for _ in range(inner):
            fn()
    ts = []
    for _ in range(reps):
        t0 = CLOCK()
        for _ in range(inner):
            fn()
        ts.append((CLOCK() - t0) / inner)
    return _stats(ts, inner)


def _weights(cell, I, H, layers, seed=0):
    """ONNX-layout weights per layer: W (1, G*H, in), R (1, G*H, H), Wb, Rb (1, G*H)."""
    import numpy as np

    G = {"lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(seed)
    out = []
    for li in range(layers):
        n_in = I if li == 0 else H
        s = 1.0 / np.sqrt(H)
        out.append(dict(W=rng.uniform(-s, s, (1, G * H, n_in)).astype(np.float32),
                        R=rng.uniform(-s, s, (1, G * H, H)).astype(np.float32),
                        Wb=rng.uniform(-s, s, (1, G * H)).astype(np.float32),
                        Rb=rng.uniform(-s, s, (1, G * H)).astype(np.float32)))
    return out


def _torch_perm(cell, H):
    """Row order that turns ONNX gates into PyTorch gates (LSTM i,o,f,c -> i,f,g,o; GRU z,r,h -> r,z,n)."""
    import numpy as np

    blocks = {"lstm": [0, 2, 3, 1], "gru": [1, 0, 2]}[cell]
    return np.concatenate([np.arange(b * H, (b + 1) * H) for b in blocks])


def _onnx_model(cell, I, H, weights):
    """A graph of stacked single-direction RNN nodes, time-major (T, B, I) in, (T, B, H) out."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "X"
    for li, w in enumerate(weights):
        inits += [numpy_helper.from_array(w["W"], f"W{li}"), numpy_helper.from_array(w["R"], f"R{li}"),
                  numpy_helper.from_array(np.concatenate([w["Wb"], w["Rb"]], 1), f"B{li}")]
        kw = {"linear_before_reset": 1} if cell == "gru" else {}
        nodes.append(helper.make_node(cell.upper(), [x, f"W{li}", f"R{li}", f"B{li}"], [f"Y{li}"],
                                      hidden_size=H, **kw))
        nodes.append(helper.make_node("Squeeze", [f"Y{li}", "axis1"], [f"S{li}"]))
        x = f"S{li}"
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    g = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["T", "B", H])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(m)
    return m


def _ort_session(model_or_path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads != "default":
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _set_threads(fw, threads):
    if fw == "edgernn":
        import edgernn

        if threads != "default":
            edgernn.set_num_threads(int(threads))
    elif fw == "torch":
        import torch

        if threads != "default":
            torch.set_num_threads(int(threads))
            try:
                torch.set_num_interop_threads(int(threads))
            except RuntimeError:
                pass


# layer class of each cell name in the cases (the newer cells are trained by edgernn only)
LAYER_OF = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN", "indrnn": "IndRNN", "jordan": "JordanRNN",
            "sru": "SRU", "qrnn": "QRNN", "janet": "JANET", "fastgrnn": "FastGRNN"}
TRAIN_CELLS = ("lstm", "gru")  # against PyTorch
TRAIN_NEW_CELLS = ("indrnn", "jordan", "sru", "qrnn", "janet", "fastgrnn")  # edgernn only, next to LSTM


def _edgernn_model(cell, I, H, layers, head, seq, weights=None):
    """A Sequential of ``layers`` recurrent layers (+ Dense(1) on every step if ``head``)."""
    import numpy as np

    import edgernn
    from edgernn import layers as L

    Layer = getattr(L, LAYER_OF[cell])
    Dense = L.Dense
    ls = []
    for li in range(layers):
        kw = dict(return_sequences=seq or li < layers - 1 or head)
        if li == 0:
            kw["input_shape"] = (None, I)
        ls.append(Layer(H, **kw))
    if head:
        ls.append(Dense(1))
    m = edgernn.Sequential(ls, seed=0)
    if weights is not None:
        for layer, w in zip(ls, weights, strict=False):  # the Dense head keeps its init
            p = layer.params
            np.copyto(p["W"], w["W"])
            np.copyto(p["R"], w["R"])
            if "Rb" in p:
                np.copyto(p["Wb"], w["Wb"])
                np.copyto(p["Rb"], w["Rb"])
            else:  # one bias (Keras LSTM): the sum acts the same
                np.copyto(p["Wb"], w["Wb"] + w["Rb"])
    return m


# =========================================================================================
# workers: one measurement each, in a fresh process; print one JSON line
# =========================================================================================
def work_stream(spec):
    import numpy as np

    cell, I, H, fw, threads, reps = spec["cell"], spec["I"], spec["H"], spec["fw"], spec["threads"], spec["reps"]
    _set_threads(fw, threads)
    w = _weights(cell, I, H, 1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, I)).astype(np.float32)
    res = {}
    if fw == "edgernn":
        model = _edgernn_model(cell, I, H, 1, head=False, seq=False, weights=w)
        s = model.stream(batch_size=1)
        x1 = x[0]
        buf = np.empty(s.output_features, np.float32)
        # the zero-allocation path (what the step returned before results became fresh arrays)
        res["edgernn stream.step"] = _timeit_inner(lambda: s.step(x1, out=buf), 1000, reps)
        res["edgernn stream.step, fresh result (default)"] = _timeit_inner(lambda: s.step(x1), 1000, reps)
        # the functional API on one step (what a naive streaming loop would call)
        import edgernn.functional as F

        f = getattr(F, cell)
        X = x[None]  # (1, 1, I)
        st = {"h0": np.zeros((1, 1, H), np.float32)}
        if cell == "lstm":
            st["c0"] = np.zeros((1, 1, H), np.float32)
        args = (w[0]["W"], w[0]["R"], w[0]["Wb"], w[0]["Rb"])
        res["edgernn functional, T=1"] = _timeit_inner(lambda: f(X, *args, **st), 100, reps)
        s.reset()
        y = s.step(x1)
        ref = f(X, *args, **st)[1][0, 0]
        res["_check"] = float(np.abs(y - ref).max())
    elif fw == "onnxruntime":
        import edgernn.onnx as eo

        model = _edgernn_model(cell, I, H, 1, head=False, seq=False, weights=w)
        d = tempfile.mkdtemp()
        try:
            path = eo.export(model, os.path.join(d, "step.onnx"), streaming=True)
            sess = _ort_session(path, threads)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        import onnxruntime as ort

        ins = [i.name for i in sess.get_inputs()]
        outs = [o.name for o in sess.get_outputs()]
        states = ins[1:]
        feeds = {ins[0]: x}
        for n in states:
            feeds[n] = np.zeros((1, H), np.float32)

        def run():
            r = sess.run(None, feeds)
            for k, n in enumerate(states):
                feeds[n] = r[1 + k]

        res["onnxruntime session.run"] = _timeit_inner(run, 200, reps)
        # io_binding: states ping-pong between two preallocated OrtValues, no copies
        bufs = [[ort.OrtValue.ortvalue_from_numpy(np.zeros((1, H), np.float32)) for _ in states] for _ in range(2)]
        xv = ort.OrtValue.ortvalue_from_numpy(x)
        yv = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, H), np.float32))
        bindings = []
        for k in range(2):
            b = sess.io_binding()
            b.bind_ortvalue_input(ins[0], xv)
            for j, n in enumerate(states):
                b.bind_ortvalue_input(n, bufs[k][j])
                b.bind_ortvalue_output(outs[1 + j], bufs[1 - k][j])
            b.bind_ortvalue_output(outs[0], yv)
            bindings.append(b)
        cur = [0]

        def run_bound():  # (passing a RunOptions object makes this 4x slower in onnxruntime 1.32)
            sess.run_with_iobinding(bindings[cur[0]])
            cur[0] ^= 1

        res["onnxruntime io_binding"] = _timeit_inner(run_bound, 200, reps)
    elif fw == "torch":
        import torch

        perm = _torch_perm(cell, H)
        C = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[cell]
        m = C(I, H)
        with torch.no_grad():
            m.weight_ih.copy_(torch.from_numpy(w[0]["W"][0][perm]))
            m.weight_hh.copy_(torch.from_numpy(w[0]["R"][0][perm]))
            m.bias_ih.copy_(torch.from_numpy(w[0]["Wb"][0][perm]))
            m.bias_hh.copy_(torch.from_numpy(w[0]["Rb"][0][perm]))
        xt = torch.from_numpy(x)
        state = [torch.zeros(1, H)] if cell == "gru" else [(torch.zeros(1, H), torch.zeros(1, H))]

        def step():
            state[0] = m(xt, state[0])

        with torch.inference_mode():
            res["torch %s" % C.__name__] = _timeit_inner(step, 200, reps)
    return res


def work_seq(spec):
    """Full sequence (case 2: layers=1, B=1, T=1000) or batch (case 3: layers=2, B=32, T=100)."""
    import numpy as np

    cell, I, H, fw, threads, reps = spec["cell"], spec["I"], spec["H"], spec["fw"], spec["threads"], spec["reps"]
    B, T, layers = spec["B"], spec["T"], spec["layers"]
    _set_threads(fw, threads)
    w = _weights(cell, I, H, layers)
    X = np.random.default_rng(1).normal(size=(B, T, I)).astype(np.float32)
    res = {}
    if fw == "edgernn":
        import edgernn.functional as F

        f = getattr(F, cell)

        def run():
            x = X
            for li in range(layers):
                x = f(x, w[li]["W"], w[li]["R"], w[li]["Wb"], w[li]["Rb"])[0][:, :, 0, :]
            return x

        res["edgernn functional"] = _timeit(run, reps, min_time=spec["min_time"])
        out = run()
        if spec.get("model", False):
            model = _edgernn_model(cell, I, H, layers, head=False, seq=True, weights=w)
            res["edgernn model.predict"] = _timeit(lambda: model.predict(X), reps, min_time=spec["min_time"])
        res["_out"] = out[:, -1, :].tolist()
    elif fw == "onnxruntime":
        sess = _ort_session(_onnx_model(cell, I, H, w), threads)
        Xt = np.ascontiguousarray(X.transpose(1, 0, 2))  # its native layout, outside the timing
        res["onnxruntime"] = _timeit(lambda: sess.run(None, {"X": Xt}), reps, min_time=spec["min_time"])
        res["_out"] = sess.run(None, {"X": Xt})[0][-1].tolist()
    elif fw == "torch":
        import torch

        perm = _torch_perm(cell, H)
        C = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        m = C(I, H, num_layers=layers, batch_first=True)
        with torch.no_grad():
            for li in range(layers):
                getattr(m, f"weight_ih_l{li}").copy_(torch.from_numpy(w[li]["W"][0][perm]))
                getattr(m, f"weight_hh_l{li}").copy_(torch.from_numpy(w[li]["R"][0][perm]))
                getattr(m, f"bias_ih_l{li}").copy_(torch.from_numpy(w[li]["Wb"][0][perm]))
                getattr(m, f"bias_hh_l{li}").copy_(torch.from_numpy(w[li]["Rb"][0][perm]))
        xt = torch.from_numpy(X)
        with torch.inference_mode():
            res["torch nn.%s" % C.__name__] = _timeit(lambda: m(xt), reps, min_time=spec["min_time"])
            res["_out"] = m(xt)[0][:, -1, :].numpy().tolist()
    return res


def work_train(spec):
    import numpy as np

    I, H, layers, B, T, fw, threads, reps = (spec[k] for k in ("I", "H", "layers", "B", "T", "fw", "threads", "reps"))
    _set_threads(fw, threads)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    Y = rng.normal(size=(B, T, 1)).astype(np.float32)
    res = {}
    if fw == "edgernn":
        from edgernn.optimizers import Adam

        model = _edgernn_model(spec["cell"], I, H, layers, head=True, seq=True)
        model.compile(optimizer=Adam(1e-3), loss="mse")
        res["edgernn train_on_batch"] = _timeit(lambda: model.train_on_batch(X, Y), reps, min_time=spec["min_time"])
    elif fw == "torch":
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[spec["cell"]](I, H, num_layers=layers,
                                                                                     batch_first=True)
                self.head = torch.nn.Linear(H, 1)

            def forward(self, x):
                return self.head(self.rnn(x)[0])

        net = Net()
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        xt, yt = torch.from_numpy(X), torch.from_numpy(Y)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(net(xt), yt)
            loss.backward()
            opt.step()

        res["torch train step"] = _timeit(step, reps, min_time=spec["min_time"])
    return res


COLD_SCRIPTS = {
    "edgernn": """
import time, resource, sys
t0 = time.perf_counter()
import numpy as np
import edgernn
m = edgernn.load_model(sys.argv[1])
y = m.predict(np.load(sys.argv[2]))
t1 = time.perf_counter()
print(t1 - t0, float(y.ravel()[-1]))
""",
    "onnxruntime": """
import time, sys
t0 = time.perf_counter()
import numpy as np
import onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
y = s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[2])})[0]
t1 = time.perf_counter()
print(t1 - t0, float(y.ravel()[-1]))
""",
    "torch": """
import time, sys
t0 = time.perf_counter()
import numpy as np
import torch
m = torch.jit.load(sys.argv[1])
with torch.inference_mode():
    y = m(torch.from_numpy(np.load(sys.argv[2]))).numpy()
t1 = time.perf_counter()
print(t1 - t0, float(y.ravel()[-1]))
""",
}


COLD_NUMBA = """
import numpy, numba
"""
COLD_NJIT = """
import numpy as np, numba
@numba.njit(cache=True)
def f(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
    return s
f(np.ones(3))
"""


def _run_child(argv, env):
    """Run a child process; return (wall seconds, peak RSS MiB, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out, err = p.stdout.read(), p.stderr.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{argv} failed ({p.returncode}):\n{err[-3000:]}")
    rss = ru.ru_maxrss / 1024.0 if sys.platform != "darwin" else ru.ru_maxrss / 2**20
    return wall, rss, out


def work_cold(spec):
    """Runs in the orchestrator (it launches its own fresh processes)."""
    import numpy as np

    fw, reps = spec["fw"], spec["reps"]
    d = tempfile.mkdtemp(prefix="edgernn-bench-cold-")
    res = {}
    try:
        x = np.random.default_rng(1).normal(size=(1, 100, 16)).astype(np.float32)
        xp = os.path.join(d, "x.npy")
        np.save(xp, x)
        env = _child_env(spec["threads"])
        # an installed package has its .pyc files; with PYTHONDONTWRITEBYTECODE (set on some CI
        # machines) every cold start would recompile edgernn's sources (~0.13 s) but not numba's
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if fw == "edgernn":
            model = _edgernn_model("lstm", 16, 64, 1, head=True, seq=True)
            path = model.save(os.path.join(d, "model.npz")) or os.path.join(d, "model.npz")
            # the floor: numba alone, and numba running one cached @njit function (its first call
            # loads numba's typing and lowering registries, SciPy's BLAS among them). The warm
            # cold start and the two floors alternate round by round (a busy host drifts by tens
            # of ms between minutes); the gap is the median of the per-round differences.
            cdir = os.path.join(d, "numba-cache")
            edge = [sys.executable, "-c", COLD_SCRIPTS[fw], path, xp]
            warm_env = dict(env, NUMBA_CACHE_DIR=cdir)
            ref_env = dict(env, NUMBA_CACHE_DIR=os.path.join(d, "numba-cache-ref"))
            runs = {"edgernn": (edge, warm_env)}
            for name, code in (("import numba alone", COLD_NUMBA), ("numba + one cached @njit call", COLD_NJIT)):
                script = os.path.join(d, "ref_%d.py" % len(runs))
                with open(script, "w") as fh:
                    fh.write(code)
                runs[name] = ([sys.executable, script], ref_env)
            for argv, e in runs.values():
                _run_child(argv, e)  # fill the caches (and write edgernn's .pyc files)
            walls = {k: [] for k in runs}
            rsss = []
            for _ in range(reps):
                for k, (argv, e) in runs.items():
                    wall, rss, _ = _run_child(argv, e)
                    walls[k].append(wall)
                    if k == "edgernn":
                        rsss.append(rss)
            gap = sorted(a - b for a, b in zip(walls["edgernn"], walls["numba + one cached @njit call"], strict=True))
            w = sorted(walls.pop("edgernn"))
            res["edgernn, numba cache warm"] = {"median": w[len(w) // 2], "min": w[0], "reps": len(w),
                                                "rss_mib": max(rsss), "gap_to_njit_median": gap[len(gap) // 2]}
            empty, rsss = [], []
            for _ in range(max(1, reps // 3)):
                shutil.rmtree(cdir, ignore_errors=True)
                wall, rss, _ = _run_child(edge, warm_env)
                empty.append(wall)
                rsss.append(rss)
            empty.sort()
            res["edgernn, numba cache empty"] = {"median": empty[len(empty) // 2], "min": empty[0],
                                                 "reps": len(empty), "rss_mib": max(rsss)}
            res["_refs"] = {k: {"median": sorted(v)[len(v) // 2], "min": min(v), "reps": len(v)}
                            for k, v in walls.items()}
        elif fw == "onnxruntime":
            import edgernn.onnx as eo

            model = _edgernn_model("lstm", 16, 64, 1, head=True, seq=True)
            path = eo.export(model, os.path.join(d, "model.onnx"))
            walls, rsss = [], []
            for _ in range(reps):
                wall, rss, _ = _run_child([sys.executable, "-c", COLD_SCRIPTS[fw], path, xp], env)
                walls.append(wall)
                rsss.append(rss)
            walls.sort()
            res["onnxruntime"] = {"median": walls[len(walls) // 2], "min": walls[0], "reps": reps, "rss_mib": max(rsss)}
        elif fw == "torch":
            import torch

            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.rnn = torch.nn.LSTM(16, 64, batch_first=True)
                    self.head = torch.nn.Linear(64, 1)

                def forward(self, x):
                    return self.head(self.rnn(x)[0])

            path = os.path.join(d, "model.pt")
            torch.jit.script(Net()).save(path)
            walls, rsss = [], []
            for _ in range(reps):
                wall, rss, _ = _run_child([sys.executable, "-c", COLD_SCRIPTS[fw], path, xp], env)
                walls.append(wall)
                rsss.append(rss)
            walls.sort()
            res["torch (TorchScript)"] = {"median": walls[len(walls) // 2], "min": walls[0], "reps": reps,
                                          "rss_mib": max(rsss)}
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return res




# =========================================================================================
# orchestrator
# =========================================================================================
def _available(fw):
    mod = {"edgernn": "edgernn", "onnxruntime": "onnxruntime", "torch": "torch"}[fw]
    r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, env=_child_env("default"))
    return r.returncode == 0


def _child_env(threads):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in THREAD_ENV:
        env.pop(k, None)
    if threads != "default":
        for k in THREAD_ENV:
            env[k] = str(threads)
    return env


def _spawn(spec):
    env = _child_env(spec["threads"])
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)], env=env,
                       capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        return {"_error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}",
                "_stderr": p.stderr[-4000:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _jobs(args):
    q = args.quick
    sizes = SIZES[:1] if q else SIZES
    fws = args.frameworks
    jobs = []
    for threads in args.threads:
        if "stream" in args.cases:
            for cell in CELLS:
                for I, H in sizes:
                    for fw in fws:
                        jobs.append(dict(case="stream", cell=cell, I=I, H=H, fw=fw, threads=threads,
                                         reps=15 if q else 41))
        if "seq" in args.cases:
            for cell in CELLS:
                for I, H in sizes:
                    for fw in fws:
                        jobs.append(dict(case="seq", cell=cell, I=I, H=H, B=1, T=200 if q else 1000, layers=1,
                                         fw=fw, threads=threads, reps=10 if q else 41, min_time=0.2 if q else 2.0))
        if "batch" in args.cases:
            for cell in CELLS:
                for I, H in sizes:
                    for fw in fws:
                        jobs.append(dict(case="batch", cell=cell, I=I, H=H, B=32, T=30 if q else 100, layers=2,
                                         fw=fw, threads=threads, reps=5 if q else 21, min_time=0.2 if q else 2.0,
                                         model=not q))
        if "train" in args.cases:
            for (I, H, layers, B, T) in ([(16, 64, 1, 32, 50)] if q else [(16, 64, 1, 32, 50), (64, 256, 2, 32, 100)]):
                for cell in TRAIN_CELLS + (() if q else TRAIN_NEW_CELLS):
                    for fw in fws:
                        if fw == "onnxruntime" or fw == "torch" and cell not in TRAIN_CELLS:
                            continue
                        jobs.append(dict(case="train", cell=cell, I=I, H=H, layers=layers, B=B, T=T, fw=fw,
                                         threads=threads, reps=5 if q else 21, min_time=0.2 if q else 2.0))
        if "cold" in args.cases and threads == args.threads[0]:
            for fw in fws:
                jobs.append(dict(case="cold", cell="lstm", I=16, H=64, fw=fw, threads=threads, reps=2 if q else 7))
    return jobs


def _label(job):
    c = job["case"]
    if c == "stream":
        return f"stream step {job['cell'].upper()} ({job['I']},{job['H']}) B=1"
    if c == "seq":
        return f"sequence {job['cell'].upper()} ({job['I']},{job['H']}) B=1 T={job['T']}"
    if c == "batch":
        return f"batch {job['cell'].upper()} ({job['I']},{job['H']}) x2 B=32 T={job['T']}"
    if c == "train":
        return f"train {LAYER_OF[job['cell']]}({job['I']}->{job['H']})x{job['layers']}+Dense B={job['B']} T={job['T']}"
    return "cold start LSTM(16->64)+Dense, predict T=100"


def flops(job):
    """Floating-point operations of one call of the case (multiply-adds count 2): the input and
    recurrent products of every layer, 2 T B G H (I_layer + H); element-wise work is left out.
    Training: 3x the forward products (the backward pass has twice the forward's: dh and the
    weight gradients), an approximation. None for cold starts."""
    c = job["case"]
    if c == "cold":
        return None
    G = {"lstm": 4, "gru": 3}.get(job["cell"])
    if G is None:  # the newer cells: no comparable count
        return None
    I, H = job["I"], job["H"]
    if c == "stream":
        return 2 * G * H * (I + H)
    B, T, layers = job["B"], job["T"], job["layers"]
    f = sum(2 * T * B * G * H * ((I if li == 0 else H) + H) for li in range(layers))
    return 3 * f if c == "train" else f


def work_peak(spec):
    """Single-core float32 peak: a register-resident loop of independent 16-lane FMAs (twelve
    accumulators), written with edgernn's explicit vectors (``edgernn.cells._simd``)."""
    import numpy as np
    from numba import njit

    from edgernn.cells._simd import vadd, vfma, vload, vsplat, vstore

    @njit(fastmath=True)
    def loop(x, out, n):
        a0, a1, a2, a3 = vload(x, 0), vload(x, 16), vload(x, 32), vload(x, 48)
        a4, a5, a6, a7 = vload(x, 64), vload(x, 80), vload(x, 96), vload(x, 112)
        a8, a9, a10, a11 = vload(x, 128), vload(x, 144), vload(x, 160), vload(x, 176)
        m = vsplat(x[0])
        c = vsplat(x[1])
        for _ in range(n):
            a0, a1, a2, a3 = vfma(a0, m, c), vfma(a1, m, c), vfma(a2, m, c), vfma(a3, m, c)
            a4, a5, a6, a7 = vfma(a4, m, c), vfma(a5, m, c), vfma(a6, m, c), vfma(a7, m, c)
            a8, a9, a10, a11 = vfma(a8, m, c), vfma(a9, m, c), vfma(a10, m, c), vfma(a11, m, c)
        s = vadd(vadd(vadd(a0, a1), vadd(a2, a3)), vadd(vadd(a4, a5), vadd(a6, a7)))
        vstore(out, 0, vadd(s, vadd(vadd(a8, a9), vadd(a10, a11))))

    x = np.full(192, 0.5, np.float32)
    x[0], x[1] = 0.999, 0.001
    out = np.empty(16, np.float32)
    n = 20_000_000
    loop(x, out, 10)
    best = 0.0
    for _ in range(5):
        t0 = CLOCK()
        loop(x, out, n)
        best = max(best, n * 12 * 16 * 2 / (CLOCK() - t0) / 1e9)
    return {"gflops": best}


WORKERS = {"stream": work_stream, "seq": work_seq, "batch": work_seq, "train": work_train, "peak": work_peak}


def _fmt_t(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _table(results):
    """Rows per case label: every variant's median, and edgernn's best / other's best ratios."""
    lines = []
    by_label = {}
    for r in results:
        by_label.setdefault((r["threads"], r["label"]), []).append(r)
    for (threads, label), rs in by_label.items():
        clock = "CPU time" if rs[0].get("clock") == "cpu" and rs[0]["case"] != "cold" else "wall time"
        lines.append(f"\n{label}   [threads: {threads}; {clock}]")
        best = {}
        for r in rs:
            if "_error" in r["result"]:
                lines.append(f"  {r['fw']:<12} ERROR: {r['result']['_error']}")
                continue
            for name, v in r["result"].get("_refs", {}).items():
                lines.append(f"  reference: {name:<25} {_fmt_t(v['median']):>10}  (min {_fmt_t(v['min'])}, n={v['reps']})")
            for name, v in r["result"].items():
                if name.startswith("_"):
                    continue
                extra = f"   peak RSS {v['rss_mib']:.0f} MiB" if "rss_mib" in v else ""
                lines.append(f"  {name:<36} {_fmt_t(v['median']):>10}  (min {_fmt_t(v['min'])}, n={v['reps']}){extra}")
                if "gap_to_njit_median" in v:
                    lines.append(f"  {'minus numba + one cached @njit call':<36} {_fmt_t(v['gap_to_njit_median']):>10}"
                                 "  (median of the per-round differences)")
                if r["case"] == "cold" and "empty" in name:
                    continue  # compare the warm cache
                if r["fw"] not in best or v["median"] < best[r["fw"]]:
                    best[r["fw"]] = v["median"]
        if "edgernn" in best:
            ratios = [f"{best['edgernn'] / best[fw]:.2f}x {fw}" for fw in ("onnxruntime", "torch") if fw in best]
            if ratios:
                lines.append("  edgernn / fastest call style of: " + ", ".join(ratios))
    return "\n".join(lines)


def _check_outputs(results):
    """Same weights, same inputs: the last outputs of the three frameworks must agree."""
    import numpy as np

    notes = []
    groups = {}
    for r in results:
        if "_out" in r["result"]:
            groups.setdefault((r["threads"], r["label"]), {})[r["fw"]] = np.asarray(r["result"]["_out"])
    for key, outs in groups.items():
        if "edgernn" in outs:
            for fw, o in outs.items():
                if fw != "edgernn":
                    err = float(np.abs(o - outs["edgernn"]).max())
                    if err > 1e-4:
                        notes.append(f"WARNING {key[1]}: edgernn vs {fw} max abs diff {err:.2e}")
    return notes


def markdown(results):
    """One markdown table: per case and thread setting, each framework's fastest call style."""
    rows = ["| case | threads | edgernn | onnxruntime | PyTorch | edgernn / onnxruntime | edgernn / PyTorch "
            "| GFLOP/s edgernn / onnxruntime / PyTorch |",
            "|---|---|---|---|---|---|---|---|"]
    by_label = {}
    for r in results:
        by_label.setdefault((r["label"], r["threads"]), []).append(r)
    for (label, threads), rs in by_label.items():
        best, name = {}, {}
        for r in rs:
            for k, v in r["result"].items():
                if k.startswith("_") or not isinstance(v, dict):
                    continue
                if r["case"] == "cold" and "empty" in k:
                    continue
                if r["fw"] not in best or v["median"] < best[r["fw"]]["median"]:
                    best[r["fw"]], name[r["fw"]] = v, k
        cells = []
        for fw in ("edgernn", "onnxruntime", "torch"):
            v = best.get(fw)
            if v is None:
                cells.append("-")
                continue
            txt = _fmt_t(v["median"])
            if "rss_mib" in v:
                txt += f", {v['rss_mib']:.0f} MiB"
            if r["case"] == "stream" and fw != "torch":
                txt += f" ({name[fw].split(' ', 1)[1]})"
            cells.append(txt)
        ratios = [f"{best['edgernn']['median'] / best[fw]['median']:.2f}" if "edgernn" in best and fw in best else "-"
                  for fw in ("onnxruntime", "torch")]
        fl = flops(rs[0])
        gf = "/".join(f"{fl / best[fw]['median'] / 1e9:.0f}" if fw in best else "-"
                      for fw in ("edgernn", "onnxruntime", "torch")) if fl else ""
        rows.append(f"| {label} | {threads} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {gf} |")
        if rs[0]["case"] == "cold":
            for r in rs:
                for k, v in r["result"].items():
                    if "empty" in k:
                        rows.append(f"| {label}, numba cache empty | {threads} | {_fmt_t(v['median'])}, "
                                    f"{v['rss_mib']:.0f} MiB | | | | | |")
                    if "gap_to_njit_median" in v:
                        rows.append(f"| edgernn's cold start minus numba + one cached @njit call (median of the "
                                    f"per-round differences) | {threads} | {_fmt_t(v['gap_to_njit_median'])} | | | | | |")
                for k, v in r["result"].get("_refs", {}).items():
                    rows.append(f"| reference: {k} | {threads} | {_fmt_t(v['median'])} | | | | | |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer repetitions, the small size only")
    ap.add_argument("--cases", default="stream,seq,batch,train,cold",
                    help="comma-separated subset of stream,seq,batch,train,cold")
    ap.add_argument("--threads", default="1,default", help="comma-separated: 1, default, or a number")
    ap.add_argument("--frameworks", default="edgernn,onnxruntime,torch")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="one-thread runs: wall time, or CPU time of the calling thread (robust on a busy "
                         "machine); default-thread runs always use wall time")
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"), help="where to write the JSON results")
    ap.add_argument("--markdown", metavar="JSON", help="print the markdown table of a results file and exit")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as fh:
            print(markdown(json.load(fh)["results"]))
        return 0
    if args.worker:
        global CLOCK
        spec = json.loads(args.worker)
        if spec.get("clock") == "cpu" and spec["threads"] != "default":
            CLOCK = time.thread_time
        print(json.dumps(WORKERS[spec["case"]](spec)))
        return 0
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.threads = [t.strip() for t in args.threads.split(",") if t.strip()]
    wanted = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    args.frameworks = [f for f in wanted if _available(f)]
    skipped = sorted(set(wanted) - set(args.frameworks))
    if "edgernn" not in args.frameworks:
        print("edgernn is not importable", file=sys.stderr)
        return 1
    machine = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
               "platform": platform.platform(), "processor": _cpu_name(), "cpus": os.cpu_count()}
    versions = _versions(args.frameworks)
    print(f"edgernn benchmarks {machine['date']} on {machine['processor']} ({machine['cpus']} CPUs), "
          f"Python {machine['python']}; one-thread clock: {args.clock}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if skipped:
        print("skipped (not importable): " + ", ".join(skipped))
    peak = _spawn(dict(case="peak", threads="1", clock=args.clock))
    machine["peak_gflops_1core_float32"] = peak.get("gflops")
    print(f"single-core float32 peak (16-lane FMA loop, {args.clock} clock): {peak.get('gflops', float('nan')):.0f} GFLOP/s")
    jobs = _jobs(args)
    for job in jobs:
        job["clock"] = args.clock if job["threads"] != "default" else "wall"
    results = []
    for i, job in enumerate(jobs, 1):
        label = _label(job)
        print(f"[{i}/{len(jobs)}] {label} | {job['fw']} | threads {job['threads']}", file=sys.stderr, flush=True)
        res = work_cold(job) if job["case"] == "cold" else _spawn(job)
        results.append(dict(job, label=label, result=res))
    print(_table(results))
    for n in _check_outputs(results):
        print(n)
    print("\n" + markdown(results))
    with open(args.json, "w") as fh:
        json.dump({"machine": machine, "versions": versions, "clock": args.clock, "results": results}, fh, indent=1)
    print(f"\nJSON: {args.json}")
    return 0


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions(fws):
    code = ("import json,importlib; print(json.dumps({m: importlib.import_module(m).__version__ "
            f"for m in {['numpy', 'numba'] + list(fws)!r}}}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_child_env("default"))
    return json.loads(r.stdout) if r.returncode == 0 else {}


if __name__ == "__main__":
    sys.exit(main())
