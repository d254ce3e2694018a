"""One converter per layer type, in a registry (the sklearn-onnx pattern).

A converter is ``convert(ctx, layer, x) -> y`` where ``x`` and ``y`` are :class:`Value`
(a tensor name plus where its time axis is) and ``ctx`` is the :class:`ConversionContext`
holding the graph being built. Register one for a custom layer with::

    from edgernn.onnx import register

    @register(MyLayer)
    def convert_my_layer(ctx, layer, x):
        return Value(ctx.g.op("Relu", [x.name]), x.time_axis)

Lookup is by exact class (a subclass may compute something else, so it is never exported
with its parent's converter). A layer, or an option of a layer, with no faithful ONNX form
raises :class:`UnsupportedError`, naming the layer and the option.

Conventions inside the graph
----------------------------
* Sequence tensors stay time-major (T, B, F) between recurrent layers (the RNN nodes are
  ``layout=0``); the model input and output are batch-first, with one ``Transpose`` each way.
* Variable lengths travel as an int64 (B,) tensor ``ctx.lengths`` (from ``Masking``,
  ``Embedding(mask_zero=True)`` or the optional ``lengths`` graph input); recurrent nodes get it
  as int32 ``sequence_lens``.
* Streaming graphs hold no time axis at all: every tensor is one step (B, F), each recurrent
  layer reads its state from graph inputs ``state_{k}_h`` (and ``state_{k}_c``) and writes the new
  state to ``state_{k}_h_out`` (``state_{k}_c_out``), k counting recurrent layers from 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto

from .. import cells
from .._activations import ACTIVATIONS as _ACT_DEFAULTS
from ..layers import (
    GRU,
    LSTM,
    Activation,
    Bidirectional,
    Dense,
    Dropout,
    Embedding,
    Masking,
    SimpleRNN,
)
from ..layers.recurrent import RecurrentLayer
from .graph import GraphBuilder, make_rnn_node
from .scan import make_step_nodes

__all__ = ["register", "get_converter", "Value", "ConversionContext", "UnsupportedError", "StateSpec",
           "convert_layers"]

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64

_CONVERTERS: dict = {}


class UnsupportedError(ValueError):
    """A layer or option with no faithful ONNX form (or not supported in this graph kind)."""

    def __init__(self, layer, option: str, why: str = ""):
        name = getattr(layer, "name", None)
        self.layer = layer
        self.option = option
        msg = f"cannot export layer {name!r} ({type(layer).__name__}) to ONNX: {option}"
        super().__init__(msg + (f": {why}" if why else ""))


def register(*layer_types):
    """Decorator registering ``convert(ctx, layer, x) -> Value`` for the given layer classes."""
    def deco(fn):
        for t in layer_types:
            _CONVERTERS[t] = fn
        return fn
    return deco


def _is_cell_layer(cls):
    """True for a layer class a cell module defines (exactly; a user's subclass is not one)."""
    spec = cells.registered().get(getattr(cls, "cell", None))
    return spec is not None and any(getattr(spec.mod(), n, None) is cls for n in spec.layers)


def get_converter(layer):
    """The converter registered for ``type(layer)`` (exact class match).

    Raises
    ------
    UnsupportedError
        If no converter is registered for the layer's class.
    """
    fn = _CONVERTERS.get(type(layer))
    if fn is None and isinstance(layer, RecurrentLayer) and _is_cell_layer(type(layer)):
        fn = convert_recurrent  # every registered cell's layer: a native node or its step in a Scan
    if fn is None:
        raise UnsupportedError(layer, "no ONNX converter for this layer class",
                               "register one with @edgernn.onnx.register(" + type(layer).__name__ + ")")
    return fn


@dataclass
class Value:
    """A tensor in the graph being built.

    Attributes
    ----------
    name : str
    time_axis : int or None
        0 for time-major (T, B, F), 1 for batch-first (B, T, F), None without a time axis.
    lengths : str or None
        int64 (B,) valid steps of this tensor (graph models, where each tensor may have its
        own). A single-input converter reads ``ctx.lengths`` (set to its input's lengths) and may
        change it; a multi-input converter receives a list of Values and sets ``lengths`` on
        the Value it returns.
    """

    name: str
    time_axis: int | None
    lengths: str | None = None


@dataclass
class StateSpec:
    """One recurrent state carried between calls (streaming or stateful graphs)."""

    input: str
    output: str
    layer: str
    kind: str  # "h" or "c"
    units: int


@dataclass
class ConversionContext:
    """Everything the converters share while one graph is written.

    Attributes
    ----------
    g : GraphBuilder
    streaming : bool
        Single-step graph.
    lengths : str or None
        int64 (B,) tensor of valid steps per sample, when the model has variable lengths.
    states : list of StateSpec
        Recurrent state inputs/outputs created so far.
    extra_outputs : list of (name, tensor)
        ``return_state`` outputs of the last layer, in Keras order.
    is_last : bool
        True while the last layer is converted.
    notes : list of str
        Human-readable facts about the graph (stored in the metadata).
    """

    g: GraphBuilder
    streaming: bool = False
    lengths: str | None = None
    states: list = field(default_factory=list)
    extra_outputs: list = field(default_factory=list)
    is_last: bool = False
    notes: list = field(default_factory=list)
    n_recurrent: int = 0
    saw_lengths: bool = False  # some tensor of the graph had lengths (padded cases are worth verifying)
    graph_mode: bool = False  # a functional Model: converters return every output of a layer as Values
    step_valid: str | None = None
    input_name: str = "x"
    input_kind: str = "float"
    input_shape: list = field(default_factory=list)
    _cache: dict = field(default_factory=dict)

    # ---- shared helpers ----------------------------------------------------------
    def lengths32(self) -> str | None:
        """``ctx.lengths`` as int32 (RNN ``sequence_lens``), cast once per tensor."""
        if self.lengths is None:
            return None
        key = ("len32", self.lengths)
        if key not in self._cache:
            self._cache[key] = self.g.op("Cast", [self.lengths], to=TensorProto.INT32, base="seq_lens")
        return self._cache[key]

    def nonempty(self) -> str:
        """bool (B, 1): ``lengths > 0``."""
        key = ("nonempty", self.lengths)
        if key not in self._cache:
            gt = self.g.op("Greater", [self.lengths, self.g.const(0)], base="nonempty")
            self._cache[key] = self.g.unsqueeze(gt, [1], base="nonempty")
        return self._cache[key]

    def time_major(self, x: Value) -> Value:
        if x.time_axis == 1:
            return Value(self.g.op("Transpose", [x.name], perm=[1, 0, 2], base="time_major"), 0)
        return x

    def batch_first(self, x: Value) -> Value:
        if x.time_axis == 0:
            return Value(self.g.op("Transpose", [x.name], perm=[1, 0, 2], base="batch_first"), 1)
        return x


# -------------------------------------------------------------------------------------------
# activations (Dense, Activation): Keras name -> ONNX op
# -------------------------------------------------------------------------------------------
_ACT_OPS = {
    "relu": ("Relu", {}),
    "tanh": ("Tanh", {}),
    "sigmoid": ("Sigmoid", {}),
    "hard_sigmoid": ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}),
    "softsign": ("Softsign", {}),
    "softplus": ("Softplus", {}),
    "elu": ("Elu", {"alpha": 1.0}),
    "softmax": ("Softmax", {"axis": -1}),
}


