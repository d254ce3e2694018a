"""Sequential API: building, summary, weights, inputs (arrays, ragged lists, lengths), bad input."""


import numpy as np
import pytest

import edgernn
from edgernn import Sequential
from edgernn.layers import GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding, Masking, SimpleRNN


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def small(seed=0, **kw):
    return Sequential([LSTM(4, return_sequences=True, input_shape=(None, 2)), GRU(3), Dense(1)], seed=seed, **kw)


def test_layer_names_and_shapes():
    m = small()
    assert [layer.name for layer in m.layers] == ["lstm", "gru", "dense"]
    m2 = Sequential([SimpleRNN(2, input_shape=(None, 1), return_sequences=True), SimpleRNN(2),
                     Dense(1)])
    assert [layer.name for layer in m2.layers] == ["simple_rnn", "simple_rnn_1", "dense"]
    assert m.input_shape == (None, 2) and m.output_shape == (1,)
    with pytest.raises(ValueError, match="duplicate"):
        Sequential([Dense(1, name="a", input_shape=(2,)), Dense(1, name="a")])


def test_summary_text_and_print_fn(capsys):
    m = Sequential([LSTM(50, input_shape=(None, 1), return_sequences=True), Dropout(0.2), LSTM(100), Dense(1),
                    Activation("linear")])
    got = []
    text = m.summary()  # prints, as Keras (issue 12.5: it printed nothing)
    assert capsys.readouterr().out == text + "\n"
    m.summary(print_fn=got.append)
    assert got == [text] and capsys.readouterr().out == ""
    assert "lstm (LSTM)" in text and "(None, None, 50)" in text and "10,400" in text and "60,400" in text
    assert "Total params: 70,901" in text and "Trainable params: 70,901" in text
    assert "Non-trainable params: 0" in text and "bias" in text
    assert repr(text) == str(text)  # shown as a table in a REPL
    frozen = small()
    frozen.layers[0].trainable = False
    assert f"Non-trainable params: {frozen.layers[0].count_params():,}" in frozen.summary()


def test_unbuilt_model_errors():
    m = Sequential([LSTM(3), Dense(1)])
    assert not m.built
    with pytest.raises(RuntimeError, match="not built"):
        m.predict(np.zeros((1, 3, 2)))
    with pytest.raises(RuntimeError, match="not built"):
        m.count_params()
    assert "not built" in m.summary()
    with pytest.raises(ValueError, match="not built"):
        m.save("/nonexistent/x.npz")
    # fit builds from the data, as Keras
    m.compile(loss="mse", optimizer="sgd")
    m.fit(np.zeros((4, 3, 2)), np.zeros(4), verbose=0)
    assert m.built and m.input_shape == (None, 2)


