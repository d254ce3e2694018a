"""One place for Numba settings: fastmath flags, the ``jit`` decorator, threads.

fastmath leaves out ``nnan`` and ``ninf`` so that NaN/inf checks keep working
(the stumpy convention). ``error_model="numpy"`` drops Python's zero-division
checks, which otherwise block SIMD vectorisation of the gate nonlinearities.

Compiled kernels are cached in ``edgernn-<hash of the package's sources>`` under
``NUMBA_CACHE_DIR`` (or the package's ``__pycache__``), so that editing any module (a cell's
inlined step, say) can never leave a stale cached caller behind. If that directory cannot be
written (a read-only root filesystem on a device, a system-wide install), functions are
compiled in memory instead and a single warning is logged; nothing crashes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import tempfile
import threading
import warnings

import numba
import numpy as np
from numba.core import caching as _caching

logger = logging.getLogger("edgernn")

# Every fast-math flag except nnan and ninf.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

_cache_ok: bool | None = None
_warned = False

# ---- the cache follows the package's sources -------------------------------------------------
# numba keys a cached function by its own file's timestamp only: a cached caller is NOT
# invalidated when a function it inlined from another module changes (measured: after editing
# a cell's step, the cached driver kept returning the old result). With one module per cell
# this would bite every contributor, so edgernn's kernels are cached in a directory named by a
# hash of every .py file of the package: any source change starts a fresh cache.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def source_hash(package_dir: str = PACKAGE_DIR) -> str:
    """sha256 (16 hex digits) over the relative paths and contents of the package's .py files."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(root, f)
                h.update(os.path.relpath(path, package_dir).replace(os.sep, "/").encode())
                with open(path, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()[:16]


SOURCE_HASH = source_hash()


def cache_dir() -> str:
    """Where edgernn's compiled kernels go: ``$NUMBA_CACHE_DIR`` (or the package's
    ``__pycache__``) / ``edgernn-<source hash>``."""
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(PACKAGE_DIR, "__pycache__")
    return os.path.join(base, f"edgernn-{SOURCE_HASH}")


class _SourceTreeLocator(_caching.UserProvidedCacheLocator):
    """numba cache locator for edgernn's own functions: ``cache_dir()/<subpackage>``."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        sub = os.path.relpath(os.path.dirname(os.path.abspath(py_file)), PACKAGE_DIR)
        self._cache_path = os.path.join(cache_dir(), "root" if sub == "." else sub.replace(os.sep, "_"))

    @classmethod
    def from_function(cls, py_func, py_file):
        path = os.path.abspath(py_file)
        if not path.startswith(PACKAGE_DIR + os.sep) or not os.path.exists(path):
            return None  # not ours: numba's own locators decide
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self


if _SourceTreeLocator not in _caching.CacheImpl._locator_classes:
    _caching.CacheImpl._locator_classes.insert(0, _SourceTreeLocator)


def _cache_dir_writable() -> bool:
    """True if numba can write edgernn's cache directory."""
    global _cache_ok
    if _cache_ok is not None:
        return _cache_ok
    ok = False
    try:
        d = cache_dir()
        os.makedirs(d, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".edgernn-probe-"):
            pass
        ok = True
    except OSError:
        pass
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


# Threads. The matrices of small recurrent models are far too small for a BLAS thread pool:
# measured on 2 cores under load, a 2-layer LSTM training epoch took 1.5 s with OpenBLAS'
# default 2 threads and 0.024 s with 1. So edgernn's own BLAS calls always run single-threaded
# (the user's numpy calls outside edgernn are not affected), and edgernn uses several cores by
# splitting a call into independent tasks instead: the directions of a bidirectional layer and
# slices of a batch, each running its whole time loop in its own thread (see
# ``functional._tasks``; measured 1.8x on 2 cores for a (64 -> 256) LSTM at batch 32).
_blas_threads = 1
_threads = None  # edgernn's parallel tasks; None: every core numba may use
_controller = None


def _default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, numba.config.NUMBA_NUM_THREADS))


class _BlasLimit:
    """Context manager: set the BLAS libraries' thread count, restore it on exit. Only the
    libraries whose count differs are touched: a few ctypes calls, ~1 us (threadpoolctl's own
    ``limit`` costs ~12 us per call, which showed in short sequences)."""

    __slots__ = ("libs", "n", "saved", "outer")

    def __init__(self, libs, n):
        self.libs = libs
        self.n = n
        self.saved = []
        self.outer = None

    def __enter__(self):
        self.outer = getattr(_LIMIT, "n", None)
        if self.outer == self.n:  # inside a limit to the same count (predict -> layer -> kernel): nothing to do
            return self
        for lc in self.libs:
            old = lc.get_num_threads()
            if old != self.n:
                lc.set_num_threads(self.n)
                self.saved.append((lc, old))
        _LIMIT.n = self.n
        return self

    def __exit__(self, *exc):
        if self.outer == self.n:
            return False
        for lc, old in reversed(self.saved):
            lc.set_num_threads(old)
        self.saved = []
        _LIMIT.n = self.outer
        return False


_LIMIT = threading.local()  # n: the count of the innermost edgernn limit active in this thread


def blas_limit(n=None):
    """Context manager: BLAS limited to ``n`` threads, default edgernn's BLAS thread count (a
    no-op without threadpoolctl)."""
    global _controller
    if _controller is None:
        try:
            import scipy.linalg.cython_blas  # noqa: F401 - numba's np.dot calls this BLAS: load it first
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController().select(user_api="blas").lib_controllers
        except Exception:  # noqa: BLE001 - threadpoolctl missing or failing: leave BLAS alone
            _controller = False
    if _controller is False:
        return contextlib.nullcontext()
    return _BlasLimit(_controller, _blas_threads if n is None else n)


def with_blas_limit(fn):
    """Decorator: run ``fn`` with BLAS limited to edgernn's thread count."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_limit():
            return fn(*args, **kwargs)

    return wrapper


def set_num_threads(n: int) -> None:
    """Set how many threads edgernn uses.

    A call to ``functional.lstm/gru/rnn`` (and so every layer, ``fit`` and ``predict``) whose
    work is large enough is split into independent tasks, run side by side: the two directions
    of a bidirectional layer, and slices of the batch (at least 8 sequences each). Each task
    runs its whole time loop in one thread with no synchronisation inside, and calls BLAS
    single-threaded. Batch-1 streaming and small calls run in the calling thread.

    The default is every core (``os.cpu_count()``, capped by ``NUMBA_NUM_THREADS``). Use
    ``set_num_threads(1)`` to keep edgernn on one core, e.g. next to a sensor-reading loop.

    Parameters
    ----------
    n : int
        Number of threads, at least 1; numba's share is capped at ``numba.config.NUMBA_NUM_THREADS``.

    Examples
    --------
    >>> import edgernn
    >>> edgernn.set_num_threads(1)
    >>> edgernn.get_num_threads()
    1
    """
    global _threads, _controller
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _threads = n
    _controller = None  # re-detect BLAS libraries loaded since


def get_num_threads() -> int:
    """Number of threads edgernn uses (see :func:`set_num_threads`)."""
    return _default_threads() if _threads is None else _threads