def _activation(ctx, layer, name: str, x: str) -> str:
    if name == "linear":
        return x
    if name not in _ACT_OPS:
        raise UnsupportedError(layer, f"activation={name!r}", "no ONNX operator for it")
    op, attrs = _ACT_OPS[name]
    return ctx.g.op(op, [x], base=f"{layer.name or op.lower()}_{op.lower()}", **attrs)


def onnx_activation(g, name: str, x: str, alpha=None, beta=None, base="act") -> str:
    """Apply the ONNX RNN-style activation ``name`` (``"Tanh"``, ``"Affine"``, ...) to ``x`` with
    standalone operators (defaults for alpha/beta as in ``edgernn._activations``)."""
    key = name.lower()
    if key not in _ACT_DEFAULTS:
        raise ValueError(f"unknown activation {name!r}")
    _, a0, b0 = _ACT_DEFAULTS[key]
    a = float(a0 if alpha is None else alpha)
    b = float(b0 if beta is None else beta)
    f32 = np.float32
    if key == "affine":
        return g.op("Add", [g.op("Mul", [x, g.const(a, f32)], base=f"{base}_mul"), g.const(b, f32)], base=base)
    if key == "scaledtanh":
        t = g.op("Tanh", [g.op("Mul", [x, g.const(b, f32)], base=f"{base}_in")], base=f"{base}_tanh")
        return g.op("Mul", [t, g.const(a, f32)], base=base)
    if key == "hardsigmoid":
        return g.op("HardSigmoid", [x], alpha=a, beta=b, base=base)
    if key in ("leakyrelu", "elu", "thresholdedrelu"):
        op = {"leakyrelu": "LeakyRelu", "elu": "Elu", "thresholdedrelu": "ThresholdedRelu"}[key]
        return g.op(op, [x], alpha=a, base=base)
    op = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softsign": "Softsign", "softplus": "Softplus"}[key]
    return g.op(op, [x], base=base)


