"""The functional API (``Input``, layers called on tensors, ``Model(inputs, outputs)``), written
as a Keras user writes it, plus float64 finite-difference checks of the graph's backward pass."""

import numpy as np
import pytest

import edgernn
from edgernn import Input, Model, Sequential
from edgernn.layers import GRU, LSTM, Dense, Dropout, Embedding, Masking, SimpleRNN

EPS = 1e-6


def graph_gradcheck(model, xs, ys, lengths=None, n_per_param=6, seed=0):
    """Central differences on every trained parameter and every float input of a graph model."""
    from edgernn.graph import _Multi

    X = _Multi(xs) if len(xs) > 1 else xs[0]
    Y = _Multi(ys) if len(ys) > 1 else ys[0]
    L = None if lengths is None else (_Multi(lengths) if len(xs) > 1 else lengths[0])

    def loss_at():
        return model._loss_and_grads(X, Y, L)[0]

    _, grads, _ = model._loss_and_grads(X, Y, L)
    grads = [g.copy() for g in grads]
    out = model._forward(X, L, training=False)
    pred = out
    _, dy = model.loss.value_and_grad(Y, pred, model._mask(pred, model._last_lengths))
    dxs = model._backward(dy)
    targets = [(layer.params[k], g, f"{layer.name}/{k}") for (layer, k), g in zip(model._trainable(), grads,
                                                                                 strict=True)]
    targets += [(x, d, f"input{i}") for i, (x, d) in enumerate(zip(xs, dxs, strict=True))
                if x.dtype.kind == "f" and d is not None]
    rng = np.random.default_rng(seed)
    checked = 0
    for p, g, name in targets:
        assert g.shape == p.shape, name
        # an input entry equal to 0 may be padding: moving it would change the Masking lengths
        cand = np.flatnonzero(p.ravel() != 0) if name.startswith("input") else np.arange(p.size)
        for i in rng.choice(cand, size=min(n_per_param, cand.size), replace=False):
            idx = np.unravel_index(i, p.shape)
            old = p[idx]
            p[idx] = old + EPS
            lp = loss_at()
            p[idx] = old - EPS
            lm = loss_at()
            p[idx] = old
            num = (lp - lm) / (2 * EPS)
            assert abs(num - g[idx]) <= 1e-8 + 1e-6 * abs(num), (name, idx, num, g[idx])
            checked += 1
    return checked


def randomize(model, seed=3):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for k in ("Wb", "Rb", "bias"):
            if k in layer.params:
                layer.params[k][...] = 0.5 * rng.standard_normal(layer.params[k].shape)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---- the Keras habits ---------------------------------------------------------------------------
