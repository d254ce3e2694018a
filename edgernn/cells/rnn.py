"""Elman RNN cell (ONNX ``RNN``): ``H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)``.

Everything specific to the cell: the batch-major forward and BPTT time loops (every option,
any batch), the streaming step, and the packing of a layer for the streaming engine. The
exporter writes a native ``RNN`` node; ``functional.rnn`` drives the kernels. Conventions of
the kernels: ``edgernn/cells/_ops.py``.
"""

from __future__ import annotations

import numpy as np

from .._activations import act_vec
from .._config import jit
from ._ops import (
    F_RSEQ,
    H_VALID,
    M_BIAS,
    M_C0,
    M_F,
    M_FLAGS,
    M_G,
    M_I,
    M_IN,
    M_O,
    M_OUT,
    M_OUTS,
    M_W,
    act_span,
    clamp_into,
    clip_inplace,
    dact,
    dout,
    emit,
    flush_tiny,
    matmul,
    mv_flat,
    out_deriv,
    pack_fused,
)
from .base import Cell, register


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
# streaming step (see edgernn/streaming.py)
# ----------------------------------------------------------------------------------------
@jit
def stream_step(meta, li, Wf, buf, B, rev):
    m = meta[li]
    I, H = m[M_I], m[M_O]
    ld = I + H
    fp = m[M_F]
    clip = Wf[fp + 6]
    rseq = (m[M_FLAGS] & F_RSEQ) != 0
    xh, g, bias, out, outs, vo = m[M_IN], m[M_G], m[M_BIAS], m[M_OUT], m[M_OUTS], meta[0, H_VALID]
    if B > 1 or buf[vo] != 0.0:
        mv_flat(Wf, m[M_W], ld, ld, H, buf, xh, ld, B, buf, g, H, rev)
    bv = Wf[bias: bias + H]
    for b in range(B):
        h = buf[xh + b * ld + I: xh + b * ld + ld]
        valid = buf[vo + b] != 0.0
        if valid:
            a = buf[g + b * H: g + b * H + H]
            for j in range(H):
                a[j] += bv[j]
            if clip > 0.0:
                clip_inplace(a, clip)
            act_span(m[M_C0], buf, g + b * H, buf, xh + b * ld + I, H, Wf[fp], Wf[fp + 3])
        emit(valid, h, buf[out + b * outs: out + b * outs + H], rseq)


def stream_pack(layer, pk, B, dtype):
    """Pack ``layer`` for the streaming engine: (meta dict, states as (offset, stride, width))."""
    m, w = pack_fused(CELL, layer, pk, B, dtype, STREAM_OP)
    m["BIAS"] = pk.add_w(w["Wb"] + w["Rb"])
    return m, [(m["H"], m["INS"], m["O"])]


STREAM_OP = 1
CELL = register(Cell("rnn", gates=1, state_names=("h",), default_activations=("Tanh",), onnx_op="RNN",
                     stream_op=STREAM_OP, module=__name__, functional=("rnn", "rnn_backward"),
                     layers=("SimpleRNN",)))