@register(Activation)
def convert_activation(ctx, layer, x):
    """``Activation``: the matching ONNX operator (``linear`` writes nothing)."""
    return Value(_activation(ctx, layer, layer.activation, x.name), x.time_axis)


@register(Dropout)
def convert_dropout(ctx, layer, x):
    """``Dropout`` is the identity at inference: nothing is written."""
    return x


@register(Dense)
def convert_dense(ctx, layer, x):
    """``Dense``: ``MatMul`` with the (F, units) kernel over the last axis, ``Add`` bias, activation."""
    base = layer.name or "dense"
    k = ctx.g.initializer(f"{base}_kernel", np.asarray(layer.params["kernel"], np.float32))
    y = ctx.g.op("MatMul", [x.name, k], base=f"{base}_matmul")
    if layer.use_bias:
        b = ctx.g.initializer(f"{base}_bias", np.asarray(layer.params["bias"], np.float32))
        y = ctx.g.op("Add", [y, b], base=f"{base}_bias_add")
    return Value(_activation(ctx, layer, layer.activation, y), x.time_axis)


def _lengths_from_valid(ctx, valid_f: str, time_axis: int, base: str) -> str:
    """int64 (B,): 1 + index of the last valid step (0 if none), from a float (B,T)/(T,B) 0/1 map."""
    g = ctx.g
    T = g.op("Gather", [g.op("Shape", [valid_f]), g.const(time_axis)], axis=0, base=f"{base}_T")
    pos = g.op("Range", [g.const(1), g.op("Add", [T, g.const(1)]), g.const(1)], base=f"{base}_pos")
    pos = g.op("Cast", [pos], to=FLOAT, base=f"{base}_pos_f")  # (T,) 1..T
    if time_axis == 0:
        pos = g.unsqueeze(pos, [1])  # (T, 1)
    last = g.reduce_max(g.op("Mul", [valid_f, pos]), [time_axis], keepdims=0, base=f"{base}_last")
    lengths = g.op("Cast", [last], to=INT64, base=f"{base}_lengths")
    if ctx.lengths is not None:
        lengths = g.op("Min", [lengths, ctx.lengths], base=f"{base}_lengths_min")
    return lengths


def _keep_mask(ctx, x: Value, base: str) -> str:
    """float (B,T,1) or (T,B,1): 1 for steps t < lengths[b], else 0."""
    g = ctx.g
    T = g.op("Gather", [g.op("Shape", [x.name]), g.const(x.time_axis)], axis=0, base=f"{base}_T")
    t = g.op("Range", [g.const(0), T, g.const(1)], base=f"{base}_t")  # (T,)
    if x.time_axis == 1:
        keep = g.op("Less", [g.unsqueeze(t, [0]), g.unsqueeze(ctx.lengths, [1])], base=f"{base}_keep")
    else:
        keep = g.op("Less", [g.unsqueeze(t, [1]), g.unsqueeze(ctx.lengths, [0])], base=f"{base}_keep")
    keep = g.op("Cast", [keep], to=FLOAT, base=f"{base}_keep_f")
    return g.unsqueeze(keep, [2])


def _streaming_valid(ctx, valid_f: str, base: str):
    """Streaming: record the float (B,) 0/1 flag of non-padding samples of this step."""
    if ctx.step_valid is not None:
        valid_f = ctx.g.op("Mul", [valid_f, ctx.step_valid], base=f"{base}_valid_and")
    ctx.step_valid = valid_f


