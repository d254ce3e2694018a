"""Run a single ONNX RNN/GRU/LSTM node from batch-first, functional-style arguments.

``run_ort(cell, X, W, R, ...)`` builds a one-node model (``layout=0``, ``hidden_size`` set,
every attribute given), runs it in onnxruntime (float32 only: onnxruntime has no float64
RNN/GRU/LSTM kernels) and returns the outputs batch-first: ``Y (B,T,D,H)``, ``Y_h (B,D,H)``
[, ``Y_c (B,D,H)``].  ``run_reference`` does the same with ``onnx.reference.ReferenceEvaluator``
(float32 or float64), which is only faithful for default activations, no clip, no
input_forget and no ``sequence_lens``; it refuses those options.

onnxruntime quirks handled here (found reading its CPU kernels, 1.2x-1.3x):

* activation_alpha / activation_beta defaults: onnxruntime uses 0.0 for Affine,
  ThresholdedRelu and ScaledTanh when no value is given (ONNX says: the defaults of the ONNX
  operators, 1.0 etc.).  So the model is always built with explicit values: the
  functional-style lists are resolved per activation slot (``naive.resolve_activations``) and
  written back as one value per activation that uses it, in activation order, which is how
  onnxruntime 1.32 reads them for all three ops (checked in test_naive_oracle.py; older
  onnxruntime RNN kernels indexed them per direction instead).
* ``sequence_lens`` with a 0 entry: RNN/GRU/LSTM return zeros for that row's ``Y_h``/``Y_c``
  (ONNX and edgernn: the initial state; older onnxruntime RNN kernels even read out of bounds
  there).  Callers compare ``Y_h``/``Y_c`` only on rows with a nonzero length (``valid_rows``).
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper

try:  # tests/ as a package or as a plain directory on sys.path (pytest's default)
    from . import naive
except ImportError:  # pragma: no cover
    import naive

_OP = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}
_NUM_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


@functools.lru_cache(maxsize=None)
def max_ort_opset() -> int:
    """Newest default-domain opset that both onnx and the installed onnxruntime accept."""
    import onnxruntime as ort

    for opset in range(onnx.defs.onnx_opset_version(), 13, -1):
        try:
            model = _build("rnn", "forward", 1, 1, {}, opset, TensorProto.FLOAT,
                           has_b=False, has_lens=False, has_h0=False, has_c0=False, has_p=False)
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return opset
        except Exception:  # noqa: BLE001 - opset not supported by this onnxruntime
            continue
    raise RuntimeError("onnxruntime supports no opset >= 14")


def onnx_attributes(cell, direction="forward", activations=None, activation_alpha=None,
                    activation_beta=None, clip=None, input_forget=False, linear_before_reset=True):
    """ONNX node attributes (except hidden_size) with explicit, kernel-proof alpha/beta lists."""
    slots = naive.resolve_activations(cell, direction, activations, activation_alpha, activation_beta)
    attrs = {"direction": direction, "activations": [s[0] for s in slots], "layout": 0}
    # one value per activation that uses it, in activation order (all directions)
    alphas = [s[1] for s in slots if s[1] is not None]
    betas = [s[2] for s in slots if s[2] is not None]
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    if clip is not None:
        attrs["clip"] = float(clip)
    if cell == "lstm":
        attrs["input_forget"] = int(bool(input_forget))
    if cell == "gru":
        attrs["linear_before_reset"] = int(bool(linear_before_reset))
    return attrs


def _build(cell, direction, input_size, hidden_size, attrs, opset, elem_type, *, has_b, has_lens,
           has_h0, has_c0, has_p):
    inputs = ["X", "W", "R", "B" if has_b else "", "sequence_lens" if has_lens else "",
              "initial_h" if has_h0 else ""]
    if cell == "lstm":
        inputs += ["initial_c" if has_c0 else "", "P" if has_p else ""]
    while inputs and inputs[-1] == "":  # trailing optional inputs may be omitted
        inputs.pop()
    outputs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    attrs = dict(attrs)
    attrs.setdefault("direction", direction)
    node = helper.make_node(_OP[cell], inputs, outputs, hidden_size=hidden_size, **attrs)
    D = 2 if direction == "bidirectional" else 1
    G = _NUM_GATES[cell]
    H = hidden_size
    shapes = {
        "X": ["T", "N", input_size],
        "W": [D, G * H, input_size],
        "R": [D, G * H, H],
        "B": [D, 2 * G * H],
        "sequence_lens": ["N"],
        "initial_h": [D, "N", H],
        "initial_c": [D, "N", H],
        "P": [D, 3 * H],
    }
    graph_inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else elem_type, shapes[n])
        for n in inputs
        if n
    ]
    out_shapes = {"Y": ["T", D, "N", H], "Y_h": [D, "N", H], "Y_c": [D, "N", H]}
    graph_outputs = [helper.make_tensor_value_info(n, elem_type, out_shapes[n]) for n in outputs]
    graph = helper.make_graph([node], f"single_{cell}", graph_inputs, graph_outputs)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    return model


def make_model(cell, X, W, R, Wb=None, Rb=None, h0=None, c0=None, P=None, lengths=None,
               direction="forward", activations=None, activation_alpha=None, activation_beta=None,
               clip=None, input_forget=False, linear_before_reset=True, opset=None, dtype=np.float32):
    """Build the single-node model and its feed dict (ONNX layout=0 tensors).

    Returns ``(model, feeds)``.  ``Wb``/``Rb`` are concatenated into ONNX's ``B`` (a missing one
    is zeros); ``h0``/``c0`` (B,D,H) become ``initial_h``/``initial_c`` (D,B,H).
    """
    opset = max_ort_opset() if opset is None else opset
    X = np.asarray(X)
    W = np.asarray(W)
    R = np.asarray(R)
    D = 2 if direction == "bidirectional" else 1
    H = R.shape[-1]
    G = _NUM_GATES[cell]
    elem = TensorProto.FLOAT if np.dtype(dtype) == np.float32 else TensorProto.DOUBLE
    attrs = onnx_attributes(cell, direction, activations, activation_alpha, activation_beta, clip,
                            input_forget, linear_before_reset)
    has_b = Wb is not None or Rb is not None
    model = _build(cell, direction, X.shape[2], H, attrs, opset, elem, has_b=has_b,
                   has_lens=lengths is not None, has_h0=h0 is not None,
                   has_c0=c0 is not None and cell == "lstm", has_p=P is not None and cell == "lstm")
    onnx.checker.check_model(model)
    feeds = {
        "X": np.ascontiguousarray(np.transpose(X, (1, 0, 2)), dtype=dtype),
        "W": np.ascontiguousarray(W, dtype=dtype),
        "R": np.ascontiguousarray(R, dtype=dtype),
    }
    if has_b:
        zb = np.zeros((D, G * H))
        wb = zb if Wb is None else np.asarray(Wb)
        rb = zb if Rb is None else np.asarray(Rb)
        feeds["B"] = np.ascontiguousarray(np.concatenate([wb, rb], axis=-1), dtype=dtype)
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths).astype(np.int32)
    if h0 is not None:
        feeds["initial_h"] = np.ascontiguousarray(np.transpose(h0, (1, 0, 2)), dtype=dtype)
    if cell == "lstm" and c0 is not None:
        feeds["initial_c"] = np.ascontiguousarray(np.transpose(c0, (1, 0, 2)), dtype=dtype)
    if cell == "lstm" and P is not None:
        feeds["P"] = np.ascontiguousarray(P, dtype=dtype)
    return model, feeds


def to_batch_first(outputs):
    """ONNX (Y (T,D,B,H), Y_h (D,B,H)[, Y_c]) -> (Y (B,T,D,H), Y_h (B,D,H)[, Y_c (B,D,H)])."""
    Y = np.transpose(outputs[0], (2, 0, 1, 3))
    rest = [np.transpose(o, (1, 0, 2)) for o in outputs[1:]]
    return (Y, *rest)


@functools.lru_cache(maxsize=256)
def _session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def run_ort(cell, X, W, R, Wb=None, Rb=None, h0=None, c0=None, P=None, lengths=None, **options):
    """Run the node in onnxruntime (float32). Returns batch-first float32 outputs."""
    model, feeds = make_model(cell, X, W, R, Wb, Rb, h0, c0, P, lengths, dtype=np.float32, **options)
    sess = _session(model.SerializeToString())
    return to_batch_first(sess.run(None, feeds))


def run_reference(cell, X, W, R, Wb=None, Rb=None, h0=None, c0=None, P=None, lengths=None,
                  dtype=np.float64, **options):
    """Run the node in ``onnx.reference.ReferenceEvaluator`` (float32 or float64).

    The reference implementation ignores ``sequence_lens``, ``activations``, ``clip`` and
    ``input_forget``; those options are refused here rather than silently ignored.
    """
    from onnx.reference import ReferenceEvaluator

    T = np.shape(X)[1]
    if lengths is not None and not np.all(np.asarray(lengths) == T):
        raise ValueError("ReferenceEvaluator ignores sequence_lens")
    if options.get("activations") is not None and [a.lower() for a in options["activations"]] != [
        a.lower() for a in naive.DEFAULT_ACTIVATIONS[cell] * (2 if options.get("direction") == "bidirectional" else 1)
    ]:
        raise ValueError("ReferenceEvaluator ignores activations")
    if options.get("clip") is not None or options.get("input_forget"):
        raise ValueError("ReferenceEvaluator ignores clip and input_forget")
    model, feeds = make_model(cell, X, W, R, Wb, Rb, h0, c0, P, None, dtype=dtype, **options)
    ref = ReferenceEvaluator(model)
    return to_batch_first(ref.run(None, feeds))


def valid_rows(lengths, B):
    """Rows whose Y_h/Y_c onnxruntime computes per ONNX (those with a nonzero length)."""
    if lengths is None:
        return np.ones(B, dtype=bool)
    return np.asarray(lengths) > 0
