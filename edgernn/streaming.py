"""Real-time streaming inference: one input step in, one output out (no allocation with ``out=``).

``model.stream(batch_size=1)`` (or :func:`stream`) compiles a model into a :class:`Stream`:
all weights packed into one flat array, all states and scratch buffers into another, and a
table of integer layer codes and offsets. One step of the whole model is then ONE jitted
call (``_model_step``) that loops over the layers::

    st = model.stream(batch_size=1)
    for x in sensor:                 # x: (features,) float32
        y = st.step(x)               # (outputs,): a new array
        st.step(x, out=buf)          # or written into your buffer: no allocation
    st.reset()                       # start a new sequence
    saved = st.state                 # copies: [[h, c], [h], ...] per recurrent layer
    st.state = saved

Semantics
---------
- Every step emits the output the model would give for the sequence seen so far. With the
  last recurrent layer at ``return_sequences=True``, step ``t`` returns ``predict(x)[:, t]``;
  with ``return_sequences=False`` it returns ``predict(x[:, :t + 1])`` (equal to float32
  rounding: the gate nonlinearities are the same rational tanh as ``predict``'s).
- The stream carries its own state, starting at zero; the ``stateful`` flag and the carried
  state of the layers are neither used nor changed. The weights are copied when the stream
  is created: make a new stream after training further.
- ``Dropout`` is the identity (inference). A last layer with ``return_state=True`` streams
  its output only.
- ``Masking`` and ``Embedding(mask_zero=True)``: a step whose features all equal
  ``mask_value`` (or whose token id is 0) is padding. The recurrent state is held, a
  recurrent layer with ``return_sequences=True`` outputs zeros and one with
  ``return_sequences=False`` outputs its held state: exactly what ``predict`` gives for
  trailing padding. A padding step followed by valid steps is skipped (Keras semantics);
  ``predict`` supports trailing padding only and would run such an interior step as input.
- Layers that need the future (``Bidirectional``, ``go_backwards=True``, direction
  ``"reverse"``) cannot stream: creating the stream raises ``ValueError`` naming the layer.

Performance notes
-----------------
- Input and recurrent projections are fused: each recurrent layer keeps ``[x_t, h]``
  contiguous in one buffer (its hidden state lives there) and its weights as one row-major
  ``[W | R]`` matrix, so ``x W^T + h R^T`` is one pass of eight-rows-at-a-time dot products,
  walking the rows forwards and backwards on alternate steps (the rows used last are still
  in L1 when the next step starts). Each layer writes its output straight into the input
  part of the next layer's buffer.
- The default float32 cells (sigmoid/tanh, no clip, no peepholes, GRU ``reset_after``) run
  one fused, vectorised loop over the units with the rational tanh in float32 arithmetic.
- Jitted functions that are not inlined take whole arrays plus offsets, never slices: a
  slice crossing a call costs a reference-count round trip (~15 ns each).
- ``step`` is a closure bound per stream: a type check, the jitted call and a tuple look-up.
  The kernel validates the shape and leaves the state untouched on error.
"""

from __future__ import annotations

import numpy as np

from . import _activations as A
from ._config import jit

__all__ = ["Stream", "stream"]

# ---- op codes and the columns of the op table ------------------------------------------------
OP_RNN, OP_GRU, OP_LSTM, OP_DENSE, OP_ACT, OP_EMB, OP_MASK = 1, 2, 3, 4, 5, 6, 7
SOFTMAX = 100  # extra activation code for Dense/Activation heads
LINEAR = -1  # no activation

# header row (row 0)
H_B, H_NOPS, H_FIN, H_VALID, H_IDS, H_FIRST_IN, H_FIRST_INS, H_PARITY = 0, 1, 2, 3, 4, 5, 6, 7
# op rows (rows 1..nops)
(M_TYPE, M_I, M_O, M_W, M_IN, M_INS, M_OUT, M_OUTS, M_H, M_C, M_G, M_S, M_S2, M_C0, M_C1, M_C2,
 M_F, M_FLAGS, M_V, M_BIAS, M_P, M_T) = range(22)
NCOL = 22
# flags
F_PEEP, F_INPUT_FORGET, F_LBR, F_RSEQ, F_MASK_ZERO = 1, 2, 4, 8, 16
# float parameters of an op, at Wf[meta[M_F]:]: alpha0..2, beta0..2, clip, mask_value
NFP = 8

# error codes returned by the kernel
ERR_SHAPE, ERR_ID = 1, 2


# ---- jitted building blocks ------------------------------------------------------------------
@jit
def _mv(W, w0, ld, nc, nrows, v, v0, vs, B, out, o0, os, rev):
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


# The float32 cells use the library's rational tanh, whose constants are float32 (so float32
# data stays in float32 arithmetic).
_HALF = np.float32(0.5)


@jit(inline="always")
def _tanh32(x):
    """``_activations.fast_tanh`` (only reached by float32 models)."""
    return A.fast_tanh(x)