@register(Masking)
def convert_masking(ctx, layer, x):
    """``Masking``: lengths computed inside the graph from ``mask_value``; padded steps zeroed.

    In a streaming graph there is no padding (a stream has no trailing steps to skip), so
    Masking writes nothing; the device should feed real steps only.
    """
    g = ctx.g
    base = layer.name or "masking"
    if x.time_axis is None and not ctx.streaming:
        raise UnsupportedError(layer, "input without a time axis", "Masking needs (batch, time, features)")
    eq = g.op("Equal", [x.name, g.const(layer.mask_value, np.float32)], base=f"{base}_eq")
    valid = g.op("Cast", [g.op("Not", [eq], base=f"{base}_ne")], to=FLOAT, base=f"{base}_ne_f")
    valid = g.reduce_max(valid, [-1], keepdims=0, base=f"{base}_valid")  # any feature != mask_value
    if ctx.streaming:
        _streaming_valid(ctx, valid, base)
        ctx.notes.append(f"{layer.name}: a step whose features all equal mask_value={layer.mask_value!r} is "
                         "padding: recurrent states are held (as predict does for trailing padding)")
        return Value(g.op("Mul", [x.name, g.unsqueeze(ctx.step_valid, [1])], base=f"{base}_out"), None)
    ctx.lengths = _lengths_from_valid(ctx, valid, x.time_axis, base)
    ctx.notes.append(f"{layer.name}: lengths computed in the graph from mask_value={layer.mask_value!r}")
    y = g.op("Mul", [x.name, _keep_mask(ctx, x, base)], base=f"{base}_out")
    return Value(y, x.time_axis)


@register(Embedding)
def convert_embedding(ctx, layer, x):
    """``Embedding``: ``Gather`` on the (vocabulary, dim) table; ``mask_zero`` gives lengths."""
    g = ctx.g
    base = layer.name or "embedding"
    if ctx.input_kind != "ids" or x.name != ctx.input_name:
        raise UnsupportedError(layer, "Embedding not applied to the model input",
                               "only a first-layer Embedding (integer ids input) is exported")
    table = g.initializer(f"{base}_embeddings", np.asarray(layer.params["embeddings"], np.float32))
    y = g.op("Gather", [table, x.name], axis=0, base=f"{base}_gather")
    if ctx.streaming:
        if layer.mask_zero:
            nz = g.op("Cast", [g.op("Not", [g.op("Equal", [x.name, g.const(0)])])], to=FLOAT, base=f"{base}_nz")
            _streaming_valid(ctx, nz, base)
            ctx.notes.append(f"{layer.name}: token id 0 is padding: recurrent states are held")
        return Value(y, None)
    if layer.mask_zero:
        nz = g.op("Cast", [g.op("Not", [g.op("Equal", [x.name, g.const(0)])])], to=FLOAT, base=f"{base}_nz")
        ctx.lengths = _lengths_from_valid(ctx, nz, 1, base)
        ctx.notes.append(f"{layer.name}: lengths computed in the graph from id 0 (mask_zero)")
    return Value(y, 1)


# -------------------------------------------------------------------------------------------
# recurrent layers
# -------------------------------------------------------------------------------------------
def _merge(ctx, A: str, axis: int, mode: str, base: str) -> str:
    """Merge the direction axis ``axis`` (size 2) of A (..., 2, B, H) as Bidirectional does."""
    g = ctx.g
    if mode == "concat":
        # (T, 2, B, H) -> (T, B, 2, H) -> (T, B, 2H); (2, B, H) -> (B, 2, H) -> (B, 2H)
        if axis == 1:
            t = g.op("Transpose", [A], perm=[0, 2, 1, 3], base=f"{base}_concat_t")
            return g.op("Reshape", [t, g.const([0, 0, -1])], base=f"{base}_concat")
        t = g.op("Transpose", [A], perm=[1, 0, 2], base=f"{base}_concat_t")
        return g.op("Reshape", [t, g.const([0, -1])], base=f"{base}_concat")
    a = g.op("Gather", [A, g.const(0)], axis=axis, base=f"{base}_fw")
    b = g.op("Gather", [A, g.const(1)], axis=axis, base=f"{base}_bw")
    if mode == "sum":
        return g.op("Add", [a, b], base=f"{base}_sum")
    if mode == "mul":
        return g.op("Mul", [a, b], base=f"{base}_mul")
    if mode == "ave":
        s = g.op("Add", [a, b], base=f"{base}_sum")
        return g.op("Mul", [s, g.const(0.5, np.float32)], base=f"{base}_ave")
    raise ValueError(f"unknown merge_mode {mode!r}")


