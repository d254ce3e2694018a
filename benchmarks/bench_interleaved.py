#!/usr/bin/env python3
"""edgernn vs onnxruntime vs PyTorch in ONE process, interleaved, one thread, CPU time.

``bench.py`` runs every measurement in a fresh process, which is fair but slow and sensitive to
what else the machine does between the runs. This harness alternates the three frameworks
sample by sample on the same weights and inputs and reports the median of the per-sample
ratios: use it for before/after comparisons (run it in two worktrees, alternating).

    KIND=seq   python benchmarks/bench_interleaved.py lstm16,lstm64,gru16,gru64 7   # B=1, T=1000
    KIND=batch python benchmarks/bench_interleaved.py lstm16,lstm64,gru16,gru64 7   # B=32, T=100, 2 layers
    KIND=train python benchmarks/bench_interleaved.py lstm,gru 9                   # train_on_batch vs PyTorch
    KIND=short T=10 PREDICT=1 python benchmarks/bench_interleaved.py lstm16,gru16 # one short window, B=1

``THREADS=default`` runs every framework at its default thread count and measures wall time
(one thread and CPU time otherwise). ``FW=ort`` leaves PyTorch out; ``PREDICT=1`` adds ``Sequential.predict`` and ``model.predictor()``. Cases: cell name and
size, ``16`` for (16, 64), ``64`` for (64, 256). ``EDGERNN_SRC=<checkout>`` measures that
checkout's edgernn (PYTHONPATH does not override an editable install).
"""

import os
import sys
import time

THREADS = os.environ.get("THREADS", "1")
if THREADS != "default":
    for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_k] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if os.environ.get("EDGERNN_SRC"):  # measure another checkout: its edgernn before the installed one
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path.insert(0, os.path.abspath(os.environ["EDGERNN_SRC"]))

import bench  # noqa: E402
import numpy as np  # noqa: E402

import edgernn  # noqa: E402
import edgernn.functional as F  # noqa: E402

CLK = time.thread_time if THREADS != "default" else time.perf_counter


def tm(fn, n):
    t0 = CLK()
    for _ in range(n):
        fn()
    return (CLK() - t0) / n


