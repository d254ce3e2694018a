"""FastRNN (Kusupati, Singh, Bhatia, Kumar, Jain, Varma, NeurIPS 2018, "FastGRNN: A Fast,
Accurate, Stable and Tiny Kilobyte Sized Gated Recurrent Neural Network"): a plain RNN with a
trainable residual connection.

    h~_t = tanh(W x_t + U h_{t-1} + b)
    h_t  = sigmoid(alpha) * h~_t + sigmoid(beta) * h_{t-1}          alpha, beta: trainable scalars

The paper shows that with ``alpha`` small and ``beta ~ 1 - alpha`` the gradient through T steps
stays bounded (no explosion or vanishing) without gates.

Shapes (functional API, per direction d): ``W`` (D, H, I), ``U`` (D, H, H), ``b`` (D, H),
``alpha``, ``beta`` (D, 1) (the *logits*: the mix weights are their sigmoids), ``h0`` (B, D, H);
outputs ``Y`` (B, T, D, H), ``Y_h`` (B, D, H).

Where the sources differ, and what we chose
-------------------------------------------
* **alpha and beta through a sigmoid.** The paper's equations write ``alpha``, ``beta`` as
  trainable scalars and its text says they are parameterised by a sigmoid to stay in (0, 1);
  the reference code (microsoft/EdgeML ``edgeml_pytorch/graph/rnn.py``, ``FastRNNCell``) trains
  the logits and uses ``sigmoid(alpha)``, ``sigmoid(beta)``. We do the same: a mix weight can
  never leave (0, 1) after an optimizer step (the stability argument of the paper needs
  ``0 < beta``, ``alpha << 1``), and EdgeML's trained ``alpha``/``beta`` load unchanged.
  Initial logits as EdgeML: ``alpha = -3`` (``sigmoid = 0.047``), ``beta = 3`` (0.953).
* **Initialisation** (where we depart from the reference code, measured). EdgeML draws ``W``
  and ``U`` from ``0.1 * N(0, 1)``, sets ``b`` to ones and the logits to ``alpha = -3``,
  ``beta = 3`` (mix weights 0.047 / 0.953), tuned for long sequences (T in the hundreds) and
  learning rates around 1e-2. With Keras' default Adam (lr 1e-3) that recipe barely moves in
  a short run: the conformance suite's stacked regression (T = 6, 120 updates) lowered the loss
  by 1% with it (needs 30%); with Keras' kernel initializers (``glorot_uniform``,
  ``orthogonal``, zero bias) and logits ``-3 / 3``, by 7%; with logits ``-1 / 1`` (0.27 / 0.73,
  still ``beta ~ 1 - alpha`` as the paper recommends), by 66%. So the layer's defaults are
  Keras' initializers and ``alpha_init=-1, beta_init=1``; EdgeML's exact recipe is
  ``FastRNN(..., kernel_initializer="edgeml_normal", recurrent_initializer="edgeml_normal",
  bias_initializer="ones", alpha_init=-3, beta_init=3)``. The functional API's default logits
  (when ``alpha``/``beta`` are not given) are EdgeML's.
* **Low rank** (``wrank``, ``urank``): EdgeML computes ``x W1 W2`` in two products (row
  vectors). We keep the column-vector convention of the other cells: ``W = W1 W2`` with ``W1``
  (D, H, rw), ``W2`` (D, rw, I) (and ``U = U1 U2``); the layer multiplies them out on the Python
  side before each call (H*r*I flops, negligible next to the sequence) so the time loop, the
  streaming engine and the ONNX graph all see full matrices, and chains the gradient
  (``dW1 = dW W2^T``, ``dW2 = W1^T dW``). The exported ONNX file and the stream therefore store
  the full ``W``, ``U``; ``model_size_bytes()`` counts the factors, as the paper does.
* **Sparsity** (iterative hard thresholding, the paper's section 3.2 and EdgeML's
  ``sparsify``/``sparsifyWithSupport``): ``sparsity=s`` keeps the ``ceil(s * n)`` largest
  magnitudes of every W/U matrix (or factor). Three phases, driven by the layer's
  ``constrain()`` that ``Sequential`` calls after every optimizer update: dense updates for the
  first ``sparsity_warmup`` updates, then hard thresholding after every update, then, after
  ``sparsity_freeze`` updates (if given), the support is fixed and only those weights train.
  The update count and the fixed support live on the layer object (not in saved files: a
  reloaded layer starts again at the dense phase; pass ``sparsity_warmup=0`` to threshold at
  once). EdgeML leaves the phases to its training script; the paper trains dense, then IHT,
  then on the fixed support.
* **Model size**: ``model_size_bytes()`` counts every parameter at 4 bytes (float32) and, for a
  sparsified matrix, its nonzeros (EdgeML's ``get_model_size``, which stores no indices). Pass
  ``index_bytes=2`` to add a 16-bit index per stored nonzero (what a CSR kernel on a
  microcontroller needs).

ONNX: no native node maps exactly (an ``RNN`` node computes ``h = f(W x + R h + b)``; the mix
with ``h_{t-1}`` is outside the activation), so the full-sequence graph is a ``Scan`` whose body
is :func:`onnx_step` (six nodes) and the streaming graph is that step.
"""

