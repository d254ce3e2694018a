"""Jitted time loops for one direction of RNN, GRU and LSTM: forward and BPTT.

Two families, chosen by ``functional``:

- Batch-major kernels (``rnn/gru/lstm_forward``, ``*_backward``): every option (activations,
  clip, peepholes, input_forget, GRU lbr 0/1), float32 and float64, any batch; the only ones
  used for batch 1. Layout (T, B, features).
- Batch-minor kernels (``*_bm``): batches of more than one sequence with the default float32
  cells. Layout (T, features, B); see the block comment above ``lstm_forward_bm``.

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

Speed notes (measured on a 2-core AVX-512 VM, float32; see benchmarks/README.md):
- Batch 1: the recurrent product is ``matvec``, eight dot products at a time, walking the
  weight rows forwards on even steps and backwards on odd steps ("snake" order) so that the
  rows used last are still in L1 when the next step starts (10% faster), for matrices below
  GEMV_MIN elements (at 64 units it beats a BLAS gemv call by ~15%); BLAS gemv above (30%
  faster at 256 units).
- float32 data is computed in float32: literal constants are ``np.float32`` (ONE, HALF, ZERO),
  since a Python float promotes every operation to float64 and halves the SIMD width.
- The default float32 cells have fused loops (``*_row_fast``, the ``*_bm`` kernels) that LLVM
  vectorises. Every loop writes to few arrays, or LLVM gives up vectorising because of the
  number of run-time alias checks; a loop never reads and writes different views of the same
  buffer at the same index (that fails the alias check at run time and falls back to scalar
  code); loops index per-gate views from 0 (an offset index keeps numba's negative-index
  wraparound in the loop, which LLVM vectorises with gathers).
"""

from __future__ import annotations

import numpy as np

from ._activations import FAST_SIGMOID, FAST_TANH, HALF, ONE, SIGMOID, TANH, ZERO, act_vec, dact1, fast_tanh
from ._config import jit


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
# RNN:  H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)
# ----------------------------------------------------------------------------------------
@jit
def rnn_forward(G, bias, R, RT, h0, lengths, code, alpha, beta, clip, train, Y, h, A, Hs):
    T, B, H = G.shape
    h[:] = h0
    rec = np.empty((B, H), G.dtype)  # (B, H)
    pre = np.empty(H, G.dtype)
    tmp = np.empty(H, G.dtype)
    need_a = train and (clip > 0.0 or not out_deriv(code))
    for t in range(T):
        k = t if train else 0
        if train:
            Hs[t] = h
        matmul(h, R, RT, rec, t & 1)
        for b in range(B):
            if t >= lengths[b]:
                continue
            a = A[k, b] if need_a else pre
            g = G[t, b]
            r = rec[b]
            for j in range(H):
                a[j] = g[j] + r[j] + bias[j]
            gt = G[t, b]  # gate outputs replace the projection in place
            if clip > 0.0:
                clamp_into(a, tmp, clip)
                act_vec(code, tmp, gt, alpha, beta)
            else:
                act_vec(code, a, gt, alpha, beta)
            hb = h[b]
            y = Y[t, b]
            for j in range(H):
                hb[j] = gt[j]
                y[j] = gt[j]
    if train:
        Hs[T] = h


@jit
def rnn_backward(RT, R, lengths, code, alpha, beta, clip, dY, dh, A, Gt, dA):
    """dh (B, H) enters as dL/dH_T and leaves as dL/dH_0. Fills dA (T, B, H) (zeros on entry)."""
    T, B, H = dY.shape
    rec = np.empty((B, H), dY.dtype)
    need_a = clip > 0.0 or not out_deriv(code)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t >= lengths[b]:
                continue  # dA stays zero, dh passes through the held state
            da = dA[t, b]
            gt = Gt[t, b]
            dhb = dh[b]
            dy = dY[t, b]
            if need_a:
                a = A[t, b]
                for j in range(H):
                    da[j] = (dhb[j] + dy[j]) * dact(code, a[j], gt[j], alpha, beta, clip)
            else:
                for j in range(H):
                    da[j] = (dhb[j] + dy[j]) * dout(code, gt[j])
        matmul(dA[t], RT, R, rec, t & 1)  # (B, H) @ (H, H)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = rec[b, j]
        flush_tiny(dh)


