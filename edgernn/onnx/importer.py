"""ONNX import: an ONNX graph with ``RNN``/``GRU``/``LSTM`` nodes -> an edgernn ``Sequential``.

::

    import edgernn.onnx
    model = edgernn.onnx.load("model.onnx")     # from torch.onnx, tf2onnx or edgernn's export
    stream = model.stream()                      # then run it with edgernn's engine

The graph is read by following its data path from the input to the chosen output and
turning each piece into an edgernn layer:

* ``RNN``/``GRU``/``LSTM`` nodes (either ``layout``, any direction, bias, peepholes,
  ``input_forget``, ``clip``, ``linear_before_reset``, activations edgernn has, a
  ``sequence_lens`` graph input, zero initial states) -> SimpleRNN/GRU/LSTM, Bidirectional
  (merged by Transpose+Reshape or Concat = ``concat``, Add = ``sum``, Mul = ``mul``,
  Add then Mul 0.5 = ``ave``);
* glue that only moves axes: Transpose, Squeeze/Unsqueeze, Reshape that drops a direction
  axis or merges directions, Identity, Dropout, Cast, Slice/Gather of the last time step of a
  forward layer (= its final state), Slice/Gather/Concat picking layers and directions out of
  stacked final states (PyTorch's ``h_n``), a reversing Slice after a ``reverse`` layer;
* ``Gather`` of int64 token ids on a constant (vocabulary, dim) table -> Embedding (first);
* edgernn's export of ``Masking`` (lengths computed in the graph from ``Equal(x, mask_value)``,
  padded steps zeroed, ``sequence_lens`` from them) -> Masking;
* ``MatMul``/``Gemm`` with a constant weight (+ ``Add`` of a constant bias) -> Dense;
  Relu/Tanh/Sigmoid/Softsign/Softplus/Elu/HardSigmoid(0.2, 0.5)/Softmax over the last axis ->
  the Dense's activation or an Activation layer;
* shape arithmetic (Shape, Gather, Concat, ConstantOfShape, ...) that builds the zero initial
  states PyTorch's exporter writes, and anything computed from constants alone.

Anything else on the data path is refused with :class:`UnsupportedGraphError`, naming the
node and its op, as is every option with no edgernn form (an activation edgernn lacks, a
nonzero or input-given initial state, the cell state as output, one direction of a
bidirectional layer used alone, ...).

Unrolled recurrences: ``torch.onnx.export(dynamo=True)`` writes ``nn.RNN`` as per-step chains
``h_t = act(x_t W + b_ih + h_{t-1} R + b_hh)`` (MatMul/Add/Tanh or Relu, T fixed). Such chains,
forward, reverse and forward+reverse pairs concatenated as a bidirectional layer, with a zero
initial state and T >= 2, are re-rolled into native ``RNN`` nodes before import, so the model
takes any length. Any other graph whose data path selects single time steps is refused with
that explanation.

Correspondence
--------------
The model is batch-first: ``predict`` takes (B, T, F) even when the graph's input is
time-major (T, B, F), and a ``sequence_lens`` graph input becomes ``predict(x, lengths=...)``.
Outputs correspond up to the axis order the graph writes: a raw ``Y`` (T, D, B, H)
(``layout=1``: (B, T, D, H)) is ``predict``'s (B, T, D*H) with the directions concatenated,
``Y_h`` (D, B, H) is (B, D*H). ``model.meta["onnx_import"]`` records the graph's input and
output names, the input layout and the output's axes (``"B"``, ``"T"``, ``"F"``, ``"D"``,
``"H"``, ``"1"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from .._activations import ACTIVATIONS as _ACT_TABLE
from .._activations import USES_ALPHA, USES_BETA

__all__ = ["load", "UnsupportedGraphError"]

_INT_MAX = np.iinfo(np.int64).max // 2


class UnsupportedGraphError(ValueError):
    """A graph, node or option that has no edgernn form; ``node`` and ``op`` name the culprit."""

    def __init__(self, message, node=None):
        self.node = None if node is None else (node.name or "")
        self.op = None if node is None else node.op_type
        if node is not None:
            label = repr(node.name) if node.name else f"(unnamed, output {node.output[0]!r})"
            message = f"node {label} ({node.op_type}): {message}"
        super().__init__(message)


# ---- abstract values ---------------------------------------------------------------------
@dataclass
class _Const:
    value: np.ndarray


@dataclass
class _Sym:
    """An int64 vector computed from tensor shapes: entries are ints or axis descriptors."""

    dims: list
    scalar: bool = False


@dataclass
class _Zeros:
    """A float tensor known to be all zeros (initial states built by ConstantOfShape etc.)."""


@dataclass
class _Lengths:
    """The int sequence-lengths graph input (possibly cast)."""

    name: str


@dataclass
class _Other:
    """Another float graph input (e.g. an initial state fed by the caller)."""

    name: str


@dataclass
class _MaskVal:
    """A tensor derived from comparing the data with a mask value (edgernn's Masking export)."""

    value: float
    version: int


@dataclass
class _LenDerived:
    """A tensor computed from the lengths input (e.g. ``lengths > 0``)."""


@dataclass
class _Data:
    """A tensor on the data path.

    axes : list of tuple of (label, size)
        Each axis is a group of atoms (one atom unless a Reshape merged several); labels are
        ``B``, ``T`` (or input placeholders ``x0``.. until a recurrent node binds them),
        ``F`` (features), ``D``, ``H`` (raw recurrent outputs), ``1`` (a singleton).
    src : int or None
        Index of the recurrent spec whose raw output this is (None: plain edgernn output).
    kind : "plain", "Y", "Y_h" or "Y_c"
    """

    axes: list
    version: int
    src: int | None = None
    kind: str = "plain"
    dsel: int | None = None
    merge: str | None = None
    flipped: bool = False
    fresh_dense: int | None = None  # index of a Dense spec whose bias may still be added


@dataclass
class _DCat:
    """Final states of several layers/directions stacked on one axis (PyTorch's ``h_n``)."""

    items: list  # list of (data, direction index or None)
    axis: int


@dataclass
class _Spec:
    kind: str  # "rnn", "dense", "act"
    args: dict = field(default_factory=dict)
    arrays: tuple = ()
    node: object = None


_ACT_OPS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softsign": "softsign",
            "Softplus": "softplus"}
_RNN_ACTS = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu", "softsign": "softsign",
             "softplus": "softplus"}
_MOVE_OPS = {"Identity", "Dropout", "Cast"}
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _label(axis):
    return axis[0][0] if len(axis) == 1 else tuple(a[0] for a in axis)


def _size(axis):
    s = 1
    for _, n in axis:
        if n is None:
            return None
        s *= n
    return s


