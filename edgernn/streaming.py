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
- Threads: a stream carries its sequences' state, like a file position; use one stream per
  thread (one shared by two threads at once interleaves their steps). Streams of the same
  model in different threads, and ``predict`` beside them, are independent
  (tests/test_fuzz_concurrency.py).

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
from . import cells
from ._config import jit
from .cells import fastgrnn as _fastgrnn
from .cells import fastrnn as _fastrnn
from .cells import gru as _gru
from .cells import indrnn as _indrnn
from .cells import janet as _janet
from .cells import jordan as _jordan
from .cells import lstm as _lstm
from .cells import qrnn as _qrnn
from .cells import rnn as _rnn
from .cells import sru as _sru
from .cells._ops import (
    COLUMNS,
    ERR_ID,
    ERR_SHAPE,
    F_MASK_ZERO,
    H_B,
    H_FIN,
    H_FIRST_IN,
    H_FIRST_INS,
    H_IDS,
    H_NOPS,
    H_PARITY,
    H_VALID,
    LINEAR,
    M_BIAS,
    M_C0,
    M_F,
    M_FLAGS,
    M_I,
    M_IN,
    M_INS,
    M_O,
    M_OUT,
    M_OUTS,
    M_S,
    M_TYPE,
    M_V,
    M_W,
    NCOL,
    NFP,
    OP_ACT,
    OP_DENSE,
    OP_EMB,
    OP_MASK,
    SOFTMAX,
    Packer,
    act_span,
    mv_flat,
    state_view,
)

__all__ = ["Stream", "stream"]

@jit
def _dense_op(meta, li, Wf, buf, B, rev):
    m = meta[li]
    I, U = m[M_I], m[M_O]
    out, outs, bias, s = m[M_OUT], m[M_OUTS], m[M_BIAS], m[M_S]
    mv_flat(Wf, m[M_W], I, I, U, buf, m[M_IN], m[M_INS], B, buf, s, U, rev)
    fp = m[M_F]
    for b in range(B):
        z = buf[s + b * U: s + b * U + U]
        if bias >= 0:
            bv = Wf[bias: bias + U]
            for j in range(U):
                z[j] += bv[j]
        act_span(m[M_C0], buf, s + b * U, buf, out + b * outs, U, Wf[fp], Wf[fp + 3])


