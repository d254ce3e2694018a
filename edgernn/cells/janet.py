"""JANET (van der Westhuizen & Lasenby 2018, "The unreasonable effectiveness of the forget
gate", arXiv:1804.04849): an LSTM that keeps only its forget gate.

    s_t  = W_f x_t + U_f h_{t-1} + b_f
    c~_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
    c_t  = sigmoid(s_t) * c_{t-1} + (1 - sigmoid(s_t - beta)) * c~_t
    h_t  = c_t

The input gate is tied to the forget gate (``i = 1 - sigmoid(s - beta)``; ``beta`` shifts it so
that a little more information is let in than forgotten), there is no output gate and no output
nonlinearity: the state is the output, so the cell carries one state, ``h``.

Shapes (functional API, per direction d): ``W`` (D, 2H, I), ``U`` (D, 2H, H), ``b`` (D, 2H), the
forget gate's rows first, then the candidate's; ``h0`` (B, D, H); outputs ``Y`` (B, T, D, H),
``Y_h`` (B, D, H).

Where the paper and its reference code (JosvanderWesthuizen/janet, ``aux_code/rnn_cells.py``
and ``model_file.py``) differ, and what we chose:

* The input gate. The paper writes ``1 - sigmoid(s - beta)`` with ``beta = 1``; the code writes
  ``sigmoid(1 - s)``. They are the same function (``1 - sigmoid(z) = sigmoid(-z)``); we keep
  ``beta`` as an argument (default 1, the paper's value; ``beta = 0`` is the plain coupled gate
  ``i = 1 - f``).
* Chrono initialisation (Tallec & Ollivier 2018) of ``b_f``: the paper writes
  ``b_f = log(U[1, T_max - 1])``; the code draws ``log(uniform(1, t_max))`` with ``t_max`` the
  longest sequence. We follow the paper's formula, ``log(uniform(1, chrono_t_max - 1))`` (the
  two differ by ``log(T/(T-1))`` at the top of the range, i.e. nothing for long sequences).
  ``b_c`` starts at zero in both.
* Without ``chrono_t_max`` the reference code starts ``b_f`` at 1 and ``b_c`` at 0 (its
  ``bias_initializer``), like Keras' ``unit_forget_bias``: we do the same.
* Weights: the code uses TensorFlow's default (Glorot uniform) for both the input and the
  recurrent matrices; we use Glorot uniform for ``W`` and, by default, also for ``U``
  (``recurrent_initializer="glorot_uniform"``, not Keras' orthogonal), as the reference does.

ONNX: JANET is exactly a native ``LSTM`` node (gate order i, o, f, c) with the input gate tied
to the forget gate through ``W_i = -W_f``, ``R_i = -U_f``, ``b_i = beta - b_f`` (so that
``sigmoid(beta - s) = 1 - sigmoid(s - beta)``), the output gate saturated (zero weights and a
bias of 100, for which float32 sigmoid is exactly 1, so ``o = 1``), and the activations
``[Sigmoid, Tanh, Affine(1, 0)]``, so ``h = o * Affine(c) = c``. The node's cell state ``c``
is JANET's ``h``: the exporter feeds ``initial_c = initial_h``.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from .._activations import FAST_SIGMOID, FAST_TANH, ONE, act1, fast_tanh, resolve
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
    M_W,
    emit,
    fast_sigmoid,
    float_params,
    mv_flat,
)
from .base import Cell, register
from .driver import backward, register_steps, run

# the output-gate bias of the exported LSTM node: float32 sigmoid(100) == 1 exactly
O_GATE_BIAS = 100.0

# ---- the cell's parameters as the jitted steps see them (one direction) -------------------
# U (2H, H), b (2H,): forget rows then candidate rows; sig/tanh activation codes; beta
JANETCell = namedtuple("JANETCell", "U UT b beta scode tcode")  # UT = U.T, C-contiguous (BLAS: 2x faster)
JANETGrads = namedtuple("JANETGrads", "U b scratch")  # scratch (2H, H): a step's da^T h


# batches of at least this many rows multiply by U with BLAS (np.dot into scratch space);
# smaller ones (streams of one sequence, mostly) with the loops, which skip the call overhead
BLAS_MIN_ROWS = 4


@jit(inline="always")
def _split_aux(aux, H):
    """aux (B, 5H) as two C-contiguous blocks: P (B, 2H), scratch for the products with U, and
    the gates (B, 3H) = [f | i | c~] that BPTT reads."""
    B = aux.shape[0]
    flat = aux.reshape(aux.size)
    return flat[: B * 2 * H].reshape((B, 2 * H)), flat[B * 2 * H:].reshape((B, 3 * H))


@jit(inline="always")
def forward_step(cell, t, g, S, y, aux, lengths):
    """g (B, 2H) = x_t W^T; S (B, H) the state h; aux (B, 5H) = scratch (B, 2H) and the gates
    (B, 3H) = [f | i | c~] kept for BPTT.

    ``P = h U^T``: BLAS for batches, else unit-major loops (the two rows of U of a unit read
    once per step for the whole batch) with plain 2-D indexing (a row view per inner iteration
    was measured 3-5x slower); the gates per row through per-gate views (B views per step).
    """
    U, b, beta = cell.U, cell.b, cell.beta
    B, H = S.shape
    z = S.dtype.type(0.0)
    P, A = _split_aux(aux, H)
    if B >= BLAS_MIN_ROWS:
        np.dot(S, cell.UT, P)
    else:
        for j in range(2 * H):
            for r in range(B):
                acc = z
                for k in range(H):
                    acc += U[j, k] * S[r, k]
                P[r, j] = acc
    bf = b[:H]
    bc = b[H:]
    fast = cell.scode == FAST_SIGMOID and cell.tcode == FAST_TANH  # float32: branch-free loops
    for r in range(B):
        if t >= lengths[r]:
            continue
        # per-row, per-gate views indexed from 0: these loops vectorise (see _ops' notes)
        gf, gc, pf, pc = g[r, :H], g[r, H:], P[r, :H], P[r, H:]
        af, ai, ac = A[r, :H], A[r, H: 2 * H], A[r, 2 * H:]
        if fast:
            for j in range(H):
                sf = gf[j] + bf[j] + pf[j]
                af[j] = fast_sigmoid(sf)
                ai[j] = ONE - fast_sigmoid(sf - beta)
                ac[j] = fast_tanh(gc[j] + bc[j] + pc[j])
        else:
            for j in range(H):
                sf = gf[j] + bf[j] + pf[j]
                af[j] = act1(cell.scode, sf, z, z)  # forget gate
                ai[j] = ONE - act1(cell.scode, sf - beta, z, z)  # input gate, tied to it
                ac[j] = act1(cell.tcode, gc[j] + bc[j] + pc[j], z, z)  # candidate
        h, yr = S[r], y[r]
        for j in range(H):
            hv = af[j] * h[j] + ai[j] * ac[j]
            h[j] = hv
            yr[j] = hv


@jit(inline="always")
def backward_step(cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths):
    """dS (B, H): dL/dh_t in, dL/dh_{t-1} out; da (B, 2H) = dL/d[s | candidate pre-activation]."""
    U = cell.U
    dU, db = grads.U, grads.b
    B, H = dS.shape
    P, A = _split_aux(aux, H)
    dbf = db[:H]
    dbc = db[H:]
    for r in range(B):
        if t >= lengths[r]:
            continue
        af, ai, ac = A[r, :H], A[r, H: 2 * H], A[r, 2 * H:]
        dsf, dsc, dh, hp, dyr = da[r, :H], da[r, H:], dS[r], Sp[r], dy[r]
        for j in range(H):
            dc = dh[j] + dyr[j]
            f, i, ct = af[j], ai[j], ac[j]
            ds = dc * (hp[j] * f * (ONE - f) - ct * i * (ONE - i))
            dcc = dc * i * (ONE - ct * ct)
            dsf[j] = ds
            dsc[j] = dcc
            dbf[j] += ds
            dbc[j] += dcc
            dh[j] = dc * f  # the direct path c_{t-1} -> c_t; the products are added below
    # dU += da^T h_{t-1};  dh_{t-1} += da U  (padded rows: da = 0, dS passes through)
    if B >= BLAS_MIN_ROWS:
        Q = P.reshape(P.size)[: B * H].reshape((B, H))  # the forward scratch, free again
        np.dot(da, U, Q)
        for r in range(B):
            for k in range(H):
                dS[r, k] += Q[r, k]
        np.dot(da.T, Sp, grads.scratch)
        for j in range(2 * H):
            for k in range(H):
                dU[j, k] += grads.scratch[j, k]
    else:
        # each row of U and dU once per step; two loops that each write one array (LLVM
        # vectorises them; fused, it did not)
        for j in range(2 * H):
            for r in range(B):
                d = da[r, j]
                for k in range(H):
                    dU[j, k] += d * Sp[r, k]
                for k in range(H):
                    dS[r, k] += d * U[j, k]


register_steps(JANETCell, forward_step, backward_step)


# ---- sizes and parameter packing for the generic driver -----------------------------------
def sizes(P, D, I):
    """Validate the parameters' shapes; the sizes the driver needs."""
    W, U, b = P.get("W"), P.get("U"), P.get("b")
    if U is None or U.ndim != 3 or U.shape[0] != D or U.shape[2] < 1 or U.shape[1] != 2 * U.shape[2]:
        raise ValueError(f"U: expected shape (num_directions={D}, 2*hidden, hidden) (forget and candidate "
                         f"gates stacked), got {getattr(U, 'shape', None)}")
    H = U.shape[2]
    if W is None or W.shape != (D, 2 * H, I):
        raise ValueError(f"W: expected shape (num_directions, 2*hidden, input_size) = {(D, 2 * H, I)} (hidden "
                         f"size {H} from U {U.shape}, input size {I} from X), got {getattr(W, 'shape', None)}")
    if b is not None and b.shape != (D, 2 * H):
        raise ValueError(f"b: expected shape (num_directions, 2*hidden) = {(D, 2 * H)} (hidden size from U), "
                         f"got {b.shape}")
    return dict(H=H, O=H, GH=2 * H, NS=H, NA=5 * H, widths=(H,))


