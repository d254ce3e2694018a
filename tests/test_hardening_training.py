"""Issue 13: divergence detection (item 4), fit vs predict in threads (item 5), fit arguments (item 12)."""

import threading

import numpy as np
import pytest

import edgernn
from edgernn import Sequential, TrainingDiverged, optimizers
from edgernn.layers import GRU, LSTM, Dense, Dropout


def data(n=64, T=10, F=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, T, F)).astype(np.float32), rng.standard_normal((n, 1)).astype(np.float32)


def lstm_model(opt, seed=0, **kw):
    m = Sequential([LSTM(8, input_shape=(None, 3), **kw), Dense(1)], seed=seed)
    m.compile(loss="mse", optimizer=opt)
    return m


def finite(m):
    return all(np.isfinite(w).all() for w in m.get_weights())


# ---- 13.4 divergence --------------------------------------------------------------------------------
@pytest.mark.parametrize("opt", [lambda: optimizers.SGD(float("inf")), lambda: optimizers.SGD(1e38),
                                 lambda: optimizers.Adam(1e6), lambda: optimizers.RMSprop(1e6),
                                 lambda: optimizers.SGD(1e4)],
                         ids=["sgd-inf", "sgd-1e38", "adam-1e6", "rmsprop-1e6", "sgd-1e4"])
def test_divergence_is_caught_and_weights_restored(opt):
    x, y = data()
    m = lstm_model(opt())
    with pytest.raises(TrainingDiverged, match="diverged") as ei:
        m.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert finite(m)
    assert ei.value.epoch == 0 and ei.value.batch is not None
    # the restored weights still give a finite, sane loss
    m.compile(loss="mse", optimizer="sgd")
    assert np.isfinite(m.evaluate(x, y)) and m.evaluate(x, y) < 1e6  # below the explosion threshold


