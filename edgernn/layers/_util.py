"""Argument checks and small array helpers shared by the non-recurrent layer modules
(merge, reshaping, pooling, conv, normalization)."""

from __future__ import annotations

import numpy as np


def check_int(value, what, minimum=None):
    """``value`` as an int; TypeError for a non-integer (bools too), ValueError below ``minimum``.

    ``what`` names the argument, e.g. ``"Conv1D: filters"``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value


def check_int1(value, what, minimum=1):
    """Keras' ``int or tuple of 1 int`` (``kernel_size``, ``strides``, ``dilation_rate``) as an int."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"{what} must be an integer or a tuple of one integer, got {value!r}")
        value = value[0]
    return check_int(value, what, minimum)


def check_bool(value, what):
    """``value`` as a bool; TypeError for anything but True/False (numpy bools accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def check_data_format(value, what):
    """Only ``"channels_last"`` (Keras' default; None means it) is supported."""
    if value is None:
        return "channels_last"
    if not isinstance(value, str) or value.lower() not in ("channels_last", "channels_first"):
        raise ValueError(f"{what} must be 'channels_last' or 'channels_first', got {value!r}")
    if value.lower() == "channels_first":
        raise ValueError(f"{what}='channels_first' is not supported: edgernn tensors are (batch, time, "
                         "features) ('channels_last')")
    return "channels_last"


def time_mask(lengths, B, T, where):
    """bool (B, T): ``t < lengths[b]``; checks ``lengths`` (None gives None)."""
    if lengths is None:
        return None
    L = np.asarray(lengths)
    if L.dtype.kind not in "iu" or L.shape != (B,):
        raise ValueError(f"{where}: lengths must be {B} integers, got shape {L.shape} dtype {L.dtype}")
    return np.arange(T)[None, :] < L[:, None]


def unbroadcast(g, shape):
    """Sum ``g`` down to ``shape`` (same rank, each axis equal or 1): the gradient of a broadcast."""
    axes = tuple(i for i, (n, m) in enumerate(zip(g.shape, shape, strict=True)) if m == 1 and n != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g
