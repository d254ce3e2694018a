"""SRU (Lei, Zhang, Wang, Dai, Artzi, EMNLP 2018, "Simple Recurrent Units for Highly
Parallelizable Recurrence"): every matrix product depends on the input only.

    x~_t = W x_t                                       (the candidate)
    f_t  = sigmoid(W_f x_t + v_f * c_{t-1} + b_f)      (forget gate)
    r_t  = sigmoid(W_r x_t + v_r * c_{t-1} + b_r)      (reset / highway gate)
    c_t  = f_t * c_{t-1} + (1 - f_t) * x~_t
    h_t  = r_t * g(c_t) + (1 - r_t) * x'_t             (highway connection)

``v_f``, ``v_r`` are vectors: the recurrence is element-wise, and the four products
``[x~ | W_f x | W_r x | x']`` of all steps are one GEMM before the time loop (the driver's
``G = X W^T``). ``x'_t = s * x_t`` when the input size equals ``units`` (``W`` has 3H rows;
``s`` is the constant ``highway_scale``), otherwise a learnt projection ``W_h x_t`` stacked as a
fourth block (``W`` has 4H rows). Both match the sru package (2.x, ``ops.py``:
``k == 3`` -> ``x_prime = x * scale_x``, ``k == 4`` -> ``x_prime = U[..., 3]``).

Shapes (functional API, per direction d): ``W`` (D, 3H or 4H, I) with row blocks
``[x~, f, r(, x')]``, ``v`` (D, 2H) = ``[v_f | v_r]``, ``b`` (D, 2H) = ``[b_f | b_r]``
(the sru package's ``weight_c`` and ``bias`` layouts), ``h0``, ``c0`` (B, D, H); outputs
``Y`` (B, T, D, H), ``Y_h``, ``Y_c`` (B, D, H). States ``("h", "c")``: ``h`` is the output,
carried only so that ``Y_h`` is the last valid output (``h_t`` does not depend on ``h_{t-1}``).
Padded steps output zeros and hold both states (the sru package's ``mask_pad`` does the same).

Where the sources disagree, and what we chose
---------------------------------------------
* ``g``: the first arXiv version (2017) has ``h = r * tanh(c) + (1 - r) * x``; the EMNLP
  paper (eq. 3-5) and the sru package 2.x (``use_tanh=False``) use the identity. Default:
  identity (ONNX ``Affine(1, 0)``); ``activation="tanh"`` gives the 2017 form.
* The gates' recurrent term: the EMNLP paper and sru 2.x feed ``v * c_{t-1}`` into ``f`` and
  ``r`` (both from the *previous* cell state); the 2017 version had no ``v`` at all. We follow
  2.x (``v`` always present; set it to zero and leave it untrained for the 2017 cell).
* Highway bias: sru 2.x ``SRUCell`` defaults ``highway_bias=0`` (SRU++ uses -2); the bias
  goes to the *reset* gate ``b_r``; ``b_f`` starts at 0. We follow 2.x: ``highway_bias=0``.
* Initialisation (sru 2.x ``reset_parameters``): ``W`` uniform with variance 1/I
  (``+-sqrt(3/I)``); the forget and reset blocks scaled by ``sqrt(1/2)``; ``v`` uniform with
  variance 1/2 (``+-sqrt(3/2)``); with ``rescale=True`` the highway term is scaled by
  ``sqrt(1 + 2 exp(highway_bias))`` (the paper's appendix: keeps the output variance
  of the highway near 1) - as the constant ``highway_scale`` on ``x`` when I == H, folded
  into the initial ``W_h`` block otherwise. We follow all of it (layer options
  ``highway_bias``, ``rescale``).
* Not implemented (sru 2.x options outside the cell's equations): dropout on ``c``/``h``
  (``rnn_dropout``), layer norm, ``n_proj`` / SRU++ attention, ``has_skip_term=False``.

ONNX has no SRU node: the full-sequence graph is a ``Scan`` whose body is :func:`onnx_step`
(ten nodes with the identity ``g``, eleven with tanh), the streaming graph that step itself.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import types
from numba.extending import overload

from .._activations import AFFINE, HALF, ONE, act1, dact1, fast_tanh, resolve
from .._config import jit
from ._ops import (
    F_RSEQ,
    H_VALID,
    M_BIAS,
    M_C,
    M_C0,
    M_F,
    M_FLAGS,
    M_G,
    M_H,
    M_I,
    M_IN,
    M_INS,
    M_O,
    M_OUT,
    M_OUTS,
    M_W,
    M_X0,
    emit,
    float_params,
    mv_flat,
)
from .base import Cell, register
from .driver import backward, register_steps, run

# ---- the cell's parameters as the jitted steps see them (one direction) -------------------
# v, b (2H,) = [v_f | v_r], [b_f | b_r]; activation g as code/alpha/beta
SRUCell = namedtuple("SRUCell", "v b code alpha beta")
SRUGrads = namedtuple("SRUGrads", "v b")


def _sigmoid(x):  # pragma: no cover - replaced by the overload in jitted code
    return 1.0 / (1.0 + np.exp(-x))


@overload(_sigmoid)
def _ov_sigmoid(x):
    """The gates' sigmoid, chosen at compile time from the type: float32 uses the rational
    ``fast_tanh`` (vectorises; max abs error 3.4e-7, as the LSTM kernels' FAST_SIGMOID),
    float64 the exact form."""
    if x == types.float32:
        return lambda x: HALF * fast_tanh(HALF * x) + HALF
    return lambda x: ONE / (ONE + np.exp(-x))


@jit(inline="always")
def forward_step(cell, t, g, S, y, aux, lengths):
    """g (B, 4H) = x_t [W | x'-block]^T: blocks [x~ | f | r | x']; S (B, 2H) = [h | c];
    aux (B, 2H) keeps [f | r] for BPTT."""
    v, b = cell.v, cell.b
    H = v.shape[0] // 2
    ident = cell.code == AFFINE
    al, be = cell.alpha, cell.beta
    for row in range(S.shape[0]):
        if t >= lengths[row]:
            continue
        gr, s, a, yr = g[row], S[row], aux[row], y[row]
        if ident:  # two copies of the loop: the identity g vectorises, a call to act1 would not
            for j in range(H):
                cp = s[H + j]
                xt = gr[j]
                f = _sigmoid(gr[H + j] + v[j] * cp + b[j])
                r = _sigmoid(gr[2 * H + j] + v[H + j] * cp + b[H + j])
                c = xt + (cp - xt) * f
                xp = gr[3 * H + j]
                h = xp + (al * c + be - xp) * r
                a[j] = f
                a[H + j] = r
                s[H + j] = c
                s[j] = h
                yr[j] = h
        else:
            for j in range(H):
                cp = s[H + j]
                xt = gr[j]
                f = _sigmoid(gr[H + j] + v[j] * cp + b[j])
                r = _sigmoid(gr[2 * H + j] + v[H + j] * cp + b[H + j])
                c = xt + (cp - xt) * f
                xp = gr[3 * H + j]
                h = xp + (act1(cell.code, c, al, be) - xp) * r
                a[j] = f
                a[H + j] = r
                s[H + j] = c
                s[j] = h
                yr[j] = h


@jit(inline="always")
def backward_step(cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths):
    """dS (B, 2H): dL/d[h_t | c_t] in, dL/d[h_{t-1} | c_{t-1}] out; da (B, 4H) = dL/dg."""
    v = cell.v
    dv, db = grads.v, grads.b
    H = v.shape[0] // 2
    ident = cell.code == AFFINE
    al, be = cell.alpha, cell.beta
    for row in range(dS.shape[0]):
        if t >= lengths[row]:
            continue
        gr, sp, sn, a, ds, dar, dyr = g[row], Sp[row], Sn[row], aux[row], dS[row], da[row], dy[row]
        if ident:  # two copies of the loop, as in forward_step
            for j in range(H):
                f, r = a[j], a[H + j]
                cp, c, xt, xp = sp[H + j], sn[H + j], gr[j], gr[3 * H + j]
                gc = al * c + be
                dg = al
                dh = ds[j] + dyr[j]
                dc = ds[H + j] + dh * r * dg
                dfp = dc * (cp - xt) * f * (ONE - f)
                drp = dh * (gc - xp) * r * (ONE - r)
                dar[j] = dc * (ONE - f)
                dar[H + j] = dfp
                dar[2 * H + j] = drp
                dar[3 * H + j] = dh * (ONE - r)
                dv[j] += dfp * cp
                dv[H + j] += drp * cp
                db[j] += dfp
                db[H + j] += drp
                ds[H + j] = dc * f + dfp * v[j] + drp * v[H + j]
                ds[j] = 0.0  # h_{t-1} does not enter step t
        else:
            for j in range(H):
                f, r = a[j], a[H + j]
                cp, c, xt, xp = sp[H + j], sn[H + j], gr[j], gr[3 * H + j]
                gc = act1(cell.code, c, al, be)
                dg = dact1(cell.code, c, gc, al, be)
                dh = ds[j] + dyr[j]
                dc = ds[H + j] + dh * r * dg
                dfp = dc * (cp - xt) * f * (ONE - f)
                drp = dh * (gc - xp) * r * (ONE - r)
                dar[j] = dc * (ONE - f)
                dar[H + j] = dfp
                dar[2 * H + j] = drp
                dar[3 * H + j] = dh * (ONE - r)
                dv[j] += dfp * cp
                dv[H + j] += drp * cp
                db[j] += dfp
                db[H + j] += drp
                ds[H + j] = dc * f + dfp * v[j] + drp * v[H + j]
                ds[j] = 0.0  # h_{t-1} does not enter step t


register_steps(SRUCell, forward_step, backward_step)


# ---- sizes and parameter packing for the generic driver -----------------------------------
def sizes(P, D, I):
    """Validate the parameters' shapes; the sizes the driver needs.

    ``P["W"]`` here is always the (D, 4H, I) matrix the driver multiplies: the functional API
    appends the identity highway block ``highway_scale * I`` when the caller's ``W`` has 3H rows.
    """
    W, v, b = P.get("W"), P.get("v"), P.get("b")
    if v is None or v.ndim != 2 or v.shape[0] != D or v.shape[1] < 2 or v.shape[1] % 2:
        raise ValueError(f"v: expected shape (num_directions={D}, 2*hidden) = [v_f | v_r], "
                         f"got {getattr(v, 'shape', None)}")
    H = v.shape[1] // 2
    if W is None or W.shape != (D, 4 * H, I):
        raise ValueError(f"W: expected shape (num_directions, 3*hidden or 4*hidden, input_size) (hidden size "
                         f"{H} from v, input size {I} from X), got {getattr(W, 'shape', None)}")
    if b is not None and b.shape != (D, 2 * H):
        raise ValueError(f"b: expected shape (num_directions, 2*hidden) = {(D, 2 * H)} = [b_f | b_r] (hidden "
                         f"size from v), got {b.shape}")
    return dict(H=H, O=H, GH=4 * H, NS=2 * H, NA=2 * H, widths=(H, H))


def make_cell(P, d, options, dt):
    H2 = P["v"].shape[1]
    b = np.zeros(H2, dt) if P.get("b") is None else np.ascontiguousarray(P["b"][d])
    code, al, be = options["codes"][d]
    return SRUCell(np.ascontiguousarray(P["v"][d]), b, np.int64(code), dt.type(al), dt.type(be))


def make_grads(cell):
    return SRUGrads(np.zeros_like(cell.v), np.zeros_like(cell.b))


def grads_dict(grads):
    return {"v": grads.v, "b": grads.b}


def _options(activation, activation_alpha, activation_beta, D, dt):
    names = None if activation is None else ([activation] * D if isinstance(activation, str) else list(activation))
    codes, al, be = resolve(names, CELL.default_activations, D, dt, activation_alpha, activation_beta,
                            arg="activation")
    return {"codes": [(int(codes[d, 0]), float(al[d, 0]), float(be[d, 0])) for d in range(D)]}


def example_params(rng, D, I, H, dtype=np.float64):
    """Random parameters for tests: (params, {state name: width}, output size).

    ``W`` has 3H rows (identity highway) when I == H, 4H otherwise."""
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    K = 3 if I == H else 4
    return dict(W=r(D, K * H, I) * 0.5, v=r(D, 2 * H) * 0.5, b=r(D, 2 * H) * 0.5), {"h": H, "c": H}, H


def highway_scale_for(highway_bias):
    """sru 2.x's ``scale_x``: ``sqrt(1 + 2 exp(highway_bias))``."""
    return math.sqrt(1.0 + 2.0 * math.exp(float(highway_bias)))


# ---- functional API (edgernn.functional.sru / sru_backward) -------------------------------
def sru(X, W, v, b=None, h0=None, c0=None, lengths=None, direction="forward", activation=None,
        activation_alpha=None, activation_beta=None, highway_scale=1.0, train=False):
    """SRU over a batch of sequences (Lei et al. 2018; see the module docstring).

    Parameters
    ----------
    X : array (B, T, I)
    W : array (D, 3H, I) or (D, 4H, I)
        Row blocks ``[W (candidate), W_f, W_r]`` and, with 4H rows, ``W_h`` (the highway
        projection of x). 3H rows need I == H: the highway is then ``highway_scale * x``.
    v : array (D, 2H)
        ``[v_f | v_r]``, the element-wise weights of ``c_{t-1}`` in the gates.
    b : array (D, 2H), optional
        ``[b_f | b_r]``.
    h0 : array (B, D, H), optional
        Initial output (only returned as ``Y_h`` for sequences of length 0).
    c0 : array (B, D, H), optional
        Initial cell state.
    lengths : int array (B,), optional
        Valid steps per sequence; padded steps output zeros and hold the states.
    direction : {"forward", "reverse", "bidirectional"}
    activation : str or list of str, optional
        ONNX name of ``g`` (one, or one per direction); default identity (``Affine(1, 0)``).
    activation_alpha, activation_beta : list of float, optional
    highway_scale : float
        Multiplies ``x`` in the identity highway (W with 3H rows); the sru package's
        ``scale_x``. Must stay 1 with a 4H-row ``W`` (scale ``W_h`` instead).
    train : bool
        Also return a cache for :func:`sru_backward`.

    Returns
    -------
    Y : array (B, T, D, H)
    Y_h : array (B, D, H)
    Y_c : array (B, D, H)
    cache : only if ``train``
    """
    D = 2 if direction == "bidirectional" else 1
    dt = np.dtype(np.float64 if np.asarray(X).dtype == np.float64 else np.float32)
    if isinstance(highway_scale, bool) or not isinstance(highway_scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"highway_scale: expected a finite number, got {highway_scale!r:.40}")
    hs = float(highway_scale)
    if not math.isfinite(hs):
        raise ValueError(f"highway_scale: expected a finite number, got {highway_scale!r}")
    Wa = np.asarray(W) if W is not None else None
    vv = np.asarray(v) if v is not None else None
    identity = False
    if Wa is not None and vv is not None and Wa.ndim == 3 and vv.ndim == 2 and vv.shape[1] % 2 == 0:
        H = vv.shape[1] // 2
        if Wa.shape[1] == 3 * H:
            I = Wa.shape[2]
            if I != H:
                raise ValueError(f"W: 3*hidden rows {Wa.shape} (identity highway) need input size == hidden "
                                 f"({H}); give W_h as a fourth block (4*hidden rows) otherwise")
            Xs = np.shape(X)
            if len(Xs) == 3 and Xs[2] != I:
                raise ValueError(f"W: expected shape (num_directions, 3*hidden or 4*hidden, input_size={Xs[2]}) "
                                 f"(input size from X), got {Wa.shape}")
            if Wa.shape[0] == D:
                identity = True
                eye = np.broadcast_to(np.eye(H, dtype=dt) * dt.type(hs), (D, H, H))
                Wa = np.concatenate([Wa.astype(dt, copy=False), eye], axis=1)  # a new array
    if not identity and hs != 1.0 and Wa is not None and Wa.ndim == 3 and vv is not None and vv.ndim == 2 \
            and Wa.shape[1] == 2 * vv.shape[1]:
        raise ValueError(f"highway_scale: only applies to the identity highway (W with 3*hidden rows and "
                         f"input size == hidden); got {highway_scale!r} with W {getattr(Wa, 'shape', None)}")
    opts = _options(activation, activation_alpha, activation_beta, D, dt)
    opts["identity"] = identity
    Y, finals, cache = run(CELL, X, {"W": Wa, "v": v, "b": b}, {"h": h0, "c": c0}, lengths, direction, opts,
                           train)
    return (Y, finals[0], finals[1], cache) if train else (Y, finals[0], finals[1])


def sru_backward(cache, dY, dY_h=None, dY_c=None):
    """Gradients of :func:`sru` by BPTT: dict with ``X, W, v, b, h0, c0`` (those given)."""
    out = backward(CELL, cache, dY, [dY_h, dY_c])
    if cache.args["options"].get("identity") and "W" in out:
        H = cache.args["sizes"]["H"]
        out["W"] = np.ascontiguousarray(out["W"][:, : 3 * H])  # the appended highway block is a constant
    return out


# ---- streaming ----------------------------------------------------------------------------
@jit
def stream_step(meta, li, Wf, buf, B, rev):
    """One step: x [W]^T by ``mv_flat`` (K = 3 or 4 blocks), then the element-wise recurrence."""
    m = meta[li]
    I, H, K = m[M_I], m[M_O], m[M_X0]
    xin, ins, g, hs, cs, out, outs, vo = m[M_IN], m[M_INS], m[M_G], m[M_H], m[M_C], m[M_OUT], m[M_OUTS], \
        meta[0, H_VALID]
    fp = m[M_F]
    rseq = (m[M_FLAGS] & F_RSEQ) != 0
    KH = K * H
    mv_flat(Wf, m[M_W], I, I, KH, buf, xin, ins, B, buf, g, KH, rev)
    v = Wf[m[M_W] + KH * I: m[M_W] + KH * I + 2 * H]
    bv = Wf[m[M_BIAS]: m[M_BIAS] + 2 * H]
    code, al, be, scale = m[M_C0], Wf[fp], Wf[fp + 3], Wf[fp + 1]
    for r in range(B):
        h = buf[hs + r * H: hs + r * H + H]
        valid = buf[vo + r] != 0.0
        if valid:
            c = buf[cs + r * H: cs + r * H + H]
            gr = buf[g + r * KH: g + r * KH + KH]
            x = buf[xin + r * ins: xin + r * ins + I]
            for j in range(H):
                cp = c[j]
                xt = gr[j]
                f = _sigmoid(gr[H + j] + v[j] * cp + bv[j])
                rr = _sigmoid(gr[2 * H + j] + v[H + j] * cp + bv[H + j])
                cn = xt + (cp - xt) * f
                xp = gr[3 * H + j] if K == 4 else scale * x[j]
                c[j] = cn
                h[j] = xp + (act1(code, cn, al, be) - xp) * rr
        emit(valid, h, buf[out + r * outs: out + r * outs + H], rseq)


def stream_pack(layer, pk, B, dtype):
    """Pack ``layer``: W (KH, I) then v (2H,) in the weights; b; the states h and c in buffers."""
    W, v = layer.params["W"][0], layer.params["v"][0]
    b = layer.params["b"][0] if "b" in layer.params else np.zeros_like(v)
    H = int(layer.units)
    I = W.shape[1]
    K = W.shape[0] // H if H else 0
    if K not in (3, 4) or W.shape != (K * H, I) or (K == 3 and I != H) or v.shape != (2 * H,) or \
            b.shape != (2 * H,):
        raise ValueError(f"stream: layer {layer.name!r} (SRU, units={H}) has W {W.shape}, v {v.shape}, "
                         f"b {b.shape}; expected (3*{H} with input {H}, or 4*{H}, I), ({2 * H},), ({2 * H},)")
    opts = _options(layer.onnx_activations[0], layer.activation_alpha, layer.activation_beta, 1, np.dtype(dtype))
    code, al, be = opts["codes"][0]
    scale = layer.highway_scale if K == 3 else 1.0
    m = dict(type=STREAM_OP, I=I, O=H, X0=K, F=float_params(pk, [al, scale], [be]), C0=code,
             FLAGS=F_RSEQ if layer.return_sequences else 0)
    m["W"] = pk.add_w(W)
    pk.add_w(v)  # right after W: the step finds it at W + K*H*I
    m["BIAS"] = pk.add_w(b)
    m["G"] = pk.add_buf(B * K * H)
    m["H"] = pk.add_buf(B * H)
    m["C"] = pk.add_buf(B * H)
    return m, [(m["H"], H, H), (m["C"], H, H)]


# ---- ONNX: the step as graph nodes (a Scan body, or the streaming graph) -------------------
def onnx_step(g, layer, d, x, states, base):
    """Write one step: ``x`` (B, I), ``states["h"]``, ``states["c"]`` (B, H) in; returns
    (h, {"h": h, "c": c}).

    Ten nodes (identity ``g``): Concat([x, c_prev]) -> one Gemm to the five blocks
    ``[f_pre | r_pre | x~ | c_prev - x~ | x']`` (``v * c_prev`` through diagonal blocks,
    the biases in the Gemm's C) -> Split -> 2 Sigmoid -> ``c = x~ + f * (c_prev - x~)``
    (Mul, Add) -> ``h = x' + r * (g(c) - x')`` (Sub, Mul, Add).
    """
    from ..onnx.converters import onnx_activation

    p = layer.params
    H = int(layer.units)
    W = np.asarray(p["W"][d], np.float64)
    K = W.shape[0] // H
    v = np.asarray(p["v"][d], np.float64)
    b = np.asarray(p["b"][d], np.float64) if "b" in p else np.zeros(2 * H)
    Wx, Wfr = W[:H], W[H: 3 * H]
    Wh = W[3 * H:] if K == 4 else np.eye(H) * layer.highway_scale
    eye = np.eye(H)
    zero = np.zeros((H, H))
    # rows: the five output blocks; columns: [x (I) | c_prev (H)]
    M = np.block([[Wfr[:H], np.diag(v[:H])],
                  [Wfr[H:], np.diag(v[H:])],
                  [Wx, zero],
                  [-Wx, eye],
                  [Wh, zero]])
    bias = np.concatenate([b, np.zeros(3 * H)])
    f32 = np.float32
    xc = g.op("Concat", [x, states["c"]], axis=1, base=f"{base}_xc")
    z = g.op("Gemm", [xc, g.initializer(f"{base}_M", M.astype(f32)), g.initializer(f"{base}_bias", bias.astype(f32))],
             transB=1, base=f"{base}_z")
    fp, rp, xt, dlt, xp = g.op("Split", [z, g.const([H] * 5)], axis=1, n_out=5, base=f"{base}_split")
    f = g.op("Sigmoid", [fp], base=f"{base}_f")
    r = g.op("Sigmoid", [rp], base=f"{base}_r")
    c = g.op("Add", [xt, g.op("Mul", [f, dlt], base=f"{base}_fd")], base=f"{base}_c")
    act = layer.onnx_activations[d]
    al, be = layer.activation_alpha_beta()
    if act.lower() == "affine" and al == 1.0 and be == 0.0:
        gc = c
    else:
        gc = onnx_activation(g, act, c, al, be, base=f"{base}_gc")
    rd = g.op("Mul", [r, g.op("Sub", [gc, xp], base=f"{base}_gx")], base=f"{base}_rd")
    h = g.op("Add", [xp, rd], base=f"{base}_h")
    return h, {"h": h, "c": c}


# ---- the layer ----------------------------------------------------------------------------
def _layer_class():
    from .. import initializers
    from ..layers import register as register_layer
    from ..layers.recurrent import KERAS_TO_ONNX, RecurrentLayer

    @register_layer
    class SRU(RecurrentLayer):
        """Simple Recurrent Unit (Lei et al. 2018): all products from the input, an
        element-wise recurrence and a highway connection (see ``edgernn.cells.sru``).

        Parameters
        ----------
        units : int
        activation : str
            Keras name of ``g`` in ``h = r * g(c) + (1 - r) * x'``; default ``"linear"`` (the
            EMNLP paper and the sru package 2.x); ``"tanh"`` is the 2017 version.
        highway_bias : float
            Initial reset-gate bias ``b_r`` (sru 2.x ``highway_bias``, default 0).
        rescale : bool
            Scale the highway term by ``sqrt(1 + 2 exp(highway_bias))`` (sru 2.x, default True):
            the constant ``highway_scale`` on ``x`` when the input size equals ``units``, else
            folded into the initial ``W_h``.
        kernel_initializer : str
            Default ``"lecun_uniform"`` (uniform with variance 1/I, the sru package's); whatever
            the initializer, the forget and reset blocks are then scaled by sqrt(1/2) and, with
            ``rescale``, ``W_h`` by the highway scale (the sru package's recipe).
        recurrent_initializer : str
            For ``v``; default ``"uniform"``, which here means the sru package's uniform with
            variance 1/2 (``+-sqrt(3/2)``); or any other initializer name.
        bias_initializer : str
            Default ``"zeros"`` (then ``b_r = highway_bias``).
        Other parameters as ``SimpleRNN`` (``clip`` excepted).
        """

        cell = "sru"
        gates = 3
        num_states = 2

        def __init__(self, units, activation="linear", highway_bias=0.0, rescale=True,
                     kernel_initializer="lecun_uniform", recurrent_initializer="uniform", **kwargs):
            if kwargs.get("clip") is not None:
                raise ValueError("SRU: clip is not supported")
            if "recurrent_activation" in kwargs:
                raise TypeError("SRU has no recurrent_activation (its gates are sigmoids)")
            super().__init__(units, activation=activation, kernel_initializer=kernel_initializer,
                             recurrent_initializer=recurrent_initializer, **kwargs)
            hb = float(highway_bias)
            if not math.isfinite(hb):
                raise ValueError(f"SRU: highway_bias must be finite, got {highway_bias!r}")
            self.highway_bias = hb
            self.rescale = bool(rescale)

        @property
        def highway_scale(self):
            """The constant on ``x`` in the identity highway (1 without ``rescale``)."""
            return highway_scale_for(self.highway_bias) if self.rescale else 1.0

        def activation_alpha_beta(self):
            _, a, b = KERAS_TO_ONNX[self.activation]
            return a, b

        def _build(self, input_shape, rng):
            if len(input_shape) != 2 or input_shape[-1] is None:
                raise ValueError(f"SRU {self.name!r}: expects input (batch, time, features) with a known "
                                 f"feature count, got sample shape {input_shape}")
            I, H, D = input_shape[-1], self.units, self.num_directions
            K = 3 if I == H else 4
            self.gates = K
            dt = self.dtype
            kinit = initializers.get(self.kernel_initializer)
            W = np.stack([kinit((I, K * H), rng, dt).T for _ in range(D)]).astype(np.float64)  # (D, KH, I)
            W[:, H: 3 * H] *= math.sqrt(0.5)  # the gates' input weights (sru 2.x)
            if K == 4:
                W[:, 3 * H:] *= self.highway_scale
            self.params["W"] = np.ascontiguousarray(W, dtype=dt)
            if self.recurrent_initializer == "uniform":
                lim = math.sqrt(1.5)
                self.params["v"] = rng.uniform(-lim, lim, size=(D, 2 * H)).astype(dt)
            else:
                rinit = initializers.get(self.recurrent_initializer)
                self.params["v"] = np.stack([rinit((2 * H,), rng, dt) for _ in range(D)])
            if self.use_bias:
                binit = initializers.get(self.bias_initializer)
                b = np.stack([binit((2 * H,), rng, dt) for _ in range(D)])
                b[:, H:] += dt.type(self.highway_bias)
                self.params["b"] = b

        def onnx_weights(self):
            return dict(self.params)

        def _run(self, x, init, lengths, train):
            p = self.params
            K = p["W"].shape[1] // self.units
            act = self.onnx_activations[:1] * self.num_directions
            out = sru(x, p["W"], p["v"], p.get("b"), init[0], init[1], lengths=lengths, direction=self.direction,
                      activation=act, activation_alpha=self.activation_alpha, activation_beta=self.activation_beta,
                      highway_scale=self.highway_scale if K == 3 else 1.0, train=train)
            return out[0], out[1], out[2], (out[3] if train else None)

        def _run_backward(self, cache, dY, dY_h, dY_c):
            return sru_backward(cache, dY, dY_h, dY_c)

        def get_config(self):
            cfg = super().get_config()
            cfg.pop("clip", None)
            return {**cfg, "highway_bias": self.highway_bias, "rescale": self.rescale}

    return SRU


STREAM_OP = 11
CELL = register(Cell("sru", gates=3, state_names=("h", "c"), default_activations=("Affine",), onnx_op=None,
                     stream_op=STREAM_OP, module=__name__, functional=("sru", "sru_backward"),
                     layers=("SRU",)))
SRU = _layer_class()
