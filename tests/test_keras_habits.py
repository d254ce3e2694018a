"""Issue 12 item 8: what a Keras user writes works as in Keras (or fails with a clear message)."""

import json
import zipfile

import numpy as np
import pytest

from edgernn import Sequential, callbacks, load_model, optimizers
from edgernn.layers import LSTM, Dense

rng = np.random.default_rng(0)
X = rng.standard_normal((32, 5, 2)).astype(np.float32)
Y = rng.standard_normal((32, 1)).astype(np.float32)
YC = (X[:, :, 0].sum(axis=1) > 0).astype(np.int64)  # binary classes


def reg(opt="sgd", seed=0):
    m = Sequential([LSTM(4, input_shape=(None, 2)), Dense(1)], seed=seed)
    m.compile(loss="mse", optimizer=opt)
    return m


def clf(seed=0):
    m = Sequential([LSTM(4, input_shape=(None, 2)), Dense(2, activation="softmax")], seed=seed)
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return m


def per_sample_mse(m, x, y):
    return ((m.predict(x) - y) ** 2).mean(axis=-1)


def test_sample_weight_in_evaluate_and_fit():
    m = reg()
    w = np.linspace(0.0, 2.0, 32).astype(np.float32)
    expect = float((per_sample_mse(m, X, Y) * w).mean())
    assert m.evaluate(X, Y, sample_weight=w) == pytest.approx(expect, rel=1e-5)
    # a constant weight 2 doubles every gradient: the same as twice the learning rate
    a, b = reg(optimizers.SGD(0.01)), reg(optimizers.SGD(0.02))
    a.fit(X, Y, sample_weight=np.full(32, 2.0), epochs=2, batch_size=8, shuffle=False, verbose=0)
    b.fit(X, Y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    for p, q in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-6)


def test_class_weight():
    ones = clf()
    plain = clf()
    h1 = ones.fit(X, YC, class_weight={0: 1.0, 1: 1.0}, epochs=2, verbose=0)
    h2 = plain.fit(X, YC, epochs=2, verbose=0)
    assert h1.history["loss"] == h2.history["loss"]
    only1 = clf()
    p = only1.predict(X)
    expect = float(np.mean(-np.log(np.clip(p[np.arange(32), YC], 1e-7, 1)) * (YC == 1)))
    got = only1.fit(X, YC, class_weight={0: 0.0, 1: 1.0}, epochs=1, batch_size=32, verbose=0).history["loss"][0]
    assert got == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ValueError, match="class_weight: no weight for classes \\[1\\]"):
        clf().fit(X, YC, class_weight={0: 1.0}, verbose=0)


def test_steps_per_epoch_with_arrays():
    m = reg()
    h = m.fit(X, Y, batch_size=8, steps_per_epoch=3, epochs=3, verbose=0)
    assert m.optimizer.iterations == 9 and len(h.history["loss"]) == 3