def interleave(fns, R, sample_s, warmup):
    """R samples of every callable in turn, each sample ~``sample_s`` of calls: per-call times
    {name: [R floats]} and their medians."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    n = {k: max(1, int(sample_s / max(tm(fn, 1), 1e-6))) for k, fn in fns.items()}
    ts = {k: [] for k in fns}
    for _ in range(R):
        for k, fn in fns.items():
            ts[k].append(tm(fn, n[k]))
    return ts, {k: float(np.median(v)) for k, v in ts.items()}


def train(cells):
    """``train_on_batch`` (Adam, MSE, Dense(1) on every step) against the same PyTorch step,
    interleaved sample by sample (``FW=ort`` or no torch: edgernn alone)."""
    from edgernn.optimizers import Adam

    R = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    use_torch = "torch" in os.environ.get("FW", "ort,torch") and cells[0] in ("lstm", "gru")
    if use_torch:
        import torch

        if THREADS != "default":
            torch.set_num_threads(1)
    for cell in cells:
        for I, H, L, B, T in [(16, 64, 1, 32, 50), (64, 256, 2, 32, 100)]:
            rng = np.random.default_rng(1)
            X = rng.normal(size=(B, T, I)).astype(np.float32)
            Y = rng.normal(size=(B, T, 1)).astype(np.float32)
            m = bench._edgernn_model(cell, I, H, L, head=True, seq=True)
            m.compile(optimizer=Adam(1e-3), loss="mse")
            fns = {"edgernn": lambda m=m, X=X, Y=Y: m.train_on_batch(X, Y)}
            if use_torch and cell in ("lstm", "gru"):
                rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H, num_layers=L, batch_first=True)
                head = torch.nn.Linear(H, 1)
                opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), 1e-3)
                xt, yt = torch.from_numpy(X), torch.from_numpy(Y)

                def step(rnn=rnn, head=head, opt=opt, xt=xt, yt=yt):
                    opt.zero_grad(set_to_none=True)
                    loss = torch.nn.functional.mse_loss(head(rnn(xt)[0]), yt)
                    loss.backward()
                    opt.step()

                fns["torch"] = step
            ts, med = interleave(fns, R, 0.05, warmup=3)
            s = f"train {cell}({I}->{H})x{L} B={B} T={T}: " + " ".join(f"{k}={med[k] * 1e3:.2f}ms" for k in med)
            if "torch" in ts:
                s += f" | /torch: {np.median([a / b for a, b in zip(ts['edgernn'], ts['torch'], strict=True)]):.3f}"
            print(s, flush=True)


def main():
    kind = os.environ.get("KIND", "seq")
    print(f"edgernn from {os.path.dirname(edgernn.__file__)}", flush=True)
    if THREADS != "default":
        edgernn.set_num_threads(1)
    if kind == "train":
        return train(sys.argv[1].split(",") if len(sys.argv) > 1 else ["lstm", "gru"])
    cases = sys.argv[1].split(",") if len(sys.argv) > 1 else ["lstm16", "lstm64", "gru16", "gru64"]
    R = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    use_torch = "torch" in os.environ.get("FW", "ort,torch")
    if use_torch:
        import torch

        if THREADS != "default":
            torch.set_num_threads(1)
    for case in cases:
        cell, sz = case[:-2], case[-2:]
        I, H = (16, 64) if sz == "16" else (64, 256)
        B, T, L = {"seq": (1, 1000, 1), "short": (1, int(os.environ.get("T", "10")), 1)}.get(kind, (32, 100, 2))
        w = bench._weights(cell, I, H, L)
        X = np.random.default_rng(1).normal(size=(B, T, I)).astype(np.float32)
        f = getattr(F, cell)

        def run(X=X, w=w, f=f, L=L):
            x = X
            for li in range(L):
                x = f(x, w[li]["W"], w[li]["R"], w[li]["Wb"], w[li]["Rb"])[0][:, :, 0, :]
            return x

        sess = bench._ort_session(bench._onnx_model(cell, I, H, w), THREADS)
        Xt = np.ascontiguousarray(X.transpose(1, 0, 2))
        fns = {"edgernn": run, "ort": lambda sess=sess, Xt=Xt: sess.run(None, {"X": Xt})}
        ref = sess.run(None, {"X": Xt})[0].transpose(1, 0, 2)
        err = float(np.abs(run() - ref).max())
        if os.environ.get("PREDICT"):
            model = bench._edgernn_model(cell, I, H, L, head=False, seq=True, weights=w)
            fns["predict"] = lambda model=model, X=X: model.predict(X)
            if hasattr(model, "predictor"):  # weights packed once (model.predictor(), session 6)
                pred = model.predictor()
                assert np.allclose(pred(X), model.predict(X), rtol=1e-6, atol=1e-7)  # T < 4: other kernels
                fns["predictor"] = lambda pred=pred, X=X: pred(X)
        if use_torch:
            perm = bench._torch_perm(cell, H)
            C = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
            m = C(I, H, num_layers=L, batch_first=True)
            with torch.no_grad():
                for li in range(L):
                    getattr(m, f"weight_ih_l{li}").copy_(torch.from_numpy(w[li]["W"][0][perm]))
                    getattr(m, f"weight_hh_l{li}").copy_(torch.from_numpy(w[li]["R"][0][perm]))
                    getattr(m, f"bias_ih_l{li}").copy_(torch.from_numpy(w[li]["Wb"][0][perm]))
                    getattr(m, f"bias_hh_l{li}").copy_(torch.from_numpy(w[li]["Rb"][0][perm]))
            xt = torch.from_numpy(X)

            def trun(m=m, xt=xt):
                with torch.inference_mode():
                    return m(xt)

            fns["torch"] = trun
        ts, med = interleave(fns, R, 0.02, warmup=2)
        s = f"{kind} {case:7s} err={err:.1e} " + " ".join(f"{k}={med[k] * 1e3:.3f}ms" for k in med)
        s += " | /ort: " + " ".join(f"{k}={np.median([a / b for a, b in zip(ts[k], ts['ort'], strict=True)]):.3f}"
                                   for k in med if k != "ort")
        if use_torch:
            s += " | /torch: " + " ".join(f"{k}={np.median([a / b for a, b in zip(ts[k], ts['torch'], strict=True)]):.3f}"
                                         for k in med if k not in ("ort", "torch"))
        print(s, flush=True)


if __name__ == "__main__":
    main()