# ----------------------------------------------------------------------------------------
# GRU (ONNX): z = f(Xz + H Rz + b), r = f(Xr + H Rr + b)
#   lbr=0: h~ = g(Xh + (r*H) Rh + Rbh + Wbh)      lbr=1: h~ = g(Xh + r*(H Rh + Rbh) + Wbh)
#   H_t = (1 - z) * h~ + z * H_{t-1}
# bias holds Wb + Rb for z, r; Wbh (+ Rbh when lbr=0) for h. RH keeps (H Rh + Rbh) for lbr=1,
# r*H for lbr=0 (zero on padded steps).
# ----------------------------------------------------------------------------------------
@jit(inline="always")
def gru_zr_gates(a, g, r, bias, tmp, gt, H, clip, fc, alpha, beta):
    """z and r of one row: a[:2H] = projection + recurrent product + bias (pre-activations),
    gt[:2H] = f(clip(a)). Returns the array holding the (clipped) pre-activations."""
    for j in range(2 * H):
        a[j] = g[j] + r[j] + bias[j]
    src = a
    if clip > 0.0:
        clamp_into(a[: 2 * H], tmp[: 2 * H], clip)
        src = tmp
    act_vec(fc, src[: 2 * H], gt[: 2 * H], alpha, beta)
    return src


@jit(inline="always")
def gru_row_fast(g, r, bias, Rbh, rh, h, y):
    """One batch row of the default float32 GRU step (fast sigmoid/tanh, lbr=1, no clip);
    ``g`` holds the projection on entry and the gate outputs on exit. Per-gate views indexed
    from 0: see ``lstm_row_fast``."""
    H = h.shape[0]
    for j in range(2 * H):
        g[j] = fast_sigmoid(g[j] + r[j] + bias[j])
    tz = g[:H]
    tr = g[H: 2 * H]
    th = g[2 * H:]
    rr_ = r[2 * H:]
    bh = bias[2 * H:]
    for j in range(H):
        rh[j] = rr_[j] + Rbh[j]
    for j in range(H):
        hh = fast_tanh(th[j] + bh[j] + tr[j] * rh[j])
        th[j] = hh
        z = tz[j]
        hv = (ONE - z) * hh + z * h[j]
        h[j] = hv
        y[j] = hv


@jit
def gru_forward(G, bias, R, RT, Rzr, RzrT, Rh, RhT, Rbh, h0, lengths, codes, alphas, betas, clip, lbr, train,
                Y, h, A, Hs, RH):
    T, B, G3 = G.shape
    H = G3 // 3
    h[:] = h0
    fc, gc = codes[0], codes[1]
    fast = lbr and fc == FAST_SIGMOID and gc == FAST_TANH and clip == 0.0
    need_a = train and (clip > 0.0 or not (out_deriv(fc) and out_deriv(gc)))
    rec = np.empty((B, G3), G.dtype)  # lbr: H R^T (B, 3H)
    rec_zr = np.empty((B, 2 * H), G.dtype)  # not lbr: H Rzr^T
    rec_h = np.empty((B, H), G.dtype)  # not lbr: (r*H) Rh^T
    pre = np.empty(G3, G.dtype)
    tmp = np.empty(G3, G.dtype)
    for t in range(T):
        k = t if train else 0
        if train:
            Hs[t] = h
        rh = RH[k]  # (B, H)
        if lbr:
            matmul(h, R, RT, rec, t & 1)
            for b in range(B):
                if t >= lengths[b]:
                    for j in range(H):
                        rh[b, j] = ZERO
                    continue
                gt = G[t, b]  # gate outputs replace the projection in place
                if fast:
                    gru_row_fast(gt, rec[b], bias, Rbh, rh[b], h[b], Y[t, b])
                    continue
                a = A[k, b] if need_a else pre
                g = G[t, b]
                r = rec[b]
                src = gru_zr_gates(a, g, r, bias, tmp, gt, H, clip, fc, alphas[0], betas[0])
                rhb = rh[b]
                for j in range(H):
                    rr = r[2 * H + j] + Rbh[j]
                    rhb[j] = rr
                    a[2 * H + j] = g[2 * H + j] + bias[2 * H + j] + gt[H + j] * rr
                if clip > 0.0:
                    clamp_into(a[2 * H:], tmp[2 * H:], clip)
                act_vec(gc, src[2 * H:], gt[2 * H:], alphas[1], betas[1])
                hb = h[b]
                y = Y[t, b]
                for j in range(H):
                    z = gt[j]
                    hv = (ONE - z) * gt[2 * H + j] + z * hb[j]
                    hb[j] = hv
                    y[j] = hv
        else:
            matmul(h, Rzr, RzrT, rec_zr, t & 1)
            for b in range(B):
                if t >= lengths[b]:
                    for j in range(H):
                        rh[b, j] = ZERO
                    continue
                gt = G[t, b]
                a = A[k, b] if need_a else pre
                g = G[t, b]
                r = rec_zr[b]
                src = gru_zr_gates(a, g, r, bias, tmp, gt, H, clip, fc, alphas[0], betas[0])
                rhb = rh[b]
                hb = h[b]
                for j in range(H):
                    rhb[j] = gt[H + j] * hb[j]
            matmul(rh, Rh, RhT, rec_h, t & 1)
            for b in range(B):
                if t >= lengths[b]:
                    continue
                gt = G[t, b]
                a = A[k, b] if need_a else pre
                g = G[t, b]
                r = rec_h[b]
                for j in range(H):
                    a[2 * H + j] = g[2 * H + j] + bias[2 * H + j] + r[j]
                src = a
                if clip > 0.0:
                    clamp_into(a[2 * H:], tmp[2 * H:], clip)
                    src = tmp
                act_vec(gc, src[2 * H:], gt[2 * H:], alphas[1], betas[1])
                hb = h[b]
                y = Y[t, b]
                for j in range(H):
                    z = gt[j]
                    hv = (ONE - z) * gt[2 * H + j] + z * hb[j]
                    hb[j] = hv
                    y[j] = hv
    if train:
        Hs[T] = h


