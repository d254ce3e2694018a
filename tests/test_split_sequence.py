"""One LSTM or GRU sequence over several threads in lockstep (functional._forward_split): the same bits
as one thread, whatever the thread count, and a run whose threads do not start falls back."""

import concurrent.futures
import time

import naive
import numpy as np
import pytest
from thread_util import run_in_threads

import edgernn
import edgernn.functional as F


@pytest.fixture
def threads():
    old = edgernn.get_num_threads()
    yield edgernn.set_num_threads
    edgernn.set_num_threads(old)


@pytest.fixture
def always_split(monkeypatch):
    """Split every sequence (no backoff after a busy run); returns the list of split runs' results."""
    monkeypatch.setattr(F, "_SPLIT_MIN_MACS", 1)
    monkeypatch.setattr(F, "_SPLIT_MIN_UNITS", 16)
    monkeypatch.setattr(F, "_cores", lambda: 8)  # correctness also with more threads than cores
    monkeypatch.setattr(F, "_SPLIT_BACKOFF_S", 0.0)
    monkeypatch.setattr(F, "_split_backoff_until", 0.0)
    monkeypatch.setattr(F, "_split_busy", False)
    runs = []
    split = F._forward_split

    def record(*a):
        runs.append(split(*a))
        return runs[-1]

    monkeypatch.setattr(F, "_forward_split", record)
    return runs


def _case(H, T, I=5, seed=0, cell="lstm"):
    rng = np.random.default_rng(seed)
    G = 4 if cell == "lstm" else 3
    X = rng.normal(size=(1, T, I)).astype(np.float32)
    W = (0.3 * rng.normal(size=(1, G * H, I))).astype(np.float32)
    R = (rng.normal(size=(1, G * H, H)) / np.sqrt(H)).astype(np.float32)  # not chaotic: the oracle stays close
    Wb, Rb = (0.3 * rng.normal(size=(2, 1, G * H))).astype(np.float32)
    h0, c0 = rng.normal(size=(2, 1, 1, H)).astype(np.float32)
    return (X, W, R, Wb, Rb, h0, c0) if cell == "lstm" else (X, W, R, Wb, Rb, h0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("H", [16, 48, 64, 80, 130])
@pytest.mark.parametrize("T", [1, 2, 5, 64])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_same_bits_as_one_thread(threads, always_split, cell, H, T, n):
    args = _case(H, T, seed=H + T, cell=cell)
    f = getattr(F, cell)
    threads(1)
    want = f(*args)
    threads(n)
    if H >= 32:
        assert F._split_threads(cell, 1, T, T, F.K.packed_rows(H), 5, False) > 1
    for _ in range(2):
        got = f(*args)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    assert len(always_split) == (2 if H >= 32 and T >= 4 else 0)  # (T < 4: the batch-major kernels)
    ref = getattr(naive, cell)(*[a.astype(np.float64) for a in args])
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=2e-6)


def test_runs_split_where_it_pays(threads, monkeypatch):
    monkeypatch.setattr(F, "_split_backoff_until", 0.0)  # (a busy run of an earlier test must not matter)
    threads(2)
    if F._cores() < 2:
        pytest.skip("one core")
    assert F._split_threads("lstm", 1, 1000, 1000, 256, 64, False) == 2
    assert F._split_threads("lstm", 1, 1000, 1000, 64, 16, False) == 2
    assert F._split_threads("lstm", 1, 100, 100, 64, 16, False) == 1  # too little work
    assert F._split_threads("lstm", 1, 1000, 999, 256, 64, False) == 1  # padded
    assert F._split_threads("lstm", 1, 1000, 1000, 256, 64, True) == 1  # training
    assert F._split_threads("lstm", 2, 1000, 1000, 256, 64, False) == 1  # batches: split by sequences
    assert F._split_threads("gru", 1, 1000, 1000, 256, 64, False) == 2
    assert F._split_threads("rnn", 1, 1000, 1000, 256, 64, False) == 1
    threads(1)
    assert F._split_threads("lstm", 1, 1000, 1000, 256, 64, False) == 1