@jit(inline="always")
def _sigmoid32(x):
    return _HALF * _tanh32(_HALF * x) + _HALF


# A slice passed to a function that is not inlined costs a reference-count round trip
# (~15 ns), which would dominate small models: functions that are not inlined take whole
# arrays and offsets; the small helpers are inlined (numba IR level).
@jit
def _act(code, X, xo, Y, yo, n, alpha, beta):
    """Y[yo:yo+n] = act(X[xo:xo+n]) for an activation code, LINEAR or SOFTMAX. The two ranges
    must not overlap (LLVM's run-time alias check would fall back to scalar code)."""
    x = X[xo: xo + n]
    y = Y[yo: yo + n]
    if code == A.FAST_SIGMOID:
        for k in range(n):
            y[k] = _sigmoid32(x[k])
    elif code == A.FAST_TANH:
        for k in range(n):
            y[k] = _tanh32(x[k])
    elif code == A.SIGMOID:
        for k in range(n):
            y[k] = 1.0 / (1.0 + np.exp(-x[k]))
    elif code == A.TANH:
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
            y[k] = A.act1(code, x[k], alpha, beta)


@jit(inline="always")
def _clip_inplace(x, clip):
    for k in range(x.shape[0]):
        x[k] = min(max(x[k], -clip), clip)


@jit(inline="always")
def _emit(valid, h, out, rseq):
    """Write a recurrent layer's output for one batch row: the new state, or, on a padding
    step, zeros (return_sequences) or the held state."""
    if valid or not rseq:
        for j in range(h.shape[0]):
            out[j] = h[j]
    else:
        for j in range(h.shape[0]):
            out[j] = 0.0


# Ops take the whole arrays (meta, Wf, buf) and offsets, never slices (see above).
@jit
def _rnn_op(meta, li, Wf, buf, B, rev):
    m = meta[li]
    I, H = m[M_I], m[M_O]
    ld = I + H
    fp = m[M_F]
    clip = Wf[fp + 6]
    rseq = (m[M_FLAGS] & F_RSEQ) != 0
    xh, g, bias, out, outs, vo = m[M_IN], m[M_G], m[M_BIAS], m[M_OUT], m[M_OUTS], meta[0, H_VALID]
    if B > 1 or buf[vo] != 0.0:
        _mv(Wf, m[M_W], ld, ld, H, buf, xh, ld, B, buf, g, H, rev)
    bv = Wf[bias: bias + H]
    for b in range(B):
        h = buf[xh + b * ld + I: xh + b * ld + ld]
        valid = buf[vo + b] != 0.0
        if valid:
            a = buf[g + b * H: g + b * H + H]
            for j in range(H):
                a[j] += bv[j]
            if clip > 0.0:
                _clip_inplace(a, clip)
            _act(m[M_C0], buf, g + b * H, buf, xh + b * ld + I, H, Wf[fp], Wf[fp + 3])
        _emit(valid, h, buf[out + b * outs: out + b * outs + H], rseq)


@jit
def _gru_op(meta, li, Wf, buf, B, rev):
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
    fast = lbr and fc == A.FAST_SIGMOID and gc == A.FAST_TANH and clip == 0.0
    bv = Wf[m[M_BIAS]: m[M_BIAS] + G]
    run = B > 1 or buf[vo] != 0.0
    if run:
        # z, r rows: x W^T + h R^T in one pass; h rows: the x part (and h Rh^T when lbr)
        _mv(Wf, w, ld, ld, 2 * H, buf, xh, ld, B, buf, g, G, rev)
        _mv(Wf, w + 2 * H * ld, ld, I, H, buf, xh, ld, B, buf, g + 2 * H, G, rev)
        if lbr:
            _mv(Wf, w + 2 * H * ld + I, ld, H, H, buf, xh + I, ld, B, buf, rec, H, rev)
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
                gb[j] = _sigmoid32(a[j] + bv[j])
            for j in range(H):
                hh = _tanh32(a[2 * H + j] + bv[2 * H + j] + gb[H + j] * (rb[j] + Rbh[j]))
                z = gb[j]
                h[j] = (1.0 - z) * hh + z * h[j]
            continue
        for j in range(2 * H):
            a[j] += bv[j]
        if clip > 0.0:
            _clip_inplace(a[: 2 * H], clip)
        _act(fc, buf, g + b * G, buf, gt + b * G, 2 * H, Wf[fp], Wf[fp + 3])
        if not lbr:
            rhb = buf[rh + b * H: rh + b * H + H]
            for j in range(H):
                rhb[j] = gb[H + j] * h[j]
    if run and not lbr:  # (r * h) Rh^T
        _mv(Wf, w + 2 * H * ld + I, ld, H, H, buf, rh, H, B, buf, rec, H, rev)
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
                _clip_inplace(c, clip)
            _act(gc, buf, g + b * G + 2 * H, buf, gt + b * G + 2 * H, H, Wf[fp + 1], Wf[fp + 4])
            for j in range(H):
                z = gb[j]
                h[j] = (1.0 - z) * gb[2 * H + j] + z * h[j]
        _emit(valid, h, buf[out + b * outs: out + b * outs + H], rseq)