@jit
def gru_back_row_fast(fc, gc, g, gt, hp, rhv, da, drec):
    """lbr=1, sigmoid/tanh gates, no clip. ``g`` (H) holds dL/dH_t on entry and dL/dH_{t-1}
    through the direct path (g * z) on exit."""
    H = g.shape[0]
    for j in range(H):
        z = gt[j]
        r = gt[H + j]
        hh = gt[2 * H + j]
        gj = g[j]
        dah = gj * (ONE - z) * dout(gc, hh)
        da[j] = gj * (hp[j] - hh) * dout(fc, z)
        da[H + j] = dah * rhv[j] * dout(fc, r)
        da[2 * H + j] = dah
    for j in range(H):
        r = gt[H + j]
        drec[j] = da[j]
        drec[H + j] = da[H + j]
        drec[2 * H + j] = da[2 * H + j] * r
    for j in range(H):
        g[j] = g[j] * gt[j]


@jit
def gru_backward(RT, R, RzrT, Rzr, RhT, Rh, lengths, codes, alphas, betas, clip, lbr, dY, dh, A, Gt, Hs, RH, dA, dRec):
    """Fills dA (T, B, 3H) (gradient of the gate pre-activations that meet X W^T) and
    dRec (T, B, 3H) (gradient of the recurrent products: H Rzr^T, and H Rh^T + Rbh or (r*H) Rh^T).
    Both are zeros on entry. RT (H, 3H), RzrT (H, 2H), RhT (H, H) are the transposed weights,
    next to the weights themselves (R, Rzr, Rh: see ``matmul``)."""
    T, B, H = dY.shape
    fc, gc = codes[0], codes[1]
    need_a = clip > 0.0 or not (out_deriv(fc) and out_deriv(gc))
    fast = lbr and not need_a
    back = np.empty((B, H), dY.dtype)  # dRec @ R (lbr)
    s_zr = np.empty((B, 2 * H), dY.dtype)
    s_h = np.empty((B, H), dY.dtype)
    back_zr = np.empty((B, H), dY.dtype)
    back_h = np.empty((B, H), dY.dtype)
    direct = np.empty((B, H), dY.dtype)
    z0 = dY.dtype.type(0.0)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            dd = direct[b]
            if t >= lengths[b]:
                for j in range(H):
                    dd[j] = z0
                    s_h[b, j] = z0
                continue
            dhb = dh[b]
            dy = dY[t, b]
            for j in range(H):
                dd[j] = dhb[j] + dy[j]
            if fast:
                gru_back_row_fast(fc, gc, dd, Gt[t, b], Hs[t, b], RH[t, b], dA[t, b], dRec[t, b])
                continue
            gt = Gt[t, b]
            da = dA[t, b]
            hp = Hs[t, b]
            for j in range(H):
                g = dd[j]
                z = gt[j]
                hh = gt[2 * H + j]
                xz = A[t, b, j] if need_a else z0
                xh = A[t, b, 2 * H + j] if need_a else z0
                da[j] = g * (hp[j] - hh) * dact(fc, xz, z, alphas[0], betas[0], clip)
                da[2 * H + j] = g * (ONE - z) * dact(gc, xh, hh, alphas[1], betas[1], clip)
                dd[j] = g * z
                if lbr:
                    s_h[b, j] = da[2 * H + j] * gt[H + j]  # d(H Rh^T + Rbh)
                else:
                    s_h[b, j] = da[2 * H + j]  # d((r*H) Rh^T)
        if not fast:
            if not lbr:
                matmul(s_h, RhT, Rh, back_h, t & 1)  # (B, H) @ (H, H)
            for b in range(B):
                if t >= lengths[b]:
                    for j in range(2 * H):
                        s_zr[b, j] = z0
                    continue
                gt = Gt[t, b]
                da = dA[t, b]
                for j in range(H):
                    r = gt[H + j]
                    xr = A[t, b, H + j] if need_a else z0
                    if lbr:
                        dr = da[2 * H + j] * RH[t, b, j]
                    else:
                        dr = back_h[b, j] * Hs[t, b, j]  # d(r*H)/dr
                        direct[b, j] += back_h[b, j] * r
                    da[H + j] = dr * dact(fc, xr, r, alphas[0], betas[0], clip)
                    s_zr[b, j] = da[j]
                    s_zr[b, H + j] = da[H + j]
                drec = dRec[t, b]
                for j in range(2 * H):
                    drec[j] = s_zr[b, j]
                for j in range(H):
                    drec[2 * H + j] = s_h[b, j]
        if lbr:
            matmul(dRec[t], RT, R, back, t & 1)  # (B, 3H) @ (3H, H)
            for b in range(B):
                if t < lengths[b]:
                    for j in range(H):
                        dh[b, j] = direct[b, j] + back[b, j]
        else:
            matmul(s_zr, RzrT, Rzr, back_zr, t & 1)  # (B, 2H) @ (2H, H)
            for b in range(B):
                if t < lengths[b]:
                    for j in range(H):
                        dh[b, j] = direct[b, j] + back_zr[b, j]  # back_h * r is in direct
        flush_tiny(dh)


