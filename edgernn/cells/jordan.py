"""Jordan RNN (Jordan 1986; source article 003): the context units are fed from the output.

    h_t = act(W x_t + U y_{t-1} + b)          hidden layer, H units
    y_t = out_act(V h_t + c)                   output layer, O units; the state carried is y

An Elman network (``SimpleRNN``) feeds the hidden layer back; a Jordan network feeds the
network's output back, so the state is ``y`` and the layer's output size is ``O``.

Shapes (functional API, per direction d): ``W`` (D, H, I), ``U`` (D, H, O), ``V`` (D, O, H),
``b`` (D, H), ``c`` (D, O), ``y0`` (B, D, O); outputs ``Y`` (B, T, D, O), ``Y_h`` (B, D, O).

ONNX has no Jordan node: the full-sequence graph is a ``Scan`` whose body is :func:`onnx_step`
(five nodes), and the streaming graph is that step itself.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from .._activations import ACTIVATIONS, ONNX_NAMES, act1, dact1, resolve
from .._config import jit
from ._ops import (
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
    M_W,
    M_X0,
    M_X1,
    emit,
    float_params,
    mv_flat,
)
from .base import Cell, register
from .driver import backward, register_steps, run

JordanCell = namedtuple("JordanCell", "U V b c hcode halpha hbeta ocode oalpha obeta")
JordanGrads = namedtuple("JordanGrads", "U V b c")


@jit(inline="always")
def forward_step(cell, t, g, S, y, aux, lengths):
    """g (B, H) = x_t W^T; S (B, O) the state y; aux (B, 2H + O) = [a | h | z] (pre-activations).

    The two products run over the whole batch, eight weight rows at a time (``mv_flat``: each
    block of U or V is read once per step, not once per sequence); padded rows are computed
    too and then left alone.
    """
    U, V, b, c = cell.U, cell.V, cell.b, cell.c
    H, O = U.shape
    B, NA = aux.shape
    A = aux.reshape(B * NA)
    mv_flat(U.reshape(H * O), 0, O, O, H, S.reshape(B * O), 0, O, B, A, 0, NA, False)  # (B, H) = y_{t-1} U^T
    for r in range(B):
        if t >= lengths[r]:
            continue
        gr, ar = g[r], aux[r]
        for j in range(H):  # a = x W^T + U y_{t-1} + b;  h = act(a)
            acc = ar[j] + gr[j] + b[j]
            ar[j] = acc
            ar[H + j] = act1(cell.hcode, acc, cell.halpha, cell.hbeta)
    mv_flat(V.reshape(O * H), 0, H, H, O, A, H, NA, B, A, 2 * H, NA, False)  # (B, O) = h V^T
    for r in range(B):
        if t >= lengths[r]:
            continue
        ar, s, yr = aux[r], S[r], y[r]
        for k in range(O):  # z = V h + c;  y = out_act(z)
            acc = ar[2 * H + k] + c[k]
            ar[2 * H + k] = acc
            yv = act1(cell.ocode, acc, cell.oalpha, cell.obeta)
            s[k] = yv
            yr[k] = yv


@jit(inline="always")
def _add_outer(dM, A, Z, z0, t, lengths):
    """dM (m, n) += sum over the sequences r not padded at t of A[r, :m]^T Z[r, z0:z0 + n]: one
    row of dM at a time through all sequences (it stays in L1; updating the whole matrix once
    per sequence moved it through L2 B times per step)."""
    m, n = dM.shape
    for i in range(m):
        dMi = dM[i]
        for r in range(A.shape[0]):
            if t >= lengths[r]:
                continue
            a = A[r, i]
            z = Z[r, z0:z0 + n]
            for j in range(n):
                dMi[j] += a * z[j]


@jit(inline="always")
def backward_step(cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths):
    """dS (B, O): dL/dy_t in, dL/dy_{t-1} out; da (B, H) = dL/da (the hidden pre-activation).

    In phases over the batch, every inner loop along a contiguous row; the weight gradients
    by ``_add_outer``.
    """
    U, V = cell.U, cell.V
    dU, dV, db, dc = grads.U, grads.V, grads.b, grads.c
    H, O = U.shape
    B = dS.shape[0]
    for r in range(B):
        if t >= lengths[r]:
            continue
        ar, yn, ds, dar, dyr = aux[r], Sn[r], dS[r], da[r], dy[r]
        for k in range(O):  # dz, parked in dS[r] (its old value is read here only)
            ds[k] = (ds[k] + dyr[k]) * dact1(cell.ocode, ar[2 * H + k], yn[k], cell.oalpha, cell.obeta)
            dc[k] += ds[k]
        for k in range(O):  # dh = V^T dz into da[r] (zeros on entry)
            dz = ds[k]
            Vk = V[k]
            for j in range(H):
                dar[j] += Vk[j] * dz
        for j in range(H):  # da = dh * act'(a)
            d = dar[j] * dact1(cell.hcode, ar[j], ar[H + j], cell.halpha, cell.hbeta)
            dar[j] = d
            db[j] += d
    _add_outer(dV, dS, aux, H, t, lengths)  # dV += dz^T h
    _add_outer(dU, da, Sp, 0, t, lengths)  # dU += da^T y_{t-1}
    for r in range(B):  # dL/dy_{t-1} = U^T da
        if t >= lengths[r]:
            continue
        ds, dar = dS[r], da[r]
        ds[:] = 0.0
        for j in range(H):
            d = dar[j]
            Uj = U[j]
            for k in range(O):
                ds[k] += Uj[k] * d


register_steps(JordanCell, forward_step, backward_step)


def sizes(P, D, I):
    """Validate the parameters' shapes; the sizes the driver needs."""
    W, U, V, b, c = (P.get(k) for k in ("W", "U", "V", "b", "c"))
    if U is None or U.ndim != 3 or U.shape[0] != D or min(U.shape[1:]) < 1:
        raise ValueError(f"U: expected shape (num_directions={D}, hidden, output), got {getattr(U, 'shape', None)}")
    H, O = U.shape[1:]
    for name, arr, shape, what in (("W", W, (D, H, I), "(num_directions, hidden, input_size)"),
                                   ("V", V, (D, O, H), "(num_directions, output, hidden)"),
                                   ("b", b, (D, H), "(num_directions, hidden)"),
                                   ("c", c, (D, O), "(num_directions, output)")):
        if (arr is None and name in ("W", "V")) or (arr is not None and arr.shape != shape):
            raise ValueError(f"{name}: expected shape {what} = {shape} (hidden and output sizes from U {U.shape}, "
                             f"input size from X), got {getattr(arr, 'shape', None)}")
    return dict(H=H, O=O, GH=H, NS=O, NA=2 * H + O, widths=(O,))


