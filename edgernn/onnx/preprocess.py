"""Forecaster preprocessing as ONNX ops, so that an exported forecaster answers on raw values.

A model trained by ``edgernn train``/``edgernn demo`` (:mod:`edgernn.forecast`) does not see
raw values: each input window is taken in log space (for a positive series), expressed
relative to the window's last value and divided by a scale fitted on the training data; the
network's output is mapped back the same way. Those settings travel in
``model.meta["forecast"]``. They are a fixed function, so :func:`wrap` writes them into the
exported graph around the network (in float64, as :mod:`edgernn.forecast` computes them):

*Full graph*: input ``x`` float32 ``(batch, time, 1)`` of raw values, output ``y`` float32
``(batch, 1)``: the forecast ``horizon`` steps after the last value, computed from the last
``window`` values (what ``edgernn predict`` prints). Fewer than ``window`` values give NaN.

*Streaming graph*: input ``x`` float32 ``(batch, 1)``, one raw value per step, plus two states
that start at zero: ``state_window`` ``(batch, window)`` (the last ``window`` raw values) and
``state_count`` ``(batch, 1)`` (how many have been seen, up to ``window``). Each step re-runs
the network over the window (the inputs are relative to the newest value, so nothing can be
carried over) and outputs the forecast ``horizon`` steps ahead; NaN until ``window`` values have
been seen. Row ``t`` of ``export/run_onnx.py``'s output is then ``edgernn predict`` on rows
``0..t``.
"""

from __future__ import annotations

import json

import numpy as np
from onnx import TensorProto, helper, numpy_helper

__all__ = ["forecast_settings", "wrap", "verify_forecast"]

_I64_MAX = np.iinfo(np.int64).max


