"""Weight initializers, by Keras name, drawing from a seeded ``numpy.random.Generator``.

Every initializer is called as ``init(shape, rng, dtype)`` with ``shape`` in Keras'
layout (a kernel is ``(fan_in, fan_out)``); layers transpose to ONNX layout themselves.

A layer may also be given a callable, as in Keras: ``kernel_initializer=f`` with
``f(shape, dtype=None)`` (Keras' convention, e.g. a ``keras.initializers`` object or a
lambda returning an array) or ``f(shape, rng, dtype)`` (edgernn's). A model whose layers were
built with a custom callable saves fine (its weights are stored), but the callable itself is
not: it is recorded as ``"custom:<name>"``.
"""

from __future__ import annotations

import contextlib
import inspect
import threading

import numpy as np

__all__ = ["get", "skip_random_init", "name_of", "is_known", "glorot_uniform", "glorot_normal", "orthogonal", "zeros", "ones", "uniform",
           "normal", "he_uniform", "lecun_uniform"]


def _fans(shape):
    """Keras' fan_in / fan_out: a 1-D shape counts as (n, n), a 2-D kernel is (fan_in, fan_out),
    a convolution kernel (*window, in, out) multiplies both by the window size (``Conv1D``)."""
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) > 2:
        field = int(np.prod(shape[:-2]))
        return shape[-2] * field, shape[-1] * field
    return shape[0], int(np.prod(shape[1:]))


def glorot_uniform(shape, rng, dtype):
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)) (Keras' default kernel initializer)."""
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / max(1, fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def glorot_normal(shape, rng, dtype):
    """Truncated-free normal with std sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return (rng.standard_normal(shape) * np.sqrt(2.0 / max(1, fan_in + fan_out))).astype(dtype)


def he_uniform(shape, rng, dtype):
    """U(-l, l) with l = sqrt(6 / fan_in)."""
    fan_in, _ = _fans(shape)
    limit = np.sqrt(6.0 / max(1, fan_in))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def lecun_uniform(shape, rng, dtype):
    """U(-l, l) with l = sqrt(3 / fan_in)."""
    fan_in, _ = _fans(shape)
    limit = np.sqrt(3.0 / max(1, fan_in))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def orthogonal(shape, rng, dtype, gain=1.0):
    """Keras' orthogonal initializer: QR of a normal matrix, signs fixed by diag(R).

    For a recurrent kernel of shape (H, G*H) the rows come out orthonormal.
    """
    if len(shape) > 2:  # Keras: a convolution kernel (*window, in, out) as (window * in, out)
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
    else:
        rows, cols = shape[0], int(np.prod(shape[1:]))
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))  # (max, min), orthonormal columns
    if rows < cols:
        q = q.T
    return (gain * q.reshape(shape)).astype(dtype)


def zeros(shape, rng, dtype):
    """All zeros."""
    return np.zeros(shape, dtype=dtype)


def ones(shape, rng, dtype):
    """All ones."""
    return np.ones(shape, dtype=dtype)


def uniform(shape, rng, dtype):
    """U(-0.05, 0.05), Keras' ``RandomUniform()`` default (used by Embedding)."""
    return rng.uniform(-0.05, 0.05, size=shape).astype(dtype)


def normal(shape, rng, dtype):
    """N(0, 0.05^2), Keras' ``RandomNormal()`` default."""
    return (0.05 * rng.standard_normal(shape)).astype(dtype)


def edgeml_normal(shape, rng, dtype):
    """N(0, 0.1^2): microsoft/EdgeML's ``0.1 * randn`` for FastRNN/FastGRNN's W and U."""
    return (0.1 * rng.standard_normal(shape)).astype(dtype)


_REGISTRY = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "lecun_uniform": lecun_uniform,
    "orthogonal": orthogonal,
    "zeros": zeros,
    "ones": ones,
    "uniform": uniform,
    "random_uniform": uniform,
    "normal": normal,
    "random_normal": normal,
    "edgeml_normal": edgeml_normal,
}


_local = threading.local()


@contextlib.contextmanager
def skip_random_init():
    """Within this block (in this thread), every initializer gives zeros (no random draws, no
    QR): used by ``load_model``, whose weights come from the file."""
    prev = getattr(_local, "skip", False)
    _local.skip = True
    try:
        yield
    finally:
        _local.skip = prev


def _wrap_callable(fn):
    """An ``init(shape, rng, dtype)`` calling a user's callable (Keras' or edgernn's convention)."""
    label = getattr(fn, "__name__", None) or type(fn).__name__
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        ours = "rng" in [p.name for p in params] or len([p for p in params if p.default is p.empty]) >= 3
    except (TypeError, ValueError):
        ours = False

    def init(shape, rng, dtype):
        shape = tuple(int(d) for d in shape)
        out = fn(shape, rng, dtype) if ours else fn(shape, dtype=np.dtype(dtype).name)
        a = np.asarray(out)
        if a.shape != shape:
            raise ValueError(f"initializer {label!r} returned shape {a.shape}, expected {shape}")
        if a.dtype.kind not in "fiub":
            raise TypeError(f"initializer {label!r} returned dtype {a.dtype}, expected numbers")
        return np.array(a, dtype=dtype, copy=True)

    init.__name__ = label
    init.wrapped = fn
    return init


def name_of(init):
    """The name to save for an initializer given as ``init`` (a name or a callable)."""
    if isinstance(init, str):
        return init
    for key, fn in _REGISTRY.items():
        if init is fn:
            return key
    return "custom:" + (getattr(init, "__qualname__", None) or getattr(init, "__name__", None)
                        or type(init).__name__)


def get(name):
    """Return the initializer ``name`` (a Keras name such as ``"glorot_uniform"``, or a callable).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    TypeError
        For something that is neither a name nor a callable.
    """
    if getattr(_local, "skip", False):
        return zeros
    if callable(name) and not isinstance(name, str):
        if any(name is fn for fn in _REGISTRY.values()):
            return name
        return _wrap_callable(name)
    if not isinstance(name, str):
        raise TypeError(f"initializer must be a name (a str) or a callable, got {type(name).__name__}")
    if name.startswith("custom:"):
        raise ValueError(f"initializer {name!r}: the model was built with a custom initializer callable, "
                         "which is not saved with the model; pass the callable again")
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown initializer {name!r}; known: {sorted(_REGISTRY)} or a callable")
    return _REGISTRY[key]


def is_known(name):
    """True for a registered initializer name or a saved ``"custom:..."`` placeholder."""
    return isinstance(name, str) and (name.lower() in _REGISTRY or name.startswith("custom:"))
