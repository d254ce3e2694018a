"""1-D convolution over time, Keras-compatible: ``Conv1D``.

Vectorised numpy: the padded input is viewed as its windows ``(B, T_out, k, C)`` (a strided
view, no copy), gathered once into an im2col matrix ``(B*T_out, k*C)`` and multiplied by the
kernel ``(k*C, filters)`` in one matrix product. The backward pass is the transposed product
and one vectorised scatter-add per kernel tap.
"""

from __future__ import annotations

import numpy as np

from .. import initializers
from ._util import check_bool, check_data_format, check_int, check_int1, time_mask
from .core import ACTIVATIONS, Layer, _activation

__all__ = ["Conv1D", "Convolution1D", "conv1d_output_length"]

PADDINGS = ("valid", "same", "causal")


def conv1d_output_length(length, kernel_size, strides=1, padding="valid", dilation_rate=1):
    """Number of output steps of a 1-D convolution over ``length`` input steps (int or int array).

    ``valid``: ``floor((length - (k-1)*d - 1) / s) + 1`` (at least 0); ``same`` and ``causal``:
    ``ceil(length / s)``.
    """
    L = np.asarray(length, dtype=np.int64)
    if padding == "valid":
        span = (kernel_size - 1) * dilation_rate + 1
        out = np.maximum(L - span + strides, 0) // strides
    else:
        out = (L + strides - 1) // strides
    return out if out.ndim else int(out)