def make_cell(P, d, options, dt):
    H, O = P["U"].shape[1:]
    b = np.zeros(H, dt) if P.get("b") is None else np.ascontiguousarray(P["b"][d])
    c = np.zeros(O, dt) if P.get("c") is None else np.ascontiguousarray(P["c"][d])
    (hc, ha, hb), (oc, oa, ob) = options["codes"][d]
    return JordanCell(np.ascontiguousarray(P["U"][d]), np.ascontiguousarray(P["V"][d]), b, c,
                      np.int64(hc), dt.type(ha), dt.type(hb), np.int64(oc), dt.type(oa), dt.type(ob))


def make_grads(cell):
    return JordanGrads(np.zeros_like(cell.U), np.zeros_like(cell.V), np.zeros_like(cell.b), np.zeros_like(cell.c))


def grads_dict(grads):
    return {"U": grads.U, "V": grads.V, "b": grads.b, "c": grads.c}


def _options(activation, output_activation, D, dt, alphas=None, betas=None):
    for arg, name in (("activation", activation), ("output_activation", output_activation)):
        if not isinstance(name, str) or name.lower() not in ACTIVATIONS:  # (resolve would say "activation[1]")
            raise (ValueError if isinstance(name, str) else TypeError)(
                f"{arg}: unknown activation {name!r:.40}; expected one of {', '.join(ONNX_NAMES.values())}")
    names = []
    for _ in range(D):
        names += [activation, output_activation]
    codes, al, be = resolve(names, CELL.default_activations, D, dt, alphas, betas, arg="activation")
    return {"codes": [[(int(codes[d, k]), float(al[d, k]), float(be[d, k])) for k in range(2)] for d in range(D)]}


