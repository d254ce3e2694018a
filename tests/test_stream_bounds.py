"""Issue 13 item 1: the streaming engine checks every size its jitted step indexes with
against the arrays it packs (numba has no bounds checks): mismatches are refused at stream
creation instead of reading out of bounds."""

from __future__ import annotations

import numpy as np
import pytest

from edgernn import Sequential
from edgernn.layers import GRU, LSTM, Dense, IndRNN, JordanRNN, SimpleRNN


@pytest.mark.parametrize("cls", [SimpleRNN, GRU, LSTM, IndRNN, JordanRNN])
@pytest.mark.parametrize("units", [20_000_000, 9, 3])
def test_units_that_do_not_match_the_weights_are_refused(cls, units):
    m = Sequential([cls(8, input_shape=(None, 3))])
    m.layers[0].units = units
    if cls is JordanRNN:
        m.layers[0].hidden_units = units
    with pytest.raises(ValueError, match="stream"):
        m.stream()


@pytest.mark.parametrize("what", ["R", "Wb", "W"])
def test_narrower_arrays_are_refused(what):
    m = Sequential([LSTM(8, input_shape=(None, 3))])
    p = m.layers[0].params
    p[what] = p[what][..., :-1]
    with pytest.raises(ValueError, match="stream"):
        m.stream()


def test_shorter_dense_bias_is_refused():
    m = Sequential([GRU(4, input_shape=(None, 3)), Dense(5)])
    m.layers[1].params["bias"] = m.layers[1].params["bias"][:3]
    with pytest.raises(ValueError, match="bias"):
        m.stream()


def test_valid_model_still_streams():
    m = Sequential([LSTM(8, input_shape=(None, 3), return_sequences=True), IndRNN(4), Dense(2)], seed=0)
    x = np.random.default_rng(0).standard_normal((1, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(m.stream().run(x)[:, -1], m.predict(x), atol=2e-6)
