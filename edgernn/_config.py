"""One place for Numba settings: fastmath flags, the ``jit`` decorator, threads.

fastmath leaves out ``nnan`` and ``ninf`` so that NaN/inf checks keep working
(the stumpy convention). ``error_model="numpy"`` drops Python's zero-division
checks, which otherwise block SIMD vectorisation of the gate nonlinearities.

If the numba cache directory cannot be written (a read-only root filesystem on a
device, a system-wide install), functions are compiled in memory instead and a
single warning is logged; nothing crashes. ``NUMBA_CACHE_DIR`` is respected.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings

import numba

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


def set_num_threads(n: int) -> None:
    """Set the number of threads used by edgernn's parallel kernels and BLAS calls.

    Parameters
    ----------
    n : int
        Number of threads, at least 1 and at most ``numba.config.NUMBA_NUM_THREADS``.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:  # BLAS used by numpy / numba's np.dot
        from threadpoolctl import threadpool_limits  # optional

        threadpool_limits(n)
    except Exception:  # noqa: BLE001 - threadpoolctl is optional
        pass


def get_num_threads() -> int:
    """Number of threads numba's parallel kernels use."""
    return numba.get_num_threads()
