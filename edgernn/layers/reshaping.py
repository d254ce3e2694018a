"""Reshaping layers, Keras-compatible: ``RepeatVector``, ``TimeDistributed``, ``Flatten``, ``Reshape``.

Lengths: ``TimeDistributed`` keeps the time axis and passes the lengths on; the others build a
new axis layout, so their output has no padding (lengths None; ``Flatten`` of a padded
sequence flattens the padded steps' values as they are, as Keras does).
"""

from __future__ import annotations

import math

import numpy as np

from ._util import check_data_format, check_int
from .core import Layer

__all__ = ["RepeatVector", "TimeDistributed", "Flatten", "Reshape"]


# ---- RepeatVector ---------------------------------------------------------------------------
class RepeatVector(Layer):
    """Repeat a vector ``n`` times: ``(B, F) -> (B, n, F)`` (e.g. an encoder's state fed to every
    step of a decoder).

    Parameters
    ----------
    n : int
        Number of repetitions (>= 1).
    """

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = check_int(n, "RepeatVector: n", 1)

    def _build(self, input_shape, rng):
        if len(input_shape) != 1:
            raise ValueError(f"RepeatVector {self.name!r}: expects vectors (batch, features), got sample shape "
                             f"{input_shape}")

    def compute_output_shape(self, input_shape):
        return (self.n,) + tuple(input_shape)

    def compute_lengths(self, x, lengths):
        return None  # a new time axis, every step valid

    def forward(self, x, lengths=None, training=False, need_grad=True):
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"RepeatVector {self.name!r}: expected input (batch, features), got shape {x.shape}")
        return np.repeat(x[:, None, :], self.n, axis=1)  # (B, n, F)

    def backward(self, dy):
        self.grads = {}
        return np.asarray(dy).sum(axis=1)  # (B, F)

    def get_config(self):
        return {**super().get_config(), "n": self.n}


