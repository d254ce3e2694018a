"""Training: learning tests (several seeds), optimizers, losses, callbacks, divergence, reproducibility."""

import io
import os

import numpy as np
import pytest

from edgernn import Sequential, TrainingDiverged, callbacks, losses, optimizers
from edgernn.layers import GRU, LSTM, Dense, Dropout, Masking, SimpleRNN

# EDGERNN_TEST_SEEDS=3,4,5 runs the learning tests on other seeds
SEEDS = [int(s) for s in os.environ.get("EDGERNN_TEST_SEEDS", "0,1,2").split(",")]


def sine_windows(n, T, seed):
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, n)
    freq = rng.uniform(0.15, 0.35, n)
    t = np.arange(T + 1)
    s = np.sin(phase[:, None] + freq[:, None] * t[None, :])  # (n, T+1)
    return s[:, :T, None].astype(np.float32), s[:, T:].astype(np.float32)


# ---- learning -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_lstm_learns_sine_next_value(seed):
    """Next value of a sine of random phase and frequency: variance 0.5 -> MSE below 0.005."""
    x, y = sine_windows(384, 20, seed)
    xt, yt = sine_windows(128, 20, seed + 100)
    m = Sequential([LSTM(16, input_shape=(None, 1)), Dense(1)], seed=seed)
    m.compile(loss="mse", optimizer=optimizers.Adam(0.01))
    h = m.fit(x, y, batch_size=32, epochs=25, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0] / 10
    assert m.evaluate(xt, yt) < 0.005