def test_keras_user_script(tmp_path, rng):
    inputs = edgernn.Input(shape=(None, 3))
    x = LSTM(8, return_sequences=True)(inputs)
    x = LSTM(4)(x)
    outputs = Dense(1)(x)
    model = edgernn.Model(inputs=inputs, outputs=outputs, name="forecaster", seed=0)
    assert inputs.shape == (None, None, 3) and outputs.shape == (None, 1)
    assert edgernn.models.Model is Model
    model.compile(optimizer=edgernn.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    X = rng.standard_normal((64, 10, 3)).astype(np.float32)
    y = X[:, -1:, 0]
    first = model.evaluate(X, y)
    hist = model.fit(X, y, epochs=25, batch_size=16, verbose=0, validation_split=0.25)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    assert model.evaluate(X, y)[0] < first[0]
    assert model.predict(X).shape == (64, 1)
    assert np.isfinite(model.train_on_batch(X[:8], y[:8]))
    text = model.summary(print_fn=lambda s: None)
    assert "Connected to" in text and "lstm_1" in text and "input" in text
    assert model.count_params() == 4 * (3 * 8 + 8 * 8 + 8) + 4 * (8 * 4 + 4 * 4 + 4) + 5
    assert model.get_layer("dense") is model.layers[-1]
    w = model.get_weights()
    model.set_weights([a * 0 for a in w])
    assert np.all(model.predict(X[:2]) == 0)
    model.set_weights(w)
    path = tmp_path / "m.npz"
    model.save(path)
    back = edgernn.load_model(path)
    assert type(back) is Model
    np.testing.assert_array_equal(back.predict(X), model.predict(X))


def test_sequential_accepts_input_tensor():
    m = Sequential([Input(shape=(None, 3)), LSTM(2)])
    assert m.built and m.input_shape == (None, 3) and m.output_shape == (2,)
    t = LSTM(2)(Input(shape=(None, 3)))
    with pytest.raises(TypeError, match="Model"):
        Sequential([t])


def test_seed_reproducible(rng):
    def make():
        a = Input(shape=(None, 2))
        return Model(a, Dense(1)(GRU(3)(a)), seed=7)

    m1, m2 = make(), make()
    for w1, w2 in zip(m1.get_weights(), m2.get_weights(), strict=True):
        np.testing.assert_array_equal(w1, w2)


def test_two_inputs_encoder_decoder_states_and_save(tmp_path, rng):
    enc_in = Input(shape=(None, 3), name="encoder_inputs")
    dec_in = Input(shape=(None, 2), name="decoder_inputs")
    _, h, c = LSTM(5, return_state=True)(enc_in)
    seq = LSTM(5, return_sequences=True)(dec_in, initial_state=[h, c])
    out = Dense(2, activation="tanh")(seq)
    model = Model([enc_in, dec_in], out, seed=0, dtype="float64")
    model.compile("sgd", "mse")
    randomize(model)
    Xe, Xd = rng.standard_normal((3, 6, 3)), rng.standard_normal((3, 4, 2))
    Y = rng.standard_normal((3, 4, 2))
    assert graph_gradcheck(model, [Xe, Xd], [Y]) > 20
    p = model.predict({"encoder_inputs": Xe, "decoder_inputs": Xd})
    np.testing.assert_array_equal(p, model.predict([Xe, Xd]))
    model.save(tmp_path / "s2s.npz")
    back = edgernn.load_model(tmp_path / "s2s.npz")
    np.testing.assert_array_equal(back.predict([Xe, Xd]), p)
    assert back.input_names == ["encoder_inputs", "decoder_inputs"]


def test_shared_layer_and_fan_out_gradients(rng):
    a = Input(shape=(None, 3))
    b = Input(shape=(None, 3))
    enc = GRU(4)  # one layer, two calls: its gradient is the sum over both
    ha, hb = enc(a), enc(b)
    head = Dense(2)
    y = head(ha)
    z = Dense(1)(head(hb))  # the shared Dense, then another layer
    model = Model([a, b], [y, z], dtype="float64", seed=1)
    model.compile("sgd", ["mse", "mae"], loss_weights=[1.0, 0.3])
    randomize(model)
    Xa, Xb = rng.standard_normal((4, 5, 3)), rng.standard_normal((4, 3, 3))
    assert graph_gradcheck(model, [Xa, Xb], [rng.standard_normal((4, 2)), rng.standard_normal((4, 1))]) > 20


def test_only_states_used(rng):
    a = Input(shape=(None, 2))
    _, h = SimpleRNN(3, return_state=True, return_sequences=True)(a)
    model = Model(a, Dense(1)(h), dtype="float64", seed=0)
    model.compile("sgd", "mse")
    randomize(model)
    assert graph_gradcheck(model, [rng.standard_normal((3, 5, 2))], [rng.standard_normal((3, 1))]) > 10


def test_masks_flow_through_the_graph(rng):
    a = Input(shape=(None, 2))
    m = Masking()(a)
    y = Dense(1)(GRU(3)(m))
    model = Model(a, y, seed=0)
    seqs = [rng.standard_normal((t, 2)).astype(np.float32) for t in (2, 5, 3)]
    p = model.predict(seqs)
    for s, row in zip(seqs, p, strict=True):
        np.testing.assert_allclose(model.predict(s[None])[0], row, rtol=1e-5, atol=1e-6)
    ids = Input(shape=(None,), dtype="int32")
    e = Embedding(10, 4, mask_zero=True)(ids)
    model2 = Model(ids, Dense(1)(LSTM(3)(e)), seed=0)
    x = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]])
    np.testing.assert_allclose(model2.predict(x)[1], model2.predict(x[1:, :2])[0], rtol=1e-5)


