"""LSTM cell (ONNX ``LSTM``, gates i, o, f, c; peepholes, ``input_forget``, clip).

Everything specific to the cell: the batch-major forward and BPTT time loops (every option),
the fused kernels of the default float32 cell (any batch), the streaming step and the
packing of a layer for the streaming engine. The exporter writes a native ``LSTM`` node.
"""

from __future__ import annotations

import numpy as np

from .._activations import FAST_SIGMOID, FAST_TANH, ONE, act_vec, dact1, fast_tanh
from .._config import jit
from . import _sync
from ._ops import (
    F_INPUT_FORGET,
    F_PEEP,
    F_RSEQ,
    H_VALID,
    M_BIAS,
    M_C,
    M_C0,
    M_C1,
    M_C2,
    M_F,
    M_FLAGS,
    M_G,
    M_I,
    M_IN,
    M_O,
    M_OUT,
    M_OUTS,
    M_P,
    M_T,
    M_W,
    TINY32,
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
from ._simd import vadd, vfma, vload, vmul, vselect_gt, vsplat, vstore, vsub, vzero
from .base import Cell, register


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
def lstm_forward(G, bias, R, RT, Rp, P, h0, c0, lengths, codes, alphas, betas, clip, input_forget, peep, train,
                 Y, h, c, A, Hs, Cs, Hc):
    """Rp: R packed by ``_ops.pack_panels`` for batch 1 (``mv_packed``), or an empty array
    (then ``matmul`` with R / RT)."""
    T, B, G4 = G.shape
    H = R.shape[1]
    h[:] = h0
    c[:] = c0
    fc, gc, hcode = codes[0], codes[1], codes[2]
    fast = fc == FAST_SIGMOID and gc == FAST_TANH and hcode == FAST_TANH and clip == 0.0 and not peep \
        and not input_forget
    need_a = train and (clip > 0.0 or not (out_deriv(fc) and out_deriv(gc)))
    packed = B == 1 and Rp.shape[0] > 0
    rec = np.empty((B, G4), G.dtype)  # (B, 4H)
    recp = np.empty(Rp.shape[0] // H if packed else G4, G.dtype)  # batch 1, packed: (4H rounded up,)
    h_row = h[0]
    pre = np.empty(G4, G.dtype)
    tmp = np.empty(G4, G.dtype)
    for t in range(T):
        k = t if train else 0
        if train:
            Hs[t] = h
            Cs[t] = c
        if packed:
            mv_packed(h_row, Rp, recp, t & 1)
        else:
            matmul(h, R, RT, rec, t & 1)
        for b in range(B):
            if t >= lengths[b]:
                continue
            r = recp if packed else rec[b]
            if fast:  # gate outputs replace the projection in place
                lstm_row_fast(G[t, b], r, bias, c[b], Hc[k, b], h[b], Y[t, b])
            else:
                lstm_row(G[t, b], r, bias, P, A[k, b] if need_a else pre, tmp, G[t, b], c[b], Hc[k, b],
                         h[b], Y[t, b], fc, gc, hcode, alphas, betas, clip, input_forget, peep)
    if train:
        Hs[T] = h
        Cs[T] = c


@jit
def lstm_forward_fused(G, Rp, lengths, train, Y, ysb, yst, y0, h, c, hbuf, Hs, Cs, Hc, Xt, Wp, bp, xin):
    """The default float32 LSTM (fast sigmoid/tanh, no clip, peepholes or input_forget), any
    batch, one fused pass per step and block of 16 units (``_ops``: "fused kernels"): the block's
    64 gate rows of R @ h_{t-1} accumulate in vector registers on top of the projection, for six
    or four sequences at a time (24 or 16 accumulators: every weight loaded is used six or four
    times; the blocks are unrolled by hand), then one at a time; the gates, c_t and h_t follow from those sums (parked in an L1-resident buffer: a helper
    function taking the arrays would cost reference counting on every call).

    G (T, B, 4Hp): X W^T + Wb + Rb for all steps, unit-interleaved; with ``train`` the gate
    outputs (i, o, f, c~) replace it on the steps that are not padding. Rp: R (4H, H) packed by
    ``pack_gates16``. h, c (B, Hp): the initial state (zero past H) in, the final state out;
    hbuf (B, Hp) scratch (h_t alternates between h and hbuf). Y: h_t, zero on padded steps, for t <
    max(lengths) (the caller zeroes the rest): the 16 units from 16u of sequence b at step t go to
    Y.flat[y0 + b * ysb + t * yst + 16u:][:16] (a (T, B, Hp) scratch, or the caller's (B, T, D, H)
    output when H is a multiple of 16). With ``train``: Hs, Cs (T+1, B, Hp) the states before each
    step t < max(lengths), Hc (T, B, Hp) tanh(c_t). T and B are Xt's (T, B, I).

    With ``xin`` the input projection is done here instead, in the same registers (no G to write
    and read back): the sums start from the bias ``bp`` (4Hp,) and take x_t W^T from Xt (T, B, I)
    and W packed by ``pack_gates16`` in Wp, before R h_{t-1}; G is then written only with
    ``train`` (the gate outputs). Without ``xin`` (one sequence: ``project_panels`` does all
    steps at once better) Xt, Wp, bp are not read.
    """
    T, B, I = Xt.shape
    N = G.shape[2]
    Hp = h.shape[1]
    K = Rp.shape[0] // N  # = H
    K2 = K - (K & 1)
    KP = K * 16  # one panel
    KPx = I * 16  # one panel of Wp
    Gf = G.reshape(G.size)  # (T, B, N), or (1, 1, N) when neither read (xin) nor written (train)
    nu = Hp // 16
    acc = np.empty(6 * 64, G.dtype)
    Lmax = lengths.max() if B > 0 else 0
    for t in range(Lmax):
        odd = t & 1
        src = hbuf if odd else h
        dst = h if odd else hbuf
        if train:
            Hs[t] = src
            Cs[t] = c
        for i in range(nu):
            u = nu - 1 - i if odd else i  # snake order: the panels used last are still in cache
            wb = u * 4 * KP
            wbx = u * 4 * KPx
            cu = u * 16
            b0 = 0
            while b0 < B:
                g0 = (t * B + b0) * N + u * 64
                if xin:  # the sums start from the bias, the same for every sequence
                    s0 = bp
                    o0 = u * 64
                    sN = 0
                else:  # from the projection in G
                    s0 = Gf
                    o0 = g0
                    sN = N
                r = B - b0
                if r >= 6 and r != 8:  # 6 sequences: 24 accumulators
                    v00 = vload(s0, o0)
                    v01 = vload(s0, o0 + 16)
                    v02 = vload(s0, o0 + 32)
                    v03 = vload(s0, o0 + 48)
                    v10 = vload(s0, o0 + 1 * sN)
                    v11 = vload(s0, o0 + 1 * sN + 16)
                    v12 = vload(s0, o0 + 1 * sN + 32)
                    v13 = vload(s0, o0 + 1 * sN + 48)
                    v20 = vload(s0, o0 + 2 * sN)
                    v21 = vload(s0, o0 + 2 * sN + 16)
                    v22 = vload(s0, o0 + 2 * sN + 32)
                    v23 = vload(s0, o0 + 2 * sN + 48)
                    v30 = vload(s0, o0 + 3 * sN)
                    v31 = vload(s0, o0 + 3 * sN + 16)
                    v32 = vload(s0, o0 + 3 * sN + 32)
                    v33 = vload(s0, o0 + 3 * sN + 48)
                    v40 = vload(s0, o0 + 4 * sN)
                    v41 = vload(s0, o0 + 4 * sN + 16)
                    v42 = vload(s0, o0 + 4 * sN + 32)
                    v43 = vload(s0, o0 + 4 * sN + 48)
                    v50 = vload(s0, o0 + 5 * sN)
                    v51 = vload(s0, o0 + 5 * sN + 16)
                    v52 = vload(s0, o0 + 5 * sN + 32)
                    v53 = vload(s0, o0 + 5 * sN + 48)
                    if xin:
                        for k in range(I):
                            p = wbx + k * 16
                            w0 = vload(Wp, p)
                            w1 = vload(Wp, p + KPx)
                            w2 = vload(Wp, p + 2 * KPx)
                            w3 = vload(Wp, p + 3 * KPx)
                            x = vsplat(Xt[t, b0, k])
                            v00 = vfma(x, w0, v00)
                            v01 = vfma(x, w1, v01)
                            v02 = vfma(x, w2, v02)
                            v03 = vfma(x, w3, v03)
                            x = vsplat(Xt[t, b0 + 1, k])
                            v10 = vfma(x, w0, v10)
                            v11 = vfma(x, w1, v11)
                            v12 = vfma(x, w2, v12)
                            v13 = vfma(x, w3, v13)
                            x = vsplat(Xt[t, b0 + 2, k])
                            v20 = vfma(x, w0, v20)
                            v21 = vfma(x, w1, v21)
                            v22 = vfma(x, w2, v22)
                            v23 = vfma(x, w3, v23)
                            x = vsplat(Xt[t, b0 + 3, k])
                            v30 = vfma(x, w0, v30)
                            v31 = vfma(x, w1, v31)
                            v32 = vfma(x, w2, v32)
                            v33 = vfma(x, w3, v33)
                            x = vsplat(Xt[t, b0 + 4, k])
                            v40 = vfma(x, w0, v40)
                            v41 = vfma(x, w1, v41)
                            v42 = vfma(x, w2, v42)
                            v43 = vfma(x, w3, v43)
                            x = vsplat(Xt[t, b0 + 5, k])
                            v50 = vfma(x, w0, v50)
                            v51 = vfma(x, w1, v51)
                            v52 = vfma(x, w2, v52)
                            v53 = vfma(x, w3, v53)
                    for k in range(K):
                        p = wb + k * 16
                        w0 = vload(Rp, p)
                        w1 = vload(Rp, p + KP)
                        w2 = vload(Rp, p + 2 * KP)
                        w3 = vload(Rp, p + 3 * KP)
                        x = vsplat(src[b0, k])
                        v00 = vfma(x, w0, v00)
                        v01 = vfma(x, w1, v01)
                        v02 = vfma(x, w2, v02)
                        v03 = vfma(x, w3, v03)
                        x = vsplat(src[b0 + 1, k])
                        v10 = vfma(x, w0, v10)
                        v11 = vfma(x, w1, v11)
                        v12 = vfma(x, w2, v12)
                        v13 = vfma(x, w3, v13)
                        x = vsplat(src[b0 + 2, k])
                        v20 = vfma(x, w0, v20)
                        v21 = vfma(x, w1, v21)
                        v22 = vfma(x, w2, v22)
                        v23 = vfma(x, w3, v23)
                        x = vsplat(src[b0 + 3, k])
                        v30 = vfma(x, w0, v30)
                        v31 = vfma(x, w1, v31)
                        v32 = vfma(x, w2, v32)
                        v33 = vfma(x, w3, v33)
                        x = vsplat(src[b0 + 4, k])
                        v40 = vfma(x, w0, v40)
                        v41 = vfma(x, w1, v41)
                        v42 = vfma(x, w2, v42)
                        v43 = vfma(x, w3, v43)
                        x = vsplat(src[b0 + 5, k])
                        v50 = vfma(x, w0, v50)
                        v51 = vfma(x, w1, v51)
                        v52 = vfma(x, w2, v52)
                        v53 = vfma(x, w3, v53)
                    vstore(acc, 0, v00)
                    vstore(acc, 16, v01)
                    vstore(acc, 32, v02)
                    vstore(acc, 48, v03)
                    vstore(acc, 64, v10)
                    vstore(acc, 80, v11)
                    vstore(acc, 96, v12)
                    vstore(acc, 112, v13)
                    vstore(acc, 128, v20)
                    vstore(acc, 144, v21)
                    vstore(acc, 160, v22)
                    vstore(acc, 176, v23)
                    vstore(acc, 192, v30)
                    vstore(acc, 208, v31)
                    vstore(acc, 224, v32)
                    vstore(acc, 240, v33)
                    vstore(acc, 256, v40)
                    vstore(acc, 272, v41)
                    vstore(acc, 288, v42)
                    vstore(acc, 304, v43)
                    vstore(acc, 320, v50)
                    vstore(acc, 336, v51)
                    vstore(acc, 352, v52)
                    vstore(acc, 368, v53)
                    nb = 6
                elif r >= 4:  # 4 sequences: 16 accumulators
                    v00 = vload(s0, o0)
                    v01 = vload(s0, o0 + 16)
                    v02 = vload(s0, o0 + 32)
                    v03 = vload(s0, o0 + 48)
                    v10 = vload(s0, o0 + 1 * sN)
                    v11 = vload(s0, o0 + 1 * sN + 16)
                    v12 = vload(s0, o0 + 1 * sN + 32)
                    v13 = vload(s0, o0 + 1 * sN + 48)
                    v20 = vload(s0, o0 + 2 * sN)
                    v21 = vload(s0, o0 + 2 * sN + 16)
                    v22 = vload(s0, o0 + 2 * sN + 32)
                    v23 = vload(s0, o0 + 2 * sN + 48)
                    v30 = vload(s0, o0 + 3 * sN)
                    v31 = vload(s0, o0 + 3 * sN + 16)
                    v32 = vload(s0, o0 + 3 * sN + 32)
                    v33 = vload(s0, o0 + 3 * sN + 48)
                    if xin:
                        for k in range(I):
                            p = wbx + k * 16
                            w0 = vload(Wp, p)
                            w1 = vload(Wp, p + KPx)
                            w2 = vload(Wp, p + 2 * KPx)
                            w3 = vload(Wp, p + 3 * KPx)
                            x = vsplat(Xt[t, b0, k])
                            v00 = vfma(x, w0, v00)
                            v01 = vfma(x, w1, v01)
                            v02 = vfma(x, w2, v02)
                            v03 = vfma(x, w3, v03)
                            x = vsplat(Xt[t, b0 + 1, k])
                            v10 = vfma(x, w0, v10)
                            v11 = vfma(x, w1, v11)
                            v12 = vfma(x, w2, v12)
                            v13 = vfma(x, w3, v13)
                            x = vsplat(Xt[t, b0 + 2, k])
                            v20 = vfma(x, w0, v20)
                            v21 = vfma(x, w1, v21)
                            v22 = vfma(x, w2, v22)
                            v23 = vfma(x, w3, v23)
                            x = vsplat(Xt[t, b0 + 3, k])
                            v30 = vfma(x, w0, v30)
                            v31 = vfma(x, w1, v31)
                            v32 = vfma(x, w2, v32)
                            v33 = vfma(x, w3, v33)
                    for k in range(K):
                        p = wb + k * 16
                        w0 = vload(Rp, p)
                        w1 = vload(Rp, p + KP)
                        w2 = vload(Rp, p + 2 * KP)
                        w3 = vload(Rp, p + 3 * KP)
                        x = vsplat(src[b0, k])
                        v00 = vfma(x, w0, v00)
                        v01 = vfma(x, w1, v01)
                        v02 = vfma(x, w2, v02)
                        v03 = vfma(x, w3, v03)
                        x = vsplat(src[b0 + 1, k])
                        v10 = vfma(x, w0, v10)
                        v11 = vfma(x, w1, v11)
                        v12 = vfma(x, w2, v12)
                        v13 = vfma(x, w3, v13)
                        x = vsplat(src[b0 + 2, k])
                        v20 = vfma(x, w0, v20)
                        v21 = vfma(x, w1, v21)
                        v22 = vfma(x, w2, v22)
                        v23 = vfma(x, w3, v23)
                        x = vsplat(src[b0 + 3, k])
                        v30 = vfma(x, w0, v30)
                        v31 = vfma(x, w1, v31)
                        v32 = vfma(x, w2, v32)
                        v33 = vfma(x, w3, v33)
                    vstore(acc, 0, v00)
                    vstore(acc, 16, v01)
                    vstore(acc, 32, v02)
                    vstore(acc, 48, v03)
                    vstore(acc, 64, v10)
                    vstore(acc, 80, v11)
                    vstore(acc, 96, v12)
                    vstore(acc, 112, v13)
                    vstore(acc, 128, v20)
                    vstore(acc, 144, v21)
                    vstore(acc, 160, v22)
                    vstore(acc, 176, v23)
                    vstore(acc, 192, v30)
                    vstore(acc, 208, v31)
                    vstore(acc, 224, v32)
                    vstore(acc, 240, v33)
                    nb = 4
                else:  # one sequence: two k at a time into two sets of accumulators (FMA latency)
                    a0 = vload(s0, o0)
                    a1 = vload(s0, o0 + 16)
                    a2 = vload(s0, o0 + 32)
                    a3 = vload(s0, o0 + 48)
                    b0_ = vzero(G)
                    b1 = vzero(G)
                    b2 = vzero(G)
                    b3 = vzero(G)
                    if xin:
                        for k in range(I):
                            xa = vsplat(Xt[t, b0, k])
                            p = wbx + k * 16
                            a0 = vfma(xa, vload(Wp, p), a0)
                            a1 = vfma(xa, vload(Wp, p + KPx), a1)
                            a2 = vfma(xa, vload(Wp, p + 2 * KPx), a2)
                            a3 = vfma(xa, vload(Wp, p + 3 * KPx), a3)
                    for k in range(0, K2, 2):
                        xa = vsplat(src[b0, k])
                        xb = vsplat(src[b0, k + 1])
                        p = wb + k * 16
                        a0 = vfma(xa, vload(Rp, p), a0)
                        a1 = vfma(xa, vload(Rp, p + KP), a1)
                        a2 = vfma(xa, vload(Rp, p + 2 * KP), a2)
                        a3 = vfma(xa, vload(Rp, p + 3 * KP), a3)
                        b0_ = vfma(xb, vload(Rp, p + 16), b0_)
                        b1 = vfma(xb, vload(Rp, p + KP + 16), b1)
                        b2 = vfma(xb, vload(Rp, p + 2 * KP + 16), b2)
                        b3 = vfma(xb, vload(Rp, p + 3 * KP + 16), b3)
                    if K2 < K:
                        xa = vsplat(src[b0, K2])
                        p = wb + K2 * 16
                        a0 = vfma(xa, vload(Rp, p), a0)
                        a1 = vfma(xa, vload(Rp, p + KP), a1)
                        a2 = vfma(xa, vload(Rp, p + 2 * KP), a2)
                        a3 = vfma(xa, vload(Rp, p + 3 * KP), a3)
                    vstore(acc, 0, vadd(a0, b0_))
                    vstore(acc, 16, vadd(a1, b1))
                    vstore(acc, 32, vadd(a2, b2))
                    vstore(acc, 48, vadd(a3, b3))
                    nb = 1
                for j in range(nb):
                    b = b0 + j
                    sb = b * Hp + cu
                    yb = y0 + b * ysb + t * yst + cu
                    hb = (t * B + b) * Hp + cu
                    if t < lengths[b]:
                        q = j * 64
                        gi = vsigmoid(vload(acc, q))
                        go = vsigmoid(vload(acc, q + 16))
                        gf = vsigmoid(vload(acc, q + 32))
                        gc = vtanh(vload(acc, q + 48))
                        cn = vfma(gf, vload(c, sb), vmul(gi, gc))
                        hc = vtanh(cn)
                        hn = vmul(go, hc)
                        vstore(c, sb, cn)
                        vstore(dst, sb, hn)
                        vstore(Y, yb, hn)
                        if train:
                            gb = g0 + j * N
                            vstore(G, gb, gi)
                            vstore(G, gb + 16, go)
                            vstore(G, gb + 32, gf)
                            vstore(G, gb + 48, gc)
                            vstore(Hc, hb, hc)
                    else:  # padded step: hold the state, output zeros
                        vstore(dst, sb, vload(src, sb))
                        vstore(Y, yb, vzero(Y))
                b0 += nb
    if Lmax & 1:
        h[:] = hbuf


@jit
def lstm_seq_split(w, n, sync, X2, Wp, bp, G2, m0, m1, Rp, Y, yst, y0, h, c, hbuf, u0, u1, resume):
    """Thread ``w`` of ``n`` running ONE sequence of ``lstm_forward_fused`` (inference, batch 1)
    together, in lockstep (``_sync``: a barrier per step): this thread projects the steps
    m0:m1 of X2 (T, I) into G2 (T, N) (``project_panels``: all steps' projections are in place
    before the first step), then computes the units of the panels u0:u1 at every step: their
    gate sums (the same order of operations as ``lstm_forward_fused``, so the same bits), c_t
    and h_t (into h / hbuf, alternating; every thread reads all of h_{t-1}) and Y. Y, yst, y0:
    as in ``lstm_forward_fused`` at batch 1.

    ``resume``: 0 to start, else the phase returned by the previous call. Returns 0 when the
    sequence is done, -1 if the run was aborted (the caller, thread 0, gave up waiting for a
    thread to start: it runs the sequence alone), or p >= 2: waited too long for phase p (the
    thread yields its core in Python and calls again with ``resume=p``).
    """
    if resume == 0:
        if not _sync.begin(w, n, sync, X2, Wp, bp, G2, m0, m1):
            return -1
        resume = 2
    T, N = G2.shape
    Gf = G2.reshape(G2.size)
    K = Rp.shape[0] // N  # = H
    K2 = K - (K & 1)
    KP = K * 16
    acc = np.empty(64, G2.dtype)
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
            u = u0 + (nm - 1 - i if odd else i)  # snake order, as lstm_forward_fused
            wb = u * 4 * KP
            cu = u * 16
            o0 = t * N + u * 64
            a0 = vload(Gf, o0)
            a1 = vload(Gf, o0 + 16)
            a2 = vload(Gf, o0 + 32)
            a3 = vload(Gf, o0 + 48)
            b0_ = vzero(G2)
            b1 = vzero(G2)
            b2 = vzero(G2)
            b3 = vzero(G2)
            for k in range(0, K2, 2):
                xa = vsplat(src[0, k])
                xb = vsplat(src[0, k + 1])
                p = wb + k * 16
                a0 = vfma(xa, vload(Rp, p), a0)
                a1 = vfma(xa, vload(Rp, p + KP), a1)
                a2 = vfma(xa, vload(Rp, p + 2 * KP), a2)
                a3 = vfma(xa, vload(Rp, p + 3 * KP), a3)
                b0_ = vfma(xb, vload(Rp, p + 16), b0_)
                b1 = vfma(xb, vload(Rp, p + KP + 16), b1)
                b2 = vfma(xb, vload(Rp, p + 2 * KP + 16), b2)
                b3 = vfma(xb, vload(Rp, p + 3 * KP + 16), b3)
            if K2 < K:
                xa = vsplat(src[0, K2])
                p = wb + K2 * 16
                a0 = vfma(xa, vload(Rp, p), a0)
                a1 = vfma(xa, vload(Rp, p + KP), a1)
                a2 = vfma(xa, vload(Rp, p + 2 * KP), a2)
                a3 = vfma(xa, vload(Rp, p + 3 * KP), a3)
            vstore(acc, 0, vadd(a0, b0_))
            vstore(acc, 16, vadd(a1, b1))
            vstore(acc, 32, vadd(a2, b2))
            vstore(acc, 48, vadd(a3, b3))
            gi = vsigmoid(vload(acc, 0))
            go = vsigmoid(vload(acc, 16))
            gf = vsigmoid(vload(acc, 32))
            gc = vtanh(vload(acc, 48))
            cn = vfma(gf, vload(c, cu), vmul(gi, gc))
            hn = vmul(go, vtanh(cn))
            vstore(c, cu, cn)
            vstore(dst, cu, hn)
            vstore(Y, y0 + t * yst + cu, hn)
        _sync.signal(sync, w, t + 3)
    return 0


@jit
def lstm_backward_fused(Rb, lengths, dY, dh, dc, G, Cs, Hc, dA):
    """BPTT of ``lstm_forward_fused``, reading the layouts it saved (no unpacking).

    Per step, from the last: the gate gradients of every sequence and block of 16 units in
    vector registers (g = dh + dY, then dA for i, o, f, c~ and dc_{t-1}), written to dA; then
    dh_{t-1} = dA_t R (``_ops.back_rec16``).

    Rb (Hp/16, N, 16): R with its rows in G's unit-interleaved order, in panels of 16 columns
    (``_ops.pack_back16``). dY (T, B, Hp): dL/dh_t from above (zero past H). dh, dc (B, Hp)
    enter as dL/dh_T, dL/dc_T and leave as dL/dh_0, dL/dc_0 (held on a sequence's padded steps,
    |x| < 1e-30 flushed to zero after every step, as ``lstm_backward`` does). G (T, B, N) the
    gate outputs, Cs (T+1, B, Hp) c_{t-1} at t, Hc (T, B, Hp) tanh(c_t). dA (T, B, N) out: the
    gradients of the gate pre-activations; zeros on entry (padded steps are not written).
    """
    T, B, N = G.shape
    Hp = dh.shape[1]
    nu = Hp // 16
    Lmax = lengths.max() if B > 0 else 0
    one = vsplat(G.dtype.type(1.0))
    tiny = vsplat(G.dtype.type(TINY32))
    ntiny = vsplat(G.dtype.type(-TINY32))
    zero = vzero(G)
    for t in range(Lmax - 1, -1, -1):
        # gate gradients, sequence by sequence and block of 16 units
        for b in range(B):
            ga = (t * B + b) * N
            if t >= lengths[b]:
                continue
            for u in range(nu):
                s = b * Hp + u * 16
                q = (t * B + b) * Hp + u * 16
                g0 = ga + u * 64
                g = vadd(vload(dh, s), vload(dY, q))
                gi = vload(G, g0)
                go = vload(G, g0 + 16)
                gf = vload(G, g0 + 32)
                gc = vload(G, g0 + 48)
                hc = vload(Hc, q)
                cp = vload(Cs, q)
                gho = vmul(g, go)
                dao = vmul(vmul(g, hc), vmul(go, vsub(one, go)))
                dcn = vfma(gho, vsub(one, vmul(hc, hc)), vload(dc, s))
                dai = vmul(vmul(dcn, gc), vmul(gi, vsub(one, gi)))
                daf = vmul(vmul(dcn, cp), vmul(gf, vsub(one, gf)))
                dac = vmul(vmul(dcn, gi), vsub(one, vmul(gc, gc)))
                dcp = vmul(dcn, gf)
                vstore(dc, s, vadd(vselect_gt(dcp, tiny, dcp, zero), vselect_gt(ntiny, dcp, dcp, zero)))
                vstore(dA, g0, dai)
                vstore(dA, g0 + 16, dao)
                vstore(dA, g0 + 32, daf)
                vstore(dA, g0 + 48, dac)
        back_rec16(Rb, lengths, t, dA, dh, False)  # dh_{t-1} = dA_t R


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
# streaming step (see edgernn/streaming.py)
# ----------------------------------------------------------------------------------------
@jit
def stream_step(meta, li, Wf, buf, B, rev):
    m = meta[li]
    I, H = m[M_I], m[M_O]
    ld = I + H
    G = 4 * H
    fp = m[M_F]
    clip = Wf[fp + 6]
    flags = m[M_FLAGS]
    peep = (flags & F_PEEP) != 0
    coupled = (flags & F_INPUT_FORGET) != 0
    rseq = (flags & F_RSEQ) != 0
    xh, g, out, outs, P, vo = m[M_IN], m[M_G], m[M_OUT], m[M_OUTS], m[M_P], meta[0, H_VALID]
    fc, gc, hc = m[M_C0], m[M_C1], m[M_C2]
    fast = (fc == FAST_SIGMOID and gc == FAST_TANH and hc == FAST_TANH and not peep
            and not coupled and clip == 0.0)
    bv = Wf[m[M_BIAS]: m[M_BIAS] + G]
    gt = m[M_T]
    gv = buf[gt: gt + G]
    if B > 1 or buf[vo] != 0.0:
        mv_flat(Wf, m[M_W], ld, ld, G, buf, xh, ld, B, buf, g, G, rev)
    for b in range(B):
        h = buf[xh + b * ld + I: xh + b * ld + ld]
        valid = buf[vo + b] != 0.0
        if valid:
            ab = g + b * G
            cb = m[M_C] + b * H
            a = buf[ab: ab + G]
            c = buf[cb: cb + H]
            if fast:
                for j in range(H):
                    ig = fast_sigmoid(a[j] + bv[j])
                    og = fast_sigmoid(a[H + j] + bv[H + j])
                    fg = fast_sigmoid(a[2 * H + j] + bv[2 * H + j])
                    cg = fast_tanh(a[3 * H + j] + bv[3 * H + j])
                    cn = fg * c[j] + ig * cg
                    c[j] = cn
                    h[j] = og * fast_tanh(cn)
            else:
                for j in range(G):
                    a[j] += bv[j]
                if peep:
                    for j in range(H):
                        a[j] += Wf[P + j] * c[j]
                        a[2 * H + j] += Wf[P + 2 * H + j] * c[j]
                    if clip > 0.0:
                        clip_inplace(a[:H], clip)
                        clip_inplace(a[2 * H:], clip)
                elif clip > 0.0:
                    clip_inplace(a, clip)
                act_span(fc, buf, ab, buf, gt, H, Wf[fp], Wf[fp + 3])  # i
                if coupled:
                    for j in range(H):
                        gv[2 * H + j] = 1.0 - gv[j]
                else:
                    act_span(fc, buf, ab + 2 * H, buf, gt + 2 * H, H, Wf[fp], Wf[fp + 3])  # f
                act_span(gc, buf, ab + 3 * H, buf, gt + 3 * H, H, Wf[fp + 1], Wf[fp + 4])  # c~
                for j in range(H):
                    c[j] = gv[2 * H + j] * c[j] + gv[j] * gv[3 * H + j]
                if peep:  # the output gate's peephole sees the new cell state
                    for j in range(H):
                        a[H + j] += Wf[P + H + j] * c[j]
                    if clip > 0.0:
                        clip_inplace(a[H: 2 * H], clip)
                act_span(fc, buf, ab + H, buf, gt + H, H, Wf[fp], Wf[fp + 3])  # o
                act_span(hc, buf, cb, buf, ab, H, Wf[fp + 2], Wf[fp + 5])  # h(C_t), into the spent i slot
                for j in range(H):
                    h[j] = gv[H + j] * a[j]
        emit(valid, h, buf[out + b * outs: out + b * outs + H], rseq)


def stream_pack(layer, pk, B, dtype):
    """Pack ``layer`` for the streaming engine: (meta dict, states as (offset, stride, width))."""
    m, w = pack_fused(CELL, layer, pk, B, dtype, STREAM_OP)
    H = m["O"]
    if w["P"] is not None:
        P = np.asarray(w["P"][0])
        if P.shape != (3 * H,):
            raise ValueError(f"stream: layer {layer.name!r} has peepholes of shape {P.shape}, expected ({3 * H},)")
        m["FLAGS"] |= F_PEEP
        m["P"] = pk.add_w(P)
    if layer.input_forget:
        m["FLAGS"] |= F_INPUT_FORGET
    m["BIAS"] = pk.add_w(w["Wb"] + w["Rb"])
    m["C"] = pk.add_buf(B * H)
    m["T"] = pk.add_buf(4 * H)  # gate activations (one batch row at a time)
    return m, [(m["H"], m["INS"], H), (m["C"], H, H)]


STREAM_OP = 3
CELL = register(Cell("lstm", gates=4, state_names=("h", "c"), default_activations=("Sigmoid", "Tanh", "Tanh"),
                     onnx_op="LSTM", stream_op=STREAM_OP, module=__name__, functional=("lstm", "lstm_backward"),
                     layers=("LSTM",)))
