"""IndRNN (Li, Li, Cook, Zhu, Gao, CVPR 2018): independently recurrent neurons.

    h_t = act(W x_t + u * h_{t-1} + b)          u: one recurrent weight per unit

Each unit sees only its own past, so the gradient through time of unit n is a product of
``u_n * act'(.)``: the paper bounds ``|u_n|`` to keep it from exploding or vanishing over T
steps and stacks layers for interaction between units. ReLU is the paper's activation.

Shapes (functional API, per direction d): ``W`` (D, H, I), ``u`` (D, H), ``b`` (D, H),
``h0`` (B, D, H); outputs ``Y`` (B, T, D, H), ``Y_h`` (B, D, H).

Initialisation and constraint (the paper, section 4, and its reference code,
Sunnydreamrain/IndRNN): input weights ``W`` from a zero-mean distribution (we use Keras'
``glorot_uniform``); recurrent weights ``u`` uniform in ``[0, u_max]`` with
``u_max = 2 ** (1 / T)`` for an expected sequence length T (``max_timesteps``), so that no unit
can grow the gradient by more than 2x over the sequence; after every optimizer update ``u`` is
clipped to ``[-u_max, u_max]`` (``recurrent_max_abs``, or ``2 ** (1 / max_timesteps)`` when
only that is given; no clip when neither is). The reference code (``Indrnn_plainnet.py``,
``u_lastlayer_ini``) also starts the *last* layer's ``u`` in ``[(1/2) ** (1/T), 2 ** (1/T)]``
for long-memory tasks; examples/indrnn_adding.py shows that (it sets ``u`` after ``build``).

ONNX: exactly a native ``RNN`` node with ``R = diag(u)``, ``Wb = b``, ``Rb = 0`` and the same
activation (checked against onnxruntime by the conformance suite).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from .._activations import act1, dact1, resolve
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
    M_P,
    M_W,
    emit,
    float_params,
    mv_flat,
)
from .base import Cell, register
from .driver import backward, register_steps, run

# ---- the cell's parameters as the jitted steps see them (one direction) -------------------
IndRNNCell = namedtuple("IndRNNCell", "u b code alpha beta")  # u, b (H,); activation code and alpha/beta
IndRNNGrads = namedtuple("IndRNNGrads", "u b")


@jit(inline="always")
def forward_step(cell, t, g, S, y, aux, lengths):
    """g (B, H) = x_t W^T; S (B, H) the state h; aux (B, H) keeps the pre-activation."""
    u, b = cell.u, cell.b
    for r in range(S.shape[0]):
        if t >= lengths[r]:
            continue
        gr, h, a, yr = g[r], S[r], aux[r], y[r]
        for j in range(h.shape[0]):
            v = gr[j] + u[j] * h[j] + b[j]  # pre-activation
            a[j] = v
            hv = act1(cell.code, v, cell.alpha, cell.beta)
            h[j] = hv
            yr[j] = hv


@jit(inline="always")
def backward_step(cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths):
    """dS (B, H): dL/dh_t in, dL/dh_{t-1} out; da (B, H) = dL/d(pre-activation)."""
    u = cell.u
    du, db = grads.u, grads.b
    for r in range(dS.shape[0]):
        if t >= lengths[r]:
            continue
        hp, hn, a, dh, dar, dyr = Sp[r], Sn[r], aux[r], dS[r], da[r], dy[r]
        for j in range(dh.shape[0]):
            d = (dh[j] + dyr[j]) * dact1(cell.code, a[j], hn[j], cell.alpha, cell.beta)
            dar[j] = d
            du[j] += d * hp[j]
            db[j] += d
            dh[j] = d * u[j]


register_steps(IndRNNCell, forward_step, backward_step)


# ---- sizes and parameter packing for the generic driver -----------------------------------
def sizes(P, D, I):
    """Validate the parameters' shapes; the sizes the driver needs."""
    W, u, b = P.get("W"), P.get("u"), P.get("b")
    if u is None or u.ndim != 2 or u.shape[0] != D or u.shape[1] < 1:
        raise ValueError(f"u: expected shape (num_directions={D}, hidden), got {getattr(u, 'shape', None)}")
    H = u.shape[1]
    if W is None or W.shape != (D, H, I):
        raise ValueError(f"W: expected shape (num_directions, hidden, input_size) = {(D, H, I)} (hidden size "
                         f"{H} from u {u.shape}, input size {I} from X), got {getattr(W, 'shape', None)}")
    if b is not None and b.shape != (D, H):
        raise ValueError(f"b: expected shape (num_directions, hidden) = {(D, H)} (hidden size from u), got {b.shape}")
    return dict(H=H, O=H, GH=H, NS=H, NA=H, widths=(H,))


