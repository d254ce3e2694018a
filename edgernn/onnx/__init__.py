"""ONNX export of edgernn models, cross-validated against onnxruntime.

::

    import edgernn.onnx
    edgernn.onnx.export(model, "model.onnx")                          # full-sequence graph
    edgernn.onnx.export(model, "model_stream.onnx", streaming=True)   # one step + states
    report = edgernn.onnx.verify(model, "model.onnx")                 # raises on mismatch
    print(report)

This subpackage needs ``onnx`` and ``onnxruntime`` (``pip install 'edgernn[onnx]'``);
``import edgernn`` never imports them.

The graphs
----------
*Full graph* (``streaming=False``): input ``x`` float32 (batch, time, features) with symbolic
``batch`` and ``time`` (int64 ids (batch, time) for a model starting with ``Embedding``),
output ``y`` batch-first as ``model.predict`` returns it, plus the states when the last layer
has ``return_state`` (``state_{k}_h_out``, ``state_{k}_c_out`` in Keras order, ``_backward``
for the backward half of a Bidirectional). Recurrent layers are native ``RNN``/``GRU``/``LSTM``
nodes (``layout=0``, between two Transposes).

Variable lengths: ``Masking(mask_value)`` and ``Embedding(mask_zero=True)`` are exported with
their lengths *computed inside the graph* from the input (1 + the last step with any feature
!= mask_value, as the layers do), so ``session.run(None, {"x": x})`` equals
``model.predict(x)`` on the same padded array without any extra input. For lengths given
explicitly (``model.predict(x, lengths=L)`` or a list of sequences), export with
``lengths_input=True``: the graph then has an int64 ``lengths`` (batch,) input as well
(combined with a Masking layer by taking the minimum, as the layers do).

Stateful layers (``stateful=True``) get their initial state from graph inputs
``state_{k}_h`` [``state_{k}_c``] (batch, units), zeros for a fresh start, and return the final
state as ``state_{k}_h_out`` [``state_{k}_c_out``], so a device carries it between calls exactly
as ``predict`` carries it between batches.

*Streaming graph* (``streaming=True``): one time step. Inputs ``x`` (batch, features) and, for
every recurrent layer k (counted from 0 in model order), ``state_{k}_h`` (batch, units) and for
LSTMs ``state_{k}_c``; outputs ``y`` (batch, out) and the new states ``state_{k}_h_out``,
``state_{k}_c_out``. Start from zeros and feed each output state back as the next input state.
Bidirectional and ``go_backwards`` layers cannot run step by step and are refused. Masking is
the identity there (a stream has no trailing padding: feed real steps only).

*Forecasters* (``model.meta["forecast"]``, from ``edgernn train``/``demo``): both graphs include
the forecaster's preprocessing as ONNX ops, so they take raw values and return forecasts, the
numbers ``edgernn predict`` gives (see :mod:`edgernn.onnx.preprocess`); ``preprocess=False``
exports the bare network.

``metadata_props`` holds the edgernn version, the graph kind, the input layout, name, dtype
and feature count, the layer summary, the outputs, and for state-carrying graphs the names
and shapes of the states (``states``, JSON).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field

import numpy as np
import onnx

from .converters import (
    ConversionContext,
    StateSpec,
    UnsupportedError,
    Value,
    convert_layers,
    get_converter,
    register,
)
from .graph import MIN_OPSET, GraphBuilder, make_rnn_node, supported_opset
from .importer import UnsupportedGraphError, load  # noqa: F401  (edgernn.onnx.load: ONNX import)

__all__ = ["export", "verify", "build_model", "VerifyReport", "VerificationError", "UnsupportedError",
           "register", "get_converter", "Value", "ConversionContext", "StateSpec", "GraphBuilder",
           "make_rnn_node", "supported_opset", "MIN_OPSET", "export_cli"]


class VerificationError(ValueError):
    """An exported file does not faithfully hold the model: onnxruntime's results differ from
    ``model.predict`` by more than the tolerance, its weights are not the model's, or the file is
    unreadable, invalid or tampered (the message says which)."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


