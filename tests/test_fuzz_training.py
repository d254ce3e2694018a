"""Divergence detection fuzzed (issue 13, "tests that stay"): any optimizer and learning rate,
including absurd ones. ``fit`` either returns with finite weights and a finite loss history, or
raises ``TrainingDiverged`` with finite weights that give a finite loss."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgernn import Sequential, TrainingDiverged, optimizers
from edgernn.layers import GRU, Dense

BASE = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

rng = np.random.default_rng(0)
X = rng.standard_normal((24, 6, 2)).astype(np.float32)
Y = rng.standard_normal((24, 1)).astype(np.float32)

OPTS = {"sgd": lambda lr: optimizers.SGD(lr), "sgd_momentum": lambda lr: optimizers.SGD(lr, momentum=0.9),
        "rmsprop": lambda lr: optimizers.RMSprop(lr), "adam": lambda lr: optimizers.Adam(lr),
        "adamw": lambda lr: optimizers.AdamW(lr)}

lrs = st.one_of(st.sampled_from([float("inf"), 1e38, 3e38, 1e30, 1e12, 1e6, 1e3, 1.0, 1e-3]),
                st.floats(min_value=-4, max_value=39).map(lambda e: 10.0 ** e))


def one_fit(name, lr, epochs, batch_size, dtype):
    m = Sequential([GRU(4, input_shape=(None, 2)), Dense(1)], seed=0, dtype=dtype)
    m.compile(loss="mse", optimizer=OPTS[name](lr))
    try:
        h = m.fit(X, Y, epochs=epochs, batch_size=batch_size, verbose=0)
        assert all(np.isfinite(v) for v in h.history["loss"])
    except TrainingDiverged:
        pass
    assert all(np.isfinite(w).all() for w in m.get_weights())
    m.compile(loss="mse", optimizer="sgd")
    assert np.isfinite(m.evaluate(X, Y))


def fuzz(data):
    one_fit(data.draw(st.sampled_from(sorted(OPTS)), label="optimizer"), data.draw(lrs, label="lr"),
            data.draw(st.integers(1, 3), label="epochs"), data.draw(st.sampled_from([8, 24]), label="batch_size"),
            data.draw(st.sampled_from(["float32", "float64"]), label="dtype"))


def test_fuzz_divergence():
    settings(BASE, max_examples=20)(given(data=st.data())(fuzz))()


@pytest.mark.slow
def test_fuzz_divergence_long():
    settings(BASE, max_examples=500)(given(data=st.data())(fuzz))()