def make_cell(P, d, options, dt):
    H = P["u"].shape[1]
    b = np.zeros(H, dt) if P.get("b") is None else np.ascontiguousarray(P["b"][d])
    code, al, be = options["codes"][d]
    return IndRNNCell(np.ascontiguousarray(P["u"][d]), b, np.int64(code), dt.type(al), dt.type(be))


def make_grads(cell):
    return IndRNNGrads(np.zeros_like(cell.u), np.zeros_like(cell.b))


def grads_dict(grads):
    return {"u": grads.u, "b": grads.b}


def _options(activation, activation_alpha, activation_beta, D, dt):
    names = None if activation is None else ([activation] * D if isinstance(activation, str) else list(activation))
    codes, al, be = resolve(names, CELL.default_activations, D, dt, activation_alpha, activation_beta,
                            arg="activation")
    return {"codes": [(int(codes[d, 0]), float(al[d, 0]), float(be[d, 0])) for d in range(D)]}


def example_params(rng, D, I, H, dtype=np.float64):
    """Random parameters for tests: (params, {state name: width}, output size)."""
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return dict(W=r(D, H, I) * 0.5, u=rng.uniform(-1, 1, (D, H)).astype(dtype), b=r(D, H) * 0.5), {"h": H}, H


# ---- functional API (edgernn.functional.indrnn / indrnn_backward) -------------------------
def indrnn(X, W, u, b=None, h0=None, lengths=None, direction="forward", activation="Relu",
           activation_alpha=None, activation_beta=None, train=False):
    """IndRNN over a batch of sequences: ``h_t = act(W x_t + u * h_{t-1} + b)``.

    Parameters
    ----------
    X : array (B, T, I)
    W : array (D, H, I)
    u : array (D, H)
        Element-wise recurrent weights.
    b : array (D, H), optional
    h0 : array (B, D, H), optional
    lengths : int array (B,), optional
        Valid steps per sequence; padded steps output zeros and hold the state.
    direction : {"forward", "reverse", "bidirectional"}
    activation : str or list of str
        ONNX activation name (one, or one per direction); default ``Relu``.
    activation_alpha, activation_beta : list of float, optional
    train : bool
        Also return a cache for :func:`indrnn_backward`.

    Returns
    -------
    Y : array (B, T, D, H)
    Y_h : array (B, D, H)
    cache : only if ``train``
    """
    D = 2 if direction == "bidirectional" else 1
    dt = np.float64 if np.asarray(X).dtype == np.float64 else np.float32
    opts = _options(activation, activation_alpha, activation_beta, D, np.dtype(dt))
    Y, finals, cache = run(CELL, X, {"W": W, "u": u, "b": b}, {"h": h0}, lengths, direction, opts, train)
    return (Y, finals[0], cache) if train else (Y, finals[0])


def indrnn_backward(cache, dY, dY_h=None):
    """Gradients of :func:`indrnn` by BPTT: dict with ``X, W, u, b, h0`` (those given)."""
    return backward(CELL, cache, dY, [dY_h])


