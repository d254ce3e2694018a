"""Layer semantics: shapes, Keras parameter counts, Keras options mapped to ONNX, go_backwards,
Bidirectional, masking, states, initializers."""

import numpy as np
import pytest

from edgernn import Sequential
from edgernn.layers import (
    GRU,
    LSTM,
    Activation,
    Bidirectional,
    Dense,
    Dropout,
    Embedding,
    Input,
    Masking,
    SimpleRNN,
)


def built(layer, shape, dtype="float64", seed=0):
    layer.dtype = np.dtype(dtype)
    layer.build(shape, rng=np.random.default_rng(seed))
    return layer


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---- parameter counts equal Keras' -------------------------------------------------------
@pytest.mark.parametrize("m,h", [(1, 50), (50, 100), (3, 1)])
def test_param_counts_match_keras(m, h):
    assert built(LSTM(h), (None, m)).count_params() == 4 * (m * h + h * h + h)
    assert built(GRU(h, reset_after=False), (None, m)).count_params() == 3 * (m * h + h * h + h)
    assert built(GRU(h), (None, m)).count_params() == 3 * (m * h + h * h + 2 * h)
    assert built(SimpleRNN(h), (None, m)).count_params() == m * h + h * h + h
    assert built(Bidirectional(LSTM(h)), (None, m)).count_params() == 8 * (m * h + h * h + h)
    assert built(LSTM(h, use_bias=False), (None, m)).count_params() == 4 * (m * h + h * h)
    assert built(LSTM(h, peephole=True), (None, m)).count_params() == 4 * (m * h + h * h + h) + 3 * h


def test_keras_script_model_counts():
    model = Sequential()
    model.add(LSTM(input_shape=(None, 1), return_sequences=True, units=50))
    model.add(Dropout(0.2))
    model.add(LSTM(100, return_sequences=False))
    model.add(Dense(units=1))
    # Keras: 10400 + 60400 + 101
    assert [layer.count_params() for layer in model.layers] == [10400, 0, 60400, 101]
    assert model.count_params() == 70901


# ---- ONNX view of the recurrent layers ----------------------------------------------------
def test_onnx_attributes_lstm():
    layer = built(LSTM(3, activation="relu", recurrent_activation="hard_sigmoid", clip=2.5,
                       coupled_gates=True, peephole=True), (None, 2))
    assert layer.cell == "lstm" and layer.units == 3 and layer.direction == "forward"
    assert layer.onnx_activations == ["HardSigmoid", "Relu", "Relu"]
    assert layer.activation_alpha == [0.2] and layer.activation_beta == [0.5]
    assert layer.clip == 2.5 and layer.input_forget and layer.peephole
    w = layer.onnx_weights()
    assert w["W"].shape == (1, 12, 2) and w["R"].shape == (1, 12, 3)
    assert w["Wb"].shape == (1, 12) and w["Rb"].shape == (1, 12) and w["P"].shape == (1, 9)
    assert not w["Rb"].any()  # the untrained second bias is a zero buffer
    assert "Rb" in layer.buffers and "Rb" not in layer.params


def test_onnx_attributes_linear_and_bidirectional():
    layer = built(Bidirectional(GRU(4, activation="linear", reset_after=False), merge_mode="sum"), (None, 2))
    assert layer.cell == "gru" and layer.direction == "bidirectional" and layer.merge_mode == "sum"
    assert layer.onnx_activations == ["Sigmoid", "Affine"] * 2
    assert layer.activation_alpha == [1.0, 1.0] and layer.activation_beta == [0.0, 0.0]
    assert not layer.linear_before_reset
    w = layer.onnx_weights()
    assert w["W"].shape == (2, 12, 2) and w["R"].shape == (2, 12, 4) and w["P"] is None
    assert built(GRU(4), (None, 2)).linear_before_reset
    assert built(SimpleRNN(4, go_backwards=True), (None, 2)).direction == "reverse"


def test_no_bias_gives_zero_bias_arrays():
    layer = built(SimpleRNN(3, use_bias=False), (None, 2))
    assert set(layer.params) == {"W", "R"} and not layer.buffers
    w = layer.onnx_weights()
    assert w["Wb"].shape == (1, 3) and not w["Wb"].any() and not w["Rb"].any()


