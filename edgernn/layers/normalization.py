"""Normalization layers, Keras-compatible: ``LayerNormalization``."""

from __future__ import annotations

import numbers

import numpy as np

from .. import initializers
from ._util import check_bool, check_int
from .core import Layer

__all__ = ["LayerNormalization"]


class LayerNormalization(Layer):
    """Normalize each sample (each step of a sequence) over ``axis``, then scale and shift:
    ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta`` (biased variance, as Keras).

    Parameters
    ----------
    axis : int or list of int
        Axes of the full tensor (batch axis = 0, which cannot be normalized) to normalize over;
        default -1, the features. ``gamma``/``beta`` have the sizes of these axes (in
        increasing axis order).
    epsilon : float
        Added to the variance (Keras' default 1e-3).
    center : bool
        Add the learned offset ``beta``.
    scale : bool
        Multiply by the learned ``gamma``.
    beta_initializer, gamma_initializer : str or callable
        Default ``"zeros"`` and ``"ones"``.
    rms_scaling : bool
        Keras' RMS variant; only False is supported.

    Attributes
    ----------
    params : ``"gamma"`` and ``"beta"`` (when ``scale`` / ``center``), shape: the normalized axes.

    Notes
    -----
    Lengths pass on unchanged. Over the features (the default) each step is normalized on its
    own, so padded steps cannot leak into the valid ones; an ``axis`` including the time axis
    normalizes over the padded steps too (as Keras does).
    """

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", rms_scaling=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            if not axis:
                raise ValueError("LayerNormalization: axis must not be empty")
            self.axis = [check_int(a, "LayerNormalization: axis") for a in axis]
        else:
            self.axis = check_int(axis, "LayerNormalization: axis")
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not np.isfinite(epsilon) \
                or epsilon < 0:
            raise ValueError(f"LayerNormalization: epsilon must be a finite number >= 0, got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.center = check_bool(center, "LayerNormalization: center")
        self.scale = check_bool(scale, "LayerNormalization: scale")
        if check_bool(rms_scaling, "LayerNormalization: rms_scaling"):
            raise ValueError("LayerNormalization: rms_scaling=True is not supported")
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        initializers.get(beta_initializer), initializers.get(gamma_initializer)

    @property
    def pointwise(self):
        """Over the features only (``axis=-1``), each time step is normalized alone."""
        return self.axis in (-1, [-1])

    def _axes(self, rank):
        """Normalized axes of a full tensor of ``rank`` (batch included): sorted, non-negative."""
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        out = []
        for a in axes:
            if not -rank <= a < rank or a % rank == 0:
                raise ValueError(f"LayerNormalization {self.name!r}: axis={self.axis} is out of range for inputs "
                                 f"of rank {rank} (batch included; the batch axis 0 cannot be normalized)")
            out.append(a % rank)
        if len(set(out)) != len(out):
            raise ValueError(f"LayerNormalization {self.name!r}: axis={self.axis} repeats an axis")
        return tuple(sorted(out))

    def _build(self, input_shape, rng):
        axes = self._axes(len(input_shape) + 1)
        shape = tuple(input_shape[a - 1] for a in axes)
        if None in shape:
            raise ValueError(f"LayerNormalization {self.name!r}: the normalized axes {axes} must have known "
                             f"sizes, got sample shape {tuple(input_shape)}")
        if self.scale:
            self.params["gamma"] = initializers.get(self.gamma_initializer)(shape, rng, self.dtype)
        if self.center:
            self.params["beta"] = initializers.get(self.beta_initializer)(shape, rng, self.dtype)

    def _param_view(self, p, ndim, axes):
        """``gamma``/``beta`` reshaped to broadcast against a full tensor of ``ndim``."""
        return p.reshape([p.shape[axes.index(i)] if i in axes else 1 for i in range(ndim)])

    def forward(self, x, lengths=None, training=False, need_grad=True):
        """Normalize.

        Parameters
        ----------
        x : ndarray (B, ...)

        Returns
        -------
        ndarray, the shape of ``x``
        """
        x = np.asarray(x)
        axes = self._axes(x.ndim)
        want = tuple(self.input_shape[a - 1] for a in axes) if self.input_shape is not None else None
        if want is not None and tuple(x.shape[a] for a in axes) != want:
            raise ValueError(f"LayerNormalization {self.name!r}: expected sizes {want} on axes {axes}, got "
                             f"input shape {x.shape}")
        mean = x.mean(axis=axes, keepdims=True)
        xc = x - mean
        var = (xc * xc).mean(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(var + self.epsilon)  # (B, 1, ...) in x's float dtype
        xhat = xc * inv  # normalized
        y = xhat
        if self.scale:
            y = y * self._param_view(self.params["gamma"], x.ndim, axes)
        if self.center:
            y = y + self._param_view(self.params["beta"], x.ndim, axes)
        if need_grad:
            self._cache = (axes, xhat, inv)
        return y

    def backward(self, dy):
        axes, xhat, inv = self._cache
        dy = np.asarray(dy)
        other = tuple(i for i in range(dy.ndim) if i not in axes)
        self.grads = {}
        if self.scale:
            self.grads["gamma"] = (dy * xhat).sum(axis=other).reshape(self.params["gamma"].shape)
            dxhat = dy * self._param_view(self.params["gamma"], dy.ndim, axes)
        else:
            dxhat = dy
        if self.center:
            self.grads["beta"] = dy.sum(axis=other).reshape(self.params["beta"].shape)
        return inv * (dxhat - dxhat.mean(axis=axes, keepdims=True)
                      - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))

    def get_config(self):
        return {**super().get_config(), "axis": list(self.axis) if isinstance(self.axis, list) else self.axis,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                "beta_initializer": self.beta_initializer, "gamma_initializer": self.gamma_initializer}