class _Importer:
    def __init__(self, proto, output, input_name):
        self.proto = proto
        self.g = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.values = {}
        self.specs: list[_Spec] = []
        self.bind = {}
        self.lengths_name = None
        self.masked = False
        self.input_rank = None
        inits = {t.name for t in self.g.initializer}
        for t in self.g.initializer:
            self.values[t.name] = _Const(numpy_helper.to_array(t))
        graph_inputs = [i for i in self.g.input if i.name not in inits]
        floats = [i for i in graph_inputs if i.type.tensor_type.elem_type in
                  (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)]
        ints = [i for i in graph_inputs if i.type.tensor_type.elem_type in
                (onnx.TensorProto.INT32, onnx.TensorProto.INT64)]
        meta = {e.key: e.value for e in proto.metadata_props}
        if meta.get("graph") == "streaming" and "edgernn_version" in meta:
            raise UnsupportedGraphError("this is an edgernn streaming (one-step) graph; import the full-sequence "
                                        "graph instead (edgernn.onnx.export(model, path)), or load the .npz")
        if input_name is None:
            if len(floats) > 1:
                raise UnsupportedGraphError(
                    f"expected one float input, the graph has {[i.name for i in floats]} (pass input=...; "
                    "extra inputs such as initial states have no edgernn form)")
            if not floats and len(ints) != 1:
                raise UnsupportedGraphError(f"no float input and {len(ints)} integer inputs: pass input=...")
            inp = floats[0] if floats else ints[0]
        else:
            match = [i for i in graph_inputs if i.name == input_name]
            if not match:
                raise UnsupportedGraphError(f"input={input_name!r} is not a graph input "
                                            f"({[i.name for i in graph_inputs]})")
            inp = match[0]
        self.input = inp
        self.ids = inp in ints  # token ids: the graph must start with a Gather on an embedding table
        dims = inp.type.tensor_type.shape.dim
        self.input_rank = len(dims)
        sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if self.ids:
            if self.input_rank != 2:
                raise UnsupportedGraphError(f"integer input {inp.name!r} must be token ids (batch, time)")
            self.input_features = None
            self.values[inp.name] = _Data([(("x0", sizes[0]),), (("x1", sizes[1]),)], 0, kind="ids")
        else:
            if self.input_rank not in (2, 3):
                raise UnsupportedGraphError(f"input {inp.name!r} has rank {self.input_rank}; expected "
                                            "(batch, time, features) or (batch, features)")
            self.input_features = sizes[-1]
            if self.input_features is None:
                raise UnsupportedGraphError(f"input {inp.name!r}: the feature (last) dimension must be fixed")
            self.values[inp.name] = _Data([((f"x{k}", sizes[k]),) for k in range(self.input_rank - 1)]
                                          + [(("F", sizes[-1]),)], 0)
        for i in graph_inputs:
            if i is not inp and i.type.tensor_type.elem_type in (onnx.TensorProto.INT32, onnx.TensorProto.INT64):
                self.values[i.name] = _Lengths(i.name)
            elif i is not inp:
                self.values[i.name] = _Other(i.name)
        outs = [o.name for o in self.g.output]
        if output is None:
            output = outs[0]
        elif output not in outs and output not in {o for n in self.g.node for o in n.output}:
            raise UnsupportedGraphError(f"output={output!r} is not a tensor of the graph (outputs: {outs})")
        self.output = output

    # ---- helpers -----------------------------------------------------------------------
    def lab(self, label):
        while label in self.bind:
            label = self.bind[label]
        return label

    def axes_labels(self, d):
        return [tuple(self.lab(a[0]) for a in ax) if len(ax) > 1 else self.lab(ax[0][0]) for ax in d.axes]

    def get(self, name, node):
        if name == "":
            return None
        if name not in self.values:
            raise UnsupportedGraphError(f"input {name!r} is not computed by the graph", node)
        return self.values[name]

    def const(self, name, node, what):
        v = self.get(name, node)
        if isinstance(v, _Sym):
            v = _Sym([_size(e) if isinstance(e, tuple) and _size(e) is not None else e for e in v.dims], v.scalar)
        if isinstance(v, _Sym) and all(isinstance(e, (int, np.integer)) for e in v.dims):
            v = _Const(np.array(v.dims[0] if v.scalar else v.dims, np.int64))
        if not isinstance(v, _Const):
            raise UnsupportedGraphError(f"{what} ({name!r}) must be a constant (an initializer)", node)
        return v.value

    def fold(self, node, ins):
        from onnx.reference import ReferenceEvaluator

        try:
            ref = ReferenceEvaluator(node, opsets={"": self.opset})
            feeds = {n: v.value for n, v in zip(node.input, ins, strict=True) if n}
            out = ref.run(None, feeds)
        except Exception as e:  # noqa: BLE001 - reported with the node
            raise UnsupportedGraphError(f"could not evaluate on constants: {e}", node) from e
        return [_Const(np.asarray(o)) for o in out]

    # ---- main loop -------------------------------------------------------------------------
    def run(self):
        needed = self.ancestors()
        for node in self.g.node:
            if not any(o in needed for o in node.output):
                continue
            ins = [self.get(n, node) if n else None for n in node.input]
            outs = self.step(node, ins)
            for name, v in zip(node.output, outs, strict=False):
                if name:
                    self.values[name] = v
        final = self.values.get(self.output)
        if isinstance(final, _DCat):
            final = self.dcat_pick(final, list(range(len(final.items))), None)
        if not isinstance(final, _Data):
            raise UnsupportedGraphError(f"output {self.output!r} does not depend on the input "
                                        f"{self.input.name!r}")
        if not self.specs:
            raise UnsupportedGraphError("the graph has no layer edgernn can import on its data path")
        final = self.materialize(final, None, final_output=True)
        return final

    def ancestors(self):
        producer = {o: n for n in self.g.node for o in n.output}
        needed, stack = set(), [self.output]
        while stack:
            t = stack.pop()
            if t in needed:
                continue
            needed.add(t)
            n = producer.get(t)
            if n is not None:
                stack.extend(i for i in n.input if i)
                for a in n.attribute:
                    if a.type == onnx.AttributeProto.GRAPH:
                        raise UnsupportedGraphError("control flow (subgraphs) is not supported", n)
        return needed

    def step(self, node, ins):
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedGraphError(f"operator domain {node.domain!r} is not supported", node)
        present = [v for v in ins if v is not None]
        if op == "Constant":
            a = _attrs(node)
            if "value" in a:
                return [_Const(numpy_helper.to_array(a["value"]))]
            for k in ("value_float", "value_int"):
                if k in a:
                    return [_Const(np.array(a[k]))]
            for k in ("value_floats", "value_ints"):
                if k in a:
                    return [_Const(np.array(a[k]))]
            raise UnsupportedGraphError("unsupported Constant attribute", node)
        if all(isinstance(v, _Const) for v in present) and op not in _GATES:
            return self.fold(node, ins)
        if any(isinstance(v, (_Data, _DCat)) for v in present):
            return self.data_op(node, ins)
        masks = [v for v in present if isinstance(v, _MaskVal)]
        if masks:
            if any(isinstance(v, (_Lengths, _LenDerived, _Other)) for v in present):
                raise UnsupportedGraphError("combines a Masking-derived tensor with another graph input", node)
            return [_MaskVal(masks[0].value, masks[0].version)]
        if any(isinstance(v, _Lengths) for v in present):
            if op in ("Cast", "Identity"):
                return [present[0]]
            return [_LenDerived()]  # e.g. lengths > 0: only usable as a Where condition
        if any(isinstance(v, _LenDerived) for v in present):
            return [_LenDerived()]
        if any(isinstance(v, _Other) for v in present):
            raise UnsupportedGraphError("computes with the extra graph input "
                                        f"{next(v.name for v in present if isinstance(v, _Other))!r}, which "
                                        "edgernn's model cannot take", node)
        float_const = isinstance(ins[0], _Const) and np.asarray(ins[0].value).dtype.kind == "f"
        if any(isinstance(v, _Zeros) for v in present) or op == "ConstantOfShape" or float_const:
            return [self.zeros_op(node, ins)]
        return [self.sym_op(node, ins)]

    # ---- shape arithmetic ------------------------------------------------------------------
    def sym_op(self, node, ins):
        op = node.op_type
        a = _attrs(node)
        x = ins[0]
        if isinstance(x, _Const):
            if np.asarray(x.value).dtype.kind not in "iub" or np.ndim(x.value) > 1:
                raise UnsupportedGraphError("unsupported computation with a shape value", node)
            x = _Sym([int(v) for v in np.atleast_1d(x.value)], scalar=np.ndim(x.value) == 0)
        if not isinstance(x, _Sym):
            raise UnsupportedGraphError("unexpected input", node)
        if op in ("Cast", "Identity"):
            return x
        if op == "Gather" and a.get("axis", 0) == 0:
            idx = self.const(node.input[1], node, "the index")
            picked = [x.dims[int(i)] for i in np.atleast_1d(idx)]
            return _Sym(picked, scalar=np.ndim(idx) == 0)
        if op == "Unsqueeze" and x.scalar:
            return _Sym(x.dims)
        if op == "Squeeze" and len(x.dims) == 1:
            return _Sym(x.dims, scalar=True)
        if op == "Concat":
            dims = []
            for v in ins:
                if isinstance(v, _Const):
                    dims.extend(int(e) for e in np.atleast_1d(v.value))
                elif isinstance(v, _Sym):
                    dims.extend(v.dims)
                else:
                    raise UnsupportedGraphError("cannot concatenate this shape value", node)
            return _Sym(dims)
        if op == "Slice":
            starts = self.const(node.input[1], node, "starts")
            ends = self.const(node.input[2], node, "ends")
            steps = self.const(node.input[4], node, "steps") if len(node.input) > 4 and node.input[4] else [1]
            return _Sym(x.dims[slice(int(starts[0]), int(min(ends[0], _INT_MAX)), int(steps[0]))])
        return _Sym(["?"] * len(x.dims), scalar=x.scalar)  # arithmetic on shapes: opaque values

    def zeros_op(self, node, ins):
        op = node.op_type
        if op == "ConstantOfShape":
            a = _attrs(node)
            v = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1)
            if np.any(v != 0):
                raise UnsupportedGraphError("only zero-filled ConstantOfShape is supported off the data path", node)
            return _Zeros()
        if op in ("Slice", "Gather", "Squeeze", "Unsqueeze", "Reshape", "Transpose", "Identity", "Cast",
                  "Expand", "Tile", "Concat"):
            first = ins[0]
            if op == "Concat":
                ok = all(isinstance(v, _Zeros) or (isinstance(v, _Const) and not np.any(v.value)) for v in ins)
            else:
                ok = isinstance(first, _Zeros) or (isinstance(first, _Const) and not np.any(first.value))
            if ok:
                return _Zeros()
        raise UnsupportedGraphError("unsupported operation on an initial-state tensor", node)

    # ---- the data path -----------------------------------------------------------------------
    def data_op(self, node, ins):
        op = node.op_type
        a = _attrs(node)
        if op in _GATES:
            return self.recurrent(node, ins, a)
        d = ins[0]
        if op == "Where":
            d = ins[1]
        if len(ins) > 1 and isinstance(ins[1], _Data) and ins[1].kind == "ids":
            return [self.embedding(node, ins, a)]
        if isinstance(d, _Data) and d.kind == "ids" and op not in ("Cast", "Identity"):
            raise UnsupportedGraphError("token ids may only index an embedding table (Gather)", node)
        if isinstance(d, _DCat):
            return [self.dcat_op(node, ins, a)]
        if not isinstance(d, _Data) and op not in ("Concat", "Add", "Mul", "MatMul"):
            raise UnsupportedGraphError("the data tensor must be the first input", node)
        if op == "Where" and len(ins) == 3 and isinstance(ins[1], _Data) and isinstance(ins[0],
                                                                                     (_LenDerived, _MaskVal)):
            other = ins[2]
            if isinstance(other, _Zeros) or (isinstance(other, _Const) and not np.any(other.value)):
                return [ins[1]]  # edgernn already returns the zero initial state for empty sequences
            raise UnsupportedGraphError("Where on the data path with a nonzero alternative", node)
        if op == "Equal" and isinstance(ins[1], _Const) and np.size(ins[1].value) == 1:
            if d.version != 0 or self.specs:
                raise UnsupportedGraphError("compares the data with a mask value after other layers (only a "
                                            "Masking of the model input is supported)", node)
            return [_MaskVal(float(np.ravel(ins[1].value)[0]), d.version)]
        if op == "Shape":
            lo, hi = a.get("start", 0), a.get("end", None)
            return [_Sym(list(d.axes)[slice(lo, hi)])]
        if op in _MOVE_OPS:
            if op == "Cast" and a.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
                raise UnsupportedGraphError("cast of the data to a non-float type", node)
            return [_replace(d, fresh_dense=d.fresh_dense)] + ([None] if op == "Dropout" else [])
        if op == "Transpose":
            perm = a.get("perm", list(range(len(d.axes)))[::-1])
            return [_replace(d, axes=[d.axes[p] for p in perm])]
        if op in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes")
            if axes is None and len(node.input) > 1 and node.input[1]:
                axes = [int(v) for v in np.atleast_1d(self.const(node.input[1], node, "axes"))]
            return [self.squeeze(node, d, axes) if op == "Squeeze" else self.unsqueeze(d, axes)]
        if op == "Reshape":
            return [self.reshape(node, d, ins[1], a.get("allowzero", 0))]
        if op == "Gather":
            return [self.select(node, d, a.get("axis", 0), self.const(node.input[1], node, "the index"), True)]
        if op == "Slice":
            return [self.slice(node, d)]
        if op == "ReverseSequence":
            ax = a.get("time_axis", 0)
            if self.lab(d.axes[ax][0][0]) != "T" or not isinstance(ins[1], _Lengths):
                raise UnsupportedGraphError("only a reversal of the time axis by the lengths input is supported",
                                            node)
            return [_replace(d, flipped=not d.flipped)]
        if op == "Concat":
            return [self.concat(node, ins, a.get("axis"))]
        if op in ("Add", "Mul", "Sub"):
            return [self.arith(node, ins)]
        if op == "MatMul":
            return [self.matmul(node, ins)]
        if op == "Gemm":
            return [self.gemm(node, ins, a)]
        if op in _ACT_OPS or op in ("Elu", "HardSigmoid", "Softmax"):
            return [self.activation(node, d, a)]
        if op in ("Split", "SplitToSequence", "Scan", "Loop") or (
                op in ("Gather", "Slice") and not self.specs):
            self.unrolled(node)
        self.maybe_unrolled(node)
        raise UnsupportedGraphError("operator not supported on the data path (edgernn imports RNN/GRU/LSTM "
                                    "nodes, Dense-like MatMul/Gemm/Add, activations and the glue that "
                                    "moves axes)", node)

    def maybe_unrolled(self, node):
        if not any(n.op_type in _GATES for n in self.g.node) and any(
                n.op_type in ("Split", "Gather", "Slice", "Unbind") for n in self.g.node) and any(
                n.op_type in ("Tanh", "Sigmoid", "Relu") for n in self.g.node):
            self.unrolled(node)

    def unrolled(self, node):
        T = self.input_sizes()[1] if self.input_rank == 3 else None
        raise UnsupportedGraphError(
            "the graph has no RNN/GRU/LSTM node and splits the input into single time steps: a recurrent "
            f"layer unrolled over a fixed number of steps (T={T}) in a form edgernn does not recognise (it "
            "re-rolls the per-step MatMul/Add/Tanh|Relu chains torch.onnx.export(..., dynamo=True) writes for "
            "nn.RNN). Export with torch.onnx.export(..., dynamo=False), or convert the PyTorch module with "
            "edgernn.convert.from_torch", node)

    def input_sizes(self):
        return [d.dim_value if d.HasField("dim_value") else None for d in self.input.type.tensor_type.shape.dim]

    def squeeze(self, node, d, axes):
        n = len(d.axes)
        if axes is None:
            axes = [k for k, ax in enumerate(d.axes) if _size(ax) == 1]
        axes = sorted(int(k) % n for k in axes)
        for k in axes:
            if _size(d.axes[k]) != 1:
                raise UnsupportedGraphError(f"squeezes axis {k} ({self.axes_labels(d)[k]}) which is not of size 1",
                                            node)
        return _replace(d, axes=[ax for k, ax in enumerate(d.axes) if k not in axes])

    def unsqueeze(self, d, axes):
        out = list(d.axes)
        rank = len(out) + len(axes)
        for k in sorted(int(k) % rank for k in axes):
            out.insert(k, (("1", 1),))
        return _replace(d, axes=out)

    def reshape(self, node, d, shape_val, allowzero):
        if isinstance(shape_val, _Const):
            target = [int(v) for v in np.atleast_1d(shape_val.value)]
        elif isinstance(shape_val, _Sym):
            target = list(shape_val.dims)
        else:
            raise UnsupportedGraphError("the target shape must be a constant or computed from shapes", node)
        entries = []
        for k, t in enumerate(target):
            if isinstance(t, (int, np.integer)) and t == 0 and not allowzero:
                entries.append(("axis", d.axes[k]))
            elif isinstance(t, (int, np.integer)):
                entries.append(("int", int(t)))
            elif isinstance(t, tuple):
                entries.append(("axis", t))
            else:
                raise UnsupportedGraphError("a target shape computed by arithmetic is not supported", node)
        atoms = [a for ax in d.axes for a in ax if a[1] != 1]
        singles = [a for ax in d.axes for a in ax if a[1] == 1]
        prio = {"B": 0, "T": 1, "F": 2, "H": 2}

        def rank(a):
            lab_ = self.lab(a[0])
            return 0 if lab_.startswith("x") else prio.get(lab_, 3)

        def size_of(entry):
            kind, v = entry
            if kind == "int":
                return v
            return _size(v) if _size(v) is not None else ("sym", tuple(a[0] for a in v))

        def take(pos, want):
            group, acc = [], 1
            if isinstance(want, tuple):  # symbolic: the atoms of that axis
                labels = list(want[1])
                for lab_ in labels:
                    if pos >= len(atoms) or self.lab(atoms[pos][0]) != self.lab(lab_):
                        return None
                    group.append(atoms[pos])
                    pos += 1
                return group, pos
            while pos < len(atoms) and acc < want:
                if atoms[pos][1] is None:
                    return None
                acc *= atoms[pos][1]
                group.append(atoms[pos])
                pos += 1
            return (group, pos) if acc == want else None

        out = [None] * len(entries)
        wants = [size_of(e) for e in entries]
        pos = 0
        minus = [k for k, w in enumerate(wants) if w == -1]
        if len(minus) > 1:
            raise UnsupportedGraphError("more than one -1 in the target shape", node)
        stop = minus[0] if minus else len(entries)
        for k in range(stop):
            if wants[k] == 1:
                continue
            r = take(pos, wants[k])
            if r is None:
                raise UnsupportedGraphError(f"reshape {self.axes_labels(d)} -> {target} does not regroup the "
                                            "axes in order", node)
            out[k], pos = tuple(r[0]), r[1]
        if minus:
            end = len(atoms)
            for k in range(len(entries) - 1, stop, -1):
                if wants[k] == 1:
                    continue
                # match from the right
                w = wants[k]
                group, acc, q = [], 1, end
                if isinstance(w, tuple):
                    n = len(w[1])
                    group = atoms[end - n:end]
                    if [self.lab(a[0]) for a in group] != [self.lab(lab_) for lab_ in w[1]]:
                        raise UnsupportedGraphError(f"reshape {self.axes_labels(d)} -> {target} is not supported",
                                                    node)
                    q = end - n
                else:
                    while q > pos and acc < w:
                        if atoms[q - 1][1] is None:
                            break
                        acc *= atoms[q - 1][1]
                        group.insert(0, atoms[q - 1])
                        q -= 1
                    if acc != w:
                        raise UnsupportedGraphError(f"reshape {self.axes_labels(d)} -> {target} is not supported",
                                                    node)
                out[k], end = tuple(group), q
            out[stop] = tuple(atoms[pos:end]) or None
            pos = len(atoms)  # the entries after -1 were matched from the end
        if pos != len(atoms):
            raise UnsupportedGraphError(f"reshape {self.axes_labels(d)} -> {target} drops axes", node)
        # size-1 axes: keep the most meaningful ones (batch, time, ...) in their original order
        ones = sum(o is None for o in out)
        while len(singles) > ones:
            singles.pop(max(range(len(singles)), key=lambda i: (rank(singles[i]), i)))
        for k, o in enumerate(out):
            if o is None:
                out[k] = (singles.pop(0),) if singles else (("1", 1),)
        return _replace(d, axes=out)

    def select(self, node, d, axis, idx, drop):
        """Gather (drop=True) or a one-element Slice (drop=False) of index ``idx`` along ``axis``."""
        if np.ndim(idx) != 0 and np.size(idx) != 1:
            raise UnsupportedGraphError("gathers several indices on the data path", node)
        idx = int(np.ravel(idx)[0])
        axis = int(axis) % len(d.axes)
        ax = d.axes[axis]
        lab = _label(ax)
        lab = self.lab(lab) if isinstance(lab, str) else lab
        n = _size(ax)
        keep = [a for k, a in enumerate(d.axes) if k != axis]
        if not drop:
            keep.insert(axis, (("1", 1),))
        if lab == "T" or (isinstance(lab, str) and lab.startswith("x")):
            if lab != "T":
                self.unrolled(node)
            last = idx == -1 or (n is not None and idx == n - 1)
            spec = self.specs[d.src] if d.src is not None else None
            if (last and d.kind == "Y" and spec is not None and spec.args["D"] == 1
                    and spec.args["direction"] == "forward"):
                if self.lengths_name is not None or self.masked:
                    raise UnsupportedGraphError("selects the last time step of padded sequences (with "
                                                "sequence_lens the final state is not the last step); use Y_h",
                                                node)
                return _replace(d, axes=keep, kind="Y_h")
            if n == 1 and idx in (0, -1):
                return _replace(d, axes=keep)
            hint = ""
            if spec is not None and spec.args["D"] == 2:
                hint = (" (the last step of a bidirectional output pairs the forward final state with the "
                        "backward state after one step; select the final states instead, e.g. "
                        "torch.cat([h_n[-2], h_n[-1]], -1))")
            raise UnsupportedGraphError(
                "selects one time step; only the last step of a forward, unidirectional recurrent "
                "output (= its final state) has an edgernn form" + hint, node)
        if lab == "D":
            spec = self.specs[d.src]
            D = spec.args["D"]
            if D == 1:
                return _replace(d, axes=keep)
            if d.dsel is not None:
                raise UnsupportedGraphError("selects from an already selected direction", node)
            return _replace(d, axes=keep, dsel=idx % D)
        if n == 1 and idx in (0, -1):
            return _replace(d, axes=keep)
        raise UnsupportedGraphError(f"selects along axis {axis} ({lab}); only time steps and directions can be "
                                    "selected", node)

    def slice(self, node, d):
        starts = np.atleast_1d(self.const(node.input[1], node, "starts"))
        ends = np.atleast_1d(self.const(node.input[2], node, "ends"))
        axes = (np.atleast_1d(self.const(node.input[3], node, "axes")) if len(node.input) > 3 and node.input[3]
                else np.arange(len(starts)))
        steps = (np.atleast_1d(self.const(node.input[4], node, "steps")) if len(node.input) > 4 and node.input[4]
                 else np.ones(len(starts), np.int64))
        for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
            ax = int(ax) % len(d.axes)
            n = _size(d.axes[ax])
            s, e, st = int(s), int(e), int(st)
            big = n if n is not None else _INT_MAX
            if st == 1 and s == 0 and e >= big:
                continue
            if st == -1 and s == -1 and e <= -big - 1 or (st == -1 and s in (-1,) and e < -_INT_MAX // 2):
                lab = self.lab(d.axes[ax][0][0])
                if lab != "T":
                    raise UnsupportedGraphError(f"reverses axis {ax} ({lab}); only time can be reversed", node)
                d = _replace(d, flipped=not d.flipped)
                continue
            if st == 1 and (e - s == 1 or (s == -1 and e >= big)):
                d = self.select(node, d, ax, s, False)
                continue
            if st == 1 and self.lab(d.axes[ax][0][0]) in ("T",) or self.lab(d.axes[ax][0][0]).startswith("x"):
                self.unrolled(node)
            raise UnsupportedGraphError(f"slice [{s}:{e}:{st}] of axis {ax} has no edgernn form", node)
        return d

    def concat(self, node, ins, axis):
        parts = [v for v in ins if v is not None]
        if not all(isinstance(v, (_Data, _DCat)) for v in parts):
            raise UnsupportedGraphError("concatenates the data with other tensors", node)
        first = parts[0] if isinstance(parts[0], _Data) else None
        if first is None:
            raise UnsupportedGraphError("concatenates stacked states", node)
        axis = int(axis) % len(first.axes)
        lab = _label(first.axes[axis])
        lab = self.lab(lab) if isinstance(lab, str) else lab
        if lab == "D" and all(isinstance(v, _Data) and v.kind == "Y_h" for v in parts):
            items = []
            for v in parts:
                D = self.specs[v.src].args["D"]
                items.extend((v, k if D == 2 else None) for k in range(D))
            return _DCat(items, axis)
        if len(parts) == 2 and all(v.src == first.src and v.kind == first.kind and v.src is not None
                                   for v in parts) and [v.dsel for v in parts] == [0, 1]:
            if lab not in ("H",):
                raise UnsupportedGraphError("concatenates the two directions on an axis other than the features",
                                            node)
            H = _size(first.axes[axis])
            axes = list(first.axes)
            axes[axis] = (("D", 2), ("H", H))
            return _replace(first, axes=axes, dsel=None)
        if len(parts) == 1:
            return first
        raise UnsupportedGraphError("concatenation on the data path has no edgernn form (only the two "
                                    "directions of one bidirectional layer, forward first)", node)

    def dcat_op(self, node, ins, a):
        dc = ins[0]
        op = node.op_type
        n = len(dc.items)
        if op == "Gather" and int(a.get("axis", 0)) == dc.axis:
            idx = int(np.ravel(self.const(node.input[1], node, "the index"))[0]) % n
            return self.dcat_pick(dc, [idx], node, drop=True)
        if op == "Slice":
            starts = np.atleast_1d(self.const(node.input[1], node, "starts"))
            ends = np.atleast_1d(self.const(node.input[2], node, "ends"))
            axes = (np.atleast_1d(self.const(node.input[3], node, "axes")) if len(node.input) > 3 and node.input[3]
                    else [0])
            steps = (np.atleast_1d(self.const(node.input[4], node, "steps")) if len(node.input) > 4
                     and node.input[4] else [1])
            if len(axes) == 1 and int(axes[0]) == dc.axis and int(steps[0]) == 1:
                return self.dcat_pick(dc, list(range(n))[slice(int(starts[0]), int(min(ends[0], _INT_MAX)))], node)
        if op in _MOVE_OPS:
            return dc
        raise UnsupportedGraphError("unsupported operation on stacked final states", node)

    def dcat_pick(self, dc, idxs, node, drop=False):
        items = [dc.items[i] for i in idxs]
        datas = {id(v) for v, _ in items}
        if len(datas) != 1:
            raise UnsupportedGraphError("uses the final states of several layers together (PyTorch's h_n of a "
                                        "stacked network): only the last layer's state has an edgernn form",
                                        node)
        v = items[0][0]
        dirs = [k for _, k in items]
        if dirs == [None] or dirs == [0, 1]:
            if drop and dirs == [None]:
                return self.squeeze(node, v, [dc.axis]) if node is not None else v
            return v
        if len(dirs) == 1:
            keep = [ax for k, ax in enumerate(v.axes) if k != dc.axis]
            if not drop:
                keep.insert(dc.axis, (("1", 1),))
            return _replace(v, axes=keep, dsel=dirs[0])
        raise UnsupportedGraphError("uses the directions of a bidirectional layer in an unsupported order", node)

    def arith(self, node, ins):
        op = node.op_type
        a, b = ins[0], ins[1]
        if op == "Mul" and (isinstance(a, _MaskVal) or isinstance(b, _MaskVal)):
            d, m = (a, b) if isinstance(a, _Data) else (b, a)
            if not isinstance(d, _Data) or d.version != m.version or self.masked:
                raise UnsupportedGraphError("multiplies by a mask that is not the data's own Masking", node)
            axes = self.materialize(d, node)
            self.specs.append(_Spec("masking", {"mask_value": m.value}))
            self.masked = True
            return _Data(axes, len(self.specs))
        if isinstance(a, _Data) and isinstance(b, _Data):
            if (a.src == b.src and a.src is not None and a.kind == b.kind and {a.dsel, b.dsel} == {0, 1}
                    and op in ("Add", "Mul")):
                return _replace(a, dsel=None, merge="sum" if op == "Add" else "mul",
                                axes=[ax for ax in a.axes])
            raise UnsupportedGraphError(f"{op} of two data tensors has no edgernn form (only merging the two "
                                        "directions of a bidirectional layer)", node)
        d, c = (a, b) if isinstance(a, _Data) else (b, a)
        if not isinstance(c, _Const):
            raise UnsupportedGraphError(f"{op} with a non-constant operand", node)
        cv = np.asarray(c.value, np.float64)
        if op == "Mul" and d.merge == "sum" and cv.size == 1 and float(cv.ravel()[0]) == 0.5:
            return _replace(d, merge="ave")
        if op == "Add" and d.fresh_dense is not None:
            spec = self.specs[d.fresh_dense]
            U = spec.args["units"]
            if cv.size in (1, U) and (cv.ndim <= 1 or all(s == 1 for s in cv.shape[:-1])):
                spec.arrays = (spec.arrays[0], np.broadcast_to(cv.reshape(-1), (U,)) + (
                    0 if spec.arrays[1] is None else spec.arrays[1]))
                spec.args["use_bias"] = True
                return _replace(d, fresh_dense=d.fresh_dense)
        raise UnsupportedGraphError(f"{op} with a constant is only supported as the bias of a MatMul", node)

    def embedding(self, node, ins, a):
        table, ids = ins[0], ins[1]
        if node.op_type != "Gather" or int(a.get("axis", 0)) != 0 or not isinstance(table, _Const) \
                or table.value.ndim != 2 or self.specs:
            raise UnsupportedGraphError("token ids are only supported as the indices of a first Gather on a "
                                        "constant (vocabulary, dim) table (an embedding)", node)
        E = np.asarray(table.value, np.float64)
        self.specs.append(_Spec("embedding", {"input_dim": E.shape[0], "output_dim": E.shape[1]}, (E,)))
        return _Data(list(ids.axes) + [(("F", E.shape[1]),)], len(self.specs))

    def add_dense(self, node, d, K, bias):
        axes = self.materialize(d, node)
        last = _label(axes[-1])
        if last not in ("F",):
            raise UnsupportedGraphError(f"multiplies along axis {last!r}, not the features", node)
        if K.ndim != 2 or K.shape[0] != _size(axes[-1]):
            raise UnsupportedGraphError(f"weight of shape {K.shape} does not match {_size(axes[-1])} features", node)
        U = K.shape[1]
        self.specs.append(_Spec("dense", {"units": U, "use_bias": bias is not None, "activation": "linear"},
                                (np.asarray(K, np.float64), None if bias is None else
                                 np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (U,)).copy())))
        out = list(axes[:-1]) + [(("F", U),)]
        return _Data(out, len(self.specs), fresh_dense=len(self.specs) - 1)

    def matmul(self, node, ins):
        d, k = ins
        if not isinstance(d, _Data) or not isinstance(k, _Const):
            raise UnsupportedGraphError("only data @ constant weight is supported", node)
        return self.add_dense(node, d, np.asarray(k.value), None)

    def gemm(self, node, ins, a):
        d = ins[0]
        if a.get("transA", 0):
            raise UnsupportedGraphError("transA=1 on the data", node)
        K = np.asarray(self.const(node.input[1], node, "B"), np.float64)
        if a.get("transB", 0):
            K = K.T
        K = K * float(a.get("alpha", 1.0))
        C = None
        if len(node.input) > 2 and node.input[2]:
            C = np.asarray(self.const(node.input[2], node, "C"), np.float64) * float(a.get("beta", 1.0))
            if C.size not in (1, K.shape[1]):
                raise UnsupportedGraphError(f"bias C of shape {C.shape} is not per output", node)
        return self.add_dense(node, d, K, C)

    def activation(self, node, d, a):
        op = node.op_type
        if op == "Softmax":
            axis = int(a.get("axis", -1 if self.opset >= 13 else 1))
            if axis % len(d.axes) != len(d.axes) - 1:
                raise UnsupportedGraphError(f"axis={axis} is not the last axis", node)
            name = "softmax"
        elif op == "Elu":
            if float(a.get("alpha", 1.0)) != 1.0:
                raise UnsupportedGraphError(f"alpha={a['alpha']} (edgernn's elu has alpha 1)", node)
            name = "elu"
        elif op == "HardSigmoid":
            if not np.isclose(a.get("alpha", 0.2), 0.2) or not np.isclose(a.get("beta", 0.5), 0.5):
                raise UnsupportedGraphError(f"alpha={a.get('alpha', 0.2)}, beta={a.get('beta', 0.5)} (edgernn's "
                                            "hard_sigmoid is clip(0.2x + 0.5, 0, 1))", node)
            name = "hard_sigmoid"
        else:
            name = _ACT_OPS[op]
        fresh = d.fresh_dense
        axes = self.materialize(d, node)
        if fresh is not None and self.specs[fresh].args["activation"] == "linear" and fresh == len(self.specs) - 1:
            self.specs[fresh].args["activation"] = name
        else:
            self.specs.append(_Spec("act", {"activation": name}))
        return _Data(axes, len(self.specs))

    # ---- recurrent nodes -------------------------------------------------------------------
    def recurrent(self, node, ins, a):
        op = node.op_type
        d = ins[0]
        if not isinstance(d, _Data):
            raise UnsupportedGraphError("X must be the data path", node)
        for k, v in enumerate(ins[1:], start=1):
            if isinstance(v, (_Data, _DCat)):
                raise UnsupportedGraphError(f"input {k} ({node.input[k]!r}) depends on the data", node)
        G = _GATES[op]
        W = np.asarray(self.const(node.input[1], node, "W"), np.float64)
        R = np.asarray(self.const(node.input[2], node, "R"), np.float64)
        D, GH, I = W.shape
        H = GH // G
        if "hidden_size" in a and int(a["hidden_size"]) != H:
            raise UnsupportedGraphError(f"hidden_size={a['hidden_size']} does not match W {W.shape}", node)
        direction = a.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else str(direction)
        layout = int(a.get("layout", 0))
        Bias = None
        if len(node.input) > 3 and node.input[3]:
            Bias = np.asarray(self.const(node.input[3], node, "B"), np.float64)
        seq = ins[4] if len(ins) > 4 else None
        if isinstance(seq, _MaskVal):
            if not self.masked:
                raise UnsupportedGraphError("sequence_lens computed from the data without a Masking of it", node)
            seq = None  # the Masking layer computes the same lengths
        if seq is not None:
            if not isinstance(seq, _Lengths):
                raise UnsupportedGraphError("sequence_lens must be a graph input (edgernn takes it as "
                                            "predict(x, lengths=...)); a constant one has no edgernn form", node)
            if self.lengths_name not in (None, seq.name):
                raise UnsupportedGraphError("two different sequence_lens inputs", node)
            self.lengths_name = seq.name
        for k, what in ((5, "initial_h"), (6, "initial_c")):
            v = ins[k] if len(ins) > k else None
            if v is None or isinstance(v, _Zeros) or (isinstance(v, _Const) and not np.any(v.value)):
                continue
            raise UnsupportedGraphError(f"{what} ({node.input[k]!r}) is not zero: edgernn's models start from "
                                        "zero states (a nonzero or input-given initial state has no edgernn "
                                        "form)", node)
        P = None
        if len(node.input) > 7 and node.input[7]:
            P = np.asarray(self.const(node.input[7], node, "P"), np.float64)
        # activations
        n_act = {"RNN": 1, "GRU": 2, "LSTM": 3}[op]
        acts = a.get("activations")
        acts = [s.decode() if isinstance(s, bytes) else s for s in acts] if acts else None
        alphas = list(a.get("activation_alpha", []))
        betas = list(a.get("activation_beta", []))
        default = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}[op]
        acts = acts or default * D
        if len(acts) == n_act:
            acts = acts * D
        keras = []
        for name in acts:
            key = name.lower()
            if key not in _ACT_TABLE:
                raise UnsupportedGraphError(f"activation {name!r} is unknown", node)
            _, al, be = _ACT_TABLE[key]
            if key in USES_ALPHA and alphas:
                al = alphas.pop(0)
            if key in USES_BETA and betas:
                be = betas.pop(0)
            if key in _RNN_ACTS:
                keras.append(_RNN_ACTS[key])
            elif key == "hardsigmoid" and np.isclose(al, 0.2) and np.isclose(be, 0.5):
                keras.append("hard_sigmoid")
            elif key == "affine" and al == 1.0 and be == 0.0:
                keras.append("linear")
            elif key == "elu" and al == 1.0:
                keras.append("elu")
            else:
                raise UnsupportedGraphError(f"activation {name} (alpha={al}, beta={be}) has no edgernn form", node)
        per = [keras[k * n_act:(k + 1) * n_act] for k in range(D)]
        if D == 2 and per[0] != per[1]:
            raise UnsupportedGraphError(f"the two directions use different activations {per}", node)
        kacts = per[0]
        if op == "LSTM" and kacts[1] != kacts[2]:
            raise UnsupportedGraphError(f"LSTM activations g={acts[1]} and h={acts[2]} differ (edgernn uses one "
                                        "activation for both)", node)
        # the input: bind its time and batch axes
        axes = self.materialize(d, node)
        labels = self.axes_labels(_Data(axes, 0))
        if len(axes) != 3:
            raise UnsupportedGraphError(f"X has axes {labels}; expected 3", node)
        want = ("T", "B") if layout == 0 else ("B", "T")
        for k, w in enumerate(want):
            lab = labels[k]
            if isinstance(lab, str) and lab.startswith("x"):
                self.bind[lab] = w
            elif lab != w and not (lab == "1" and _size(axes[k]) == 1 and w == "B"):
                raise UnsupportedGraphError(f"X has axes {labels} but layout={layout} reads them as "
                                            f"{list(want) + ['features']}", node)
        if _label(axes[2]) != "F" or _size(axes[2]) != I:
            raise UnsupportedGraphError(f"X has {_size(axes[2])} features, W expects {I}", node)
        args = dict(op=op, units=H, D=D, direction=direction, activation=kacts[-1] if op != "RNN" else kacts[0],
                    recurrent_activation=kacts[0] if op != "RNN" else None, clip=a.get("clip"),
                    input_forget=bool(a.get("input_forget", 0)), peephole=P is not None,
                    linear_before_reset=bool(a.get("linear_before_reset", 0)), use_bias=Bias is not None,
                    return_sequences=None, merge_mode=None, name=node.name)
        Wb = Rb = None
        if Bias is not None:
            Wb, Rb = Bias[:, :GH], Bias[:, GH:]
        self.specs.append(_Spec("rnn", args, (W, R, Wb, Rb, P), node))
        idx = len(self.specs) - 1
        v = len(self.specs)
        Dax, Hax = (("D", D),), (("H", H),)
        Tax, Bax = axes[0], axes[1]
        if layout == 1:
            Tax, Bax = axes[1], axes[0]
        Y = _Data([Tax, Dax, Bax, Hax] if layout == 0 else [Bax, Tax, Dax, Hax], v, idx, "Y",
                  flipped=direction == "reverse")
        Yh = _Data([Dax, Bax, Hax] if layout == 0 else [Bax, Dax, Hax], v, idx, "Y_h")
        outs = [Y, Yh]
        if op == "LSTM":
            outs.append(_replace(Yh, kind="Y_c"))
        return outs

    def materialize(self, d, node, final_output=False):
        """Check ``d`` is the current output of the layer stack; fix the producing layer's options."""
        where = node
        if where is None and d.src is not None:
            where = self.specs[d.src].node
        if d.version != len(self.specs):
            raise UnsupportedGraphError("uses the output of an earlier layer after later layers (a branching "
                                        "graph has no Sequential form)", where)
        if d.kind == "plain":
            return list(d.axes)
        if d.kind == "Y_c":
            raise UnsupportedGraphError("uses the LSTM cell state Y_c, which edgernn's Sequential does not "
                                        "output", where)
        spec = self.specs[d.src]
        seqs = d.kind == "Y"
        if spec.args["return_sequences"] not in (None, seqs):
            raise UnsupportedGraphError("uses both Y and Y_h of one recurrent node", where)
        spec.args["return_sequences"] = seqs
        if d.dsel is not None:
            raise UnsupportedGraphError("uses one direction of a bidirectional layer alone (no edgernn form)",
                                        where)
        if d.flipped:
            raise UnsupportedGraphError(
                "uses the output sequence of a reverse-direction node in original time order; edgernn's go_backwards layer returns it reversed (as Keras) and has no "
                "layer to flip it back", where)
        D = spec.args["D"]
        out = []
        mode = d.merge
        labels = [[self.lab(a[0]) for a in ax] for ax in d.axes]
        for ax, labs in zip(d.axes, labels, strict=True):
            atoms = [a for a, lab_ in zip(ax, labs, strict=True) if not (lab_ == "D" and D == 1)]
            labs2 = [lab_ for lab_ in labs if not (lab_ == "D" and D == 1)]
            if not atoms:
                continue
            if labs2 == ["D"] and D == 2 and spec.args["units"] == 1 and not any("H" in la for la in labels):
                labs2 = ["D", "H"]  # units=1: a Reshape merged the directions and dropped the size-1 H
                atoms = [atoms[0], ("H", 1)]
            if labs2 == ["D", "H"]:
                if mode not in (None, "concat"):
                    raise UnsupportedGraphError("inconsistent merge of directions", where)
                mode = "concat"
                out.append((("F", 2 * atoms[1][1]),))
            elif labs2 == ["H"]:
                out.append((("F", atoms[0][1]),))
            elif "D" in labs2 or "H" in labs2:
                if labs2 == ["D"] and final_output:
                    out.append(tuple(atoms))
                    continue
                raise UnsupportedGraphError(f"the directions/features of {spec.args['name']!r} are arranged as "
                                            f"{labels}, which no merge mode gives", where)
            else:
                out.append(tuple(atoms))
        if D == 2:
            has_d = any(_label(ax) == "D" for ax in out)
            if has_d:
                if mode is not None or not final_output:
                    raise UnsupportedGraphError("directions left on a separate axis", where)
                mode = "concat"
            if mode is None:
                raise UnsupportedGraphError(f"the two directions of {spec.args['name']!r} are never merged",
                                            where)
            spec.args["merge_mode"] = mode
        elif mode is not None and mode != "concat":
            raise UnsupportedGraphError("merges directions of a one-direction layer", where)
        return out