def test_generator_x():
    def batches():
        i = 0
        while True:
            yield X[i:i + 8], Y[i:i + 8]
            i = (i + 8) % 32

    m = reg()
    h = m.fit(batches(), steps_per_epoch=4, epochs=2, verbose=0)
    assert m.optimizer.iterations == 8 and len(h.history["loss"]) == 2
    # the same batches as arrays without shuffling: the same training
    ref = reg()
    ref.fit(X, Y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for p, q in zip(m.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(p, q)
    assert m.evaluate(batches(), steps=4) == pytest.approx(m.evaluate(X, Y), rel=1e-6)
    np.testing.assert_allclose(m.predict((X[i:i + 8] for i in range(0, 32, 8))), m.predict(X), atol=1e-7)


def test_finite_generator_without_steps_runs_one_epoch_then_says_why():
    m = reg()
    h = m.fit(((X[i:i + 8], Y[i:i + 8]) for i in range(0, 32, 8)), epochs=1, verbose=0)
    assert m.optimizer.iterations == 4 and len(h.history["loss"]) == 1
    with pytest.raises(ValueError, match="steps_per_epoch"):
        reg().fit(((X[i:i + 8], Y[i:i + 8]) for i in range(0, 32, 8)), epochs=2, verbose=0)


class Batches:  # what a keras.utils.Sequence subclass provides
    def __init__(self, batch_size=8, weights=False):
        self.batch_size, self.weights, self.epochs_ended = batch_size, weights, 0

    def __len__(self):
        return 32 // self.batch_size

    def __getitem__(self, i):
        sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return (X[sl], Y[sl], np.ones(self.batch_size)) if self.weights else (X[sl], Y[sl])

    def on_epoch_end(self):
        self.epochs_ended += 1


def test_sequence_x():
    seq = Batches()
    m = reg()
    h = m.fit(seq, epochs=3, validation_data=Batches(16), verbose=0)
    assert seq.epochs_ended == 3 and m.optimizer.iterations == 12
    assert "val_loss" in h.history and len(h.history["val_loss"]) == 3
    assert h.history["val_loss"][-1] == pytest.approx(m.evaluate(X, Y), rel=1e-5)
    np.testing.assert_allclose(m.predict(Batches(8)), m.predict(X), atol=1e-7)
    reg().fit(Batches(weights=True), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="y must be None"):
        reg().fit(Batches(), Y, verbose=0)


def test_on_batch_methods():
    m = Sequential([LSTM(4, input_shape=(None, 2)), Dense(1)], seed=0)
    m.compile(loss="mse", optimizer="sgd", metrics=["mae"])
    np.testing.assert_array_equal(m.predict_on_batch(X[:5]), m.predict(X[:5]))
    assert m.test_on_batch(X[:5], Y[:5]) == m.evaluate(X[:5], Y[:5])
    assert set(m.test_on_batch(X[:5], Y[:5], return_dict=True)) == {"loss", "mae"}
    loss = m.train_on_batch(X[:5], Y[:5])
    assert np.isfinite(loss) and m.optimizer.iterations == 1


def test_get_layer_and_weights_lists():
    m = Sequential([LSTM(4, input_shape=(None, 2), name="enc"), Dense(1, name="head")], seed=0)
    assert m.get_layer("head") is m.layers[1] and m.get_layer(index=0).name == "enc"
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        m.get_layer("nope")
    assert len(m.trainable_weights) == 5  # W, R, Wb (Rb is a stored zero buffer), kernel, bias
    assert sum(w.size for w in m.trainable_weights) == m.count_params()
    m.get_layer("enc").trainable = False
    assert len(m.trainable_weights) == 2 and len(m.non_trainable_weights) == 4
    m.trainable_weights[0][...] = 0.5  # the live arrays, as Keras variables
    assert np.all(m.get_layer("head").params["kernel"] == 0.5)
    assert len(m.weights) == len(m.get_weights())


def test_reduce_lr_on_plateau():
    m = reg(optimizers.SGD(0.1))
    cb = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e9, min_lr=0.02)
    h = m.fit(X, Y, epochs=5, verbose=0, callbacks=[cb])
    assert h.history["lr"] == pytest.approx([0.1, 0.05, 0.025, 0.02, 0.02])
    m2 = reg(optimizers.SGD(0.1))
    h2 = m2.fit(X, Y, epochs=3, validation_split=0.25, verbose=0,
                callbacks=[callbacks.ReduceLROnPlateau(factor=0.2, patience=2, min_lr=1e-4)])
    assert len(h2.history["lr"]) == 3
    with pytest.raises(ValueError, match="factor"):
        callbacks.ReduceLROnPlateau(factor=1.5)


def test_initializer_callables(tmp_path):
    def keras_style(shape, dtype=None):
        return np.full(shape, 0.1)

    def ours(shape, rng, dtype):
        return rng.uniform(-1, 1, shape).astype(dtype)

    m = Sequential([LSTM(3, input_shape=(None, 2), kernel_initializer=keras_style, recurrent_initializer=ours),
                    Dense(1, kernel_initializer=lambda shape, dtype=None: np.ones(shape))], seed=0)
    assert np.all(m.layers[0].params["W"] == np.float32(0.1))
    assert np.all(m.layers[1].params["kernel"] == 1.0)
    assert np.abs(m.layers[0].params["R"]).max() <= 1 and m.layers[0].params["R"].std() > 0.1
    m.save(tmp_path / "m.npz")
    m2 = load_model(tmp_path / "m.npz")
    for a, b in zip(m.get_weights(), m2.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with zipfile.ZipFile(tmp_path / "m.npz") as z:
        cfg = json.loads(str(np.load(z.open("__config__.npy"))[()]))
    assert cfg["model"]["config"]["layers"][0]["config"]["kernel_initializer"].startswith("custom:")
    with pytest.raises(ValueError, match="returned shape"):
        Sequential([Dense(2, input_shape=(3,), kernel_initializer=lambda shape, dtype=None: np.ones(3))])
    with pytest.raises(ValueError, match="custom initializer"):
        Dense(2, kernel_initializer="custom:keras_style")


def test_save_h5_is_a_clear_error(tmp_path):
    m = reg()
    with pytest.raises(ValueError, match=r"HDF5.*\.npz"):
        m.save(tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_progress_bar_with_a_generator_of_unknown_length(monkeypatch):
    import io

    class TTY(io.StringIO):
        def isatty(self):
            return True

    out = TTY()
    monkeypatch.setattr("sys.stderr", out)
    reg().fit(((X[i:i + 8], Y[i:i + 8]) for i in range(0, 32, 8)), epochs=1, verbose=1)
    assert "4/4 [" in out.getvalue() and "loss:" in out.getvalue()