@pytest.mark.parametrize("seed", SEEDS)
def test_gru_classifies_sequences(seed):
    """Is the sum of the first half larger than that of the second half (samples with a margin
    of 1.5)? Validation accuracy > 0.92 (chance 0.5)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1200, 12, 1)).astype(np.float32)
    d = x[:, :6, 0].sum(1) - x[:, 6:, 0].sum(1)
    keep = np.abs(d) > 1.5
    x, y = x[keep][:640], (d[keep][:640] > 0).astype(np.float32)
    m = Sequential([GRU(12, input_shape=(None, 1)), Dense(1)], seed=seed)
    m.compile(loss=losses.BinaryCrossentropy(from_logits=True), optimizer=optimizers.Adam(0.02),
              metrics=["accuracy"])
    h = m.fit(x[:512], y[:512], batch_size=32, epochs=15, validation_data=(x[512:], y[512:]), verbose=0)
    assert h.history["val_accuracy"][-1] > 0.92, h.history["val_accuracy"]


@pytest.mark.parametrize("seed", SEEDS)
def test_variable_length_sequence_to_sequence(seed):
    """y_t = x_{t-1} on ragged sequences (a list of arrays): masked MSE below 0.01 (from ~0.33)."""
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-1, 1, (int(n), 1)).astype(np.float32) for n in rng.integers(3, 16, 256)]
    ys = [np.concatenate([np.zeros((1, 1), np.float32), a[:-1]]) for a in xs]
    m = Sequential([SimpleRNN(12, return_sequences=True, input_shape=(None, 1)), Dense(1)], seed=seed)
    m.compile(loss="mse", optimizer=optimizers.Adam(0.02))
    m.fit(xs, ys, batch_size=32, epochs=30, verbose=0)
    pred = m.predict(xs[:64])
    mse = np.mean(np.concatenate([(p - t).ravel() ** 2 for p, t in zip(pred, ys[:64], strict=True)]))
    assert mse < 0.01


@pytest.mark.parametrize("seed", SEEDS)
def test_stateful_tbptt_uses_state_across_batches(seed):
    """Echo with delay 3 over one long stream cut into chunks of 4 steps: three steps of every
    chunk need inputs of the previous chunk, so only a model that carries its state across
    batches can get below 0.75 * 1/3 (the error of a chunk-local model); we ask for 0.05."""
    rng = np.random.default_rng(seed)
    B, chunk, n_chunks = 8, 4, 40
    stream = rng.uniform(-1, 1, (B, chunk * n_chunks + 3)).astype(np.float32)
    x = stream[:, 3:]
    y = stream[:, :-3]  # y_t = x_{t-3}
    # batch k holds chunk k of every one of the B parallel streams
    xb = x.reshape(B, n_chunks, chunk).transpose(1, 0, 2).reshape(-1, chunk, 1)
    yb = y.reshape(B, n_chunks, chunk).transpose(1, 0, 2).reshape(-1, chunk, 1)
    m = Sequential([LSTM(16, stateful=True, return_sequences=True, input_shape=(None, 1)), Dense(1)], seed=seed)
    m.compile(loss="mse", optimizer=optimizers.Adam(0.01))
    h = m.fit(xb, yb, batch_size=B, epochs=12, shuffle=False, verbose=0)
    assert h.history["loss"][-1] < 0.05, h.history["loss"]
    # control: the same model without state carry stays near the chunk-local bound
    m = Sequential([LSTM(16, return_sequences=True, input_shape=(None, 1)), Dense(1)], seed=seed)
    m.compile(loss="mse", optimizer=optimizers.Adam(0.01))
    h = m.fit(xb, yb, batch_size=B, epochs=12, shuffle=False, verbose=0)
    assert h.history["loss"][-1] > 0.2


# ---- reproducibility ------------------------------------------------------------------------------
def test_seed_gives_bit_identical_training():
    x, y = sine_windows(96, 10, 0)

    def run(**fit_kw):
        m = Sequential([LSTM(6, return_sequences=True, dropout=0.2, input_shape=(None, 1)), Dropout(0.3),
                        GRU(4), Dense(1)], seed=42)
        m.compile(loss="mse", optimizer="adam")
        m.fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0, **fit_kw)
        return m.get_weights()

    a, b = run(), run()
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)
    c, d = run(seed=5), run(seed=5)
    for wc, wd in zip(c, d, strict=True):
        np.testing.assert_array_equal(wc, wd)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a, c, strict=True))


# ---- divergence ----------------------------------------------------------------------------------
def test_divergence_stops_and_restores_last_good_weights():
    x, y = sine_windows(64, 8, 0)
    m = Sequential([SimpleRNN(8, input_shape=(None, 1), activation="relu"), Dense(1)], seed=0)
    m.compile(loss="mse", optimizer=optimizers.SGD(learning_rate=1e4))
    seen = []

    class Record(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append([w.copy() for w in self.model.get_weights()])

    with pytest.raises(TrainingDiverged, match=r"epoch \d+, batch \d+") as info:
        m.fit(x, y, batch_size=8, epochs=50, verbose=0, callbacks=[Record()])
    assert isinstance(info.value, FloatingPointError) and info.value.epoch is not None
    weights = m.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    # the weights from before the last update: those at the end of the batch before the last recorded one
    want = seen[-2] if len(seen) >= 2 else None
    if want is not None:
        for w, v in zip(weights, want, strict=True):
            np.testing.assert_array_equal(w, v)
    assert np.isfinite(m.predict(x)).all()


# ---- optimizers ----------------------------------------------------------------------------------
def _steps(opt, n=3, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(5)
    gs = [rng.standard_normal(5) for _ in range(n)]
    out = p.copy()
    for g in gs:
        opt.apply([out], [g.copy()])
    return p, gs, out


def test_sgd_momentum_nesterov_rules():
    p, gs, out = _steps(optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    v = np.zeros_like(p)
    for g in gs:
        v = 0.9 * v - 0.1 * g
        p = p + 0.9 * v - 0.1 * g
    np.testing.assert_allclose(out, p)
    p, gs, out = _steps(optimizers.SGD(0.1, momentum=0.5))
    v = np.zeros_like(p)
    for g in gs:
        v = 0.5 * v - 0.1 * g
        p = p + v
    np.testing.assert_allclose(out, p)


def test_rmsprop_adam_adamw_rules():
    p, gs, out = _steps(optimizers.RMSprop())
    v = np.zeros_like(p)
    for g in gs:
        v = 0.9 * v + 0.1 * g * g
        p = p - 0.001 * g / np.sqrt(v + 1e-7)
    np.testing.assert_allclose(out, p)
    for opt, wd in ((optimizers.Adam(0.01), 0.0), (optimizers.AdamW(0.01, weight_decay=0.1), 0.1)):
        p, gs, out = _steps(opt)
        m = np.zeros_like(p)
        v = np.zeros_like(p)
        for t, g in enumerate(gs, 1):
            p = p - 0.01 * wd * p
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            p = p - 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
        np.testing.assert_allclose(out, p)


def test_adam_one_pass_step_matches_the_numpy_rule():
    """Adam updates contiguous parameters in one jitted pass; strided gradients, other dtypes
    and amsgrad take the numpy rule: the same numbers (float32 rounding aside)."""
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(6, 5)).astype(np.float32)
    gs = [rng.normal(size=(5, 6)).astype(np.float32).T for _ in range(4)]  # transposed: strided
    fast, slow = optimizers.Adam(0.01), optimizers.Adam(0.01)
    pf, ps = p0.copy(), p0.copy()
    for g in gs:
        fast.apply([pf], [np.ascontiguousarray(g)])
        slow.apply([ps], [g])
    assert pf.dtype == np.float32 and not np.array_equal(pf, p0)
    np.testing.assert_allclose(pf, ps, rtol=2e-6, atol=1e-7)


def test_gradient_clipping():
    g1, g2 = np.array([3.0, 4.0]), np.array([0.0, 0.5])
    c = optimizers.SGD(clipnorm=1.0).clip([g1, g2])
    np.testing.assert_allclose(c[0], [0.6, 0.8])
    np.testing.assert_allclose(c[1], g2)  # per-tensor, as Keras
    c = optimizers.SGD(global_clipnorm=1.0).clip([g1, g2])
    total = np.sqrt(25.25)
    np.testing.assert_allclose(c[0], g1 / total)
    np.testing.assert_allclose(c[1], g2 / total)
    c = optimizers.SGD(clipvalue=0.5).clip([g1, -g1])
    np.testing.assert_allclose(c[0], [0.5, 0.5])
    np.testing.assert_allclose(c[1], [-0.5, -0.5])
    with pytest.raises(ValueError):
        optimizers.Adam(clipnorm=-1)


def test_learning_rate_schedules():
    sched = optimizers.SGD(learning_rate=lambda step: 1.0 / (1 + step))
    p = np.zeros(1)
    for _ in range(3):
        sched.apply([p], [np.ones(1)])
    np.testing.assert_allclose(p, [-(1 + 1 / 2 + 1 / 3)])
    x, y = sine_windows(32, 5, 0)
    m = Sequential([GRU(3, input_shape=(None, 1)), Dense(1)], seed=0)
    m.compile(loss="mse", optimizer="sgd")
    h = m.fit(x, y, epochs=3, verbose=0, callbacks=[callbacks.LearningRateScheduler(lambda e: 0.1 * 0.5 ** e)])
    np.testing.assert_allclose(h.history["lr"], [0.1, 0.05, 0.025])
    h = m.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.LearningRateScheduler(lambda e, lr: lr * 2)])
    np.testing.assert_allclose(h.history["lr"], [0.05, 0.1])


# ---- losses ---------------------------------------------------------------------------------------
def test_loss_values_and_stability():
    y = np.array([[1.0], [0.0]])
    z = np.array([[800.0], [-800.0]])  # extreme logits: finite and ~0
    v, g = losses.BinaryCrossentropy(from_logits=True).value_and_grad(y, z)
    assert v == pytest.approx(0.0) and np.isfinite(g).all()
    v, _ = losses.BinaryCrossentropy(from_logits=True).value_and_grad(1 - y, z)
    assert v == pytest.approx(800.0)
    v, g = losses.CategoricalCrossentropy(from_logits=True).value_and_grad(np.eye(3)[[0]], np.array([[1e4, 0, -1e4]]))
    assert v == pytest.approx(0.0) and np.isfinite(g).all()
    p = np.array([[0.7, 0.2, 0.1]])
    v, _ = losses.CategoricalCrossentropy().value_and_grad(np.eye(3)[[1]], p)
    assert v == pytest.approx(-np.log(0.2))
    v, _ = losses.SparseCategoricalCrossentropy().value_and_grad(np.array([1]), p)
    assert v == pytest.approx(-np.log(0.2))
    v, _ = losses.BinaryCrossentropy().value_and_grad(np.array([[1.0]]), np.array([[0.0]]))
    assert v == pytest.approx(-np.log(1e-7), rel=1e-6)  # clipped as Keras
    v, _ = losses.Huber(delta=1.0).value_and_grad(np.zeros((2, 1)), np.array([[0.5], [3.0]]))
    assert v == pytest.approx((0.125 + 2.5) / 2)
    v, _ = losses.MeanAbsoluteError().value_and_grad(np.zeros((1, 2)), np.array([[1.0, -3.0]]))
    assert v == pytest.approx(2.0)


def test_loss_mask_ignores_padding():
    y = np.zeros((2, 3, 1))
    p = np.ones((2, 3, 1))
    p[1, 2] = 100.0  # padding
    mask = np.array([[1, 1, 1], [1, 1, 0]], bool)
    v, g = losses.MeanSquaredError().value_and_grad(y, p, mask)
    assert v == pytest.approx(1.0) and g[1, 2, 0] == 0.0


def test_loss_targets_shapes():
    mse = losses.get("mse")
    assert mse.prepare_targets(np.zeros(4), (4, 1)).shape == (4, 1)
    with pytest.raises(ValueError, match="do not match"):
        mse.prepare_targets(np.zeros((4, 2)), (4, 1))
    sp = losses.get("sparse_categorical_crossentropy")
    assert sp.prepare_targets(np.array([[1], [2]]), (2, 3)).shape == (2,)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        sp.prepare_targets(np.array([3, 0]), (2, 3))


# ---- callbacks -----------------------------------------------------------------------------------
def _tiny(seed=0):
    m = Sequential([SimpleRNN(4, input_shape=(None, 1)), Dense(1)], seed=seed)
    m.compile(loss="mse", optimizer="adam", metrics=["mae", "rmse"])
    return m


def test_history_metrics_and_validation():
    x, y = sine_windows(40, 5, 0)
    h = _tiny().fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0)
    assert set(h.history) == {"loss", "mae", "rmse", "val_loss", "val_mae", "val_rmse"}
    assert all(len(v) == 3 for v in h.history.values())
    assert h.epoch == [0, 1, 2]
    m = _tiny()
    res = m.evaluate(x, y, return_dict=True)
    assert res["rmse"] == pytest.approx(np.sqrt(res["loss"]), rel=1e-5)
    assert m.evaluate(x, y) == pytest.approx([res["loss"], res["mae"], res["rmse"]])


def test_early_stopping_restores_best_weights():
    x, y = sine_windows(40, 5, 0)
    m = _tiny()
    m.compile(loss="mse", optimizer=optimizers.SGD(0.5))  # noisy, so val_loss does not fall steadily
    es = callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    best = {}

    class Keep(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            best[epoch] = (logs["val_loss"], self.model.get_weights())

    h = m.fit(x, y, epochs=40, batch_size=4, validation_split=0.25, verbose=0, callbacks=[Keep(), es])
    assert len(h.epoch) < 40 and es.stopped_epoch is not None
    b = min(best, key=lambda e: best[e][0])
    for w, v in zip(m.get_weights(), best[b][1], strict=True):
        np.testing.assert_array_equal(w, v)


def test_model_checkpoint(tmp_path):
    from edgernn import load_model

    x, y = sine_windows(40, 5, 0)
    m = _tiny()
    path = tmp_path / "ckpt-{epoch:02d}.npz"
    m.fit(x, y, epochs=2, validation_split=0.25, verbose=0, callbacks=[callbacks.ModelCheckpoint(str(path))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-01.npz", "ckpt-02.npz"]
    best = tmp_path / "best.npz"
    m.fit(x, y, epochs=3, validation_split=0.25, verbose=0,
          callbacks=[callbacks.ModelCheckpoint(str(best), save_best_only=True)])
    np.testing.assert_array_equal(load_model(best).predict(x[:3]).shape, (3, 1))


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_output(monkeypatch):
    x, y = sine_windows(40, 5, 0)
    m = _tiny()
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    m.fit(x, y, epochs=2, verbose=0)
    assert err.getvalue() == ""
    for verbose in (1, 2, "auto"):  # not a TTY (a log, CI, a notebook): one line per epoch, as Keras
        err.seek(0)
        err.truncate()
        if verbose == "auto":
            m.fit(x, y, epochs=2)  # the default
        else:
            m.fit(x, y, epochs=2, verbose=verbose)
        lines = err.getvalue().splitlines()
        assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "loss:" in lines[0], verbose
        assert "\r" not in err.getvalue()
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    m.fit(x, y, epochs=1, batch_size=8, verbose=1)
    out = tty.getvalue()
    assert "Epoch 1/1" in out and "5/5 [" in out and "loss:" in out


def test_stateful_fit_checks():
    m = Sequential([LSTM(3, stateful=True, input_shape=(None, 1)), Dense(1)], seed=0)
    m.compile(loss="mse", optimizer="adam")
    x, y = sine_windows(20, 4, 0)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        m.fit(x, y, batch_size=8, verbose=0, shuffle=False)
    with pytest.warns(RuntimeWarning, match="shuffle"):
        m.fit(x, y, batch_size=5, verbose=0)


def test_masking_model_trains():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 8, 1)).astype(np.float32)
    lengths = rng.integers(2, 9, 64)
    x[np.arange(8)[None, :] >= lengths[:, None]] = 0.0
    y = np.array([xi[:n].sum() for xi, n in zip(x[..., 0], lengths, strict=True)], np.float32)
    m = Sequential([Masking(input_shape=(None, 1)), GRU(8), Dense(1)], seed=0)
    m.compile(loss="mse", optimizer=optimizers.Adam(0.02))
    h = m.fit(x, y, epochs=20, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.2 * h.history["loss"][0]


def test_first_compile_is_announced_and_kept_out_of_train_time(monkeypatch):
    """Issue 12.5: say that kernels are compiled, and time the epochs without it."""
    import edgernn.models as models

    x, y = sine_windows(40, 5, 0)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(models, "_kernels_cached", lambda: False)
    monkeypatch.setattr(models, "_WARM", set())
    m = _tiny()
    h = m.fit(x, y, epochs=2, verbose=2)
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("compiling kernels once for this machine") and lines[1].startswith("Epoch 1/2")
    assert h.compile_seconds > 0 and h.train_seconds > 0
    err.seek(0)
    err.truncate()
    h = m.fit(x, y, epochs=1, verbose=2)  # compiled now: no message, nothing to subtract
    assert "compiling" not in err.getvalue() and h.compile_seconds == 0.0
    monkeypatch.setattr(models, "_WARM", set())
    err.seek(0)
    err.truncate()
    _tiny().fit(x, y, epochs=1, verbose=0)
    assert err.getvalue() == ""


def test_warm_up_changes_nothing(monkeypatch):
    import edgernn.models as models

    x, y = sine_windows(40, 5, 0)
    cold_model = Sequential([LSTM(4, input_shape=(None, 1), stateful=False), Dropout(0.3), Dense(1)], seed=2)
    warm_model = Sequential([LSTM(4, input_shape=(None, 1), stateful=False), Dropout(0.3), Dense(1)], seed=2)
    for m in (cold_model, warm_model):
        m.compile(loss="mse", optimizer="adam")
    monkeypatch.setattr(models, "_WARM", set())
    cold = cold_model.fit(x, y, epochs=2, verbose=0)
    warm = warm_model.fit(x, y, epochs=2, verbose=0)
    assert cold.compile_seconds > 0 and warm.compile_seconds == 0.0
    assert cold.history == warm.history
    for a, b in zip(cold_model.get_weights(), warm_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
