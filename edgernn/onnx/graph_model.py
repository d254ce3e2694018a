"""ONNX graphs of functional ``Model``\\ s (several inputs/outputs, layers with several inputs).

Each model input becomes a graph input of the same name (batch-first float32, or int64 token ids
for an input read by ``Embedding``); each model output a graph output (``y`` for a single output,
else the model's ``output_names``). Every layer call is converted by the layer's registered
converter in the order ``Model`` runs them; each tensor carries its own lengths (``Value.lengths``)
from ``Masking`` / ``Embedding(mask_zero=True)``. A model whose graph is a plain chain is exported
exactly like the equivalent ``Sequential`` (so it also has a streaming graph); other graphs have
no streaming form.
"""

from __future__ import annotations

import json

import numpy as np
from onnx import TensorProto

from .converters import ConversionContext, UnsupportedError, Value, get_converter
from .graph import GraphBuilder

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


def is_graph(model):
    """True for a functional Model that is not a plain chain (it needs the graph exporter)."""
    from ..graph import Model

    return isinstance(model, Model) and model._chain()[0] is None


def as_sequential(model):
    """A functional Model whose graph is a chain -> the equivalent Sequential (same layer objects)."""
    from ..graph import Model

    if not isinstance(model, Model):
        return model
    return model._as_sequential() or model


def _int_input(model, t):
    return model._is_int_input(t)


def onnx_output_names(model):
    return ["y"] if model._single_output else list(model.output_names)


def convert_model(model, *, streaming=False, opset, lengths_input=False):
    """Write the graph of a functional Model -> (GraphBuilder, ConversionContext, output names)."""
    if streaming:
        raise UnsupportedError(model, "streaming graph of a graph model",
                               "only chains of layers have a step-by-step form; export the full graph")
    if lengths_input:
        raise UnsupportedError(model, "lengths_input on a graph model",
                               "masks come from Masking / Embedding(mask_zero=True) layers")
    g = GraphBuilder(opset)
    ctx = ConversionContext(g=g, graph_mode=True)
    vals = {}
    ids_inputs = set()
    for t in model._inputs:
        shape = t.sample_shape
        if _int_input(model, t):
            if len(shape) != 1:
                raise UnsupportedError(model, f"token-id input {t.name!r} of shape {shape}")
            vals[id(t)] = Value(g.add_input(t.name, INT64, ["batch", "time"]), 1)
            ids_inputs.add(t.name)
        elif len(shape) == 2:
            vals[id(t)] = Value(g.add_input(t.name, FLOAT, ["batch", f"time_{t.name}", shape[-1]]), 1)
        elif len(shape) == 1:
            vals[id(t)] = Value(g.add_input(t.name, FLOAT, ["batch", shape[0]]), None)
        else:
            raise UnsupportedError(model, f"input {t.name!r} of sample shape {shape}")
    for nd in model._nodes:
        layer = nd.layer
        ins = [vals[id(s)] for s in nd.inputs]
        kw = dict(nd.kwargs)
        if nd.n_state:
            kw["initial_state"] = ins[nd.n_main:]
        conv = get_converter(layer)
        ctx.is_last = False
        ctx.input_kind = "ids" if ins[0].name in ids_inputs else "float"
        ctx.input_name = ins[0].name
        if getattr(layer, "multi_input", False):
            ctx.lengths = next((v.lengths for v in ins[:nd.n_main] if v.lengths is not None), None)
            out = conv(ctx, layer, ins[:nd.n_main], **kw)
        else:
            ctx.lengths = ins[0].lengths
            out = conv(ctx, layer, ins[0], **kw)
            first = out[0] if isinstance(out, list) else out
            if first.lengths is None and first.time_axis is not None:
                first.lengths = ctx.lengths
        outs = out if isinstance(out, list) else [out]
        if len(outs) != len(nd.outputs):
            raise UnsupportedError(layer, f"converter returned {len(outs)} outputs, the layer has {len(nd.outputs)}")
        for t, v in zip(nd.outputs, outs, strict=True):
            vals[id(t)] = v
    names = onnx_output_names(model)
    for t, name in zip(model._outputs, names, strict=True):
        v = ctx.batch_first(vals[id(t)])
        shape = ["batch"] + [("time" if d is None else d) for d in t.sample_shape]
        g.add_output(name, v.name, FLOAT, shape)
    return g, ctx, names