# -------------------------------------------------------------------------------------------
# export
# -------------------------------------------------------------------------------------------
def _resolve_opset(opset):
    best = supported_opset()
    if opset is None:
        return best
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset: expected an integer, got {opset!r}")
    opset = int(opset)
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is not supported: edgernn exports opset {MIN_OPSET} or later "
                         "(the RNN/GRU/LSTM definitions it follows)")
    if opset > best:
        import onnxruntime

        raise ValueError(f"opset {opset} is newer than the installed onnxruntime {onnxruntime.__version__} "
                         f"and onnx {onnx.__version__} run together (newest: {best})")
    return opset


def _model_layers(model):
    layers = list(getattr(model, "layers", []))
    if not getattr(model, "built", False) or not layers:
        raise ValueError("export: the model has no layers or is not built (fit it, or give "
                         "input_shape= to the first layer)")
    return layers


def _layer_summary(layers):
    out = []
    for layer in layers:
        shape = layer.output_shape
        if isinstance(shape, list):
            shape = shape[0]
        entry = {"name": layer.name, "class": type(layer).__name__,
                 "output_shape": ["batch"] + [d if d is not None else "time" for d in (shape or ())],
                 "params": int(layer.count_params())}
        if hasattr(layer, "cell") and getattr(layer, "units", None) is not None:
            entry.update(cell=layer.cell, units=int(layer.units), direction=layer.direction)
        out.append(entry)
    return out


def build_model(model, streaming=False, opset=None, lengths_input=False, preprocess=True):
    """Build the ``onnx.ModelProto`` of ``model`` (without writing or checking it).

    Parameters
    ----------
    model : Sequential
        A built model.
    streaming : bool
        Single-step graph with explicit states (see the module docstring).
    opset : int, optional
        Default: :func:`supported_opset`. Must be >= 14.
    lengths_input : bool
        Full graph only: add an int64 ``lengths`` (batch,) input.
    preprocess : bool
        For a forecaster (``model.meta["forecast"]``, written by ``edgernn train``/``demo``),
        put its preprocessing into the graph so that it takes and returns raw values (see
        :mod:`edgernn.onnx.preprocess`). False exports the bare network.

    Returns
    -------
    onnx.ModelProto

    Raises
    ------
    UnsupportedError
        A layer or option without a faithful ONNX form (the message names both).
    ValueError
        Bad opset, unbuilt model.
    """
    from .. import __version__
    from . import graph_model
    from . import preprocess as _pp

    if graph_model.is_graph(model):
        opset = _resolve_opset(opset)
        _model_layers(model)
        g, ctx, names = graph_model.convert_model(model, streaming=bool(streaming), opset=opset,
                                                  lengths_input=bool(lengths_input))
        meta = {"edgernn_version": __version__, **graph_model.meta_of(model, ctx, names, opset),
                "layers": json.dumps(_layer_summary(model.layers)),
                "summary": str(model.summary(print_fn=lambda s: None))}
        doc = (f"edgernn {__version__} full-sequence graph of functional model {model.name}: "
               f"{len(model.layers)} layers, inputs {model.input_names}, outputs {names}")
        return g.make_model(model.name or "edgernn", meta, doc)
    model = graph_model.as_sequential(model)  # a chain: exactly the Sequential export
    fc = _pp.forecast_settings(model) if preprocess else None
    if fc is not None:
        if lengths_input:
            raise ValueError("export: lengths_input does not apply to a forecaster's raw-value graph "
                             "(pass preprocess=False to export the bare network)")
        core = build_model(model, streaming=False, opset=opset, preprocess=False)
        return _pp.wrap(core, fc, streaming=bool(streaming))
    opset = _resolve_opset(opset)
    layers = _model_layers(model)
    input_shape = tuple(model.input_shape)
    g, ctx, out_names = convert_layers(layers, input_shape, streaming=bool(streaming), opset=opset,
                                       lengths_input=bool(lengths_input))
    ids = ctx.input_kind == "ids"
    if streaming:
        layout = "one step: x (batch, features)" if not ids else "one step: x (batch,) int64 token ids"
    elif len(input_shape) == 1 and not ids:
        layout = "x (batch, features)"
    else:
        layout = ("batch-first: x (batch, time, features)" if not ids
                  else "batch-first: x (batch, time) int64 token ids")
    summary = model.summary(print_fn=lambda s: None) if hasattr(model, "summary") else ""
    meta = {
        "edgernn_version": __version__,
        "graph": "streaming" if streaming else "full",
        "input_name": "x",
        "input_layout": layout,
        "input_dtype": "int64" if ids else "float32",
        "input_features": "1" if ids else str(input_shape[-1]),
        "input_shape": json.dumps(ctx.input_shape),
        "outputs": json.dumps([o.name for o in g.outputs]),
        "layers": json.dumps(_layer_summary(layers)),
        "summary": str(summary),
        "states": json.dumps([{"input": s.input, "output": s.output, "shape": ["batch", s.units],
                               "layer": s.layer, "kind": s.kind, "initial": "zeros"} for s in ctx.states]),
        "lengths": ("graph input 'lengths' (int64, batch)" if lengths_input else
                    "computed in the graph (Masking / mask_zero)" if ctx.lengths is not None or ctx.saw_lengths else
                    "computed per step (Masking / mask_zero): padding steps hold the state"
                    if ctx.step_valid is not None else "none"),
        "notes": json.dumps(ctx.notes),
        "opset": str(opset),
    }
    if ids:
        meta["vocabulary_size"] = str(layers[0].input_dim)
    doc = (f"edgernn {__version__} {'streaming (one step)' if streaming else 'full-sequence'} graph of "
           f"{getattr(model, 'name', 'model')}: {len(layers)} layers")
    return g.make_model(getattr(model, "name", "edgernn") or "edgernn", meta, doc)