# ---- re-rolling a recurrence unrolled over time -------------------------------------------
@dataclass
class _Chain:
    """One unrolled single-direction RNN: h_t = act(step_t + h_{t-1} @ Rt + rb), steps of P = X @ Wt + wb."""

    X: str
    W: np.ndarray  # (I, H), as multiplied
    wb: np.ndarray | None
    R: np.ndarray  # (H, H), as multiplied
    rb: np.ndarray | None
    act: str
    reverse: bool
    acts: list  # act nodes in computation order
    concat: object  # Concat node gathering the hidden states in time order


def _reroll(proto):
    """Replace RNNs that an exporter unrolled into per-step MatMul/Add/Tanh|Relu chains (what
    ``torch.onnx.export(dynamo=True)`` writes for ``nn.RNN``) by native ``RNN`` nodes.

    Returns ``(proto, n)``: a rewritten copy and the number of re-rolled layers (``proto``
    itself when nothing matched). Only exact structural matches are rewritten; anything else
    is left for the importer to refuse.
    """
    g = proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def ints(name):
        v = consts.get(name)
        return None if v is None else [int(e) for e in np.atleast_1d(v)]

    def step_of(name):
        """(P, t) when ``name`` = Squeeze(Slice(P, [t], [t+1], [0]), [0])."""
        sq = producer.get(name)
        if sq is None or sq.op_type != "Squeeze" or len(sq.input) < 2 or ints(sq.input[1]) != [0]:
            return None
        sl = producer.get(sq.input[0])
        if sl is None or sl.op_type != "Slice" or len(sl.input) < 4:
            return None
        st, en, ax = ints(sl.input[1]), ints(sl.input[2]), ints(sl.input[3])
        stp = ints(sl.input[4]) if len(sl.input) > 4 and sl.input[4] else [1]
        if None in (st, en, ax, stp) or ax != [0] or stp != [1] or en[0] != st[0] + 1 or st[0] < 0:
            return None
        return sl.input[0], st[0]

    def linear(name):
        """(X, K, bias) when ``name`` = MatMul(X, K) [+ bias]; K and bias constants."""
        n = producer.get(name)
        bias = None
        if n is not None and n.op_type == "Add":
            a, b = n.input
            if b in consts and producer.get(a) is not None and producer[a].op_type == "MatMul":
                n, bias = producer[a], consts[b]
            elif a in consts and producer.get(b) is not None and producer[b].op_type == "MatMul":
                n, bias = producer[b], consts[a]
            else:
                return None
        if n is None or n.op_type != "MatMul" or n.input[1] not in consts:
            return None
        return n.input[0], consts[n.input[1]], bias

    # parse every activation node of the form act(Add(step, other))
    parsed = {}
    for n in g.node:
        if n.op_type not in ("Tanh", "Relu"):
            continue
        add = producer.get(n.input[0])
        if add is None or add.op_type != "Add":
            continue
        for a, b in (add.input, add.input[::-1]):
            st = step_of(a)
            if st is None:
                continue
            if b in consts:
                parsed[n.output[0]] = (n, st, ("init", consts[b]))
            else:
                lin = linear(b)
                if lin is not None:
                    parsed[n.output[0]] = (n, st, ("rec", lin))
            break
    chains = []
    for name, (node, (P, t0), other) in parsed.items():
        if other[0] != "init" or t0 != 0:
            continue
        acts, steps, rec = [node], [(P, 0)], []
        cur = name
        while True:
            nxt = [parsed[c.output[0]] for c in _walk_to_acts(cur, consumers, parsed)]
            nxt = [v for v in nxt if v[2][0] == "rec" and v[2][1][0] == cur]
            if len(nxt) != 1:
                break
            nnode, st, (_, lin) = nxt[0]
            acts.append(nnode)
            steps.append(st)
            rec.append(lin)
            cur = nnode.output[0]
        T = len(acts)
        if T < 2 or steps != [(P, t) for t in range(T)] or len({n.op_type for n in acts}) != 1:
            continue
        R = rec[0][1]
        rb = rec[0][2]
        if any(not np.array_equal(r[1], R) or (r[2] is None) != (rb is None)
               or (rb is not None and not np.array_equal(r[2], rb)) for r in rec):
            continue
        init = np.asarray(other[1], np.float64)
        expect = np.zeros(R.shape[1]) if rb is None else np.asarray(rb, np.float64).reshape(-1)
        if not np.allclose(init, np.broadcast_to(expect, init.shape), rtol=1e-6, atol=1e-7):
            continue  # a nonzero initial state: leave it for the importer to refuse
        reverse = False
        src = P
        pn = producer.get(P)
        if pn is not None and pn.op_type == "Slice" and ints(pn.input[1]) == [-1] and \
                len(pn.input) > 4 and ints(pn.input[4]) == [-1] and ints(pn.input[3]) == [0] and \
                (ints(pn.input[2]) or [0])[0] <= -T - 1:
            reverse, src = True, pn.input[0]
        lin = linear(src)
        if lin is None:
            continue
        X, Wk, wb = lin
        cats = [c for c in consumers.get(acts[0].output[0], []) if c.op_type == "Concat"]
        order = [a.output[0] for a in (acts[::-1] if reverse else acts)]
        cats = [c for c in cats if list(c.input) == order and _attr(c, "axis") == 0]
        if len(cats) != 1:
            continue
        chains.append(_Chain(X, Wk, wb, R, rb, acts[0].op_type, reverse, acts, cats[0]))
    if not chains:
        return proto, 0
    return _rewrite(proto, chains, consumers), len(chains)