# ---- Flatten --------------------------------------------------------------------------------
class Flatten(Layer):
    """Flatten each sample: ``(B, d1, ..., dk) -> (B, d1 * ... * dk)`` (a new array).

    Parameters
    ----------
    data_format : {"channels_last", None}
        Keras' argument; only ``"channels_last"`` is supported.
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = check_data_format(data_format, "Flatten: data_format")

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        return (None,) if None in shape else (math.prod(shape),)

    def compute_lengths(self, x, lengths):
        return None

    def forward(self, x, lengths=None, training=False, need_grad=True):
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError(f"Flatten {self.name!r}: expected an input with a batch axis, got a scalar")
        if need_grad:
            self._shape = x.shape
        return np.array(x.reshape(x.shape[0], -1))  # (B, prod)

    def backward(self, dy):
        self.grads = {}
        return np.asarray(dy).reshape(self._shape)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


# ---- Reshape --------------------------------------------------------------------------------
class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (batch axis kept): ``(B, ...) -> (B, *target_shape)``.

    Parameters
    ----------
    target_shape : tuple of int
        Without the batch axis; one entry may be -1 (inferred), the others >= 1.
    """

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(target_shape, (list, tuple)):
            raise TypeError(f"Reshape: target_shape must be a tuple of integers, got {target_shape!r}")
        shape = tuple(check_int(d, "Reshape: target_shape entries", -1) for d in target_shape)
        if any(d == 0 for d in shape) or shape.count(-1) > 1:
            raise ValueError(f"Reshape: target_shape entries must be >= 1, with at most one -1, got {target_shape!r}")
        self.target_shape = shape

    def _resolve(self, size):
        """``target_shape`` with its -1 filled in for samples of ``size`` elements (None: unknown)."""
        known = math.prod(d for d in self.target_shape if d != -1)
        if -1 not in self.target_shape:
            if size is not None and size != known:
                raise ValueError(f"Reshape {self.name!r}: cannot reshape samples of {size} elements to "
                                 f"{self.target_shape} ({known} elements)")
            return self.target_shape
        if size is None:
            return tuple(None if d == -1 else d for d in self.target_shape)
        if size % known:
            raise ValueError(f"Reshape {self.name!r}: cannot reshape samples of {size} elements to "
                             f"{self.target_shape} ({size} is not a multiple of {known})")
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        return self._resolve(None if None in shape else math.prod(shape))

    def compute_lengths(self, x, lengths):
        return None

    def forward(self, x, lengths=None, training=False, need_grad=True):
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError(f"Reshape {self.name!r}: expected an input with a batch axis, got a scalar")
        target = self._resolve(math.prod(x.shape[1:]))
        if need_grad:
            self._shape = x.shape
        return np.array(x.reshape((x.shape[0],) + target))

    def backward(self, dy):
        self.grads = {}
        return np.asarray(dy).reshape(self._shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


# ---- TimeDistributed ---------------------------------------------------------------------
class TimeDistributed(Layer):
    """Apply a single-input layer to every time step: ``(B, T, *s) -> (B, T, *layer(s))``.

    The steps are folded into the batch: the input is reshaped to ``(B*T, *s)``, run through
    ``layer`` and the result reshaped back, so the gradient is exact and the weights are the
    inner layer's (``params`` is the inner layer's dict: same keys, same arrays). An inner
    ``Masking``/``Embedding(mask_zero=True)`` computes its own lengths per step; the outer
    lengths are passed on unchanged.

    Parameters
    ----------
    layer : Layer
        Any single-input layer (``Dense``, ``Conv1D`` on ``(B, T, T2, F)``, an RNN, ...); not
        stateful, not returning states.

    Attributes
    ----------
    layer : Layer
        The wrapped layer (built for one step's shape ``s``).
    """

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed: layer must be a Layer instance, got {type(layer).__name__}")
        if getattr(layer, "multi_input", False):
            raise TypeError(f"TimeDistributed: layer must take one input, got {type(layer).__name__}")
        if getattr(layer, "stateful", False):
            raise ValueError("TimeDistributed: layer must not be stateful (its batch is batch * time)")
        if getattr(layer, "return_state", False):
            raise ValueError("TimeDistributed: layer must not have return_state=True")
        super().__init__(**kwargs)
        self.layer = layer
        self.params = layer.params
        self.buffers = layer.buffers

    # streaming (edgernn.graph_stream): one step is the wrapped layer on that step
    def stream_state(self, batch_size, **kwargs):
        if not getattr(self.layer, "pointwise", False):
            raise ValueError(f"stream: layer TimeDistributed {self.name!r} wraps {type(self.layer).__name__}, which "
                             "does not stream step by step")
        return {}

    def stream_step(self, x, state, **kwargs):
        return self.layer.forward(x, training=False, need_grad=False)

    def build(self, input_shape, rng=None):
        shape = tuple(input_shape)
        if len(shape) < 2:
            raise ValueError(f"TimeDistributed {self.name!r}: expects input (batch, time, ...) of rank >= 3, "
                             f"got sample shape {shape}")
        inner = self.layer
        if inner.built:
            if tuple(inner.input_shape) != shape[1:]:
                raise ValueError(f"TimeDistributed {self.name!r}: the wrapped layer was built for steps of shape "
                                 f"{tuple(inner.input_shape)}, got {shape[1:]}")
            if inner.dtype != self.dtype:
                inner.astype(self.dtype)
        else:
            inner.dtype = self.dtype
            if inner.name is None and self.name is not None:
                inner.name = self.name + "_inner"
            inner.build(shape[1:], rng)
        if isinstance(inner.output_shape, list):
            raise ValueError(f"TimeDistributed {self.name!r}: the wrapped layer has several outputs")
        super().build(shape, rng)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        return shape[:1] + tuple(self.layer.compute_output_shape(shape[1:]))

    def forward(self, x, lengths=None, training=False, need_grad=True):
        """Run the wrapped layer on every step.

        Parameters
        ----------
        x : ndarray (B, T, *s)
        lengths : int ndarray (B,), optional
            Not used (padded steps are computed like the others; the lengths pass on).

        Returns
        -------
        ndarray (B, T, *out)
        """
        x = np.asarray(x)
        if x.ndim < 3:
            raise ValueError(f"TimeDistributed {self.name!r}: expected input (batch, time, ...), got shape {x.shape}")
        B, T = x.shape[:2]
        x2 = x.reshape((B * T,) + x.shape[2:])  # (B*T, *s)
        inner = self.layer
        if training and self._rng is not None and getattr(inner, "seed", None) is None:
            inner._rng = self._rng  # the model's dropout stream
        y2 = inner.forward(x2, lengths=inner.compute_lengths(x2, None), training=training, need_grad=need_grad)
        if need_grad:
            self._shape = x.shape
        return y2.reshape((B, T) + y2.shape[1:])  # (B, T, *out)

    def backward(self, dy):
        dy = np.asarray(dy)
        dx2 = self.layer.backward(dy.reshape((-1,) + dy.shape[2:]))  # (B*T, *s)
        self.grads = self.layer.grads
        return None if dx2 is None else dx2.reshape(self._shape)

    def astype(self, dtype):
        self.layer.astype(dtype)
        self.dtype = self.layer.dtype
        self.grads = {}
        return self

    def get_config(self):
        return {**super().get_config(),
                "layer": {"class_name": type(self.layer).__name__, "config": self.layer.get_config()}}

    @classmethod
    def from_config(cls, config):
        from . import get as get_layer_class

        config = dict(config)
        spec = config.pop("layer", None)
        if not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str) \
                or not isinstance(spec.get("config"), dict):
            raise ValueError("TimeDistributed: config 'layer' must be {'class_name': str, 'config': dict}")
        inner = get_layer_class(spec["class_name"]).from_config(dict(spec["config"]))
        return cls(inner, **config)
