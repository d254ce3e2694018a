"""Inference over long sequences runs in chunks of time (issue 13 item 11).

``RecurrentLayer.forward(need_grad=False)`` splits a long time axis into chunks and carries the
states through the kernels' initial states (``edgernn/layers/recurrent.py``, ``_INFER_CHUNK``).
Here the chunks are made tiny so that every path (ragged lengths incl. 0, reverse and
bidirectional, initial states, stateful layers, return_sequences / return_state, one and two
threads) is compared with the one-call pass; and memory is checked not to grow with T.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import edgernn
import edgernn.functional as F
import edgernn.layers.recurrent as rec
from edgernn import Sequential, cells, layers
from edgernn.layers import Bidirectional

ALL = sorted(cells.registered())
CHUNKED = [n for n in ALL if n != "qrnn"]  # (QRNN: stateful=True is not supported)
DIRECTIONS = ["forward", "reverse", "bidirectional"]
I, H = 3, 4
_STATS = []  # bit-identical or not, per compared array (printed with -s by the last test)


def _layer(name, direction, **kw):
    cls = getattr(layers, cells.get(name).layers[0])
    if direction == "bidirectional":
        lay = Bidirectional(cls(H, **kw), input_shape=(None, I))
    else:
        lay = cls(H, input_shape=(None, I), go_backwards=direction == "reverse", **kw)
    m = Sequential([lay], seed=1)
    rng = np.random.default_rng(3)
    for k, v in lay.params.items():  # nonzero biases
        if v.ndim <= 2 and k not in ("W", "R", "u", "U", "V"):
            v[...] = rng.standard_normal(v.shape) * 0.3
    return m, lay


def _inner(lay):
    return lay.layer if isinstance(lay, Bidirectional) else lay


def _init_states(lay, B, rng):
    """Keras-order initial states of the right widths (read from a one-call pass)."""
    inner = _inner(lay)
    probe = inner.return_state
    inner.return_state = True
    try:
        res = lay.forward(np.zeros((B, 1, I), np.float32), need_grad=False, training=False)
    finally:
        inner.return_state = probe
    return [rng.standard_normal(s.shape).astype(np.float32) for s in res[1:]]


def _both(monkeypatch, steps, B, fn, *args, **kw):
    """fn(*args, **kw) with chunking off, then with chunks of ``steps`` steps."""
    monkeypatch.setattr(rec, "_INFER_CHUNK", 0)
    ref = fn(*args, **kw)
    monkeypatch.setattr(rec, "_INFER_CHUNK", steps * B)
    monkeypatch.setattr(rec, "_INFER_MIN_STEPS", 1)
    got = fn(*args, **kw)
    return ref, got


def _flat(a):
    return [np.asarray(v) for v in (a if isinstance(a, list) else [a])]


def _same(ref, got, exact=False):
    ref, got = _flat(ref), _flat(got)
    assert len(ref) == len(got)
    for r, g in zip(ref, got, strict=True):
        assert r.shape == g.shape and r.dtype == g.dtype
        if exact:
            np.testing.assert_array_equal(g, r)
        else:
            np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)
        _STATS.append(bool(np.array_equal(g, r)))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("B", [1, 3])
def test_chunked_equals_one_call(monkeypatch, name, direction, B):
    rng = np.random.default_rng(B)
    T = 23
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    L = np.array([T, 0, 11][:B]) if B > 1 else np.array([17])
    for rseq in (False, True):
        m, lay = _layer(name, direction, return_sequences=rseq, return_state=True)
        init = _init_states(lay, B, rng)
        for lengths in (None, L):
            for states in (None, init):
                for steps in (1, 5):
                    ref, got = _both(monkeypatch, steps, B, lay.forward, x, lengths=lengths,
                                     training=False, need_grad=False, initial_state=states)
                    _same(ref, got)
        # through predict, as users call it
        m2, _ = _layer(name, direction, return_sequences=rseq)
        ref, got = _both(monkeypatch, 4, B, m2.predict, x, lengths=L)
        _same(ref, got)


@pytest.mark.parametrize("name", CHUNKED)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_stateful_chunked(monkeypatch, name, direction):
    rng = np.random.default_rng(7)
    B, T = 2, 19
    xs = [rng.standard_normal((B, T, I)).astype(np.float32) for _ in range(2)]

    def run():
        m, lay = _layer(name, direction, stateful=True, return_sequences=True)
        outs = [m.predict(x) for x in xs]
        return outs + list(lay.states)

    ref, got = _both(monkeypatch, 6, B, run)
    _same(ref, got)


def test_threads_and_other_options(monkeypatch):
    """Bidirectional directions side by side (2 threads) or in turn (1); LSTM/GRU options."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 40, I)).astype(np.float32)
    L = np.array([40, 13])
    cases = [layers.LSTM(H, peephole=True, clip=0.7, return_sequences=True),
             layers.LSTM(H, coupled_gates=True, activation="relu"),
             layers.GRU(H, reset_after=False, return_sequences=True),
             layers.SimpleRNN(H, activation="elu")]
    old = edgernn.get_num_threads()
    try:
        for n in (1, 2):
            edgernn.set_num_threads(n)
            for base in cases:
                m = Sequential([Bidirectional(type(base).from_config(base.get_config()), merge_mode="mul",
                                              input_shape=(None, I))], seed=2)
                ref, got = _both(monkeypatch, 3, 2, m.predict, x, lengths=L)
                _same(ref, got)
    finally:
        edgernn.set_num_threads(old)


