"""QRNN (Bradbury, Merity, Xiong, Socher, ICLR 2017, "Quasi-Recurrent Neural Networks").

A causal convolution of width ``k = window`` over time gives the candidate and the gates of
every step at once; only an element-wise "pooling" is recurrent::

    xa_t = [x_{t-k+1}, ..., x_{t-1}, x_t]        (k*I,), zeros before the sequence start
    z_t = tanh(W_z xa_t + b_z)    f_t = sigmoid(W_f xa_t + b_f)
    o_t = sigmoid(W_o xa_t + b_o) i_t = sigmoid(W_i xa_t + b_i)      (o: fo, ifo; i: ifo)
    f-pooling:    c_t = f_t * c_{t-1} + (1 - f_t) * z_t     h_t = c_t
    fo-pooling:   c_t = f_t * c_{t-1} + (1 - f_t) * z_t     h_t = o_t * c_t
    ifo-pooling:  c_t = f_t * c_{t-1} + i_t * z_t           h_t = o_t * c_t

The convolution is one matrix product: ``W`` (D, G*H, k*I) applied to the augmented input
``xa`` (the generic driver's ``augment`` hook builds it after reversing each sequence for a
backward direction, so the convolution is causal in the direction of the recurrence). The
rows of ``W`` and ``b`` are the gates in the order ``[Z, F, O, I]`` (as many as the pooling
uses: G = 2, 3, 4); the columns of ``W`` are the window, oldest input first (as
salesforce/pytorch-qrnn concatenates ``[x_{t-1}, x_t]`` for ``window=2``).

States ``("h", "c")``: ``h`` is the output. ``h_{t-1}`` is not used by the step (only
``c_{t-1}``), so the gradient with respect to ``h0`` is zero; ``h0`` is accepted for the common
``(h, c)`` API. Shapes (functional API, per direction d): ``W`` (D, G*H, k*I), ``b`` (D, G*H),
``h0``, ``c0`` (B, D, H); outputs ``Y`` (B, T, D, H), ``Y_h``, ``Y_c`` (B, D, H).

Where the paper and the reference implementation (salesforce/pytorch-qrnn) disagree:

* The forget gate. The paper writes ``c = f * c_prev + (1 - f) * z``; the reference's
  ``ForgetMult`` computes ``c = f * z + (1 - f) * c_prev``, i.e. its ``f`` is the paper's
  ``1 - f``. The two are the same model up to the sign of the F rows of ``W`` and ``b``; we
  follow the paper (and the issue), so ``f`` near 1 means long memory as in an LSTM.
* ``ifo`` pooling is in the paper only (the reference has f and fo). We append the input gate
  after O: rows ``[Z, F, O, I]``.
* Initialisation. The paper gives none beyond its experiments' settings; the reference uses
  ``torch.nn.Linear`` defaults for the convolution, ``U(-1/sqrt(k*I), 1/sqrt(k*I))`` for the
  weights and the bias. We use that for ``W`` (``kernel_initializer="qrnn_uniform"``, any Keras
  initializer name otherwise) and zero biases (Keras' default; a random bias has no stated
  purpose in the reference).
* Zoneout on ``f`` (the paper's regulariser) and the reference's ``use_cuda`` kernels are not
  implemented; ``dropout=`` drops inputs as for the other layers.

float32 data uses the rational tanh and sigmoid of the LSTM's float32 kernels (max abs error
3.4e-7, vectorised; ``np.tanh``/``np.exp`` per element made the forward pass 2.4x slower than
an LSTM's), float64 data the exact functions.

Streaming: the stream keeps the last ``k - 1`` inputs of each row next to the input slot in
its own buffer (no allocation per step); ``Stream.reset()`` (all rows or some) zeroes them
together with ``h`` and ``c``; ``Stream.state`` exposes ``[h, c]`` only (the input history is
not part of it and is left unchanged by assigning a state).

ONNX has no QRNN node. Full graph: the convolution and the gate activations for all steps
are computed before a ``Scan`` (Pad, k Slices, Concat over time, one MatMul, Tanh/Sigmoid);
the Scan body is only the pooling (Split + 3 or 4 element-wise nodes). Streaming graph: the
previous ``k - 1`` inputs are an extra state ``state_{n}_x`` ((batch, (k-1)*I), zeros at the
start) next to ``state_{n}_h`` and ``state_{n}_c``.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from .._activations import ONE, SIGMOID, TANH, ZERO, act1, fast_tanh
from .._config import jit
from ._ops import (
    F_RSEQ,
    H_VALID,
    M_BIAS,
    M_C0,
    M_C1,
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
    emit,
    fast_sigmoid,
    mv_flat,
)
from .base import Cell, register
from .driver import backward, register_steps, run

POOL_F, POOL_FO, POOL_IFO = 0, 1, 2
POOLINGS = {"f": POOL_F, "fo": POOL_FO, "ifo": POOL_IFO}
NUM_GATES = {"f": 2, "fo": 3, "ifo": 4}

# ---- the cell's parameters as the jitted steps see them (one direction) -------------------
# b (G*H,); pool: POOL_F / POOL_FO / POOL_IFO; fast: 1 for float32 data (the rational tanh and
# sigmoid of the LSTM's float32 kernels: vectorised, max abs error 3.4e-7), 0 for float64
QRNNCell = namedtuple("QRNNCell", "b pool fast")
QRNNGrads = namedtuple("QRNNGrads", "b")


@jit(inline="always")
def _activate(fast, a, bias, out, H):
    """out = [tanh(a + bias)[:H], sigmoid(a + bias)[H:]] (1-D, G*H). Loops index views from 0
    (an offset index keeps the negative-index wraparound, which LLVM vectorises with gathers)."""
    az, bz, oz = a[:H], bias[:H], out[:H]
    ag, bg, og = a[H:], bias[H:], out[H:]
    n = ag.shape[0]
    if fast:
        for j in range(H):
            oz[j] = fast_tanh(az[j] + bz[j])
        for j in range(n):
            og[j] = fast_sigmoid(ag[j] + bg[j])
    else:
        for j in range(H):
            oz[j] = act1(TANH, az[j] + bz[j], ZERO, ZERO)
        for j in range(n):
            og[j] = act1(SIGMOID, ag[j] + bg[j], ZERO, ZERO)


@jit(inline="always")
def _pool(pool, gates, c, h, y, H):
    """c (H,) in/out, h and y (H,) out, from the activated gates [z | f | o | i]."""
    z = gates[:H]
    f = gates[H: 2 * H]
    if pool == POOL_F:
        for j in range(H):
            cv = f[j] * c[j] + (ONE - f[j]) * z[j]
            c[j] = cv
            h[j] = cv
            y[j] = cv
    elif pool == POOL_FO:
        o = gates[2 * H: 3 * H]
        for j in range(H):
            cv = f[j] * c[j] + (ONE - f[j]) * z[j]
            c[j] = cv
            hv = o[j] * cv
            h[j] = hv
            y[j] = hv
    else:
        o = gates[2 * H: 3 * H]
        i = gates[3 * H: 4 * H]
        for j in range(H):
            cv = f[j] * c[j] + i[j] * z[j]
            c[j] = cv
            hv = o[j] * cv
            h[j] = hv
            y[j] = hv


@jit(inline="always")
def forward_step(cell, t, g, S, y, aux, lengths):
    """g (B, G*H) = xa_t W^T; S (B, 2H) = [h | c]; aux (B, G*H) keeps z, f, o, i."""
    H = S.shape[1] // 2
    for r in range(S.shape[0]):
        if t >= lengths[r]:
            continue
        s, ar = S[r], aux[r]
        _activate(cell.fast, g[r], cell.b, ar, H)
        _pool(cell.pool, ar, s[H:], s[:H], y[r], H)


@jit(inline="always")
def backward_step(cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths):
    """dS (B, 2H) = [dL/dh_t | dL/dc_t] in, [0 | dL/dc_{t-1}] out; da (B, G*H) = dL/d(pre-act).

    With d = dh + dy:  f/fo: dc' = dc + d (* o),  dz = dc' (1 - f),  df = dc' (c_prev - z);
    ifo: dz = dc' i, df = dc' c_prev, di = dc' z;  do = d c;  then times the activations'
    derivatives; dc_{t-1} = dc' f, and dh_{t-1} = 0 (h_{t-1} does not enter the step)."""
    pool = cell.pool
    db = grads.b
    H = dS.shape[1] // 2
    for r in range(dS.shape[0]):
        if t >= lengths[r]:
            continue
        ar, dar, ds, dyr = aux[r], da[r], dS[r], dy[r]
        z, f, cp = ar[:H], ar[H: 2 * H], Sp[r][H:]
        daz, daf = dar[:H], dar[H: 2 * H]
        dh, dc = ds[:H], ds[H:]
        if pool == POOL_F:
            for j in range(H):
                dcv = dc[j] + dh[j] + dyr[j]
                fj, zj = f[j], z[j]
                daz[j] = dcv * (ONE - fj) * (ONE - zj * zj)
                daf[j] = dcv * (cp[j] - zj) * fj * (ONE - fj)
                dh[j] = ZERO
                dc[j] = dcv * fj
        elif pool == POOL_FO:
            o, dao, cn = ar[2 * H: 3 * H], dar[2 * H: 3 * H], Sn[r][H:]
            for j in range(H):
                dhv = dh[j] + dyr[j]
                fj, zj, oj = f[j], z[j], o[j]
                dao[j] = dhv * cn[j] * oj * (ONE - oj)
                dcv = dc[j] + dhv * oj
                daz[j] = dcv * (ONE - fj) * (ONE - zj * zj)
                daf[j] = dcv * (cp[j] - zj) * fj * (ONE - fj)
                dh[j] = ZERO
                dc[j] = dcv * fj
        else:
            o, dao, cn = ar[2 * H: 3 * H], dar[2 * H: 3 * H], Sn[r][H:]
            i, dai = ar[3 * H: 4 * H], dar[3 * H: 4 * H]
            for j in range(H):
                dhv = dh[j] + dyr[j]
                fj, zj, oj, ij = f[j], z[j], o[j], i[j]
                dao[j] = dhv * cn[j] * oj * (ONE - oj)
                dcv = dc[j] + dhv * oj
                daz[j] = dcv * ij * (ONE - zj * zj)
                daf[j] = dcv * cp[j] * fj * (ONE - fj)
                dai[j] = dcv * zj * ij * (ONE - ij)
                dh[j] = ZERO
                dc[j] = dcv * fj
        for j in range(dar.shape[0]):  # the bias gradient: a separate loop keeps the ones above simple
            db[j] += dar[j]