def _walk_to_acts(name, consumers, parsed):
    """Activation nodes two or three hops below ``name`` (MatMul [-> Add bias] -> Add step -> act)."""
    found, frontier = [], [name]
    for _ in range(4):
        nxt = []
        for t in frontier:
            for c in consumers.get(t, []):
                if c.op_type in ("Tanh", "Relu") and c.output[0] in parsed:
                    found.append(c)
                elif c.op_type in ("MatMul", "Add"):
                    nxt.extend(c.output)
        frontier = nxt
    return found


def _attr(node, name):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def _rewrite(proto, chains, consumers):
    """A copy of ``proto`` with each chain (or forward+reverse pair) replaced by one RNN node."""
    from onnx import helper

    new = onnx.ModelProto()
    new.CopyFrom(proto)
    g = new.graph
    used = {c.concat.output[0]: c for c in chains}
    pairs, singles = [], []
    for c in chains:
        cons = consumers.get(c.concat.output[0], [])
        pair = None
        if not c.reverse and len(cons) == 1 and cons[0].op_type == "Concat" and len(cons[0].input) == 2 \
                and cons[0].input[0] == c.concat.output[0] and _attr(cons[0], "axis") in (2, -1):
            other = used.get(cons[0].input[1])
            if other is not None and other.reverse and other.X == c.X and other.act == c.act and \
                    other.W.shape == c.W.shape and (other.wb is None) == (c.wb is None) and \
                    (other.rb is None) == (c.rb is None):
                pair = (c, other, cons[0])
        if pair:
            pairs.append(pair)
    paired = {id(x) for p in pairs for x in p[:2]}
    singles = [c for c in chains if id(c) not in paired]
    remove = set()
    insert = []  # (index of the node to insert before, nodes)
    index = {id(n): k for k, n in enumerate(proto.graph.node)}
    k = 0

    def weights(cs, base):
        W = np.stack([c.W.T for c in cs]).astype(np.float32)
        R = np.stack([c.R.T for c in cs]).astype(np.float32)
        H = R.shape[1]
        names = [f"{base}_W", f"{base}_R"]
        g.initializer.extend([numpy_helper.from_array(W, names[0]), numpy_helper.from_array(R, names[1])])
        if cs[0].wb is not None or cs[0].rb is not None:
            B = np.stack([np.concatenate([np.zeros(H) if c.wb is None else np.asarray(c.wb).reshape(-1),
                                          np.zeros(H) if c.rb is None else np.asarray(c.rb).reshape(-1)])
                          for c in cs]).astype(np.float32)
            g.initializer.append(numpy_helper.from_array(B, f"{base}_B"))
            names.append(f"{base}_B")
        return names, H

    act_name = {"Tanh": "Tanh", "Relu": "Relu"}
    for c in singles:
        base = f"rerolled_rnn_{k}"
        k += 1
        (names, H) = weights([c], base)
        last = c.acts[-1].output[0]
        nodes = [helper.make_node("RNN", [c.X] + names, [f"{base}_Y", last], name=base, hidden_size=H,
                                  direction="reverse" if c.reverse else "forward",
                                  activations=[act_name[c.act]]),
                 helper.make_node("Squeeze", [f"{base}_Y", f"{base}_ax1"], [c.concat.output[0]],
                                  name=f"{base}_squeeze")]
        g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), f"{base}_ax1"))
        remove.update({index[id(c.acts[-1])], index[id(c.concat)]})
        insert.append((index[id(c.acts[-1])], nodes))
    for fw, bw, cat in pairs:
        base = f"rerolled_rnn_{k}"
        k += 1
        (names, H) = weights([fw, bw], base)
        g.initializer.extend([numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"{base}_shape"),
                              numpy_helper.from_array(np.array([0], np.int64), f"{base}_0"),
                              numpy_helper.from_array(np.array([1], np.int64), f"{base}_1"),
                              numpy_helper.from_array(np.array([2], np.int64), f"{base}_2")])
        nodes = [helper.make_node("RNN", [fw.X] + names, [f"{base}_Y", f"{base}_Yh"], name=base, hidden_size=H,
                                  direction="bidirectional", activations=[act_name[fw.act]] * 2),
                 helper.make_node("Transpose", [f"{base}_Y"], [f"{base}_Yt"], perm=[0, 2, 1, 3]),
                 helper.make_node("Reshape", [f"{base}_Yt", f"{base}_shape"], [cat.output[0]], name=f"{base}_merge"),
                 helper.make_node("Slice", [f"{base}_Yh", f"{base}_0", f"{base}_1", f"{base}_0"],
                                  [fw.acts[-1].output[0]]),
                 helper.make_node("Slice", [f"{base}_Yh", f"{base}_1", f"{base}_2", f"{base}_0"],
                                  [bw.acts[-1].output[0]])]
        at = max(index[id(fw.acts[-1])], index[id(bw.acts[-1])])
        remove.update({index[id(fw.acts[-1])], index[id(bw.acts[-1])], index[id(fw.concat)],
                       index[id(bw.concat)], index[id(cat)]})
        insert.append((at, nodes))
    old = list(g.node)
    del g.node[:]
    by_pos = {}
    for at, nodes in insert:
        by_pos.setdefault(at, []).extend(nodes)
    order = []
    for pos, n in enumerate(old):
        order.extend(by_pos.get(pos, []))
        if pos not in remove:
            order.append(n)
    # stable topological order (a re-rolled node may have to move before earlier consumers)
    avail = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending = order
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                g.node.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # leftovers depend on removed tensors: dead code, drop them
            break
        pending = rest
    return new


