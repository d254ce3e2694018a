"""Vanishing gradients in float32 must not run into subnormal numbers (slow on every CPU), and
flushing them must not change the float32 gradients that matter."""

import numpy as np
import pytest

import edgernn.functional as F

TINY_NORMAL32 = np.finfo(np.float32).tiny  # 1.18e-38


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("B", [1, 16])
def test_backward_has_no_subnormals_and_matches_float64(cell, B):
    rng = np.random.default_rng(3)
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    T, I, H = 300, 2, 8
    X = rng.uniform(size=(B, T, I))
    W = rng.normal(size=(1, G * H, I)) * 0.1
    R = rng.normal(size=(1, G * H, H)) * 0.1
    f, bw = getattr(F, cell), getattr(F, cell + "_backward")
    grads = {}
    for dt in (np.float32, np.float64):
        out = f(X.astype(dt), W.astype(dt), R.astype(dt), train=True)
        dY = np.zeros_like(out[0])
        dY[:, -1] = 1.0  # only the last step is supervised: the gradient vanishes going back
        grads[dt] = bw(out[-1], dY)
    g32, g64 = grads[np.float32], grads[np.float64]
    for k in ("X", "W", "R"):
        a = np.abs(g32[k])
        assert np.all((a == 0) | (a >= TINY_NORMAL32)), f"subnormal values in d{k}"
    assert np.abs(g64["X"][:, :10]).max() < 1e-40  # the test reaches float32's subnormal range
    for k in ("W", "R"):
        np.testing.assert_allclose(g32[k], g64[k], rtol=2e-4, atol=1e-6 * np.abs(g64[k]).max())