# ----------------------------------------------------------------------------------------
# LSTM (ONNX, gates i,o,f,c):
#   i = f(Xi + H Ri + Pi*C + b)   f = f(Xf + H Rf + Pf*C + b)  (or f = 1 - i with input_forget)
#   c~ = g(Xc + H Rc + b)         C_t = f*C + i*c~
#   o = f(Xo + H Ro + Po*C_t + b) H_t = o * h(C_t)
# ----------------------------------------------------------------------------------------
@jit(inline="always")
def lstm_row_fast(g, r, bias, c, hc, h, y):
    """One batch row of the default float32 LSTM step (fast sigmoid/tanh, no clip/peepholes);
    ``g`` holds the projection on entry and the gate outputs on exit.

    Loops index per-gate views from 0: an offset index (``g[2 * H + j]``) keeps numba's
    negative-index wraparound in the loop, which LLVM then vectorises with gathers.
    """
    H = c.shape[0]
    for j in range(3 * H):
        g[j] = fast_sigmoid(g[j] + r[j] + bias[j])
    rc = r[3 * H:]
    bc = bias[3 * H:]
    ti = g[:H]
    to = g[H: 2 * H]
    tf = g[2 * H: 3 * H]
    tc = g[3 * H:]
    for j in range(H):
        tc[j] = fast_tanh(tc[j] + rc[j] + bc[j])
    for j in range(H):
        cn = tf[j] * c[j] + ti[j] * tc[j]
        c[j] = cn
        v = fast_tanh(cn)
        hc[j] = v
        hv = to[j] * v
        h[j] = hv
        y[j] = hv