def _replace(d, **kw):
    new = _Data(list(d.axes), d.version, d.src, d.kind, d.dsel, d.merge, d.flipped, None)
    for k, v in kw.items():
        setattr(new, k, v)
    return new


def _build(imp, axes_out, dtype):
    from ..layers import GRU, LSTM, Activation, Bidirectional, Dense, Embedding, Masking, SimpleRNN
    from ..models import Sequential

    has_rnn = any(s.kind == "rnn" for s in imp.specs)
    if imp.ids:
        shape = (None,)
    else:
        shape = (None, imp.input_features) if (has_rnn or imp.input_rank == 3) else (imp.input_features,)
    model = Sequential(name=imp.g.name or "onnx_import", dtype=dtype)
    layers = []
    for s in imp.specs:
        a = s.args
        if s.kind == "embedding":
            layer = Embedding(a["input_dim"], a["output_dim"])
        elif s.kind == "masking":
            layer = Masking(a["mask_value"])
        elif s.kind == "dense":
            layer = Dense(a["units"], activation=a["activation"], use_bias=a["use_bias"])
        elif s.kind == "act":
            layer = Activation(a["activation"])
        else:
            opts = dict(use_bias=a["use_bias"], return_sequences=bool(a["return_sequences"]), clip=a["clip"],
                        go_backwards=a["direction"] == "reverse")
            if a["op"] == "LSTM":
                inner = LSTM(a["units"], activation=a["activation"], recurrent_activation=a["recurrent_activation"],
                             unit_forget_bias=False, peephole=a["peephole"], coupled_gates=a["input_forget"], **opts)
            elif a["op"] == "GRU":
                inner = GRU(a["units"], activation=a["activation"], recurrent_activation=a["recurrent_activation"],
                            reset_after=a["linear_before_reset"], **opts)
            else:
                inner = SimpleRNN(a["units"], activation=a["activation"], **opts)
            layer = Bidirectional(inner, merge_mode=a["merge_mode"]) if a["D"] == 2 else inner
        layers.append(layer)
        model.add(layer)
    model.build(shape)
    from ..convert import _assign, _set_recurrent

    for s, layer in zip(imp.specs, layers, strict=True):
        if s.kind == "embedding":
            _assign(layer, "embeddings", s.arrays[0])
        elif s.kind == "dense":
            _assign(layer, "kernel", s.arrays[0])
            if s.arrays[1] is not None:
                _assign(layer, "bias", s.arrays[1])
        elif s.kind == "rnn":
            W, R, Wb, Rb, P = s.arrays
            _set_recurrent(layer, W, R, Wb, Rb)
            if P is not None:
                _assign(layer, "P", P)
    return model


