"""Low-level ONNX graph construction used by the converters.

:class:`GraphBuilder` collects nodes, initializers, inputs and outputs with unique names and
hides the opset-dependent spelling of a few operators (``ReduceMax`` takes its axes as an
input from opset 18 on). :func:`make_rnn_node` writes one native ``RNN``/``GRU``/``LSTM`` node
from arrays in edgernn's (= ONNX's) layout and functional-style options, and
:func:`supported_opset` finds the newest opset the installed onnxruntime runs.

Everything here works on time-major tensors (``layout=0``: ``X`` is (T, B, I)), because
onnxruntime's CPU kernels reject ``layout=1``.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .._activations import ACTIVATIONS as _ACT_TABLE
from .._activations import ONNX_NAMES as _ACT_NAMES
from .._activations import USES_ALPHA, USES_BETA

__all__ = ["GraphBuilder", "make_rnn_node", "rnn_attributes", "supported_opset", "MIN_OPSET",
           "OP_TYPES"]

MIN_OPSET = 14
OP_TYPES = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}
NUM_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
DEFAULT_ACTIVATIONS = {"rnn": ("Tanh",), "gru": ("Sigmoid", "Tanh"), "lstm": ("Sigmoid", "Tanh", "Tanh")}


class GraphBuilder:
    """Accumulates an ONNX graph: nodes, float32 initializers, inputs, outputs.

    Parameters
    ----------
    opset : int
        Default-domain opset the graph is written for.
    """

    def __init__(self, opset: int):
        self.opset = int(opset)
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.outputs: list = []
        self._names: set[str] = set()
        self._consts: dict = {}

    # ---- names --------------------------------------------------------------------
    def unique(self, base: str) -> str:
        """A tensor name starting with ``base`` not used so far (and reserve it)."""
        name = base
        k = 1
        while name in self._names:
            name = f"{base}_{k}"
            k += 1
        self._names.add(name)
        return name

    def reserve(self, name: str) -> str:
        """Reserve an exact name (graph inputs and outputs); raises if it is taken."""
        if name in self._names:
            raise ValueError(f"ONNX tensor name {name!r} is used twice")
        self._names.add(name)
        return name

    # ---- graph pieces ---------------------------------------------------------------
    def add_input(self, name: str, elem_type: int, shape) -> str:
        """Declare a graph input; ``shape`` entries are ints or symbolic names (str)."""
        self.reserve(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def add_output(self, name: str, tensor: str, elem_type: int, shape) -> str:
        """Expose ``tensor`` as graph output ``name`` (through an Identity)."""
        self.reserve(name)
        self.nodes.append(helper.make_node("Identity", [tensor], [name], name=f"{name}_out"))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type,
                                                          None if shape is None else list(shape)))
        return name

    def initializer(self, base: str, array: np.ndarray) -> str:
        """Store ``array`` (its dtype kept) as an initializer; returns its name."""
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A small constant (shared between uses), e.g. axes lists or scalars."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.initializer("const", arr)
        return self._consts[key]

    def op(self, op_type: str, inputs, n_out: int = 1, base: str | None = None, **attrs):
        """Append a node; returns its output name (or a list of names if ``n_out > 1``)."""
        base = base or op_type.lower()
        outs = [self.unique(f"{base}_out{k}" if n_out > 1 else base) for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.unique(f"{base}_node"),
                                           **attrs))
        return outs[0] if n_out == 1 else outs

    # ---- opset-aware helpers --------------------------------------------------------
    def squeeze(self, x: str, axes, base=None) -> str:
        return self.op("Squeeze", [x, self.const(list(axes))], base=base or "squeeze")

    def unsqueeze(self, x: str, axes, base=None) -> str:
        return self.op("Unsqueeze", [x, self.const(list(axes))], base=base or "unsqueeze")

    def reduce_max(self, x: str, axes, keepdims=0, base=None) -> str:
        if self.opset >= 18:
            return self.op("ReduceMax", [x, self.const(list(axes))], keepdims=keepdims,
                           base=base or "reducemax")
        return self.op("ReduceMax", [x], axes=list(axes), keepdims=keepdims, base=base or "reducemax")

    def dim(self, x: str, axis: int, base=None) -> str:
        """Size of ``x`` along ``axis`` as an int64 tensor of shape (1,)."""
        shape = self.op("Shape", [x], base="shape")
        return self.op("Gather", [shape, self.const([axis])], axis=0, base=base or "dim")

    # ---- model ----------------------------------------------------------------------
    def _fold_output_identities(self):
        """Name producing tensors after the graph outputs instead of keeping an Identity each.

        Only where the produced tensor feeds exactly one output and is neither a graph input
        nor an initializer (a tensor exported under two names keeps its Identity).
        """
        out_names = {o.name for o in self.outputs}
        fixed = {i.name for i in self.inputs} | {t.name for t in self.initializers}
        idents = [n for n in self.nodes if n.op_type == "Identity" and n.output[0] in out_names]
        sources = [n.input[0] for n in idents]
        ren = {}
        for n in idents:
            src = n.input[0]
            if src not in fixed and src not in out_names and sources.count(src) == 1:
                ren[src] = n.output[0]
        if not ren:
            return
        nodes = []
        for n in self.nodes:
            if n.op_type == "Identity" and n.output[0] in out_names and n.input[0] in ren:
                continue
            for i, t in enumerate(n.input):
                if t in ren:
                    n.input[i] = ren[t]
            for i, t in enumerate(n.output):
                if t in ren:
                    n.output[i] = ren[t]
            nodes.append(n)
        self.nodes = nodes

    def make_model(self, name: str = "edgernn", metadata: dict | None = None, doc: str = ""):
        """Assemble and return the ``ModelProto``."""
        self._fold_output_identities()
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="edgernn",
                                  ir_version=helper.find_min_ir_version_for(opsets))
        from .. import __version__

        model.producer_version = __version__
        if doc:
            model.doc_string = doc
        if metadata:
            helper.set_model_props(model, {str(k): str(v) for k, v in metadata.items()})
        return model


# -------------------------------------------------------------------------------------------
# recurrent nodes
# -------------------------------------------------------------------------------------------
def rnn_attributes(cell, hidden_size, direction="forward", activations=None, activation_alpha=None,
                   activation_beta=None, clip=None, input_forget=False, linear_before_reset=True):
    """Attributes of a native RNN/GRU/LSTM node, with every alpha/beta written explicitly.

    ``activations``, ``activation_alpha`` and ``activation_beta`` are read as
    :mod:`edgernn.functional` reads them (one value per activation that takes it, in order;
    missing ones take onnxruntime's defaults). The written lists have one value for *every*
    activation that takes one, so onnxruntime's own (zero) defaults never apply.

    Returns
    -------
    dict
        Keyword attributes for ``onnx.helper.make_node``.
    """
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"direction: expected forward, reverse or bidirectional, got {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    names = list(DEFAULT_ACTIVATIONS[cell]) * D if activations is None else list(activations)
    if len(names) != len(DEFAULT_ACTIVATIONS[cell]) * D:
        raise ValueError(f"activations: expected {len(DEFAULT_ACTIVATIONS[cell]) * D} names for a "
                         f"{direction} {cell}, got {names}")
    al = [] if activation_alpha is None else [float(v) for v in np.ravel(activation_alpha)]
    be = [] if activation_beta is None else [float(v) for v in np.ravel(activation_beta)]
    out_names, out_al, out_be = [], [], []
    for name in names:
        key = str(name).lower()
        if key not in _ACT_TABLE:
            raise ValueError(f"activations: unknown activation {name!r}")
        _, da, db = _ACT_TABLE[key]
        out_names.append(_ACT_NAMES[key])
        if key in USES_ALPHA:
            out_al.append(al.pop(0) if al else float(da))
        if key in USES_BETA:
            out_be.append(be.pop(0) if be else float(db))
    attrs = {"hidden_size": int(hidden_size), "direction": direction, "activations": out_names,
             "layout": 0}
    if out_al:
        attrs["activation_alpha"] = out_al
    if out_be:
        attrs["activation_beta"] = out_be
    if clip is not None:
        attrs["clip"] = float(clip)
    if cell == "lstm":
        attrs["input_forget"] = int(bool(input_forget))
    if cell == "gru":
        attrs["linear_before_reset"] = int(bool(linear_before_reset))
    return attrs


def make_rnn_node(g: GraphBuilder, cell: str, X: str, W, R, Wb=None, Rb=None, P=None, *,
                  sequence_lens: str | None = None, initial_h: str | None = None,
                  initial_c: str | None = None, direction="forward", activations=None,
                  activation_alpha=None, activation_beta=None, clip=None, input_forget=False,
                  linear_before_reset=True, base: str = "rnn"):
    """Append one native ``RNN``/``GRU``/``LSTM`` node (``layout=0``).

    Parameters
    ----------
    g : GraphBuilder
    cell : {"rnn", "gru", "lstm"}
    X : str
        Time-major input tensor (T, B, I).
    W, R : ndarray
        (D, G*H, I) and (D, G*H, H), ONNX gate order; copied as float32 initializers.
    Wb, Rb : ndarray, optional
        (D, G*H) each; ``B = concat(Wb, Rb)`` per direction (a missing one is zeros). When both
        are None the node has no ``B`` input.
    P : ndarray, optional
        LSTM peepholes (D, 3H).
    sequence_lens : str, optional
        int32 tensor (B,).
    initial_h, initial_c : str, optional
        (D, B, H) tensors.
    direction, activations, activation_alpha, activation_beta, clip, input_forget, linear_before_reset
        As in :mod:`edgernn.functional`.
    base : str
        Prefix of the names of the node, its weights and its outputs.

    Returns
    -------
    list of str
        ``[Y, Y_h]`` (RNN, GRU) or ``[Y, Y_h, Y_c]`` (LSTM): Y (T, D, B, H), states (D, B, H).
    """
    if cell not in OP_TYPES:
        raise ValueError(f"cell: expected 'rnn', 'gru' or 'lstm', got {cell!r}")
    W = np.asarray(W, dtype=np.float32)
    R = np.asarray(R, dtype=np.float32)
    D, GH, H = R.shape
    G = NUM_GATES[cell]
    if GH != G * H or W.shape[:2] != (D, GH):
        raise ValueError(f"{cell}: inconsistent weight shapes W {W.shape}, R {R.shape}")
    if D != (2 if direction == "bidirectional" else 1):
        raise ValueError(f"{cell}: {D} weight directions for direction={direction!r}")
    attrs = rnn_attributes(cell, H, direction, activations, activation_alpha, activation_beta, clip,
                           input_forget, linear_before_reset)
    ins = [X, g.initializer(f"{base}_W", W), g.initializer(f"{base}_R", R), "", sequence_lens or "",
           initial_h or ""]
    if Wb is not None or Rb is not None:
        zero = np.zeros((D, GH), np.float32)
        wb = zero if Wb is None else np.asarray(Wb, dtype=np.float32).reshape(D, GH)
        rb = zero if Rb is None else np.asarray(Rb, dtype=np.float32).reshape(D, GH)
        ins[3] = g.initializer(f"{base}_B", np.concatenate([wb, rb], axis=1))
    if cell == "lstm":
        ins += [initial_c or "", ""]
        if P is not None:
            P = np.asarray(P, dtype=np.float32)
            if P.shape != (D, 3 * H):
                raise ValueError(f"lstm: P must be (num_directions, 3*hidden) = {(D, 3 * H)}, got {P.shape}")
            ins[7] = g.initializer(f"{base}_P", P)
    while ins[-1] == "":
        ins.pop()
    n_out = 3 if cell == "lstm" else 2
    outs = [g.unique(f"{base}_{s}") for s in ("Y", "Y_h", "Y_c")[:n_out]]
    g.nodes.append(helper.make_node(OP_TYPES[cell], ins, outs, name=g.unique(f"{base}_node"), **attrs))
    return outs


# -------------------------------------------------------------------------------------------
# opset discovery
# -------------------------------------------------------------------------------------------
def _probe_model(opset: int):
    """A tiny graph with every operator the exporter writes, at ``opset``."""
    g = GraphBuilder(opset)
    x = g.add_input("x", TensorProto.FLOAT, [1, 2, 3])
    lens = g.add_input("lengths", TensorProto.INT64, [1])
    xt = g.op("Transpose", [x], perm=[1, 0, 2])
    l32 = g.op("Cast", [lens], to=TensorProto.INT32)
    outs = []
    for cell in ("rnn", "gru", "lstm"):
        G = NUM_GATES[cell]
        Y, Yh = make_rnn_node(g, cell, xt, np.zeros((1, G, 3)), np.zeros((1, G, 1)), np.zeros((1, G)),
                              np.zeros((1, G)), sequence_lens=l32, base=cell)[:2]
        outs += [Y, Yh]
    y = g.squeeze(outs[0], [1])
    y = g.op("ReverseSequence", [y, lens], batch_axis=1, time_axis=0)
    y = g.op("Slice", [y, g.const([-1]), g.const([np.iinfo(np.int64).min]), g.const([0]), g.const([-1])])
    m = g.op("Cast", [g.op("Not", [g.op("Equal", [x, g.const(0.0, np.float32)])])], to=TensorProto.FLOAT)
    m = g.reduce_max(m, [-1])
    r = g.op("Range", [g.const(0.0, np.float32), g.const(2.0, np.float32), g.const(1.0, np.float32)])
    m = g.op("Mul", [m, r])
    w = g.op("Where", [g.op("Less", [m, g.const(1.0, np.float32)]), m, m])
    e = g.op("Gather", [g.const(np.zeros((2, 2)), np.float32), g.op("Cast", [w], to=TensorProto.INT64)],
             axis=0)
    z = g.op("Concat", [g.unsqueeze(outs[1], [0]), g.unsqueeze(outs[3], [0])], axis=0)
    z = g.op("Reshape", [z, g.const([0, -1])])
    z = g.op("MatMul", [z, g.const(np.ones((1, 1)), np.float32)])
    for op in ("Relu", "Tanh", "Sigmoid", "Softsign", "Softplus", "Elu", "HardSigmoid", "Softmax", "Identity"):
        z = g.op(op, [z])
    z = g.op("Add", [g.op("Expand", [z, g.op("Shape", [z])]), g.op("Max", [z, z])])
    z = g.op("Min", [z, z])
    # the layers around RNNs and attention: elementwise, reductions, convolution
    z = g.op("Div", [g.op("Sub", [z, z]), g.op("Sqrt", [g.op("Add", [z, g.const(1.0, np.float32)])])])
    both = g.op("And", [g.op("LessOrEqual", [z, z]), g.op("Less", [z, z])])
    z = g.op("Where", [both, z, z])
    z = g.op("ReduceSum", [z, g.const([-1])], keepdims=1)
    c = g.op("Conv", [g.const(np.ones((1, 1, 3)), np.float32), g.const(np.ones((1, 1, 2)), np.float32)],
             kernel_shape=[2], dilations=[1], strides=[1], pads=[1, 0])
    c = g.op("Flatten", [g.op("Pad", [c, g.const([0, 0, 1, 0, 0, 0])], mode="constant")])
    z = g.op("Add", [z, g.op("ReduceSum", [c], keepdims=0)])
    g.add_output("y", y, TensorProto.FLOAT, None)
    g.add_output("e", e, TensorProto.FLOAT, None)
    g.add_output("z", z, TensorProto.FLOAT, None)
    return g.make_model()


@functools.lru_cache(maxsize=None)
def supported_opset() -> int:
    """Newest default-domain opset that onnx and the installed onnxruntime both run.

    Starts at ``onnx.defs.onnx_opset_version()`` and steps down until onnxruntime loads and
    runs a probe graph made of every operator the exporter writes. Cached.

    Raises
    ------
    RuntimeError
        If no opset >= 14 works.
    """
    import onnxruntime as ort

    errors = []
    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET - 1, -1):
        try:
            model = _probe_model(opset)
            so = ort.SessionOptions()
            so.log_severity_level = 4
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            sess.run(None, {"x": np.ones((1, 2, 3), np.float32), "lengths": np.array([2], np.int64)})
            return opset
        except Exception as exc:  # noqa: BLE001 - this opset is not supported; try the next
            errors.append(f"{opset}: {exc}")
    raise RuntimeError("the installed onnxruntime runs no ONNX opset >= 14:\n" + "\n".join(errors[-3:]))