@jit
def lstm_row(g, r, bias, P, a, tmp, gt, c, hc, h, y, fc, gc, hcode, alphas, betas, clip, input_forget, peep):
    """One batch row of the general LSTM step; ``a`` receives the pre-activations (before clip)."""
    H = c.shape[0]
    for j in range(4 * H):
        a[j] = g[j] + r[j] + bias[j]
    if peep:
        for j in range(H):
            a[j] += P[j] * c[j]
            a[2 * H + j] += P[2 * H + j] * c[j]
    src = a
    if clip > 0.0:
        clamp_into(a, tmp, clip)
        src = tmp
    act_vec(fc, src[:H], gt[:H], alphas[0], betas[0])  # i
    if input_forget:
        for j in range(H):
            gt[2 * H + j] = ONE - gt[j]
    else:
        act_vec(fc, src[2 * H: 3 * H], gt[2 * H: 3 * H], alphas[0], betas[0])  # f
    act_vec(gc, src[3 * H:], gt[3 * H:], alphas[1], betas[1])  # c~
    for j in range(H):
        c[j] = gt[2 * H + j] * c[j] + gt[j] * gt[3 * H + j]
    if peep:
        for j in range(H):
            a[H + j] += P[H + j] * c[j]
        if clip > 0.0:
            clamp_into(a[H: 2 * H], tmp[H: 2 * H], clip)
    act_vec(fc, src[H: 2 * H], gt[H: 2 * H], alphas[0], betas[0])  # o
    act_vec(hcode, c, hc, alphas[2], betas[2])  # h(C_t)
    for j in range(H):
        hv = gt[H + j] * hc[j]
        h[j] = hv
        y[j] = hv


@jit
def lstm_forward(G, bias, R, RT, P, h0, c0, lengths, codes, alphas, betas, clip, input_forget, peep, train,
                 Y, h, c, A, Hs, Cs, Hc):
    T, B, G4 = G.shape
    h[:] = h0
    c[:] = c0
    fc, gc, hcode = codes[0], codes[1], codes[2]
    fast = fc == FAST_SIGMOID and gc == FAST_TANH and hcode == FAST_TANH and clip == 0.0 and not peep \
        and not input_forget
    need_a = train and (clip > 0.0 or not (out_deriv(fc) and out_deriv(gc)))
    rec = np.empty((B, G4), G.dtype)  # (B, 4H)
    pre = np.empty(G4, G.dtype)
    tmp = np.empty(G4, G.dtype)
    for t in range(T):
        k = t if train else 0
        if train:
            Hs[t] = h
            Cs[t] = c
        matmul(h, R, RT, rec, t & 1)
        for b in range(B):
            if t >= lengths[b]:
                continue
            if fast:  # gate outputs replace the projection in place
                lstm_row_fast(G[t, b], rec[b], bias, c[b], Hc[k, b], h[b], Y[t, b])
            else:
                lstm_row(G[t, b], rec[b], bias, P, A[k, b] if need_a else pre, tmp, G[t, b], c[b], Hc[k, b],
                         h[b], Y[t, b], fc, gc, hcode, alphas, betas, clip, input_forget, peep)
    if train:
        Hs[T] = h
        Cs[T] = c


@jit
def lstm_back_row_fast(fc, gc, hcode, g, gt, hc, cp, dc, da):
    """Sigmoid/tanh-type gates, no clip, no peepholes, no input_forget. ``g`` (H) is dL/dH_t;
    ``dc`` enters as dL/dC_t (from later steps) and leaves as dL/dC_{t-1}."""
    H = g.shape[0]
    for j in range(H):  # writes da only: o gate, and dL/dC_t parked in the i slot
        o = gt[H + j]
        hcv = hc[j]
        da[H + j] = g[j] * hcv * dout(fc, o)
        da[j] = dc[j] + g[j] * o * dout(hcode, hcv)
    for j in range(H):
        dcn = da[j]
        i = gt[j]
        f = gt[2 * H + j]
        cc = gt[3 * H + j]
        da[j] = dcn * cc * dout(fc, i)
        da[2 * H + j] = dcn * cp[j] * dout(fc, f)
        da[3 * H + j] = dcn * i * dout(gc, cc)
        dc[j] = dcn * f


