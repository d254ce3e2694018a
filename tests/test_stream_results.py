"""``Stream.step`` returns results the caller can keep; ``out=`` is the zero-allocation path."""

import numpy as np
import pytest

from edgernn import Sequential
from edgernn.layers import GRU, LSTM, Dense


def _model():
    return Sequential([LSTM(6, input_shape=(None, 2), return_sequences=True), GRU(4), Dense(3)], seed=3)


def test_list_of_steps_keeps_every_value_and_reset_keeps_them():
    model = _model()
    xs = np.random.default_rng(0).standard_normal((6, 2)).astype(np.float32)
    stream = model.stream()
    preds = [stream.step(x) for x in xs]  # what a user writes
    ref = np.stack([model.predict(xs[None, : t + 1])[0] for t in range(6)])
    np.testing.assert_allclose(np.stack(preds), ref, atol=1e-5)
    assert len({p.tobytes() for p in preds}) == 6
    y = stream.step(xs[0])
    held = y.copy()
    stream.reset()
    np.testing.assert_array_equal(y, held)  # reset does not zero what the user holds
    assert stream(xs[0]) is not stream(xs[0])


def test_out_buffer_is_filled_without_allocation_and_checked_before_stepping():
    model = _model()
    xs = np.random.default_rng(1).standard_normal((5, 2)).astype(np.float32)
    a, b = model.stream(), model.stream()
    buf = np.empty(3, np.float32)
    for x in xs:
        assert a.step(x, out=buf) is buf
        np.testing.assert_array_equal(buf, b.step(x))
    before = a.state
    with pytest.raises(ValueError, match="out must have shape \\(3,\\)"):
        a.step(xs[0], out=np.empty((1, 3), np.float32))
    with pytest.raises(TypeError, match="out must have the stream's dtype float32"):
        a.step(xs[0], out=np.empty(3, np.float64))
    with pytest.raises(TypeError, match="out must be a numpy array"):
        a.step(xs[0], out=[0.0, 0.0, 0.0])
    ro = np.empty(3, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        a.step(xs[0], out=ro)
    for s0, s1 in zip(before, a.state, strict=True):  # a refused out leaves the state where it was
        for u, v in zip(s0, s1, strict=True):
            np.testing.assert_array_equal(u, v)
    out2 = np.empty((1, 3), np.float32)  # a (1, features) step takes a (1, out) buffer
    assert a.step(xs[:1], out=out2) is out2
    seq = np.empty((1, 5, 3), np.float32)
    a.reset()
    assert a.run(xs[None], out=seq) is seq
    np.testing.assert_allclose(seq[0], np.stack([model.predict(xs[None, : t + 1])[0] for t in range(5)]),
                               atol=1e-5)


def test_copy_false_is_the_internal_buffer():
    st = _model().stream()
    x = np.ones(2, np.float32)
    v = st.step(x, copy=False)
    assert st.step(x, copy=False) is v