def meta_of(model, ctx, names, opset):
    """The metadata ``build_model`` stores for a graph model."""
    inputs = []
    for t in model._inputs:
        ids = _int_input(model, t)
        inputs.append({"name": t.name, "dtype": "int64" if ids else "float32",
                       "shape": ["batch"] + [("time" if d is None else d) for d in t.sample_shape]})
    return {
        "graph": "full",
        "model_kind": "functional",
        "inputs": json.dumps(inputs),
        "input_name": ",".join(t.name for t in model._inputs),
        "input_layout": "batch-first: one graph input per model input (see 'inputs')",
        "input_dtype": "float32",
        "outputs": json.dumps(names),
        "states": json.dumps([{"input": s.input, "output": s.output, "shape": ["batch", s.units],
                               "layer": s.layer, "kind": s.kind, "initial": "zeros"} for s in ctx.states]),
        "lengths": "computed in the graph (Masking / mask_zero)" if ctx.lengths is not None or any(
            type(nd.layer).__name__ in ("Masking",) or getattr(nd.layer, "mask_zero", False) for nd in model._nodes)
        else "none",
        "notes": json.dumps(ctx.notes),
        "opset": str(opset),
    }


# ---- verification -----------------------------------------------------------------------------------
def _random_inputs(model, B, T, rng, pad):
    """One array per model input (input k has length T + k, so lengths differ between inputs) and,
    when ``pad``, trailing padding in the inputs that feed Masking / Embedding(mask_zero)."""
    xs = []
    for k, t in enumerate(model._inputs):
        shape = t.sample_shape
        Tk = shape[0] if shape[0] is not None else T + k
        if _int_input(model, t):
            emb = next(nd.layer for nd in model._nodes if nd.inputs[0] is t)
            lo = 1 if getattr(emb, "mask_zero", False) else 0
            x = rng.integers(lo, emb.input_dim, size=(B, Tk)).astype(np.int64)
            if pad and lo:
                L = _lengths(B, Tk, rng)
                x[np.arange(Tk)[None, :] >= L[:, None]] = 0
        elif len(shape) == 1:
            x = rng.standard_normal((B, shape[0])).astype(np.float32)
        else:
            x = rng.standard_normal((B, Tk, shape[-1])).astype(np.float32)
            masking = next((nd.layer for nd in model._nodes if nd.inputs[0] is t
                            and type(nd.layer).__name__ == "Masking"), None)
            if pad and masking is not None:
                L = _lengths(B, Tk, rng)
                x[np.arange(Tk)[None, :] >= L[:, None]] = masking.mask_value
        xs.append(x)
    return xs


def _lengths(B, T, rng):
    L = rng.integers(1, T + 1, size=B)
    L[0] = T
    if B > 2:
        L[2] = 1
    return L


def verify_graph(model, sess, meta, path, report, cases, rng):
    """Compare onnxruntime with ``model.predict`` on random inputs for every case ``(B, T)``."""
    names = json.loads(meta["outputs"])
    padded = meta.get("lengths", "none") != "none"
    for B, T in cases:
        for pad in ((False, True) if padded else (False,)):
            xs = _random_inputs(model, B, 1 if T is None else T, rng, pad)
            ref = model.predict(xs if len(xs) > 1 else xs[0], batch_size=B)
            ref = ref if isinstance(ref, list) else [ref]
            got = sess.run(names, {t.name: x for t, x in zip(model._inputs, xs, strict=True)})
            for name, a, r in zip(names, got, ref, strict=True):
                report.compare(path, B, T, name + (" (padded)" if pad else ""), a, np.asarray(r))
