"""Streaming inference (``model.stream``): step-by-step outputs equal ``predict``, state
handling, errors, and no allocation per step."""

import tracemalloc

import numpy as np
import pytest

from edgernn import Sequential
from edgernn.layers import GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding, Masking, SimpleRNN
from edgernn.streaming import Stream, stream

ATOL, RTOL = 2e-5, 1e-4


def make(layers, F=3, dtype="float32", seed=0, scale=0.5, ids=False):
    """A built model with random weights everywhere (biases, Rb buffers and peepholes too)."""
    model = Sequential(layers, seed=seed, dtype=dtype)
    if not model.built:
        model.build((None,) if ids else (None, F))
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:
        layer.set_weights([scale * rng.standard_normal(w.shape) for w in layer.weights])
    return model


def open_stream(model, batch_size=1):
    if hasattr(type(model), "stream"):
        return model.stream(batch_size=batch_size)
    return stream(model, batch_size)


def run_steps(st, X):
    """(B, T, F) -> (B, T, out) by stepping; 1-D steps when B == 1."""
    B, T = X.shape[:2]
    outs = []
    for t in range(T):
        x = X[0, t] if B == 1 and X.ndim == 3 else X[:, t]
        outs.append(np.array(st.step(x)).reshape(B, -1))
    return np.stack(outs, axis=1)


def expected(model, X):
    """predict's output per step: the sequence output, or the output for each prefix."""
    y = model.predict(X)
    if y.ndim == 3:
        return y
    return np.stack([model.predict(X[:, : t + 1]) for t in range(X.shape[1])], axis=1)


def check(model, X, batch_size=None):
    st = open_stream(model, batch_size or X.shape[0])
    np.testing.assert_allclose(run_steps(st, X), expected(model, X), rtol=RTOL, atol=ATOL)
    return st


