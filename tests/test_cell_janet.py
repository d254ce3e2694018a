"""What is specific to JANET (the conformance suite, tests/test_cells.py, covers the rest):
the paper's initialisation, ``beta``, the native LSTM export, the layer's options."""

from __future__ import annotations

import naive
import numpy as np
import pytest

import edgernn
import edgernn.functional as F
from edgernn import Sequential
from edgernn.layers import JANET, Dense


def _params(rng, D=1, I=3, H=4):
    return (rng.standard_normal((D, 2 * H, I)) * 0.5, rng.standard_normal((D, 2 * H, H)) * 0.5,
            rng.standard_normal((D, 2 * H)) * 0.5)


def test_chrono_initialisation_and_default_bias():
    H = 64
    m = Sequential([JANET(H, chrono_t_max=200, input_shape=(None, 2))], seed=0)
    b = m.layers[0].params["b"][0]
    assert b[:H].min() >= 0.0 and b[:H].max() <= np.log(199.0)  # log(U[1, T_max - 1])
    assert b[:H].std() > 0.5  # spread over the range, not a constant
    np.testing.assert_array_equal(b[H:], 0.0)  # candidate bias
    m = Sequential([JANET(H, input_shape=(None, 2))], seed=0)  # no chrono: b_f = 1 (the reference code)
    b = m.layers[0].params["b"][0]
    np.testing.assert_array_equal(b[:H], 1.0)
    np.testing.assert_array_equal(b[H:], 0.0)
    assert set(m.layers[0].params) == {"W", "U", "b"}
    assert m.layers[0].params["U"].shape == (1, 2 * H, H) and m.layers[0].params["W"].shape == (1, 2 * H, 2)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
def test_beta_matches_the_equations(beta):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, 5, 3))
    W, U, b = _params(rng)
    h0 = rng.standard_normal((2, 1, 4))
    Y, Yh = F.janet(X, W, U, b, h0, beta=beta)
    Yn, fin = naive.cell_run("janet", X, {"W": W, "U": U, "b": b}, {"h": h0}, {"h": 4}, 4)
    if beta == 1.0:
        np.testing.assert_allclose(Y, Yn, atol=1e-12)
    h = h0[:, 0].copy()
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for t in range(5):
        a = X[:, t] @ W[0].T + h @ U[0].T + b[0]
        h = sig(a[:, :4]) * h + (1 - sig(a[:, :4] - beta)) * np.tanh(a[:, 4:])
        np.testing.assert_allclose(Y[:, t, 0], h, atol=1e-12)
    np.testing.assert_allclose(Yh[:, 0], h, atol=1e-12)