class Conv1D(Layer):
    """1-D convolution over the time axis: ``(B, T, C) -> (B, T_out, filters)``.

    ``y[b, j] = activation(bias + sum_i x_pad[b, j*s + i*d] @ kernel[i])`` (cross-correlation,
    as Keras and PyTorch compute it), with ``x_pad`` the input padded with zeros:

    - ``"valid"``: no padding, ``T_out = floor((T - (k-1)*d - 1) / s) + 1``;
    - ``"same"``: ``T_out = ceil(T / s)``, ``(T_out-1)*s + (k-1)*d + 1 - T`` zeros split as
      TensorFlow does (the extra one at the end);
    - ``"causal"``: ``(k-1)*d`` zeros before the sequence, ``T_out = ceil(T / s)``: output ``j``
      sees no input after step ``j*s``.

    Parameters
    ----------
    filters : int
        Output features.
    kernel_size : int or tuple of one int
        Window length ``k``.
    strides : int or tuple of one int
        Step ``s`` between windows.
    padding : {"valid", "same", "causal"}
    data_format : {"channels_last", None}
        Keras' argument; only ``"channels_last"`` is supported.
    dilation_rate : int or tuple of one int
        Spacing ``d`` between the taps of a window. (Keras refuses ``strides > 1`` together
        with ``dilation_rate > 1``; edgernn computes it.)
    groups : int
        Only 1 (Keras' default) is supported.
    activation : str, optional
        Keras name; None means linear.
    use_bias : bool
    kernel_initializer, bias_initializer : str or callable
        Keras' fans for a convolution (``fan_in = k * C``, ``fan_out = k * filters``).

    Attributes
    ----------
    params : ``"kernel"`` (kernel_size, C, filters) and ``"bias"`` (filters,) (Keras layout).

    Notes
    -----
    Lengths (``lengths[b] = L``): the output's lengths are :func:`conv1d_output_length` of
    ``L``: the output steps the sequence would have alone. ``"causal"`` (``ceil(L/s)``): the
    output steps whose window ends inside the valid part; they never read padding.
    ``"valid"`` (``floor((L - (k-1)*d - 1)/s) + 1``, 0 for a sequence shorter than the window):
    the output steps whose whole window lies inside the valid part; they never read padding.
    ``"same"`` (``ceil(L/s)``): the output steps whose window *centre* ``j*s`` is inside the valid
    part. With ``strides=1`` the padded input steps are zeroed before the convolution (this
    needs the input's lengths in ``forward``, which both conventions give when ``s = 1``), so
    every valid output equals that of the sequence alone; with ``strides > 1`` the windows near
    the end read the padded steps as they are (zeros after ``Masking`` or a list of sequences).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int(filters, "Conv1D: filters", 1)
        self.kernel_size = check_int1(kernel_size, "Conv1D: kernel_size")
        self.strides = check_int1(strides, "Conv1D: strides")
        self.dilation_rate = check_int1(dilation_rate, "Conv1D: dilation_rate")
        if not isinstance(padding, str) or padding.lower() not in PADDINGS:
            raise ValueError(f"Conv1D: padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding.lower()
        self.data_format = check_data_format(data_format, "Conv1D: data_format")
        if check_int(groups, "Conv1D: groups", 1) != 1:
            raise ValueError(f"Conv1D: groups={groups} is not supported (only 1)")
        self.activation = _activation(activation)
        self.use_bias = check_bool(use_bias, "Conv1D: use_bias")
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        initializers.get(kernel_initializer), initializers.get(bias_initializer)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def span(self):
        """Input steps one window covers: ``(k-1)*d + 1``."""
        return (self.kernel_size - 1) * self.dilation_rate + 1

    def _pads(self, T):
        """(left, right) zeros and the output length for ``T`` input steps."""
        s, span = self.strides, self.span
        if self.padding == "valid":
            return 0, 0, (T - span) // s + 1
        T_out = -(-T // s)
        if self.padding == "causal":
            return span - 1, 0, T_out
        total = max((T_out - 1) * s + span - T, 0)
        return total // 2, total - total // 2, T_out

    def _zero_padding(self):
        """True when forward zeroes the padded input steps (``same`` with stride 1)."""
        return self.padding == "same" and self.strides == 1

    # ---- building ------------------------------------------------------------------------
    def _build(self, input_shape, rng):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"Conv1D {self.name!r}: expects input (batch, time, features) with a known feature "
                             f"count, got sample shape {tuple(input_shape)}")
        T = input_shape[0]
        if T is not None and self.padding == "valid" and T < self.span:
            raise ValueError(f"Conv1D {self.name!r}: {T} time steps are fewer than the window "
                             f"({self.span} = (kernel_size-1)*dilation_rate+1) with padding='valid'")
        C = input_shape[-1]
        self.params["kernel"] = initializers.get(self.kernel_initializer)(
            (self.kernel_size, C, self.filters), rng, self.dtype)
        if self.use_bias:
            self.params["bias"] = initializers.get(self.bias_initializer)((self.filters,), rng, self.dtype)

    def compute_output_shape(self, input_shape):
        T = tuple(input_shape)[0]
        return (None if T is None else self._pads(T)[2], self.filters)

    def compute_lengths(self, x, lengths):
        """Output lengths: :func:`conv1d_output_length` of the input's (see the class notes)."""
        if lengths is None:
            return None
        T_out = self._pads(np.shape(x)[1])[2]
        out = conv1d_output_length(np.asarray(lengths), self.kernel_size, self.strides, self.padding,
                                   self.dilation_rate)
        return np.minimum(out, T_out)

    # ---- running ---------------------------------------------------------------------------
    def forward(self, x, lengths=None, training=False, need_grad=True):
        """Convolve.

        Parameters
        ----------
        x : ndarray (B, T, C)
        lengths : int ndarray (B,), optional
            Used by ``padding="same"`` with ``strides=1`` only (padded steps zeroed first).

        Returns
        -------
        ndarray (B, T_out, filters)
        """
        K = self.params["kernel"]  # (k, C, F)
        k, C, F = K.shape
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != C:
            raise ValueError(f"Conv1D {self.name!r}: expected input (batch, time, {C}), got shape {x.shape}")
        B, T, _ = x.shape
        pl, pr, T_out = self._pads(T)
        if T_out < 1:
            raise ValueError(f"Conv1D {self.name!r}: {T} time steps give no output step (window {self.span}, "
                             f"padding={self.padding!r})")
        keep = time_mask(lengths, B, T, f"Conv1D {self.name!r}") if self._zero_padding() else None
        dt = np.result_type(x.dtype, K.dtype)
        xp = np.zeros((B, pl + T + pr, C), dtype=dt)  # (B, Tp, C) padded copy
        xp[:, pl:pl + T] = x if keep is None else x * keep[:, :, None]
        sB, sT, sC = xp.strides
        s, d = self.strides, self.dilation_rate
        win = np.lib.stride_tricks.as_strided(xp, (B, T_out, k, C), (sB, s * sT, d * sT, sC),
                                              writeable=False)  # (B, T_out, k, C) view
        cols = win.reshape(B * T_out, k * C)  # (B*T_out, k*C) im2col (one copy)
        z = cols @ K.reshape(k * C, F)  # (B*T_out, F)
        if self.use_bias:
            z += self.params["bias"]
        y = ACTIVATIONS[self.activation][0](z)
        if need_grad:  # inference writes nothing on the layer
            self._cache = (x.shape, pl, T_out, keep, cols, z, y)
        return y.reshape(B, T_out, F)

    # ---- streaming (edgernn.graph_stream) ---------------------------------------------------
    def stream_state(self, batch_size, **kwargs):
        """The last ``span`` input steps (zeros before the first: the causal padding)."""
        if self.padding != "causal" or self.strides != 1:
            raise ValueError(f"stream: layer Conv1D {self.name!r} has padding={self.padding!r}, strides="
                             f"{self.strides}; only padding='causal' with strides=1 gives one output per input "
                             "step from the past alone")
        C = self.params["kernel"].shape[1]
        return {"window": np.zeros((batch_size, self.span, C), self.dtype)}  # (B, span, C), oldest first

    def stream_step(self, x, state, **kwargs):
        """One input step (B, C) -> one output step (B, filters)."""
        w = state["window"]
        w[:, :-1] = w[:, 1:].copy()
        w[:, -1] = x
        K = self.params["kernel"]  # (k, C, F)
        k, C, F = K.shape
        z = w[:, :: self.dilation_rate].reshape(w.shape[0], k * C) @ K.reshape(k * C, F)  # tap i reads step i*d
        if self.use_bias:
            z += self.params["bias"]
        return ACTIVATIONS[self.activation][0](z)

    def backward(self, dy):
        shape, pl, T_out, keep, cols, z, y = self._cache
        B, T, C = shape
        K = self.params["kernel"]
        k, _, F = K.shape
        s, d = self.strides, self.dilation_rate
        dz = ACTIVATIONS[self.activation][1](np.asarray(dy).reshape(-1, F), z, y)  # (B*T_out, F)
        self.grads = {"kernel": (cols.T @ dz).reshape(K.shape)}
        if self.use_bias:
            self.grads["bias"] = dz.sum(axis=0)
        dwin = (dz @ K.reshape(k * C, F).T).reshape(B, T_out, k, C)  # (B, T_out, k, C)
        dxp = np.zeros((B, max(pl + T, (T_out - 1) * s + (k - 1) * d + 1), C), dtype=dwin.dtype)  # (B, Tp, C)
        for i in range(k):  # tap i of window j reads step j*s + i*d
            dxp[:, i * d:i * d + (T_out - 1) * s + 1:s] += dwin[:, :, i]
        dx = dxp[:, pl:pl + T]  # (B, T, C)
        return dx if keep is None else dx * keep[:, :, None]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": [self.kernel_size],
                "strides": [self.strides], "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": [self.dilation_rate], "groups": 1, "activation": self.activation,
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer}


Convolution1D = Conv1D  # Keras alias