from __future__ import annotations

import math
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
    M_W,
    M_X0,
    emit,
    float_params,
    matvec,
    mv_flat,
)
from .base import Cell, register
from .driver import backward, register_steps, run

ALPHA_INIT, BETA_INIT = -3.0, 3.0  # EdgeML's logits

# ---- the cell's parameters as the jitted steps see them (one direction) -------------------
# U (H, H), b (H,); activation code/alpha/beta; sa = sigmoid(alpha), sb = sigmoid(beta) and
# their derivatives sa (1 - sa), sb (1 - sb)
FastRNNCell = namedtuple("FastRNNCell", "U b code aa ab sa sb dsa dsb")
FastRNNGrads = namedtuple("FastRNNGrads", "U b alpha beta")  # alpha, beta (1,): of the logits


@jit(inline="always")
def forward_step(cell, t, g, S, y, aux, lengths):
    """g (B, H) = x_t W^T; S (B, H) the state h; aux (B, 2H) = [a | h~] (a pre-activation)."""
    U, b, sa, sb = cell.U, cell.b, cell.sa, cell.sb
    H = U.shape[0]
    for r in range(S.shape[0]):
        if t >= lengths[r]:
            continue
        gr, h, ar, yr = g[r], S[r], aux[r], y[r]
        matvec(h, U, ar, False)  # ar[:H] = U h_{t-1} (eight dot products at a time), before h changes
        for j in range(H):  # a = x W^T + U h_{t-1} + b
            acc = ar[j] + gr[j] + b[j]
            ar[j] = acc
            ar[H + j] = act1(cell.code, acc, cell.aa, cell.ab)
        for j in range(H):
            hv = sa * ar[H + j] + sb * h[j]
            h[j] = hv
            yr[j] = hv


@jit(inline="always")
def backward_step(cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths):
    """dS (B, H): dL/dh_t in, dL/dh_{t-1} out; da (B, H) = dL/da."""
    U, sa, sb = cell.U, cell.sa, cell.sb
    dU, db, dal, dbe = grads.U, grads.b, grads.alpha, grads.beta
    H = U.shape[0]
    for r in range(dS.shape[0]):
        if t >= lengths[r]:
            continue
        ar, hp, ds, dar, dyr = aux[r], Sp[r], dS[r], da[r], dy[r]
        for j in range(H):
            dh = ds[j] + dyr[j]
            c = ar[H + j]
            dal[0] += dh * c * cell.dsa
            dbe[0] += dh * hp[j] * cell.dsb
            d = dh * sa * dact1(cell.code, ar[j], c, cell.aa, cell.ab)
            dar[j] = d
            db[j] += d
            for k in range(H):
                dU[j, k] += d * hp[k]
            ds[j] = dh * sb
        for j in range(H):  # + U^T da
            d = dar[j]
            for k in range(H):
                ds[k] += U[j, k] * d


register_steps(FastRNNCell, forward_step, backward_step)


def sigmoid(v):
    """Logistic sigmoid of a Python/numpy scalar, in float64."""
    v = float(v)
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def scalar_param(P, name, d, default):
    """The logit ``P[name][d, 0]`` (or ``default`` when absent), as a float."""
    v = P.get(name)
    return default if v is None else float(v[d, 0])


