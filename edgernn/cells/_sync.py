"""Atomics for kernels that run one sequence on several threads in lockstep.

A time step of a large recurrent layer (LSTM (64, 256): 14 us) can be split between threads,
each computing its share of the units, but every thread needs the whole h_t before step t+1:
a barrier per step, far too often for a thread pool's hand-off (~50 us) or a numba ``prange``
launch. These intrinsics let jitted threads meet at a barrier on an int64 array themselves:
``load_acquire``/``store_release`` order the state written before a signal against the reads
after it (x86 and ARM alike: on ARM they become ``ldar``/``stlr``), ``cas`` claims a slot.

``signal``/``wait`` implement the barrier: thread ``w`` publishes the phase it finished in its
own slot, ``SLOT`` elements apart (separate cache lines), and waits until every slot holds at
least the phase it needs. The slot after the last thread's is an abort flag. A wait that spins
too long returns to Python, which yields the core and resumes (``functional._split_run``).
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

from .._config import jit
from ._ops import project_panels

SLOT = 16  # int64 elements between two threads' slots: 128 bytes


def _ptr(context, builder, aty, arr, idx):
    a = context.make_array(aty)(context, builder, arr)
    return builder.gep(a.data, [context.cast(builder, idx, types.intp, types.intp)])


def _is_i64(arr):
    return isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.layout == "C"


@intrinsic
def load_acquire(typingctx, arr, i):
    """arr.flat[i], an atomic load with acquire ordering (no bounds check)."""
    if not (_is_i64(arr) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load_atomic(_ptr(context, builder, sig.args[0], args[0], idx), "acquire", 8)

    return types.int64(arr, i), codegen


@intrinsic
def store_release(typingctx, arr, i, v):
    """arr.flat[i] = v, an atomic store with release ordering (no bounds check)."""
    if not (_is_i64(arr) and isinstance(i, types.Integer) and isinstance(v, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, _ptr(context, builder, sig.args[0], args[0], idx), "release", 8)
        return context.get_dummy_value()

    return types.void(arr, i, v), codegen


@intrinsic
def cas(typingctx, arr, i, expected, new):
    """Atomically: if arr.flat[i] == expected, set it to new. Returns the value found."""
    if not (_is_i64(arr) and isinstance(i, types.Integer) and isinstance(expected, types.Integer)
            and isinstance(new, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        e = context.cast(builder, args[2], sig.args[2], types.int64)
        n = context.cast(builder, args[3], sig.args[3], types.int64)
        res = builder.cmpxchg(_ptr(context, builder, sig.args[0], args[0], idx), e, n, "acq_rel", "acquire")
        return builder.extract_value(res, 0)

    return types.int64(arr, i, expected, new), codegen


# Slot values: 0 not started, 1 started, CANCELLED never started (the caller gave up waiting for
# it and runs the sequence alone), p >= 2 finished phase p.
CANCELLED = -1
_SPINS = 1 << 14  # checks before a wait returns to Python to yield the core (~30-80 us)


@jit(inline="always")
def signal(sync, w, phase):
    """Thread ``w`` finished ``phase``."""
    store_release(sync, w * SLOT, phase)


@jit
def start(sync, w):
    """Thread ``w`` (not the caller) starts: False if the caller gave up waiting for it."""
    return cas(sync, w * SLOT, 0, 1) == 0


@jit
def wait(sync, n, phase):
    """Wait until all ``n`` threads finished ``phase``: 1 when they have, 0 if the run was
    aborted, 2 after _SPINS checks (the thread returns to Python, yields its core and comes back:
    a machine with fewer free cores than threads still makes progress)."""
    spins = 0
    for w in range(n):
        while load_acquire(sync, w * SLOT) < phase:
            if load_acquire(sync, n * SLOT) != 0:
                return 0
            spins += 1
            if spins > _SPINS:
                return 2
    return 1


@jit
def abort(sync, n):
    """Stop the run: every thread returns at its next wait."""
    store_release(sync, n * SLOT, 1)


@jit
def cancel(sync, n):
    """The caller gives up on the threads that have not started: True if it cancelled any (the
    run is then aborted: the started ones return), False if all had started."""
    cancelled = False
    for w in range(1, n):
        if cas(sync, w * SLOT, 0, CANCELLED) == 0:
            cancelled = True
    if cancelled:
        store_release(sync, n * SLOT, 1)
    return cancelled


@jit
def begin(w, n, sync, X2, Wp, bp, G2, m0, m1):
    """The start of thread w's part of a split sequence (``lstm_seq_split``, ``gru_seq_split``):
    claims its slot (False if the caller cancelled it), projects the steps m0:m1 of X2 (T, I) into
    G2 (T, N) with the packed Wp and bias bp (``project_panels``), and signals phase 2. The
    threads wait for phase 2 (every step's projection in place) before their first step."""
    if w == 0:
        signal(sync, 0, 1)
    elif not start(sync, w):
        return False
    if m1 > m0:
        project_panels(X2[m0:m1], Wp, bp, G2[m0:m1])
    signal(sync, w, 2)
    return True