@jit
def _lstm_op(meta, li, Wf, buf, B, rev):
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
    fast = (fc == A.FAST_SIGMOID and gc == A.FAST_TANH and hc == A.FAST_TANH and not peep
            and not coupled and clip == 0.0)
    bv = Wf[m[M_BIAS]: m[M_BIAS] + G]
    gt = m[M_T]
    gv = buf[gt: gt + G]
    if B > 1 or buf[vo] != 0.0:
        _mv(Wf, m[M_W], ld, ld, G, buf, xh, ld, B, buf, g, G, rev)
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
                    ig = _sigmoid32(a[j] + bv[j])
                    og = _sigmoid32(a[H + j] + bv[H + j])
                    fg = _sigmoid32(a[2 * H + j] + bv[2 * H + j])
                    cg = _tanh32(a[3 * H + j] + bv[3 * H + j])
                    cn = fg * c[j] + ig * cg
                    c[j] = cn
                    h[j] = og * _tanh32(cn)
            else:
                for j in range(G):
                    a[j] += bv[j]
                if peep:
                    for j in range(H):
                        a[j] += Wf[P + j] * c[j]
                        a[2 * H + j] += Wf[P + 2 * H + j] * c[j]
                    if clip > 0.0:
                        _clip_inplace(a[:H], clip)
                        _clip_inplace(a[2 * H:], clip)
                elif clip > 0.0:
                    _clip_inplace(a, clip)
                _act(fc, buf, ab, buf, gt, H, Wf[fp], Wf[fp + 3])  # i
                if coupled:
                    for j in range(H):
                        gv[2 * H + j] = 1.0 - gv[j]
                else:
                    _act(fc, buf, ab + 2 * H, buf, gt + 2 * H, H, Wf[fp], Wf[fp + 3])  # f
                _act(gc, buf, ab + 3 * H, buf, gt + 3 * H, H, Wf[fp + 1], Wf[fp + 4])  # c~
                for j in range(H):
                    c[j] = gv[2 * H + j] * c[j] + gv[j] * gv[3 * H + j]
                if peep:  # the output gate's peephole sees the new cell state
                    for j in range(H):
                        a[H + j] += Wf[P + H + j] * c[j]
                    if clip > 0.0:
                        _clip_inplace(a[H: 2 * H], clip)
                _act(fc, buf, ab + H, buf, gt + H, H, Wf[fp], Wf[fp + 3])  # o
                _act(hc, buf, cb, buf, ab, H, Wf[fp + 2], Wf[fp + 5])  # h(C_t), into the spent i slot
                for j in range(H):
                    h[j] = gv[H + j] * a[j]
        _emit(valid, h, buf[out + b * outs: out + b * outs + H], rseq)


@jit
def _dense_op(meta, li, Wf, buf, B, rev):
    m = meta[li]
    I, U = m[M_I], m[M_O]
    out, outs, bias, s = m[M_OUT], m[M_OUTS], m[M_BIAS], m[M_S]
    _mv(Wf, m[M_W], I, I, U, buf, m[M_IN], m[M_INS], B, buf, s, U, rev)
    fp = m[M_F]
    for b in range(B):
        z = buf[s + b * U: s + b * U + U]
        if bias >= 0:
            bv = Wf[bias: bias + U]
            for j in range(U):
                z[j] += bv[j]
        _act(m[M_C0], buf, s + b * U, buf, out + b * outs, U, Wf[fp], Wf[fp + 3])


@jit
def _act_op(meta, li, Wf, buf, B):
    m = meta[li]
    n = m[M_I]
    fp = m[M_F]
    for b in range(B):
        _act(m[M_C0], buf, m[M_IN] + b * m[M_INS], buf, m[M_OUT] + b * m[M_OUTS], n, Wf[fp], Wf[fp + 3])


@jit
def _mask_op(meta, li, Wf, buf, B):
    m = meta[li]
    n = m[M_I]
    mv = Wf[m[M_F] + 7]
    vo = meta[0, H_VALID]
    for b in range(B):
        x = buf[m[M_IN] + b * m[M_INS]: m[M_IN] + b * m[M_INS] + n]
        y = buf[m[M_OUT] + b * m[M_OUTS]: m[M_OUT] + b * m[M_OUTS] + n]
        keep = False
        for j in range(n):
            if x[j] != mv:
                keep = True
        if not keep:
            buf[vo + b] = 0.0
        if buf[vo + b] != 0.0:
            for j in range(n):
                y[j] = x[j]
        else:
            for j in range(n):
                y[j] = 0.0


