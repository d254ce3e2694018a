"""One place for Numba settings: fastmath flags, the ``jit`` decorator, threads.

fastmath leaves out ``nnan`` and ``ninf`` so that NaN/inf checks keep working
(the stumpy convention). ``error_model="numpy"`` drops Python's zero-division
checks, which otherwise block SIMD vectorisation of the gate nonlinearities.

If the numba cache directory cannot be written (a read-only root filesystem on a
device, a system-wide install), functions are compiled in memory instead and a
single warning is logged; nothing crashes. ``NUMBA_CACHE_DIR`` is respected.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import warnings

import numba
import numpy as np

logger = logging.getLogger("edgernn")

# Every fast-math flag except nnan and ninf.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

_cache_ok: bool | None = None
_warned = False


def _cache_dir_writable() -> bool:
    """True if numba can write its cache for this package."""
    global _cache_ok
    if _cache_ok is not None:
        return _cache_ok
    candidates = []
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        candidates.append(env)  # numba uses only this one when it is set
    else:
        candidates.append(os.path.join(os.path.dirname(__file__), "__pycache__"))
        candidates.append(os.path.join(os.path.expanduser("~"), ".cache", "numba"))
    ok = False
    for d in candidates:
        try:
            os.makedirs(d, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=d, prefix=".edgernn-probe-"):
                pass
            ok = True
            break
        except OSError:
            continue
    _cache_ok = ok
    return ok


def _warn_no_cache(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        msg = (
            "edgernn: numba cache directory is not writable (%s); compiling in memory. "
            "Set NUMBA_CACHE_DIR to a writable directory for fast cold starts." % reason
        )
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def jit(fn=None, *, parallel: bool = False, inline: str = "never"):
    """``numba.njit`` with edgernn's settings: ``cache=True``, FASTMATH, numpy error model.

    Falls back to an in-memory compile (one warning) when the cache is not writable.
    """

    def deco(f):
        opts = dict(fastmath=set(FASTMATH), error_model="numpy", nogil=True, parallel=parallel)
        if inline != "never":
            opts["inline"] = inline
        if _cache_dir_writable():
            try:
                return numba.njit(cache=True, **opts)(f)
            except RuntimeError as exc:  # "cannot cache function ...: no locator available"
                _warn_no_cache(str(exc))
        else:
            _warn_no_cache(os.environ.get("NUMBA_CACHE_DIR") or "package and user cache dirs")
        return numba.njit(cache=False, **opts)(f)

    if fn is not None:
        return deco(fn)
    return deco


# BLAS threads for edgernn's own matrix products. The matrices of small recurrent models are
# far too small for a BLAS thread pool: measured on 2 cores under load, a 2-layer LSTM training
# epoch took 1.5 s with OpenBLAS' default 2 threads and 0.024 s with 1. So edgernn runs its
# BLAS calls single-threaded unless set_num_threads says otherwise; the user's own numpy
# calls outside edgernn are not affected.
_blas_threads = 1
_controller = None


def blas_limit():
    """Context manager: BLAS limited to edgernn's thread count (a no-op without threadpoolctl)."""
    global _controller
    if _controller is None:
        try:
            import scipy.linalg.cython_blas  # noqa: F401 - numba's np.dot calls this BLAS: load it first
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        except Exception:  # noqa: BLE001 - threadpoolctl missing or failing: leave BLAS alone
            _controller = False
    if _controller is False:
        return contextlib.nullcontext()
    return _controller.limit(limits=_blas_threads, user_api="blas")


def with_blas_limit(fn):
    """Decorator: run ``fn`` with BLAS limited to edgernn's thread count."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_limit():
            return fn(*args, **kwargs)

    return wrapper


def set_num_threads(n: int) -> None:
    """Set the number of threads edgernn uses (numba parallel kernels and its BLAS calls).

    The default is one BLAS thread for edgernn's own matrix products (small matrices run
    faster single-threaded) and numba's default for parallel kernels.

    Parameters
    ----------
    n : int
        Number of threads, at least 1; numba's share is capped at ``numba.config.NUMBA_NUM_THREADS``.
    """
    global _blas_threads, _controller
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _blas_threads = n
    _controller = None  # re-detect BLAS libraries loaded since


def get_num_threads() -> int:
    """Number of threads edgernn's BLAS calls use."""
    return _blas_threads
