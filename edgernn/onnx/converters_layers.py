"""ONNX converters of the layers around the recurrent ones: ``Conv1D``, ``LayerNormalization``,
``TimeDistributed``, ``RepeatVector``, ``Flatten``, ``Reshape``, global pooling and the merge
layers (imported at the end of :mod:`edgernn.onnx.converters`, which holds the registry).

Conventions (see :mod:`edgernn.onnx.converters`): sequence tensors may arrive time-major
(``time_axis=0``, between recurrent nodes) or batch-first (``time_axis=1``); converters that
need a fixed layout call ``ctx.batch_first``. ``ctx.lengths`` is the int64 (B,) valid steps of
a single-input layer's input: ``Conv1D`` replaces it by its output lengths, the layers that
make a new time axis (``RepeatVector``, ``Reshape``) clear it, the others keep it. Multi-input (merge) converters receive a list of :class:`Value` and set
``lengths`` on the Value they return.

Layers that need the whole sequence (convolution, pooling, reshaping over time) are refused in
streaming graphs; ``LayerNormalization`` over the features and ``TimeDistributed`` of a layer
working on one step's vector stream fine.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..layers.conv import Conv1D
from ..layers.merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from ..layers.normalization import LayerNormalization
from ..layers.pooling import GlobalAveragePooling1D, GlobalMaxPooling1D
from ..layers.reshaping import Flatten, RepeatVector, Reshape, TimeDistributed
from .converters import UnsupportedError, Value, _activation, _keep_mask, get_converter, register

__all__ = []

_INT64_MAX = np.iinfo(np.int64).max


def _reduce(g, op: str, x: str, axes, keepdims=0, base=None) -> str:
    """``Reduce{Sum,Mean,Max}`` over ``axes`` in the opset's spelling (axes an input: ReduceSum
    from opset 13, the others from 18)."""
    if op == "ReduceSum" or g.opset >= 18:
        return g.op(op, [x, g.const(list(axes))], keepdims=keepdims, base=base or op.lower())
    return g.op(op, [x], axes=list(axes), keepdims=keepdims, base=base or op.lower())


def _slice(g, x: str, start: int, end: int = _INT64_MAX, base=None) -> str:
    """``x[start:end]`` of a 1-D tensor."""
    return g.op("Slice", [x, g.const([start]), g.const([end]), g.const([0])], base=base or "slice")


def _no_streaming(ctx, layer, why="it needs the whole sequence"):
    if ctx.streaming:
        raise UnsupportedError(layer, f"{type(layer).__name__} in a streaming graph", why)


def _sequence(ctx, layer, x):
    """``x`` batch-first (B, T, ...); refuses an input without a time axis."""
    if x.time_axis is None:
        raise UnsupportedError(layer, "input without a time axis", "it needs (batch, time, features)")
    return ctx.batch_first(x)


# -------------------------------------------------------------------------------------------
# Conv1D
# -------------------------------------------------------------------------------------------
@register(Conv1D)
def convert_conv1d(ctx, layer, x):
    """``Conv1D``: ``Conv`` on (B, C, T) with the kernel ``Transpose``d from Keras' (k, C, F) layout
    (the stored initializer is the layer's array as it is), ``pads`` for causal/same (stride 1)
    or a ``Pad`` computed from the input length (same, stride > 1), dilations, strides, then the
    activation. Lengths: the layer's rule, with int64 arithmetic in the graph."""
    _no_streaming(ctx, layer, "a convolution needs a window of past steps (causal streaming is not implemented)")
    g = ctx.g
    base = layer.name or "conv1d"
    k, s, d = layer.kernel_size, layer.strides, layer.dilation_rate
    xb = _sequence(ctx, layer, x).name  # (B, T, C)
    if layer._zero_padding() and ctx.lengths is not None:  # same, stride 1: padded steps zeroed first
        xb = g.op("Mul", [xb, _keep_mask(ctx, Value(xb, 1), base)], base=f"{base}_zero_pad")
    xc = g.op("Transpose", [xb], perm=[0, 2, 1], base=f"{base}_nct")  # (B, C, T)
    kernel = g.initializer(f"{base}_kernel", np.asarray(layer.params["kernel"], np.float32))  # (k, C, F)
    w = g.op("Transpose", [kernel], perm=[2, 1, 0], base=f"{base}_w")  # (F, C, k)
    pads = [0, 0]
    if layer.padding == "causal":
        pads = [layer.span - 1, 0]
    elif layer.padding == "same" and s == 1:
        total = layer.span - 1
        pads = [total // 2, total - total // 2]
    elif layer.padding == "same":  # TensorFlow's split depends on T mod s: computed in the graph
        T = g.dim(xc, 2, base=f"{base}_T")  # (1,)
        T_out = g.op("Div", [g.op("Add", [T, g.const([s - 1])]), g.const([s])], base=f"{base}_T_out")
        need = g.op("Sub", [g.op("Add", [g.op("Mul", [g.op("Sub", [T_out, g.const([1])]), g.const([s])]),
                                         g.const([layer.span])]), T], base=f"{base}_pad_need")
        total = g.op("Max", [need, g.const([0])], base=f"{base}_pad_total")
        left = g.op("Div", [total, g.const([2])], base=f"{base}_pad_left")
        right = g.op("Sub", [total, left], base=f"{base}_pad_right")
        pads_t = g.op("Concat", [g.const([0, 0]), left, g.const([0, 0]), right], axis=0, base=f"{base}_pads")
        xc = g.op("Pad", [xc, pads_t], mode="constant", base=f"{base}_pad")
    ins = [xc, w]
    if layer.use_bias:
        ins.append(g.initializer(f"{base}_bias", np.asarray(layer.params["bias"], np.float32)))
    y = g.op("Conv", ins, kernel_shape=[k], strides=[s], dilations=[d], pads=pads, base=f"{base}_conv")
    y = g.op("Transpose", [y], perm=[0, 2, 1], base=f"{base}_btf")  # (B, T_out, F)
    if ctx.lengths is not None and not (s == 1 and layer.padding != "valid"):
        if layer.padding == "valid":  # max(L - span + s, 0) // s
            num = g.op("Max", [g.op("Add", [ctx.lengths, g.const(s - layer.span)]), g.const(0)],
                       base=f"{base}_lengths")
        else:  # ceil(L / s)
            num = g.op("Add", [ctx.lengths, g.const(s - 1)], base=f"{base}_lengths")
        ctx.lengths = num if s == 1 else g.op("Div", [num, g.const(s)], base=f"{base}_lengths")
    return Value(_activation(ctx, layer, layer.activation, y), 1)


# -------------------------------------------------------------------------------------------
# LayerNormalization
# -------------------------------------------------------------------------------------------
@register(LayerNormalization)
def convert_layer_normalization(ctx, layer, x):
    """``LayerNormalization``: the ``LayerNormalization`` operator (opset >= 17) for trailing
    axes, else ``ReduceMean``/``Sqrt``/... primitives. ``gamma``/``beta`` are stored as the
    layer holds them."""
    g = ctx.g
    base = layer.name or "layer_normalization"
    rank = len(layer.input_shape) + 1
    axes = layer._axes(rank)
    shape = tuple(int(layer.input_shape[a - 1]) for a in axes)  # of gamma and beta
    view = [int(layer.input_shape[i - 1]) if i in axes else 1 for i in range(axes[0], rank)]
    if ctx.streaming and x.time_axis is None and rank == 3:  # one step (B, F) of a (B, T, F) layer
        if axes != (2,):
            raise UnsupportedError(layer, f"axis={layer.axis} in a streaming graph", "it normalizes over time")
        rank, axes = 2, (1,)
    elif axes != (rank - 1,):
        x = ctx.batch_first(x) if x.time_axis is not None else x
    trailing = axes == tuple(range(axes[0], rank))
    gamma = (g.initializer(f"{base}_gamma", np.asarray(layer.params["gamma"], np.float32)) if layer.scale
             else g.const(np.ones(shape), np.float32))
    beta = (g.initializer(f"{base}_beta", np.asarray(layer.params["beta"], np.float32)) if layer.center
            else None)
    if trailing and g.opset >= 17:
        ins = [x.name, gamma] + ([beta] if beta is not None else [])
        y = g.op("LayerNormalization", ins, axis=axes[0], epsilon=layer.epsilon, base=f"{base}_ln")
        return Value(y, x.time_axis)
    mean = _reduce(g, "ReduceMean", x.name, axes, keepdims=1, base=f"{base}_mean")
    xc = g.op("Sub", [x.name, mean], base=f"{base}_centered")
    var = _reduce(g, "ReduceMean", g.op("Mul", [xc, xc], base=f"{base}_sq"), axes, keepdims=1, base=f"{base}_var")
    std = g.op("Sqrt", [g.op("Add", [var, g.const(layer.epsilon, np.float32)], base=f"{base}_var_eps")],
               base=f"{base}_std")
    y = g.op("Div", [xc, std], base=f"{base}_normalized")
    if layer.scale:
        gv = gamma if trailing else g.op("Reshape", [gamma, g.const(view)], base=f"{base}_gamma_view")
        y = g.op("Mul", [y, gv], base=f"{base}_scaled")
    if beta is not None:
        bv = beta if trailing else g.op("Reshape", [beta, g.const(view)], base=f"{base}_beta_view")
        y = g.op("Add", [y, bv], base=f"{base}_out")
    return Value(y, x.time_axis)


# -------------------------------------------------------------------------------------------
# pooling
# -------------------------------------------------------------------------------------------
@register(GlobalAveragePooling1D, GlobalMaxPooling1D)
def convert_global_pooling(ctx, layer, x):
    """Global average / max pooling over time, honouring ``ctx.lengths``: the average is
    ``ReduceSum(x * keep) / max(ReduceSum(keep), 1)``, the maximum a ``ReduceMax`` over the valid steps
    (``Where(keep, x, -inf)``); a sample of length 0 gives zeros."""
    _no_streaming(ctx, layer)
    g = ctx.g
    base = layer.name or "global_pooling"
    if x.time_axis is None:
        raise UnsupportedError(layer, "input without a time axis", "it needs (batch, time, features)")
    ta = x.time_axis
    avg = isinstance(layer, GlobalAveragePooling1D)
    if ctx.lengths is None:
        y = _reduce(g, "ReduceMean" if avg else "ReduceMax", x.name, [ta], base=f"{base}_pool")  # (B, F)
    else:
        keep = _keep_mask(ctx, x, base)  # (B, T, 1) or (T, B, 1) float
        if avg:
            total = _reduce(g, "ReduceSum", g.op("Mul", [x.name, keep], base=f"{base}_masked"), [ta],
                            base=f"{base}_sum")
            n = _reduce(g, "ReduceSum", keep, [ta], base=f"{base}_n")  # (B, 1) valid steps (<= T)
            n = g.op("Max", [n, g.const(1.0, np.float32)], base=f"{base}_n_1")
            y = g.op("Div", [total, n], base=f"{base}_pool")
        else:
            keep_b = g.op("Cast", [keep], to=TensorProto.BOOL, base=f"{base}_keep_b")
            xm = g.op("Where", [keep_b, x.name, g.const(-np.inf, np.float32)], base=f"{base}_masked")
            m = _reduce(g, "ReduceMax", xm, [ta], base=f"{base}_max")
            y = g.op("Where", [ctx.nonempty(), m, g.const(0.0, np.float32)], base=f"{base}_pool")
    ctx.lengths = None  # the pooled output has no padding (the layer's compute_lengths)
    if layer.keepdims:
        return Value(g.unsqueeze(y, [1], base=f"{base}_keepdims"), 1)  # (B, 1, F)
    return Value(y, None)  # (B, F)


# -------------------------------------------------------------------------------------------
# reshaping
# -------------------------------------------------------------------------------------------
@register(RepeatVector)
def convert_repeat_vector(ctx, layer, x):
    """``RepeatVector``: ``Expand`` of (B, 1, F) to (B, n, F); the new sequence has no padding."""
    _no_streaming(ctx, layer, "it makes a sequence out of one vector")
    if x.time_axis is not None:
        raise UnsupportedError(layer, "input with a time axis", "RepeatVector takes (batch, features)")
    g = ctx.g
    base = layer.name or "repeat_vector"
    y = g.op("Expand", [g.unsqueeze(x.name, [1], base=f"{base}_step"), g.const([1, layer.n, 1])], base=base)
    ctx.lengths = None
    return Value(y, 1)


@register(Flatten)
def convert_flatten(ctx, layer, x):
    """``Flatten``: ONNX ``Flatten(axis=1)`` of the batch-first tensor."""
    _no_streaming(ctx, layer)
    x = ctx.batch_first(x) if x.time_axis is not None else x
    return Value(ctx.g.op("Flatten", [x.name], axis=1, base=layer.name or "flatten"), None)


@register(Reshape)
def convert_reshape(ctx, layer, x):
    """``Reshape``: ONNX ``Reshape`` of the batch-first tensor to ``[0, *target_shape]`` (0 keeps the
    batch size); the result has no padding."""
    _no_streaming(ctx, layer)
    x = ctx.batch_first(x) if x.time_axis is not None else x
    y = ctx.g.op("Reshape", [x.name, ctx.g.const([0] + list(layer.target_shape))], base=layer.name or "reshape")
    ctx.lengths = None
    return Value(y, 1 if len(layer.target_shape) >= 2 else None)  # (B, T, ...) batch-first


@register(TimeDistributed)
def convert_time_distributed(ctx, layer, x):
    """``TimeDistributed``: the steps folded into the batch with ``Reshape`` (B*T, ...), the inner
    layer's converter (without lengths), and the inverse ``Reshape``; the lengths pass on.

    In a streaming graph (one step (B, F)) the inner layer's converter is applied to the step
    directly, for inner layers taking one vector per step."""
    g = ctx.g
    base = layer.name or "time_distributed"
    inner = layer.layer
    convert = get_converter(inner)
    saved = ctx.lengths
    if ctx.streaming:
        if len(layer.input_shape) != 2 or getattr(inner, "cell", None) is not None:
            raise UnsupportedError(layer, "TimeDistributed of a sequence layer in a streaming graph")
        y = convert(ctx, inner, Value(x.name, None))
        ctx.lengths = saved
        return Value(y.name, None)
    xb = _sequence(ctx, layer, x).name  # (B, T, *s)
    shape = g.op("Shape", [xb], base=f"{base}_shape")
    x2 = g.op("Reshape", [xb, g.op("Concat", [g.const([-1]), _slice(g, shape, 2)], axis=0, base=f"{base}_bt_s")],
              base=f"{base}_fold")  # (B*T, *s)
    ctx.lengths = None
    y2 = ctx.batch_first(convert(ctx, inner, Value(x2, 1 if len(layer.input_shape) == 3 else None)))
    ctx.lengths = saved
    out_shape = g.op("Concat", [_slice(g, shape, 0, 2), _slice(g, g.op("Shape", [y2.name]), 1)], axis=0,
                     base=f"{base}_out_shape")
    return Value(g.op("Reshape", [y2.name, out_shape], base=f"{base}_unfold"), 1)  # (B, T, *out)


# -------------------------------------------------------------------------------------------
# merge layers (several inputs)
# -------------------------------------------------------------------------------------------
def _merge_inputs(ctx, layer, xs):
    """The inputs batch-first, at the common rank (new axes after the batch axis, as Keras)."""
    if not isinstance(xs, (list, tuple)) or len(xs) != len(layer.input_shape):
        raise UnsupportedError(layer, "inputs", f"expects a list of {len(layer.input_shape)} Values")
    ranks = [len(s) + 1 for s in layer.input_shape]
    R = max(ranks)
    out = []
    for v, r in zip(xs, ranks, strict=True):
        name = ctx.batch_first(v).name if v.time_axis is not None else v.name
        if r < R:
            name = ctx.g.unsqueeze(name, list(range(1, 1 + R - r)), base=f"{layer.name or 'merge'}_expand")
        out.append(name)
    return out, R


def _min_lengths(ctx, xs, base):
    given = [v.lengths for v in xs if v.lengths is not None]
    if not given:
        return None
    return given[0] if len(given) == 1 else ctx.g.op("Min", given, base=f"{base}_lengths")


_MERGE_OPS = {Add: "Sum", Average: "Mean", Maximum: "Max", Minimum: "Min"}


@register(Add, Subtract, Multiply, Average, Maximum, Minimum)
def convert_merge(ctx, layer, xs):
    """Elementwise merges: ``Sum``, ``Sub``, ``Mul``, ``Mean``, ``Max``, ``Min`` (ONNX broadcasting
    is numpy's, which is Keras' once the ranks agree). Lengths: the minimum of the inputs'."""
    _no_streaming(ctx, layer, "merge layers are exported in full graphs only")
    g = ctx.g
    base = layer.name or type(layer).__name__.lower()
    names, R = _merge_inputs(ctx, layer, xs)
    if type(layer) is Subtract:
        y = g.op("Sub", names, base=base)
    elif type(layer) is Multiply:
        y = names[0] if len(names) == 1 else g.op("Mul", names[:2], base=base)
        for n in names[2:]:
            y = g.op("Mul", [y, n], base=base)
        if len(names) == 1:
            y = g.op("Identity", [y], base=base)
    else:
        y = g.op(_MERGE_OPS[type(layer)], names, base=base)
    return Value(y, 1 if R >= 3 else None, _min_lengths(ctx, xs, base))


@register(Concatenate)
def convert_concatenate(ctx, layer, xs):
    """``Concatenate``: ``Concat`` of the batch-first inputs. Along the time axis only the last
    input may carry lengths; the output's are ``T_0 + ... + T_{n-2} + lengths_{n-1}``."""
    _no_streaming(ctx, layer, "merge layers are exported in full graphs only")
    g = ctx.g
    base = layer.name or "concatenate"
    names, R = _merge_inputs(ctx, layer, xs)
    ax = layer._resolve_axis(R)
    y = g.op("Concat", names, axis=ax, base=base)
    if ax == 1 and R >= 3:
        if any(v.lengths is not None for v in xs[:-1]):
            raise UnsupportedError(layer, "lengths on an input other than the last of a concatenation along time",
                                   "the padding would be inside the output sequence")
        lengths = xs[-1].lengths
        if lengths is not None:
            for n in names[:-1]:
                lengths = g.op("Add", [lengths, g.op("Gather", [g.op("Shape", [n]), g.const(1)], axis=0)],
                               base=f"{base}_lengths")
    else:
        lengths = _min_lengths(ctx, xs, base)
    return Value(y, 1 if R >= 3 else None, lengths)