def _atomic_write(path, data: bytes):
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    # O_EXCL with mode 0666: the kernel applies the process umask (as for any new file, and as the
    # .npz saves do), unlike mkstemp's 0600; the umask itself is never read or changed
    for _ in range(100):
        tmp = os.path.join(d, ".tmp-" + os.path.basename(path) + "-" + secrets.token_hex(4) + ".onnx")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover
        raise FileExistsError(f"cannot create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export(model, path, streaming=False, opset=None, *, lengths_input=False, preprocess=True, verify=False,
           **verify_kwargs):
    """Export ``model`` to an ONNX file.

    The model is checked with ``onnx.checker.check_model(full_check=True)`` and written
    atomically (a temporary file in the same directory, then ``os.replace``).

    Parameters
    ----------
    model : Sequential
    path : str or path-like
    streaming : bool
        Write the single-step graph with explicit state inputs/outputs.
    opset : int, optional
        ONNX opset, 14 or later; default: the newest the installed onnxruntime runs.
    lengths_input : bool
        Full graph: add an int64 ``lengths`` (batch,) input (see the module docstring).
    preprocess : bool
        For a forecaster (``model.meta["forecast"]``), put its preprocessing into the graph:
        raw values in, forecasts out (:mod:`edgernn.onnx.preprocess`). False: the bare network.
    verify : bool
        Also run :func:`verify` on the written file before it replaces ``path`` (a graph that
        fails is not written).
    **verify_kwargs
        Passed to :func:`verify`.

    Returns
    -------
    str
        ``path``.
    """
    proto = build_model(model, streaming=streaming, opset=opset, lengths_input=lengths_input, preprocess=preprocess)
    onnx.checker.check_model(proto, full_check=True)
    path = os.fspath(path)
    tmp = _atomic_write(path, proto.SerializeToString())
    try:
        if verify:
            _verify(model, tmp, **verify_kwargs)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# -------------------------------------------------------------------------------------------
# verify
# -------------------------------------------------------------------------------------------
@dataclass
class CaseResult:
    """One comparison: a graph run at one batch size and length against ``model.predict``."""

    graph: str
    batch: int
    length: int | None
    what: str
    max_abs: float
    max_rel: float
    ok: bool = True