def load(path, *, output=None, input=None, dtype="float32"):  # noqa: A002 - ONNX's word
    """Build an edgernn model from an ONNX file (or ``onnx.ModelProto``).

    Parameters
    ----------
    path : str, path-like or onnx.ModelProto
    output : str, optional
        Name of the graph output the model should compute; default: the first output (other
        outputs, such as PyTorch's ``h_n``/``c_n``, are ignored).
    input : str, optional
        Name of the data input; default: the only float input.
    dtype : {"float32", "float64"}
        The model's dtype (weights are read in their stored precision).

    Returns
    -------
    Sequential
        Built, batch-first (see the module docstring for how its input and output correspond to
        the graph's); ``model.meta["onnx_import"]`` says which tensors it maps.

    Raises
    ------
    UnsupportedGraphError
        A node or option with no edgernn form, naming the node and its op.
    """
    proto = path if isinstance(path, onnx.ModelProto) else onnx.load(os.fspath(path))
    proto, rerolled = _reroll(proto)
    imp = _Importer(proto, output, input)
    axes = imp.run()
    model = _build(imp, axes, np.dtype(dtype))
    in_labels = [imp.lab(f"x{k}") for k in range(imp.input_rank - (0 if imp.ids else 1))] + ([] if imp.ids else ["F"])
    defaults = {"x0": "B", "x1": "T"}
    in_labels = [defaults.get(v, v) for v in in_labels]
    out_labels = []
    for ax in axes:
        lab = [imp.lab(a[0]) for a in ax]
        lab = [defaults.get(v, v) for v in lab]
        out_labels.append(lab[0] if len(lab) == 1 else "*".join(lab))
    model.meta["onnx_import"] = {
        "input": imp.input.name, "input_axes": in_labels,
        "input_layout": "time-major" if in_labels[:2] == ["T", "B"] else "batch-first",
        "output": imp.output, "output_axes": out_labels, "lengths_input": imp.lengths_name,
    }
    return model
