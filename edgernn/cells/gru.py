"""GRU cell (ONNX ``GRU``, gates z, r, h; both ``linear_before_reset`` variants).

Everything specific to the cell: the batch-major forward and BPTT time loops (every option),
the fused kernels of the default float32 cell (any batch), the streaming step and the
packing of a layer for the streaming engine. The exporter writes a native ``GRU`` node.
"""

from __future__ import annotations

import numpy as np

from .._activations import FAST_SIGMOID, FAST_TANH, ONE, ZERO, act_vec, fast_tanh
from .._config import jit
from . import _sync
from ._ops import (
    F_LBR,
    F_RSEQ,
    H_VALID,
    M_BIAS,
    M_C0,
    M_C1,
    M_F,
    M_FLAGS,
    M_G,
    M_I,
    M_IN,
    M_O,
    M_OUT,
    M_OUTS,
    M_P,
    M_S,
    M_S2,
    M_T,
    M_W,
    act_span,
    back_rec16,
    clamp_into,
    clip_inplace,
    dact,
    dout,
    emit,
    fast_sigmoid,
    flush_tiny,
    matmul,
    mv_flat,
    mv_packed,
    out_deriv,
    pack_fused,
    vsigmoid,
    vtanh,
)
from ._simd import vadd, vfma, vload, vmul, vsplat, vstore, vsub, vzero
from .base import Cell, register


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
def gru_forward(G, bias, R, RT, Rp, Rzr, RzrT, Rh, RhT, Rbh, h0, lengths, codes, alphas, betas, clip, lbr, train,
                Y, h, A, Hs, RH):
    """Rp: R packed by ``_ops.pack_panels`` for batch 1 with lbr (``mv_packed``), or an empty
    array (then ``matmul`` with R / RT)."""
    T, B, G3 = G.shape
    H = G3 // 3
    h[:] = h0
    packed = lbr and B == 1 and Rp.shape[0] > 0
    recp = np.empty(Rp.shape[0] // H if packed else G3, G.dtype)  # batch 1, packed: (3H rounded up,)
    h_row = h[0]
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
            if packed:
                mv_packed(h_row, Rp, recp, t & 1)
            else:
                matmul(h, R, RT, rec, t & 1)
            for b in range(B):
                if t >= lengths[b]:
                    for j in range(H):
                        rh[b, j] = ZERO
                    continue
                gt = G[t, b]  # gate outputs replace the projection in place
                r = recp if packed else rec[b]
                if fast:
                    gru_row_fast(gt, r, bias, Rbh, rh[b], h[b], Y[t, b])
                    continue
                a = A[k, b] if need_a else pre
                g = G[t, b]
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
def gru_forward_fused(G, Rp, rbh, lengths, train, Y, ysb, yst, y0, h, hbuf, Hs, RH, Xt, Wp, bp, xin):
    """The default float32 GRU (fast sigmoid/tanh, lbr=1, no clip), any batch, one fused pass
    per step and block of 16 units (see ``lstm_forward_fused``); eight sequences at a time
    (24 accumulators), then one at a time.

    G (T, B, 3Hp): X W^T + (Wb + Rb for z, r; Wbh for h~) for all steps, unit-interleaved; with
    ``train`` the gate outputs (z, r, h~) replace it on the steps that are not padding. Rp: R
    (3H, H) packed by ``pack_gates16``; rbh (Hp,): Rbh. h (B, Hp): the initial state (zero past
    H) in, the final state out; hbuf (B, Hp) scratch. Y: h_t, zero on padded steps, for t <
    max(lengths), at Y.flat[y0 + b * ysb + t * yst + 16u:][:16] (see ``lstm_forward_fused``). With ``train``: Hs (T+1, B, Hp) the states before each step t <
    max(lengths), RH (T, B, Hp) H Rh^T + Rbh (zero on padded steps).

    With ``xin`` the input projection is done here (as in ``lstm_forward_fused``): the z and r
    sums start from the bias ``bp`` (3Hp,) and take x_t W^T (Xt (T, B, I), W packed by
    ``pack_gates16`` in Wp) in the same registers; the h~ gate's input part (which r does not
    multiply) is summed first, eight sequences at a time, into a small L1 buffer. G is then
    written only with ``train``. Without ``xin`` Xt, Wp, bp are not read. T and B are Xt's.
    """
    T, B, I = Xt.shape
    N = G.shape[2]
    Hp = h.shape[1]
    K = Rp.shape[0] // N  # = H
    K2 = K - (K & 1)
    KP = K * 16
    KPx = I * 16  # one panel of Wp
    nu = Hp // 16
    acc = np.empty(8 * 48, G.dtype)
    xh = np.empty(8 * 16, G.dtype)  # with xin: x_t W_h^T + Wbh of the group's sequences
    Gf = G.reshape(G.size)  # (T, B, N), or (1, 1, N) when neither read (xin) nor written (train)
    Lmax = lengths.max() if B > 0 else 0
    for t in range(Lmax):
        odd = t & 1
        src = hbuf if odd else h
        dst = h if odd else hbuf
        if train:
            Hs[t] = src
        for i in range(nu):
            u = nu - 1 - i if odd else i
            wb = u * 3 * KP
            wbx = u * 3 * KPx
            cu = u * 16
            rb = vload(rbh, cu)
            b0 = 0
            while b0 < B:
                g0 = (t * B + b0) * N + u * 48
                if xin:  # the sums start from the bias, the same for every sequence
                    s0 = bp
                    o0 = u * 48
                    sN = 0
                else:  # from the projection in G
                    s0 = Gf
                    o0 = g0
                    sN = N
                if b0 + 8 <= B:  # eight sequences: 24 accumulators
                    if xin:  # the h~ gate's input part first (r does not multiply it), into xh
                        v0h = vload(bp, o0 + 32)
                        v1h = v0h
                        v2h = v0h
                        v3h = v0h
                        v4h = v0h
                        v5h = v0h
                        v6h = v0h
                        v7h = v0h
                        for k in range(I):
                            wh = vload(Wp, wbx + 2 * KPx + k * 16)
                            v0h = vfma(vsplat(Xt[t, b0, k]), wh, v0h)
                            v1h = vfma(vsplat(Xt[t, b0 + 1, k]), wh, v1h)
                            v2h = vfma(vsplat(Xt[t, b0 + 2, k]), wh, v2h)
                            v3h = vfma(vsplat(Xt[t, b0 + 3, k]), wh, v3h)
                            v4h = vfma(vsplat(Xt[t, b0 + 4, k]), wh, v4h)
                            v5h = vfma(vsplat(Xt[t, b0 + 5, k]), wh, v5h)
                            v6h = vfma(vsplat(Xt[t, b0 + 6, k]), wh, v6h)
                            v7h = vfma(vsplat(Xt[t, b0 + 7, k]), wh, v7h)
                        vstore(xh, 0, v0h)
                        vstore(xh, 16, v1h)
                        vstore(xh, 32, v2h)
                        vstore(xh, 48, v3h)
                        vstore(xh, 64, v4h)
                        vstore(xh, 80, v5h)
                        vstore(xh, 96, v6h)
                        vstore(xh, 112, v7h)
                    v0z = vload(s0, o0)
                    v0r = vload(s0, o0 + 16)
                    v0h = rb
                    v1z = vload(s0, o0 + 1 * sN)
                    v1r = vload(s0, o0 + 1 * sN + 16)
                    v1h = rb
                    v2z = vload(s0, o0 + 2 * sN)
                    v2r = vload(s0, o0 + 2 * sN + 16)
                    v2h = rb
                    v3z = vload(s0, o0 + 3 * sN)
                    v3r = vload(s0, o0 + 3 * sN + 16)
                    v3h = rb
                    v4z = vload(s0, o0 + 4 * sN)
                    v4r = vload(s0, o0 + 4 * sN + 16)
                    v4h = rb
                    v5z = vload(s0, o0 + 5 * sN)
                    v5r = vload(s0, o0 + 5 * sN + 16)
                    v5h = rb
                    v6z = vload(s0, o0 + 6 * sN)
                    v6r = vload(s0, o0 + 6 * sN + 16)
                    v6h = rb
                    v7z = vload(s0, o0 + 7 * sN)
                    v7r = vload(s0, o0 + 7 * sN + 16)
                    v7h = rb
                    if xin:
                        for k in range(I):
                            p = wbx + k * 16
                            wz = vload(Wp, p)
                            wr = vload(Wp, p + KPx)
                            x = vsplat(Xt[t, b0, k])
                            v0z = vfma(x, wz, v0z)
                            v0r = vfma(x, wr, v0r)
                            x = vsplat(Xt[t, b0 + 1, k])
                            v1z = vfma(x, wz, v1z)
                            v1r = vfma(x, wr, v1r)
                            x = vsplat(Xt[t, b0 + 2, k])
                            v2z = vfma(x, wz, v2z)
                            v2r = vfma(x, wr, v2r)
                            x = vsplat(Xt[t, b0 + 3, k])
                            v3z = vfma(x, wz, v3z)
                            v3r = vfma(x, wr, v3r)
                            x = vsplat(Xt[t, b0 + 4, k])
                            v4z = vfma(x, wz, v4z)
                            v4r = vfma(x, wr, v4r)
                            x = vsplat(Xt[t, b0 + 5, k])
                            v5z = vfma(x, wz, v5z)
                            v5r = vfma(x, wr, v5r)
                            x = vsplat(Xt[t, b0 + 6, k])
                            v6z = vfma(x, wz, v6z)
                            v6r = vfma(x, wr, v6r)
                            x = vsplat(Xt[t, b0 + 7, k])
                            v7z = vfma(x, wz, v7z)
                            v7r = vfma(x, wr, v7r)
                    for k in range(K):
                        p = wb + k * 16
                        wz = vload(Rp, p)
                        wr = vload(Rp, p + KP)
                        wh = vload(Rp, p + 2 * KP)
                        x = vsplat(src[b0, k])
                        v0z = vfma(x, wz, v0z)
                        v0r = vfma(x, wr, v0r)
                        v0h = vfma(x, wh, v0h)
                        x = vsplat(src[b0 + 1, k])
                        v1z = vfma(x, wz, v1z)
                        v1r = vfma(x, wr, v1r)
                        v1h = vfma(x, wh, v1h)
                        x = vsplat(src[b0 + 2, k])
                        v2z = vfma(x, wz, v2z)
                        v2r = vfma(x, wr, v2r)
                        v2h = vfma(x, wh, v2h)
                        x = vsplat(src[b0 + 3, k])
                        v3z = vfma(x, wz, v3z)
                        v3r = vfma(x, wr, v3r)
                        v3h = vfma(x, wh, v3h)
                        x = vsplat(src[b0 + 4, k])
                        v4z = vfma(x, wz, v4z)
                        v4r = vfma(x, wr, v4r)
                        v4h = vfma(x, wh, v4h)
                        x = vsplat(src[b0 + 5, k])
                        v5z = vfma(x, wz, v5z)
                        v5r = vfma(x, wr, v5r)
                        v5h = vfma(x, wh, v5h)
                        x = vsplat(src[b0 + 6, k])
                        v6z = vfma(x, wz, v6z)
                        v6r = vfma(x, wr, v6r)
                        v6h = vfma(x, wh, v6h)
                        x = vsplat(src[b0 + 7, k])
                        v7z = vfma(x, wz, v7z)
                        v7r = vfma(x, wr, v7r)
                        v7h = vfma(x, wh, v7h)
                    vstore(acc, 0, v0z)
                    vstore(acc, 16, v0r)
                    vstore(acc, 32, v0h)
                    vstore(acc, 48, v1z)
                    vstore(acc, 64, v1r)
                    vstore(acc, 80, v1h)
                    vstore(acc, 96, v2z)
                    vstore(acc, 112, v2r)
                    vstore(acc, 128, v2h)
                    vstore(acc, 144, v3z)
                    vstore(acc, 160, v3r)
                    vstore(acc, 176, v3h)
                    vstore(acc, 192, v4z)
                    vstore(acc, 208, v4r)
                    vstore(acc, 224, v4h)
                    vstore(acc, 240, v5z)
                    vstore(acc, 256, v5r)
                    vstore(acc, 272, v5h)
                    vstore(acc, 288, v6z)
                    vstore(acc, 304, v6r)
                    vstore(acc, 320, v6h)
                    vstore(acc, 336, v7z)
                    vstore(acc, 352, v7r)
                    vstore(acc, 368, v7h)
                    nb = 8
                else:  # one sequence, two k at a time
                    az = vload(s0, o0)
                    ar = vload(s0, o0 + 16)
                    ah = rb
                    bz = vzero(G)
                    br = vzero(G)
                    bh = vzero(G)
                    if xin:
                        xa_h = vload(bp, o0 + 32)
                        for k in range(I):
                            xa = vsplat(Xt[t, b0, k])
                            p = wbx + k * 16
                            az = vfma(xa, vload(Wp, p), az)
                            ar = vfma(xa, vload(Wp, p + KPx), ar)
                            xa_h = vfma(xa, vload(Wp, p + 2 * KPx), xa_h)
                        vstore(xh, 0, xa_h)
                    for k in range(0, K2, 2):
                        xa = vsplat(src[b0, k])
                        xb = vsplat(src[b0, k + 1])
                        p = wb + k * 16
                        az = vfma(xa, vload(Rp, p), az)
                        ar = vfma(xa, vload(Rp, p + KP), ar)
                        ah = vfma(xa, vload(Rp, p + 2 * KP), ah)
                        bz = vfma(xb, vload(Rp, p + 16), bz)
                        br = vfma(xb, vload(Rp, p + KP + 16), br)
                        bh = vfma(xb, vload(Rp, p + 2 * KP + 16), bh)
                    if K2 < K:
                        xa = vsplat(src[b0, K2])
                        p = wb + K2 * 16
                        az = vfma(xa, vload(Rp, p), az)
                        ar = vfma(xa, vload(Rp, p + KP), ar)
                        ah = vfma(xa, vload(Rp, p + 2 * KP), ah)
                    vstore(acc, 0, vadd(az, bz))
                    vstore(acc, 16, vadd(ar, br))
                    vstore(acc, 32, vadd(ah, bh))
                    nb = 1
                for j in range(nb):
                    b = b0 + j
                    sb = b * Hp + cu
                    yb = y0 + b * ysb + t * yst + cu
                    hb = (t * B + b) * Hp + cu
                    if t < lengths[b]:
                        q = j * 48
                        gb = g0 + j * N
                        rh = vload(acc, q + 32)
                        gz = vsigmoid(vload(acc, q))
                        gr = vsigmoid(vload(acc, q + 16))
                        hx = vload(xh, j * 16) if xin else vload(G, gb + 32)
                        hh = vtanh(vfma(gr, rh, hx))
                        hn = vfma(gz, vsub(vload(src, sb), hh), hh)  # (1 - z) h~ + z h
                        vstore(dst, sb, hn)
                        vstore(Y, yb, hn)
                        if train:
                            vstore(G, gb, gz)
                            vstore(G, gb + 16, gr)
                            vstore(G, gb + 32, hh)
                            vstore(RH, hb, rh)
                    else:  # padded step: hold the state, output zeros
                        vstore(dst, sb, vload(src, sb))
                        vstore(Y, yb, vzero(Y))
                        if train:
                            vstore(RH, hb, vzero(RH))
                b0 += nb
    if Lmax & 1:
        h[:] = hbuf



@jit
def gru_seq_split(w, n, sync, X2, Wp, bp, G2, m0, m1, Rp, rbh, Y, yst, y0, h, hbuf, u0, u1, resume):
    """Thread ``w`` of ``n`` running ONE sequence of ``gru_forward_fused`` (inference, batch 1)
    together, in lockstep: ``lstm.lstm_seq_split`` for the GRU (same arguments, plus rbh (Hp,)
    = Rbh; no c). The same bits as ``gru_forward_fused``; returns 0 done, -1 aborted, or the
    phase p >= 2 to resume at after yielding the core."""
    if resume == 0:
        if not _sync.begin(w, n, sync, X2, Wp, bp, G2, m0, m1):
            return -1
        resume = 2
    T, N = G2.shape
    Gf = G2.reshape(G2.size)
    K = Rp.shape[0] // N  # = H
    K2 = K - (K & 1)
    KP = K * 16
    nm = u1 - u0
    for t in range(resume - 2, T + 1):  # phase t + 2: step t - 1 done by every thread
        r = _sync.wait(sync, n, t + 2)
        if r != 1:
            return -1 if r == 0 else t + 2
        if t == T:
            break
        odd = t & 1
        src = hbuf if odd else h
        dst = h if odd else hbuf
        for i in range(nm):
            u = u0 + (nm - 1 - i if odd else i)  # snake order, as gru_forward_fused
            wb = u * 3 * KP
            cu = u * 16
            o0 = t * N + u * 48
            az = vload(Gf, o0)
            ar = vload(Gf, o0 + 16)
            ah = vload(rbh, cu)
            bz = vzero(G2)
            br = vzero(G2)
            bh = vzero(G2)
            for k in range(0, K2, 2):
                xa = vsplat(src[0, k])
                xb = vsplat(src[0, k + 1])
                p = wb + k * 16
                az = vfma(xa, vload(Rp, p), az)
                ar = vfma(xa, vload(Rp, p + KP), ar)
                ah = vfma(xa, vload(Rp, p + 2 * KP), ah)
                bz = vfma(xb, vload(Rp, p + 16), bz)
                br = vfma(xb, vload(Rp, p + KP + 16), br)
                bh = vfma(xb, vload(Rp, p + 2 * KP + 16), bh)
            if K2 < K:
                xa = vsplat(src[0, K2])
                p = wb + K2 * 16
                az = vfma(xa, vload(Rp, p), az)
                ar = vfma(xa, vload(Rp, p + KP), ar)
                ah = vfma(xa, vload(Rp, p + 2 * KP), ah)
            gz = vsigmoid(vadd(az, bz))
            gr = vsigmoid(vadd(ar, br))
            hh = vtanh(vfma(gr, vadd(ah, bh), vload(Gf, o0 + 32)))
            hn = vfma(gz, vsub(vload(src, cu), hh), hh)  # (1 - z) h~ + z h
            vstore(dst, cu, hn)
            vstore(Y, y0 + t * yst + cu, hn)
        _sync.signal(sync, w, t + 3)
    return 0


@jit
def gru_backward_fused(Rb, lengths, dY, dh, G, Hs, RH, dA, dRec):
    """BPTT of ``gru_forward_fused``, reading the layouts it saved (no unpacking).

    Per step, from the last: the gate gradients of every sequence and block of 16 units in
    vector registers (g = dh + dY; dA for z, r, h~; the direct path g z kept in dh), then
    dh_{t-1} = g z + dRec_t R (``_ops.back_rec16``), where dRec is dA with the h~ part
    multiplied by r (what reaches Rh h + Rbh).

    Rb (Hp/16, N, 16): R packed by ``_ops.pack_back16``. dY (T, B, Hp): dL/dh_t from above
    (zero past H). dh (B, Hp) enters as dL/dh_T and leaves as dL/dh_0 (held on a sequence's
    padded steps, |x| < 1e-30 flushed to zero after every step, as ``gru_backward`` does). G (T, B, N) the
    gate outputs, Hs (T+1, B, Hp) h_{t-1} at t, RH (T, B, Hp) Rh h_{t-1} + Rbh. dA, dRec
    (T, B, N) out, zeros on entry (padded steps are not written).
    """
    T, B, N = G.shape
    Hp = dh.shape[1]
    nu = Hp // 16
    Lmax = lengths.max() if B > 0 else 0
    one = vsplat(G.dtype.type(1.0))
    for t in range(Lmax - 1, -1, -1):
        for b in range(B):
            ga = (t * B + b) * N
            if t >= lengths[b]:
                continue
            for u in range(nu):
                s = b * Hp + u * 16
                q = (t * B + b) * Hp + u * 16
                g0 = ga + u * 48
                g = vadd(vload(dh, s), vload(dY, q))
                gz = vload(G, g0)
                gr = vload(G, g0 + 16)
                hh = vload(G, g0 + 32)
                dah = vmul(vmul(g, vsub(one, gz)), vsub(one, vmul(hh, hh)))
                daz = vmul(vmul(g, vsub(vload(Hs, q), hh)), vmul(gz, vsub(one, gz)))
                dar = vmul(vmul(dah, vload(RH, q)), vmul(gr, vsub(one, gr)))
                vstore(dh, s, vmul(g, gz))  # the direct path; back_rec16 adds the rest
                vstore(dA, g0, daz)
                vstore(dA, g0 + 16, dar)
                vstore(dA, g0 + 32, dah)
                vstore(dRec, g0, daz)
                vstore(dRec, g0 + 16, dar)
                vstore(dRec, g0 + 32, vmul(dah, gr))
        back_rec16(Rb, lengths, t, dRec, dh, True)  # dh_{t-1} = g z + dRec_t R


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
# streaming step (see edgernn/streaming.py)
# ----------------------------------------------------------------------------------------
@jit
def stream_step(meta, li, Wf, buf, B, rev):
    m = meta[li]
    I, H = m[M_I], m[M_O]
    ld = I + H
    G = 3 * H
    fp = m[M_F]
    clip = Wf[fp + 6]
    flags = m[M_FLAGS]
    lbr = (flags & F_LBR) != 0
    rseq = (flags & F_RSEQ) != 0
    xh, g, out, outs, vo = m[M_IN], m[M_G], m[M_OUT], m[M_OUTS], meta[0, H_VALID]
    rec, rh, gt, w = m[M_S], m[M_S2], m[M_T], m[M_W]
    fc, gc = m[M_C0], m[M_C1]
    fast = lbr and fc == FAST_SIGMOID and gc == FAST_TANH and clip == 0.0
    bv = Wf[m[M_BIAS]: m[M_BIAS] + G]
    run = B > 1 or buf[vo] != 0.0
    if run:
        # z, r rows: x W^T + h R^T in one pass; h rows: the x part (and h Rh^T when lbr)
        mv_flat(Wf, w, ld, ld, 2 * H, buf, xh, ld, B, buf, g, G, rev)
        mv_flat(Wf, w + 2 * H * ld, ld, I, H, buf, xh, ld, B, buf, g + 2 * H, G, rev)
        if lbr:
            mv_flat(Wf, w + 2 * H * ld + I, ld, H, H, buf, xh + I, ld, B, buf, rec, H, rev)
    Rbh = Wf[m[M_P]: m[M_P] + H] if lbr else bv
    for b in range(B):
        if buf[vo + b] == 0.0:
            continue
        a = buf[g + b * G: g + b * G + G]
        gb = buf[gt + b * G: gt + b * G + G]
        h = buf[xh + b * ld + I: xh + b * ld + ld]
        if fast:
            rb = buf[rec + b * H: rec + b * H + H]
            for j in range(2 * H):
                gb[j] = fast_sigmoid(a[j] + bv[j])
            for j in range(H):
                hh = fast_tanh(a[2 * H + j] + bv[2 * H + j] + gb[H + j] * (rb[j] + Rbh[j]))
                z = gb[j]
                h[j] = (1.0 - z) * hh + z * h[j]
            continue
        for j in range(2 * H):
            a[j] += bv[j]
        if clip > 0.0:
            clip_inplace(a[: 2 * H], clip)
        act_span(fc, buf, g + b * G, buf, gt + b * G, 2 * H, Wf[fp], Wf[fp + 3])
        if not lbr:
            rhb = buf[rh + b * H: rh + b * H + H]
            for j in range(H):
                rhb[j] = gb[H + j] * h[j]
    if run and not lbr:  # (r * h) Rh^T
        mv_flat(Wf, w + 2 * H * ld + I, ld, H, H, buf, rh, H, B, buf, rec, H, rev)
    for b in range(B):
        h = buf[xh + b * ld + I: xh + b * ld + ld]
        valid = buf[vo + b] != 0.0
        if valid and not fast:
            c = buf[g + b * G + 2 * H: g + b * G + G]
            gb = buf[gt + b * G: gt + b * G + G]
            rb = buf[rec + b * H: rec + b * H + H]
            if lbr:
                for j in range(H):
                    c[j] += bv[2 * H + j] + gb[H + j] * (rb[j] + Rbh[j])
            else:
                for j in range(H):
                    c[j] += bv[2 * H + j] + rb[j]
            if clip > 0.0:
                clip_inplace(c, clip)
            act_span(gc, buf, g + b * G + 2 * H, buf, gt + b * G + 2 * H, H, Wf[fp + 1], Wf[fp + 4])
            for j in range(H):
                z = gb[j]
                h[j] = (1.0 - z) * gb[2 * H + j] + z * h[j]
        emit(valid, h, buf[out + b * outs: out + b * outs + H], rseq)


def stream_pack(layer, pk, B, dtype):
    """Pack ``layer`` for the streaming engine: (meta dict, states as (offset, stride, width))."""
    m, w = pack_fused(CELL, layer, pk, B, dtype, STREAM_OP)
    H = m["O"]
    bias = w["Wb"] + w["Rb"]
    if layer.linear_before_reset:
        m["FLAGS"] |= F_LBR
        bias[2 * H:] = w["Wb"][2 * H:]
        m["P"] = pk.add_w(w["Rb"][2 * H:])  # Rbh sits inside r * (.)
    m["BIAS"] = pk.add_w(bias)
    m["S"] = pk.add_buf(B * H)  # recurrent product of the h gate
    m["S2"] = pk.add_buf(B * H)  # r * h
    m["T"] = pk.add_buf(B * 3 * H)  # gate activations
    return m, [(m["H"], m["INS"], H)]


STREAM_OP = 2
CELL = register(Cell("gru", gates=3, state_names=("h",), default_activations=("Sigmoid", "Tanh"), onnx_op="GRU",
                     stream_op=STREAM_OP, module=__name__, functional=("gru", "gru_backward"),
                     layers=("GRU",)))