@dataclass
class VerifyReport:
    """What :func:`verify` compared and the worst errors it found.

    Attributes
    ----------
    paths : list of str
    opsets : list of int
    atol : float
    max_abs : float
        Largest ``|onnxruntime - predict|`` over all cases and outputs.
    max_rel : float
        Largest ``|onnxruntime - predict| / (|predict| + atol)``.
    cases : list of CaseResult
    passed : bool
    """

    paths: list
    opsets: list
    atol: float
    rtol: float = 0.0
    max_abs: float = 0.0
    max_rel: float = 0.0
    cases: list = field(default_factory=list)
    passed: bool = True
    weights_compared: int = 0  # weight arrays of the model looked up in the graph(s)
    weight_problems: list = field(default_factory=list)  # those not found bit-identical

    def compare(self, graph, batch, length, what, got, ref):
        """Add one case comparing ``got`` (onnxruntime) with ``ref`` (predict)."""
        a, rel, excess = _errors(got, ref, self.atol, self.rtol)
        self.cases.append(CaseResult(os.path.basename(graph), int(batch), length, what, a, rel,
                                     bool(excess <= self.atol)))

    def as_dict(self):
        return {"paths": list(self.paths), "opsets": list(self.opsets), "atol": self.atol, "rtol": self.rtol,
                "max_abs": self.max_abs, "max_rel": self.max_rel, "passed": self.passed,
                "weights_compared": self.weights_compared, "weight_problems": list(self.weight_problems),
                "cases": [c.__dict__.copy() for c in self.cases]}

    def table(self) -> str:
        """All cases, one per line."""
        rows = [f"{'graph':<10}{'batch':>6}{'length':>8}  {'compared':<34}{'max abs':>11}{'max rel':>11}"]
        for c in self.cases:
            rows.append(f"{c.graph:<10}{c.batch:>6}{'-' if c.length is None else c.length:>8}  {c.what:<34}"
                        f"{c.max_abs:>11.2e}{c.max_rel:>11.2e}")
        return "\n".join(rows)

    def __str__(self):
        status = "OK" if self.passed else "FAILED"
        batches = sorted({c.batch for c in self.cases})
        lengths = sorted({c.length for c in self.cases if c.length is not None})
        return (f"{status}: {len(self.cases)} cases (batch sizes {batches}, lengths {lengths}), "
                f"max abs error {self.max_abs:.2e}, max rel error {self.max_rel:.2e} (tolerance {self.atol:g} abs"
                + (f" + {self.rtol:g} rel)" if self.rtol else ")"))


def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])


def _errors(got, ref, atol, rtol=0.0):
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        raise VerificationError(f"shape mismatch: onnxruntime gives {got.shape}, predict gives {ref.shape}")
    if got.size == 0:
        return 0.0, 0.0
    d = np.abs(got - ref)
    d = np.where(np.isnan(got) & np.isnan(ref), 0.0, d)  # NaN where both are NaN is agreement
    d = np.where(np.isnan(d), np.inf, d)
    excess = float((d - rtol * np.abs(np.nan_to_num(ref))).max())
    return float(d.max()), float((d / (np.abs(ref) + atol)).max()), excess


class _StateGuard:
    """Save the carried states of stateful layers, restore them afterwards."""

    def __init__(self, model):
        self.layers = [layer for layer in model.layers if getattr(layer, "stateful", False)]
        self.saved = [layer.states for layer in self.layers]

    def reset(self):
        for layer in self.layers:
            layer.reset_states()

    def restore(self):
        for layer, s in zip(self.layers, self.saved, strict=True):
            layer.reset_states(s)


def _random_inputs(model, meta, B, T, rng):
    """x (and lengths for masked/length-input graphs) as ``model.predict`` takes them."""
    layers = model.layers
    ids = meta.get("input_dtype") == "int64"
    shape = tuple(model.input_shape)
    if ids:
        vocab = layers[0].input_dim
        x = rng.integers(1 if layers[0].mask_zero else 0, vocab, size=(B, T)).astype(np.int64)
    elif len(shape) == 1:
        x = rng.standard_normal((B, shape[0])).astype(np.float32)
    else:
        x = rng.standard_normal((B, T, shape[-1])).astype(np.float32)
    return x