def example_params(rng, D, I, H, dtype=np.float64):
    """Random parameters for tests: (params, {state name: width}, output size); O = H // 2 + 1."""
    O = H // 2 + 1
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return dict(W=r(D, H, I) * 0.5, U=r(D, H, O) * 0.5, V=r(D, O, H) * 0.5, b=r(D, H) * 0.5, c=r(D, O) * 0.5), \
        {"y": O}, O


def jordan(X, W, U, V, b=None, c=None, y0=None, lengths=None, direction="forward", activation="Tanh",
           output_activation="Tanh", activation_alpha=None, activation_beta=None, train=False):
    """Jordan RNN over a batch of sequences: ``h_t = act(W x_t + U y_{t-1} + b)``,
    ``y_t = out_act(V h_t + c)``.

    Parameters
    ----------
    X : array (B, T, I)
    W : array (D, H, I)
    U : array (D, H, O)
    V : array (D, O, H)
    b : array (D, H), optional
    c : array (D, O), optional
    y0 : array (B, D, O), optional
        Initial output (the state).
    lengths : int array (B,), optional
    direction : {"forward", "reverse", "bidirectional"}
    activation, output_activation : str
        ONNX activation names; default ``Tanh`` for both.
    activation_alpha, activation_beta : list of float, optional
        For the activations that take them, in order (hidden, output per direction).
    train : bool

    Returns
    -------
    Y : array (B, T, D, O)
    Y_h : array (B, D, O)
    cache : only if ``train``
    """
    D = 2 if direction == "bidirectional" else 1
    dt = np.dtype(np.float64 if np.asarray(X).dtype == np.float64 else np.float32)
    opts = _options(activation, output_activation, D, dt, activation_alpha, activation_beta)
    Y, finals, cache = run(CELL, X, {"W": W, "U": U, "V": V, "b": b, "c": c}, {"y": y0}, lengths, direction,
                           opts, train)
    return (Y, finals[0], cache) if train else (Y, finals[0])


def jordan_backward(cache, dY, dY_h=None):
    """Gradients of :func:`jordan` by BPTT: dict with ``X, W, U, V, b, c, y0`` (those given)."""
    return backward(CELL, cache, dY, [dY_h])


# ---- streaming ----------------------------------------------------------------------------
@jit
def stream_step(meta, li, Wf, buf, B, rev):
    """One step: [x | y] [W | U]^T in one pass, h = act(. + b), y = out_act(V h + c)."""
    m = meta[li]
    I, O, H = m[M_I], m[M_O], m[M_X0]
    ld = I + O
    xy, g, hb, out, outs, vo = m[M_IN], m[M_G], m[M_S], m[M_OUT], m[M_OUTS], meta[0, H_VALID]
    fp = m[M_F]
    rseq = (m[M_FLAGS] & F_RSEQ) != 0
    mv_flat(Wf, m[M_W], ld, ld, H, buf, xy, ld, B, buf, g, H, rev)
    bv = Wf[m[M_BIAS]: m[M_BIAS] + H]
    for r in range(B):
        if buf[vo + r] != 0.0:
            a = buf[g + r * H: g + r * H + H]
            h = buf[hb + r * H: hb + r * H + H]
            for j in range(H):
                h[j] = act1(m[M_C0], a[j] + bv[j], Wf[fp], Wf[fp + 3])
    mv_flat(Wf, m[M_X1], H, H, O, buf, hb, H, B, buf, m[M_P], O, rev)  # z = V h
    cv = Wf[m[M_X1] + O * H: m[M_X1] + O * H + O]
    for r in range(B):
        y = buf[xy + r * ld + I: xy + r * ld + ld]
        valid = buf[vo + r] != 0.0
        if valid:
            z = buf[m[M_P] + r * O: m[M_P] + r * O + O]
            for k in range(O):
                y[k] = act1(m[M_C1], z[k] + cv[k], Wf[fp + 1], Wf[fp + 4])
        emit(valid, y, buf[out + r * outs: out + r * outs + O], rseq)


