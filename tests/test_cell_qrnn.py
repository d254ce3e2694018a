"""What is specific to QRNN (the conformance suite, tests/test_cells.py, covers the rest with
window=2, fo pooling): the other poolings and windows against the naive oracle and finite
differences, the reference initialisation, the stream's input history, the exported history
state, and clear errors."""

from __future__ import annotations

import naive
import numpy as np
import pytest

import edgernn.functional as F
from edgernn import Sequential
from edgernn.layers import QRNN, Dense

G = {"f": 2, "fo": 3, "ifo": 4}


def _params(rng, D, I, H, k, pooling):
    return dict(W=rng.standard_normal((D, G[pooling] * H, k * I)) * 0.5,
                b=rng.standard_normal((D, G[pooling] * H)) * 0.5)


@pytest.mark.parametrize("pooling,k,direction", [("f", 1, "forward"), ("ifo", 3, "bidirectional"),
                                                 ("fo", 4, "reverse")])
def test_options_match_oracle_and_gradients(pooling, k, direction):
    rng = np.random.default_rng(0)
    B, T, I, H = 3, 5, 2, 3
    D = 2 if direction == "bidirectional" else 1
    p = _params(rng, D, I, H, k, pooling)
    X = rng.standard_normal((B, T, I))
    h0, c0 = rng.standard_normal((2, B, D, H))
    L = np.array([5, 3, 1])
    kw = dict(lengths=L, direction=direction, window=k, pooling=pooling)
    Y, Yh, Yc, cache = F.qrnn(X, p["W"], p["b"], h0, c0, train=True, **kw)
    Yn, fin = naive.cell_run("qrnn", X, p, {"h": h0, "c": c0}, {"h": H, "c": H}, H, L, direction)
    np.testing.assert_allclose(Y, Yn, atol=1e-12)
    np.testing.assert_allclose(Yc, fin["c"], atol=1e-12)
    if pooling == "f":
        np.testing.assert_array_equal(Yh, Yc)
    ws = [rng.standard_normal(a.shape) for a in (Y, Yh, Yc)]
    g = F.qrnn_backward(cache, *ws)
    assert not g["h0"].any()  # h_{t-1} does not enter the step

    def loss():
        return sum((a * w).sum() for a, w in zip(F.qrnn(X, p["W"], p["b"], h0, c0, **kw), ws, strict=True))

    for name, arr in (("X", X), ("W", p["W"]), ("b", p["b"]), ("c0", c0)):
        for idx in list(np.ndindex(arr.shape))[::3]:
            old = arr[idx]
            arr[idx] = old + 1e-6
            up = loss()
            arr[idx] = old - 1e-6
            down = loss()
            arr[idx] = old
            num = (up - down) / 2e-6
            assert abs(num - g[name][idx]) <= 1e-6 * max(1.0, abs(num)), (name, idx)


def test_reverse_convolves_in_its_own_direction():
    rng = np.random.default_rng(1)
    p = _params(rng, 1, 2, 3, 3, "fo")
    X = rng.standard_normal((2, 6, 2))
    Yr = F.qrnn(X, p["W"], p["b"], direction="reverse", window=3)[0]
    Yf = F.qrnn(X[:, ::-1], p["W"], p["b"], window=3)[0]
    np.testing.assert_allclose(Yr, Yf[:, ::-1], atol=1e-14)


def test_reference_initialisation_and_shapes():
    for pooling in G:
        m = Sequential([QRNN(8, window=3, pooling=pooling, input_shape=(None, 5))], seed=0)
        W, b = m.layers[0].params["W"], m.layers[0].params["b"]
        assert W.shape == (1, G[pooling] * 8, 15) and b.shape == (1, G[pooling] * 8)
        lim = 1 / np.sqrt(15)  # torch.nn.Linear's default over the window: U(-1/sqrt(k*I), 1/sqrt(k*I))
        assert np.abs(W).max() <= lim and np.abs(W).max() > 0.9 * lim
        assert not b.any()
    m = Sequential([QRNN(4, kernel_initializer="glorot_uniform", input_shape=(None, 2))], seed=0)
    assert m.layers[0].get_config()["kernel_initializer"] == "glorot_uniform"


def test_bad_options():
    X, W = np.zeros((1, 3, 2)), np.zeros((1, 9, 4))
    with pytest.raises(ValueError, match="window"):
        F.qrnn(X, W, window=0)
    with pytest.raises(ValueError, match="pooling"):
        F.qrnn(X, W, pooling="io")
    with pytest.raises(ValueError, match=r"\bW\b.*window"):
        F.qrnn(X, W, window=3)
    with pytest.raises(ValueError, match="pooling"):
        QRNN(4, pooling="x")
    with pytest.raises(ValueError, match="stateful"):
        QRNN(4, stateful=True)


def test_stream_history_and_export(tmp_path):
    rng = np.random.default_rng(3)
    m = Sequential([QRNN(5, window=3, pooling="ifo", input_shape=(None, 2), return_sequences=True),
                    QRNN(4, window=2, pooling="f"), Dense(1)], seed=3)
    X = rng.standard_normal((2, 7, 2)).astype(np.float32)
    st = m.stream(batch_size=2)
    ys = [st.step(X[:, t]) for t in range(7)]
    np.testing.assert_allclose(ys[-1], m.predict(X), atol=2e-6)
    assert [len(s) for s in st.state] == [2, 2]  # h and c only; the input history is the stream's own
    st.reset(rows=[1])  # row 1 starts over: history zeroed too
    for t in range(4):
        y = st.step(X[:, t])
    np.testing.assert_allclose(y[1], m.predict(X[1:, :4])[0], atol=2e-6)
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    import edgernn.onnx as eo

    eo.export(m, tmp_path / "s.onnx", streaming=True)
    ins = {i.name: i.shape for i in ort.InferenceSession(str(tmp_path / "s.onnx")).get_inputs()}
    assert ins["state_0_x"][-1] == 4 and ins["state_1_x"][-1] == 5  # (window - 1) * input features
    assert eo.verify(m, tmp_path / "s.onnx").passed