def test_a_thread_that_never_starts_is_given_up(threads, always_split, monkeypatch):
    """The pool never runs the other half: the caller stops waiting (_SPLIT_START_S), cancels
    it and computes the sequence alone; after two such calls in a row, later calls run on one
    thread for a while."""
    threads(1)
    args = _case(64, 40)
    want = F.lstm(*args)
    threads(2)
    monkeypatch.setattr(F, "_SPLIT_BACKOFF_S", 1.0)

    def never(fns):
        out = []
        for _ in fns:
            f = concurrent.futures.Future()
            f.set_result((False, 0))
            out.append(f)
        return out

    monkeypatch.setattr(F, "_submit", never)
    for _ in range(2):
        assert F._split_backoff_until < time.monotonic()
        t0 = time.perf_counter()
        got = F.lstm(*args)
        assert time.perf_counter() - t0 < 5.0
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    assert always_split == [False, False]
    assert F._split_backoff_until > time.monotonic()
    assert F._split_threads("lstm", 1, 40, 40, 64, 5, False) == 1


def test_a_thread_that_starts_too_late_touches_nothing(threads, always_split, monkeypatch):
    threads(1)
    args = _case(64, 40, seed=3)
    want = F.lstm(*args)
    threads(2)
    late = []
    submit = F._submit

    def delayed(fns):
        def run(f):
            time.sleep(0.5)  # well after the caller gave up (5 ms), even on a loaded machine
            r = f()
            late.append(r)
            return r

        return submit([lambda f=f: run(f) for f in fns])

    monkeypatch.setattr(F, "_submit", delayed)
    got = F.lstm(*args)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert always_split == [False]
    assert late == [(False, 0)]


def test_concurrent_callers(threads, always_split):
    """More callers than pool threads: some runs wait for their other half or give up on it;
    every result is still exact."""
    threads(1)
    cases = [_case(64 + 16 * k, 50 + k, seed=k) for k in range(4)]
    want = [F.lstm(*c) for c in cases]
    threads(2)
    got = [None] * 4

    def call(k):
        for _ in range(3):
            got[k] = F.lstm(*cases[k])

    run_in_threads(call, 4)
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            np.testing.assert_array_equal(a, b)
    assert len(always_split) == 12


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_predict_and_predictor_split_too(threads, always_split, cell):
    threads(2)
    m = edgernn.Sequential([getattr(edgernn.layers, cell)(64, return_sequences=True, input_shape=(None, 4)),
                            edgernn.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(1, 30, 4)).astype(np.float32)
    a = m.predict(x)
    b = m.predictor()(x)
    assert len(always_split) == 2
    threads(1)
    np.testing.assert_array_equal(a, m.predict(x))
    np.testing.assert_array_equal(b, a)


def test_not_inside_parallel_tasks(threads, always_split):
    """The directions of a bidirectional layer already run in the pool's threads: they do not
    split their sequence again (the pool would have no thread left for the other halves)."""
    threads(2)
    rng = np.random.default_rng(5)
    H, I, T = 64, 8, 300
    X = rng.normal(size=(1, T, I)).astype(np.float32)
    W = (0.3 * rng.normal(size=(2, 4 * H, I))).astype(np.float32)
    R = (rng.normal(size=(2, 4 * H, H)) / np.sqrt(H)).astype(np.float32)
    got = F.lstm(X, W, R, direction="bidirectional")
    assert always_split == []
    threads(1)
    for g, w in zip(got, F.lstm(X, W, R, direction="bidirectional"), strict=True):
        np.testing.assert_array_equal(g, w)


def test_an_interrupted_caller_releases_the_other_threads(threads, always_split, monkeypatch):
    """An exception in the caller's Python loop between two waits (Ctrl-C): the pool's threads
    stop at their next wait instead of waiting for it for ever."""
    threads(2)
    args = _case(64, 400, seed=7)
    real = F._split_run
    seen = []

    def interrupted(kernel, w, n, sync, a, deadline=None):
        if w == 0:
            raise KeyboardInterrupt
        seen.append(real(kernel, w, n, sync, a, deadline))
        return seen[-1]

    monkeypatch.setattr(F, "_split_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        F.lstm(*args)
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [(False, 0)]  # the other half returned: aborted