def check_scalars(P, D, names):
    for name in names:
        v = P.get(name)
        if v is not None and v.shape != (D, 1):
            raise ValueError(f"{name}: expected shape (num_directions, 1) = {(D, 1)}, got {v.shape}")


def check_wu(P, D, I, vectors):
    """Validate ``W`` (D, H, I), ``U`` (D, H, H) and the (D, H) vectors; returns H."""
    W, U = P.get("W"), P.get("U")
    if U is None or U.ndim != 3 or U.shape[0] != D or U.shape[1] < 1 or U.shape[1] != U.shape[2]:
        raise ValueError(f"U: expected shape (num_directions={D}, hidden, hidden), got {getattr(U, 'shape', None)}")
    H = U.shape[1]
    if W is None or W.shape != (D, H, I):
        raise ValueError(f"W: expected shape (num_directions, hidden, input_size) = {(D, H, I)} (hidden size "
                         f"{H} from U {U.shape}, input size {I} from X), got {getattr(W, 'shape', None)}")
    for name in vectors:
        v = P.get(name)
        if v is not None and v.shape != (D, H):
            raise ValueError(f"{name}: expected shape (num_directions, hidden) = {(D, H)} (hidden size from U), "
                             f"got {v.shape}")
    return H


# ---- sizes and parameter packing for the generic driver -----------------------------------
def sizes(P, D, I):
    """Validate the parameters' shapes; the sizes the driver needs."""
    H = check_wu(P, D, I, ("b",))
    check_scalars(P, D, ("alpha", "beta"))
    return dict(H=H, O=H, GH=H, NS=H, NA=2 * H, widths=(H,))


def make_cell(P, d, options, dt):
    H = P["U"].shape[1]
    b = np.zeros(H, dt) if P.get("b") is None else np.ascontiguousarray(P["b"][d])
    sa = sigmoid(scalar_param(P, "alpha", d, ALPHA_INIT))
    sb = sigmoid(scalar_param(P, "beta", d, BETA_INIT))
    code, al, be = options["codes"][d]
    return FastRNNCell(np.ascontiguousarray(P["U"][d]), b, np.int64(code), dt.type(al), dt.type(be), dt.type(sa),
                       dt.type(sb), dt.type(sa * (1 - sa)), dt.type(sb * (1 - sb)))


def make_grads(cell):
    z = np.zeros(1, cell.U.dtype)
    return FastRNNGrads(np.zeros_like(cell.U), np.zeros_like(cell.b), z, z.copy())


def grads_dict(grads):
    return {"U": grads.U, "b": grads.b, "alpha": grads.alpha, "beta": grads.beta}


def _options(activation, activation_alpha, activation_beta, D, dt):
    names = None if activation is None else ([activation] * D if isinstance(activation, str) else list(activation))
    codes, al, be = resolve(names, CELL.default_activations, D, dt, activation_alpha, activation_beta,
                            arg="activation")
    return {"codes": [(int(codes[d, 0]), float(al[d, 0]), float(be[d, 0])) for d in range(D)]}


def example_params(rng, D, I, H, dtype=np.float64):
    """Random parameters for tests: (params, {state name: width}, output size)."""
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return dict(W=r(D, H, I) * 0.5, U=r(D, H, H) * 0.4, b=r(D, H) * 0.5, alpha=r(D, 1), beta=r(D, 1)), {"h": H}, H


# ---- functional API (edgernn.functional.fastrnn / fastrnn_backward) -----------------------
def fastrnn(X, W, U, b=None, alpha=None, beta=None, h0=None, lengths=None, direction="forward",
            activation="Tanh", activation_alpha=None, activation_beta=None, train=False):
    """FastRNN over a batch of sequences: ``h~ = act(W x + U h + b)``,
    ``h = sigmoid(alpha) h~ + sigmoid(beta) h_prev``.

    Parameters
    ----------
    X : array (B, T, I)
    W : array (D, H, I)
    U : array (D, H, H)
    b : array (D, H), optional
    alpha, beta : array (D, 1), optional
        Logits of the mix weights; default EdgeML's ``-3`` and ``3``.
    h0 : array (B, D, H), optional
    lengths : int array (B,), optional
        Valid steps per sequence; padded steps output zeros and hold the state.
    direction : {"forward", "reverse", "bidirectional"}
    activation : str or list of str
        ONNX activation name of ``h~`` (one, or one per direction); default ``Tanh``.
    activation_alpha, activation_beta : list of float, optional
        For an activation that takes them (``Affine``, ...); not the mix weights.
    train : bool
        Also return a cache for :func:`fastrnn_backward`.

    Returns
    -------
    Y : array (B, T, D, H)
    Y_h : array (B, D, H)
    cache : only if ``train``
    """
    D = 2 if direction == "bidirectional" else 1
    dt = np.float64 if np.asarray(X).dtype == np.float64 else np.float32
    opts = _options(activation, activation_alpha, activation_beta, D, np.dtype(dt))
    Y, finals, cache = run(CELL, X, {"W": W, "U": U, "b": b, "alpha": alpha, "beta": beta}, {"h": h0}, lengths,
                           direction, opts, train)
    return (Y, finals[0], cache) if train else (Y, finals[0])