def _variable_lengths(B, T, rng):
    L = rng.integers(0, T + 1, size=B)
    L[0] = T  # one full-length sample
    if B > 2:
        L[1] = 0  # one empty sample
    if B > 3:
        L[2] = min(T, 1)
    return L.astype(np.int64)


def _pad(model, x, L):
    """Trailing padding as the model's masking layer sees it (mask_value / id 0)."""
    first = model.layers[0]
    x = x.copy()
    mask_value = 0
    for layer in model.layers:
        if type(layer).__name__ == "Masking":
            mask_value = layer.mask_value
            break
    if type(first).__name__ == "Embedding":
        mask_value = 0
    t = np.arange(x.shape[1])[None, :]
    pad = t >= L[:, None]
    x[pad] = mask_value
    return x


def _as_list(y):
    return [np.asarray(a) for a in y] if isinstance(y, list) else [np.asarray(y)]


def _fixed_length(model, meta):
    """The model's fixed time length, or None when it takes any length."""
    shape = tuple(model.input_shape)
    if meta["input_dtype"] == "int64":
        return shape[0] if shape else None
    return shape[0] if len(shape) == 2 else None


def _default_cases(model, meta):
    shape = tuple(model.input_shape)
    if len(shape) == 1 and meta.get("input_dtype") != "int64":
        return [(1, None), (3, None), (5, None)], True
    fixed_T = _fixed_length(model, meta)
    if fixed_T is not None:
        return [(b, fixed_T) for b in (1, 3, 5)], False
    return [(b, t) for b in (1, 5) for t in (1, 11)] + [(3, 4), (2, 23)], False


def _feeds(sess, x, lengths=None, states=None):
    names = {i.name for i in sess.get_inputs()}
    feeds = {"x": x}
    if "lengths" in names:
        feeds["lengths"] = lengths.astype(np.int64)
    for i in sess.get_inputs():
        if i.name.startswith("state_"):
            feeds[i.name] = states[i.name]
    return feeds


def _zero_states(sess, B):
    return {i.name: np.zeros((B, i.shape[-1]), np.float32) for i in sess.get_inputs()
            if i.name.startswith("state_")}


def _verify_full(model, sess, meta, path, report, cases, no_time, rng, guard):
    has_lengths = meta["lengths"] != "none"
    length_input = "lengths" in {i.name for i in sess.get_inputs()}
    out_names = [o.name for o in sess.get_outputs()]
    stateful = any(n.startswith("state_") for n in (i.name for i in sess.get_inputs()))
    for B, T in cases:
        for variable in ((False, True) if has_lengths and not no_time else (False,)):
            x = _random_inputs(model, meta, B, T if T is not None else 1, rng)
            L = None
            kw = {}
            if variable:
                L = _variable_lengths(B, T, rng)
                if length_input:
                    kw["lengths"] = L
                if meta["lengths"].startswith("computed"):
                    x = _pad(model, x, L)
            elif length_input:
                L = np.full(B, T, np.int64)
            chunks = 2 if stateful else 1
            guard.reset()
            states = _zero_states(sess, B)
            for c in range(chunks):
                xc = x if c == 0 else _random_inputs(model, meta, B, T, rng)
                ref = _as_list(model.predict(xc, batch_size=B, **kw))
                got = sess.run(None, _feeds(sess, xc, L, states))
                res = dict(zip(out_names, got, strict=True))
                states = {n[: -len("_out")]: v for n, v in res.items() if n.endswith("_out")}
                for k, r in enumerate(ref):
                    name = out_names[k]
                    what = name + (" (lengths)" if variable else "") + (f" chunk {c + 1}" if chunks > 1 else "")
                    report.compare(path, B, T, what, res[name], r)