# ---- streaming ----------------------------------------------------------------------------
@jit
def stream_step(meta, li, Wf, buf, B, rev):
    """One step: x W^T by ``mv_flat``, then h = act(. + u * h + b) per unit."""
    m = meta[li]
    I, H = m[M_I], m[M_O]
    xin, ins, g, hs, out, outs, vo = m[M_IN], I, m[M_G], m[M_P], m[M_OUT], m[M_OUTS], meta[0, H_VALID]
    fp = m[M_F]
    rseq = (m[M_FLAGS] & F_RSEQ) != 0
    mv_flat(Wf, m[M_W], I, I, H, buf, xin, ins, B, buf, g, H, rev)
    u = Wf[m[M_W] + H * I: m[M_W] + H * I + H]
    bv = Wf[m[M_BIAS]: m[M_BIAS] + H]
    for r in range(B):
        h = buf[hs + r * H: hs + r * H + H]
        valid = buf[vo + r] != 0.0
        if valid:
            a = buf[g + r * H: g + r * H + H]
            for j in range(H):
                h[j] = act1(m[M_C0], a[j] + u[j] * h[j] + bv[j], Wf[fp], Wf[fp + 3])
        emit(valid, h, buf[out + r * outs: out + r * outs + H], rseq)


def stream_pack(layer, pk, B, dtype):
    """Pack ``layer``: W (H, I) then u (H,) in the weights; the state h in its own buffer."""
    W, u, b = layer.params["W"][0], layer.params["u"][0], layer.bias_or_zeros()[0]
    H = int(layer.units)
    I = W.shape[1]
    if W.shape != (H, I) or u.shape != (H,) or b.shape != (H,):
        raise ValueError(f"stream: layer {layer.name!r} (IndRNN, units={H}) has W {W.shape}, u {u.shape}, "
                         f"b {b.shape}; expected ({H}, I), ({H},), ({H},)")
    opts = _options(layer.onnx_activations[0], layer.activation_alpha, layer.activation_beta, 1, np.dtype(dtype))
    code, al, be = opts["codes"][0]
    m = dict(type=STREAM_OP, I=I, O=H, F=float_params(pk, [al], [be]), C0=code,
             FLAGS=F_RSEQ if layer.return_sequences else 0)
    m["W"] = pk.add_w(W)
    pk.add_w(u)  # right after W: the step finds it at W + H*I
    m["BIAS"] = pk.add_w(b)
    m["G"] = pk.add_buf(B * H)
    m["P"] = pk.add_buf(B * H)  # the state h
    return m, [(m["P"], H, H)]