def stream_pack(layer, pk, B, dtype):
    """Pack ``layer``: ``[W | U]`` fused (H, I + O), ``V`` then ``c``; ``[x | y]`` rows in one buffer."""
    p = layer.params
    W, U, V = p["W"][0], p["U"][0], p["V"][0]
    H, O = int(layer.hidden_units), int(layer.units)
    I = W.shape[1]
    b = p["b"][0] if "b" in p else np.zeros(H, dtype)
    c = p["c"][0] if "c" in p else np.zeros(O, dtype)
    if W.shape != (H, I) or U.shape != (H, O) or V.shape != (O, H) or b.shape != (H,) or c.shape != (O,):
        raise ValueError(f"stream: layer {layer.name!r} (JordanRNN, units={H}, output_units={O}) has W {W.shape}, "
                         f"U {U.shape}, V {V.shape}, b {b.shape}, c {c.shape}")
    opts = _options(*layer.onnx_activations[:2], 1, np.dtype(dtype), layer.activation_alpha, layer.activation_beta)
    (hc, ha, hbeta), (oc, oa, ob) = opts["codes"][0]
    m = dict(type=STREAM_OP, I=I, O=O, X0=H, F=float_params(pk, [ha, oa], [hbeta, ob]), C0=hc, C1=oc,
             FLAGS=F_RSEQ if layer.return_sequences else 0)
    m["W"] = pk.add_w(np.concatenate([W, U], axis=1))  # (H, I + O)
    m["X1"] = pk.add_w(V)
    pk.add_w(c)  # right after V
    m["BIAS"] = pk.add_w(b)
    m["G"] = pk.add_buf(B * H)
    m["S"] = pk.add_buf(B * H)  # h
    m["P"] = pk.add_buf(B * O)  # V h
    m["IN"] = pk.add_buf(B * (I + O))  # [x, y] rows: the input slot and the state y
    m["INS"] = I + O
    return m, [(m["IN"] + I, I + O, O)]


# ---- ONNX: the step as graph nodes (a Scan body, or the streaming graph) -------------------
def onnx_step(g, layer, d, x, states, base):
    """Write one step: ``x`` (B, I) and ``states["y"]`` (B, O) in; returns (y, {"y": y}).

    Five nodes: Concat([x, y]) -> Gemm with [W | U] (+ b) -> act -> Gemm with V (+ c) -> out_act.
    """
    from ..onnx.converters import onnx_activation

    p = layer.params
    H, O = int(layer.hidden_units), int(layer.units)
    W, U, V = p["W"][d], p["U"][d], p["V"][d]
    b = p["b"][d] if "b" in p else np.zeros(H, np.float32)
    c = p["c"][d] if "c" in p else np.zeros(O, np.float32)
    acts = layer.onnx_activations[2 * d: 2 * d + 2]
    ab = layer.alpha_beta_per_activation()[2 * d: 2 * d + 2]
    xy = g.op("Concat", [x, states["y"]], axis=1, base=f"{base}_xy")
    f32 = np.float32
    a = g.op("Gemm", [xy, g.initializer(f"{base}_WU", np.concatenate([W, U], axis=1).astype(f32)),
                      g.initializer(f"{base}_b", b.astype(f32))], transB=1, base=f"{base}_a")
    h = onnx_activation(g, acts[0], a, *ab[0], base=f"{base}_h")
    z = g.op("Gemm", [h, g.initializer(f"{base}_V", V.astype(f32)), g.initializer(f"{base}_c", c.astype(f32))],
             transB=1, base=f"{base}_z")
    y = onnx_activation(g, acts[1], z, *ab[1], base=f"{base}_y")
    return y, {"y": y}