def test_bad_inputs(rng):
    m = small()
    m.compile(loss="mse", optimizer="adam")
    with pytest.raises(ValueError, match=r"\(batch, time, 2\)"):
        m.predict(rng.standard_normal((3, 5, 3)))  # wrong feature count
    with pytest.raises(ValueError, match=r"\(batch, time, 2\)"):
        m.predict(rng.standard_normal((3, 5)))  # wrong rank
    with pytest.raises(TypeError, match="numbers"):
        m.predict(np.array([["a", "b"]]))
    x = rng.standard_normal((6, 5, 2))
    x[4, 2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN.*sample 4"):
        m.fit(x, np.zeros(6), verbose=0)
    with pytest.raises(ValueError, match="NaN"):
        m.fit(np.zeros((6, 5, 2)), np.array([0, 1, 2, np.inf, 0, 0.0]), verbose=0)
    with pytest.raises(ValueError, match="targets"):
        m.fit(np.zeros((6, 5, 2)), np.zeros((6, 2)), verbose=0)
    with pytest.raises(ValueError, match="6 inputs"):
        m.fit(np.zeros((6, 5, 2)), np.zeros(5), verbose=0)
    with pytest.raises(ValueError, match="unknown loss"):
        m.compile(loss="nope", optimizer="adam")
    with pytest.raises(ValueError, match="unknown optimizer"):
        m.compile(loss="mse", optimizer="nope")
    with pytest.raises(ValueError, match="unknown metric"):
        m.compile(loss="mse", optimizer="sgd", metrics=["nope"])
    with pytest.raises(ValueError, match="loss is required"):
        m.compile(optimizer="sgd")
    with pytest.raises(RuntimeError, match="compile"):
        small().fit(np.zeros((2, 3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="lengths"):
        m.predict(np.zeros((2, 3, 2)), lengths=np.array([1, 4]))
    with pytest.raises(ValueError, match="return_state"):
        Sequential([LSTM(2, return_state=True, input_shape=(None, 1)), Dense(1)])
    with pytest.raises(ValueError, match="empty"):
        m.predict(np.zeros((0, 3, 2)))


def test_ragged_list_equals_padded_with_lengths(rng):
    m = Sequential([Bidirectional(GRU(3, return_sequences=True), input_shape=(None, 2)), Dense(2)], seed=1,
                   dtype="float64")
    xs = [rng.standard_normal((n, 2)) for n in (5, 1, 3)]
    out = m.predict(xs)
    assert [o.shape for o in out] == [(5, 2), (1, 2), (3, 2)]
    for xi, oi in zip(xs, out, strict=True):
        np.testing.assert_allclose(m.predict(xi[None])[0], oi, atol=1e-12)
    padded = np.zeros((3, 5, 2))
    for i, xi in enumerate(xs):
        padded[i, :len(xi)] = xi
    full = m.predict(padded, lengths=np.array([5, 1, 3]))
    for i, oi in enumerate(out):
        np.testing.assert_allclose(full[i, :len(oi)], oi, atol=1e-12)
    # Masking computes the same lengths from the padding
    mm = Sequential([Masking(input_shape=(None, 2))] + [type(layer).from_config(layer.get_config())
                                                      for layer in m.layers], dtype="float64")
    mm.set_weights(m.get_weights())
    masked = mm.predict(padded)
    for i, oi in enumerate(out):
        np.testing.assert_allclose(masked[i, :len(oi)], oi, atol=1e-12)


def test_ragged_last_output(rng):
    m = Sequential([LSTM(3, input_shape=(None, 2)), Dense(1)], seed=2, dtype="float64")
    xs = [rng.standard_normal((n, 2)) for n in (4, 2)]
    out = m.predict(xs)
    assert out.shape == (2, 1)
    np.testing.assert_allclose(out[1], m.predict(xs[1][None])[0], atol=1e-12)


def test_weights_round_trip_and_seed(rng):
    a, b, c = small(seed=3), small(seed=3), small(seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a.get_weights(), c.get_weights(), strict=True))
    c.set_weights(a.get_weights())
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    np.testing.assert_array_equal(a.predict(x), c.predict(x))
    with pytest.raises(ValueError, match="expected"):
        c.set_weights(a.get_weights()[:-1])
    w = a.get_weights()
    w[0] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="shape"):
        c.set_weights(w)


def test_float64_and_astype(rng):
    m = small(dtype="float64")
    x = rng.standard_normal((2, 3, 2))
    assert m.predict(x).dtype == np.float64
    m.astype("float32")
    assert m.predict(x).dtype == np.float32
    assert all(w.dtype == np.float32 for w in m.get_weights())


def test_return_state_model(rng):
    m = Sequential([GRU(3, return_sequences=True, input_shape=(None, 2)), LSTM(4, return_state=True)])
    out, h, c = m.predict(rng.standard_normal((5, 6, 2)))
    assert out.shape == h.shape == c.shape == (5, 4)
    np.testing.assert_array_equal(out, h)
    m.compile(loss="mse", optimizer="adam")
    m.fit(rng.standard_normal((5, 6, 2)), rng.standard_normal((5, 4)), verbose=0, epochs=2)


def test_stateful_predict_equals_whole_sequence(rng):
    m = Sequential([LSTM(3, stateful=True, return_sequences=True, input_shape=(None, 2)), Dense(1)],
                   dtype="float64", seed=0)
    x = rng.standard_normal((2, 8, 2))
    full = m.predict(x)
    m.reset_states()
    parts = np.concatenate([m.predict(x[:, :3]), m.predict(x[:, 3:])], axis=1)
    np.testing.assert_allclose(parts, full, atol=1e-12)


def test_embedding_model_accepts_token_lists():
    m = Sequential([Embedding(10, 4, mask_zero=True, input_shape=(None,)), GRU(3), Dense(2)], seed=0)
    padded = m.predict(np.array([[1, 2, 3, 0], [4, 5, 0, 0]]))
    ragged = m.predict([[1, 2, 3], [4, 5]])
    np.testing.assert_allclose(padded, ragged, atol=1e-6)
    with pytest.raises(ValueError, match="integer"):
        m.predict(np.array([[1.5, 2.0]]))


def test_public_exports():
    assert edgernn.Sequential is Sequential
    assert issubclass(edgernn.TrainingDiverged, FloatingPointError)
    assert issubclass(edgernn.TrainingDiverged, RuntimeError)
    assert callable(edgernn.load_model)


def test_dense_only_model_and_keras_shape_arguments(rng):
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], np.float32)
    m = Sequential([Dense(8, activation="relu", input_dim=3), Dense(1)], seed=0)
    m.compile(loss="mse", optimizer="adam")
    first = m.train_on_batch(x, y)
    for _ in range(20):
        last = m.train_on_batch(x, y)
    assert last < first
    assert m.predict(x).shape == (64, 1)
    s = Sequential([LSTM(4, batch_input_shape=(2, 5, 1), stateful=True), Dense(1)])
    assert s.input_shape == (5, 1)
    with pytest.raises(TypeError):
        SimpleRNN(3, recurrent_activation="sigmoid")


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, edgernn; heavy = [m for m in ('onnx', 'onnxruntime', 'matplotlib', 'torch') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
