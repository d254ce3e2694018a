"""FastGRNN (Kusupati, Singh, Bhatia, Kumar, Jain, Varma, NeurIPS 2018, "FastGRNN: A Fast,
Accurate, Stable and Tiny Kilobyte Sized Gated Recurrent Neural Network"): one gate whose
weights are shared with the candidate.

    a_t  = W x_t + U h_{t-1}                       W, U shared by the gate and the candidate
    z_t  = sigmoid(a_t + b_z)
    h~_t = tanh(a_t + b_h)
    h_t  = (zeta (1 - z_t) + nu) h~_t + z_t h_{t-1}     zeta = sigmoid(zeta'), nu = sigmoid(nu')

Against a GRU (three W's and three U's) the cell has one W and one U: a third of the
parameters; with low rank (``W = W1 W2``, ``U = U1 U2``) and sparse W/U trained by iterative
hard thresholding it fits in a few kilobytes.

Shapes (functional API, per direction d): ``W`` (D, H, I), ``U`` (D, H, H), ``bz``, ``bh``
(D, H), ``zeta``, ``nu`` (D, 1) (the logits), ``h0`` (B, D, H); outputs ``Y`` (B, T, D, H),
``Y_h`` (B, D, H).

Where the sources differ, and what we chose
-------------------------------------------
* **zeta and nu.** The paper keeps them in (0, 1) through a sigmoid of trainable scalars;
  the reference code (microsoft/EdgeML ``edgeml_pytorch/graph/rnn.py``, ``FastGRNNCell``) does
  the same and initialises the logits to ``zeta' = 1`` (``zeta = 0.731``) and ``nu' = -4``
  (``nu = 0.018``). We store and train the logits (parameters ``zeta``, ``nu``, shape (D, 1)),
  with EdgeML's initial values, so its trained cells load unchanged.
* **Gate and update nonlinearities.** EdgeML lets both be chosen (``gate_nonlinearity``
  sigmoid, ``update_nonlinearity`` tanh by default); we keep that as Keras'
  ``recurrent_activation`` (gate) and ``activation`` (update).
* **Initialisation**: the logits as EdgeML (``zeta_init=1``, ``nu_init=-4``). EdgeML also draws
  W and U from ``0.1 * N(0, 1)`` and sets both biases to ones; with Keras' default Adam
  (lr 1e-3) that recipe barely trains in a short run (the conformance suite's stacked
  regression, T = 6, 120 updates: loss down 0.5%, needs 30%; down 66% with Keras'
  ``glorot_uniform`` / ``orthogonal`` / zero biases, and only 10% with those kernels and ones
  as biases), so the layer's defaults are Keras' initializers; EdgeML's recipe is
  ``kernel_initializer="edgeml_normal", recurrent_initializer="edgeml_normal",
  bias_initializer="ones"``.
* **Low rank, sparsity, model size**: as FastRNN (see ``edgernn/cells/fastrnn.py``): ``W = W1
  W2`` multiplied out on the Python side with the gradient chained (one code path for the time
  loop, streaming and export; the exported ONNX file stores the full product), IHT through
  the layer's ``constrain()`` with ``sparsity``/``sparsity_warmup``/``sparsity_freeze``,
  ``model_size_bytes()`` counting nonzeros of the sparsified matrices at 4 bytes (EdgeML's
  count; ``index_bytes=2`` adds an index per nonzero).

ONNX: no native node maps exactly: a ``GRU`` node's update is ``(1 - z) h~ + z h``; FastGRNN's
``(zeta (1 - z) + nu) h~`` has the ungated ``nu h~`` term and no reset gate, so the
full-sequence graph is a ``Scan`` whose body is :func:`onnx_step` (eleven nodes) and the
streaming graph is that step.
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
    M_X0,
    emit,
    float_params,
    matvec,
    mv_flat,
)
from .base import Cell, register
from .driver import backward, register_steps, run
from .fastrnn import FastLayer, check_scalars, check_wu, scalar_param, sigmoid

ZETA_INIT, NU_INIT = 1.0, -4.0  # EdgeML's logits

# U (H, H), bz, bh (H,); gate and update activation codes/alphas/betas; zeta, nu (the sigmoids),
# zn = zeta + nu, and dzeta = zeta (1 - zeta), dnu = nu (1 - nu)
FastGRNNCell = namedtuple("FastGRNNCell", "U bz bh zcode za zb hcode ha hb zeta nu zn dzeta dnu")
FastGRNNGrads = namedtuple("FastGRNNGrads", "U bz bh zeta nu")  # zeta, nu (1,): of the logits


@jit(inline="always")
def forward_step(cell, t, g, S, y, aux, lengths):
    """g (B, H) = x_t W^T; S (B, H) the state h; aux (B, 3H) = [a | z | h~] (a = x W^T + U h)."""
    U, bz, bh = cell.U, cell.bz, cell.bh
    H = U.shape[0]
    for r in range(S.shape[0]):
        if t >= lengths[r]:
            continue
        gr, h, ar, yr = g[r], S[r], aux[r], y[r]
        matvec(h, U, ar, False)  # ar[:H] = U h_{t-1} (eight dot products at a time), before h changes
        for j in range(H):
            acc = ar[j] + gr[j]
            ar[j] = acc
            ar[H + j] = act1(cell.zcode, acc + bz[j], cell.za, cell.zb)
            ar[2 * H + j] = act1(cell.hcode, acc + bh[j], cell.ha, cell.hb)
        for j in range(H):
            z = ar[H + j]
            hv = (cell.zn - cell.zeta * z) * ar[2 * H + j] + z * h[j]
            h[j] = hv
            yr[j] = hv


@jit(inline="always")
def backward_step(cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths):
    """dS (B, H): dL/dh_t in, dL/dh_{t-1} out; da (B, H) = dL/da (both nonlinearities' share)."""
    U, bz, bh = cell.U, cell.bz, cell.bh
    dU, dbz, dbh, dze, dnu = grads.U, grads.bz, grads.bh, grads.zeta, grads.nu
    H = U.shape[0]
    for r in range(dS.shape[0]):
        if t >= lengths[r]:
            continue
        ar, hp, ds, dar, dyr = aux[r], Sp[r], dS[r], da[r], dy[r]
        for j in range(H):
            dh = ds[j] + dyr[j]
            a, z, c = ar[j], ar[H + j], ar[2 * H + j]
            dhc = dh * c
            dze[0] += (dhc - dhc * z) * cell.dzeta
            dnu[0] += dhc * cell.dnu
            dc = dh * (cell.zn - cell.zeta * z) * dact1(cell.hcode, a + bh[j], c, cell.ha, cell.hb)
            dz = dh * (hp[j] - cell.zeta * c) * dact1(cell.zcode, a + bz[j], z, cell.za, cell.zb)
            dbz[j] += dz
            dbh[j] += dc
            d = dz + dc
            dar[j] = d
            for k in range(H):
                dU[j, k] += d * hp[k]
            ds[j] = dh * z
        for j in range(H):  # + U^T da
            d = dar[j]
            for k in range(H):
                ds[k] += U[j, k] * d


register_steps(FastGRNNCell, forward_step, backward_step)


def sizes(P, D, I):
    """Validate the parameters' shapes; the sizes the driver needs."""
    H = check_wu(P, D, I, ("bz", "bh"))
    check_scalars(P, D, ("zeta", "nu"))
    return dict(H=H, O=H, GH=H, NS=H, NA=3 * H, widths=(H,))


def make_cell(P, d, options, dt):
    H = P["U"].shape[1]
    bz = np.zeros(H, dt) if P.get("bz") is None else np.ascontiguousarray(P["bz"][d])
    bh = np.zeros(H, dt) if P.get("bh") is None else np.ascontiguousarray(P["bh"][d])
    ze = sigmoid(scalar_param(P, "zeta", d, ZETA_INIT))
    nu = sigmoid(scalar_param(P, "nu", d, NU_INIT))
    (zc, za, zb), (hc, ha, hb) = options["codes"][d]
    f = dt.type
    return FastGRNNCell(np.ascontiguousarray(P["U"][d]), bz, bh, np.int64(zc), f(za), f(zb), np.int64(hc), f(ha),
                        f(hb), f(ze), f(nu), f(ze + nu), f(ze * (1 - ze)), f(nu * (1 - nu)))


def make_grads(cell):
    z = np.zeros(1, cell.U.dtype)
    return FastGRNNGrads(np.zeros_like(cell.U), np.zeros_like(cell.bz), np.zeros_like(cell.bh), z, z.copy())


def grads_dict(grads):
    return {"U": grads.U, "bz": grads.bz, "bh": grads.bh, "zeta": grads.zeta, "nu": grads.nu}


def _options(activations, D, dt, alphas=None, betas=None):
    """``activations``: None, or (gate, update) names, once or per direction."""
    names = None
    if activations is not None:
        names = list(activations)
        if len(names) == 2 and D == 2:
            names = names * 2
    codes, al, be = resolve(names, CELL.default_activations, D, dt, alphas, betas, arg="activations")
    return {"codes": [[(int(codes[d, k]), float(al[d, k]), float(be[d, k])) for k in range(2)] for d in range(D)]}


def example_params(rng, D, I, H, dtype=np.float64):
    """Random parameters for tests: (params, {state name: width}, output size)."""
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return dict(W=r(D, H, I) * 0.5, U=r(D, H, H) * 0.4, bz=r(D, H) * 0.5, bh=r(D, H) * 0.5, zeta=r(D, 1),
                nu=r(D, 1)), {"h": H}, H


# ---- functional API (edgernn.functional.fastgrnn / fastgrnn_backward) ---------------------
def fastgrnn(X, W, U, bz=None, bh=None, zeta=None, nu=None, h0=None, lengths=None, direction="forward",
             activations=None, activation_alpha=None, activation_beta=None, train=False):
    """FastGRNN over a batch of sequences: ``z = sigmoid(W x + U h + bz)``,
    ``h~ = tanh(W x + U h + bh)``, ``h = (sigmoid(zeta) (1 - z) + sigmoid(nu)) h~ + z h_prev``.

    Parameters
    ----------
    X : array (B, T, I)
    W : array (D, H, I)
    U : array (D, H, H)
    bz, bh : array (D, H), optional
        Gate and update biases.
    zeta, nu : array (D, 1), optional
        Logits of zeta and nu; default EdgeML's ``1`` and ``-4``.
    h0 : array (B, D, H), optional
    lengths : int array (B,), optional
        Valid steps per sequence; padded steps output zeros and hold the state.
    direction : {"forward", "reverse", "bidirectional"}
    activations : list of str, optional
        ONNX names of the gate and update nonlinearities (``["Sigmoid", "Tanh"]``), once or per
        direction.
    activation_alpha, activation_beta : list of float, optional
        For activations that take them, in order.
    train : bool
        Also return a cache for :func:`fastgrnn_backward`.

    Returns
    -------
    Y : array (B, T, D, H)
    Y_h : array (B, D, H)
    cache : only if ``train``
    """
    D = 2 if direction == "bidirectional" else 1
    dt = np.dtype(np.float64 if np.asarray(X).dtype == np.float64 else np.float32)
    opts = _options(activations, D, dt, activation_alpha, activation_beta)
    Y, finals, cache = run(CELL, X, {"W": W, "U": U, "bz": bz, "bh": bh, "zeta": zeta, "nu": nu}, {"h": h0},
                           lengths, direction, opts, train)
    return (Y, finals[0], cache) if train else (Y, finals[0])


def fastgrnn_backward(cache, dY, dY_h=None):
    """Gradients of :func:`fastgrnn` by BPTT: dict with ``X, W, U, bz, bh, zeta, nu, h0`` (those
    given); ``zeta`` and ``nu`` get the gradient of their logits, (D, 1)."""
    return backward(CELL, cache, dY, [dY_h])


# ---- streaming ----------------------------------------------------------------------------
@jit
def stream_step(meta, li, Wf, buf, B, rev):
    """One step: ``[x | h] [W | U]^T`` in one pass, then the gate, the candidate and the mix."""
    m = meta[li]
    I, H = m[M_I], m[M_O]
    ld = I + H
    xh, g, out, outs, vo = m[M_IN], m[M_G], m[M_OUT], m[M_OUTS], meta[0, H_VALID]
    fp = m[M_F]
    rseq = (m[M_FLAGS] & F_RSEQ) != 0
    mv_flat(Wf, m[M_W], ld, ld, H, buf, xh, ld, B, buf, g, H, rev)
    bz = Wf[m[M_BIAS]: m[M_BIAS] + H]
    bh = Wf[m[M_BIAS] + H: m[M_BIAS] + 2 * H]
    zeta = Wf[m[M_X0]]
    zn = Wf[m[M_X0] + 1]
    for r in range(B):
        h = buf[xh + r * ld + I: xh + r * ld + ld]
        valid = buf[vo + r] != 0.0
        if valid:
            a = buf[g + r * H: g + r * H + H]
            for j in range(H):
                z = act1(m[M_C0], a[j] + bz[j], Wf[fp], Wf[fp + 3])
                c = act1(m[M_C1], a[j] + bh[j], Wf[fp + 1], Wf[fp + 4])
                h[j] = (zn - zeta * z) * c + z * h[j]
        emit(valid, h, buf[out + r * outs: out + r * outs + H], rseq)


def stream_pack(layer, pk, B, dtype):
    """Pack ``layer``: ``[W | U]`` fused (H, I + H), ``[bz | bh]``, ``[zeta, zeta + nu]``;
    ``[x | h]`` rows in one buffer."""
    W, U = (a[0] for a in layer.full_weights())
    p = layer.params
    H = int(layer.units)
    I = W.shape[1]
    bz = p["bz"][0] if "bz" in p else np.zeros(H, dtype)
    bh = p["bh"][0] if "bh" in p else np.zeros(H, dtype)
    if W.shape != (H, I) or U.shape != (H, H) or bz.shape != (H,) or bh.shape != (H,) or \
            p["zeta"].shape != (1, 1) or p["nu"].shape != (1, 1):
        raise ValueError(f"stream: layer {layer.name!r} (FastGRNN, units={H}) has W {W.shape}, U {U.shape}, "
                         f"bz {bz.shape}, bh {bh.shape}, zeta {p['zeta'].shape}, nu {p['nu'].shape}; expected "
                         f"({H}, I), ({H}, {H}), ({H},), ({H},), (1, 1), (1, 1)")
    opts = _options(layer.onnx_activations[:2], 1, np.dtype(dtype), layer.activation_alpha, layer.activation_beta)
    (zc, za, zb), (hc, ha, hb) = opts["codes"][0]
    m = dict(type=STREAM_OP, I=I, O=H, F=float_params(pk, [za, ha], [zb, hb]), C0=zc, C1=hc,
             FLAGS=F_RSEQ if layer.return_sequences else 0)
    m["W"] = pk.add_w(np.concatenate([W, U], axis=1))  # (H, I + H)
    m["BIAS"] = pk.add_w(np.concatenate([bz, bh]))  # (2H,)
    ze, nu = sigmoid(p["zeta"][0, 0]), sigmoid(p["nu"][0, 0])
    m["X0"] = pk.add_w(np.array([ze, ze + nu]))
    m["G"] = pk.add_buf(B * H)
    m["IN"] = pk.add_buf(B * (I + H))  # [x, h] rows: the input slot and the state h
    m["INS"] = I + H
    return m, [(m["IN"] + I, I + H, H)]


# ---- ONNX: the step as graph nodes (a Scan body, or the streaming graph) -------------------
def onnx_step(g, layer, d, x, states, base):
    """Write one step: ``x`` (B, I) and ``states["h"]`` (B, H) in; returns (h, {"h": h}).

    Eleven nodes: Concat([x, h]) -> Gemm with [W | U] -> (+ bz -> gate, + bh -> update) ->
    ``h = (zeta + nu - zeta z) h~ + z h`` (Mul, Add, Mul, Mul, Add).
    """
    from ..onnx.converters import onnx_activation

    p = layer.params
    H = int(layer.units)
    W, U = (a[d] for a in layer.full_weights())
    f32 = np.float32
    bz = (p["bz"][d] if "bz" in p else np.zeros(H)).astype(f32)
    bh = (p["bh"][d] if "bh" in p else np.zeros(H)).astype(f32)
    acts = layer.onnx_activations[2 * d: 2 * d + 2]
    ab = layer.alpha_beta_per_activation()[2 * d: 2 * d + 2]
    ze, nu = sigmoid(p["zeta"][d, 0]), sigmoid(p["nu"][d, 0])
    h = states["h"]
    xh = g.op("Concat", [x, h], axis=1, base=f"{base}_xh")
    a = g.op("Gemm", [xh, g.initializer(f"{base}_WU", np.concatenate([W, U], axis=1).astype(f32))], transB=1,
             base=f"{base}_a")
    z = onnx_activation(g, acts[0], g.op("Add", [a, g.initializer(f"{base}_bz", bz)], base=f"{base}_az"), *ab[0],
                        base=f"{base}_z")
    c = onnx_activation(g, acts[1], g.op("Add", [a, g.initializer(f"{base}_bh", bh)], base=f"{base}_ah"), *ab[1],
                        base=f"{base}_c")
    coef = g.op("Add", [g.op("Mul", [z, g.const(-ze, f32)], base=f"{base}_zz"), g.const(ze + nu, f32)],
                base=f"{base}_coef")
    hn = g.op("Add", [g.op("Mul", [coef, c], base=f"{base}_cc"), g.op("Mul", [z, h], base=f"{base}_zh")],
              base=f"{base}_h")
    return hn, {"h": hn}


# ---- the layer ----------------------------------------------------------------------------
def _layer_class():
    from ..layers import register as register_layer

    @register_layer
    class FastGRNN(FastLayer):
        """FastGRNN (Kusupati et al. 2018): ``z = sigmoid(W x + U h + bz)``,
        ``h~ = tanh(W x + U h + bh)``, ``h = (zeta (1 - z) + nu) h~ + z h_prev`` with
        ``zeta``, ``nu`` sigmoids of trainable scalars.

        Parameters
        ----------
        units : int
        wrank, urank : int, optional
            Low rank: ``W = W1 W2`` (W1 (H, wrank), W2 (wrank, I)), ``U = U1 U2``.
        activation : str
            Keras name of the update nonlinearity (``h~``); default ``"tanh"``.
        recurrent_activation : str
            Keras name of the gate nonlinearity (``z``); default ``"sigmoid"``.
        sparsity : float, optional
            Fraction of W/U weights kept by iterative hard thresholding during training.
        sparsity_warmup : int
            Optimizer updates before thresholding starts (dense phase); default 0.
        sparsity_freeze : int, optional
            From this update on the support is fixed (the paper's last phase).
        zeta_init, nu_init : float
            Initial logits of zeta and nu; default EdgeML's 1 and -4.
        Other parameters as ``SimpleRNN`` (``clip`` excepted; ``kernel_initializer="edgeml_normal"``
        and ``bias_initializer="ones"`` give EdgeML's initialisation, see the module docstring).

        Methods
        -------
        model_size_bytes() : the parameters' size, sparsified matrices counted by nonzeros.
        """

        cell = "fastgrnn"
        gates = 1
        num_states = 1
        _biases = ("bz", "bh")
        _scalars = ("zeta", "nu")

        def __init__(self, units, wrank=None, urank=None, activation="tanh", recurrent_activation="sigmoid",
                     zeta_init=ZETA_INIT, nu_init=NU_INIT, **kwargs):
            super().__init__(units, wrank=wrank, urank=urank, activation=activation,
                             recurrent_activation=recurrent_activation,
                             scalar_inits=dict(zeta_init=zeta_init, nu_init=nu_init), **kwargs)

        def _keras_activations(self):
            return [self.recurrent_activation, self.activation]

        def _run(self, x, init, lengths, train):
            p = self.params
            W, U = self.full_weights()
            out = fastgrnn(x, W, U, p.get("bz"), p.get("bh"), p["zeta"], p["nu"], init[0], lengths=lengths,
                           direction=self.direction, activations=self.onnx_activations,
                           activation_alpha=self.activation_alpha, activation_beta=self.activation_beta,
                           train=train)
            return out[0], out[1], None, (out[2] if train else None)

        def _run_backward(self, cache, dY, dY_h, dY_c):
            return self._chain(fastgrnn_backward(cache, dY, dY_h))

        def get_config(self):
            return {**super().get_config(), "recurrent_activation": self.recurrent_activation}

    return FastGRNN


STREAM_OP = 14
CELL = register(Cell("fastgrnn", gates=1, state_names=("h",), default_activations=("Sigmoid", "Tanh"),
                     onnx_op=None, stream_op=STREAM_OP, module=__name__, functional=("fastgrnn", "fastgrnn_backward"),
                     layers=("FastGRNN",)))
FastGRNN = _layer_class()
