"""Concurrent ``predict`` and ``stream()`` fuzzed (issue 13, "tests that stay").

A random model (any registered cell, one or two recurrent layers, optionally Bidirectional
first, a Dense head) and a random set of jobs: ``predict`` calls (batch sizes, ragged
lengths, sequences long enough to run in chunks of time) and streams (created in the thread,
stepped one step at a time or with ``run``, reset midway, their state read and written back).
Every job runs first serially, then all of them at once from their own threads (several
repetitions each, released together by a barrier, with edgernn's task pool at one or two
threads): every concurrent result must equal its serial one bit for bit.

A ``Stream`` object carries one sequence's state, like a file position: each thread uses its
own (sharing one between threads is not supported, as for any stateful object). ``predict``
of a model without stateful layers shares nothing mutable between threads.

Fixed seed (``derandomize=True``) and a small budget in the default run; ``-m slow`` runs a
larger one.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import edgernn
import edgernn.layers.recurrent as rec
from edgernn import Sequential, cells, layers
from edgernn.layers import Bidirectional, Dense

BASE = settings(derandomize=True, deadline=None, database=None, phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow])
CELLS = sorted(cells.registered())
I = 3


def _model(data):
    name = data.draw(st.sampled_from(CELLS), label="cell")
    cls = getattr(layers, cells.get(name).layers[0])
    units = data.draw(st.integers(1, 8), label="units")
    bidir = data.draw(st.booleans(), label="bidirectional first layer (predict only)")
    two = data.draw(st.booleans(), label="two recurrent layers")
    first = cls(units, return_sequences=two)
    stack = [Bidirectional(first, input_shape=(None, I)) if bidir else cls(units, return_sequences=two,
                                                                          input_shape=(None, I))]
    if two:
        stack.append(cls(data.draw(st.integers(1, 6), label="units 2"),
                         return_sequences=data.draw(st.booleans(), label="return_sequences")))
    stack.append(Dense(2))
    m = Sequential(stack, seed=data.draw(st.integers(0, 1000), label="model seed"))
    return m, not bidir


def _predict_job(data, m, rng):
    B = data.draw(st.integers(1, 5), label="predict batch")
    T = data.draw(st.integers(1, 40), label="predict T")
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    L = rng.integers(0, T + 1, size=B) if data.draw(st.booleans(), label="lengths") else None
    bs = data.draw(st.sampled_from([None, 1, 2]), label="batch_size")
    return lambda: m.predict(x, lengths=L, batch_size=bs)


def _stream_job(data, m, rng):
    B = data.draw(st.integers(1, 3), label="stream batch")
    T = data.draw(st.integers(1, 30), label="stream T")
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    how = data.draw(st.sampled_from(["step", "run", "reset", "state"]), label="stream use")
    cut = T // 2

    def job():
        s = m.stream(batch_size=B)
        if how == "run":
            return s.run(x)
        outs = []
        for t in range(T):
            if how == "reset" and t == cut:
                s.reset()
            if how == "state" and t == cut:
                s.state = s.state
            xt = x[0, t] if B == 1 else np.ascontiguousarray(x[:, t])
            outs.append(s.step(xt))
        return np.stack(outs)

    return job


def fuzz_concurrency(data):
    m, streams = _model(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="data seed"))
    n_jobs = data.draw(st.integers(2, 6), label="threads")
    kinds = [data.draw(st.sampled_from(["predict", "stream"] if streams else ["predict"]), label="job")
             for _ in range(n_jobs)]
    jobs = [(_predict_job if k == "predict" else _stream_job)(data, m, rng) for k in kinds]
    chunk = data.draw(st.sampled_from([0, 8, rec._INFER_CHUNK]), label="inference chunk (0: off)")
    threads = data.draw(st.sampled_from([1, 2]), label="edgernn threads")
    reps = 3
    old = (rec._INFER_CHUNK, rec._INFER_MIN_STEPS, edgernn.get_num_threads())
    try:
        rec._INFER_CHUNK, rec._INFER_MIN_STEPS = chunk, 2
        edgernn.set_num_threads(threads)
        serial = [j() for j in jobs]
        barrier = threading.Barrier(len(jobs))
        results = [None] * len(jobs)
        errors = []

        def work(k):
            try:
                barrier.wait(timeout=30)
                results[k] = [jobs[k]() for _ in range(reps)]
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        ts = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in ts), "a thread hangs"
        assert not errors, errors[0]
        for k, (ref, got) in enumerate(zip(serial, results, strict=True)):
            for r, g in enumerate(got):
                np.testing.assert_array_equal(g, ref, err_msg=f"job {k} ({kinds[k]}), repetition {r}")
    finally:
        rec._INFER_CHUNK, rec._INFER_MIN_STEPS = old[0], old[1]
        edgernn.set_num_threads(old[2])


def test_fuzz_concurrent_predict_and_stream():
    settings(BASE, max_examples=25)(given(data=st.data())(fuzz_concurrency))()


@pytest.mark.slow
def test_fuzz_concurrent_predict_and_stream_long():
    settings(BASE, max_examples=400)(given(data=st.data())(fuzz_concurrency))()