def test_unit_forget_bias_and_initializers():
    H, I = 8, 5
    layer = built(LSTM(H), (None, I))
    Wb = layer.params["Wb"][0]
    assert np.all(Wb[2 * H:3 * H] == 1) and not Wb[:2 * H].any() and not Wb[3 * H:].any()
    assert not built(LSTM(H, unit_forget_bias=False), (None, I)).params["Wb"].any()
    R = layer.params["R"][0]  # (4H, H): orthonormal columns (Keras' orthogonal on the (H, 4H) kernel)
    np.testing.assert_allclose(R.T @ R, np.eye(H), atol=1e-12)
    W = layer.params["W"]
    limit = np.sqrt(6 / (I + 4 * H))
    assert np.abs(W).max() <= limit and np.abs(W).max() > 0.8 * limit


def test_recurrent_dropout_not_implemented():
    with pytest.raises(NotImplementedError, match="recurrent_dropout"):
        LSTM(4, recurrent_dropout=0.1)


def test_bad_options():
    with pytest.raises(ValueError, match="activation"):
        LSTM(4, activation="nope")
    with pytest.raises(ValueError, match="merge_mode"):
        Bidirectional(LSTM(4), merge_mode="max")
    with pytest.raises(TypeError):
        Bidirectional(Dense(3))
    with pytest.raises(ValueError, match="units"):
        GRU(0)
    with pytest.raises(ValueError, match="initializer"):
        Dense(3, kernel_initializer="nope")


# ---- semantics ---------------------------------------------------------------------------
def _copy_weights(src, dst, d=0):
    for k in dst.params:
        dst.params[k][...] = src.params[k][d:d + 1]
    for k in dst.buffers:
        dst.buffers[k][...] = src.buffers[k][d:d + 1]


@pytest.mark.parametrize("cell", [SimpleRNN, GRU, LSTM])
def test_go_backwards_is_forward_on_reversed_input(cell, rng):
    x = rng.standard_normal((3, 6, 2))
    back = built(cell(4, go_backwards=True, return_sequences=True), (None, 2))
    fwd = built(cell(4, return_sequences=True), (None, 2), seed=5)
    _copy_weights(back, fwd)
    np.testing.assert_allclose(back.forward(x), fwd.forward(x[:, ::-1]), atol=1e-12)
    # with lengths: only the valid part is reversed
    lengths = np.array([6, 3, 0])
    y = back.forward(x, lengths=lengths)
    for b, n in enumerate(lengths):
        if n:
            np.testing.assert_allclose(y[b, :n], fwd.forward(x[b:b + 1, :n][:, ::-1])[0], atol=1e-12)
        assert not y[b, n:].any()