def _state_names(k: int, kind: str, d: int, D: int):
    suffix = "_backward" if (D == 2 and d == 1) else ""
    return f"state_{k}_{kind}{suffix}", f"state_{k}_{kind}{suffix}_out"


def _recurrent_checks(ctx, layer, x):
    cell = layer.cell
    if cell not in cells.registered():
        raise UnsupportedError(layer, f"cell={cell!r}")
    if x.time_axis is None and not ctx.streaming:
        raise UnsupportedError(layer, "input without a time axis",
                               "a recurrent layer needs (batch, time, features)")
    if ctx.streaming and x.time_axis is not None:
        raise UnsupportedError(layer, "streaming input with a time axis")
    if ctx.streaming and layer.direction != "forward":
        what = "Bidirectional" if layer.direction == "bidirectional" else "go_backwards=True"
        raise UnsupportedError(layer, what + " in a streaming graph",
                               "a step-by-step graph can only run forward in time")
    if layer.return_state and not ctx.is_last and not ctx.graph_mode:
        raise UnsupportedError(layer, "return_state=True on a layer that is not the last one")


@register(SimpleRNN, GRU, LSTM, Bidirectional)
def convert_recurrent(ctx, layer, x, initial_state=None):
    """SimpleRNN / GRU / LSTM / Bidirectional as one native ``RNN``/``GRU``/``LSTM`` node.

    Full graph: time-major ``layout=0`` node with ``sequence_lens`` when the model has lengths;
    ``return_sequences=True`` gives Y (``go_backwards``: valid part reversed with
    ``ReverseSequence``, or a reversing ``Slice`` without lengths); ``return_sequences=False``
    gives Y_h, which is the state at each sample's last valid step (the state after reading
    step 0 for a reverse direction, as the layers compute it). Bidirectional merges the two
    directions with Concat-by-Reshape, Add, Mul or Add*0.5. ``stateful`` layers get their
    initial state from graph inputs and return the final state.

    Streaming graph: one step, states from/to graph inputs/outputs; forward direction only.

    In a functional ``Model`` (``ctx.graph_mode``), ``initial_state`` are the Values of the
    state tensors the layer was called with (Keras order), and a layer with ``return_state``
    returns ``[y, *states]`` as Values.
    """
    _recurrent_checks(ctx, layer, x)
    if initial_state is not None and (ctx.streaming or layer.stateful):
        raise UnsupportedError(layer, "initial_state from other tensors in a streaming graph or a stateful layer")
    g = ctx.g
    cell, H, D = layer.cell, int(layer.units), (2 if layer.direction == "bidirectional" else 1)
    k = ctx.n_recurrent
    ctx.n_recurrent += 1
    base = layer.name or f"{cell}_{k}"
    w = layer.onnx_weights()
    # a bias the node needs even without use_bias (JANET's saturated output gate) is written too
    has_bias = bool(getattr(layer, "use_bias", True)) or (w.get("Wb") is not None and bool(np.any(w["Wb"])))
    spec = cells.get(cell)
    kinds = list(spec.state_names)
    out_kind = kinds[0]  # the state that is also the output (h, or Jordan's y)
    carry = ctx.streaming or layer.stateful
    width = {kind: H for kind in kinds}
    mod = spec.mod()
    if ctx.streaming and hasattr(mod, "onnx_extra_states"):  # e.g. QRNN's last window-1 inputs
        extra = mod.onnx_extra_states(layer)
        width.update(extra)
        kinds += list(extra)
    cell_kinds = list(spec.state_names)  # what return_state exposes

    # initial states from graph inputs: (batch, H) each, stacked to (D, B, H)
    init = {}
    names = {}
    if carry:
        for kind in kinds:
            parts = []
            for d in range(D):
                iname, oname = _state_names(k, kind, d, D)
                names[(kind, d)] = oname
                g.add_input(iname, FLOAT, ["batch", width[kind]])
                ctx.states.append(StateSpec(iname, oname, layer.name, kind, width[kind]))
                parts.append(g.unsqueeze(iname, [0]))
            init[kind] = parts[0] if D == 1 else g.op("Concat", parts, axis=0, base=f"{base}_init_{kind}")
    if initial_state is not None:  # Keras order: the states of direction 0, then of direction 1
        n = len(kinds)
        for j, kind in enumerate(kinds):
            parts = [g.unsqueeze(initial_state[d * n + j].name, [0]) for d in range(D)]
            init[kind] = parts[0] if D == 1 else g.op("Concat", parts, axis=0, base=f"{base}_init_{kind}")

    if spec.onnx_op is None:  # no native node: the cell's step, in a Scan for full sequences
        seq = None if ctx.streaming else ctx.lengths32()
        outs = make_step_nodes(ctx, layer, spec, x.name, init, xt=None if ctx.streaming else ctx.time_major(x).name,
                               sequence_lens=seq, base=base)
    else:
        if ctx.streaming:
            xt = g.unsqueeze(x.name, [0], base=f"{base}_step_in")  # (1, B, I)
            seq = None
        else:
            xt = ctx.time_major(x).name  # (T, B, I)
            seq = ctx.lengths32()
        # a one-state cell on an LSTM node (JANET: h == c) starts the node's c from its h
        init_c = init.get("h") if spec.onnx_op == "LSTM" and "c" not in kinds else None
        outs = make_rnn_node(
            g, spec.onnx_op.lower(), xt, w["W"], w["R"], w["Wb"] if has_bias else None,
            w["Rb"] if has_bias else None, w.get("P") if getattr(layer, "peephole", False) else None,
            sequence_lens=seq, initial_h=init.get("h"), initial_c=init.get("c", init_c), direction=layer.direction,
            activations=layer.onnx_activations, activation_alpha=layer.activation_alpha,
            activation_beta=layer.activation_beta, clip=layer.clip, input_forget=layer.input_forget,
            linear_before_reset=layer.linear_before_reset, base=base)
    # Y (T, D, B, H); finals (D, B, H); a node's extra state (an LSTM's Y_c for JANET) is dropped
    Y, finals = outs[0], dict(zip(kinds, outs[1:1 + len(kinds)], strict=True))
    if seq is not None:
        # onnxruntime leaves the state of a length-0 row at zero (LSTM, GRU) or undefined (RNN);
        # edgernn returns the initial state there.
        for kind in kinds:
            fallback = init.get(kind, g.const(0.0, np.float32))
            finals[kind] = g.op("Where", [ctx.nonempty(), finals[kind], fallback], base=f"{base}_{kind}_len0")

    # final states: (D, B, H) -> per direction (B, H)
    per_dir = {}
    for kind in kinds:
        for d in range(D):
            if D == 1:
                per_dir[(kind, d)] = g.squeeze(finals[kind], [0], base=f"{base}_{kind}")
            else:
                per_dir[(kind, d)] = g.op("Gather", [finals[kind], g.const(d)], axis=0,
                                          base=f"{base}_{kind}_{'bw' if d else 'fw'}")
    out_step = None
    if ctx.streaming and ctx.step_valid is not None:
        # a padding step (Masking / mask_zero) holds the state; return_sequences outputs zeros
        cond = ctx.g.op("Cast", [g.unsqueeze(ctx.step_valid, [1])], to=TensorProto.BOOL, base=f"{base}_valid")
        for kind in kinds:
            held = g.op("Where", [cond, per_dir[(kind, 0)], f"state_{k}_{kind}"], base=f"{base}_{kind}_hold")
            if kind == out_kind and layer.return_sequences:
                out_step = g.op("Where", [cond, per_dir[(kind, 0)], g.const(0.0, np.float32)],
                                base=f"{base}_step_out")
            per_dir[(kind, 0)] = held
    if carry:
        for (kind, d), oname in names.items():
            g.add_output(oname, per_dir[(kind, d)], FLOAT, ["batch", width[kind]])
    if layer.return_state and not ctx.graph_mode:
        for d in range(D):
            for kind in cell_kinds:
                iname, oname = _state_names(k, kind, d, D)
                ctx.extra_outputs.append((oname, per_dir[(kind, d)], H))
    y = _recurrent_output(ctx, layer, Y, finals, per_dir, out_kind, out_step, D, base)
    if layer.return_state and ctx.graph_mode:
        return [y] + [Value(per_dir[(kind, d)], None) for d in range(D) for kind in cell_kinds]
    return y


