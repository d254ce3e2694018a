"""Shared jitted building blocks of the cells: products, activation helpers, masks, and the
streaming engine's flat-buffer primitives and op-table layout.

The time loops themselves live in the cell modules (``rnn.py``, ``gru.py``, ``lstm.py``) and in
the generic driver (``driver.py``). What follows documents the kernels' shared conventions.

Three families of kernels in the ONNX cells' modules, chosen by ``functional``:

- Fused kernels (``lstm_forward_fused``, ``gru_forward_fused`` and their BPTT
  ``*_backward_fused``): the default float32 LSTM and GRU (fast sigmoid/tanh, no
  clip/peepholes/input_forget, GRU lbr=1), every batch of several sequences and one sequence
  of four steps or more, with and without ``train``. Weights packed unit-interleaved in 16-row
  panels, explicit SIMD vectors (``_simd``); see "fused kernels" below. The backward pass reads
  the forward's layouts as they are (gates unit-interleaved, states padded to a multiple of 16
  units) and gives the gate gradients in the same order; ``functional`` turns them into the
  weight gradients with one product each and puts the rows back in ONNX order.
- Batch-major kernels (``rnn/gru/lstm_forward``, ``*_backward``): every option (activations,
  clip, peepholes, input_forget, GRU lbr 0/1), float32 and float64, any batch. Layout
  (T, B, features). Their batch-1 recurrent product is ``mv_packed``.

Conventions of the batch-major kernels (all arrays C-contiguous, one dtype per call):
- ``G`` (T, B, gates*H): the input projection X @ W.T for all steps, computed by one matrix
  product before the loop (in ``functional``); the kernels overwrite it in place with the gate
  outputs (the ``Gt`` that BPTT reads). The biases are NOT in it: the kernels add ``bias``
  (gates*H,) inside the loop, where it costs nothing (a separate pass over G would cost as
  much as the projection itself).
- ``lengths`` (B,) int64: steps t >= lengths[b] output zero and hold the state.
- Reverse directions are handled by ``functional`` by reversing each sequence's valid part
  before the call, so every kernel here runs forwards in time.
- With ``train`` the kernels keep what BPTT needs: states ``Hs``/``Cs`` (T+1, B, H) with the
  initial state at index 0, and the gate pre-activations ``A`` only when the backward pass
  needs them (a clip, or an activation whose derivative is not a function of its output).
  Without ``train`` those buffers have a leading dimension of 1 and serve as scratch.
- Nothing is allocated inside the time loop; scratch buffers are made once per call.
- Weight gradients are NOT accumulated here: the backward kernels return the gate
  gradients ``dA`` and ``functional`` turns them into dW, dR, dWb, dRb with one matrix
  product each.

Speed notes (measured on a 2-core AVX-512 VM, float32; see benchmarks/README.md, "Issue 14"):
- Batch 1: the recurrent product keeps its accumulators in vector registers (``mv_packed`` and
  the fused kernels), walking the weight blocks forwards on even steps and backwards on odd
  steps ("snake" order) so that the blocks used last are still in L1 when the next step starts.
  At 256 units a step reads the whole 1 MiB of R from L2: that bandwidth is the limit.
  (``matvec`` and BLAS gemv, the products before, remain for ``matmul``'s callers.)
- float32 data is computed in float32: literal constants are ``np.float32`` (ONE, HALF, ZERO),
  since a Python float promotes every operation to float64 and halves the SIMD width.
- The batch-major kernels have fused loops for the default cells (``*_row_fast``) that LLVM
  vectorises. Every loop writes to few arrays, or LLVM gives up vectorising because of the
  number of run-time alias checks; a loop never reads and writes different views of the same
  buffer at the same index (that fails the alias check at run time and falls back to scalar
  code); loops index per-gate views from 0 (an offset index keeps numba's negative-index
  wraparound in the loop, which LLVM vectorises with gathers).
"""

from __future__ import annotations

import functools

import numpy as np

from .._activations import (
    _A1,
    _A3,
    _A5,
    _A7,
    _A9,
    _A11,
    _A13,
    _B0,
    _B2,
    _B4,
    _B6,
    _CLAMP,
    FAST_SIGMOID,
    FAST_TANH,
    HALF,
    ONE,
    SIGMOID,
    TANH,
    ZERO,
    act1,
    dact1,
    fast_tanh,
)
from .._config import jit
from ._simd import LANES, vadd, vdiv, vfma, vload, vmul, vselect_gt, vsplat, vstore, vzero


# ----------------------------------------------------------------------------------------
# products
# ----------------------------------------------------------------------------------------
@jit
def matvec(x, Wn, out, rev):
    """out[n] = sum_k Wn[n, k] * x[k] (1-D x, out; Wn (N, K) C-contiguous).

    Eight dot products at a time; ``rev`` walks the row blocks from the end (snake order).
    """
    N, K = Wn.shape
    nb = N // 8
    z = x.dtype.type(0.0)
    for i in range(nb):
        n = (nb - 1 - i) * 8 if rev else i * 8
        s0 = z
        s1 = z
        s2 = z
        s3 = z
        s4 = z
        s5 = z
        s6 = z
        s7 = z
        for k in range(K):
            a = x[k]
            s0 += a * Wn[n, k]
            s1 += a * Wn[n + 1, k]
            s2 += a * Wn[n + 2, k]
            s3 += a * Wn[n + 3, k]
            s4 += a * Wn[n + 4, k]
            s5 += a * Wn[n + 5, k]
            s6 += a * Wn[n + 6, k]
            s7 += a * Wn[n + 7, k]
        out[n] = s0
        out[n + 1] = s1
        out[n + 2] = s2
        out[n + 3] = s3
        out[n + 4] = s4
        out[n + 5] = s5
        out[n + 6] = s6
        out[n + 7] = s7
    for n in range(nb * 8, N):
        s = z
        for k in range(K):
            s += x[k] * Wn[n, k]
        out[n] = s