@jit
def lstm_backward(RT, R, P, lengths, codes, alphas, betas, clip, input_forget, peep,
                  dY, dh, dc, A, Gt, Hs, Cs, Hc, dA, dP):
    """dh, dc (B, H) enter as dL/dH_T, dL/dC_T and leave as dL/dH_0, dL/dC_0.
    Fills dA (T, B, 4H) (zeros on entry) and accumulates dP (3H,). RT (H, 4H) is R transposed."""
    T, B, H = dY.shape
    fc, gc, hcode = codes[0], codes[1], codes[2]
    need_a = clip > 0.0 or not (out_deriv(fc) and out_deriv(gc))
    fast = not need_a and out_deriv(hcode) and not peep and not input_forget
    rec = np.empty((B, H), dY.dtype)
    gsum = np.empty(H, dY.dtype)
    z0 = dY.dtype.type(0.0)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t >= lengths[b]:
                continue
            dhb = dh[b]
            dy = dY[t, b]
            if fast:
                for j in range(H):
                    gsum[j] = dhb[j] + dy[j]
                lstm_back_row_fast(fc, gc, hcode, gsum, Gt[t, b], Hc[t, b], Cs[t, b], dc[b], dA[t, b])
                continue
            for j in range(H):
                g = dhb[j] + dy[j]
                i = Gt[t, b, j]
                o = Gt[t, b, H + j]
                f = Gt[t, b, 2 * H + j]
                cc = Gt[t, b, 3 * H + j]
                cp = Cs[t, b, j]
                cn = Cs[t + 1, b, j]
                hcv = Hc[t, b, j]
                xi = A[t, b, j] if need_a else z0
                xo = A[t, b, H + j] if need_a else z0
                xf = A[t, b, 2 * H + j] if need_a else z0
                xc = A[t, b, 3 * H + j] if need_a else z0
                dao = g * hcv * dact(fc, xo, o, alphas[0], betas[0], clip)
                dcn = dc[b, j] + g * o * dact1(hcode, cn, hcv, alphas[2], betas[2])
                if peep:
                    dcn += dao * P[H + j]
                    dP[H + j] += dao * cn
                dac = dcn * i * dact(gc, xc, cc, alphas[1], betas[1], clip)
                di = dcn * cc
                if input_forget:
                    di -= dcn * cp
                    daf = z0
                else:
                    daf = dcn * cp * dact(fc, xf, f, alphas[0], betas[0], clip)
                dai = di * dact(fc, xi, i, alphas[0], betas[0], clip)
                dcp = dcn * f
                if peep:
                    dcp += dai * P[j] + daf * P[2 * H + j]
                    dP[j] += dai * cp
                    dP[2 * H + j] += daf * cp
                dc[b, j] = dcp
                dA[t, b, j] = dai
                dA[t, b, H + j] = dao
                dA[t, b, 2 * H + j] = daf
                dA[t, b, 3 * H + j] = dac
        matmul(dA[t], RT, R, rec, t & 1)  # (B, 4H) @ (4H, H)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = rec[b, j]
        flush_tiny(dh)
        flush_tiny(dc)


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