def test_overflowing_last_update_is_caught():
    """A single batch, a single epoch: the only update overflows. Before: fit returned normally
    with infinite weights."""
    x, y = data(16)
    m = lstm_model(optimizers.SGD(float("inf")))
    before = m.get_weights()
    with pytest.raises(TrainingDiverged, match="NaN or inf"):
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for a, b in zip(m.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_finite_but_exploded_last_update_is_caught_at_the_end():
    """The last update leaves huge but finite weights: the end-of-fit check sees the loss explode."""
    x, y = data(16)
    m = lstm_model(optimizers.SGD(1e12))
    before = m.get_weights()
    with pytest.raises(TrainingDiverged, match="after the last update|exploded|became"):
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for a, b in zip(m.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_validation_loss_after_bad_update_is_caught():
    x, y = data(32)
    m = lstm_model(optimizers.SGD(1e30))
    with pytest.raises(TrainingDiverged):
        m.fit(x, y, epochs=2, batch_size=32, validation_split=0.5, verbose=0)
    assert finite(m)


def test_normal_training_is_not_flagged():
    x, y = data(64)
    m = lstm_model(optimizers.Adam(0.01))
    h = m.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert len(h.history["loss"]) == 3 and finite(m)


def test_divergence_factor_can_be_disabled():
    x, y = data()
    m = lstm_model(optimizers.Adam(1e6))
    m.divergence_factor = None  # only NaN/inf count
    try:
        m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    except TrainingDiverged as exc:
        assert "exploded" not in str(exc)
    assert finite(m)


def test_train_on_batch_divergence_leaves_weights():
    x, y = data(8)
    m = lstm_model(optimizers.SGD(float("inf")))
    before = m.get_weights()
    with pytest.raises(TrainingDiverged):
        m.train_on_batch(x, y)
    for a, b in zip(m.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


# ---- 13.12 fit arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,exc,msg", [
    ({"batch_size": 2.7}, TypeError, "batch_size"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": True}, TypeError, "batch_size"),
    ({"epochs": -5}, ValueError, "epochs"),
    ({"epochs": 2.5}, TypeError, "epochs"),
    ({"validation_split": "0.2"}, TypeError, "validation_split"),
    ({"validation_split": 1.0}, ValueError, "validation_split"),
    ({"validation_split": float("nan")}, ValueError, "validation_split"),
    ({"initial_epoch": -1}, ValueError, "initial_epoch"),
    ({"steps_per_epoch": 0}, ValueError, "steps_per_epoch"),
    ({"verbose": 3}, ValueError, "verbose"),
    ({"shuffle": "yes"}, TypeError, "shuffle"),
    ({"class_weight": [1, 2]}, TypeError, "class_weight"),
    ({"sample_weight": np.ones(5)}, ValueError, "sample_weight"),
])
def test_fit_argument_errors_name_the_argument(kw, exc, msg):
    x, y = data(16)
    m = lstm_model("sgd")
    before = m.get_weights()
    with pytest.raises(exc, match=msg):
        m.fit(x, y, **{"verbose": 0, **kw})
    for a, b in zip(m.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_predict_batch_size_checked():
    x, _ = data(4)
    m = lstm_model("sgd")
    with pytest.raises(TypeError, match="batch_size"):
        m.predict(x, batch_size=2.7)


def test_predict_never_returns_the_callers_array():
    """One batch is returned without a copy, except where an output views the input (inference
    Dropout returns its input as it is)."""
    x = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    m = edgernn.Sequential([edgernn.layers.Dropout(0.5, input_shape=(None, 2))])
    y = m.predict(x)
    np.testing.assert_array_equal(y, x)
    assert not np.may_share_memory(y, x)
    y2 = m.predict(x)
    assert not np.may_share_memory(y, y2)
    r = lstm_model("sgd")
    xs = data(4)[0]
    a, b = r.predict(xs), r.predict(xs)
    assert not np.may_share_memory(a, b)  # fresh results, call after call
    np.testing.assert_array_equal(a, b)


def test_epochs_zero_trains_nothing():
    x, y = data(16)
    m = lstm_model("sgd")
    before = m.get_weights()
    h = m.fit(x, y, epochs=0, verbose=0)
    assert h.history == {}
    for a, b in zip(m.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


# ---- 13.5 fit and predict in threads ---------------------------------------------------------------------
def _fit_weights(model, x, y, hammer=None):
    stop = threading.Event()
    errors = []

    def predict_loop():
        try:
            while not stop.is_set():
                out = model.predict(hammer)
                assert out.shape == (hammer.shape[0], 1)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=predict_loop) for _ in range(2)] if hammer is not None else []
    for t in threads:
        t.start()
    try:
        model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    return model.get_weights()


@pytest.mark.parametrize("make", [
    lambda: Sequential([LSTM(8, input_shape=(None, 3), return_sequences=True), Dropout(0.2), GRU(6),
                        Dense(4, activation="tanh"), Dense(1)], seed=3),
])
def test_fit_while_other_threads_predict_is_unchanged(make):
    """Predict in two other threads during fit: training is bit-identical to a quiet fit.
    Before: the layers' forward caches were shared and predict overwrote them mid-step."""
    x, y = data(48)
    hammer = np.random.default_rng(9).standard_normal((5, 7, 3)).astype(np.float32)
    quiet = make()
    quiet.compile(loss="mse", optimizer=optimizers.Adam(0.01))
    ref = _fit_weights(quiet, x, y)
    busy = make()
    busy.compile(loss="mse", optimizer=optimizers.Adam(0.01))
    got = _fit_weights(busy, x, y, hammer)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_predict_writes_no_layer_cache():
    x, _ = data(4)
    m = Sequential([LSTM(4, input_shape=(None, 3), return_sequences=True), Dropout(0.1), Dense(2),
                    Dense(1)], seed=0)
    m.predict(x)
    for layer in m.layers:
        for attr in ("_cache", "_fwd", "_mask", "_keep", "_ids_cache"):
            assert not hasattr(layer, attr), (layer.name, attr)


def test_stateful_predict_during_fit_is_refused_clearly():
    m = Sequential([LSTM(4, stateful=True, input_shape=(None, 3)), Dense(1)], seed=0)
    m.compile(loss="mse", optimizer="adam")
    x, y = data(16)
    seen = []

    class Probe(edgernn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 0:
                def other():
                    try:
                        self.model.predict(x[:8])
                    except RuntimeError as exc:
                        seen.append(str(exc))
                t = threading.Thread(target=other)
                t.start()
                t.join()

    m.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0, callbacks=[Probe()])
    assert seen and "being trained in another thread" in seen[0]
    m.predict(x[:8])  # after fit: fine


def test_second_fit_while_training_is_refused():
    m = lstm_model("sgd")
    x, y = data(16)
    seen = []

    class Probe(edgernn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 0:
                def other():
                    try:
                        self.model.fit(x, y, verbose=0)
                    except RuntimeError as exc:
                        seen.append(str(exc))
                t = threading.Thread(target=other)
                t.start()
                t.join()

    m.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[Probe()])
    assert seen and "already being trained" in seen[0]
