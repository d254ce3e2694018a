"""Issue 13 items 2 and 3: the functional API never writes to a caller's arrays, and the
training cache owns what backward reads (changing W, R or lengths in place between forward and
backward does not change the gradients)."""

from __future__ import annotations

import numpy as np
import pytest

import edgernn.functional as F


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("H", [1, 3])
def test_h0_c0_and_state_grads_are_not_written(cell, H):
    rng = np.random.default_rng(0)
    B, T, I = 4, 5, 2
    G = 3 if cell == "gru" else 4
    X = rng.standard_normal((B, T, I)).astype(np.float32)
    W = rng.standard_normal((1, G * H, I)).astype(np.float32)
    R = rng.standard_normal((1, G * H, H)).astype(np.float32)
    h0 = rng.standard_normal((B, 1, H)).astype(np.float32)
    c0 = rng.standard_normal((B, 1, H)).astype(np.float32)
    kw = dict(c0=c0) if cell == "lstm" else {}
    fn, bwd = (F.lstm, F.lstm_backward) if cell == "lstm" else (F.gru, F.gru_backward)
    saved = h0.copy(), c0.copy()
    first = fn(X, W, R, h0=h0, **kw)[0]
    np.testing.assert_array_equal(fn(X, W, R, h0=h0, **kw)[0], first)  # identical calls, identical results
    np.testing.assert_array_equal(h0, saved[0])
    np.testing.assert_array_equal(c0, saved[1])
    *outs, cache = fn(X, W, R, h0=h0, train=True, **kw)
    dY_h = rng.standard_normal((B, 1, H)).astype(np.float32)
    dY_c = rng.standard_normal((B, 1, H)).astype(np.float32)
    keep = dY_h.copy(), dY_c.copy()
    bwd(cache, np.ones_like(outs[0]), dY_h, dY_c) if cell == "lstm" else bwd(cache, np.ones_like(outs[0]), dY_h)
    np.testing.assert_array_equal(dY_h, keep[0])
    np.testing.assert_array_equal(dY_c, keep[1])
    ro = h0.copy()
    ro.setflags(write=False)  # a read-only initial state works
    np.testing.assert_array_equal(fn(X, W, R, h0=ro, **kw)[0], first)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "indrnn"])
def test_cache_owns_weights_and_lengths(cell):
    rng = np.random.default_rng(1)
    B, T, I, H = 3, 6, 2, 4
    X = rng.standard_normal((B, T, I))
    L = np.array([6, 3, 1])
    if cell == "indrnn":
        args = dict(W=rng.standard_normal((1, H, I)), u=rng.uniform(-1, 1, (1, H)))
        fn, bwd = F.indrnn, F.indrnn_backward
    else:
        G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
        args = dict(W=rng.standard_normal((1, G * H, I)), R=rng.standard_normal((1, G * H, H)) * 0.5)
        fn, bwd = getattr(F, cell), getattr(F, cell + "_backward")

    def grads(mutate):
        a = {k: v.copy() for k, v in args.items()}
        lengths = L.copy()
        out = fn(X, **a, lengths=lengths, train=True)
        for v in a.values():  # an optimizer step in place, and a reused lengths buffer
            v -= 0.1 if mutate else 0.0
        if mutate:
            lengths[:] = 6
        return bwd(out[-1], np.ones_like(out[0]))

    ref, got = grads(False), grads(True)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
