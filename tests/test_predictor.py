"""model.predictor(): weights packed once, results bit-identical to predict (every path)."""


import numpy as np
import pytest
from thread_util import run_in_threads

import edgernn
from edgernn import Input, Model, Sequential
from edgernn.layers import GRU, LSTM, Bidirectional, Dense, Dropout, Masking


def _x(B, T, I, seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, I)).astype(np.float32)


def _randomize(m, seed=1):
    """Non-zero biases (both of them) so that a bias mix-up shows."""
    rng = np.random.default_rng(seed)
    m.set_weights([(0.4 * rng.normal(size=w.shape)).astype(w.dtype) for w in m.get_weights()])
    return m


@pytest.mark.parametrize("cell", [LSTM, GRU])
@pytest.mark.parametrize("H", [16, 20, 64])
@pytest.mark.parametrize("seq", [True, False])
def test_equals_predict_bit_for_bit(cell, H, seq):
    I = 5
    m = _randomize(Sequential([cell(H, return_sequences=seq, input_shape=(None, I)), Dense(3)]))
    p = m.predictor()
    assert p.fast_layers == [m.layers[0].name]
    for B, T in [(1, 4), (1, 10), (2, 1), (2, 7), (11, 23), (1, 57)]:
        x = _x(B, T, I, seed=B * 100 + T)
        want = m.predict(x)
        got = p(x)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=f"B={B} T={T}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("T", [1, 2, 3])
def test_one_short_sequence_matches_predict_and_the_oracle(cell, T):
    """One sequence of < 4 steps: predict takes the batch-major kernels, the predictor the fused
    ones on its packed weights: equal to float32 rounding, and both to the float64 oracle."""
    import naive

    H, I = 20, 5
    layer = {"lstm": LSTM, "gru": GRU}[cell](H, return_sequences=True, input_shape=(None, I))
    m = _randomize(Sequential([layer]))
    x = _x(1, T, I, seed=T)
    got, want = m.predictor()(x), m.predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    lay = m.layers[0]
    Wb, Rb = lay._bias_args()
    ref = getattr(naive, cell)(x.astype(np.float64), lay.params["W"], lay.params["R"], Wb, Rb)[0][:, :, 0, :]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_stacked_and_other_layers():
    m = _randomize(Sequential([LSTM(32, return_sequences=True, input_shape=(None, 3)), Dropout(0.3),
                               GRU(24, return_sequences=True), LSTM(16), Dense(2, activation="tanh")]))
    p = m.predictor()
    assert len(p.fast_layers) == 3
    x = _x(4, 19, 3)
    np.testing.assert_array_equal(p(x), m.predict(x))
    np.testing.assert_array_equal(p.predict(x[:1]), m.predict(x[:1]))


@pytest.mark.parametrize("layer", [
    lambda: LSTM(8, peephole=True, return_sequences=True),
    lambda: LSTM(8, coupled_gates=True, return_sequences=True),
    lambda: LSTM(8, activation="relu", return_sequences=True),
    lambda: LSTM(8, go_backwards=True, return_sequences=True),
    lambda: GRU(8, reset_after=False, return_sequences=True),
    lambda: Bidirectional(LSTM(8, return_sequences=True)),
])
def test_layers_the_fused_kernels_do_not_run_are_left_to_forward(layer):
    m = _randomize(Sequential([Input(shape=(None, 3)), layer()]))
    p = m.predictor()
    assert p.fast_layers == []
    x = _x(3, 12, 3)
    np.testing.assert_array_equal(p(x), m.predict(x))


def test_lengths_ragged_lists_and_masking():
    m = _randomize(Sequential([LSTM(16, return_sequences=True, input_shape=(None, 2)), Dense(1)]))
    p = m.predictor()
    x = _x(5, 9, 2)
    L = np.array([9, 1, 4, 9, 6])
    np.testing.assert_array_equal(p(x, lengths=L), m.predict(x, lengths=L))
    ragged = [x[i, : L[i]] for i in range(5)]
    for a, b in zip(p(ragged), m.predict(ragged), strict=True):
        np.testing.assert_array_equal(a, b)
    mm = _randomize(Sequential([Masking(0.0, input_shape=(None, 2)), GRU(16), Dense(1)]))
    xm = x.copy()
    xm[1, 3:] = 0.0
    np.testing.assert_array_equal(mm.predictor()(xm), mm.predict(xm))


