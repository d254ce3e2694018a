"""Weight initializers, by Keras name, drawing from a seeded ``numpy.random.Generator``.

Every initializer is called as ``init(shape, rng, dtype)`` with ``shape`` in Keras'
layout (a kernel is ``(fan_in, fan_out)``); layers transpose to ONNX layout themselves.
"""

from __future__ import annotations

import numpy as np

__all__ = ["get", "glorot_uniform", "glorot_normal", "orthogonal", "zeros", "ones", "uniform",
           "normal", "he_uniform", "lecun_uniform"]


def _fans(shape):
    """Keras' fan_in / fan_out for a 2-D kernel; a 1-D shape counts as (n, n)."""
    if len(shape) == 1:
        return shape[0], shape[0]
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
}


def get(name):
    """Return the initializer called ``name`` (a Keras name such as ``"glorot_uniform"``).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"initializer must be given by name (a str), got {type(name).__name__}")
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown initializer {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[key]
