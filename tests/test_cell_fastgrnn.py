"""FastRNN / FastGRNN specifics (the conformance suite in test_cells.py covers the rest):
initialisation, the equations at layer level, low rank (gradients chained to the factors,
stream and export), sparsity by iterative hard thresholding, the model size, option errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import edgernn
from edgernn import Sequential
from edgernn.layers import Dense, FastGRNN, FastRNN


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def test_initialisation_edgeml_logits_and_options():
    g = Sequential([FastGRNN(8, input_shape=(None, 3))], seed=0).layers[0]
    assert g.params["zeta"].shape == (1, 1) and g.params["zeta"][0, 0] == 1.0 and g.params["nu"][0, 0] == -4.0
    assert set(g.params) == {"W", "U", "bz", "bh", "zeta", "nu"}
    r = Sequential([FastRNN(8, input_shape=(None, 3))], seed=0).layers[0]
    assert r.params["alpha"][0, 0] == -1.0 and r.params["beta"][0, 0] == 1.0
    e = Sequential([FastRNN(64, input_shape=(None, 32), alpha_init=-3, beta_init=3, kernel_initializer="edgeml_normal",
                            recurrent_initializer="edgeml_normal", bias_initializer="ones")], seed=0).layers[0]
    assert e.params["alpha"][0, 0] == -3.0 and e.params["beta"][0, 0] == 3.0
    assert abs(e.params["W"].std() - 0.1) < 0.01 and abs(e.params["U"].std() - 0.1) < 0.01
    assert np.all(e.params["b"] == 1.0)


def test_layer_follows_the_equations():
    m = Sequential([FastGRNN(5, input_shape=(None, 3), return_sequences=True)], seed=1, dtype="float64")
    la = m.layers[0]
    rng = np.random.default_rng(0)
    for k in ("bz", "bh", "zeta", "nu"):
        la.params[k][...] = rng.standard_normal(la.params[k].shape)
    X = rng.standard_normal((1, 4, 3))
    Y = m.predict(X)
    p = {k: v[0] for k, v in la.params.items()}
    h = np.zeros(5)
    for t in range(4):
        a = p["W"] @ X[0, t] + p["U"] @ h
        z = 1 / (1 + np.exp(-(a + p["bz"])))
        c = np.tanh(a + p["bh"])
        h = (_sig(p["zeta"][0]) * (1 - z) + _sig(p["nu"][0])) * c + z * h
        np.testing.assert_allclose(Y[0, t], h, atol=1e-12)


@pytest.mark.parametrize("cls", [FastRNN, FastGRNN])
def test_low_rank_gradients_chain_to_the_factors(cls):
    m = Sequential([cls(4, wrank=2, urank=3, input_shape=(None, 3)), Dense(1)], dtype="float64",
                   seed=2)
    la = m.layers[0]
    assert la.params["W1"].shape == (1, 4, 2) and la.params["W2"].shape == (1, 2, 3)
    assert la.params["U1"].shape == (1, 4, 3) and la.params["U2"].shape == (1, 3, 4)
    assert "W" not in la.params and "U" not in la.params
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2, 5, 3))
    wy = rng.standard_normal((2, 1))

    def loss():
        return float((m.predict(X) * wy).sum())

    y = m.layers[1].forward(la.forward(X, need_grad=True), need_grad=True)
    la.backward(m.layers[1].backward(np.broadcast_to(wy, y.shape).copy()))
    eps = 1e-6
    for name in ("W1", "W2", "U1", "U2"):
        arr = la.params[name]
        for idx in list(np.ndindex(arr.shape))[:6]:
            old = arr[idx]
            arr[idx] = old + eps
            up = loss()
            arr[idx] = old - eps
            down = loss()
            arr[idx] = old
            assert abs((up - down) / (2 * eps) - la.grads[name][idx]) < 1e-7, (name, idx)


def test_low_rank_streams_and_exports(tmp_path):
    m = Sequential([FastGRNN(6, wrank=2, urank=3, input_shape=(None, 3), return_sequences=True), Dense(2)], seed=4)
    X = np.random.default_rng(5).standard_normal((2, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(m.stream(batch_size=2).run(X), m.predict(X), atol=2e-6)
    pytest.importorskip("onnxruntime")
    import edgernn.onnx as eo

    eo.export(m, tmp_path / "lr.onnx")
    assert eo.verify(m, tmp_path / "lr.onnx").passed
    m.save(tmp_path / "lr.npz")
    np.testing.assert_array_equal(edgernn.load_model(tmp_path / "lr.npz").predict(X), m.predict(X))


def test_sparsity_iterative_hard_thresholding_and_model_size():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((16, 5, 4)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)
    dense = Sequential([FastGRNN(8, input_shape=(None, 4)), Dense(1)], seed=7)
    la = FastGRNN(8, input_shape=(None, 4), sparsity=0.25, sparsity_warmup=2, sparsity_freeze=4)
    m = Sequential([la, Dense(1)], seed=7)
    m.compile(loss="mse", optimizer="adam")
    m.fit(X, y, epochs=1, batch_size=16, verbose=0)  # update 1: warm-up, still dense
    assert np.count_nonzero(la.params["W"]) == la.params["W"].size
    m.fit(X, y, epochs=3, batch_size=16, verbose=0)  # updates 2-4: thresholded, support fixed at 4
    assert np.count_nonzero(la.params["W"]) == math.ceil(0.25 * 32)
    assert np.count_nonzero(la.params["U"]) == math.ceil(0.25 * 64)
    support = la.params["U"] != 0
    m.fit(X, y, epochs=3, batch_size=16, verbose=0)  # fixed support: zeros stay zero
    assert np.all(la.params["U"][~support] == 0)
    full = dense.layers[0].model_size_bytes()
    assert full == 4 * (32 + 64 + 8 + 8 + 2)
    assert la.model_size_bytes() == 4 * (8 + 16 + 8 + 8 + 2)
    assert la.model_size_bytes(index_bytes=2) == 4 * (8 + 8 + 2) + 6 * (8 + 16)
    low = Sequential([FastGRNN(8, wrank=2, urank=2, input_shape=(None, 4))], seed=0).layers[0]
    assert low.model_size_bytes() == 4 * (8 * 2 + 2 * 4 + 8 * 2 + 2 * 8 + 8 + 8 + 2)
    assert "model size" in m.summary(print_fn=lambda s: None).lower()


@pytest.mark.parametrize("kw, match", [(dict(wrank=0), "wrank"), (dict(urank=1.5), "urank"),
                                       (dict(sparsity=0.0), "sparsity"), (dict(sparsity=1.5), "sparsity"),
                                       (dict(sparsity=0.5, sparsity_warmup=5, sparsity_freeze=2), "sparsity_freeze"),
                                       (dict(zeta_init=float("nan")), "zeta_init"), (dict(clip=1.0), "clip")])
def test_option_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        FastGRNN(4, **kw)