@jit
def _model_step(x, Wf, buf, meta):
    """One step of a packed model (see :class:`Stream`). Returns 0, or an error code."""
    B = meta[0, H_B]
    nops = meta[0, H_NOPS]
    F = meta[0, H_FIN]
    rev = meta[0, H_PARITY]
    vo = meta[0, H_VALID]
    if meta[0, H_IDS] != 0:  # token ids (B,) for a leading Embedding
        if x.ndim != 1:
            return ERR_SHAPE
        if x.shape[0] != B:
            return ERR_SHAPE
        D, V = meta[1, M_O], meta[1, M_V]
        mask_zero = (meta[1, M_FLAGS] & F_MASK_ZERO) != 0
        for b in range(B):
            if x[b] < 0 or x[b] >= V:
                return ERR_ID
        for b in range(B):
            t = np.int64(x[b])
            buf[vo + b] = 0.0 if mask_zero and t == 0 else 1.0
            o = meta[1, M_OUT] + b * meta[1, M_OUTS]
            e = meta[1, M_W] + t * D
            for j in range(D):
                buf[o + j] = Wf[e + j]
        first = 2
    else:
        i0, ins = meta[0, H_FIRST_IN], meta[0, H_FIRST_INS]
        if x.ndim == 1:
            if B != 1 or x.shape[0] != F:
                return ERR_SHAPE
            for k in range(F):
                buf[i0 + k] = x[k]
        elif x.ndim == 2:
            if x.shape[0] != B or x.shape[1] != F:
                return ERR_SHAPE
            for b in range(B):
                for k in range(F):
                    buf[i0 + b * ins + k] = x[b, k]
        else:
            return ERR_SHAPE
        for b in range(B):
            buf[vo + b] = 1.0
        first = 1
    meta[0, H_PARITY] = 1 - rev
    for li in range(first, nops + 1):
        t = meta[li, M_TYPE]
        if t == OP_LSTM:
            _lstm_op(meta, li, Wf, buf, B, rev)
        elif t == OP_GRU:
            _gru_op(meta, li, Wf, buf, B, rev)
        elif t == OP_RNN:
            _rnn_op(meta, li, Wf, buf, B, rev)
        elif t == OP_DENSE:
            _dense_op(meta, li, Wf, buf, B, rev)
        elif t == OP_ACT:
            _act_op(meta, li, Wf, buf, B)
        elif t == OP_MASK:
            _mask_op(meta, li, Wf, buf, B)
    return 0


# ---- packing a model -------------------------------------------------------------------------
# Keras activation name -> (act_vec code, alpha, beta), for Dense and Activation.
_HEAD_ACTS = {
    "linear": (LINEAR, 0.0, 0.0),
    "relu": (A.RELU, 0.0, 0.0),
    "tanh": (A.TANH, 0.0, 0.0),
    "sigmoid": (A.SIGMOID, 0.0, 0.0),
    "hard_sigmoid": (A.HARD_SIGMOID, 0.2, 0.5),
    "softsign": (A.SOFTSIGN, 0.0, 0.0),
    "softplus": (A.SOFTPLUS, 0.0, 0.0),
    "elu": (A.ELU, 1.0, 0.0),
    "softmax": (SOFTMAX, 0.0, 0.0),
}
_DEFAULT_ACTS = {"rnn": ("Tanh",), "gru": ("Sigmoid", "Tanh"), "lstm": ("Sigmoid", "Tanh", "Tanh")}
_OPS = {"rnn": OP_RNN, "gru": OP_GRU, "lstm": OP_LSTM}


