"""Mask-aware global pooling over time, Keras-compatible: ``GlobalAveragePooling1D``,
``GlobalMaxPooling1D``.

``(B, T, F) -> (B, F)`` (``keepdims=True``: ``(B, 1, F)``). With lengths, the padded steps
(``t >= lengths[b]``) are ignored: the average is over the valid steps only, the maximum over
the valid steps only, and a sample of length 0 gives zeros (Keras' masked average gives NaN there).

The pooled output has no padding: ``compute_lengths`` gives None (``forward`` reads the
input's lengths, see :mod:`edgernn.layers.core`).
"""

from __future__ import annotations

import numpy as np

from ._util import check_bool, check_data_format, time_mask
from .core import Layer

__all__ = ["GlobalAveragePooling1D", "GlobalMaxPooling1D", "GlobalAvgPool1D", "GlobalMaxPool1D"]


class _GlobalPooling1D(Layer):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.data_format = check_data_format(data_format, f"{name}: data_format")
        self.keepdims = check_bool(keepdims, f"{name}: keepdims")

    def _build(self, input_shape, rng):
        if len(input_shape) != 2:
            raise ValueError(f"{type(self).__name__} {self.name!r}: expects sequences (batch, time, features), "
                             f"got sample shape {tuple(input_shape)}")

    def compute_output_shape(self, input_shape):
        F = tuple(input_shape)[-1:]
        return ((1,) + F) if self.keepdims else F

    def compute_lengths(self, x, lengths):
        return None  # the pooled output has no padding

    def _check(self, x, lengths):
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"{type(self).__name__} {self.name!r}: expected input (batch, time, features), got "
                             f"shape {x.shape}")
        return x, time_mask(lengths, x.shape[0], x.shape[1], f"{type(self).__name__} {self.name!r}")

    def _out(self, y):
        return y[:, None, :] if self.keepdims else y  # (B, 1, F) or (B, F)

    def _dy(self, dy):
        dy = np.asarray(dy)
        return dy[:, 0, :] if self.keepdims else dy  # (B, F)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling1D(_GlobalPooling1D):
    """Mean over the valid time steps: ``y[b] = sum_{t < L_b} x[b, t] / L_b`` (0 when ``L_b = 0``).

    Parameters
    ----------
    data_format : {"channels_last", None}
        Keras' argument; only ``"channels_last"`` (time on axis 1) is supported.
    keepdims : bool
        Keep the time axis (size 1): output ``(B, 1, F)``.
    """

    def forward(self, x, lengths=None, training=False, need_grad=True):
        x, keep = self._check(x, lengths)  # (B, T, F), (B, T) or None
        B, T, _ = x.shape
        if keep is None:
            w = np.full((B, T), 1.0 / max(T, 1), dtype=x.dtype)  # (B, T) weight of each step
        else:
            n = keep.sum(axis=1, keepdims=True)  # (B, 1) valid steps
            w = (keep / np.maximum(n, 1)).astype(x.dtype)
        y = np.einsum("btf,bt->bf", x, w)  # (B, F)
        if need_grad:
            self._w = w
        return self._out(y)

    def backward(self, dy):
        self.grads = {}
        return self._dy(dy)[:, None, :] * self._w[:, :, None]  # (B, T, F)


class GlobalMaxPooling1D(_GlobalPooling1D):
    """Maximum over the valid time steps (0 for a sample of length 0). The gradient goes to the
    first step holding the maximum.

    Parameters
    ----------
    data_format : {"channels_last", None}
        Keras' argument; only ``"channels_last"`` (time on axis 1) is supported.
    keepdims : bool
        Keep the time axis (size 1): output ``(B, 1, F)``.
    """

    def forward(self, x, lengths=None, training=False, need_grad=True):
        x, keep = self._check(x, lengths)  # (B, T, F), (B, T) or None
        if x.shape[1] == 0:
            raise ValueError(f"GlobalMaxPooling1D {self.name!r}: input has no time steps")
        xm = x if keep is None else np.where(keep[:, :, None], x, -np.inf)
        idx = np.argmax(xm, axis=1)  # (B, F) first step of the maximum
        y = np.take_along_axis(x, idx[:, None, :], axis=1)[:, 0, :]  # (B, F)
        nonempty = None
        if keep is not None:
            nonempty = keep.any(axis=1)[:, None]  # (B, 1)
            y = np.where(nonempty, y, 0).astype(x.dtype, copy=False)
        if need_grad:
            self._fwd = (x.shape, idx, nonempty)
        return self._out(y)

    def backward(self, dy):
        shape, idx, nonempty = self._fwd
        self.grads = {}
        g = self._dy(dy)  # (B, F)
        if nonempty is not None:
            g = np.where(nonempty, g, 0)
        dx = np.zeros(shape, dtype=g.dtype)
        np.put_along_axis(dx, idx[:, None, :], g[:, None, :], axis=1)
        return dx  # (B, T, F)


GlobalAvgPool1D = GlobalAveragePooling1D  # Keras aliases
GlobalMaxPool1D = GlobalMaxPooling1D