register_steps(QRNNCell, forward_step, backward_step)


# ---- the causal convolution as an input augmentation (driver hook) ------------------------
def augment(Xt, options):
    """(T, B, I) -> (T, B, k*I): row t is ``[x_{t-k+1}, ..., x_t]``, zeros before t = 0."""
    k = options["window"]
    T, B, I = Xt.shape
    Xa = np.zeros((T, B, k * I), Xt.dtype)
    for j in range(k):
        s = k - 1 - j  # how many steps back slot j looks
        if s < T:
            Xa[s:, :, j * I: (j + 1) * I] = Xt[: T - s]
    return Xa


def augment_backward(dXa, I, options):
    """Adjoint of :func:`augment`: (T, B, k*I) -> (T, B, I)."""
    k = options["window"]
    T, B, _ = dXa.shape
    dX = np.zeros((T, B, I), dXa.dtype)
    for j in range(k):
        s = k - 1 - j
        if s < T:
            dX[: T - s] += dXa[s:, :, j * I: (j + 1) * I]
    return dX


# ---- sizes and parameter packing for the generic driver -----------------------------------
def _check_options(window, pooling):
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window: expected a positive integer, got {window!r}")
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ValueError(f"pooling: expected one of {tuple(POOLINGS)}, got {pooling!r}")
    return {"window": int(window), "pooling": pooling}


