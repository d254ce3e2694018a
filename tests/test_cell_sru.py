"""What is specific to SRU (the conformance suite, tests/test_cells.py, covers the rest):
the sru package's initialisation, the identity vs projected highway, ``g`` options, the
exported Scan body's size, clear errors."""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest

import edgernn.functional as F
from edgernn import Sequential
from edgernn.cells.sru import highway_scale_for
from edgernn.layers import SRU, Dense


def test_paper_initialisation_projected_highway():
    I, H = 40, 30  # I != H: W has a fourth block W_h
    m = Sequential([SRU(H, input_shape=(None, I), highway_bias=-1.0)], seed=0)
    p = m.layers[0].params
    W, v, b = p["W"][0], p["v"][0], p["b"][0]
    assert W.shape == (4 * H, I) and v.shape == (2 * H,) and b.shape == (2 * H,)
    lim = math.sqrt(3.0 / I)  # uniform, variance 1/I
    scale = math.sqrt(1 + 2 * math.exp(-1.0))
    assert np.abs(W[:H]).max() <= lim and np.abs(W[:H]).max() > 0.9 * lim
    np.testing.assert_allclose(np.abs(W[H:3 * H]).max(), lim * math.sqrt(0.5), rtol=0.1)  # gates / sqrt(2)
    assert np.abs(W[H:3 * H]).max() <= lim * math.sqrt(0.5) + 1e-7
    np.testing.assert_allclose(np.abs(W[3 * H:]).max(), lim * scale, rtol=0.1)  # highway rescaled
    assert np.abs(v).max() <= math.sqrt(1.5) and np.abs(v).max() > 0.8 * math.sqrt(1.5)  # variance 1/2
    np.testing.assert_array_equal(b[:H], 0.0)  # b_f
    np.testing.assert_array_equal(b[H:], np.float32(-1.0))  # b_r = highway_bias


def test_identity_highway_and_scale():
    H = 5
    layer = SRU(H, input_shape=(None, H), return_sequences=True)
    m = Sequential([layer], seed=1)
    assert layer.params["W"].shape == (1, 3 * H, H)
    assert layer.highway_scale == pytest.approx(math.sqrt(3.0)) == pytest.approx(highway_scale_for(0.0))
    assert SRU(H, rescale=False).highway_scale == 1.0
    X = np.random.default_rng(0).standard_normal((2, 4, H)).astype(np.float32)
    p = {k: v.astype(np.float64) for k, v in layer.params.items()}
    Yn = np.zeros((2, 4, H))
    for bi in range(2):
        s = {"h": np.zeros(H), "c": np.zeros(H)}
        for t in range(4):
            Yn[bi, t], s = naive.sru_step(X[bi, t].astype(np.float64), s, p, 0, ("Affine",),
                                          highway_scale=math.sqrt(3.0))
    np.testing.assert_allclose(m.predict(X), Yn, atol=2e-5)


def test_tanh_g_matches_the_oracle_and_gradients_flow():
    rng = np.random.default_rng(3)
    B, T, I, H = 2, 5, 3, 4
    W, v, b = rng.standard_normal((1, 4 * H, I)), rng.standard_normal((1, 2 * H)), rng.standard_normal((1, 2 * H))
    X = rng.standard_normal((B, T, I))
    Y, Yh, Yc = F.sru(X, W, v, b, activation="Tanh")
    Yn, fin = naive.cell_run("sru", X, dict(W=W, v=v, b=b), {}, {"h": H, "c": H}, H, acts=("Tanh",))
    np.testing.assert_allclose(Y, Yn, atol=1e-12)
    np.testing.assert_allclose(Yc, fin["c"], atol=1e-12)
    # the identity highway with a scale == a projected highway whose W_h is scale * I
    Wi = rng.standard_normal((1, 3 * H, H))
    Xi = rng.standard_normal((B, T, H))
    W4 = np.concatenate([Wi, 1.5 * np.eye(H)[None]], axis=1)
    np.testing.assert_allclose(F.sru(Xi, Wi, v, b, highway_scale=1.5)[0], F.sru(Xi, W4, v, b)[0], atol=1e-12)
    Y1, _, _, c3 = F.sru(Xi, Wi, v, b, highway_scale=1.5, train=True)
    Y4, _, _, c4 = F.sru(Xi, W4, v, b, train=True)
    g3, g4 = F.sru_backward(c3, np.ones_like(Y1)), F.sru_backward(c4, np.ones_like(Y4))
    assert g3["W"].shape == Wi.shape
    np.testing.assert_allclose(g3["W"], g4["W"][:, :3 * H], atol=1e-12)
    np.testing.assert_allclose(g3["X"], g4["X"], atol=1e-12)


def test_errors_name_the_argument():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 3, 4))
    v = rng.standard_normal((1, 6))
    with pytest.raises(ValueError, match=r"\bW\b.*input size == hidden"):
        F.sru(X, rng.standard_normal((1, 9, 4)), v)  # 3H rows but I != H
    with pytest.raises(ValueError, match="highway_scale"):
        F.sru(X, rng.standard_normal((1, 12, 4)), v, highway_scale=2.0)  # only for the identity highway
    with pytest.raises(ValueError, match="highway_bias"):
        SRU(3, highway_bias=float("nan"))
    with pytest.raises(TypeError, match="recurrent_activation"):
        SRU(3, recurrent_activation="sigmoid")


def test_scan_body_is_small(tmp_path):
    onnx = pytest.importorskip("onnx")
    import edgernn.onnx as eo

    m = Sequential([SRU(6, input_shape=(None, 3)), Dense(1)], seed=0)
    eo.export(m, tmp_path / "s.onnx")
    g = onnx.load(tmp_path / "s.onnx").graph
    scans = [n for n in g.node if n.op_type == "Scan"]
    assert len(scans) == 1
    body = onnx.helper.get_attribute_value(scans[0].attribute[0])
    ops = [n.op_type for n in body.node]  # the step's 10 nodes + one Identity per body output (scan.py)
    assert len(ops) - ops.count("Identity") == 10 and ops.count("Identity") <= 3, ops
    mt = Sequential([SRU(6, input_shape=(None, 3), activation="tanh", return_sequences=True)], seed=0)
    eo.export(mt, tmp_path / "t.onnx")
    assert eo.verify(mt, tmp_path / "t.onnx").passed