def make_cell(P, d, options, dt):
    H = P["U"].shape[2]
    b = np.zeros(2 * H, dt) if P.get("b") is None else np.ascontiguousarray(P["b"][d])
    U = np.ascontiguousarray(P["U"][d])
    return JANETCell(U, np.ascontiguousarray(U.T), b, dt.type(options["beta"]), np.int64(options["scode"]),
                     np.int64(options["tcode"]))


def make_grads(cell):
    return JANETGrads(np.zeros_like(cell.U), np.zeros_like(cell.b), np.empty_like(cell.U))


def grads_dict(grads):
    return {"U": grads.U, "b": grads.b}


def _codes(dt):
    """Activation codes (sigmoid, tanh) for ``dt``: the fast forms for float32, exact for float64."""
    codes, _, _ = resolve(["Sigmoid", "Tanh"], ("Sigmoid", "Tanh"), 1, np.dtype(dt))
    return int(codes[0, 0]), int(codes[0, 1])


def _check_beta(beta):
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(beta)):
        raise ValueError(f"beta: expected a finite number, got {beta!r}")
    return float(beta)


def example_params(rng, D, I, H, dtype=np.float64):
    """Random parameters for tests: (params, {state name: width}, output size)."""
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return dict(W=r(D, 2 * H, I) * 0.5, U=r(D, 2 * H, H) * 0.5, b=r(D, 2 * H) * 0.5), {"h": H}, H