def sizes(P, D, I, options):
    """Validate the parameters' shapes; the sizes the driver needs."""
    k, pooling = options["window"], options["pooling"]
    G = NUM_GATES[pooling]
    W, b = P.get("W"), P.get("b")
    if W is None or W.ndim != 3 or W.shape[0] != D or W.shape[2] != k * I or W.shape[1] < G or W.shape[1] % G:
        raise ValueError(f"W: expected shape (num_directions={D}, {G}*hidden, window*input_size={k}*{I}) for "
                         f"pooling={pooling!r} (input size {I} from X), got {getattr(W, 'shape', None)}")
    H = W.shape[1] // G
    if b is not None and b.shape != (D, G * H):
        raise ValueError(f"b: expected shape (num_directions, {G}*hidden) = {(D, G * H)} (hidden size {H} from W "
                         f"{W.shape}), got {b.shape}")
    return dict(H=H, O=H, GH=G * H, NS=2 * H, NA=G * H, widths=(H, H))


def make_cell(P, d, options, dt):
    GH = P["W"].shape[1]
    b = np.zeros(GH, dt) if P.get("b") is None else np.ascontiguousarray(P["b"][d])
    return QRNNCell(b, np.int64(POOLINGS[options["pooling"]]), np.int64(dt == np.float32))