# ---- packed weights: panels of output rows, K-major (batch 1) ---------------------------
# ``matvec`` above ends every dot product in a horizontal reduction, and LLVM does not
# vectorise the reduction-free form from plain numba loops. ``mv_packed`` writes it with
# explicit vectors (``_simd``): the weight matrix (N, K) is packed once per call into blocks
# of BLOCK = 64 output rows stored K-major (for each k, the 64 weights of the block's rows,
# contiguous), then 16-row panels for the rest, zero rows padding N to a multiple of 16. Per
# block the kernel keeps 8 vector accumulators in registers (4 x 16 rows, two k at a time),
# so every weight is loaded once, multiplied with a broadcast of x[k] and never reduced
# across lanes. Measured (one thread, float32, in a T=1000 loop): 256x64 0.48 us against
# 0.88 us for ``matvec``; 1024x256 8.6 us against 13.4 us (``matvec``) and 10-24 us (gemv).
BLOCK = 64
PANEL = LANES


def packed_rows(N):
    """Rows of the packed layout of an (N, K) matrix: N rounded up to a multiple of PANEL."""
    return -(-int(N) // PANEL) * PANEL


@jit
def pack_panels(M, out):
    """out (packed_rows(N) * K,) = M (N, K) in the layout ``mv_packed`` reads (see above)."""
    N, K = M.shape
    Np = out.shape[0] // K
    nb = Np // BLOCK
    z = out.dtype.type(0.0)
    for r in range(Np):
        if r < nb * BLOCK:
            base = (r // BLOCK) * K * BLOCK
            w = BLOCK
            c = r % BLOCK
        else:
            q = (r - nb * BLOCK) // PANEL
            base = nb * BLOCK * K + q * K * PANEL
            w = PANEL
            c = (r - nb * BLOCK) % PANEL
        if r < N:
            for k in range(K):
                out[base + k * w + c] = M[r, k]
        else:
            for k in range(K):
                out[base + k * w + c] = z


@jit
def mv_packed(x, Wp, out, rev):
    """out (Np,) = Wp @ x for a matrix packed by ``pack_panels`` (Np = packed_rows(N); rows
    past N are zero). x (K,), Wp (Np * K,). ``rev`` walks the blocks from the end (snake order:
    the rows used last are still in L1 when the next step starts)."""
    K = x.shape[0]
    Np = out.shape[0]
    nb = Np // BLOCK
    nt = (Np - nb * BLOCK) // PANEL
    K2 = K - (K & 1)
    K4 = K - (K & 3)
    n = nb + nt
    for i in range(n):
        j = n - 1 - i if rev else i
        if j < nb:
            base = j * K * BLOCK
            a0 = vzero(Wp)
            a1 = vzero(Wp)
            a2 = vzero(Wp)
            a3 = vzero(Wp)
            b0 = vzero(Wp)
            b1 = vzero(Wp)
            b2 = vzero(Wp)
            b3 = vzero(Wp)
            for k in range(0, K2, 2):
                xa = vsplat(x[k])
                xb = vsplat(x[k + 1])
                p = base + k * BLOCK
                a0 = vfma(xa, vload(Wp, p), a0)
                a1 = vfma(xa, vload(Wp, p + 16), a1)
                a2 = vfma(xa, vload(Wp, p + 32), a2)
                a3 = vfma(xa, vload(Wp, p + 48), a3)
                b0 = vfma(xb, vload(Wp, p + 64), b0)
                b1 = vfma(xb, vload(Wp, p + 80), b1)
                b2 = vfma(xb, vload(Wp, p + 96), b2)
                b3 = vfma(xb, vload(Wp, p + 112), b3)
            if K2 < K:
                xa = vsplat(x[K2])
                p = base + K2 * BLOCK
                a0 = vfma(xa, vload(Wp, p), a0)
                a1 = vfma(xa, vload(Wp, p + 16), a1)
                a2 = vfma(xa, vload(Wp, p + 32), a2)
                a3 = vfma(xa, vload(Wp, p + 48), a3)
            o = j * BLOCK
            vstore(out, o, vadd(a0, b0))
            vstore(out, o + 16, vadd(a1, b1))
            vstore(out, o + 32, vadd(a2, b2))
            vstore(out, o + 48, vadd(a3, b3))
        else:
            q = j - nb
            base = nb * BLOCK * K + q * K * PANEL
            a0 = vzero(Wp)
            a1 = vzero(Wp)
            a2 = vzero(Wp)
            a3 = vzero(Wp)
            for k in range(0, K4, 4):
                p = base + k * PANEL
                a0 = vfma(vsplat(x[k]), vload(Wp, p), a0)
                a1 = vfma(vsplat(x[k + 1]), vload(Wp, p + 16), a1)
                a2 = vfma(vsplat(x[k + 2]), vload(Wp, p + 32), a2)
                a3 = vfma(vsplat(x[k + 3]), vload(Wp, p + 48), a3)
            for k in range(K4, K):
                a0 = vfma(vsplat(x[k]), vload(Wp, base + k * PANEL), a0)
            vstore(out, nb * BLOCK + q * PANEL, vadd(vadd(a0, a1), vadd(a2, a3)))


# ---- fused kernels of the default float32 cells: unit-interleaved panels -----------------
# The fused LSTM/GRU kernels (``lstm_forward_fused``, ``gru_forward_fused``) compute a whole
# step per block of 16 units: the recurrent product of the block's gate rows (i, o, f, c~ for
# LSTM) in vector registers, then the gates and the new state from those registers, without the
# product ever going through memory. For that the gate rows are reordered unit-block by
# unit-block ("unit-interleaved": for units 16u..16u+15, the 16 rows of gate 0, then of gate
# 1, ...; units padded to Hp, a multiple of 16, with zero rows) and packed in panels of 16
# rows, K-major (``pack_gates16``). The input projection is computed in the same row order,
# with the bias: for one sequence for all steps before the loop (``project_panels``, into
# G (T, gates * Hp)); for batches inside the kernel, in the same registers as the recurrent
# product (G's round trip through memory cost 12-16% of a batch-32 LSTM call and ~12% of a GRU
# one; see SPEC's "one product before the loop": changed for this, measured).
@jit
def pack_gates16(M, H, ng, out):
    """out (ng * Hp * K,) = the rows of M (ng * H, K), gate-major as in ONNX, unit-interleaved and
    packed in 16-row panels, K-major (see above); Hp = out.size // (ng * K) >= H, a multiple of 16."""
    K = M.shape[1]
    P = out.shape[0] // (PANEL * K)  # panels
    z = out.dtype.type(0.0)
    for p in range(P):
        u = p // ng
        g = p % ng
        base = p * K * PANEL
        r0 = g * H + u * PANEL  # the panel's first row of M
        n = min(PANEL, H - u * PANEL)  # its rows that exist (the rest are zero)
        if n == PANEL:  # out written in order, 16 rows at a time (20% faster than row by row)
            for k in range(K):
                o = base + k * PANEL
                for l in range(PANEL):
                    out[o + l] = M[r0 + l, k]
        else:
            for k in range(K):
                o = base + k * PANEL
                for l in range(n):
                    out[o + l] = M[r0 + l, k]
                for l in range(n, PANEL):
                    out[o + l] = z


@functools.lru_cache(maxsize=64)
def gates16_index(H, ng):
    """idx (ng * H,), read-only: position of ONNX row g * H + j in the unit-interleaved order
    (cached per shape: computing it was ~8% of the fixed cost of a call)."""
    g, j = np.divmod(np.arange(ng * H), H)
    idx = (j // PANEL) * (ng * PANEL) + g * PANEL + j % PANEL
    idx.flags.writeable = False
    return idx


@jit
def pack_back16(M, H, ng, out):
    """out (Hp/16, N, 16): M (ng * H, H) for the backward products ``dh = dA M`` of the fused
    kernels: row n of the unit-interleaved order (``pack_gates16``: N = ng * Hp) is ONNX row
    g * H + j, split into panels of 16 columns; zero for padded rows and columns."""
    P, N, _ = out.shape
    z = out.dtype.type(0.0)
    for n in range(N):
        u = n // (ng * PANEL)
        g = (n // PANEL) % ng
        j = u * PANEL + n % PANEL
        for p in range(P):
            for l in range(PANEL):
                k = p * PANEL + l
                out[p, n, l] = M[g * H + j, k] if j < H and k < H else z


@jit(inline="always")
def _store_dh1(dh, s, v, tiny, ntiny, zero, add):
    """dh[s:s + 16] = v (+ dh[s:s + 16] if add), |x| < 1e-30 flushed to zero."""
    if add:
        v = vadd(vload(dh, s), v)
    vstore(dh, s, vadd(vselect_gt(v, tiny, v, zero), vselect_gt(ntiny, v, v, zero)))


@jit(inline="always")
def _store_dh4(dh, s, v0, v1, v2, v3, tiny, ntiny, zero, add):
    """dh[s:s + 64] = (v0, v1, v2, v3), |x| < 1e-30 flushed to zero."""
    _store_dh1(dh, s, v0, tiny, ntiny, zero, add)
    _store_dh1(dh, s + 16, v1, tiny, ntiny, zero, add)
    _store_dh1(dh, s + 32, v2, tiny, ntiny, zero, add)
    _store_dh1(dh, s + 48, v3, tiny, ntiny, zero, add)


@jit
def back_rec16(Rb, lengths, t, S, dh, add):
    """dh[b] = S[t, b] @ M (plus dh[b] if ``add``) for the sequences with t < lengths[b], the
    others untouched; |x| < 1e-30 flushed to zero. The recurrent product of the fused backward
    kernels: S (T, B, N) gate gradients in the unit-interleaved order, M packed in Rb by
    ``pack_back16``, dh (B, Hp). Six sequences by 64 units at a time (24 accumulators: each
    panel load used six times), then six by 16, or one sequence at a time."""
    T, B, N = S.shape
    Hp = dh.shape[1]
    nu = Hp // PANEL
    nq = nu - nu % 4
    NP = N * PANEL  # one column panel of Rb
    zero = vzero(S)
    tiny = vsplat(S.dtype.type(TINY32))
    ntiny = vsplat(S.dtype.type(-TINY32))
    dAf = S.reshape(T * B * N)
    b0 = 0
    while b0 < B:
        if B - b0 < 6:  # one sequence
            b = b0
            b0 += 1
            if t >= lengths[b]:
                continue
            ab = (t * B + b) * N
            for p0 in range(0, nq, 4):
                w0p = p0 * NP
                v0 = zero
                v1 = zero
                v2 = zero
                v3 = zero
                for n in range(N):
                    p = w0p + n * 16
                    x = vsplat(dAf[ab + n])
                    v0 = vfma(x, vload(Rb, p), v0)
                    v1 = vfma(x, vload(Rb, p + NP), v1)
                    v2 = vfma(x, vload(Rb, p + 2 * NP), v2)
                    v3 = vfma(x, vload(Rb, p + 3 * NP), v3)
                _store_dh4(dh, b * Hp + p0 * 16, v0, v1, v2, v3, tiny, ntiny, zero, add)
            for pp in range(nq, nu):  # two accumulators (FMA latency)
                wp = pp * NP
                ea = zero
                eb = zero
                n = 0
                while n + 1 < N:
                    ea = vfma(vsplat(dAf[ab + n]), vload(Rb, wp + n * 16), ea)
                    eb = vfma(vsplat(dAf[ab + n + 1]), vload(Rb, wp + n * 16 + 16), eb)
                    n += 2
                if n < N:
                    ea = vfma(vsplat(dAf[ab + n]), vload(Rb, wp + n * 16), ea)
                _store_dh1(dh, b * Hp + pp * 16, vadd(ea, eb), tiny, ntiny, zero, add)
            continue
        # six sequences (finished ones computed anyway: their dA is zero, dh not stored)
        a0 = (t * B + b0) * N
        for p0 in range(0, nq, 4):
            v00 = zero
            v01 = zero
            v02 = zero
            v03 = zero
            v10 = zero
            v11 = zero
            v12 = zero
            v13 = zero
            v20 = zero
            v21 = zero
            v22 = zero
            v23 = zero
            v30 = zero
            v31 = zero
            v32 = zero
            v33 = zero
            v40 = zero
            v41 = zero
            v42 = zero
            v43 = zero
            v50 = zero
            v51 = zero
            v52 = zero
            v53 = zero
            w0p = p0 * NP
            for n in range(N):
                p = w0p + n * 16
                w0 = vload(Rb, p)
                w1 = vload(Rb, p + NP)
                w2 = vload(Rb, p + 2 * NP)
                w3 = vload(Rb, p + 3 * NP)
                x = vsplat(dAf[a0 + n])
                v00 = vfma(x, w0, v00)
                v01 = vfma(x, w1, v01)
                v02 = vfma(x, w2, v02)
                v03 = vfma(x, w3, v03)
                x = vsplat(dAf[a0 + N + n])
                v10 = vfma(x, w0, v10)
                v11 = vfma(x, w1, v11)
                v12 = vfma(x, w2, v12)
                v13 = vfma(x, w3, v13)
                x = vsplat(dAf[a0 + 2 * N + n])
                v20 = vfma(x, w0, v20)
                v21 = vfma(x, w1, v21)
                v22 = vfma(x, w2, v22)
                v23 = vfma(x, w3, v23)
                x = vsplat(dAf[a0 + 3 * N + n])
                v30 = vfma(x, w0, v30)
                v31 = vfma(x, w1, v31)
                v32 = vfma(x, w2, v32)
                v33 = vfma(x, w3, v33)
                x = vsplat(dAf[a0 + 4 * N + n])
                v40 = vfma(x, w0, v40)
                v41 = vfma(x, w1, v41)
                v42 = vfma(x, w2, v42)
                v43 = vfma(x, w3, v43)
                x = vsplat(dAf[a0 + 5 * N + n])
                v50 = vfma(x, w0, v50)
                v51 = vfma(x, w1, v51)
                v52 = vfma(x, w2, v52)
                v53 = vfma(x, w3, v53)
            s = b0 * Hp + p0 * 16
            if t < lengths[b0]:
                _store_dh4(dh, s, v00, v01, v02, v03, tiny, ntiny, zero, add)
            if t < lengths[b0 + 1]:
                _store_dh4(dh, s + Hp, v10, v11, v12, v13, tiny, ntiny, zero, add)
            if t < lengths[b0 + 2]:
                _store_dh4(dh, s + 2 * Hp, v20, v21, v22, v23, tiny, ntiny, zero, add)
            if t < lengths[b0 + 3]:
                _store_dh4(dh, s + 3 * Hp, v30, v31, v32, v33, tiny, ntiny, zero, add)
            if t < lengths[b0 + 4]:
                _store_dh4(dh, s + 4 * Hp, v40, v41, v42, v43, tiny, ntiny, zero, add)
            if t < lengths[b0 + 5]:
                _store_dh4(dh, s + 5 * Hp, v50, v51, v52, v53, tiny, ntiny, zero, add)
        for pp in range(nq, nu):  # the last panels: six sequences by one panel
            wp = pp * NP
            v0 = zero
            v1 = zero
            v2 = zero
            v3 = zero
            v4 = zero
            v5 = zero
            for n in range(N):
                w = vload(Rb, wp + n * 16)
                v0 = vfma(vsplat(dAf[a0 + n]), w, v0)
                v1 = vfma(vsplat(dAf[a0 + N + n]), w, v1)
                v2 = vfma(vsplat(dAf[a0 + 2 * N + n]), w, v2)
                v3 = vfma(vsplat(dAf[a0 + 3 * N + n]), w, v3)
                v4 = vfma(vsplat(dAf[a0 + 4 * N + n]), w, v4)
                v5 = vfma(vsplat(dAf[a0 + 5 * N + n]), w, v5)
            s = b0 * Hp + pp * 16
            if t < lengths[b0]:
                _store_dh1(dh, s, v0, tiny, ntiny, zero, add)
            if t < lengths[b0 + 1]:
                _store_dh1(dh, s + Hp, v1, tiny, ntiny, zero, add)
            if t < lengths[b0 + 2]:
                _store_dh1(dh, s + 2 * Hp, v2, tiny, ntiny, zero, add)
            if t < lengths[b0 + 3]:
                _store_dh1(dh, s + 3 * Hp, v3, tiny, ntiny, zero, add)
            if t < lengths[b0 + 4]:
                _store_dh1(dh, s + 4 * Hp, v4, tiny, ntiny, zero, add)
            if t < lengths[b0 + 5]:
                _store_dh1(dh, s + 5 * Hp, v5, tiny, ntiny, zero, add)
        b0 += 6


# project_panels: rows (steps) in blocks of PROJ_TB and K in chunks of PROJ_KC, so that the
# weights of a chunk (4 panels x 64 k, 16 KB) and the outputs of a block stay in L1 while the
# block is computed (measured, one process, interleaved: (3200 x 256) @ (256 x 1024) 119 -> 132 GFLOP/s, @ (256 x 768)
# 58 -> 81; no change at K <= 64).
PROJ_TB = 48
PROJ_KC = 64


@jit
def project_panels(X, Wp, bias, G):
    """G (T, N) = X (T, K) @ M^T + bias for M packed by ``pack_gates16`` (N = its rows, a
    multiple of 16; bias (N,) in the same order). Four panels by three steps at a time: twelve
    vector accumulators, each weight load used three times and each broadcast four times
    (measured 128 GFLOP/s for (1000 x 64) @ (64 x 1024) against 80 for OpenBLAS and for two
    panels by four steps)."""
    T, K = X.shape
    N = G.shape[1]
    P = N // PANEL
    KP = K * PANEL
    T3 = T - T % 3
    P4 = P - P % 4
    for p in range(0, P4, 4):
        w0 = p * KP
        o0 = p * PANEL
        for tb in range(0, T3, PROJ_TB):
            for kc in range(0, K, PROJ_KC):
                ke = min(K, kc + PROJ_KC)
                for t in range(tb, min(T3, tb + PROJ_TB), 3):
                    r = t * N + o0
                    if kc == 0:
                        a0 = vload(bias, o0)
                        a1 = vload(bias, o0 + 16)
                        a2 = vload(bias, o0 + 32)
                        a3 = vload(bias, o0 + 48)
                        b0 = a0
                        b1 = a1
                        b2 = a2
                        b3 = a3
                        d0 = a0
                        d1 = a1
                        d2 = a2
                        d3 = a3
                    else:
                        a0 = vload(G, r)
                        a1 = vload(G, r + 16)
                        a2 = vload(G, r + 32)
                        a3 = vload(G, r + 48)
                        b0 = vload(G, r + N)
                        b1 = vload(G, r + N + 16)
                        b2 = vload(G, r + N + 32)
                        b3 = vload(G, r + N + 48)
                        d0 = vload(G, r + 2 * N)
                        d1 = vload(G, r + 2 * N + 16)
                        d2 = vload(G, r + 2 * N + 32)
                        d3 = vload(G, r + 2 * N + 48)
                    for k in range(kc, ke):
                            q = w0 + k * PANEL
                            u0 = vload(Wp, q)
                            u1 = vload(Wp, q + KP)
                            u2 = vload(Wp, q + 2 * KP)
                            u3 = vload(Wp, q + 3 * KP)
                            x = vsplat(X[t, k])
                            a0 = vfma(x, u0, a0)
                            a1 = vfma(x, u1, a1)
                            a2 = vfma(x, u2, a2)
                            a3 = vfma(x, u3, a3)
                            x = vsplat(X[t + 1, k])
                            b0 = vfma(x, u0, b0)
                            b1 = vfma(x, u1, b1)
                            b2 = vfma(x, u2, b2)
                            b3 = vfma(x, u3, b3)
                            x = vsplat(X[t + 2, k])
                            d0 = vfma(x, u0, d0)
                            d1 = vfma(x, u1, d1)
                            d2 = vfma(x, u2, d2)
                            d3 = vfma(x, u3, d3)
                    vstore(G, r, a0)
                    vstore(G, r + 16, a1)
                    vstore(G, r + 32, a2)
                    vstore(G, r + 48, a3)
                    r += N
                    vstore(G, r, b0)
                    vstore(G, r + 16, b1)
                    vstore(G, r + 32, b2)
                    vstore(G, r + 48, b3)
                    r += N
                    vstore(G, r, d0)
                    vstore(G, r + 16, d1)
                    vstore(G, r + 32, d2)
                    vstore(G, r + 48, d3)
        c0 = vload(bias, o0)
        c1 = vload(bias, o0 + 16)
        c2 = vload(bias, o0 + 32)
        c3 = vload(bias, o0 + 48)
        for t in range(T3, T):
            a0 = c0
            a1 = c1
            a2 = c2
            a3 = c3
            for k in range(K):
                q = w0 + k * PANEL
                x = vsplat(X[t, k])
                a0 = vfma(x, vload(Wp, q), a0)
                a1 = vfma(x, vload(Wp, q + KP), a1)
                a2 = vfma(x, vload(Wp, q + 2 * KP), a2)
                a3 = vfma(x, vload(Wp, q + 3 * KP), a3)
            r = t * N + o0
            vstore(G, r, a0)
            vstore(G, r + 16, a1)
            vstore(G, r + 32, a2)
            vstore(G, r + 48, a3)
    T4 = T - T % 4
    for p in range(P4, P):
        w0 = p * KP
        o0 = p * PANEL
        c0 = vload(bias, o0)
        for t in range(0, T4, 4):
            a0 = c0
            a1 = c0
            a2 = c0
            a3 = c0
            for k in range(K):
                u = vload(Wp, w0 + k * PANEL)
                a0 = vfma(vsplat(X[t, k]), u, a0)
                a1 = vfma(vsplat(X[t + 1, k]), u, a1)
                a2 = vfma(vsplat(X[t + 2, k]), u, a2)
                a3 = vfma(vsplat(X[t + 3, k]), u, a3)
            vstore(G, t * N + o0, a0)
            vstore(G, (t + 1) * N + o0, a1)
            vstore(G, (t + 2) * N + o0, a2)
            vstore(G, (t + 3) * N + o0, a3)
        for t in range(T4, T):
            a0 = c0
            for k in range(K):
                a0 = vfma(vsplat(X[t, k]), vload(Wp, w0 + k * PANEL), a0)
            vstore(G, t * N + o0, a0)


_INV_CLAMP = ONE / _CLAMP


@jit(inline="always")
def vtanh(x):
    """``fast_tanh`` on a float32 vector (same rational function, same clamp, NaN kept)."""
    c = vsplat(_CLAMP)
    m = vsplat(-_CLAMP)
    x = vselect_gt(m, x, m, x)
    x = vselect_gt(x, c, c, x)
    x2 = vmul(x, x)
    p = vfma(x2, vsplat(_A13), vsplat(_A11))
    p = vfma(x2, p, vsplat(_A9))
    p = vfma(x2, p, vsplat(_A7))
    p = vfma(x2, p, vsplat(_A5))
    p = vfma(x2, p, vsplat(_A3))
    p = vfma(x2, p, vsplat(_A1))
    p = vmul(x, p)
    q = vfma(x2, vsplat(_B6), vsplat(_B4))
    q = vfma(x2, q, vsplat(_B2))
    q = vfma(x2, q, vsplat(_B0))
    r = vdiv(p, q)
    sat = vmul(x, vsplat(_INV_CLAMP))  # exactly +-1 at the clamp (C * (1/C) == 1 in float32)
    r = vselect_gt(c, x, r, sat)
    return vselect_gt(x, m, r, sat)


@jit(inline="always")
def vsigmoid(x):
    """``fast_sigmoid`` on a float32 vector: 0.5 * tanh(0.5 x) + 0.5."""
    h = vsplat(HALF)
    return vfma(h, vtanh(vmul(h, x)), h)


# Batch 1: weight matrices with at least this many elements go to BLAS gemv (x @ Wt), smaller
# ones to ``matvec``. Measured (one thread, float32): 256x64 matvec 0.71 us vs gemv 0.87 us;
# 1024x256 matvec 13.1 us vs gemv 8.9 us; the two cross near 64K elements.
GEMV_MIN = 65536


@jit
def matmul(A, Wn, Wt, out, rev):
    """out (M, N) = A (M, K) @ Wn.T; Wn (N, K) C-contiguous. Wt (K, N) is the same matrix
    transposed, C-contiguous, or an empty (0, 0) array when the caller has none.

    One row (batch 1, the streaming case): ``matvec`` for small matrices, BLAS gemv for large
    ones when Wt is given (see GEMV_MIN). Several rows: BLAS gemm through np.dot.
    """
    if A.shape[0] == 1:
        if Wt.shape[0] > 0 and Wn.size >= GEMV_MIN:
            np.dot(A[0], Wt, out[0])
        else:
            matvec(A[0], Wn, out[0], rev)
    else:
        np.dot(A, Wn.T, out)


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
# Gradients carried back through many steps of a vanishing recurrence shrink geometrically and
# reach float32's subnormal range (1e-45 seen at T=300), where x86 and ARM cores slow down many
# times (measured: GRU backward B=64 H=32 T=300 took 82 ms in float32 vs 23 ms in float64).
# A float32 carry below 1e-30 cannot change any float32 gradient, so it is flushed to zero;
# float64 is left exact (gradient checks).
TINY32 = np.float32(1e-30)


@jit
def flush_tiny(x):
    """Set entries of the 2-D float32 array ``x`` with |x| < 1e-30 to zero (float64: no-op)."""
    if x.itemsize != 4:
        return
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if abs(x[i, j]) < TINY32:
                x[i, j] = ZERO


@jit(inline="always")
def out_deriv(code):
    """True if the activation's derivative is a function of its output alone (sigmoid, tanh)."""
    return code == FAST_SIGMOID or code == SIGMOID or code == FAST_TANH or code == TANH


@jit(inline="always")
def dout(code, y):
    """Derivative of sigmoid/tanh from the output ``y`` (branch-free, vectorises)."""
    return y * (ONE - y) if (code == FAST_SIGMOID or code == SIGMOID) else ONE - y * y


@jit(inline="always")
def dact(code, x, y, alpha, beta, clip):
    """d act(clamp(x)) / dx, zero where the clip cuts ``x``."""
    if clip > 0.0:
        if x > clip or x < -clip:
            return ZERO * y
        return dact1(code, x, y, alpha, beta)
    return dact1(code, x, y, alpha, beta)


@jit
def clamp_into(a, out, clip):
    for j in range(a.shape[0]):
        out[j] = min(max(a[j], -clip), clip)


@jit(inline="always")
def fast_sigmoid(x):
    return HALF * fast_tanh(HALF * x) + HALF




# ----------------------------------------------------------------------------------------
# Batch-minor kernels: batches of more than one sequence, default float32 cells
# (LSTM: fast sigmoid/tanh, no clip/peepholes/input_forget; GRU: the same with lbr=1).
#
# Layout: features x batch, one contiguous block per step. The state is hT (H, B); the
# recurrent product is R (G*H, H) @ hT, which OpenBLAS computes 1.2-1.8x faster than
# h (B, H) @ R.T at B=32 (measured), and every element-wise loop runs flat over a whole
# (rows, B) block: long, contiguous, vectorised loops.
# - G (T, G*H, B): input projection W @ X_t^T; overwritten in place with the gate outputs
#   (it is the ``Gt`` of the batch-major kernels).
# - bias_b (G*H*B,): the bias repeated along the batch, so that flat loops can add it.
# - Yt (T, H, B) output; Hs, Cs (T+1, H, B): states before each step, then the final one;
#   Hc (T, H, B): h(C_t); RH (T, H, B): H Rh^T + Rbh (GRU).
# - Padded steps: the columns of sequences that have ended are computed, then put back
#   (state held, output zero; in BPTT: gate gradients zero, dh/dc passed through).
# - Backward: dA (T, G*H, B) gate gradients (and dRec for GRU).
# ----------------------------------------------------------------------------------------
# OpenBLAS (SkylakeX kernels, 0.3.30) multiplies matrices of at most ~1e6 multiply-adds with
# its "small matrix" kernels, which skip packing the operands. Per step, the recurrent product
# R (G*H, H) @ hT (H, B) is larger than that for 256 units, and packing the 1 MB of R every step
# costs a third of the time: measured, (1024x256) @ (256x32) took 155 us whole and 107 us as
# row blocks of 120. So such products go in row blocks under the limit (nothing breaks if a
# BLAS has no such path: the blocks are then ordinary GEMM calls, ~1% overhead).
SMALL_GEMM = 1_000_000


# ----------------------------------------------------------------------------------------
# Streaming engine: op codes, the columns of the op table, flat-buffer primitives
# (see ``edgernn/streaming.py``; each cell module has its own streaming op)
# ----------------------------------------------------------------------------------------
# ---- op codes and the columns of the op table ------------------------------------------------
# Non-cell ops; every cell module has its own ``STREAM_OP`` code (1-3, 8 and up).
OP_DENSE, OP_ACT, OP_EMB, OP_MASK = 4, 5, 6, 7
SOFTMAX = 100  # extra activation code for Dense/Activation heads
LINEAR = -1  # no activation

# header row (row 0)
H_B, H_NOPS, H_FIN, H_VALID, H_IDS, H_FIRST_IN, H_FIRST_INS, H_PARITY = 0, 1, 2, 3, 4, 5, 6, 7
# op rows (rows 1..nops)
(M_TYPE, M_I, M_O, M_W, M_IN, M_INS, M_OUT, M_OUTS, M_H, M_C, M_G, M_S, M_S2, M_C0, M_C1, M_C2,
 M_F, M_FLAGS, M_V, M_BIAS, M_P, M_T, M_X0, M_X1, M_X2) = range(25)
NCOL = 25
# column names as ``_pack`` spells them (a cell's ``stream_pack`` returns a dict of these)
COLUMNS = dict(TYPE=M_TYPE, I=M_I, O=M_O, W=M_W, IN=M_IN, INS=M_INS, OUT=M_OUT, OUTS=M_OUTS, H=M_H, C=M_C,
               G=M_G, S=M_S, S2=M_S2, C0=M_C0, C1=M_C1, C2=M_C2, F=M_F, FLAGS=M_FLAGS, V=M_V, BIAS=M_BIAS,
               P=M_P, T=M_T, X0=M_X0, X1=M_X1, X2=M_X2)
# flags
F_PEEP, F_INPUT_FORGET, F_LBR, F_RSEQ, F_MASK_ZERO = 1, 2, 4, 8, 16
# float parameters of an op, at Wf[meta[M_F]:]: alpha0..2, beta0..2, clip, mask_value
NFP = 8

# error codes returned by the kernel
ERR_SHAPE, ERR_ID = 1, 2


# ---- jitted building blocks ------------------------------------------------------------------
@jit
def mv_flat(W, w0, ld, nc, nrows, v, v0, vs, B, out, o0, os, rev):
    """out[o0 + b*os + r] = sum_k W[w0 + r*ld + k] * v[v0 + b*vs + k], r < nrows, k < nc, b < B.

    Eight weight rows at a time, each block read once for the whole batch; the inner loop
    vectorises into eight independent accumulators. ``rev`` walks the blocks from the end
    (alternate it every step: the rows used last are still in L1 when the next step starts).
    """
    zero = W.dtype.type(0.0)
    nb = nrows // 8
    for i in range(nb):
        r = (nb - 1 - i) * 8 if rev else i * 8
        p = w0 + r * ld
        w_0 = W[p: p + nc]
        w_1 = W[p + ld: p + ld + nc]
        w_2 = W[p + 2 * ld: p + 2 * ld + nc]
        w_3 = W[p + 3 * ld: p + 3 * ld + nc]
        w_4 = W[p + 4 * ld: p + 4 * ld + nc]
        w_5 = W[p + 5 * ld: p + 5 * ld + nc]
        w_6 = W[p + 6 * ld: p + 6 * ld + nc]
        w_7 = W[p + 7 * ld: p + 7 * ld + nc]
        for b in range(B):
            q = v0 + b * vs
            vv = v[q: q + nc]
            s0 = zero
            s1 = zero
            s2 = zero
            s3 = zero
            s4 = zero
            s5 = zero
            s6 = zero
            s7 = zero
            for k in range(nc):
                a = vv[k]
                s0 += a * w_0[k]
                s1 += a * w_1[k]
                s2 += a * w_2[k]
                s3 += a * w_3[k]
                s4 += a * w_4[k]
                s5 += a * w_5[k]
                s6 += a * w_6[k]
                s7 += a * w_7[k]
            o = o0 + b * os + r
            out[o] = s0
            out[o + 1] = s1
            out[o + 2] = s2
            out[o + 3] = s3
            out[o + 4] = s4
            out[o + 5] = s5
            out[o + 6] = s6
            out[o + 7] = s7
    for r in range(nb * 8, nrows):
        p = w0 + r * ld
        w_0 = W[p: p + nc]
        for b in range(B):
            q = v0 + b * vs
            vv = v[q: q + nc]
            s0 = zero
            for k in range(nc):
                s0 += vv[k] * w_0[k]
            out[o0 + b * os + r] = s0




# A slice passed to a function that is not inlined costs a reference-count round trip
# (~15 ns), which would dominate small models: functions that are not inlined take whole
# arrays and offsets; the small helpers are inlined (numba IR level).
@jit
def act_span(code, X, xo, Y, yo, n, alpha, beta):
    """Y[yo:yo+n] = act(X[xo:xo+n]) for an activation code, LINEAR or SOFTMAX. The two ranges
    must not overlap (LLVM's run-time alias check would fall back to scalar code)."""
    x = X[xo: xo + n]
    y = Y[yo: yo + n]
    if code == FAST_SIGMOID:
        for k in range(n):
            y[k] = fast_sigmoid(x[k])
    elif code == FAST_TANH:
        for k in range(n):
            y[k] = fast_tanh(x[k])
    elif code == SIGMOID:
        for k in range(n):
            y[k] = 1.0 / (1.0 + np.exp(-x[k]))
    elif code == TANH:
        for k in range(n):
            y[k] = np.tanh(x[k])
    elif code == LINEAR or code == SOFTMAX:
        for k in range(n):
            y[k] = x[k]
        if code == SOFTMAX:
            m = y[0]
            for k in range(1, n):
                m = max(m, y[k])
            s = y.dtype.type(0.0)
            for k in range(n):
                e = np.exp(y[k] - m)
                y[k] = e
                s += e
            inv = 1.0 / s
            for k in range(n):
                y[k] = y[k] * inv
    else:
        for k in range(n):
            y[k] = act1(code, x[k], alpha, beta)


@jit(inline="always")
def clip_inplace(x, clip):
    for k in range(x.shape[0]):
        x[k] = min(max(x[k], -clip), clip)


@jit(inline="always")
def emit(valid, h, out, rseq):
    """Write a recurrent layer's output for one batch row: the new state, or, on a padding
    step, zeros (return_sequences) or the held state."""
    if valid or not rseq:
        for j in range(h.shape[0]):
            out[j] = h[j]
    else:
        for j in range(h.shape[0]):
            out[j] = 0.0



# ---- packing a layer for the streaming engine (Python side) ----------------------------------
class Packer:
    """Collects a stream's weights (``Wf``) and buffer regions (``buf``) with their offsets."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.w = []
        self.nw = 0
        self.nbuf = 0

    def add_w(self, arr):
        """Append ``arr`` (flattened, cast) to the weights; returns its offset."""
        arr = np.ascontiguousarray(arr, dtype=self.dtype).ravel()
        off = self.nw
        self.w.append(arr)
        self.nw += arr.size
        return off

    def add_buf(self, n):
        """Reserve ``n`` elements of the buffer; returns their offset."""
        off = self.nbuf
        self.nbuf += int(n)
        return off


def float_params(pk, alphas=(), betas=(), clip=None, mask_value=0.0):
    """Pack an op's float parameters (alpha0..2, beta0..2, clip, mask_value); returns the offset."""
    fpar = np.zeros(NFP)
    fpar[: len(alphas)] = alphas
    fpar[3: 3 + len(betas)] = betas
    fpar[6] = 0.0 if clip is None else float(clip)
    fpar[7] = mask_value
    return pk.add_w(fpar)


def pack_fused(cell, layer, pk, B, dtype, op):
    """The streaming op of an ONNX cell (RNN/GRU/LSTM layout): ``[W | R]`` fused as one
    (G*H, I + H) matrix, ``[x | h]`` rows in one buffer (the hidden state lives there), bias
    ``Wb + Rb``, activation codes and float parameters. Returns (meta dict, weights dict); the
    cell module adds what is its own.

    Every size the jitted op indexes with is taken from the arrays themselves and checked
    against the layer's ``units`` here (numba has no bounds checks).
    """
    from .._activations import resolve

    w = layer.onnx_weights()
    Wm, R = np.asarray(w["W"][0]), np.asarray(w["R"][0])  # (GH, I), (GH, H)
    H = int(layer.units)
    GH = cell.gates * H
    I = Wm.shape[1] if Wm.ndim == 2 else -1
    Wb, Rb = np.asarray(w["Wb"][0], dtype), np.asarray(w["Rb"][0], dtype)
    if Wm.shape != (GH, I) or R.shape != (GH, H) or Wb.shape != (GH,) or Rb.shape != (GH,):
        raise ValueError(f"stream: layer {layer.name!r} ({cell.name}, units={H}) has weights of shapes "
                         f"W {Wm.shape}, R {R.shape}, Wb {Wb.shape}, Rb {Rb.shape}; expected "
                         f"({GH}, I), ({GH}, {H}), ({GH},), ({GH},)")
    codes, al, be = resolve(layer.onnx_activations, cell.default_activations, 1, dtype,
                            layer.activation_alpha, layer.activation_beta)
    m = dict(type=op, I=I, O=H, F=float_params(pk, al[0], be[0], layer.clip))
    m["W"] = pk.add_w(np.concatenate([Wm, R], axis=1))  # (GH, I + H)
    m["FLAGS"] = F_RSEQ if layer.return_sequences else 0
    for j, c in enumerate(codes[0]):
        m[f"C{j}"] = int(c)
    m["G"] = pk.add_buf(B * GH)
    m["IN"] = pk.add_buf(B * (I + H))  # [x, h] rows: the input slot and the hidden state
    m["INS"] = I + H
    m["H"] = m["IN"] + I
    return m, dict(W=Wm, R=R, Wb=Wb, Rb=Rb, P=w.get("P"))


def state_view(buf, B, off, stride, width):
    """The (B, width) view of a state stored at ``buf[off + b * stride:][:width]``."""
    end = off + (B - 1) * stride + width
    if off < 0 or width > stride or end > buf.size:
        raise ValueError(f"stream: state region [{off}, {end}) does not fit the buffer of {buf.size}")
    it = buf.itemsize
    return np.lib.stride_tricks.as_strided(buf[off:end], shape=(B, width), strides=(stride * it, it))
