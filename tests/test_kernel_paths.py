"""The kernels' speed paths, which the small random cases of test_functional*.py never reach:

- batch 1 with a large weight matrix: the recurrent product goes to BLAS gemv
  (``cells._ops.GEMV_MIN``), small ones to the jitted ``matvec`` (snake order);
- the default float32 cells (batches, and one sequence of four steps or more): the fused
  kernels, forward and backward (``*_forward_fused``, ``*_backward_fused``, whose per-step
  product is ``cells._ops.back_rec16`` on six sequences by 64 units, six by 16 or one);
- inputs are never modified (batch 1 with ``lengths`` once zeroed the caller's padding).

Each path is checked against the naive oracle (forward) and against another path of the
library on the same inputs (gradients), in float64 where the path allows it.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgernn.functional as F
from edgernn.cells import _ops as K

try:
    from . import naive
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import naive

G = {"rnn": 1, "gru": 3, "lstm": 4}
INPUTS = ("X", "W", "R", "Wb", "Rb", "h0", "c0", "P")


def _cast(kw, dtype):
    return {k: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v) for k, v in kw.items()}


def _fwd_bwd(cell, kw, seed=1):
    out = getattr(F, cell)(**kw, train=True)
    rng = np.random.default_rng(seed)
    gs = [rng.normal(size=o.shape).astype(o.dtype) for o in out[:-1]]
    grads = getattr(F, cell + "_backward")(out[-1], *gs)
    return out[:-1], gs, grads


def _rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_inputs_not_modified(cell, B, dtype):
    kw = _cast(naive.random_case(cell, 7, B=B, T=6, H=4, I=3, activations=None, alpha_beta=None,
                                 lengths=np.array([3] + [6] * (B - 1)), direction="bidirectional"), dtype)
    kw["X"][0, 3:] = np.nan  # padding
    copies = {k: v.copy() for k, v in kw.items() if isinstance(v, np.ndarray)}
    out, gs, grads = _fwd_bwd(cell, kw)
    F_inf = getattr(F, cell)(**kw)
    for k, v in copies.items():
        np.testing.assert_array_equal(kw[k], v, err_msg=f"{k} was modified")
    assert all(np.isfinite(g).all() for g in grads.values())
    for a, b in zip(F_inf, out, strict=True):
        np.testing.assert_array_equal(a, b)


def _gemv_H(cell):
    """Smallest hidden size whose recurrent matrix takes the gemv path."""
    H = 1
    while G[cell] * H * H < K.GEMV_MIN:
        H += 1
    return H


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_batch1_gemv_path(cell, direction):
    H = _gemv_H(cell)
    kw = naive.random_case(cell, 11, B=1, T=40, H=H, I=3, direction=direction, lengths=None, scale=0.7 / np.sqrt(H),
                           activations=None, alpha_beta=None, peephole=True, input_forget=False,
                           linear_before_reset=True)  # GRU lbr=1: one product with all of R
    expected = getattr(naive, cell)(**kw)
    out, gs, grads = _fwd_bwd(cell, kw)
    for o, e in zip(out, expected, strict=True):
        np.testing.assert_allclose(o, e, rtol=1e-11, atol=1e-11)
    out32 = getattr(F, cell)(**_cast(kw, np.float32))
    for o, e in zip(out32, expected, strict=True):
        np.testing.assert_allclose(o, e, rtol=1e-4, atol=2e-5)
    # the same sequence twice is a batch of 2: the gemm path; every weight gradient doubles
    kw2 = {k: (np.concatenate([v, v]) if k in ("X", "h0", "c0") else v) for k, v in kw.items()}
    out2 = getattr(F, cell)(**kw2, train=True)
    g2 = getattr(F, cell + "_backward")(out2[-1], *[np.concatenate([g, g]) for g in gs])
    for k, v in grads.items():
        if k in ("X", "h0", "c0"):
            np.testing.assert_allclose(g2[k][:1], v, rtol=1e-10, atol=1e-12, err_msg=k)
        else:
            np.testing.assert_allclose(g2[k], 2 * v, rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("B", [11, 32])
@pytest.mark.parametrize("H", [5, 128])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fused_batch_path(cell, direction, H, B):
    """Default float32 cells with B > 1 (fused kernels, forward and backward; H=128: 64-unit
    blocks; H=5: one padded 16-unit block; B=11: groups of 8 or 6 sequences and the
    one-sequence remainder, each projecting its inputs in the kernel) against the naive oracle
    and the float64 path."""
    T = 6
    lengths = np.random.default_rng(H).integers(0, T + 1, B)
    lengths[:2] = (T, 0)
    kw = naive.random_case(cell, 13 + H, B=B, T=T, H=H, I=7, direction=direction, lengths=lengths, scale=0.15,
                           activations=None, alpha_beta=None, peephole=False, input_forget=False,
                           linear_before_reset=True)
    kw32 = _cast(kw, np.float32)
    out32, gs, g32 = _fwd_bwd(cell, kw32)
    assert all(o.dtype == np.float32 for o in out32)
    expected = getattr(naive, cell)(**kw)
    for o, e in zip(out32, expected, strict=True):
        np.testing.assert_allclose(o, e, rtol=1e-4, atol=2e-5)
    np.testing.assert_array_equal(out32[0][1], 0)  # a sequence of length 0 outputs zeros
    # gradients against the exact float64 path on the same (float32-rounded) numbers
    out64 = getattr(F, cell)(**_cast(kw32, np.float64), train=True)
    g64 = getattr(F, cell + "_backward")(out64[-1], *[g.astype(np.float64) for g in gs])
    for k in g64:
        assert _rel(g32[k], g64[k]) < 2e-5, (k, _rel(g32[k], g64[k]))
    # inference and training give bit-identical outputs
    for a, b in zip(getattr(F, cell)(**kw32), out32, strict=True):
        np.testing.assert_array_equal(a, b)


def test_matmul_paths_agree():
    """``cells._ops.matmul``: matvec (both snake directions), gemv and gemm give the same product."""
    rng = np.random.default_rng(0)
    for N, Kd in [(13, 5), (256, 64), (512, 128)]:
        Wn = rng.normal(size=(N, Kd))
        Wt = np.ascontiguousarray(Wn.T)
        x = rng.normal(size=(1, Kd))
        ref = x @ Wn.T
        for rev in (0, 1):
            out = np.empty((1, N))
            K.matmul(x, Wn, Wt, out, rev)
            np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
        xs = rng.normal(size=(3, Kd))
        out = np.empty((3, N))
        K.matmul(xs, Wn, Wt, out, 0)
        np.testing.assert_allclose(out, xs @ Wn.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ng", [3, 4])
def test_back_rec16_against_numpy(ng):
    """The fused backward kernels' recurrent product: every block shape (six sequences by 64 or
    16 units, one sequence), finished sequences left alone, with and without ``add``."""
    rng = np.random.default_rng(ng)
    for B, H in [(1, 5), (5, 16), (6, 64), (7, 80), (13, 48), (14, 130)]:
        Hp = K.packed_rows(H)
        N = ng * Hp
        M = rng.normal(size=(ng * H, H)).astype(np.float32)
        Rb = np.empty((Hp // K.PANEL, N, K.PANEL), np.float32)
        K.pack_back16(M, H, ng, Rb)
        idx = K.gates16_index(H, ng)
        T, t = 3, 1
        S = np.zeros((T, B, N), np.float32)
        S[t][:, idx] = rng.normal(size=(B, ng * H))
        lengths = rng.integers(0, T + 1, B)
        lengths[0] = T
        for add in (False, True):
            dh = np.zeros((B, Hp), np.float32)
            dh[:, :H] = rng.normal(size=(B, H))
            before = dh.copy()
            K.back_rec16(Rb, lengths, t, S, dh, add)
            ref = S[t][:, idx].astype(np.float64) @ M + (before[:, :H] if add else 0)
            run = t < lengths
            np.testing.assert_allclose(dh[run, :H], ref[run], rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(dh[~run], before[~run])  # finished: held
            assert not dh[run, H:].any()  # padded units stay zero


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_parallel_tasks_match_one_thread(cell, direction, dtype, monkeypatch):
    """With several threads, directions and batch slices run as parallel tasks: same results."""
    import edgernn

    kw = _cast(naive.random_case(cell, 21, B=9, T=5, H=6, I=4, direction=direction, lengths="random",
                                 activations=None if dtype == np.float32 else "random"), dtype)
    out1, gs, g1 = _fwd_bwd(cell, kw)
    before = edgernn.get_num_threads()
    monkeypatch.setattr(F, "_TASK_MIN_MACS", 0)
    monkeypatch.setattr(F, "_TASK_MIN_BATCH", 2)
    try:
        edgernn.set_num_threads(3)
        tasks, parallel = F._tasks(9, 5, 2 if direction == "bidirectional" else 1, 24, 10)
        assert len(tasks) >= 2 and parallel
        out = getattr(F, cell)(**kw, train=True)
        g = getattr(F, cell + "_backward")(out[-1], *gs)
    finally:
        edgernn.set_num_threads(before)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    for a, b in zip(out[:-1], out1, strict=True):
        np.testing.assert_allclose(a, b, **tol)
    for k in g1:
        np.testing.assert_allclose(g[k], g1[k], err_msg=k, **tol)