def make_grads(cell):
    return QRNNGrads(np.zeros_like(cell.b))


def grads_dict(grads):
    return {"b": grads.b}


def example_params(rng, D, I, H, dtype=np.float64):
    """Random parameters for tests (fo pooling, window 2): (params, {state: width}, output size)."""
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return dict(W=r(D, 3 * H, 2 * I) * 0.5, b=r(D, 3 * H) * 0.5), {"h": H, "c": H}, H


# ---- functional API (edgernn.functional.qrnn / qrnn_backward) -----------------------------
def qrnn(X, W, b=None, h0=None, c0=None, lengths=None, direction="forward", window=2, pooling="fo", train=False):
    """QRNN over a batch of sequences: causal convolution of width ``window``, then pooling.

    Parameters
    ----------
    X : array (B, T, I)
    W : array (D, G*H, window*I)
        Convolution weights; rows are the gates ``[Z, F, O, I]`` (G = 2, 3, 4 for ``f``, ``fo``,
        ``ifo``), columns the window, oldest input first.
    b : array (D, G*H), optional
    h0 : array (B, D, H), optional
        Accepted for the ``(h, c)`` API; the step does not read ``h_{t-1}``.
    c0 : array (B, D, H), optional
    lengths : int array (B,), optional
        Valid steps per sequence; padded steps output zeros and hold the state.
    direction : {"forward", "reverse", "bidirectional"}
        A reverse direction convolves causally in its own direction (over ``x_{t+1}``...).
    window : int
        Width of the convolution over time (>= 1).
    pooling : {"f", "fo", "ifo"}
    train : bool
        Also return a cache for :func:`qrnn_backward`.

    Returns
    -------
    Y : array (B, T, D, H)
    Y_h, Y_c : arrays (B, D, H)
    cache : only if ``train``
    """
    opts = _check_options(window, pooling)
    Y, finals, cache = run(CELL, X, {"W": W, "b": b}, {"h": h0, "c": c0}, lengths, direction, opts, train)
    return (Y, finals[0], finals[1], cache) if train else (Y, finals[0], finals[1])


def qrnn_backward(cache, dY, dY_h=None, dY_c=None):
    """Gradients of :func:`qrnn` by BPTT: dict with ``X, W, b, h0, c0`` (those given)."""
    return backward(CELL, cache, dY, [dY_h, dY_c])