def _verify_streaming(model, sess, meta, path, report, cases, no_time, rng, guard):
    out_names = [o.name for o in sess.get_outputs()]
    padded = meta["lengths"] != "none"
    for (B, T), variable in [(c, v) for c in cases for v in ((False, True) if padded else (False,))]:
        T = 1 if T is None else T
        x = _random_inputs(model, meta, B, T, rng)
        if variable:
            x = _pad(model, x, _variable_lengths(B, T, rng))
        guard.reset()
        full = _as_list(model.predict(x, batch_size=B))
        states = _zero_states(sess, B)
        ys = []
        res = {}
        for t in range(T):
            xt = x if no_time else x[:, t]
            got = sess.run(None, _feeds(sess, np.ascontiguousarray(xt), None, states))
            res = dict(zip(out_names, got, strict=True))
            states = {n[: -len("_out")]: v for n, v in res.items() if n.endswith("_out")}
            ys.append(res["y"])
        y_ref = full[0]
        tag = " (padded)" if variable else ""
        if not no_time and y_ref.ndim == 3:  # a sequence output: every step
            report.compare(path, B, T, f"y, {T} steps vs predict" + tag, np.stack(ys, axis=1), y_ref)
        else:
            report.compare(path, B, T, "y after last step" + tag, ys[-1], y_ref)
            if not no_time and T > 2 and _fixed_length(model, meta) is None:  # a middle step vs the prefix
                t = T // 2
                guard.reset()
                pre = _as_list(model.predict(np.ascontiguousarray(x[:, : t + 1]), batch_size=B))[0]
                report.compare(path, B, t + 1, "y at a middle step vs prefix" + tag, ys[t], pre)
        for k, r in enumerate(full[1:], start=1):  # return_state outputs
            name = out_names[k]
            report.compare(path, B, T, f"{name} after last step" + tag, res[name], r)


def _graph_arrays(proto, path):
    """{name: TensorProto} of the graph's initializers and Constant node values."""
    out = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    out.setdefault(node.output[0], a.t)
    return out


def _model_weights(model):
    """[(label, graph name, float32 array)]: every weight array of ``model`` as the exporter writes it."""
    from ..layers.reshaping import TimeDistributed

    out = []
    for layer in model.layers:
        while isinstance(layer, TimeDistributed):  # the wrapped layer's converter writes its weights
            layer = layer.layer
        if getattr(layer, "cell", None) is not None:
            w = layer.onnx_weights() if layer.cell in ("rnn", "gru", "lstm") else {}
            if not {"W", "R", "Wb", "Rb"} <= set(w):
                continue  # other cells export derived tensors (IndRNN's diag(u), Jordan's Scan): outputs only
            out += [(f"{layer.name}/W", f"{layer.name}_W", w["W"]), (f"{layer.name}/R", f"{layer.name}_R", w["R"]),
                    (f"{layer.name}/Wb+Rb", f"{layer.name}_B", np.concatenate([w["Wb"], w["Rb"]], axis=1))]
            if w.get("P") is not None:
                out.append((f"{layer.name}/P", f"{layer.name}_P", w["P"]))
        else:
            for k, a in layer.params.items():
                out.append((f"{layer.name}/{k}", f"{layer.name}_{k}", a))
    return [(label, name, np.ascontiguousarray(a, dtype=np.float32)) for label, name, a in out]