def test_graph_model_with_dropout_trains(rng):
    a = Input(shape=(None, 2))
    y = Dense(1)(Dropout(0.2)(LSTM(6)(a)))
    model = Model(a, y, seed=3)
    model.compile("adam", "mse")
    X = rng.standard_normal((32, 6, 2)).astype(np.float32)
    h = model.fit(X, X[:, :, 0].sum(axis=1), epochs=15, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]


# ---- streaming --------------------------------------------------------------------------------
def test_chain_model_streams_graph_refused(rng):
    a = Input(shape=(None, 2))
    model = Model(a, Dense(1)(GRU(4, return_sequences=True)(a)), seed=0)
    X = rng.standard_normal((1, 6, 2)).astype(np.float32)
    s = model.stream()
    steps = np.stack([s.step(X[0, t]).copy() for t in range(6)])
    np.testing.assert_allclose(steps.reshape(6, 1), model.predict(X)[0], rtol=1e-5, atol=1e-6)
    b = Input(shape=(None, 2))
    _, h = GRU(4, return_state=True)(a)
    two = Model([a, b], Dense(1)(GRU(4, return_sequences=True)(b, initial_state=h)))
    with pytest.raises(ValueError, match="initial state"):
        two.stream()
    from edgernn.layers import Bidirectional

    bi = Model(a, Dense(1)(Bidirectional(GRU(3))(a)))
    with pytest.raises(ValueError, match="bidirectional"):
        bi.stream()