# ---- functional API (edgernn.functional.janet / janet_backward) ---------------------------
def janet(X, W, U, b=None, h0=None, lengths=None, direction="forward", beta=1.0, train=False):
    """JANET over a batch of sequences: ``c = sigmoid(s) * c_prev + (1 - sigmoid(s - beta)) * c~``,
    ``h = c``, with ``s = W_f x + U_f h + b_f`` and ``c~ = tanh(W_c x + U_c h + b_c)``.

    Parameters
    ----------
    X : array (B, T, I)
    W : array (D, 2H, I)
        Input weights, forget gate rows ``[0, H)`` then candidate rows ``[H, 2H)``.
    U : array (D, 2H, H)
        Recurrent weights, same row order.
    b : array (D, 2H), optional
        Biases ``b_f``, ``b_c``; zeros when None.
    h0 : array (B, D, H), optional
        Initial state (zeros when None).
    lengths : int array (B,), optional
        Valid steps per sequence; padded steps output zeros and hold the state.
    direction : {"forward", "reverse", "bidirectional"}
    beta : float
        Shift of the tied input gate, ``i = 1 - sigmoid(s - beta)``; default 1 (the paper's).
    train : bool
        Also return a cache for :func:`janet_backward`.

    Returns
    -------
    Y : array (B, T, D, H)
    Y_h : array (B, D, H)
    cache : only if ``train``
    """
    beta = _check_beta(beta)
    dt = np.float64 if np.asarray(X).dtype == np.float64 else np.float32
    sc, tc = _codes(dt)
    opts = {"beta": beta, "scode": sc, "tcode": tc}
    Y, finals, cache = run(CELL, X, {"W": W, "U": U, "b": b}, {"h": h0}, lengths, direction, opts, train)
    return (Y, finals[0], cache) if train else (Y, finals[0])