# ---- streaming ----------------------------------------------------------------------------
@jit
def stream_step(meta, li, Wf, buf, B, rev):
    """One step: ``xa W^T`` over the row ``[x_{t-k+1} .. x_t]`` (kept in the input buffer),
    pooling, then the row's history shifts by one input."""
    m = meta[li]
    I, H, k = m[M_I], m[M_O], m[M_X0]
    pool, fast = m[M_C0], m[M_C1]
    G = 2 if pool == POOL_F else (3 if pool == POOL_FO else 4)
    GH, KI, hist = G * H, k * I, (k - 1) * I
    xa = m[M_IN] - hist  # rows of k*I: the history, then the input slot
    g, hs, cs, out, outs, vo = m[M_G], m[M_P], m[M_S], m[M_OUT], m[M_OUTS], meta[0, H_VALID]
    rseq = (m[M_FLAGS] & F_RSEQ) != 0
    mv_flat(Wf, m[M_W], KI, KI, GH, buf, xa, KI, B, buf, g, GH, rev)
    bv = Wf[m[M_BIAS]: m[M_BIAS] + GH]
    for r in range(B):
        h = buf[hs + r * H: hs + r * H + H]
        valid = buf[vo + r] != 0.0
        if valid:
            a = buf[g + r * GH: g + r * GH + GH]
            _activate(fast, a, bv, a, H)  # in place: each element reads and writes its own slot
            _pool(pool, a, buf[cs + r * H: cs + r * H + H], h, buf[out + r * outs: out + r * outs + H], H)
            row = buf[xa + r * KI: xa + r * KI + KI]
            for q in range(hist):  # drop the oldest input; the next one arrives in the slot
                row[q] = row[q + I]
        emit(valid, h, buf[out + r * outs: out + r * outs + H], rseq)


def stream_pack(layer, pk, B, dtype):
    """Pack ``layer``: ``W`` (G*H, k*I) and ``b``; ``[history | x]`` rows in the input buffer,
    ``h`` and ``c`` in buffers of their own. Returns (meta, state views, hidden views)."""
    W = layer.params["W"][0]
    H, k = int(layer.units), int(layer.window)
    G = NUM_GATES[layer.pooling]
    b = layer.params["b"][0] if "b" in layer.params else np.zeros(G * H, dtype)
    I = W.shape[1] // k if W.ndim == 2 else -1
    if I < 1 or W.shape != (G * H, k * I) or b.shape != (G * H,):
        raise ValueError(f"stream: layer {layer.name!r} (QRNN, units={H}, window={k}, pooling={layer.pooling!r}) "
                         f"has W {W.shape}, b {b.shape}; expected ({G * H}, {k}*I), ({G * H},)")
    m = dict(type=STREAM_OP, I=I, O=H, X0=k, C0=POOLINGS[layer.pooling], C1=int(np.dtype(dtype) == np.float32),
             FLAGS=F_RSEQ if layer.return_sequences else 0)
    m["W"] = pk.add_w(W)
    m["BIAS"] = pk.add_w(b)
    m["G"] = pk.add_buf(B * G * H)
    m["P"] = pk.add_buf(B * H)  # h
    m["S"] = pk.add_buf(B * H)  # c
    rows = pk.add_buf(B * k * I)  # per row: the last k-1 inputs, then the input slot
    m["IN"] = rows + (k - 1) * I
    m["INS"] = k * I
    hidden = [(rows, k * I, (k - 1) * I)] if k > 1 else []
    return m, [(m["P"], H, H), (m["S"], H, H)], hidden


# ---- ONNX: convolution before the Scan, pooling as its body --------------------------------
def _gates(g, layer, d, xa, base):
    """Gate activations ``[tanh(Z), sigmoid(F, O, I)]`` of an augmented input (..., k*I)."""
    p = layer.params
    W = p["W"][d].astype(np.float32)
    GH = W.shape[0]
    H = int(layer.units)
    b = p["b"][d] if "b" in p else np.zeros(GH)
    a = g.op("MatMul", [xa, g.initializer(f"{base}_WT", np.ascontiguousarray(W.T))], base=f"{base}_conv")
    a = g.op("Add", [a, g.initializer(f"{base}_b", b.astype(np.float32))], base=f"{base}_pre")
    za, fa = g.op("Split", [a, g.const([H, GH - H])], n_out=2, axis=-1, base=f"{base}_zf")
    return g.op("Concat", [g.op("Tanh", [za], base=f"{base}_z"), g.op("Sigmoid", [fa], base=f"{base}_fo")],
                axis=-1, base=f"{base}_gates")


