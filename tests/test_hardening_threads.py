"""Issue 13 item 12: ``set_num_threads`` while other threads predict (the task pool is replaced
under them) never fails with "cannot schedule new futures after shutdown"."""

import threading
import time

import numpy as np

import edgernn
from edgernn import Sequential
from edgernn.layers import LSTM, Bidirectional, Dense


def test_set_num_threads_while_predicting():
    m = Sequential([Bidirectional(LSTM(64, return_sequences=False), input_shape=(None, 16)), Dense(1)], seed=0)
    x = np.random.default_rng(0).standard_normal((16, 13, 16))  # just above the parallel threshold.astype(np.float32)
    before = edgernn.get_num_threads()
    try:
        edgernn.set_num_threads(2)
        ref = m.predict(x)
        errors = []
        stop = threading.Event()

        def work():
            try:
                while not stop.is_set():
                    np.testing.assert_allclose(m.predict(x), ref, rtol=0, atol=1e-6)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
                stop.set()

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        k = 0
        while time.perf_counter() - t0 < 1.5 and not stop.is_set():
            edgernn.set_num_threads(2 + k % 2)
            k += 1
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[0]
    finally:
        edgernn.set_num_threads(before)