def _recurrent_output(ctx, layer, Y, finals, per_dir, out_kind, out_step, D, base):
    g = ctx.g
    if ctx.streaming:
        return Value(per_dir[(out_kind, 0)] if out_step is None else out_step, None)  # one step: Y[0] == Y_h
    if layer.return_sequences:
        if D == 1:
            y = g.squeeze(Y, [1], base=f"{base}_seq")  # (T, B, H)
            if layer.go_backwards:  # Keras: the output sequence comes out reversed
                if ctx.lengths is not None:
                    y = g.op("ReverseSequence", [y, ctx.lengths], batch_axis=1, time_axis=0,
                             base=f"{base}_flip")
                else:
                    y = g.op("Slice", [y, g.const([-1]), g.const([np.iinfo(np.int64).min]), g.const([0]),
                                       g.const([-1])], base=f"{base}_flip")
            return Value(y, 0)
        return Value(_merge(ctx, Y, 1, layer.merge_mode, base), 0)
    if D == 1:
        return Value(per_dir[(out_kind, 0)], None)
    fin = finals[out_kind]
    return Value(_merge(ctx, fin, 0, layer.merge_mode, base), None)


# -------------------------------------------------------------------------------------------
# whole stacks
# -------------------------------------------------------------------------------------------
def convert_layers(layers, input_shape, *, streaming=False, opset, lengths_input=False):
    """Write the graph of a stack of built layers.

    Parameters
    ----------
    layers : list of Layer
        Built layers, applied in order.
    input_shape : tuple
        Shape of one sample, e.g. ``(None, F)`` or ``(T,)`` for token ids.
    streaming : bool
        Single-step graph (input (batch, F) plus states).
    opset : int
    lengths_input : bool
        Add an int64 ``lengths`` (batch,) graph input feeding ``sequence_lens`` (full graph).

    Returns
    -------
    (GraphBuilder, ConversionContext, list)
        The builder (outputs declared), the context and the output names.
    """
    g = GraphBuilder(opset)
    ctx = ConversionContext(g=g, streaming=streaming)
    ids = bool(layers) and type(layers[0]) is Embedding
    ctx.input_kind = "ids" if ids else "float"
    shape = tuple(input_shape)
    if ids:
        in_shape = ["batch"] if streaming else ["batch", "time"]
        x = Value(g.add_input("x", INT64, in_shape), None if streaming else 1)
    else:
        if len(shape) == 2:
            F = shape[-1]
            in_shape = ["batch", F] if streaming else ["batch", "time", F]
            x = Value(g.add_input("x", FLOAT, in_shape), None if streaming else 1)
        elif len(shape) == 1:
            in_shape = ["batch", shape[0]]
            x = Value(g.add_input("x", FLOAT, in_shape), None)
        else:
            raise ValueError(f"cannot export a model with sample shape {shape}")
    ctx.input_name = x.name
    ctx.input_shape = in_shape
    if lengths_input:
        if streaming:
            raise ValueError("lengths_input: a streaming graph has no time axis")
        ctx.lengths = g.add_input("lengths", INT64, ["batch"])
        ctx.notes.append("lengths: graph input (int64, one per sample) feeding sequence_lens")
    for i, layer in enumerate(layers):
        ctx.is_last = i == len(layers) - 1
        had = ctx.lengths
        x = get_converter(layer)(ctx, layer, x)
        ctx.saw_lengths = ctx.saw_lengths or had is not None or ctx.lengths is not None
    y = ctx.batch_first(x)
    out_shape = ["batch"] + (["time"] if y.time_axis is not None else [])
    out_shape.append(_last_dim(layers, shape))
    g.add_output("y", y.name, FLOAT, out_shape)
    out_names = ["y"]
    for oname, tensor, H in ctx.extra_outputs:
        if oname not in g._names:
            g.add_output(oname, tensor, FLOAT, ["batch", H])
        out_names.append(oname)
    # order: y, return_state outputs (Keras order), then remaining state outputs
    order = {n: i for i, n in enumerate(out_names)}
    g.outputs.sort(key=lambda o: order.get(o.name, len(order)))
    return g, ctx, out_names


def _last_dim(layers, shape):
    if not layers:
        return shape[-1]
    out = layers[-1].output_shape
    if isinstance(out, list):
        out = out[0]
    d = out[-1] if out else None
    return d if isinstance(d, int) else "features"


# the converters of the layers around RNNs and of the attention layers register themselves
from . import converters_attention, converters_layers  # noqa: E402,F401