def onnx_pre(g, layer, d, xt, base):
    """Full graph: time-major ``xt`` (T, B, I) -> the gates of all steps (T, B, G*H)."""
    k = int(layer.window)
    if k == 1:
        return _gates(g, layer, d, xt, base)
    xp = g.op("Pad", [xt, g.const([k - 1, 0, 0, 0, 0, 0])], base=f"{base}_pad")  # (T+k-1, B, I)
    big = np.iinfo(np.int64).max
    parts = [g.op("Slice", [xp, g.const([j]), g.const([j - (k - 1) if j < k - 1 else big]), g.const([0])],
                  base=f"{base}_shift{k - 1 - j}") for j in range(k)]
    xa = g.op("Concat", parts, axis=2, base=f"{base}_xa")  # (T, B, k*I), oldest first
    return _gates(g, layer, d, xa, base)


def onnx_extra_states(layer):
    """Streaming graph: the extra carried state (name -> width): the last k-1 inputs."""
    k = int(layer.window)
    I = layer.params["W"].shape[2] // k
    return {"x": (k - 1) * I} if k > 1 else {}


def onnx_stream_pre(g, layer, x, extra, base):
    """Streaming graph: ``x`` (B, I) and the history -> (gates (B, G*H), new history)."""
    k = int(layer.window)
    if k == 1:
        return _gates(g, layer, 0, x, base), {}
    I = layer.params["W"].shape[2] // k
    xa = g.op("Concat", [extra["x"], x], axis=1, base=f"{base}_xa")  # (B, k*I)
    hist = g.op("Slice", [xa, g.const([I]), g.const([k * I]), g.const([1])], base=f"{base}_hist")
    return _gates(g, layer, 0, xa, base), {"x": hist}


def onnx_step(g, layer, d, x, states, base):
    """Pooling, one step: ``x`` the gates (B, G*H), ``states["c"]`` (B, H); returns (h, {h, c})."""
    H = int(layer.units)
    G = NUM_GATES[layer.pooling]
    parts = g.op("Split", [x, g.const([H] * G)], n_out=G, axis=1, base=f"{base}_split")
    z, f = parts[0], parts[1]
    cp = states["c"]
    if layer.pooling == "ifo":  # c = f * c_prev + i * z
        c = g.op("Add", [g.op("Mul", [f, cp], base=f"{base}_fc"), g.op("Mul", [parts[3], z], base=f"{base}_iz")],
                 base=f"{base}_c")
    else:  # c = f * (c_prev - z) + z
        c = g.op("Add", [g.op("Mul", [f, g.op("Sub", [cp, z], base=f"{base}_cz")], base=f"{base}_fcz"), z],
                 base=f"{base}_c")
    h = c if layer.pooling == "f" else g.op("Mul", [parts[2], c], base=f"{base}_h")
    return h, {"h": h, "c": c}