def forecast_settings(model):
    """The forecaster preprocessing of ``model`` (``model.meta["forecast"]``), or None.

    Returns
    -------
    dict or None
        ``window``, ``horizon``, ``log`` and ``scale``.

    Raises
    ------
    ValueError
        The settings are present but incomplete or invalid.
    """
    fc = (getattr(model, "meta", None) or {}).get("forecast")
    if fc is None:
        return None
    try:
        out = {"window": int(fc["window"]), "horizon": int(fc["horizon"]), "log": bool(fc["log"]),
               "scale": float(fc["scale"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"model.meta['forecast'] is incomplete or invalid ({exc!r}): cannot export its "
                         "preprocessing (pass preprocess=False to export the bare network)") from None
    if out["window"] < 1 or out["horizon"] < 1 or not np.isfinite(out["scale"]) or out["scale"] <= 0:
        raise ValueError(f"model.meta['forecast'] has invalid settings {out}")
    if tuple(model.input_shape)[-1] != 1:
        raise ValueError("model.meta['forecast'] is set but the model does not take one feature per step")
    out["column"] = fc.get("column")
    return out


def _const(name, value, dtype):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def wrap(core, fc, streaming):
    """Put the forecaster preprocessing around a full-sequence network graph.

    Parameters
    ----------
    core : onnx.ModelProto
        The network's full-sequence graph (input ``x`` (batch, time, 1), output ``y`` (batch, 1)).
    fc : dict
        :func:`forecast_settings`.
    streaming : bool
        Build the streaming form (window and count states) instead of the full form.

    Returns
    -------
    onnx.ModelProto
        With ``metadata_props`` updated (graph kind, input layout, states, ``preprocessing``).
    """
    g = core.graph
    if [i.name for i in g.input] != ["x"] or [o.name for o in g.output] != ["y"]:
        raise ValueError("forecaster preprocessing: the network graph must have the single input 'x' "
                         "and the single output 'y' (no return_state, stateful layers or lengths input)")
    w, s = fc["window"], fc["scale"]
    D, F = TensorProto.DOUBLE, TensorProto.FLOAT
    # the network reads "net_x" and writes "net_y"
    nodes = []
    for n in g.node:
        n2 = helper.make_node(n.op_type, [{"x": "net_x"}.get(i, i) for i in n.input],
                              [{"y": "net_y"}.get(o, o) for o in n.output], name=n.name, domain=n.domain)
        n2.attribute.extend(n.attribute)
        nodes.append(n2)
    inits = list(g.initializer) + [
        _const("pp_scale", s, np.float64), _const("pp_window_f", float(w), np.float32),
        _const("pp_nan", np.nan, np.float32), _const("pp_axis1", [1], np.int64),
        _const("pp_axis2", [2], np.int64), _const("pp_minus1", [-1], np.int64),
        _const("pp_end", [_I64_MAX], np.int64), _const("pp_one_f", 1.0, np.float32),
    ]
    pre = []
    if streaming:
        inits += [_const("pp_start1", [1], np.int64), _const("pp_w", [w], np.int64)]
        pre += [
            helper.make_node("Slice", ["state_window", "pp_start1", "pp_w", "pp_axis1"], ["pp_older"]),
            helper.make_node("Concat", ["pp_older", "x"], ["state_window_out"], axis=1),
            helper.make_node("Add", ["state_count", "pp_one_f"], ["pp_count1"]),
            helper.make_node("Min", ["pp_count1", "pp_window_f"], ["state_count_out"]),
            helper.make_node("Less", ["state_count_out", "pp_window_f"], ["pp_short"]),  # (batch, 1)
            helper.make_node("Unsqueeze", ["state_window_out", "pp_axis2"], ["pp_win3"]),
            helper.make_node("Cast", ["pp_win3"], ["pp_xd"], to=D),
        ]
    else:
        inits += [_const("pp_start_w", [-w], np.int64), _const("pp_one_i", 1, np.int64),
                  _const("pp_w_i", w, np.int64)]
        pre += [
            helper.make_node("Shape", ["x"], ["pp_shape"]),
            helper.make_node("Gather", ["pp_shape", "pp_one_i"], ["pp_time"], axis=0),
            helper.make_node("Less", ["pp_time", "pp_w_i"], ["pp_short"]),  # scalar
            helper.make_node("Slice", ["x", "pp_start_w", "pp_end", "pp_axis1"], ["pp_win3"]),
            helper.make_node("Cast", ["pp_win3"], ["pp_xd"], to=D),
        ]
    z = "pp_xd"
    if fc["log"]:
        pre.append(helper.make_node("Log", ["pp_xd"], ["pp_z"]))
        z = "pp_z"
    pre += [
        helper.make_node("Slice", [z, "pp_minus1", "pp_end", "pp_axis1"], ["pp_last"]),  # (batch, 1, 1)
        helper.make_node("Sub", [z, "pp_last"], ["pp_diff"]),
        helper.make_node("Div", ["pp_diff", "pp_scale"], ["pp_rel"]),
        helper.make_node("Cast", ["pp_rel"], ["net_x"], to=F),
    ]
    post = [
        helper.make_node("Cast", ["net_y"], ["pp_yd"], to=D),
        helper.make_node("Mul", ["pp_yd", "pp_scale"], ["pp_dy"]),
        helper.make_node("Squeeze", ["pp_last", "pp_axis2"], ["pp_last2"]),  # (batch, 1)
        helper.make_node("Add", ["pp_last2", "pp_dy"], ["pp_zy"]),
    ]
    zy = "pp_zy"
    if fc["log"]:
        post.append(helper.make_node("Exp", ["pp_zy"], ["pp_ey"]))
        zy = "pp_ey"
    post += [
        helper.make_node("Cast", [zy], ["pp_yf"], to=F),
        helper.make_node("Where", ["pp_short", "pp_nan", "pp_yf"], ["y"]),
    ]
    fl = TensorProto.FLOAT
    if streaming:
        inputs = [helper.make_tensor_value_info("x", fl, ["batch", 1]),
                  helper.make_tensor_value_info("state_window", fl, ["batch", w]),
                  helper.make_tensor_value_info("state_count", fl, ["batch", 1])]
        outputs = [helper.make_tensor_value_info("y", fl, ["batch", 1]),
                   helper.make_tensor_value_info("state_window_out", fl, ["batch", w]),
                   helper.make_tensor_value_info("state_count_out", fl, ["batch", 1])]
    else:
        inputs = [helper.make_tensor_value_info("x", fl, ["batch", "time", 1])]
        outputs = [helper.make_tensor_value_info("y", fl, ["batch", 1])]
    graph = helper.make_graph(pre + nodes + post, g.name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=list(core.opset_import), producer_name=core.producer_name,
                              ir_version=core.ir_version)
    model.producer_version = core.producer_version
    model.doc_string = core.doc_string + " with the forecaster preprocessing (raw values in and out)"
    meta = {e.key: e.value for e in core.metadata_props}
    pp = {"kind": "forecast", "window": w, "horizon": fc["horizon"], "log": fc["log"], "scale": s}
    meta.update({
        "graph": "streaming" if streaming else "full",
        "input_layout": ("one step: x (batch, 1), the series' next raw value" if streaming else
                         "batch-first: x (batch, time, 1), raw values (the last `window` are used)"),
        "input_features": "1",
        "input_shape": json.dumps(["batch", 1] if streaming else ["batch", "time", 1]),
        "input_domain": "positive" if fc["log"] else "finite",
        "outputs": json.dumps(["y"] + (["state_window_out", "state_count_out"] if streaming else [])),
        "output_meaning": f"forecast of the value {fc['horizon']} step(s) after the last input; "
                          f"NaN until {w} values have been seen",
        "preprocessing": json.dumps(pp),
        "states": json.dumps([
            {"input": "state_window", "output": "state_window_out", "shape": ["batch", w],
             "layer": "forecast preprocessing", "kind": "window", "initial": "zeros"},
            {"input": "state_count", "output": "state_count_out", "shape": ["batch", 1],
             "layer": "forecast preprocessing", "kind": "count", "initial": "zeros"}] if streaming else []),
        "lengths": "none",
    })
    if fc.get("column") is not None:
        meta["input_column"] = str(fc["column"])
    helper.set_model_props(model, meta)
    return model


def _reference(model, series_rows):
    """``edgernn predict`` on each row (a raw series): (batch, 1) float64, NaN when too short."""
    from ..forecast import forecast_next

    out = np.full((len(series_rows), 1), np.nan)
    for b, v in enumerate(series_rows):
        try:
            out[b, 0] = forecast_next(model, v)
        except ValueError:
            pass
    return out


def verify_forecast(model, sess, meta, path, report, rng):
    """Compare a forecaster graph with the edgernn forecast on random raw series.

    Errors are relative to ``max(1, |forecast|)`` (raw values can be large numbers).
    """
    pp = json.loads(meta["preprocessing"])
    w = int(pp["window"])
    log = bool(pp["log"])

    def series(B, T):
        steps = rng.normal(0.0, 0.05, size=(B, T))
        base = rng.uniform(50.0, 500.0, size=(B, 1))
        v = base * np.exp(np.cumsum(steps, axis=1)) if log else base * (1 + np.cumsum(steps, axis=1))
        return v.astype(np.float32)

    def rel(got, ref):
        got = np.asarray(got, np.float64)
        both = np.isnan(got) & np.isnan(ref)  # too short a history: NaN from both is agreement
        denom = np.maximum(1.0, np.abs(np.nan_to_num(ref)))
        return np.where(both, 0.0, got / denom), np.where(both, 0.0, ref / denom)

    if meta["graph"] == "streaming":
        for B in (1, 3):
            T = w + 5
            v = series(B, T)
            states = {i.name: np.zeros((B, int(i.shape[-1])), np.float32) for i in sess.get_inputs()
                      if i.name.startswith("state_")}
            ys = []
            for t in range(T):
                res = dict(zip([o.name for o in sess.get_outputs()],
                               sess.run(None, {"x": v[:, t: t + 1], **states}), strict=True))
                states = {n[: -len("_out")]: a for n, a in res.items() if n.endswith("_out")}
                ys.append(res["y"][:, 0])
            got = np.stack(ys, axis=1)  # (B, T)
            ref = np.concatenate([_reference(model, v[:, : t + 1].astype(np.float64)) for t in range(T)], axis=1)
            report.compare(path, B, T, "y per step vs forecast (relative)", *rel(got, ref))
    else:
        for B, T in ((1, w), (4, w + 7), (2, max(1, w - 1))):
            v = series(B, T)
            got = sess.run(None, {"x": v[:, :, None]})[0]
            ref = _reference(model, v.astype(np.float64))
            report.compare(path, B, T, "y vs forecast (relative)", *rel(got, ref))
