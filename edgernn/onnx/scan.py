"""The generic export of a cell with no native ONNX node: its step in a ``Scan``.

A cell module provides ``onnx_step(g, layer, d, x, states, base) -> (y, new_states)``, writing
one step of direction ``d`` as graph nodes: ``x`` (B, I) and each state (B, width) in, the
step's output (B, O) and the new states out. This module wraps it:

- full sequence: a ``Scan`` over the time-major input (T, B, I) whose body is that step; with
  ``sequence_lens`` a second scan input carries a validity mask and the body holds the state
  and outputs zeros on padded steps (what the native nodes do); the reverse direction runs
  over each sequence's valid part (``ReverseSequence`` before and after) or, without lengths,
  uses Scan's own reverse directions;
- streaming graph: the step itself, once.

Optional hooks of the cell module, for a cell whose step reads more than ``x_t`` or whose
input-only work should run once for all steps (QRNN):

- ``onnx_pre(g, layer, d, xt, base)``: full graph, the time-major input (T, B, I) of direction
  ``d`` (each sequence already reversed for a backward direction, so it starts at t = 0) ->
  the Scan input (T, B, I'). With it, a reverse direction without lengths is reversed
  explicitly (Slice) instead of by Scan's directions.
- ``onnx_extra_states(layer)`` -> {name: width} and ``onnx_stream_pre(g, layer, x, extra,
  base)`` -> (x', {name: new value}): streaming graph, extra carried states (graph inputs and
  outputs ``state_{k}_<name>`` next to the cell's own) and the step's input from them.

Both return what :func:`edgernn.onnx.graph.make_rnn_node` returns, so the rest of the
recurrent converter (length-0 rows, state inputs/outputs, merge modes) is shared.
onnxruntime spends roughly 0.7 us per body node per step: keep bodies small (see
benchmarks/README.md for the measured cost).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from .graph import GraphBuilder

FLOAT = TensorProto.FLOAT


def _zeros_state(g, like_bt, width, base):
    """(B, width) zeros, B read off ``like_bt`` (a (T, B, .) tensor) at run time."""
    B = g.dim(like_bt, 1, base=f"{base}_B")
    shape = g.op("Concat", [B, g.const([width])], axis=0, base=f"{base}_zshape")
    return g.op("ConstantOfShape", [shape], value=helper.make_tensor("zero", FLOAT, [1], [0.0]), base=f"{base}_zeros")


def _flip_time(g, xt, base):
    """Reverse a time-major tensor along time (Slice with step -1)."""
    return g.op("Slice", [xt, g.const([-1]), g.const([np.iinfo(np.int64).min]), g.const([0]), g.const([-1])],
                base=base)


def _body(g, mod, layer, d, names, widths, O, masked, base):
    """The Scan body graph of direction ``d``."""
    gb = GraphBuilder(g.opset)
    gb._names = g._names  # one namespace with the outer graph: no shadowing

    def fresh(name):  # a name unused in the graph and its bodies, left for add_input/add_output to reserve
        name = gb.unique(name)
        gb._names.discard(name)
        return name

    states = {n: gb.add_input(fresh(f"{base}_{n}_prev"), FLOAT, ["batch", w]) for n, w in zip(names, widths, strict=True)}
    x = gb.add_input(fresh(f"{base}_x_t"), FLOAT, ["batch", None])
    valid = gb.add_input(fresh(f"{base}_valid_t"), FLOAT, ["batch", 1]) if masked else None
    y, new = mod.onnx_step(gb, layer, d, x, states, f"{base}_d{d}")
    if masked:
        cond = gb.op("Cast", [valid], to=TensorProto.BOOL, base=f"{base}_cond")
        new = {n: gb.op("Where", [cond, new[n], states[n]], base=f"{base}_{n}_hold") for n in names}
        y = gb.op("Where", [cond, y, gb.const(0.0, np.float32)], base=f"{base}_y_masked")
    for n, w in zip(names, widths, strict=True):
        gb.add_output(fresh(f"{base}_{n}_next"), new[n], FLOAT, ["batch", w])
    gb.add_output(fresh(f"{base}_y_t"), y, FLOAT, ["batch", O])
    return helper.make_graph(gb.nodes, gb.unique(f"{base}_body"), gb.inputs, gb.outputs, gb.initializers)


def make_step_nodes(ctx, layer, spec, x, init, xt=None, sequence_lens=None, base="cell"):
    """Write the cell of ``layer`` with its module's ``onnx_step``.

    Parameters
    ----------
    ctx : ConversionContext
    layer : RecurrentLayer
    spec : edgernn.cells.Cell
    x : str
        Streaming graphs: the step input (B, I). Full graphs: ignored (use ``xt``).
    init : dict
        Initial state per state name: (D, B, width) tensors, or missing (zeros).
    xt : str
        Full graphs: time-major input (T, B, I).
    sequence_lens : str, optional
        int32 (B,) lengths.

    Returns
    -------
    list of str
        ``[Y, *finals]``: Y (T, D, B, O), each final state (D, B, width).
    """
    g = ctx.g
    mod = spec.mod()
    names = spec.state_names
    O = int(layer.units)
    widths = [O] * len(names)  # every state of a Scan-exported cell has the output's width
    D = 2 if layer.direction == "bidirectional" else 1
    if ctx.streaming:
        states = {n: g.squeeze(init[n], [0], base=f"{base}_{n}_in") for n in names}
        extra = list(mod.onnx_extra_states(layer)) if hasattr(mod, "onnx_extra_states") else []
        if hasattr(mod, "onnx_stream_pre"):
            x, new_extra = mod.onnx_stream_pre(g, layer, x, {n: g.squeeze(init[n], [0], base=f"{base}_{n}_in")
                                                              for n in extra}, base)
        y, new = mod.onnx_step(g, layer, 0, x, states, base)
        if extra:
            new.update(new_extra)
        finals = [g.unsqueeze(new[n], [0], base=f"{base}_{n}_fin") for n in list(names) + extra]
        return [g.unsqueeze(g.unsqueeze(y, [0]), [0], base=f"{base}_Y")] + finals
    masked = sequence_lens is not None
    valid = None
    if masked:
        T = g.dim(xt, 0, base=f"{base}_T")
        steps = g.op("Range", [g.const(0), g.squeeze(T, [0]), g.const(1)], base=f"{base}_steps")  # (T,)
        L = g.op("Cast", [sequence_lens], to=TensorProto.INT64, base=f"{base}_L")
        v = g.op("Less", [g.unsqueeze(steps, [1]), g.unsqueeze(L, [0])], base=f"{base}_lt")  # (T, B)
        valid = g.unsqueeze(g.op("Cast", [v], to=FLOAT, base=f"{base}_validf"), [2], base=f"{base}_valid")
    Ys, fins = [], {n: [] for n in names}
    for d in range(D):
        reverse = layer.direction == "reverse" or d == 1
        s0 = []
        for n in names:
            if n in init:
                s0.append(g.op("Gather", [init[n], g.const(d)], axis=0, base=f"{base}_{n}0_d{d}"))
            else:
                s0.append(_zeros_state(g, xt, O, f"{base}_{n}0_d{d}"))
        xin = xt
        pre = hasattr(mod, "onnx_pre")
        flip = reverse and not masked and pre  # the pre-step must see the reversed sequence
        if reverse and masked:
            xin = g.op("ReverseSequence", [xt, g.op("Cast", [sequence_lens], to=TensorProto.INT64)],
                       batch_axis=1, time_axis=0, base=f"{base}_xrev")
        elif flip:
            xin = _flip_time(g, xt, f"{base}_xflip_d{d}")
        if pre:
            xin = mod.onnx_pre(g, layer, d, xin, f"{base}_pre_d{d}")
        body = _body(g, mod, layer, d, names, widths, O, masked, f"{base}_scan{d}")
        attrs = dict(body=body, num_scan_inputs=2 if masked else 1)
        if reverse and not masked and not flip:
            attrs.update(scan_input_directions=[1], scan_output_directions=[1])
        outs = g.op("Scan", s0 + [xin] + ([valid] if masked else []), n_out=len(names) + 1,
                    base=f"{base}_scan{d}", **attrs)
        Yd = outs[-1]  # (T, B, O)
        if flip:
            Yd = _flip_time(g, Yd, f"{base}_yflip_d{d}")
        if reverse and masked:
            Yd = g.op("ReverseSequence", [Yd, g.op("Cast", [sequence_lens], to=TensorProto.INT64)],
                      batch_axis=1, time_axis=0, base=f"{base}_yrev")
        Ys.append(g.unsqueeze(Yd, [1], base=f"{base}_Y_d{d}"))
        for n, o in zip(names, outs[:-1], strict=True):
            fins[n].append(g.unsqueeze(o, [0], base=f"{base}_{n}_d{d}"))
    Y = Ys[0] if D == 1 else g.op("Concat", Ys, axis=1, base=f"{base}_Y")
    finals = [fins[n][0] if D == 1 else g.op("Concat", fins[n], axis=0, base=f"{base}_{n}_fin") for n in names]
    return [Y] + finals