def janet_backward(cache, dY, dY_h=None):
    """Gradients of :func:`janet` by BPTT.

    Parameters
    ----------
    cache : from ``janet(..., train=True)``
    dY : array (B, T, D, H) or None
        dL/dY.
    dY_h : array (B, D, H), optional
        dL/dY_h.

    Returns
    -------
    dict
        ``X, W, U, b, h0`` (those that were given), each shaped like its input.
    """
    return backward(CELL, cache, dY, [dY_h])


# ---- streaming ----------------------------------------------------------------------------
@jit
def stream_step(meta, li, Wf, buf, B, rev):
    """One step: [x | h] [W | U]^T in one pass (2H rows), then the gates and h per unit."""
    m = meta[li]
    I, H = m[M_I], m[M_O]
    ld = I + H
    xh, g, out, outs, vo = m[M_IN], m[M_G], m[M_OUT], m[M_OUTS], meta[0, H_VALID]
    fp = m[M_F]
    sc, tc = m[M_C0], m[M_C1]
    rseq = (m[M_FLAGS] & F_RSEQ) != 0
    mv_flat(Wf, m[M_W], ld, ld, 2 * H, buf, xh, ld, B, buf, g, 2 * H, rev)
    bv = Wf[m[M_BIAS]: m[M_BIAS] + 2 * H]
    beta = Wf[fp]
    z = Wf[fp] - Wf[fp]
    for r in range(B):
        h = buf[xh + r * ld + I: xh + r * ld + ld]
        valid = buf[vo + r] != 0.0
        if valid:
            a = buf[g + r * 2 * H: g + r * 2 * H + 2 * H]
            for j in range(H):
                s = a[j] + bv[j]
                f = act1(sc, s, z, z)
                i = ONE - act1(sc, s - beta, z, z)
                h[j] = f * h[j] + i * act1(tc, a[H + j] + bv[H + j], z, z)
        emit(valid, h, buf[out + r * outs: out + r * outs + H], rseq)