def test_graph_of_causal_layers_streams(rng):
    a = Input(shape=(None, 2), name="a")
    b = Input(shape=(None, 3), name="b")
    ha = LSTM(4, return_sequences=True)(a)
    hb = GRU(4)(b)  # no time axis: its output at each step is the state so far
    y = Dense(2)(Dense(3, activation="tanh")(ha))
    z = Dense(1)(hb)
    model = Model([a, b], [y, z], seed=0)
    X = [rng.standard_normal((2, 7, 2)).astype(np.float32), rng.standard_normal((2, 7, 3)).astype(np.float32)]
    s = model.stream(batch_size=2)
    ys, zs = zip(*[s.step([X[0][:, t], X[1][:, t]]) for t in range(7)], strict=True)
    full_y, full_z = model.predict(X)
    np.testing.assert_allclose(np.stack(ys, axis=1), full_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(zs[-1], full_z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(zs[3], model.predict([X[0][:, :4], X[1][:, :4]])[1], rtol=1e-5, atol=1e-6)
    s.reset()
    np.testing.assert_allclose(s.step({"a": X[0][:, 0], "b": X[1][:, 0]})[0], full_y[:, 0], rtol=1e-5, atol=1e-6)


# ---- errors ---------------------------------------------------------------------------------------
def test_errors_name_the_problem(rng):
    a = Input(shape=(None, 3))
    b = Input(shape=(None, 3))
    y = Dense(1)(LSTM(2)(a))
    with pytest.raises(ValueError, match="disconnected"):
        Model(b, y)
    with pytest.raises(TypeError, match="inputs and outputs"):
        Model()
    with pytest.raises(ValueError, match="not used"):
        Model([a, b], y)
    layer = LSTM(2)
    layer(a)
    with pytest.raises(ValueError, match="built for input"):
        layer(Input(shape=(None, 5)))
    with pytest.raises(TypeError, match="list"):
        LSTM(2)([a, b])
    with pytest.raises(ValueError, match="Input: shape"):
        Input()
    m = Model(a, y)
    with pytest.raises(TypeError, match="add"):
        m.add(Dense(1))
    with pytest.raises(ValueError, match="expected input of shape"):
        m.predict(np.zeros((2, 4, 5), np.float32))
    two = Model([a, b], [y, Dense(1)(LSTM(2)(b))])
    with pytest.raises(ValueError, match="2 inputs"):
        two.predict(np.zeros((2, 4, 3), np.float32))
    with pytest.raises(ValueError, match="unknown"):
        two.predict({"input": np.zeros((2, 4, 3)), "nope": np.zeros((2, 4, 3))})
    with pytest.raises(TypeError, match="symbolic"):
        np.asarray(y)


# ---- ONNX ----------------------------------------------------------------------------------------
def test_graph_export_verified_in_onnxruntime(tmp_path, rng):
    pytest.importorskip("onnxruntime")
    from edgernn import onnx as eo

    enc_in = Input(shape=(None, 3), name="enc")
    dec_in = Input(shape=(None, 2), name="dec")
    masked = Masking()(enc_in)
    _, h, c = LSTM(5, return_state=True)(masked)
    seq = LSTM(5, return_sequences=True)(dec_in, initial_state=[h, c])
    y = Dense(2)(seq)
    z = Dense(1, name="score")(GRU(3)(seq))
    model = Model([enc_in, dec_in], [y, z], seed=0)
    randomize(model)
    path = eo.export(model, tmp_path / "g.onnx", verify=True)
    report = eo.verify(model, path)
    assert report.passed and len(report.cases) >= 10 and report.weights_compared > 0
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["enc", "dec"]
    assert [o.name for o in sess.get_outputs()] == ["dense", "score"]
    with pytest.raises(eo.UnsupportedError, match="streaming"):
        eo.export(model, tmp_path / "s.onnx", streaming=True)


def test_chain_model_exports_like_sequential(tmp_path, rng):
    pytest.importorskip("onnxruntime")
    from edgernn import onnx as eo

    a = Input(shape=(None, 2))
    model = Model(a, Dense(1)(GRU(4, return_sequences=True)(a)), seed=0)
    eo.export(model, tmp_path / "full.onnx", verify=True)
    eo.export(model, tmp_path / "step.onnx", streaming=True, verify=True)


# ---- attention in graphs ---------------------------------------------------------------------------
def _encoder_decoder(attention_cls, dtype="float64", **kw):
    from edgernn.layers import Bidirectional

    enc_in = Input(shape=(None, 3), name="src")
    dec_in = Input(shape=(None, 2), name="tgt")
    enc = Bidirectional(GRU(3, return_sequences=True))(Masking()(enc_in))  # padded source steps: zero weight
    dec = LSTM(4, return_sequences=True)(dec_in)
    ctx = attention_cls(**kw)([dec, enc])
    y = Dense(2)(ctx)
    return Model([enc_in, dec_in], y, dtype=dtype, seed=0)


@pytest.mark.parametrize("kind", ["additive_units", "additive", "dot_scaled", "concat"])
def test_bptt_through_attention_into_the_rnns(kind, rng):
    from edgernn.layers import AdditiveAttention, Attention

    cls, kw = {"additive_units": (AdditiveAttention, {"units": 5}), "additive": (AdditiveAttention, {}),
               "dot_scaled": (Attention, {"use_scale": True}),
               "concat": (Attention, {"score_mode": "concat", "use_scale": True})}[kind]
    if kind in ("additive", "dot_scaled", "concat"):  # query and value of the same width (Keras' layers)
        from edgernn.layers import Bidirectional

        enc_in = Input(shape=(None, 3), name="src")
        dec_in = Input(shape=(None, 2), name="tgt")
        enc = Bidirectional(GRU(3, return_sequences=True))(Masking()(enc_in))
        dec = LSTM(6, return_sequences=True)(dec_in)
        model = Model([enc_in, dec_in], Dense(2)(cls(**kw)([dec, enc])), dtype="float64", seed=0)
    else:
        model = _encoder_decoder(cls, **kw)
    model.compile("sgd", "mse")
    randomize(model)
    Xe = rng.standard_normal((3, 6, 3))
    Xe[1, 4:] = 0.0  # padding of sample 1 (Masking)
    Xd = rng.standard_normal((3, 4, 2))
    assert graph_gradcheck(model, [Xe, Xd], [rng.standard_normal((3, 4, 2))], n_per_param=5) > 30


def test_attention_graph_export_and_causal_self_attention_stream(tmp_path, rng):
    pytest.importorskip("onnxruntime")
    from edgernn import onnx as eo
    from edgernn.layers import AdditiveAttention, Attention

    model = _encoder_decoder(AdditiveAttention, dtype="float32", units=4)
    randomize(model)
    assert eo.export(model, tmp_path / "attn.onnx", verify=True)
    a = Input(shape=(None, 2))
    h = GRU(4, return_sequences=True)(a)
    ctx = Attention(use_causal_mask=True)([h, h])
    model2 = Model(a, Dense(1)(ctx), seed=0)
    eo.export(model2, tmp_path / "causal.onnx", verify=True)

    s = model2.stream()
    X = rng.standard_normal((1, 40, 2)).astype(np.float32)  # past the first buffer growth (16, 32)
    steps = np.stack([s.step(X[0, t]) for t in range(40)])
    np.testing.assert_allclose(steps, model2.predict(X)[0], rtol=1e-5, atol=1e-5)
    s.reset()
    np.testing.assert_allclose(s.step(X[0, 0]), steps[0], rtol=1e-6)
    with pytest.raises(ValueError, match="use_causal_mask"):
        Model(a, Attention()([h, h])).stream()


def test_residual_causal_graph_streams(rng):
    from edgernn.layers import Add, Concatenate, Conv1D, LayerNormalization, TimeDistributed

    a = Input(shape=(None, 3))
    c = Conv1D(4, 3, padding="causal", dilation_rate=2, activation="relu")(a)
    h = GRU(4, return_sequences=True)(c)
    r = LayerNormalization()(Add()([h, c]))  # a residual connection
    y = TimeDistributed(Dense(2))(Concatenate()([r, c]))
    model = Model(a, y, seed=0)
    X = rng.standard_normal((2, 9, 3)).astype(np.float32)
    s = model.stream(batch_size=2)
    steps = np.stack([s.step(X[:, t]) for t in range(9)], axis=1)
    np.testing.assert_allclose(steps, model.predict(X), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="causal"):
        Model(a, GRU(2)(Conv1D(2, 3, padding="same")(a))).stream()
    seq = Sequential([Input(shape=(None, 3)), Conv1D(4, 2, padding="causal"), LSTM(3, return_sequences=True),
                      LayerNormalization(), Dense(1)], seed=0)
    s = seq.stream()
    steps = np.stack([s.step(X[0, t]) for t in range(9)])
    np.testing.assert_allclose(steps, seq.predict(X[:1])[0], rtol=1e-5, atol=1e-5)


def test_classic_keras_seq2seq_and_merges(tmp_path, rng):
    """LSTM -> RepeatVector -> LSTM -> TimeDistributed(Dense), plus a side branch merged three ways:
    gradients, training, save/load and ONNX export of one graph."""
    from edgernn.layers import (
        Add,
        Concatenate,
        GlobalAveragePooling1D,
        Multiply,
        RepeatVector,
        TimeDistributed,
    )

    a = Input(shape=(None, 2), name="series")
    code = LSTM(4)(a)
    side = Dense(4, activation="tanh")(GlobalAveragePooling1D()(a))
    z = Concatenate()([Add()([code, side]), Multiply()([code, side])])
    seq = LSTM(3, return_sequences=True)(RepeatVector(5)(z))
    y = TimeDistributed(Dense(2))(seq)
    model = Model(a, y, dtype="float64", seed=0)
    model.compile("sgd", "mse")
    randomize(model)
    X = rng.standard_normal((3, 6, 2))
    assert graph_gradcheck(model, [X], [rng.standard_normal((3, 5, 2))], n_per_param=4) > 30
    m32 = Model.from_config(model.get_config())
    m32.set_weights(model.get_weights())
    m32.astype("float32")
    m32.compile("adam", "mse")
    Xf = X.astype(np.float32)
    h = m32.fit(Xf, np.zeros((3, 5, 2), np.float32), epochs=5, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    m32.save(tmp_path / "s.npz")
    back = edgernn.load_model(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.predict(Xf), m32.predict(Xf))
    pytest.importorskip("onnxruntime")
    from edgernn import onnx as eo

    eo.export(m32, tmp_path / "s.onnx", verify=True)