def fastrnn_backward(cache, dY, dY_h=None):
    """Gradients of :func:`fastrnn` by BPTT: dict with ``X, W, U, b, alpha, beta, h0`` (those given).

    ``alpha`` and ``beta`` get the gradient of their logits, (D, 1).
    """
    return backward(CELL, cache, dY, [dY_h])


# ---- streaming ----------------------------------------------------------------------------
@jit
def stream_step(meta, li, Wf, buf, B, rev):
    """One step: ``[x | h] [W | U]^T`` in one pass, then ``h = sa act(. + b) + sb h``."""
    m = meta[li]
    I, H = m[M_I], m[M_O]
    ld = I + H
    xh, g, out, outs, vo = m[M_IN], m[M_G], m[M_OUT], m[M_OUTS], meta[0, H_VALID]
    fp = m[M_F]
    rseq = (m[M_FLAGS] & F_RSEQ) != 0
    mv_flat(Wf, m[M_W], ld, ld, H, buf, xh, ld, B, buf, g, H, rev)
    bv = Wf[m[M_BIAS]: m[M_BIAS] + H]
    sa = Wf[m[M_X0]]
    sb = Wf[m[M_X0] + 1]
    for r in range(B):
        h = buf[xh + r * ld + I: xh + r * ld + ld]
        valid = buf[vo + r] != 0.0
        if valid:
            a = buf[g + r * H: g + r * H + H]
            for j in range(H):
                h[j] = sa * act1(m[M_C0], a[j] + bv[j], Wf[fp], Wf[fp + 3]) + sb * h[j]
        emit(valid, h, buf[out + r * outs: out + r * outs + H], rseq)


def stream_pack(layer, pk, B, dtype):
    """Pack ``layer``: ``[W | U]`` fused (H, I + H), ``b``, ``[sa, sb]``; ``[x | h]`` rows in one buffer."""
    W, U = (a[0] for a in layer.full_weights())
    p = layer.params
    H = int(layer.units)
    I = W.shape[1]
    b = p["b"][0] if "b" in p else np.zeros(H, dtype)
    if W.shape != (H, I) or U.shape != (H, H) or b.shape != (H,) or p["alpha"].shape != (1, 1) or \
            p["beta"].shape != (1, 1):
        raise ValueError(f"stream: layer {layer.name!r} (FastRNN, units={H}) has W {W.shape}, U {U.shape}, "
                         f"b {b.shape}, alpha {p['alpha'].shape}, beta {p['beta'].shape}; expected ({H}, I), "
                         f"({H}, {H}), ({H},), (1, 1), (1, 1)")
    opts = _options(layer.onnx_activations[0], layer.activation_alpha, layer.activation_beta, 1, np.dtype(dtype))
    code, al, be = opts["codes"][0]
    m = dict(type=STREAM_OP, I=I, O=H, F=float_params(pk, [al], [be]), C0=code,
             FLAGS=F_RSEQ if layer.return_sequences else 0)
    m["W"] = pk.add_w(np.concatenate([W, U], axis=1))  # (H, I + H)
    m["BIAS"] = pk.add_w(b)
    m["X0"] = pk.add_w(np.array([sigmoid(p["alpha"][0, 0]), sigmoid(p["beta"][0, 0])]))
    m["G"] = pk.add_buf(B * H)
    m["IN"] = pk.add_buf(B * (I + H))  # [x, h] rows: the input slot and the state h
    m["INS"] = I + H
    return m, [(m["IN"] + I, I + H, H)]