# ---- the layer ----------------------------------------------------------------------------
def _layer_class():
    from .. import initializers
    from ..layers import register as register_layer
    from ..layers.recurrent import RecurrentLayer

    @register_layer
    class IndRNN(RecurrentLayer):
        """Independently recurrent layer (Li et al. 2018): ``h_t = act(W x_t + u * h_{t-1} + b)``.

        Parameters
        ----------
        units : int
        activation : str
            Keras name; default ``"relu"`` (the paper's).
        recurrent_initializer : str
            Default ``"uniform"``: ``u`` uniform in ``[0, u_max]`` (the paper's reference code),
            ``u_max`` as below, or 1 when neither bound is given.
        recurrent_max_abs : float, optional
            After every optimizer update, ``u`` is clipped to ``[-recurrent_max_abs,
            recurrent_max_abs]``.
        max_timesteps : int, optional
            Expected sequence length T; sets ``recurrent_max_abs = 2 ** (1 / T)`` when that is not
            given (the paper's bound: no unit can amplify the gradient more than 2x over T steps).
        Other parameters as ``SimpleRNN`` (``clip`` excepted).
        """

        cell = "indrnn"
        gates = 1
        num_states = 1

        def __init__(self, units, activation="relu", recurrent_initializer="uniform", recurrent_max_abs=None,
                     max_timesteps=None, **kwargs):
            if kwargs.get("clip") is not None:
                raise ValueError("IndRNN: clip is not supported (use recurrent_max_abs)")
            if "recurrent_activation" in kwargs:
                raise TypeError("IndRNN has no recurrent_activation (it has a single activation)")
            if recurrent_initializer != "uniform":
                initializers.get(recurrent_initializer)
            super().__init__(units, activation=activation, **kwargs)
            self.recurrent_initializer = recurrent_initializer
            if max_timesteps is not None and (isinstance(max_timesteps, bool) or int(max_timesteps) != max_timesteps
                                              or max_timesteps < 1):
                raise ValueError(f"IndRNN: max_timesteps must be a positive integer, got {max_timesteps!r}")
            self.max_timesteps = None if max_timesteps is None else int(max_timesteps)
            if recurrent_max_abs is None and self.max_timesteps is not None:
                recurrent_max_abs = 2.0 ** (1.0 / self.max_timesteps)
            if recurrent_max_abs is not None and not float(recurrent_max_abs) > 0:
                raise ValueError(f"IndRNN: recurrent_max_abs must be > 0, got {recurrent_max_abs!r}")
            self.recurrent_max_abs = None if recurrent_max_abs is None else float(recurrent_max_abs)

        def _build(self, input_shape, rng):
            if len(input_shape) != 2 or input_shape[-1] is None:
                raise ValueError(f"IndRNN {self.name!r}: expects input (batch, time, features) with a known "
                                 f"feature count, got sample shape {input_shape}")
            I, H, D = input_shape[-1], self.units, self.num_directions
            kinit = initializers.get(self.kernel_initializer)
            self.params["W"] = np.stack([kinit((I, H), rng, self.dtype).T for _ in range(D)])  # (D, H, I)
            if self.recurrent_initializer == "uniform":
                hi = 1.0 if self.recurrent_max_abs is None else self.recurrent_max_abs
                self.params["u"] = rng.uniform(0.0, hi, size=(D, H)).astype(self.dtype)
            else:
                rinit = initializers.get(self.recurrent_initializer)
                self.params["u"] = np.stack([rinit((H,), rng, self.dtype) for _ in range(D)])
            if self.use_bias:
                binit = initializers.get(self.bias_initializer)
                self.params["b"] = np.stack([binit((H,), rng, self.dtype) for _ in range(D)])  # (D, H)

        def constrain(self):
            """Clip ``u`` to ``[-recurrent_max_abs, recurrent_max_abs]`` (after each update)."""
            if self.recurrent_max_abs is not None and "u" in self.params:
                np.clip(self.params["u"], -self.recurrent_max_abs, self.recurrent_max_abs, out=self.params["u"])

        def bias_or_zeros(self):
            return self.params["b"] if "b" in self.params else np.zeros_like(self.params["u"])

        def onnx_weights(self):
            """As an ONNX ``RNN`` node: ``W``, ``R = diag(u)``, ``Wb = b``, ``Rb = 0``."""
            u = self.params["u"]
            R = np.stack([np.diag(u[d]) for d in range(u.shape[0])])  # (D, H, H)
            return {"W": self.params["W"], "R": R, "Wb": self.bias_or_zeros(), "Rb": np.zeros_like(u), "P": None}

        def _run(self, x, init, lengths, train):
            act = self.onnx_activations[: 1] * self.num_directions
            out = indrnn(x, self.params["W"], self.params["u"], self.params.get("b"), init[0], lengths=lengths,
                         direction=self.direction, activation=act, activation_alpha=self.activation_alpha,
                         activation_beta=self.activation_beta, train=train)
            return out[0], out[1], None, (out[2] if train else None)

        def _run_backward(self, cache, dY, dY_h, dY_c):
            return indrnn_backward(cache, dY, dY_h)

        def get_config(self):
            cfg = super().get_config()
            cfg.pop("clip", None)
            return {**cfg, "recurrent_max_abs": self.recurrent_max_abs, "max_timesteps": self.max_timesteps}

    return IndRNN


STREAM_OP = 9
CELL = register(Cell("indrnn", gates=1, state_names=("h",), default_activations=("Relu",), onnx_op="RNN",
                     stream_op=STREAM_OP, module=__name__, functional=("indrnn", "indrnn_backward"),
                     layers=("IndRNN",)))
IndRNN = _layer_class()