def _same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _compare_weights(model, proto, path):
    """Every weight of ``model`` must be in the graph, bit for bit.

    Returns (number compared, list of problems); raises VerificationError for an unreadable tensor."""
    from onnx import numpy_helper

    tensors = _graph_arrays(proto, path)
    cache = {}

    def array(name):
        if name not in cache:
            try:
                cache[name] = np.ascontiguousarray(numpy_helper.to_array(tensors[name]))
            except Exception as exc:  # noqa: BLE001 - tampered tensor data
                raise VerificationError(f"{path}: graph tensor {name!r} cannot be read ({type(exc).__name__}: "
                                        f"{str(exc)[:120]})") from None
        return cache[name]

    n = 0
    problems = []
    for label, name, want in _model_weights(model):
        if name in tensors:
            got = array(name)
            if not _same_bits(got, want):
                if got.shape != want.shape or got.dtype != want.dtype:
                    detail = f"shape {got.shape} {got.dtype}, the model's is {want.shape} float32"
                else:
                    bad = got.view(np.uint32) != want.view(np.uint32)
                    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                    detail = (f"{int(bad.sum())} of {want.size} values differ, max abs difference "
                              f"{float(np.nanmax(np.where(bad, diff, 0))):.3g}")
                problems.append(f"{os.path.basename(path)}: graph weight {name!r} differs from the model's "
                                f"{label} ({detail})")
        elif not want.any():  # all zeros: the exporter may leave out an optional input (ONNX default 0)
            continue
        elif not any(_same_bits(array(t), want) for t in tensors if list(tensors[t].dims) == list(want.shape)):
            problems.append(f"{os.path.basename(path)}: the graph holds no copy of the model's weight {label} "
                            f"(shape {want.shape}): it differs from the model (another model's export, or tampered)")
        n += 1
    return n, problems


def _load_graph(p, check):
    """(proto, metadata) of an edgernn ONNX file, or VerificationError saying what is wrong."""
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: no such file")
    try:
        proto = onnx.load(p)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError, onnx errors ...
        raise VerificationError(f"{p}: not a readable ONNX file ({type(exc).__name__}: {str(exc)[:160]})") from None
    if check:
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as exc:  # noqa: BLE001 - ValidationError, InferenceError ...
            raise VerificationError(f"{p}: the ONNX checker refuses the graph ({type(exc).__name__}: "
                                    f"{str(exc)[:300]})") from None
    meta = {e.key: e.value for e in proto.metadata_props}
    missing = [k for k in ("graph", "input_dtype", "lengths") if k not in meta]
    if missing or meta["graph"] not in ("full", "streaming"):
        raise VerificationError(f"{p}: not written by edgernn.onnx.export (metadata "
                                f"{'lacks ' + str(missing) if missing else 'graph=' + repr(meta['graph'])})")
    return proto, meta