# ---- ONNX: the step as graph nodes (a Scan body, or the streaming graph) -------------------
def onnx_step(g, layer, d, x, states, base):
    """Write one step: ``x`` (B, I) and ``states["h"]`` (B, H) in; returns (h, {"h": h}).

    Six nodes: Concat([x, h]) -> Gemm with [W | U] (+ b) -> act -> Mul by sa, Mul by sb, Add.
    """
    from ..onnx.converters import onnx_activation

    p = layer.params
    H = int(layer.units)
    W, U = (a[d] for a in layer.full_weights())
    b = p["b"][d] if "b" in p else np.zeros(H, np.float32)
    f32 = np.float32
    h = states["h"]
    xh = g.op("Concat", [x, h], axis=1, base=f"{base}_xh")
    a = g.op("Gemm", [xh, g.initializer(f"{base}_WU", np.concatenate([W, U], axis=1).astype(f32)),
                      g.initializer(f"{base}_b", b.astype(f32))], transB=1, base=f"{base}_a")
    c = onnx_activation(g, layer.onnx_activations[d], a, *layer.alpha_beta_per_activation()[d], base=f"{base}_c")
    ca = g.op("Mul", [c, g.const(sigmoid(p["alpha"][d, 0]), f32)], base=f"{base}_ca")
    hb = g.op("Mul", [h, g.const(sigmoid(p["beta"][d, 0]), f32)], base=f"{base}_hb")
    hn = g.op("Add", [ca, hb], base=f"{base}_h")
    return hn, {"h": hn}


# ---- the layers' shared options: low rank, sparsity, model size -----------------------------
def _hard_threshold(A, keep):
    """Zero all but the ``ceil(keep * A.size)`` largest magnitudes of ``A`` (in place)."""
    k = int(math.ceil(keep * A.size))
    if k >= A.size:
        return
    flat = np.abs(A).ravel()
    thr = np.partition(flat, A.size - k)[A.size - k]
    mask = np.abs(A) >= thr
    if mask.sum() > k:  # ties at the threshold: keep the first k
        idx = np.flatnonzero(mask.ravel())
        mask.ravel()[idx[k:]] = False
    A[~mask] = 0