def test_functional_model():
    a = Input(shape=(None, 4))
    h = LSTM(16, return_sequences=True)(a)
    b = GRU(8)(h)
    m = _randomize(Model(a, [Dense(2)(b), b]))
    p = m.predictor()
    assert len(p.fast_layers) == 2
    x = _x(3, 8, 4)
    for got, want in zip(p(x), m.predict(x), strict=True):
        np.testing.assert_array_equal(got, want)


def test_snapshot_of_the_weights():
    m = _randomize(Sequential([LSTM(16, input_shape=(None, 2)), Dense(1)]))
    x = _x(8, 6, 2)
    p = m.predictor()
    before = m.predict(x)
    m.compile(optimizer="adam", loss="mse")
    m.fit(x, np.ones((8, 1), np.float32), epochs=2, verbose=0)
    m.set_weights([w * 2 for w in m.get_weights()])
    assert not np.array_equal(m.predict(x), before)
    np.testing.assert_array_equal(p(x), before)  # made before the changes: unchanged
    np.testing.assert_array_equal(m.predictor()(x), m.predict(x))


def test_inputs_untouched_and_results_fresh():
    m = _randomize(Sequential([LSTM(16, return_sequences=True, input_shape=(None, 3))]))
    p = m.predictor()
    x = _x(1, 12, 3)
    x0 = x.copy()
    ro = x.copy()
    ro.flags.writeable = False
    a, b, c = p(x), p(x), p(ro)
    np.testing.assert_array_equal(x, x0)
    assert not np.may_share_memory(a, b) and not np.may_share_memory(a, x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(p(x.astype(np.float64)), a)  # cast once, as predict does
    np.testing.assert_array_equal(p(np.asfortranarray(x)), a)
    d = Sequential([Dropout(0.5, input_shape=(None, 3))]).predictor()  # inference Dropout returns its input
    y = d(x)
    np.testing.assert_array_equal(y, x)
    assert not np.may_share_memory(y, x)
    with pytest.raises(ValueError, match="expected input"):
        p(np.zeros((1, 5, 2), np.float32))
    with pytest.raises(ValueError, match="empty"):
        p(np.zeros((0, 5, 3), np.float32))


def test_threads_and_parallel_batches():
    m = _randomize(Sequential([LSTM(64, return_sequences=True, input_shape=(None, 16)), Dense(1)]))
    p = m.predictor()
    xs = [_x(1 + 7 * k, 20 + k, 16, seed=k) for k in range(4)]
    want = [m.predict(x) for x in xs]
    out = [None] * 4

    def run(k):
        for _ in range(5):
            out[k] = p(xs[k])

    run_in_threads(run, 4)
    for a, b in zip(out, want, strict=True):
        np.testing.assert_array_equal(a, b)
    old = edgernn.get_num_threads()
    try:
        edgernn.set_num_threads(2)  # a large batch is split over threads: the general path
        x = _x(32, 100, 16)
        np.testing.assert_array_equal(p(x), m.predict(x))
    finally:
        edgernn.set_num_threads(old)


def test_float64_model_runs_forward():
    m = _randomize(Sequential([LSTM(8, input_shape=(None, 2))], dtype="float64"))
    p = m.predictor()
    assert p.fast_layers == []
    x = _x(2, 5, 2)
    np.testing.assert_array_equal(p(x), m.predict(x))


def test_refused():
    with pytest.raises(RuntimeError, match="predictor: the model is not built"):
        Sequential([LSTM(4)]).predictor()
    s = Sequential([LSTM(4, batch_input_shape=(2, 5, 1), stateful=True), Dense(1)])
    with pytest.raises(ValueError, match="stateful"):
        s.predictor()
    p = Sequential([LSTM(4, input_shape=(None, 3))]).predictor()
    with pytest.raises(ValueError, match="expected input"):
        p(np.zeros((1, 5, 2), np.float32))


def test_fast_path_is_taken():
    """Short windows and small batches never reach the layer's forward (the general path)."""
    m = _randomize(Sequential([GRU(32, input_shape=(None, 4)), Dense(1)]))
    p = m.predictor()
    layer = p._model.layers[0]
    calls = []
    orig = layer.forward
    layer.forward = lambda *a, **k: calls.append(1) or orig(*a, **k)
    for B, T in [(1, 4), (1, 10), (1, 300), (3, 2), (8, 50), (1, 1)]:
        x = _x(B, T, 4)
        np.testing.assert_allclose(p(x), m.predict(x), rtol=1e-6, atol=1e-7)  # (1, 1): rounding apart
    assert calls == []
    p(_x(1, 3, 4))  # one sequence shorter than 4 steps: packed already, so also fused
    assert calls == []
    p(_x(2, 3, 4), lengths=[3, 1])  # lengths: the general path
    assert calls == [1]
