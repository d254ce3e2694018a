"""Time-major jitted loops for one direction of RNN, GRU and LSTM: forward and BPTT.

Conventions (all arrays C-contiguous, one dtype per call):
- ``G`` (T, B, gates*H): the input projection X @ W.T for all steps, computed by one matrix
  product before the loop (in ``functional``). The biases are NOT in it: the kernels add
  ``bias`` (gates*H,) inside the loop, where it costs nothing (a separate pass over G would
  cost as much as the projection itself).
- ``lengths`` (B,) int64: steps t >= lengths[b] output zero and hold the state.
- Reverse directions are handled by ``functional`` by reversing each sequence's valid part
  before the call, so every kernel here runs forwards in time.
- With ``train`` the kernels keep what BPTT needs: gate outputs ``Gt``, states ``Hs``/``Cs``
  (T+1, B, H) with the initial state at index 0, and the gate pre-activations ``A`` only when
  the backward pass needs them (``needs_pre``: a clip, or an activation whose derivative is not
  a function of its output). Without ``train`` those buffers have a leading dimension of 1 and
  serve as scratch.
- Nothing is allocated inside the time loop; scratch buffers are made once per call.
- Weight gradients are NOT accumulated here: the backward kernels return the gate
  gradients ``dA`` (T, B, gates*H) and ``functional`` turns them into dW, dR, dWb, dRb with
  one matrix product each.

Speed notes (measured on a 2-core AVX-512 VM, float32; see benchmarks/):
- Batch 1: the recurrent product is a matrix-vector product ``matvec`` written as eight dot
  products at a time, walking the weight rows forwards on even steps and backwards on odd
  steps ("snake" order), so that the rows used last are still in L1 when the next step starts.
  At 64 units that beats a BLAS gemv call by ~15%.
- Several rows: BLAS through ``np.dot(h, R.T)`` (the transposed view is faster than a
  contiguous R.T copy with OpenBLAS here).
- The default float32 cells (sigmoid/tanh gates, no clip, no peepholes) have fused per-row
  loops (``*_row_fast``) that LLVM vectorises. Every loop writes to few arrays, or LLVM gives
  up vectorising because of the number of run-time alias checks; a loop never reads and
  writes different views of the same buffer at the same index (that fails the alias check at
  run time and falls back to scalar code).
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


@jit
def matmul(A, Wn, out, rev):
    """out (M, N) = A (M, K) @ Wn.T, Wn (N, K) C-contiguous.

    One row (batch 1, the streaming case): ``matvec`` (beats a BLAS call at these sizes).
    Several rows: BLAS through np.dot.
    """
    if A.shape[0] == 1:
        matvec(A[0], Wn, out[0], rev)
    else:
        np.dot(A, Wn.T, out)


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
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
def rnn_forward(G, bias, R, h0, lengths, code, alpha, beta, clip, train, Y, h, A, Hs):
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
        matmul(h, R, rec, t & 1)
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
def rnn_backward(RT, lengths, code, alpha, beta, clip, dY, dh, A, Gt, dA):
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
        matmul(dA[t], RT, rec, t & 1)  # (B, H) @ (H, H)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = rec[b, j]


# ----------------------------------------------------------------------------------------
# GRU (ONNX): z = f(Xz + H Rz + b), r = f(Xr + H Rr + b)
#   lbr=0: h~ = g(Xh + (r*H) Rh + Rbh + Wbh)      lbr=1: h~ = g(Xh + r*(H Rh + Rbh) + Wbh)
#   H_t = (1 - z) * h~ + z * H_{t-1}
# bias holds Wb + Rb for z, r; Wbh (+ Rbh when lbr=0) for h. RH keeps (H Rh + Rbh) for lbr=1,
# r*H for lbr=0 (zero on padded steps).
# ----------------------------------------------------------------------------------------
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
def gru_forward(G, bias, R, Rzr, Rh, Rbh, h0, lengths, codes, alphas, betas, clip, lbr, train,
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
            matmul(h, R, rec, t & 1)
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
                for j in range(2 * H):
                    a[j] = g[j] + r[j] + bias[j]
                src = a
                if clip > 0.0:
                    clamp_into(a[: 2 * H], tmp[: 2 * H], clip)
                    src = tmp
                act_vec(fc, src[: 2 * H], gt[: 2 * H], alphas[0], betas[0])
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
            matmul(h, Rzr, rec_zr, t & 1)
            for b in range(B):
                if t >= lengths[b]:
                    for j in range(H):
                        rh[b, j] = ZERO
                    continue
                gt = G[t, b]
                a = A[k, b] if need_a else pre
                g = G[t, b]
                r = rec_zr[b]
                for j in range(2 * H):
                    a[j] = g[j] + r[j] + bias[j]
                src = a
                if clip > 0.0:
                    clamp_into(a[: 2 * H], tmp[: 2 * H], clip)
                    src = tmp
                act_vec(fc, src[: 2 * H], gt[: 2 * H], alphas[0], betas[0])
                rhb = rh[b]
                hb = h[b]
                for j in range(H):
                    rhb[j] = gt[H + j] * hb[j]
            matmul(rh, Rh, rec_h, t & 1)
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
def gru_backward(RT, RzrT, RhT, lengths, codes, alphas, betas, clip, lbr, dY, dh, A, Gt, Hs, RH, dA, dRec):
    """Fills dA (T, B, 3H) (gradient of the gate pre-activations that meet X W^T) and
    dRec (T, B, 3H) (gradient of the recurrent products: H Rzr^T, and H Rh^T + Rbh or (r*H) Rh^T).
    Both are zeros on entry. RT (H, 3H), RzrT (H, 2H), RhT (H, H) are the transposed weights."""
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
                matmul(s_h, RhT, back_h, t & 1)  # (B, H) @ (H, H)
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
            matmul(dRec[t], RT, back, t & 1)  # (B, 3H) @ (3H, H)
            for b in range(B):
                if t < lengths[b]:
                    for j in range(H):
                        dh[b, j] = direct[b, j] + back[b, j]
        else:
            matmul(s_zr, RzrT, back_zr, t & 1)  # (B, 2H) @ (2H, H)
            for b in range(B):
                if t < lengths[b]:
                    for j in range(H):
                        dh[b, j] = direct[b, j] + back_zr[b, j]  # back_h * r is in direct


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
def lstm_forward(G, bias, R, P, h0, c0, lengths, codes, alphas, betas, clip, input_forget, peep, train,
                 Y, h, c, A, Hs, Cs, Hc):
    T, B, G4 = G.shape
    H = G4 // 4
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
        matmul(h, R, rec, t & 1)
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
def lstm_backward(RT, P, lengths, codes, alphas, betas, clip, input_forget, peep,
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
        matmul(dA[t], RT, rec, t & 1)  # (B, 4H) @ (4H, H)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = rec[b, j]


# ----------------------------------------------------------------------------------------
# Batch-minor kernels: batches of more than one sequence, default float32 cells
# (LSTM: fast sigmoid/tanh, no clip/peepholes/input_forget; GRU: the same with lbr=1).
#
# Layout: features x batch. The state is hT (H, B); the recurrent product is R (G*H, H) @ hT,
# which OpenBLAS computes 1.2-1.8x faster than h (B, H) @ R.T at B=32 (measured), and the
# element-wise work runs along the batch (contiguous), vectorised.
# - G (G*H, T*B): input projection W @ X^T, column t*B + b; overwritten in place with the
#   gate outputs (it is the ``Gt`` of the batch-major kernels).
# - Yt (T, H, B) output; Hs, Cs (H, (T+1)*B): states before each step, then the final one;
#   Hc (H, T*B): h(C_t); RH (H, T*B): H Rh^T + Rbh (GRU).
# - Padded steps: the columns of sequences that have ended are computed, then put back
#   (state held, output zero; in BPTT: gate gradients zero, dh/dc passed through).
# - Backward: dA (G*H, T*B) gate gradients (dRec for GRU), the layout that makes
#   dW = dA @ X, dR = dA @ Hs^T single matrix products.
# ----------------------------------------------------------------------------------------
@jit
def lstm_forward_bm(G, bias, R, hT, cT, lengths, train, Yt, Hs, Cs, Hc):
    """hT, cT (H, B) enter as the initial state and leave as the final one."""
    G4, TB = G.shape
    H = G4 // 4
    B = hT.shape[1]
    T = TB // B
    tmin = lengths.min()
    rec = np.empty((G4, B), G.dtype)
    save_h = np.empty((H, B), G.dtype)
    save_c = np.empty((H, B), G.dtype)
    hc_s = np.empty((1, B), G.dtype)
    for t in range(T):
        c0 = t * B
        if train:
            Hs[:, c0: c0 + B] = hT
            Cs[:, c0: c0 + B] = cT
        np.dot(R, hT, rec)  # (4H, B)
        masked = t >= tmin
        if masked:
            save_h[:] = hT
            save_c[:] = cT
        for n in range(3 * H):
            r = rec[n]
            g = G[n, c0: c0 + B]
            bn = bias[n]
            for b in range(B):
                g[b] = fast_sigmoid(g[b] + r[b] + bn)
        for n in range(3 * H, 4 * H):
            r = rec[n]
            g = G[n, c0: c0 + B]
            bn = bias[n]
            for b in range(B):
                g[b] = fast_tanh(g[b] + r[b] + bn)
        for j in range(H):
            gi = G[j, c0: c0 + B]
            gf = G[2 * H + j, c0: c0 + B]
            gc = G[3 * H + j, c0: c0 + B]
            cj = cT[j]
            for b in range(B):
                cj[b] = gf[b] * cj[b] + gi[b] * gc[b]
            go = G[H + j, c0: c0 + B]
            hj = hT[j]
            yj = Yt[t, j]
            # the same loop with and without train, so both give bit-identical outputs
            hcj = Hc[j, c0: c0 + B] if train else hc_s[0, 0:B]
            for b in range(B):
                v = fast_tanh(cj[b])
                hcj[b] = v
                hv = go[b] * v
                hj[b] = hv
                yj[b] = hv
        if masked:
            for b in range(B):
                if t >= lengths[b]:
                    for j in range(H):
                        hT[j, b] = save_h[j, b]
                        cT[j, b] = save_c[j, b]
                        Yt[t, j, b] = ZERO
    if train:
        Hs[:, T * B:] = hT
        Cs[:, T * B:] = cT


@jit
def lstm_backward_bm(RT, lengths, dYt, dhT, dcT, G, Cs, Hc, dA):
    """BPTT of ``lstm_forward_bm`` (G holds the gate outputs). dhT, dcT (H, B) enter as
    dL/dH_T, dL/dC_T and leave as dL/dH_0, dL/dC_0; fills every column of dA (4H, T*B)."""
    T, H, B = dYt.shape
    tmin = lengths.min()
    da = np.empty((4 * H, B), dYt.dtype)
    g = np.empty((H, B), dYt.dtype)
    save_h = np.empty((H, B), dYt.dtype)
    save_c = np.empty((H, B), dYt.dtype)
    for t in range(T - 1, -1, -1):
        c0 = t * B
        masked = t >= tmin
        if masked:
            save_h[:] = dhT
            save_c[:] = dcT
        for j in range(H):
            gj = g[j]
            dhj = dhT[j]
            dyj = dYt[t, j]
            for b in range(B):
                gj[b] = dhj[b] + dyj[b]
        for j in range(H):
            gj = g[j]
            go = G[H + j, c0: c0 + B]
            hcj = Hc[j, c0: c0 + B]
            dcj = dcT[j]
            dai = da[j]  # dL/dC_t parked here first
            dao = da[H + j]
            for b in range(B):
                o = go[b]
                v = hcj[b]
                dao[b] = gj[b] * v * o * (ONE - o)
                dai[b] = dcj[b] + gj[b] * o * (ONE - v * v)
            gi = G[j, c0: c0 + B]
            gf = G[2 * H + j, c0: c0 + B]
            gc = G[3 * H + j, c0: c0 + B]
            cp = Cs[j, c0: c0 + B]
            daf = da[2 * H + j]
            dac = da[3 * H + j]
            for b in range(B):
                dcn = dai[b]
                i = gi[b]
                f = gf[b]
                cc = gc[b]
                dai[b] = dcn * cc * i * (ONE - i)
                daf[b] = dcn * cp[b] * f * (ONE - f)
                dac[b] = dcn * i * (ONE - cc * cc)
                dcj[b] = dcn * f
        if masked:
            for b in range(B):
                if t >= lengths[b]:
                    for n in range(4 * H):
                        da[n, b] = ZERO
        np.dot(RT, da, dhT)  # (H, 4H) @ (4H, B)
        if masked:
            for b in range(B):
                if t >= lengths[b]:
                    for j in range(H):
                        dhT[j, b] = save_h[j, b]
                        dcT[j, b] = save_c[j, b]
        dA[:, c0: c0 + B] = da


@jit
def gru_forward_bm(G, bias, R, Rbh, hT, lengths, train, Yt, Hs, RH):
    """lbr=1. bias: Wb + Rb for z, r; Wbh for h. hT (H, B) enters as the initial state and
    leaves as the final one."""
    G3, TB = G.shape
    H = G3 // 3
    B = hT.shape[1]
    T = TB // B
    tmin = lengths.min()
    rec = np.empty((G3, B), G.dtype)
    save_h = np.empty((H, B), G.dtype)
    for t in range(T):
        c0 = t * B
        if train:
            Hs[:, c0: c0 + B] = hT
        np.dot(R, hT, rec)  # (3H, B)
        masked = t >= tmin
        if masked:
            save_h[:] = hT
        for n in range(2 * H):
            r = rec[n]
            g = G[n, c0: c0 + B]
            bn = bias[n]
            for b in range(B):
                g[b] = fast_sigmoid(g[b] + r[b] + bn)
        for j in range(H):
            rh = rec[2 * H + j]
            rbh = Rbh[j]
            if train:
                rhj = RH[j, c0: c0 + B]
                for b in range(B):
                    rhj[b] = rh[b] + rbh
            for b in range(B):
                rh[b] += rbh
            gr = G[H + j, c0: c0 + B]
            gh = G[2 * H + j, c0: c0 + B]
            bh = bias[2 * H + j]
            for b in range(B):
                gh[b] = fast_tanh(gh[b] + bh + gr[b] * rh[b])
            gz = G[j, c0: c0 + B]
            hj = hT[j]
            yj = Yt[t, j]
            for b in range(B):
                z = gz[b]
                hv = (ONE - z) * gh[b] + z * hj[b]
                hj[b] = hv
                yj[b] = hv
        if masked:
            for b in range(B):
                if t >= lengths[b]:
                    for j in range(H):
                        hT[j, b] = save_h[j, b]
                        Yt[t, j, b] = ZERO
    if train:
        Hs[:, T * B:] = hT


@jit
def gru_backward_bm(RT, lengths, dYt, dhT, G, Hs, RH, dA, dRec):
    """BPTT of ``gru_forward_bm``. dhT (H, B) enters as dL/dH_T and leaves as dL/dH_0; fills
    every column of dA and dRec (3H, T*B)."""
    T, H, B = dYt.shape
    tmin = lengths.min()
    da = np.empty((3 * H, B), dYt.dtype)
    drec = np.empty((3 * H, B), dYt.dtype)
    g = np.empty((H, B), dYt.dtype)
    back = np.empty((H, B), dYt.dtype)
    save_h = np.empty((H, B), dYt.dtype)
    for t in range(T - 1, -1, -1):
        c0 = t * B
        masked = t >= tmin
        if masked:
            save_h[:] = dhT
        for j in range(H):
            gj = g[j]
            dhj = dhT[j]
            dyj = dYt[t, j]
            for b in range(B):
                gj[b] = dhj[b] + dyj[b]
        for j in range(H):
            gj = g[j]
            gz = G[j, c0: c0 + B]
            gr = G[H + j, c0: c0 + B]
            gh = G[2 * H + j, c0: c0 + B]
            hp = Hs[j, c0: c0 + B]
            rr = RH[j, c0: c0 + B]
            daz = da[j]
            dar = da[H + j]
            dah = da[2 * H + j]
            for b in range(B):
                z = gz[b]
                r = gr[b]
                hh = gh[b]
                d = gj[b] * (ONE - z) * (ONE - hh * hh)
                dah[b] = d
                daz[b] = gj[b] * (hp[b] - hh) * z * (ONE - z)
                dar[b] = d * rr[b] * r * (ONE - r)
            rz = drec[j]
            rr_ = drec[H + j]
            rh = drec[2 * H + j]
            for b in range(B):
                rz[b] = daz[b]
                rr_[b] = dar[b]
                rh[b] = dah[b] * gr[b]
            dhj = dhT[j]
            for b in range(B):
                dhj[b] = gj[b] * gz[b]  # the direct path
        if masked:
            for b in range(B):
                if t >= lengths[b]:
                    for n in range(3 * H):
                        da[n, b] = ZERO
                        drec[n, b] = ZERO
                    for j in range(H):
                        dhT[j, b] = save_h[j, b]
        np.dot(RT, drec, back)  # (H, 3H) @ (3H, B)
        for j in range(H):
            dhj = dhT[j]
            bj = back[j]
            for b in range(B):
                dhj[b] += bj[b]
        dA[:, c0: c0 + B] = da
        dRec[:, c0: c0 + B] = drec