def test_float64_and_batch_minor(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 50, I))
    for cls in (layers.LSTM, layers.GRU):
        m = Sequential([cls(H, input_shape=(None, I))], seed=0)
        ref, got = _both(monkeypatch, 7, 9, m.predict, x.astype(np.float32))
        _same(ref, got)
        m64 = Sequential([cls(H, input_shape=(None, I))], seed=0, dtype="float64")
        ref, got = _both(monkeypatch, 7, 9, m64.predict, x)
        _same(ref, got)


def test_training_path_is_not_chunked(monkeypatch):
    monkeypatch.setattr(rec, "_INFER_CHUNK", 1)
    monkeypatch.setattr(rec, "_INFER_MIN_STEPS", 1)
    calls = []
    lay = layers.LSTM(H, input_shape=(None, I))
    Sequential([lay], seed=0)
    orig = lay._run
    lay._run = lambda *a: calls.append(a[0].shape[1]) or orig(*a)
    x = np.ones((1, 10, I), np.float32)
    lay.forward(x, need_grad=True)
    assert calls == [10]
    calls.clear()
    lay.forward(x, need_grad=False)
    assert calls == [1] * 10


MEMORY_SCRIPT = textwrap.dedent("""
    import sys, tracemalloc
    import numpy as np
    import edgernn.layers.recurrent as rec
    from edgernn import Sequential
    from edgernn.layers import LSTM
    rec._INFER_CHUNK = int(sys.argv[1])
    m = Sequential([LSTM(64, input_shape=(None, 1))], seed=0)
    m.predict(np.zeros((1, 300, 1), np.float32))
    peaks = []
    for T in (50_000, 200_000):
        x = np.ones((1, T, 1), np.float32)
        tracemalloc.start()
        m.predict(x)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    print(*peaks)
""")


@pytest.mark.parametrize("I, G", [(3, 4), (7, 96), (64, 1024)])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_one_row_projection_rounds_as_many_rows(I, G, dt):
    """``functional._project``: a step projected alone (a one-step chunk at batch 1) is bit-identical
    to the same step inside a longer call. OpenBLAS on AMD Zen sums a one-row product (its gemv
    path) in another order than a many-row one (up to 1e-5 apart at (64, 1024))."""
    rng = np.random.default_rng(I)
    X = rng.standard_normal((23, I)).astype(dt)
    Wt = rng.standard_normal((G, I)).astype(dt).T
    full = np.empty((23, G), dt)
    F._project(X, Wt, full)
    for i in (0, 11, 22):
        one = np.empty((1, G), dt)
        F._project(X[i:i + 1], Wt, one)
        np.testing.assert_array_equal(one[0], full[i])


def test_memory_does_not_grow_with_T():
    """LSTM(64), one sequence: tracemalloc peak of predict (numpy's allocations are traced) for
    T=50k and 200k. One call needs ~(4+2)*64*4 B = 1.5 KB per step (300 MB at 200k steps);
    chunked it stays at a few MB whatever T is."""
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(rec._INFER_CHUNK)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    p50, p200 = (int(v) for v in out.stdout.split())
    assert p200 < 16e6, f"peak {p200 / 1e6:.1f} MB for T=200k"
    assert p200 < p50 + 2e6, f"peak grew with T: {p50 / 1e6:.1f} MB -> {p200 / 1e6:.1f} MB"


def test_zz_report_identity():
    if _STATS:
        print(f"\nchunked == one call bit for bit in {sum(_STATS)} of {len(_STATS)} compared arrays")


@pytest.mark.parametrize("window, pooling", [(1, "fo"), (3, "f"), (4, "ifo")])
def test_qrnn_window_across_chunks(monkeypatch, window, pooling):
    """QRNN's convolution reads the last ``window`` inputs: chunks get them precomputed."""
    rng = np.random.default_rng(window)
    x = rng.standard_normal((3, 29, I)).astype(np.float32)
    L = np.array([29, 2, 17])
    for direction in DIRECTIONS:
        m, lay = _layer("qrnn", direction, window=window, pooling=pooling, return_sequences=True, return_state=True)
        for lengths in (None, L):
            ref, got = _both(monkeypatch, 4, 3, lay.forward, x, lengths=lengths, training=False, need_grad=False)
            _same(ref, got)