def test_beta_gradient_paths_float64():
    """Finite differences at beta != 1 (the conformance suite runs beta = 1)."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((2, 4, 2))
    W, U, b = _params(rng, I=2, H=3)
    Y, Yh, cache = F.janet(X, W, U, b, beta=0.3, train=True)
    wY = rng.standard_normal(Y.shape)
    g = F.janet_backward(cache, wY)
    eps = 1e-6
    for name, arr in (("U", U), ("b", b)):
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = (F.janet(X, W, U, b, beta=0.3)[0] * wY).sum()
            arr[idx] = old - eps
            down = (F.janet(X, W, U, b, beta=0.3)[0] * wY).sum()
            arr[idx] = old
            assert abs((up - down) / (2 * eps) - g[name][idx]) < 1e-7


def test_exports_as_one_native_lstm_node_with_a_saturated_output_gate(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort

    import edgernn.onnx as eo

    m = Sequential([JANET(5, beta=0.5, chrono_t_max=50, input_shape=(None, 3), return_sequences=True),
                    Dense(2)], seed=0)
    eo.export(m, tmp_path / "j.onnx")
    model = onnx.load(tmp_path / "j.onnx")
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LSTM") == 1 and "Scan" not in ops
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert [a.decode() for a in attrs["activations"]] == ["Sigmoid", "Tanh", "Affine"]
    assert list(attrs["activation_alpha"]) == [1.0] and list(attrs["activation_beta"]) == [0.0]
    assert attrs["input_forget"] == 0 and "clip" not in attrs
    assert eo.verify(m, tmp_path / "j.onnx").passed
    # o is exactly 1 in onnxruntime: the node's h and c outputs are bit-identical
    node.output[1] = node.output[1] or "yh"
    node.output[2] = node.output[2] or "yc"
    for nm in node.output[1:3]:
        model.graph.output.append(onnx.helper.make_tensor_value_info(nm, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 40, 3)).astype(np.float32) * 3
    outs = sess.run(list(node.output[1:3]), {"x": x})
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0]).max() > 0.5


def test_export_without_bias_keeps_the_output_gate(tmp_path):
    pytest.importorskip("onnxruntime")
    import edgernn.onnx as eo

    m = Sequential([JANET(4, use_bias=False, input_shape=(None, 2)), Dense(1)], seed=1)
    assert "b" not in m.layers[0].params
    eo.export(m, tmp_path / "nb.onnx")
    assert eo.verify(m, tmp_path / "nb.onnx").passed


def test_stateful_stream_and_save_keep_beta(tmp_path):
    m = Sequential([JANET(6, beta=0.25, chrono_t_max=30, input_shape=(None, 2)), Dense(1)], seed=2)
    X = np.random.default_rng(3).standard_normal((2, 7, 2)).astype(np.float32)
    st = m.stream(batch_size=2)
    np.testing.assert_allclose(st.run(X)[:, -1], m.predict(X), atol=2e-6)
    m.save(tmp_path / "j.npz")
    m2 = edgernn.load_model(tmp_path / "j.npz")
    assert m2.layers[0].beta == 0.25 and m2.layers[0].chrono_t_max == 30.0
    np.testing.assert_array_equal(m2.predict(X), m.predict(X))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="clip"):
        JANET(4, clip=3.0)
    with pytest.raises(ValueError, match="activation"):
        JANET(4, activation="relu")
    with pytest.raises(ValueError, match="chrono_t_max"):
        JANET(4, chrono_t_max=2)
    with pytest.raises(ValueError, match="chrono_t_max"):
        JANET(4, chrono_t_max="100")
    with pytest.raises(ValueError, match="beta"):
        JANET(4, beta=float("nan"))
    rng = np.random.default_rng(0)
    W, U, b = _params(rng)
    X = rng.standard_normal((1, 2, 3))
    with pytest.raises(ValueError, match="beta"):
        F.janet(X, W, U, b, beta=None)
    with pytest.raises(ValueError, match=r"\bU\b"):
        F.janet(X, W, U[:, :7], b)  # not (D, 2H, H)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_batch_path_oracle_and_finite_differences(direction):
    """Batches of >= BLAS_MIN_ROWS rows take the BLAS products (the conformance suite's cases
    have at most 3 rows): oracle and float64 finite differences on every input there too."""
    from edgernn.cells.janet import BLAS_MIN_ROWS

    rng = np.random.default_rng(4)
    B, T, I, H = BLAS_MIN_ROWS + 2, 4, 2, 3
    D = 2 if direction == "bidirectional" else 1
    X = rng.standard_normal((B, T, I))
    W, U, b = _params(rng, D, I, H)
    h0 = rng.standard_normal((B, D, H))
    L = np.array([4, 0, 2, 4, 1, 3][:B] + [4] * max(0, B - 6))
    Y, Yh, cache = F.janet(X, W, U, b, h0, lengths=L, direction=direction, train=True)
    Yn, fin = naive.cell_run("janet", X, {"W": W, "U": U, "b": b}, {"h": h0}, {"h": H}, H, L, direction)
    np.testing.assert_allclose(Y, Yn, atol=1e-12)
    np.testing.assert_allclose(Yh, fin["h"], atol=1e-12)
    wY, wH = rng.standard_normal(Y.shape), rng.standard_normal(Yh.shape)
    g = F.janet_backward(cache, wY, wH)
    inputs = {"X": X, "W": W, "U": U, "b": b, "h0": h0}

    def loss():
        y, yh = F.janet(X, W, U, b, h0, lengths=L, direction=direction)
        return float((y * wY).sum() + (yh * wH).sum())

    eps = 1e-6
    for key, arr in inputs.items():
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = loss()
            arr[idx] = old - eps
            down = loss()
            arr[idx] = old
            num = (up - down) / (2 * eps)
            assert abs(num - g[key][idx]) <= 1e-6 * max(1.0, abs(num)), (key, idx, num, g[key][idx])