def stream_pack(layer, pk, B, dtype):
    """Pack ``layer``: ``[W | U]`` fused (2H, I + H), bias (2H,); ``[x | h]`` rows in one buffer."""
    p = layer.params
    W, U = p["W"][0], p["U"][0]
    H = int(layer.units)
    I = W.shape[1] if W.ndim == 2 else -1
    b = p["b"][0] if "b" in p else np.zeros(2 * H, dtype)
    if W.shape != (2 * H, I) or U.shape != (2 * H, H) or b.shape != (2 * H,):
        raise ValueError(f"stream: layer {layer.name!r} (JANET, units={H}) has W {W.shape}, U {U.shape}, "
                         f"b {b.shape}; expected ({2 * H}, I), ({2 * H}, {H}), ({2 * H},)")
    sc, tc = _codes(dtype)
    m = dict(type=STREAM_OP, I=I, O=H, F=float_params(pk, [_check_beta(layer.beta)]), C0=sc, C1=tc,
             FLAGS=F_RSEQ if layer.return_sequences else 0)
    m["W"] = pk.add_w(np.concatenate([W, U], axis=1))  # (2H, I + H)
    m["BIAS"] = pk.add_w(b)
    m["G"] = pk.add_buf(B * 2 * H)
    m["IN"] = pk.add_buf(B * (I + H))  # [x, h] rows: the input slot and the state h
    m["INS"] = I + H
    return m, [(m["IN"] + I, I + H, H)]


# ---- ONNX: a native LSTM node --------------------------------------------------------------
def lstm_weights(W, U, b, beta, dtype=np.float32):
    """JANET's parameters (D, 2H, I), (D, 2H, H), (D, 2H) as the ONNX ``LSTM`` node's ``W``, ``R``,
    ``Wb``, ``Rb`` (gate order i, o, f, c): ``i`` tied to ``f``, ``o`` saturated at 1."""
    D, H2, I = W.shape
    H = H2 // 2
    Wl = np.zeros((D, 4 * H, I), dtype)
    Rl = np.zeros((D, 4 * H, H), dtype)
    Wb = np.zeros((D, 4 * H), dtype)
    Wl[:, :H] = -W[:, :H]
    Wl[:, 2 * H:3 * H] = W[:, :H]
    Wl[:, 3 * H:] = W[:, H:]
    Rl[:, :H] = -U[:, :H]
    Rl[:, 2 * H:3 * H] = U[:, :H]
    Rl[:, 3 * H:] = U[:, H:]
    Wb[:, :H] = beta - b[:, :H]
    Wb[:, H:2 * H] = O_GATE_BIAS
    Wb[:, 2 * H:3 * H] = b[:, :H]
    Wb[:, 3 * H:] = b[:, H:]
    return Wl, Rl, Wb, np.zeros_like(Wb)