def _fast_layer_mixin():
    from ..layers.recurrent import KERAS_TO_ONNX, RecurrentLayer

    class FastLayer(RecurrentLayer):
        """What FastRNN and FastGRNN share: low-rank W/U, sparsity, the model size."""

        _biases = ("b",)
        _scalars = ("alpha", "beta")

        def __init__(self, units, wrank=None, urank=None, sparsity=None, sparsity_warmup=0, sparsity_freeze=None,
                     scalar_inits=None, **kwargs):
            cls = type(self).__name__
            if kwargs.get("clip") is not None:
                raise ValueError(f"{cls}: clip is not supported")
            super().__init__(units, **kwargs)
            for k, v in scalar_inits.items():
                if isinstance(v, (bool, str)) or not np.isfinite(float(v)):
                    raise ValueError(f"{cls}: {k} must be a finite number, got {v!r}")
            self.scalar_inits = {k: float(v) for k, v in scalar_inits.items()}
            for name, v in (("wrank", wrank), ("urank", urank)):
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                    raise ValueError(f"{cls}: {name} must be a positive integer or None, got {v!r}")
            self.wrank = None if wrank is None else int(wrank)
            self.urank = None if urank is None else int(urank)
            if sparsity is not None and (isinstance(sparsity, (bool, str)) or not 0.0 < float(sparsity) <= 1.0):
                raise ValueError(f"{cls}: sparsity (the fraction of W/U weights kept) must be in (0, 1], "
                                 f"got {sparsity!r}")
            self.sparsity = None if sparsity is None or float(sparsity) == 1.0 else float(sparsity)
            for name, v in (("sparsity_warmup", sparsity_warmup), ("sparsity_freeze", sparsity_freeze)):
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                    raise ValueError(f"{cls}: {name} must be a non-negative integer, got {v!r}")
            self.sparsity_warmup = int(sparsity_warmup or 0)
            self.sparsity_freeze = None if sparsity_freeze is None else int(sparsity_freeze)
            if self.sparsity_freeze is not None and self.sparsity_freeze < self.sparsity_warmup:
                raise ValueError(f"{cls}: sparsity_freeze ({sparsity_freeze}) must be >= sparsity_warmup "
                                 f"({sparsity_warmup})")
            self.updates = 0
            self._support = None

        def alpha_beta_per_activation(self):
            """(alpha, beta) for each ONNX activation, per direction."""
            return [(KERAS_TO_ONNX[a][1], KERAS_TO_ONNX[a][2]) for a in self._keras_activations()] * \
                self.num_directions

        # ---- parameters ------------------------------------------------------------------
        def matrix_names(self):
            """The W/U parameters (or their low-rank factors): the ones sparsity applies to."""
            return (("W1", "W2") if self.wrank else ("W",)) + (("U1", "U2") if self.urank else ("U",))

        def _build(self, input_shape, rng):
            cls = type(self).__name__
            if len(input_shape) != 2 or input_shape[-1] is None:
                raise ValueError(f"{cls} {self.name!r}: expects input (batch, time, features) with a known "
                                 f"feature count, got sample shape {input_shape}")
            from .. import initializers

            I, H, D = input_shape[-1], self.units, self.num_directions
            kinit, rinit = initializers.get(self.kernel_initializer), initializers.get(self.recurrent_initializer)
            p = self.params
            # Keras-style (fan_in, fan_out) kernels, transposed to our (out, in) layout
            if self.wrank:
                p["W1"] = np.stack([kinit((self.wrank, H), rng, self.dtype).T for _ in range(D)])  # (D, H, rw)
                p["W2"] = np.stack([kinit((I, self.wrank), rng, self.dtype).T for _ in range(D)])  # (D, rw, I)
            else:
                p["W"] = np.stack([kinit((I, H), rng, self.dtype).T for _ in range(D)])  # (D, H, I)
            if self.urank:
                p["U1"] = np.stack([rinit((self.urank, H), rng, self.dtype).T for _ in range(D)])  # (D, H, ru)
                p["U2"] = np.stack([rinit((H, self.urank), rng, self.dtype).T for _ in range(D)])  # (D, ru, H)
            else:
                p["U"] = np.stack([rinit((H, H), rng, self.dtype).T for _ in range(D)])  # (D, H, H)
            if self.use_bias:
                binit = initializers.get(self.bias_initializer)
                for name in self._biases:
                    p[name] = np.stack([binit((H,), rng, self.dtype) for _ in range(D)])  # (D, H)
            for name in self._scalars:
                p[name] = np.full((D, 1), self.scalar_inits[f"{name}_init"], self.dtype)
            if self.sparsity is not None and self.sparsity_warmup == 0:
                self._threshold()

        def full_weights(self):
            """``W`` (D, H, I) and ``U`` (D, H, H), multiplied out when low rank."""
            p = self.params
            W = p["W1"] @ p["W2"] if self.wrank else p["W"]
            U = p["U1"] @ p["U2"] if self.urank else p["U"]
            return W, U

        def onnx_weights(self):
            W, U = self.full_weights()
            return {**{k: v for k, v in self.params.items() if k not in ("W1", "W2", "U1", "U2")}, "W": W, "U": U}

        def _chain(self, g):
            """Gradients of W, U -> of their factors (low rank)."""
            p = self.params
            if self.wrank:
                dW = g.pop("W")
                g["W1"] = dW @ p["W2"].transpose(0, 2, 1)
                g["W2"] = p["W1"].transpose(0, 2, 1) @ dW
            if self.urank:
                dU = g.pop("U")
                g["U1"] = dU @ p["U2"].transpose(0, 2, 1)
                g["U2"] = p["U1"].transpose(0, 2, 1) @ dU
            return g

        def _input_features(self):
            return (self.params["W2"] if self.wrank else self.params["W"]).shape[2]

        # ---- sparsity (iterative hard thresholding) ------------------------------------
        def _threshold(self):
            for name in self.matrix_names():
                for d in range(self.params[name].shape[0]):
                    _hard_threshold(self.params[name][d], self.sparsity)

        def constrain(self):
            """After each optimizer update: nothing for the first ``sparsity_warmup`` updates,
            then hard thresholding to the ``sparsity`` fraction of largest weights (IHT), then,
            from ``sparsity_freeze`` updates on, the support fixed at that point."""
            if self.sparsity is None:
                return
            self.updates += 1
            if self.updates < self.sparsity_warmup:
                return
            if self.sparsity_freeze is not None and self.updates > self.sparsity_freeze and self._support is not None:
                for name, mask in self._support.items():
                    self.params[name][~mask] = 0
                return
            self._threshold()
            if self.sparsity_freeze is not None and self.updates >= self.sparsity_freeze:
                self._support = {name: self.params[name] != 0 for name in self.matrix_names()}

        def model_size_bytes(self, bytes_per_value=4, index_bytes=0):
            """Bytes to store the layer's parameters.

            Parameters
            ----------
            bytes_per_value : int
                4 for float32 (default), 1 for 8-bit quantised weights, ...
            index_bytes : int
                Bytes of index stored with each nonzero of a sparsified matrix; 0 (default) is
                EdgeML's count (nonzeros only), 2 a 16-bit index per nonzero.

            Returns
            -------
            int
            """
            n = 0
            for name, v in self.params.items():
                if self.sparsity is not None and name in self.matrix_names():
                    n += int(np.count_nonzero(v)) * (bytes_per_value + index_bytes)
                else:
                    n += v.size * bytes_per_value
            return n

        def get_config(self):
            cfg = super().get_config()
            cfg.pop("clip", None)
            return {**cfg, "wrank": self.wrank, "urank": self.urank, "sparsity": self.sparsity,
                    "sparsity_warmup": self.sparsity_warmup, "sparsity_freeze": self.sparsity_freeze,
                    **self.scalar_inits}

    return FastLayer


