"""Helpers for tests that call edgernn from several threads at once."""

import threading


def run_in_threads(fn, n, timeout=120):
    """Run ``fn(k)`` for k in range(n), each in its own thread, all at once; fail if a thread is
    still running after ``timeout`` seconds (a hang) and re-raise the first exception a thread met."""
    errors = []

    def work(k):
        try:
            fn(k)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    assert not any(t.is_alive() for t in ts), "a thread hangs"
    if errors:
        raise errors[0]