# ---- the layer ----------------------------------------------------------------------------
def _layer_class():
    from .. import initializers
    from ..layers import register as register_layer
    from ..layers.recurrent import RecurrentLayer

    @register_layer
    class QRNN(RecurrentLayer):
        """Quasi-recurrent layer (Bradbury et al. 2017): a causal convolution of width ``window``
        over time gives ``z = tanh``, ``f = sigmoid``, ``o = sigmoid`` (``i`` for ifo) for all
        steps at once; the pooling ``c_t = f c_{t-1} + (1 - f) z`` (ifo: ``+ i z``), ``h_t = o c_t``
        (f pooling: ``h_t = c_t``) is the only recurrence.

        Parameters
        ----------
        units : int
        window : int
            Convolution width over time (default 2, the paper's language-model setting).
        pooling : {"f", "fo", "ifo"}
            Default ``"fo"``.
        kernel_initializer : str
            Default ``"qrnn_uniform"``: ``U(-1/sqrt(window*I), 1/sqrt(window*I))`` (the reference
            implementation's ``torch.nn.Linear`` default); any Keras initializer name.
        use_bias, bias_initializer, dropout, return_sequences, return_state, go_backwards :
            As for ``LSTM``. ``stateful`` is not supported (the carried state would also need the
            last ``window - 1`` inputs; use ``model.stream``).
        """

        cell = "qrnn"
        gates = 3
        num_states = 2

        def __init__(self, units, window=2, pooling="fo", kernel_initializer="qrnn_uniform", **kwargs):
            if kwargs.get("clip") is not None:
                raise ValueError("QRNN: clip is not supported")
            for key in ("activation", "recurrent_activation", "recurrent_initializer"):
                if key in kwargs:
                    raise TypeError(f"QRNN has no {key} (z is tanh, the gates sigmoid; no recurrent weights)")
            if kwargs.get("stateful"):
                raise ValueError("QRNN: stateful=True is not supported (the carried state would also need the "
                                 "last window-1 inputs); use model.stream() for step-by-step inference")
            opts = _check_options(window, pooling)
            if kernel_initializer != "qrnn_uniform":
                initializers.get(kernel_initializer)
            super().__init__(units, **kwargs)
            self.kernel_initializer = kernel_initializer
            self.window, self.pooling = opts["window"], opts["pooling"]
            self.gates = NUM_GATES[self.pooling]

        def _build(self, input_shape, rng):
            if len(input_shape) != 2 or input_shape[-1] is None:
                raise ValueError(f"QRNN {self.name!r}: expects input (batch, time, features) with a known "
                                 f"feature count, got sample shape {input_shape}")
            I, H, D, k, G = input_shape[-1], self.units, self.num_directions, self.window, self.gates
            if self.kernel_initializer == "qrnn_uniform":
                lim = 1.0 / np.sqrt(k * I)
                self.params["W"] = rng.uniform(-lim, lim, size=(D, G * H, k * I)).astype(self.dtype)
            else:
                kinit = initializers.get(self.kernel_initializer)
                self.params["W"] = np.stack([kinit((k * I, G * H), rng, self.dtype).T for _ in range(D)])
            if self.use_bias:
                binit = initializers.get(self.bias_initializer)
                self.params["b"] = np.stack([binit((G * H,), rng, self.dtype) for _ in range(D)])

        def onnx_weights(self):
            return dict(self.params)

        def _input_features(self):
            return self.params["W"].shape[2] // self.window

        def _run(self, x, init, lengths, train):
            out = qrnn(x, self.params["W"], self.params.get("b"), init[0], init[1], lengths=lengths,
                       direction=self.direction, window=self.window, pooling=self.pooling, train=train)
            return out[0], out[1], out[2], (out[3] if train else None)

        def _run_backward(self, cache, dY, dY_h, dY_c):
            return qrnn_backward(cache, dY, dY_h, dY_c)

        def get_config(self):
            cfg = super().get_config()
            for key in ("clip", "activation", "recurrent_initializer", "stateful"):
                cfg.pop(key, None)
            if cfg.get("kernel_initializer") == "qrnn_uniform":  # the default: not a registered name
                cfg.pop("kernel_initializer")
            return {**cfg, "window": self.window, "pooling": self.pooling}

    return QRNN


STREAM_OP = 12
CELL = register(Cell("qrnn", gates=3, state_names=("h", "c"), default_activations=("Tanh", "Sigmoid"),
                     onnx_op=None, stream_op=STREAM_OP, module=__name__, functional=("qrnn", "qrnn_backward"),
                     layers=("QRNN",)))
QRNN = _layer_class()
