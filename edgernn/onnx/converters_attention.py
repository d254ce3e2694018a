"""ONNX converters of the attention layers (``edgernn.layers.attention``).

``Attention`` / ``AdditiveAttention`` are multi-input converters:
``convert(ctx, layer, [query, value(, key)], return_attention_scores=None, use_causal_mask=None)``
with one :class:`Value` per input (time-major or batch-first, each with its own ``lengths``);
they return the output Value (batch-first, ``lengths`` = the query's) or, with the scores, a
list of two Values. The graph computes what the layer computes:

* scores: ``MatMul(q, Transpose(k))`` [``Mul`` scale] (dot), or
  ``Tanh(Unsqueeze(q, 2) + Unsqueeze(k, 1))`` reduced over the features (concat / additive,
  after the ``MatMul`` projections of ``AdditiveAttention(units=...)``);
* masks from the runtime shapes and lengths (``Shape``/``Range``/``Less``): key steps
  ``j < lengths`` of the value/key, causal ``j <= i`` (any Tq, Tv), combined with ``And``;
  ``Where(mask, s, s - 1e9)``, ``Softmax`` over the keys, ``Where(mask, w, 0)``;
* ``MatMul(w, value)`` and ``Where(i < query lengths, out, 0)``.

``AttentionPooling1D`` is a single-input converter for ``Sequential`` graphs; its mask comes
from ``ctx.lengths`` (Masking, ``mask_zero`` or the ``lengths`` graph input). Neither can run
in a streaming (one step) graph: they need the whole sequence.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..layers.attention import _BIG, AdditiveAttention, Attention, AttentionPooling1D
from .converters import UnsupportedError, Value, register

__all__ = ["convert_attention", "convert_attention_pooling"]

FLOAT = TensorProto.FLOAT


def _batch_first(g, v: Value, base: str) -> str:
    """(B, T, F) tensor name of a sequence Value (transposed when time-major)."""
    if v.time_axis == 0:
        return g.op("Transpose", [v.name], perm=[1, 0, 2], base=f"{base}_batch_first")
    return v.name


def _steps(g, x: str, axis: int, base: str) -> str:
    """int64 (T,): 0 .. T-1 for the size T of ``x`` along ``axis``, read at run time."""
    T = g.op("Gather", [g.op("Shape", [x], base=f"{base}_shape"), g.const(axis)], axis=0, base=f"{base}_T")
    return g.op("Range", [g.const(0), T, g.const(1)], base=f"{base}_range")


def _valid(g, x: str, lengths: str, base: str) -> str:
    """bool (B, T): ``t < lengths[b]`` for the batch-first sequence ``x`` (B, T, F)."""
    t = _steps(g, x, 1, base)
    return g.op("Less", [g.unsqueeze(t, [0]), g.unsqueeze(lengths, [1])], base=f"{base}_valid")


def _masked_softmax(g, scores: str, mask: str | None, axis: int, base: str) -> str:
    """Softmax over ``axis`` with ``-1e9`` on masked scores and exact zeros there afterwards."""
    if mask is None:
        return g.op("Softmax", [scores], axis=axis, base=f"{base}_softmax")
    minus = g.op("Sub", [scores, g.const(_BIG, np.float32)], base=f"{base}_bias")
    biased = g.op("Where", [mask, scores, minus], base=f"{base}_masked")
    w = g.op("Softmax", [biased], axis=axis, base=f"{base}_softmax")
    return g.op("Where", [mask, w, g.const(0.0, np.float32)], base=f"{base}_weights")


def _f32(a):
    return np.asarray(a, np.float32)


def _scores(ctx, layer, q: str, k: str, base: str) -> str:
    """(B, Tq, Tv) scores of batch-first q (B, Tq, Dq) and k (B, Tv, Dk)."""
    g, p = ctx.g, layer.params
    if isinstance(layer, AdditiveAttention):
        if layer.units is not None:
            W = g.initializer(f"{base}_query_kernel", _f32(p["query_kernel"]))
            U = g.initializer(f"{base}_key_kernel", _f32(p["key_kernel"]))
            q = g.op("MatMul", [q, W], base=f"{base}_qW")  # (B, Tq, units)
            k = g.op("MatMul", [k, U], base=f"{base}_kU")  # (B, Tv, units)
        pair = g.op("Add", [g.unsqueeze(q, [2]), g.unsqueeze(k, [1])], base=f"{base}_pair")  # (B, Tq, Tv, U)
        t = g.op("Tanh", [pair], base=f"{base}_tanh")
        if layer.use_scale:
            scale = g.initializer(f"{base}_scale", _f32(p["scale"]))
            return g.op("MatMul", [t, scale], base=f"{base}_scores")
        return g.op("ReduceSum", [t, g.const([-1])], keepdims=0, base=f"{base}_scores")
    if layer.score_mode == "dot":
        kt = g.op("Transpose", [k], perm=[0, 2, 1], base=f"{base}_key_t")
        s = g.op("MatMul", [q, kt], base=f"{base}_qk")  # (B, Tq, Tv)
        if layer.use_scale:
            s = g.op("Mul", [s, g.initializer(f"{base}_scale", _f32(p["scale"]))], base=f"{base}_scores")
        return s
    pair = g.op("Add", [g.unsqueeze(q, [2]), g.unsqueeze(k, [1])], base=f"{base}_pair")  # (B, Tq, Tv, D)
    if layer.use_scale:
        pair = g.op("Mul", [pair, g.initializer(f"{base}_scale", _f32(p["scale"]))], base=f"{base}_scaled")
    t = g.op("ReduceSum", [g.op("Tanh", [pair], base=f"{base}_tanh"), g.const([-1])], keepdims=0,
             base=f"{base}_tanh_sum")
    csw = g.initializer(f"{base}_concat_score_weight", _f32(p["concat_score_weight"]))
    return g.op("Mul", [t, csw], base=f"{base}_scores")


@register(Attention, AdditiveAttention)
def convert_attention(ctx, layer, x, return_attention_scores=None, use_causal_mask=None):
    """``Attention`` / ``AdditiveAttention`` on ``x = [query, value(, key)]`` (Values).

    Returns the output Value (B, Tq, Dv) batch-first with the query's lengths, or
    ``[output, weights (B, Tq, Tv)]``; a query without time axis gives (B, Dv) and (B, Tv).
    """
    g = ctx.g
    base = layer.name or type(layer).__name__.lower()
    if ctx.streaming:
        raise UnsupportedError(layer, "streaming graph", "attention needs the whole sequence of keys")
    if not isinstance(x, (list, tuple)) or len(x) not in (2, 3):
        raise UnsupportedError(layer, "inputs", "expects a list [query, value] or [query, value, key]")
    ret = layer.return_attention_scores if return_attention_scores is None else bool(return_attention_scores)
    causal = layer.use_causal_mask if use_causal_mask is None else bool(use_causal_mask)
    qv, vv = x[0], x[1]
    kv = x[2] if len(x) == 3 else vv
    for name, val in (("value", vv), ("key", kv)):
        if val.time_axis is None:
            raise UnsupportedError(layer, f"{name} without a time axis",
                                   "value and key are (batch, Tv, features)")
    squeeze = qv.time_axis is None
    if squeeze:
        q = g.unsqueeze(qv.name, [1], base=f"{base}_query_step")  # (B, 1, Dq)
    else:
        q = _batch_first(g, qv, f"{base}_query")
    v = _batch_first(g, vv, f"{base}_value")
    k = v if kv is vv else _batch_first(g, kv, f"{base}_key")
    scores = _scores(ctx, layer, q, k, base)  # (B, Tq, Tv)

    # key mask (B, 1, Tv) and causal mask (Tq, Tv), from the runtime sizes
    lkey = vv.lengths
    if len(x) == 3 and kv.lengths is not None:
        lkey = kv.lengths if lkey is None or lkey == kv.lengths else \
            g.op("Min", [lkey, kv.lengths], base=f"{base}_key_lengths")
    mask = None
    if lkey is not None:
        mask = g.unsqueeze(_valid(g, k, lkey, f"{base}_key"), [1], base=f"{base}_key_mask")
    if causal:
        i = _steps(g, q, 1, f"{base}_causal_q")
        j = _steps(g, k, 1, f"{base}_causal_k")
        c = g.op("LessOrEqual", [g.unsqueeze(j, [0]), g.unsqueeze(i, [1])], base=f"{base}_causal")
        mask = c if mask is None else g.op("And", [mask, c], base=f"{base}_mask")
    w = _masked_softmax(g, scores, mask, -1, base)  # (B, Tq, Tv)
    out = g.op("MatMul", [w, v], base=f"{base}_out")  # (B, Tq, Dv)
    if qv.lengths is not None and not squeeze:
        qkeep = g.unsqueeze(_valid(g, q, qv.lengths, f"{base}_query"), [2], base=f"{base}_query_mask")
        out = g.op("Where", [qkeep, out, g.const(0.0, np.float32)], base=f"{base}_out_masked")
    if squeeze:
        y = Value(g.squeeze(out, [1], base=f"{base}_out_step"), None)
        s = Value(g.squeeze(w, [1], base=f"{base}_scores_step"), None)
    else:
        y = Value(out, 1, qv.lengths)
        s = Value(w, 1, qv.lengths)
    return [y, s] if ret else y


@register(AttentionPooling1D)
def convert_attention_pooling(ctx, layer, x):
    """``AttentionPooling1D``: ``Tanh(x W + b) u_w``, masked ``Softmax`` over time (``ctx.lengths``),
    then the weighted sum ``MatMul`` -> (B, F)."""
    g, p = ctx.g, layer.params
    base = layer.name or "attention_pooling1d"
    if ctx.streaming:
        raise UnsupportedError(layer, "streaming graph", "attention pooling needs the whole sequence")
    if x.time_axis is None:
        raise UnsupportedError(layer, "input without a time axis",
                               "AttentionPooling1D needs (batch, time, features)")
    h = _batch_first(g, x, base)  # (B, T, F)
    z = g.op("MatMul", [h, g.initializer(f"{base}_kernel", _f32(p["kernel"]))], base=f"{base}_matmul")
    z = g.op("Add", [z, g.initializer(f"{base}_bias", _f32(p["bias"]))], base=f"{base}_bias_add")
    u = g.op("Tanh", [z], base=f"{base}_u")  # (B, T, U)
    context = g.initializer(f"{base}_context", _f32(p["context"]))
    e = g.op("MatMul", [u, context], base=f"{base}_scores")  # (B, T)
    valid = None if ctx.lengths is None else _valid(g, h, ctx.lengths, base)
    a = _masked_softmax(g, e, valid, 1, base)  # (B, T)
    s = g.op("MatMul", [g.unsqueeze(a, [1]), h], base=f"{base}_sum")  # (B, 1, F)
    return Value(g.squeeze(s, [1], base=f"{base}_out"), None)