# ---- the layer ----------------------------------------------------------------------------
def _layer_class():
    from ..layers import register as register_layer

    @register_layer
    class FastRNN(FastLayer):
        """FastRNN (Kusupati et al. 2018): ``h~ = tanh(W x + U h + b)``,
        ``h = sigmoid(alpha) h~ + sigmoid(beta) h_prev`` with trainable scalar logits.

        Parameters
        ----------
        units : int
        activation : str
            Keras name of ``h~``'s activation; default ``"tanh"``.
        wrank, urank : int, optional
            Low rank: ``W = W1 W2`` (W1 (H, wrank), W2 (wrank, I)), ``U = U1 U2``.
        sparsity : float, optional
            Fraction of W/U weights kept by iterative hard thresholding during training.
        sparsity_warmup : int
            Optimizer updates before thresholding starts (dense phase); default 0.
        sparsity_freeze : int, optional
            From this update on the support is fixed (the paper's last phase).
        alpha_init, beta_init : float
            Initial logits of the mix weights; default -1 and 1 (EdgeML: -3 and 3; see the
            module docstring for why and how to get EdgeML's initialisation).
        Other parameters as ``SimpleRNN`` (``clip`` excepted; ``kernel_initializer="edgeml_normal"``
        is EdgeML's ``0.1 * N(0, 1)``).
        """

        cell = "fastrnn"
        gates = 1
        num_states = 1

        def __init__(self, units, activation="tanh", alpha_init=-1.0, beta_init=1.0, **kwargs):
            if "recurrent_activation" in kwargs:
                raise TypeError("FastRNN has no recurrent_activation (it has a single activation)")
            super().__init__(units, activation=activation, scalar_inits=dict(alpha_init=alpha_init,
                                                                             beta_init=beta_init), **kwargs)

        def _run(self, x, init, lengths, train):
            p = self.params
            W, U = self.full_weights()
            out = fastrnn(x, W, U, p.get("b"), p["alpha"], p["beta"], init[0], lengths=lengths,
                          direction=self.direction, activation=self.onnx_activations,
                          activation_alpha=self.activation_alpha, activation_beta=self.activation_beta, train=train)
            return out[0], out[1], None, (out[2] if train else None)

        def _run_backward(self, cache, dY, dY_h, dY_c):
            return self._chain(fastrnn_backward(cache, dY, dY_h))

    return FastRNN


STREAM_OP = 13
CELL = register(Cell("fastrnn", gates=1, state_names=("h",), default_activations=("Tanh",), onnx_op=None,
                     stream_op=STREAM_OP, module=__name__, functional=("fastrnn", "fastrnn_backward"),
                     layers=("FastRNN",)))
FastLayer = _fast_layer_mixin()
FastRNN = _layer_class()