# ---- the layer ----------------------------------------------------------------------------
def _layer_class():
    from .. import initializers
    from ..layers import register as register_layer
    from ..layers.recurrent import RecurrentLayer

    @register_layer
    class JANET(RecurrentLayer):
        """JANET (van der Westhuizen & Lasenby 2018): an LSTM with only a forget gate.

        ``c_t = sigmoid(s) * c_{t-1} + (1 - sigmoid(s - beta)) * tanh(W_c x + U_c h + b_c)``,
        ``s = W_f x + U_f h + b_f``, ``h_t = c_t``.

        Parameters
        ----------
        units : int
        beta : float
            Shift of the tied input gate; default 1 (the paper's).
        chrono_t_max : float, optional
            Expected longest time dependency (e.g. the sequence length), > 2: chrono
            initialisation ``b_f = log(uniform(1, chrono_t_max - 1))``, ``b_c = 0``. When None,
            ``b_f = 1`` and ``b_c = 0`` (the reference code's default). Only with ``use_bias``.
        kernel_initializer, recurrent_initializer : str
            For ``W`` (D, 2H, I) and ``U`` (D, 2H, H); both default to ``glorot_uniform`` (the
            reference code's). ``bias_initializer`` is not used (the biases are set as above).
        Other parameters as ``SimpleRNN`` (``clip`` excepted; ``activation`` is tanh and
        ``recurrent_activation`` sigmoid, fixed).

        Attributes
        ----------
        params : dict
            ``W`` (D, 2H, I), ``U`` (D, 2H, H), ``b`` (D, 2H) (with ``use_bias``).
        """

        cell = "janet"
        gates = 2
        num_states = 1

        def __init__(self, units, beta=1.0, chrono_t_max=None, activation="tanh", recurrent_activation="sigmoid",
                     recurrent_initializer="glorot_uniform", **kwargs):
            if kwargs.get("clip") is not None:
                raise ValueError("JANET: clip is not supported")
            if activation != "tanh" or recurrent_activation != "sigmoid":
                raise ValueError(f"JANET: the activations are fixed (tanh candidate, sigmoid gate); got "
                                 f"activation={activation!r}, recurrent_activation={recurrent_activation!r}")
            super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                             recurrent_initializer=recurrent_initializer, **kwargs)
            try:
                self.beta = _check_beta(beta)
            except ValueError as e:
                raise ValueError(f"JANET: {e}") from None
            if chrono_t_max is not None:
                ok = not isinstance(chrono_t_max, bool) and isinstance(chrono_t_max, (int, float, np.integer,
                                                                                   np.floating))
                if not ok or not math.isfinite(float(chrono_t_max)) or not float(chrono_t_max) > 2:
                    raise ValueError(f"JANET: chrono_t_max must be a finite number > 2 (the expected longest "
                                     f"time dependency), got {chrono_t_max!r}")
                chrono_t_max = float(chrono_t_max)
            self.chrono_t_max = chrono_t_max

        def _keras_activations(self):
            return ["sigmoid", "tanh", "linear"]  # the LSTM node's f, g, h: Sigmoid, Tanh, Affine(1, 0)

        def _build(self, input_shape, rng):
            if len(input_shape) != 2 or input_shape[-1] is None:
                raise ValueError(f"JANET {self.name!r}: expects input (batch, time, features) with a known "
                                 f"feature count, got sample shape {input_shape}")
            I, H, D = input_shape[-1], self.units, self.num_directions
            kinit = initializers.get(self.kernel_initializer)
            rinit = initializers.get(self.recurrent_initializer)
            self.params["W"] = np.stack([kinit((I, 2 * H), rng, self.dtype).T for _ in range(D)])  # (D, 2H, I)
            self.params["U"] = np.stack([rinit((H, 2 * H), rng, self.dtype).T for _ in range(D)])  # (D, 2H, H)
            if self.use_bias:
                b = np.zeros((D, 2 * H), self.dtype)
                if self.chrono_t_max is None:
                    b[:, :H] = 1.0
                else:
                    b[:, :H] = np.log(rng.uniform(1.0, self.chrono_t_max - 1.0, size=(D, H)))
                self.params["b"] = b

        def bias_or_zeros(self):
            return self.params["b"] if "b" in self.params else np.zeros((self.num_directions, 2 * self.units),
                                                                        self.params["U"].dtype)

        def onnx_weights(self):
            """As an ONNX ``LSTM`` node (i, o, f, c): ``W``, ``R``, ``Wb``, ``Rb`` (zeros), ``P`` None."""
            Wl, Rl, Wb, Rb = lstm_weights(self.params["W"], self.params["U"], self.bias_or_zeros(), self.beta,
                                          np.float32)
            return {"W": Wl, "R": Rl, "Wb": Wb, "Rb": Rb, "P": None}

        def _run(self, x, init, lengths, train):
            out = janet(x, self.params["W"], self.params["U"], self.params.get("b"), init[0], lengths=lengths,
                        direction=self.direction, beta=self.beta, train=train)
            return out[0], out[1], None, (out[2] if train else None)

        def _run_backward(self, cache, dY, dY_h, dY_c):
            return janet_backward(cache, dY, dY_h)

        def get_config(self):
            cfg = super().get_config()
            cfg.pop("clip", None)
            return {**cfg, "beta": self.beta, "chrono_t_max": self.chrono_t_max}

    return JANET


STREAM_OP = 10
CELL = register(Cell("janet", gates=2, state_names=("h",), default_activations=("Sigmoid", "Tanh", "Affine"),
                     onnx_op="LSTM", stream_op=STREAM_OP, module=__name__, functional=("janet", "janet_backward"),
                     layers=("JANET",)))
JANET = _layer_class()