@pytest.mark.parametrize("mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional_matches_two_layers(mode, rng):
    x = rng.standard_normal((3, 5, 2))
    lengths = np.array([5, 2, 4])
    bi = built(Bidirectional(LSTM(3, return_sequences=True), merge_mode=mode), (None, 2))
    f = built(LSTM(3, return_sequences=True), (None, 2), seed=7)
    b = built(LSTM(3, return_sequences=True, go_backwards=True), (None, 2), seed=8)
    _copy_weights(bi, f, 0)
    _copy_weights(bi, b, 1)
    yf = f.forward(x, lengths=lengths)
    yb = b.forward(x, lengths=lengths)
    # Keras: the backward layer's output sequence is flipped back to the original order
    from edgernn.layers.recurrent import _flip_valid
    yb = _flip_valid(yb, lengths)
    want = {"concat": np.concatenate([yf, yb], -1), "sum": yf + yb, "mul": yf * yb, "ave": (yf + yb) / 2}[mode]
    np.testing.assert_allclose(bi.forward(x, lengths=lengths), want, atol=1e-12)
    # last outputs: forward's final state and backward's state after reading step 0
    bi2 = built(Bidirectional(LSTM(3), merge_mode="concat"), (None, 2))
    _copy_weights(bi, bi2.layer, 0)
    for k in bi2.params:
        bi2.params[k][...] = bi.params[k]
    last = bi2.forward(x, lengths=lengths)
    np.testing.assert_allclose(last[:, :3], yf[np.arange(3), lengths - 1], atol=1e-12)
    np.testing.assert_allclose(last[:, 3:], yb[:, 0], atol=1e-12)


def test_return_state_and_initial_state(rng):
    x = rng.standard_normal((2, 4, 3))
    layer = built(LSTM(5, return_state=True), (None, 3))
    y, h, c = layer.forward(x)
    np.testing.assert_array_equal(y, h)
    # continuing from the returned state equals running the concatenated sequence
    x2 = rng.standard_normal((2, 3, 3))
    y2, _, _ = layer.forward(x2, initial_state=[h, c])
    y12, _, _ = layer.forward(np.concatenate([x, x2], axis=1))
    np.testing.assert_allclose(y2, y12, atol=1e-12)
    bi = built(Bidirectional(GRU(2, return_state=True)), (None, 3))
    out = bi.forward(x)
    assert len(out) == 3 and out[0].shape == (2, 4) and out[1].shape == out[2].shape == (2, 2)
    with pytest.raises(ValueError, match="initial state"):
        layer.forward(x, initial_state=[h])


def test_stateful_carries_state(rng):
    x = rng.standard_normal((2, 6, 3))
    layer = built(GRU(4, stateful=True, return_sequences=True), (None, 3))
    full = layer.forward(x)
    layer.reset_states()
    a = layer.forward(x[:, :4])
    b = layer.forward(x[:, 4:])
    np.testing.assert_allclose(np.concatenate([a, b], 1), full, atol=1e-12)
    assert layer.states[0].shape == (2, 4)
    with pytest.raises(ValueError, match="batch size"):
        layer.forward(x[:1])
    layer.reset_states()
    layer.forward(x[:1])


def test_dense_time_distributed_and_activation(rng):
    d = built(Dense(3, activation="tanh"), (None, 4))
    x = rng.standard_normal((2, 5, 4))
    y = d.forward(x)
    want = np.tanh(x @ d.params["kernel"] + d.params["bias"])
    np.testing.assert_allclose(y, want, atol=1e-12)
    a = Activation("softmax")
    p = a.forward(rng.standard_normal((2, 3)))
    np.testing.assert_allclose(p.sum(-1), 1)


def test_dropout_inverted_and_identity_at_inference(rng):
    d = Dropout(0.25, seed=0)
    x = np.ones((200, 50))
    assert d.forward(x) is x
    y = d.forward(x, training=True)
    assert set(np.unique(y)) <= {0.0, 1 / 0.75}
    assert abs(y.mean() - 1) < 0.02
    d2 = Dropout(0.5, noise_shape=(None, 1, None), seed=0)
    y2 = d2.forward(np.ones((3, 4, 5)), training=True)
    assert np.all(y2 == y2[:, :1])  # same mask for all steps


def test_masking_lengths(rng):
    x = rng.standard_normal((3, 5, 2))
    x[0, 3:] = 0
    x[1] = 0
    x[2, 1] = 0  # a hole: not padding (trailing padding only)
    m = Masking()
    np.testing.assert_array_equal(m.compute_lengths(x, None), [3, 0, 5])
    np.testing.assert_array_equal(m.compute_lengths(x, np.array([2, 4, 4])), [2, 0, 4])
    m2 = Masking(mask_value=-1.0)
    x2 = np.full((1, 4, 2), -1.0)
    x2[0, :2] = 1
    assert m2.compute_lengths(x2, None).tolist() == [2]
    assert not m2.forward(x2, lengths=np.array([2]))[0, 2:].any()


def test_embedding(rng):
    e = built(Embedding(7, 3, mask_zero=True), (None,))
    ids = np.array([[1, 2, 0], [6, 0, 0]])
    y = e.forward(ids)
    np.testing.assert_array_equal(y, e.params["embeddings"][ids])
    np.testing.assert_array_equal(e.compute_lengths(ids, None), [2, 1])
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        e.forward(np.array([[7]]))
    e.backward(np.ones((2, 3, 3)))
    assert e.grads["embeddings"][0].tolist() == [3.0, 3.0, 3.0]  # id 0 appears three times


def test_input_declaration():
    m = Sequential([Input(shape=(None, 3)), LSTM(2)])
    assert m.built and m.input_shape == (None, 3) and m.output_shape == (2,)


def test_layer_config_round_trip():
    from edgernn.layers import get

    for layer in [LSTM(3, peephole=True, coupled_gates=True, go_backwards=True, clip=1.0),
                  GRU(2, reset_after=False, activation="relu"), SimpleRNN(4, use_bias=False),
                  Bidirectional(LSTM(2, return_sequences=True), merge_mode="mul"), Dense(3, activation="elu"),
                  Dropout(0.3), Activation("sigmoid"), Embedding(5, 2, mask_zero=True), Masking(-1.0)]:
        cfg = layer.get_config()
        import json

        again = get(type(layer).__name__).from_config(json.loads(json.dumps(cfg)))
        assert again.get_config() == cfg