class _Packer:
    """Collects weights (Wf) and buffer regions (buf) with their offsets."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.w = []
        self.nw = 0
        self.nbuf = 0

    def add_w(self, arr):
        arr = np.ascontiguousarray(arr, dtype=self.dtype).ravel()
        off = self.nw
        self.w.append(arr)
        self.nw += arr.size
        return off

    def add_buf(self, n):
        off = self.nbuf
        self.nbuf += int(n)
        return off


def _layer_label(layer):
    return f"{type(layer).__name__} {getattr(layer, 'name', None)!r}"


def _model_layers(model):
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"stream: expected a Sequential model (with .layers), got {type(model).__name__}")
    layers = list(layers)
    if not layers:
        raise ValueError("stream: the model has no layers")
    unbuilt = [la for la in layers if not getattr(la, "built", False)]
    if unbuilt or not getattr(model, "built", True):
        name = _layer_label(unbuilt[0]) if unbuilt else _layer_label(layers[0])
        raise ValueError(f"stream: the model is not built yet (layer {name}); give the first layer "
                         "an input_shape, or call build, fit or predict first")
    return layers


def _check_streamable(layer):
    from .layers.recurrent import Bidirectional

    label = _layer_label(layer)
    if isinstance(layer, Bidirectional) or getattr(layer, "num_directions", 1) != 1:
        raise ValueError(f"stream: layer {label} is bidirectional; its backward direction needs the "
                         "whole future sequence, so it cannot run step by step")
    if getattr(layer, "go_backwards", False) or getattr(layer, "direction", "forward") != "forward":
        raise ValueError(f"stream: layer {label} runs backwards in time (go_backwards / direction "
                         f"{getattr(layer, 'direction', None)!r}); it needs the whole sequence, so it "
                         "cannot run step by step")


def _pack(layers, batch_size, dtype):
    """Plan the ops, pack the weights and lay out the buffer: returns (Wf, meta, info)."""
    from .layers.core import Activation, Dense, Dropout, Embedding, Masking
    from .layers.recurrent import RecurrentLayer

    pk = _Packer(dtype)
    B = int(batch_size)
    ops = []  # dicts with meta columns
    rec = []  # recurrent ops: (op index, layer, units, cell)
    ids_mode = False
    first_shape = layers[0].input_shape
    feat = None  # features flowing into the next op
    for pos, layer in enumerate(layers):
        label = _layer_label(layer)
        if isinstance(layer, Dropout):
            continue
        if isinstance(layer, Embedding):
            if pos != 0 and any(not isinstance(la, Dropout) for la in layers[:pos]):
                raise ValueError(f"stream: {label} must be the first layer")
            ids_mode = True
            E = layer.params["embeddings"]
            m = dict(type=OP_EMB, I=1, O=E.shape[1], W=pk.add_w(E), V=E.shape[0],
                     FLAGS=F_MASK_ZERO if layer.mask_zero else 0)
            ops.append(m)
            feat = E.shape[1]
            continue
        if feat is None:
            if len(first_shape) < 1 or first_shape[-1] is None:
                raise ValueError(f"stream: unknown input feature count (input shape {first_shape})")
            feat = int(first_shape[-1])
        fpar = np.zeros(NFP)  # alpha0..2, beta0..2, clip, mask_value
        if isinstance(layer, RecurrentLayer):
            cell = layer.cell
            H = layer.units
            G = layer.gates
            w = layer.onnx_weights()
            Wm, R = w["W"][0], w["R"][0]  # (GH, I), (GH, H)
            I = Wm.shape[1]
            if I != feat:
                raise ValueError(f"stream: {label} expects {I} input features, gets {feat}")
            Wb, Rb = np.asarray(w["Wb"][0], dtype), np.asarray(w["Rb"][0], dtype)
            codes, al, be = A.resolve(layer.onnx_activations, _DEFAULT_ACTS[cell], 1, dtype,
                                      layer.activation_alpha, layer.activation_beta)
            k = codes.shape[1]
            fpar[:k] = al[0]
            fpar[3:3 + k] = be[0]
            fpar[6] = 0.0 if layer.clip is None else float(layer.clip)
            m = dict(type=_OPS[cell], I=I, O=H, F=pk.add_w(fpar))
            m["W"] = pk.add_w(np.concatenate([Wm, R], axis=1))  # (GH, I + H)
            bias = Wb + Rb
            flags = F_RSEQ if layer.return_sequences else 0
            if cell == "gru":
                if layer.linear_before_reset:
                    flags |= F_LBR
                    bias[2 * H:] = Wb[2 * H:]
                    m["P"] = pk.add_w(Rb[2 * H:])
                m["S"] = pk.add_buf(B * H)  # recurrent product of the h gate
                m["S2"] = pk.add_buf(B * H)  # r * h
                m["T"] = pk.add_buf(B * G * H)  # gate activations
            if cell == "lstm":
                if w["P"] is not None:
                    flags |= F_PEEP
                    m["P"] = pk.add_w(w["P"][0])
                if layer.input_forget:
                    flags |= F_INPUT_FORGET
                m["C"] = pk.add_buf(B * H)
                m["T"] = pk.add_buf(G * H)  # gate activations (one batch row at a time)
            m["BIAS"] = pk.add_w(bias)
            m["FLAGS"] = flags
            for j, c in enumerate(codes[0]):
                m[f"C{j}"] = int(c)
            m["G"] = pk.add_buf(B * G * H)
            # [x, h] rows: the input slot and the hidden state in one buffer
            m["IN"] = pk.add_buf(B * (I + H))
            m["INS"] = I + H
            m["H"] = m["IN"] + I
            ops.append(m)
            rec.append((len(ops) - 1, layer, H, cell))
            feat = H
        elif isinstance(layer, Dense):
            K = layer.params["kernel"]  # (F, U)
            if K.shape[0] != feat:
                raise ValueError(f"stream: {label} expects {K.shape[0]} input features, gets {feat}")
            code, a, b = _HEAD_ACTS.get(layer.activation, (None, 0, 0))
            if code is None:
                raise ValueError(f"stream: {label} has activation {layer.activation!r}, which the "
                                 "streaming engine does not implement")
            fpar[0], fpar[3] = a, b
            m = dict(type=OP_DENSE, I=feat, O=K.shape[1], F=pk.add_w(fpar), C0=code, W=pk.add_w(K.T),
                     S=pk.add_buf(B * K.shape[1]),
                     BIAS=pk.add_w(layer.params["bias"]) if "bias" in layer.params else -1)
            ops.append(m)
            feat = K.shape[1]
        elif isinstance(layer, Activation):
            code, a, b = _HEAD_ACTS.get(layer.activation, (None, 0, 0))
            if code is None:
                raise ValueError(f"stream: {label} has activation {layer.activation!r}, which the "
                                 "streaming engine does not implement")
            if code == LINEAR:
                continue
            fpar[0], fpar[3] = a, b
            ops.append(dict(type=OP_ACT, I=feat, O=feat, F=pk.add_w(fpar), C0=code))
        elif isinstance(layer, Masking):
            fpar[7] = layer.mask_value
            ops.append(dict(type=OP_MASK, I=feat, O=feat, F=pk.add_w(fpar)))
        else:
            raise ValueError(f"stream: layer {label} ({type(layer).__name__}) cannot be streamed; "
                             "supported: SimpleRNN, GRU, LSTM, Dense, Activation, Embedding, Masking, "
                             "Dropout")
    if not ops:
        raise ValueError("stream: the model has no layer that computes anything")
    # Input slots of non-recurrent ops; each op writes its output into the next op's input slot.
    for m in ops:
        if "IN" not in m and m["type"] != OP_EMB:
            m["IN"] = pk.add_buf(B * m["I"])
            m["INS"] = m["I"]
    for k, m in enumerate(ops):
        if k + 1 < len(ops):
            m["OUT"], m["OUTS"] = ops[k + 1]["IN"], ops[k + 1]["INS"]
        else:
            m["OUT"], m["OUTS"] = pk.add_buf(B * m["O"]), m["O"]
    valid_off = pk.add_buf(B)
    meta = np.full((len(ops) + 1, NCOL), -1, np.int64)
    meta[0, :] = 0
    meta[0, H_B] = B
    meta[0, H_NOPS] = len(ops)
    meta[0, H_FIN] = 1 if ids_mode else ops[0]["I"]
    meta[0, H_VALID] = valid_off
    meta[0, H_IDS] = int(ids_mode)
    if not ids_mode:
        meta[0, H_FIRST_IN], meta[0, H_FIRST_INS] = ops[0]["IN"], ops[0]["INS"]
    cols = dict(TYPE=M_TYPE, I=M_I, O=M_O, W=M_W, IN=M_IN, INS=M_INS, OUT=M_OUT, OUTS=M_OUTS, H=M_H,
                C=M_C, G=M_G, S=M_S, S2=M_S2, C0=M_C0, C1=M_C1, C2=M_C2, F=M_F, FLAGS=M_FLAGS, V=M_V,
                BIAS=M_BIAS, P=M_P, T=M_T)
    for k, m in enumerate(ops):
        for name, v in m.items():
            meta[k + 1, cols[name.upper()]] = int(v)
    Wf = np.concatenate(pk.w) if pk.w else np.zeros(1, dtype)
    last = ops[-1]
    states = []
    for k, layer, H, cell in rec:
        m = ops[k]
        states.append(dict(layer=layer, H=H, xh=m["IN"], I=m["I"], c=m.get("C"), cell=cell))
    info = dict(out=last["OUT"], nout=last["O"], states=states, ids=ids_mode,
                nin=meta[0, H_FIN], nbuf=pk.nbuf)
    return np.ascontiguousarray(Wf, dtype), meta, info


# ---- the user-facing object ----------------------------------------------------------------
class Stream:
    """A model compiled for step-by-step inference (see the module docstring).

    Create it with ``model.stream(batch_size=1)`` or :func:`stream`. Weights are copied when
    the stream is created: later training of the model does not affect it (make a new stream).

    Parameters
    ----------
    model : Sequential
        A built model whose layers can all stream.
    batch_size : int
        Number of independent streams advanced together; fixed for the stream's lifetime.

    Attributes
    ----------
    batch_size : int
    input_features : int
        Features per step (1 for token-id models).
    output_features : int
    dtype : numpy.dtype
        The model's float type; inputs of another type are cast (slower path).
    """

    def __init__(self, model, batch_size=1):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"stream: batch_size must be a positive integer, got {batch_size!r}")
        layers = _model_layers(model)
        for la in layers:
            if hasattr(la, "layer") or getattr(la, "cell", None) is not None:
                _check_streamable(la)
        dtype = getattr(model, "dtype", None)
        dtype = np.dtype(layers[0].dtype if dtype is None else dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"stream: the model's dtype must be float32 or float64, got {dtype}")
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self._W, self._meta, info = _pack(layers, self.batch_size, dtype)
        self._buf = np.zeros(info["nbuf"], dtype)
        self._ids = info["ids"]
        self.input_features = int(info["nin"])
        self.output_features = int(info["nout"])
        self._xdt = np.dtype(np.int64) if self._ids else dtype
        o, n, B = info["out"], info["nout"], self.batch_size
        self._out2 = self._buf[o: o + B * n].reshape(B, n)
        self._out1 = self._buf[o: o + n]
        # output for an input of ndim k: float models (F,) -> (n,), (B, F) -> (B, n);
        # token models (B,) -> (B, n) (a scalar id goes through the slow path -> (n,))
        self._outs = (None, self._out2, None) if self._ids else (None, self._out1, self._out2)
        self._states = info["states"]
        self._kernel = _model_step
        self.step = self._make_step()  # closure: the fast path without attribute look-ups

    def _make_step(self):
        kernel, W, buf, meta, outs, xdt = self._kernel, self._W, self._buf, self._meta, self._outs, self._xdt
        slow, ndarray, dt = self._step_slow, np.ndarray, self.dtype

        def step(x, out=None, *, copy=True):
            # the kernel checks the shape and changes nothing when it returns an error code;
            # the slow path then converts the input or raises a clear error
            if x.__class__ is not ndarray or x.dtype is not xdt:
                return slow(x, out, copy)
            if out is None:
                if kernel(x, W, buf, meta):
                    return slow(x, out, copy)
                return outs[x.ndim].copy() if copy else outs[x.ndim]
            o = outs[x.ndim] if x.ndim < 3 else None
            if (o is None or out.__class__ is not ndarray or out.dtype is not dt or out.shape != o.shape
                    or not out.flags.writeable):
                return slow(x, out, copy)
            if kernel(x, W, buf, meta):
                return slow(x, out, copy)
            out[...] = o
            return out

        step.__doc__ = Stream.step.__doc__
        return step

    # ---- stepping ------------------------------------------------------------------------
    def step(self, x, out=None, *, copy=True):
        """Feed one time step and return the model's output for it.

        Parameters
        ----------
        x : array_like
            One step: ``(features,)`` (batch size 1) or ``(batch, features)``; for a model that
            starts with ``Embedding``, token ids ``(batch,)`` (or one int for batch size 1).
            Fast path: an ndarray of the stream's ``dtype`` (int64 for ids); anything else is
            converted first.
        out : ndarray, optional
            Write the output here and return it: the zero-allocation path. A writeable array of
            the stream's ``dtype`` and exactly the output's shape (see Returns).
        copy : bool
            Without ``out``: True (default) returns a new array; False returns the stream's
            internal output buffer, which the next ``step`` and ``reset`` overwrite (no
            allocation either; prefer ``out``).

        Returns
        -------
        ndarray
            ``(out_features,)`` for a ``(features,)`` input (or one token id), else
            ``(batch, out_features)``: a new array (default), ``out`` when given.

        Raises
        ------
        ValueError
            Wrong shape of ``x`` or ``out``, a read-only ``out``, or a token id outside the
            vocabulary (the state is then unchanged).
        TypeError
            ``out`` is not an ndarray of the stream's dtype.

        Notes
        -----
        Each stream binds a fast version of this method to the instance when it is created.
        The default's copy costs about 0.3 us per step over ``copy=False`` (2-core x86-64);
        ``out=`` costs about the same (its checks) but allocates nothing.
        """
        return self._step_slow(x, out, copy)

    def _check_out(self, out, shape):
        if not isinstance(out, np.ndarray):
            raise TypeError(f"stream.step: out must be a numpy array, got {type(out).__name__}")
        if out.dtype != self.dtype:
            raise TypeError(f"stream.step: out must have the stream's dtype {self.dtype}, got {out.dtype}")
        if out.shape != shape:
            raise ValueError(f"stream.step: out must have shape {shape} for this input, got {out.shape}")
        if not out.flags.writeable:
            raise ValueError("stream.step: out is read-only")

    def _step_slow(self, x, out=None, copy=True):
        scalar_id = False
        if self._ids:
            a = np.asarray(x)
            if a.dtype.kind not in "iuf" and a.dtype != bool:
                raise TypeError(f"stream.step: expected integer token ids, got dtype {a.dtype}")
            if a.ndim == 0:
                scalar_id = True
                a = a.reshape(1)
            if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
                raise ValueError("stream.step: token ids must be integers")
            x = np.ascontiguousarray(a, np.int64)
        else:
            a = np.asarray(x)
            if a.dtype.kind not in "iufb":
                raise TypeError(f"stream.step: expected a numeric array, got dtype {a.dtype}")
            x = np.ascontiguousarray(a, self.dtype)
        if x.ndim not in (1, 2) or (self._ids and x.ndim != 1):
            self._fail(x)
        res = self._out1 if scalar_id else self._outs[x.ndim]
        if res is None:
            self._fail(x)
        if out is not None:
            self._check_out(out, res.shape)  # before the state moves
        if self._kernel(x, self._W, self._buf, self._meta):
            self._fail(x)
        if out is not None:
            out[...] = res
            return out
        return res.copy() if copy else res

    def _fail(self, x):
        B, F = self.batch_size, self.input_features
        if self._ids:
            if x.ndim != 1 or x.shape[0] != B:
                raise ValueError(f"stream.step: expected token ids of shape ({B},), got shape {x.shape}")
            V = int(self._meta[1, M_V])
            raise ValueError(f"stream.step: token ids must be integers in [0, {V}), got {x.tolist()}")
        want = f"({F},) or ({B}, {F})" if B == 1 else f"({B}, {F})"
        raise ValueError(f"stream.step: expected one step of shape {want}, got shape {x.shape}")

    def run(self, X, out=None):
        """Step through a whole sequence (convenience; allocates the result unless ``out``).

        Parameters
        ----------
        X : array_like
            ``(batch, time, features)`` (token ids: ``(batch, time)``).
        out : ndarray, optional
            ``(batch, time, out_features)`` of the stream's dtype, written and returned.

        Returns
        -------
        ndarray
            ``(batch, time, out_features)``: the output of every step.
        """
        X = np.asarray(X)
        nd = 2 if self._ids else 3
        if X.ndim != nd or X.shape[0] != self.batch_size:
            raise ValueError(f"stream.run: expected shape (batch={self.batch_size}, time"
                             f"{'' if self._ids else ', features'}), got {X.shape}")
        shape = (X.shape[0], X.shape[1], self.output_features)
        if out is None:
            out = np.empty(shape, self.dtype)
        else:
            self._check_out(out, shape)
        for t in range(X.shape[1]):
            out[:, t] = self.step(np.ascontiguousarray(X[:, t]), copy=False)
        return out

    def __call__(self, x, out=None, *, copy=True):
        """Same as :meth:`step`."""
        return self.step(x, out, copy=copy)

    # ---- state ---------------------------------------------------------------------------
    def reset(self, rows=None):
        """Zero the recurrent state: start new sequences.

        Arrays returned by earlier steps are not touched (only the internal buffer that
        ``step(..., copy=False)`` exposes is).

        Parameters
        ----------
        rows : int, slice or array of int, optional
            Batch rows to reset (the others keep their state); default all.
        """
        if rows is None:
            self._buf[:] = 0.0
            return
        idx = np.arange(self.batch_size)[rows]  # validates the index
        for s in self._states:
            for view in self._state_views(s):
                view[idx] = 0.0

    @property
    def state(self):
        """Copy of the recurrent state: one list per recurrent layer, ``[h]`` (SimpleRNN, GRU)
        or ``[h, c]`` (LSTM), each ``(batch, units)``. Assigning a list of the same structure
        (arrays of the same shapes) sets it; the arrays are copied."""
        out = []
        for s in self._states:
            out.append([a.copy() for a in self._state_views(s)])
        return out

    @state.setter
    def state(self, value):
        if not isinstance(value, (list, tuple)) or len(value) != len(self._states):
            raise ValueError(f"stream.state: expected a list of {len(self._states)} per-layer state lists "
                             f"(one per recurrent layer), got {type(value).__name__}"
                             + (f" of length {len(value)}" if isinstance(value, (list, tuple)) else ""))
        new = []
        for k, (s, v) in enumerate(zip(self._states, value, strict=True)):
            n = 2 if s["cell"] == "lstm" else 1
            label = _layer_label(s["layer"])
            if isinstance(v, np.ndarray) and n == 1:
                v = [v]
            if not isinstance(v, (list, tuple)) or len(v) != n:
                raise ValueError(f"stream.state[{k}] ({label}): expected a list of {n} arrays "
                                 f"({'[h, c]' if n == 2 else '[h]'})")
            arrs = []
            for j, a in enumerate(v):
                a = np.asarray(a)
                if a.dtype.kind not in "iuf":
                    raise TypeError(f"stream.state[{k}][{j}] ({label}): expected a float array, got {a.dtype}")
                if a.shape != (self.batch_size, s["H"]):
                    raise ValueError(f"stream.state[{k}][{j}] ({label}): expected shape "
                                     f"{(self.batch_size, s['H'])}, got {a.shape}")
                arrs.append(a)
            new.append(arrs)
        for s, arrs in zip(self._states, new, strict=True):  # validated: now write
            for view, a in zip(self._state_views(s), arrs, strict=True):
                view[...] = a

    def _state_views(self, s):
        B, H, I = self.batch_size, s["H"], s["I"]
        views = [self._buf[s["xh"]: s["xh"] + B * (I + H)].reshape(B, I + H)[:, I:]]
        if s["c"] is not None:
            views.append(self._buf[s["c"]: s["c"] + B * H].reshape(B, H))
        return views

    def __repr__(self):
        return (f"<Stream batch_size={self.batch_size} in={self.input_features} out={self.output_features} "
                f"dtype={self.dtype} recurrent_layers={len(self._states)}>")


def stream(model, batch_size=1):
    """Compile ``model`` for step-by-step inference; same as ``model.stream(batch_size)``.

    Parameters
    ----------
    model : Sequential
    batch_size : int

    Returns
    -------
    Stream
    """
    return Stream(model, batch_size)