def seq(B=1, T=7, F=3, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((B, T, F)).astype(dtype)


# ---- every layer type and option against predict -------------------------------------------
RECURRENT = {
    "rnn": lambda rs: SimpleRNN(5, return_sequences=rs),
    "rnn-relu-clip": lambda rs: SimpleRNN(5, activation="relu", clip=0.7, return_sequences=rs),
    "rnn-nobias": lambda rs: SimpleRNN(5, use_bias=False, return_sequences=rs),
    "lstm": lambda rs: LSTM(6, return_sequences=rs),
    "lstm-peephole": lambda rs: LSTM(6, peephole=True, return_sequences=rs),
    "lstm-coupled": lambda rs: LSTM(6, coupled_gates=True, return_sequences=rs),
    "lstm-clip-peephole": lambda rs: LSTM(6, clip=0.5, peephole=True, return_sequences=rs),
    "lstm-acts": lambda rs: LSTM(6, activation="softsign", recurrent_activation="hard_sigmoid",
                                 return_sequences=rs),
    "lstm-elu-linear": lambda rs: LSTM(6, activation="elu", recurrent_activation="linear",
                                       return_sequences=rs),
    "lstm-nobias": lambda rs: LSTM(6, use_bias=False, return_sequences=rs),
    "gru": lambda rs: GRU(7, return_sequences=rs),
    "gru-reset-before": lambda rs: GRU(7, reset_after=False, return_sequences=rs),
    "gru-clip": lambda rs: GRU(7, clip=0.4, return_sequences=rs),
    "gru-clip-reset-before": lambda rs: GRU(7, clip=0.4, reset_after=False, return_sequences=rs),
    "gru-acts": lambda rs: GRU(7, activation="relu", recurrent_activation="softplus", return_sequences=rs),
}


@pytest.mark.parametrize("rs", [True, False], ids=["seq", "last"])
@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_recurrent_matches_predict(kind, rs):
    check(make([RECURRENT[kind](rs)]), seq())


@pytest.mark.parametrize("rs", [True, False], ids=["seq", "last"])
def test_stacked_with_heads(rs):
    model = make([LSTM(8, return_sequences=True), Dropout(0.3), GRU(6, return_sequences=True),
                  SimpleRNN(5, return_sequences=rs), Dense(4, activation="relu"), Dropout(0.1),
                  Dense(3, activation="softmax")], F=4)
    st = check(model, seq(F=4, T=6))
    np.testing.assert_allclose(st.step(np.zeros(4, np.float32)).sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("act", ["linear", "relu", "tanh", "sigmoid", "hard_sigmoid", "softsign",
                                 "softplus", "elu", "softmax"])
def test_dense_and_activation_heads(act):
    model = make([Dense(4, activation="tanh"), GRU(5, return_sequences=True), Dense(3, activation=act),
                  Activation(act)])
    check(model, seq(T=5))


def test_batch_and_noncontiguous_steps():
    model = make([LSTM(6, return_sequences=True), Dense(2)])
    X = seq(B=3, T=6)
    st = check(model, X)  # X[:, t] is a non-contiguous (3, 3) view
    assert st.step(np.ascontiguousarray(X[:, 0])).shape == (3, 2)


def test_float64_model():
    model = make([LSTM(6, return_sequences=True), GRU(5, return_sequences=True), SimpleRNN(4, return_sequences=True),
                  Dense(2)], dtype="float64")
    X = seq(T=5, dtype=np.float64)
    st = open_stream(model)
    assert st.dtype == np.float64
    np.testing.assert_allclose(run_steps(st, X), model.predict(X), rtol=1e-10, atol=1e-12)


def test_input_casting_and_lists():
    model = make([SimpleRNN(4, return_sequences=True)])
    X = seq(T=3)
    ref = model.predict(X)[0]
    st = open_stream(model)
    outs = [st.step(X[0, 0].astype(np.float64)).copy(), st.step(X[0, 1].tolist()).copy(),
            st.step(X[0, 2:3]).copy()]
    assert outs[0].shape == (4,) and outs[2].shape == (1, 4)
    np.testing.assert_allclose(np.vstack(outs), ref, rtol=RTOL, atol=ATOL)


# ---- Embedding and Masking ---------------------------------------------------------------------
@pytest.mark.parametrize("mask_zero", [False, True])
def test_embedding_head(mask_zero):
    model = make([Embedding(11, 4, mask_zero=mask_zero), LSTM(5, return_sequences=True), Dense(2)], ids=True)
    ids = np.array([[3, 1, 7, 10, 2, 0, 0], [5, 9, 0, 0, 0, 0, 0]])
    st = open_stream(model, 2)
    got = np.stack([st.step(ids[:, t]).copy() for t in range(ids.shape[1])], axis=1)
    np.testing.assert_allclose(got, model.predict(ids), rtol=RTOL, atol=ATOL)
    st1 = open_stream(model)
    y = st1.step(4)  # one int id for batch size 1 -> (out,)
    assert y.shape == (2,)
    np.testing.assert_allclose(y, model.predict(np.array([[4]]))[0, 0], rtol=RTOL, atol=ATOL)
    assert st1.step(np.array([4])).shape == (1, 2)


def test_embedding_last_output_mask_zero():
    model = make([Embedding(9, 3, mask_zero=True), GRU(4), Dense(1)], ids=True)
    ids = np.array([[2, 8, 1, 0, 0]])
    st = open_stream(model)
    got = np.array([st.step(ids[:, t])[0].copy() for t in range(5)])
    ref = np.array([model.predict(ids[:, : t + 1])[0] for t in range(5)])
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("rs", [True, False], ids=["seq", "last"])
def test_masking_trailing_padding(rs):
    model = make([Masking(mask_value=-1.0), LSTM(5, return_sequences=True), GRU(4, return_sequences=rs),
                  Dense(2)])
    X = seq(B=2, T=7)
    X[0, 4:] = -1.0
    X[1, 6:] = -1.0
    check(model, X)


def test_masking_interior_step_is_skipped():
    """An interior padding step holds the state (Keras semantics): later outputs equal those of
    the sequence without that step."""
    model = make([Masking(0.0), LSTM(5)])
    X = seq(T=6)
    Xh = X.copy()
    Xh[0, 2] = 0.0
    st = open_stream(model)
    with_hole = run_steps(st, Xh)[0]
    st.reset()
    without = run_steps(st, np.delete(X, 2, axis=1))[0]
    np.testing.assert_allclose(with_hole[2], with_hole[1])  # held state
    np.testing.assert_allclose(with_hole[3:], without[2:], rtol=1e-6, atol=1e-7)


# ---- state -----------------------------------------------------------------------------------------
def test_reset_and_state_round_trip():
    model = make([LSTM(5, return_sequences=True), GRU(4), Dense(2)])
    X = seq(B=2, T=8)
    st = open_stream(model, 2)
    run_steps(st, X[:, :3])
    s = st.state
    assert [len(v) for v in s] == [2, 1]
    assert s[0][0].shape == (2, 5) and s[0][1].shape == (2, 5) and s[1][0].shape == (2, 4)
    after = run_steps(st, X[:, 3:])
    s[0][0][:] = 123.0  # a copy: does not touch the stream
    assert not np.any(st.state[0][0] == 123.0)
    st.state = st.state  # no-op
    s[0][0][:] = 0.0
    s = None
    st.reset()
    run_steps(st, X[:, :3])
    saved = st.state
    st.reset()
    assert all(not np.any(a) for layer in st.state for a in layer)
    st.state = saved
    np.testing.assert_allclose(run_steps(st, X[:, 3:]), after, rtol=0, atol=0)
    # reset == a fresh stream
    st.reset()
    fresh = open_stream(model, 2)
    np.testing.assert_array_equal(run_steps(st, X), run_steps(fresh, X))


def test_reset_some_rows():
    model = make([LSTM(5, return_sequences=True), Dense(2)])
    X = seq(B=3, T=6)
    st = open_stream(model, 3)
    run_steps(st, X[:, :3])
    before = st.state
    st.reset(rows=[1])
    after = st.state
    assert not np.any(after[0][0][1]) and not np.any(after[0][1][1])
    np.testing.assert_array_equal(after[0][0][[0, 2]], before[0][0][[0, 2]])
    rest = run_steps(st, X[:, 3:])
    np.testing.assert_allclose(rest[1], model.predict(X[1:2, 3:])[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(rest[0], model.predict(X[:1])[0, 3:], rtol=RTOL, atol=ATOL)
    with pytest.raises(IndexError):
        st.reset(rows=5)


def test_state_validation():
    model = make([LSTM(5, return_sequences=True), SimpleRNN(3)])
    st = open_stream(model)
    good = st.state
    with pytest.raises(ValueError, match="2 per-layer"):
        st.state = good[:1]
    with pytest.raises(ValueError, match="list of 2 arrays"):
        st.state = [good[0][:1], good[1]]
    with pytest.raises(ValueError, match=r"expected shape \(1, 5\)"):
        st.state = [[np.zeros((1, 4)), good[0][1]], good[1]]
    with pytest.raises(ValueError, match=r"expected shape \(1, 3\)"):
        st.state = [good[0], [np.zeros((2, 3))]]
    with pytest.raises(ValueError):
        st.state = "nope"
    st.state = [[np.ones((1, 5)), np.ones((1, 5))], np.full((1, 3), 0.5)]  # bare array for [h] ok
    assert np.all(st.state[1][0] == 0.5) and st.state[0][0].dtype == np.float32


# ---- errors ----------------------------------------------------------------------------------------
def test_unstreamable_layers_raise_at_creation():
    with pytest.raises(ValueError, match=r"Bidirectional 'bidi'.*bidirectional"):
        open_stream(make([Bidirectional(LSTM(4), name="bidi"), Dense(1)]))
    with pytest.raises(ValueError, match=r"GRU 'back'.*backwards"):
        open_stream(make([LSTM(4, return_sequences=True), GRU(4, go_backwards=True, name="back")]))


def test_step_and_creation_errors():
    model = make([LSTM(4), Dense(1)])
    st = open_stream(model)
    with pytest.raises(ValueError, match=r"\(3,\) or \(1, 3\)"):
        st.step(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="shape"):
        st.step(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        st.step(np.zeros((1, 1, 3), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        open_stream(model, 0)
    emb = open_stream(make([Embedding(5, 2), SimpleRNN(3)], ids=True))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        emb.step(np.array([7]))
    with pytest.raises(ValueError, match="integers"):
        emb.step(1.5)
    with pytest.raises(ValueError, match="not built"):
        stream(Sequential([LSTM(3)]))


# ---- speed contract: no allocation per step ---------------------------------------------------------
def test_no_allocation_per_step():
    model = make([Embedding(20, 4), LSTM(8, return_sequences=True), GRU(6), Dense(3, activation="softmax")],
                 ids=True)
    st = open_stream(model)
    x = np.array([3])
    buf = np.empty((1, 3), np.float32)
    assert st.step(x, out=buf) is buf  # the zero-allocation path: the caller's buffer
    y = st.step(x)
    assert not np.shares_memory(y, buf)
    for _ in range(100):
        st.step(x, out=buf)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(1000):
            st.step(x, out=buf)
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert now - base < 1024 and peak - base < 4096


def test_float_model_returns_fresh_results():
    st = open_stream(make([GRU(4), Dense(2)]))
    x = np.ones(3, np.float32)
    a = st.step(x)
    b = st.step(x)
    assert a is not b and a.shape == (2,) and not np.array_equal(a, b)
    assert isinstance(st, Stream) and "batch_size=1" in repr(st)


def test_return_state_layer_streams_its_output():
    model = make([LSTM(4, return_sequences=True, return_state=True)])
    X = seq(T=4)
    np.testing.assert_allclose(run_steps(open_stream(model), X), model.predict(X)[0], rtol=RTOL, atol=ATOL)


def test_run_helper_matches_predict():
    model = make([GRU(5, return_sequences=True), Dense(1)])
    X = seq(B=2, T=5)
    np.testing.assert_allclose(open_stream(model, 2).run(X), model.predict(X), rtol=RTOL, atol=ATOL)


def test_sequential_has_stream_hook():
    assert hasattr(Sequential, "stream"), "Sequential.stream(batch_size=1) should return a streaming.Stream"
    st = make([LSTM(3), Dense(1)]).stream(batch_size=2)
    assert isinstance(st, Stream) and st.batch_size == 2