# ---- the layer ----------------------------------------------------------------------------
def _layer_class():
    from .. import initializers
    from ..layers import register as register_layer
    from ..layers.recurrent import KERAS_TO_ONNX, RecurrentLayer, _keras_activation

    @register_layer
    class JordanRNN(RecurrentLayer):
        """Jordan network: the output is fed back. ``h_t = act(W x_t + U y_{t-1} + b)``,
        ``y_t = out_act(V h_t + c)``; the layer outputs ``y`` (``output_units`` features).

        Parameters
        ----------
        units : int
            Hidden units H.
        output_units : int, optional
            Output (and state) size O; default ``units``.
        activation, output_activation : str
            Keras names; default ``"tanh"`` for both.
        kernel_initializer : str
            For ``W`` and ``V``; default ``glorot_uniform``.
        recurrent_initializer : str
            For ``U`` (H, O); default ``orthogonal``.
        Other parameters as ``SimpleRNN`` (``clip`` excepted).
        """

        cell = "jordan"
        gates = 1
        num_states = 1

        def __init__(self, units, output_units=None, activation="tanh", output_activation="tanh", **kwargs):
            if kwargs.get("clip") is not None:
                raise ValueError("JordanRNN: clip is not supported")
            if "recurrent_activation" in kwargs:
                raise TypeError("JordanRNN has no recurrent_activation (use output_activation)")
            hidden = int(units)
            if hidden < 1:
                raise ValueError(f"JordanRNN: units must be >= 1, got {units}")
            out = hidden if output_units is None else output_units
            if isinstance(out, bool) or int(out) != out or int(out) < 1:
                raise ValueError(f"JordanRNN: output_units must be a positive integer, got {output_units!r}")
            super().__init__(int(out), activation=activation, **kwargs)
            self.hidden_units = hidden
            self.output_activation = _keras_activation(output_activation)

        def _keras_activations(self):
            return [self.activation, self.output_activation]

        def alpha_beta_per_activation(self):
            """(alpha, beta) for each ONNX activation, per direction."""
            return [(KERAS_TO_ONNX[a][1], KERAS_TO_ONNX[a][2]) for a in self._keras_activations()] * \
                self.num_directions

        def _build(self, input_shape, rng):
            if len(input_shape) != 2 or input_shape[-1] is None:
                raise ValueError(f"JordanRNN {self.name!r}: expects input (batch, time, features) with a known "
                                 f"feature count, got sample shape {input_shape}")
            I, H, O, D = input_shape[-1], self.hidden_units, self.units, self.num_directions
            kinit = initializers.get(self.kernel_initializer)
            rinit = initializers.get(self.recurrent_initializer)
            binit = initializers.get(self.bias_initializer)
            self.params["W"] = np.stack([kinit((I, H), rng, self.dtype).T for _ in range(D)])  # (D, H, I)
            self.params["U"] = np.stack([rinit((O, H), rng, self.dtype).T for _ in range(D)])  # (D, H, O)
            self.params["V"] = np.stack([kinit((H, O), rng, self.dtype).T for _ in range(D)])  # (D, O, H)
            if self.use_bias:
                self.params["b"] = np.stack([binit((H,), rng, self.dtype) for _ in range(D)])
                self.params["c"] = np.stack([binit((O,), rng, self.dtype) for _ in range(D)])

        def onnx_weights(self):
            return dict(self.params)

        def _run(self, x, init, lengths, train):
            p = self.params
            acts = self.onnx_activations
            out = jordan(x, p["W"], p["U"], p["V"], p.get("b"), p.get("c"), init[0], lengths=lengths,
                         direction=self.direction, activation=acts[0], output_activation=acts[1],
                         activation_alpha=self.activation_alpha, activation_beta=self.activation_beta, train=train)
            return out[0], out[1], None, (out[2] if train else None)

        def _run_backward(self, cache, dY, dY_h, dY_c):
            return jordan_backward(cache, dY, dY_h)

        def get_config(self):
            cfg = super().get_config()
            cfg.pop("clip", None)
            return {**cfg, "units": self.hidden_units, "output_units": self.units,
                    "output_activation": self.output_activation}

    return JordanRNN


STREAM_OP = 8
CELL = register(Cell("jordan", gates=1, state_names=("y",), default_activations=("Tanh", "Tanh"), onnx_op=None,
                     stream_op=STREAM_OP, module=__name__, functional=("jordan", "jordan_backward"),
                     layers=("JordanRNN",)))
JordanRNN = _layer_class()