@jit
def gemm_rows(A, X, out):
    """out (N, B) = A (N, K) @ X (K, B), in row blocks of at most SMALL_GEMM multiply-adds
    when that is measured to pay (B <= 32, blocks of >= 32 rows)."""
    N, K = A.shape
    B = X.shape[1]
    c = N
    if B <= 32 and N * K * B > SMALL_GEMM:
        c = (SMALL_GEMM // (K * B)) // 8 * 8
        if c < 32:
            c = N
    for s in range(0, N, c):
        e = min(N, s + c)
        np.dot(A[s:e], X, out[s:e])


@jit
def project_bm(W, XT, G):
    """G[t] = W @ XT[t] for every step: the input projection of the batch-minor kernels,
    before their time loop. W (G*H, I), XT (T, I, B), G (T, G*H, B).

    One product per step in row blocks (``gemm_rows``) rather than one big product and a
    transposing copy: measured 2.8 ms vs 5.8 ms for (1024 x 64) over T=100, B=32, and 11.4 ms
    vs 13.9 ms for (1024 x 256).
    """
    for t in range(XT.shape[0]):
        gemm_rows(W, XT[t], G[t])


@jit
def _restore_cols(t, lengths, dst, src):
    """dst[:, b] = src[:, b] for the sequences that have ended at step t."""
    for b in range(lengths.shape[0]):
        if t >= lengths[b]:
            for j in range(dst.shape[0]):
                dst[j, b] = src[j, b]


@jit
def _zero_cols(t, lengths, dst):
    for b in range(lengths.shape[0]):
        if t >= lengths[b]:
            for j in range(dst.shape[0]):
                dst[j, b] = ZERO


@jit
def lstm_forward_bm(G, bias_b, R, hT, cT, lengths, train, Yt, Hs, Cs, Hc):
    """hT, cT (H, B) enter as the initial state and leave as the final one."""
    T, G4, B = G.shape
    H = G4 // 4
    HB = H * B
    tmin = lengths.min()
    rec = np.empty((G4, B), G.dtype)
    r = rec.reshape(G4 * B)
    save_h = np.empty((H, B), G.dtype)
    save_c = np.empty((H, B), G.dtype)
    hc_s = np.empty((1, HB), G.dtype)
    h = hT.reshape(HB)
    c = cT.reshape(HB)
    b3 = bias_b[3 * HB:]
    r3 = r[3 * HB:]
    for t in range(T):
        if train:
            Hs[t] = hT
            Cs[t] = cT
        gemm_rows(R, hT, rec)  # (4H, B)
        masked = t >= tmin
        if masked:
            save_h[:] = hT
            save_c[:] = cT
        g = G[t].reshape(G4 * B)
        for m in range(3 * HB):
            g[m] = fast_sigmoid(g[m] + r[m] + bias_b[m])
        gi = g[:HB]
        go = g[HB: 2 * HB]
        gf = g[2 * HB: 3 * HB]
        gc = g[3 * HB:]
        for m in range(HB):
            gc[m] = fast_tanh(gc[m] + r3[m] + b3[m])
        for m in range(HB):
            c[m] = gf[m] * c[m] + gi[m] * gc[m]
        # the same loop with and without train, so both give bit-identical outputs
        hcv = Hc[t].reshape(HB) if train else hc_s[0]
        y = Yt[t].reshape(HB)
        for m in range(HB):
            v = fast_tanh(c[m])
            hcv[m] = v
            hv = go[m] * v
            h[m] = hv
            y[m] = hv
        if masked:
            _restore_cols(t, lengths, hT, save_h)
            _restore_cols(t, lengths, cT, save_c)
            _zero_cols(t, lengths, Yt[t])
    if train:
        Hs[T] = hT
        Cs[T] = cT


@jit
def lstm_backward_bm(RT, lengths, dYt, dhT, dcT, G, Cs, Hc, dA):
    """BPTT of ``lstm_forward_bm`` (G holds the gate outputs). dhT, dcT (H, B) enter as
    dL/dH_T, dL/dC_T and leave as dL/dH_0, dL/dC_0; fills all of dA (T, 4H, B)."""
    T, H, B = dYt.shape
    HB = H * B
    tmin = lengths.min()
    g = np.empty(HB, dYt.dtype)
    save_h = np.empty((H, B), dYt.dtype)
    save_c = np.empty((H, B), dYt.dtype)
    dh = dhT.reshape(HB)
    dc = dcT.reshape(HB)
    for t in range(T - 1, -1, -1):
        masked = t >= tmin
        if masked:
            save_h[:] = dhT
            save_c[:] = dcT
        dy = dYt[t].reshape(HB)
        for m in range(HB):
            g[m] = dh[m] + dy[m]
        gt = G[t].reshape(4 * HB)
        gi = gt[:HB]
        go = gt[HB: 2 * HB]
        gf = gt[2 * HB: 3 * HB]
        gc = gt[3 * HB:]
        hc = Hc[t].reshape(HB)
        cp = Cs[t].reshape(HB)
        da = dA[t].reshape(4 * HB)
        dai = da[:HB]  # dL/dC_t parked here first
        dao = da[HB: 2 * HB]
        daf = da[2 * HB: 3 * HB]
        dac = da[3 * HB:]
        for m in range(HB):
            o = go[m]
            v = hc[m]
            dao[m] = g[m] * v * o * (ONE - o)
            dai[m] = dc[m] + g[m] * o * (ONE - v * v)
        for m in range(HB):
            dcn = dai[m]
            i = gi[m]
            f = gf[m]
            cc = gc[m]
            dai[m] = dcn * cc * i * (ONE - i)
            daf[m] = dcn * cp[m] * f * (ONE - f)
            dac[m] = dcn * i * (ONE - cc * cc)
            dc[m] = dcn * f
        if masked:
            _zero_cols(t, lengths, dA[t])
        gemm_rows(RT, dA[t], dhT)  # (H, 4H) @ (4H, B)
        if masked:
            _restore_cols(t, lengths, dhT, save_h)
            _restore_cols(t, lengths, dcT, save_c)
        flush_tiny(dhT)
        flush_tiny(dcT)


@jit
def gru_forward_bm(G, bias_b, R, rbh_b, hT, lengths, train, Yt, Hs, RH):
    """lbr=1. bias_b: (Wb + Rb for z, r; Wbh for h) repeated along the batch; rbh_b: Rbh
    repeated along the batch. hT (H, B) enters as the initial state and leaves as the final one."""
    T, G3, B = G.shape
    H = G3 // 3
    HB = H * B
    tmin = lengths.min()
    rec = np.empty((G3, B), G.dtype)
    r = rec.reshape(G3 * B)
    save_h = np.empty((H, B), G.dtype)
    rh_s = np.empty((1, HB), G.dtype)
    h = hT.reshape(HB)
    r2 = r[2 * HB:]
    b2 = bias_b[2 * HB:]
    for t in range(T):
        if train:
            Hs[t] = hT
        gemm_rows(R, hT, rec)  # (3H, B)
        masked = t >= tmin
        if masked:
            save_h[:] = hT
        g = G[t].reshape(G3 * B)
        for m in range(2 * HB):
            g[m] = fast_sigmoid(g[m] + r[m] + bias_b[m])
        gz = g[:HB]
        gr = g[HB: 2 * HB]
        gh = g[2 * HB:]
        rr = RH[t].reshape(HB) if train else rh_s[0]
        for m in range(HB):
            rr[m] = r2[m] + rbh_b[m]
        for m in range(HB):
            gh[m] = fast_tanh(gh[m] + b2[m] + gr[m] * rr[m])
        y = Yt[t].reshape(HB)
        for m in range(HB):
            z = gz[m]
            hv = (ONE - z) * gh[m] + z * h[m]
            h[m] = hv
            y[m] = hv
        if masked:
            _restore_cols(t, lengths, hT, save_h)
            _zero_cols(t, lengths, Yt[t])
    if train:
        Hs[T] = hT


@jit
def gru_backward_bm(RT, lengths, dYt, dhT, G, Hs, RH, dA, dRec):
    """BPTT of ``gru_forward_bm``. dhT (H, B) enters as dL/dH_T and leaves as dL/dH_0; fills
    all of dA and dRec (T, 3H, B)."""
    T, H, B = dYt.shape
    HB = H * B
    tmin = lengths.min()
    g = np.empty(HB, dYt.dtype)
    back = np.empty((H, B), dYt.dtype)
    bk = back.reshape(HB)
    save_h = np.empty((H, B), dYt.dtype)
    dh = dhT.reshape(HB)
    for t in range(T - 1, -1, -1):
        masked = t >= tmin
        if masked:
            save_h[:] = dhT
        dy = dYt[t].reshape(HB)
        for m in range(HB):
            g[m] = dh[m] + dy[m]
        gt = G[t].reshape(3 * HB)
        gz = gt[:HB]
        gr = gt[HB: 2 * HB]
        gh = gt[2 * HB:]
        hp = Hs[t].reshape(HB)
        rr = RH[t].reshape(HB)
        da = dA[t].reshape(3 * HB)
        daz = da[:HB]
        dar = da[HB: 2 * HB]
        dah = da[2 * HB:]
        for m in range(HB):
            z = gz[m]
            hh = gh[m]
            dah[m] = g[m] * (ONE - z) * (ONE - hh * hh)
        for m in range(HB):
            z = gz[m]
            daz[m] = g[m] * (hp[m] - gh[m]) * z * (ONE - z)
        for m in range(HB):
            r = gr[m]
            dar[m] = dah[m] * rr[m] * r * (ONE - r)
        for m in range(HB):
            dh[m] = g[m] * gz[m]  # the direct path
        if masked:
            _zero_cols(t, lengths, dA[t])
        drec = dRec[t].reshape(3 * HB)
        for m in range(2 * HB):
            drec[m] = da[m]
        drh = drec[2 * HB:]
        for m in range(HB):
            drh[m] = dah[m] * gr[m]
        gemm_rows(RT, dRec[t], back)  # (H, 3H) @ (3H, B)
        for m in range(HB):
            dh[m] += bk[m]
        if masked:
            _restore_cols(t, lengths, dhT, save_h)
        flush_tiny(dhT)