@jit
def _act_op(meta, li, Wf, buf, B):
    m = meta[li]
    n = m[M_I]
    fp = m[M_F]
    for b in range(B):
        act_span(m[M_C0], buf, m[M_IN] + b * m[M_INS], buf, m[M_OUT] + b * m[M_OUTS], n, Wf[fp], Wf[fp + 3])


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
        # one branch per cell (its module's STREAM_OP), then the non-recurrent ops
        if t == _lstm.STREAM_OP:
            _lstm.stream_step(meta, li, Wf, buf, B, rev)
        elif t == _gru.STREAM_OP:
            _gru.stream_step(meta, li, Wf, buf, B, rev)
        elif t == _rnn.STREAM_OP:
            _rnn.stream_step(meta, li, Wf, buf, B, rev)
        elif t == _jordan.STREAM_OP:
            _jordan.stream_step(meta, li, Wf, buf, B, rev)
        elif t == _indrnn.STREAM_OP:
            _indrnn.stream_step(meta, li, Wf, buf, B, rev)
        elif t == _sru.STREAM_OP:
            _sru.stream_step(meta, li, Wf, buf, B, rev)
        elif t == _fastrnn.STREAM_OP:
            _fastrnn.stream_step(meta, li, Wf, buf, B, rev)
        elif t == _fastgrnn.STREAM_OP:
            _fastgrnn.stream_step(meta, li, Wf, buf, B, rev)
        elif t == _qrnn.STREAM_OP:
            _qrnn.stream_step(meta, li, Wf, buf, B, rev)
        elif t == _janet.STREAM_OP:
            _janet.stream_step(meta, li, Wf, buf, B, rev)
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
class LayerNotInEngine(ValueError):
    """A layer the jitted engine does not run; ``model.stream()`` then steps the model layer by layer
    (:class:`edgernn.graph_stream.GraphStream`) when every layer is causal."""


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

    pk = Packer(dtype)
    B = int(batch_size)
    ops = []  # dicts with meta columns
    rec = []  # recurrent ops: (op index, layer, [(offset, stride, width) per state])
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
            E = np.asarray(layer.params["embeddings"])
            if E.ndim != 2 or E.shape[0] < 1:
                raise ValueError(f"stream: {label} has embeddings of shape {E.shape}; expected (vocabulary, dim)")
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
            spec = cells.get(layer.cell)
            # (meta, state views[, hidden views]): hidden regions (e.g. QRNN's last inputs) are
            # reset with the state but not exposed by ``Stream.state``
            m, layer_states, *hidden = spec.mod().stream_pack(layer, pk, B, dtype)
            if m["I"] != feat:
                raise ValueError(f"stream: {label} expects {m['I']} input features, gets {feat}")
            ops.append(m)
            rec.append((len(ops) - 1, layer, layer_states, hidden[0] if hidden else []))
            feat = m["O"]
        elif isinstance(layer, Dense):
            K = np.asarray(layer.params["kernel"])  # (F, U)
            if K.ndim != 2 or ("bias" in layer.params and np.shape(layer.params["bias"]) != (K.shape[1],)):
                raise ValueError(f"stream: {label} has kernel {K.shape} and bias "
                                 f"{np.shape(layer.params.get('bias'))}; expected (features, units) and (units,)")
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
            raise LayerNotInEngine(f"stream: layer {label} ({type(layer).__name__}) cannot be streamed by the "
                                   "jitted engine (SimpleRNN, GRU, LSTM, the newer cells, Dense, Activation, "
                                   "Embedding, Masking, Dropout)")
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
    for k, m in enumerate(ops):
        for name, v in m.items():
            meta[k + 1, COLUMNS[name.upper()]] = int(v)
    Wf = np.concatenate(pk.w) if pk.w else np.zeros(1, dtype)
    last = ops[-1]
    states = []
    for _, layer, views, hidden in rec:
        states.append(dict(layer=layer, views=views, hidden=hidden, names=cells.get(layer.cell).state_names))
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
            for view in self._state_views(s) + self._state_views(s, "hidden"):
                view[idx] = 0.0

    @property
    def state(self):
        """Copy of the recurrent state: one list per recurrent layer, ``[h]`` (SimpleRNN, GRU)
        or ``[h, c]`` (LSTM), each ``(batch, units)``. Assigning a list of the same structure
        (arrays of the same shapes) sets it; the arrays are copied. A layer's hidden regions
        (QRNN's last ``window - 1`` inputs) are not part of it: ``reset`` zeroes them, assigning
        a state leaves them as they are."""
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
            n = len(s["views"])
            label = _layer_label(s["layer"])
            if isinstance(v, np.ndarray) and n == 1:
                v = [v]
            if not isinstance(v, (list, tuple)) or len(v) != n:
                raise ValueError(f"stream.state[{k}] ({label}): expected a list of {n} arrays "
                                 f"([{', '.join(s['names'])}])")
            arrs = []
            for j, a in enumerate(v):
                a = np.asarray(a)
                if a.dtype.kind not in "iuf":
                    raise TypeError(f"stream.state[{k}][{j}] ({label}): expected a float array, got {a.dtype}")
                want = (self.batch_size, s["views"][j][2])
                if a.shape != want:
                    raise ValueError(f"stream.state[{k}][{j}] ({label}): expected shape {want}, got {a.shape}")
                arrs.append(a)
            new.append(arrs)
        for s, arrs in zip(self._states, new, strict=True):  # validated: now write
            for view, a in zip(self._state_views(s), arrs, strict=True):
                view[...] = a

    def _state_views(self, s, key="views"):
        return [state_view(self._buf, self.batch_size, off, stride, width) for off, stride, width in s[key]]

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