def verify(model, path, *, atol=1e-5, rtol=0.0, cases=None, seed=0, check=True):
    """Check an exported file and compare onnxruntime with ``model.predict``.

    Runs ``onnx.checker.check_model(full_check=True)``, then, on random inputs (standard
    normal features, or random token ids), compares the graph's outputs with
    ``model.predict`` at batch sizes 1 and 5 and lengths 1 and 11 (sizes used nowhere while
    building the graph; a model with a fixed time length is checked at that length):

    * full graphs: ``y`` (and ``return_state`` outputs); with Masking / ``mask_zero`` /
      a ``lengths`` input, also on variably padded batches including an empty and a
      full-length sample; stateful layers over two consecutive chunks with the state carried;
    * streaming graphs: stepped over the sequence from zero states, against the full-sequence
      prediction (every step for a sequence output, else the last step, and a middle step
      against ``predict`` on the prefix).

    Before running anything, every weight array of the model (``W``, ``R``, the biases
    ``Wb``/``Rb`` as ONNX' ``B`` and peepholes of SimpleRNN/GRU/LSTM layers, Dense kernels and
    biases, embeddings) must be in the graph bit for bit (as float32): a tampered or stale file is caught even where its
    outputs would differ by less than ``atol``.

    The carried states of stateful layers are restored afterwards.

    Parameters
    ----------
    model : Sequential
    path : str, path-like, or list of them
        Files written by :func:`export` (full and/or streaming graphs).
    atol : float
        Largest absolute difference accepted (float32 arithmetic).
    rtol : float
        Also accept differences up to ``rtol * |predict|`` (default 0: absolute only; useful for
        models whose outputs are large numbers).
    cases : list of (batch, length), optional
        Replace the default cases.
    seed : int
        Seed of the random inputs.
    check : bool
        Run the ONNX checker.

    Returns
    -------
    VerifyReport

    Raises
    ------
    VerificationError
        (a ``ValueError``) for every problem with the file: not a readable ONNX file, refused by
        the checker or by onnxruntime, not written by edgernn, weights that are not the model's,
        a graph that fails to run, or any difference above ``atol`` (the report is then attached
        as ``.report``).
    FileNotFoundError
        A path that does not exist.
    """
    from . import graph_model

    graph = graph_model.is_graph(model)
    model = graph_model.as_sequential(model)
    paths = [os.fspath(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    report = VerifyReport(paths=paths, opsets=[], atol=float(atol), rtol=float(rtol))
    rng = np.random.default_rng(seed)
    guard = _StateGuard(model)
    try:
        for p in paths:
            proto, meta = _load_graph(p, check)
            report.opsets.append(next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0))
            n, problems = _compare_weights(model, proto, p)
            report.weights_compared += n
            report.weight_problems += problems
            if graph:
                default, no_time = [(b, t) for b in (1, 5) for t in (1, 11)] + [(3, 4)], False
            else:
                default, no_time = _default_cases(model, meta)
            cs = list(cases) if cases is not None else default
            try:
                sess = _session(p)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's Fail / InvalidGraph / ...
                raise VerificationError(f"{p}: onnxruntime cannot load the graph ({type(exc).__name__}: "
                                        f"{str(exc)[:300]})") from None
            if "preprocessing" in meta:  # a forecaster's raw-value graph: against the forecast pipeline
                from .preprocess import verify_forecast

                verify_forecast(model, sess, meta, p, report, rng)
                continue
            try:
                if graph:
                    graph_model.verify_graph(model, sess, meta, p, report, cs, rng)
                elif meta["graph"] == "streaming":
                    _verify_streaming(model, sess, meta, p, report, cs, no_time, rng, guard)
                else:
                    _verify_full(model, sess, meta, p, report, cs, no_time, rng, guard)
            except (RuntimeError, KeyError, IndexError, ValueError, TypeError) as exc:
                # onnxruntime failing to run, renamed inputs/outputs, unexpected shapes: a tampered graph
                if report.weight_problems:
                    report.passed = False
                    raise VerificationError("; ".join(report.weight_problems), report) from None
                if isinstance(exc, VerificationError):
                    raise
                raise VerificationError(f"{p}: running the graph failed ({type(exc).__name__}: "
                                        f"{str(exc)[:300]})") from None
    finally:
        guard.restore()
    report.max_abs = max((c.max_abs for c in report.cases), default=0.0)
    report.max_rel = max((c.max_rel for c in report.cases), default=0.0)
    report.passed = all(c.ok for c in report.cases) and not report.weight_problems
    if report.weight_problems:
        outputs = ("" if all(c.ok for c in report.cases) else
                   f"; outputs differ too: max abs error {report.max_abs:.3g} > {atol:g}")
        raise VerificationError("; ".join(report.weight_problems) + outputs + "\n" + report.table(), report)
    if not report.passed:
        worst = max((c for c in report.cases if not c.ok), key=lambda c: c.max_abs)
        raise VerificationError(
            f"ONNX graph {worst.graph} differs from model.predict: max abs error {worst.max_abs:.3g} > {atol:g} "
            f"({worst.what}, batch {worst.batch}, length {worst.length})\n{report.table()}", report)
    return report


_verify = verify  # export() has a parameter of that name


def export_cli(argv=None) -> str:
    """``edgernn export model.npz model.onnx [--streaming] [--opset N] [--no-verify]`` as a function.

    Returns the text to print (the verification report); raises ``ValueError``/``OSError``
    with a one-line message on bad input.
    """
    import argparse

    from ..saving import load_model

    p = argparse.ArgumentParser(prog="edgernn export")
    p.add_argument("model")
    p.add_argument("output")
    p.add_argument("--streaming", action="store_true")
    p.add_argument("--opset", type=int, default=None)
    p.add_argument("--no-verify", action="store_true")
    args = p.parse_args(argv)
    model = load_model(args.model)
    path = export(model, args.output, streaming=args.streaming, opset=args.opset)
    if args.no_verify:
        return f"exported {path} (not verified)"
    report = verify(model, path)
    return f"exported {path}; verified against onnxruntime: {report}\n{report.table()}"
