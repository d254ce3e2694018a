"""Validate the test oracle itself: tests/naive.py against onnxruntime and the ONNX reference.

onnxruntime runs in float32 (it has no float64 RNN kernels), so the tolerance there is ~1e-5;
``onnx.reference.ReferenceEvaluator`` runs in float64 but only for the options it implements
(no sequence_lens, activations, clip or input_forget), so it is compared tightly on those.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

try:
    from . import naive, onnx_util
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import naive
    import onnx_util

CELLS = ["rnn", "gru", "lstm"]
ORT_TOL = dict(rtol=1e-5, atol=1e-5)


def _compare_ort(cell, kw, opset=None, tol=ORT_TOL):
    """naive (float64) vs onnxruntime (float32); Y_h/Y_c only on rows with length > 0."""
    expected = getattr(naive, cell)(**kw)
    got = onnx_util.run_ort(cell, opset=opset, **kw)
    B = kw["X"].shape[0]
    rows = onnx_util.valid_rows(kw.get("lengths"), B)
    names = ["Y", "Y_h", "Y_c"]
    np.testing.assert_allclose(got[0], expected[0], err_msg="Y", **tol)
    for name, g, e in zip(names[1 : len(got)], got[1:], expected[1:], strict=True):
        np.testing.assert_allclose(g[rows], e[rows], err_msg=name, **tol)


def _clip_for(seed):
    return [None, 0.8, 2.0][seed % 3]


@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("cell", CELLS)
def test_naive_matches_onnxruntime_random(cell, seed):
    # every direction, random sizes 1..4, nonzero biases, h0/c0, lengths incl. 0 and T,
    # peepholes, input_forget, lbr 0/1, clip, random activations with default or explicit alpha/beta
    direction = ["forward", "reverse", "bidirectional"][seed % 3]
    kw = naive.random_case(cell, 1000 + seed, direction=direction, clip=_clip_for(seed // 3))
    _compare_ort(cell, kw)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cell", CELLS)
def test_naive_matches_onnxruntime_defaults(cell, seed):
    # default activations, optional inputs absent
    kw = naive.random_case(cell, 2000 + seed, activations=None, alpha_beta=None, h0=seed % 2 == 0,
                           biases=seed % 3 != 0, lengths="random" if seed % 2 else None)
    _compare_ort(cell, kw)


@pytest.mark.parametrize("cell", CELLS)
def test_naive_matches_onnxruntime_opset14(cell):
    for seed in range(3):
        kw = naive.random_case(cell, 3000 + seed, direction=["forward", "reverse", "bidirectional"][seed])
        _compare_ort(cell, kw, opset=14)


@pytest.mark.parametrize("name", list(naive.ACTIVATION_NAMES.values()))
def test_each_activation_rnn_vs_onnxruntime(name):
    for explicit, seed in ((False, 0), (True, 1)):
        kw = naive.random_case("rnn", 4000 + seed, B=3, T=4, H=3, I=2, direction="bidirectional",
                               activations=[name, name], alpha_beta="explicit" if explicit else None)
        _compare_ort("rnn", kw)


@pytest.mark.parametrize("name", list(naive.ACTIVATION_NAMES.values()))
def test_each_activation_in_every_lstm_gru_slot(name):
    for slot in range(3):
        acts = ["Sigmoid", "Tanh", "Tanh"]
        acts[slot] = name
        kw = naive.random_case("lstm", 5000 + slot, B=2, T=3, H=2, I=2, direction="forward",
                               activations=acts, alpha_beta="explicit", peephole=True, input_forget=False)
        _compare_ort("lstm", kw)
    for slot in range(2):
        acts = ["Sigmoid", "Tanh"]
        acts[slot] = name
        for lbr in (False, True):
            kw = naive.random_case("gru", 5100 + slot, B=2, T=3, H=2, I=2, direction="reverse",
                                   activations=acts, alpha_beta="explicit", linear_before_reset=lbr)
            _compare_ort("gru", kw)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("clip", [0.3, 1.0])
def test_clip_vs_onnxruntime(cell, clip):
    # small clips so that many pre-activations are clipped
    for seed in range(4):
        kw = naive.random_case(cell, 6000 + seed, B=3, T=4, H=3, I=3, clip=clip, scale=1.2,
                               direction=["forward", "reverse", "bidirectional", "forward"][seed])
        trace = naive.forward_trace(cell, **kw)
        assert any(np.any(np.abs(e["pre"]) > clip) for e in trace if e["clipped"])
        _compare_ort(cell, kw)


def test_input_forget_and_peephole_vs_onnxruntime():
    for seed, (pp, inf) in enumerate([(True, True), (True, False), (False, True)]):
        for direction in ("forward", "reverse", "bidirectional"):
            kw = naive.random_case("lstm", 7000 + seed, B=3, T=4, H=3, I=2, direction=direction,
                                   peephole=pp, input_forget=inf)
            _compare_ort("lstm", kw)


def test_onnxruntime_reads_alpha_in_activation_order():
    # onnx_util relies on this: one alpha per activation that uses it, all directions in order.
    kw = naive.random_case("rnn", 8000, B=2, T=3, H=3, I=2, direction="bidirectional", lengths=None,
                           activations=["Tanh", "ThresholdedRelu"], alpha_beta=None)
    model, feeds = onnx_util.make_model("rnn", **kw, activation_alpha=[0.5])
    attrs = {a.name: a for a in model.graph.node[0].attribute}
    assert list(attrs["activation_alpha"].floats) == [0.5]
    _compare_ort("rnn", dict(kw, activation_alpha=[0.5]))
    # the forward-direction Tanh does not consume the value
    ya = naive.rnn(**dict(kw, activation_alpha=[0.5]))[0]
    yb = naive.rnn(**dict(kw, activation_alpha=[0.0]))[0]
    assert np.max(np.abs(ya - yb)) > 1e-3


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("cell", CELLS)
def test_naive_matches_reference_evaluator_float64(cell, seed):
    # the reference evaluator is exact float64 but ignores lengths/activations/clip/input_forget
    kw = naive.random_case(cell, 9000 + seed, direction=["forward", "reverse", "bidirectional"][seed % 3],
                           lengths=None, activations=None, alpha_beta=None, input_forget=False,
                           h0=seed % 4 != 3, biases=seed % 4 != 2)
    expected = getattr(naive, cell)(**kw)
    got = onnx_util.run_reference(cell, dtype=np.float64, **kw)
    for name, g, e in zip(["Y", "Y_h", "Y_c"][: len(got)], got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12, err_msg=name)


# --- self-consistency of the oracle's length semantics ------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lengths_equal_truncated_sequences(cell, direction):
    kw = naive.random_case(cell, 10000, B=4, T=5, H=3, I=2, direction=direction, lengths=[5, 0, 3, 1])
    out = getattr(naive, cell)(**kw)
    for b, n in enumerate(kw["lengths"]):
        one = {k: v for k, v in kw.items() if k != "lengths"}
        one["X"] = kw["X"][b : b + 1, :max(n, 1)]
        for k in ("h0", "c0"):
            if k in kw:
                one[k] = kw[k][b : b + 1]
        ref = getattr(naive, cell)(**one)
        Y = out[0][b]
        assert np.all(Y[n:] == 0.0)  # padded steps output zeros
        if n == 0:  # state = initial state
            np.testing.assert_array_equal(out[1][b], kw["h0"][b])
            if cell == "lstm":
                np.testing.assert_array_equal(out[2][b], kw["c0"][b])
            continue
        np.testing.assert_allclose(Y[:n], ref[0][0], rtol=0, atol=1e-14)
        for o, r in zip(out[1:], ref[1:], strict=True):
            np.testing.assert_allclose(o[b], r[0], rtol=0, atol=1e-14)


def test_input_forget_ignores_forget_gate_parameters():
    kw = naive.random_case("lstm", 11000, B=2, T=3, H=2, I=2, direction="bidirectional", peephole=True,
                           input_forget=True)
    H = 2
    out = naive.lstm(**kw)
    kw2 = dict(kw)
    for k in ("W", "R", "Wb", "Rb"):
        kw2[k] = kw[k].copy()
        kw2[k][:, 2 * H : 3 * H] += 1.0  # forget-gate rows
    kw2["P"] = kw["P"].copy()
    kw2["P"][:, 2 * H :] += 1.0  # forget peephole
    for a, b in zip(out, naive.lstm(**kw2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_activation_defaults_table():
    # ONNX operator defaults (tests/naive.py and edgernn agree on these)
    d = naive.ACTIVATION_DEFAULTS
    assert d["leakyrelu"] == (0.01, None)
    assert d["hardsigmoid"] == (0.2, 0.5)
    assert d["elu"] == (1.0, None)
    assert d["thresholdedrelu"] == (1.0, None)
    assert d["affine"] == (1.0, 0.0)
    assert d["scaledtanh"] == (1.0, 1.0)
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(naive.activation("Softplus", x), np.log1p(np.exp(x)), rtol=1e-14)
    np.testing.assert_allclose(naive.activation("HardSigmoid", x), np.clip(0.2 * x + 0.5, 0, 1))
    np.testing.assert_allclose(naive.activation("ScaledTanh", x, 2.0, 0.5), 2.0 * np.tanh(0.5 * x))
