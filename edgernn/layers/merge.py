"""Merge layers (several inputs, one output), Keras-compatible: ``Concatenate``, ``Add``,
``Subtract``, ``Multiply``, ``Average``, ``Maximum``, ``Minimum``.

They follow the multi-input protocol of :mod:`edgernn.layers.core` (``multi_input = True``):
``build`` takes a list of sample shapes, ``forward`` a list of arrays, ``backward`` returns a
list with one gradient per input. Called directly on arrays::

    y = Add()([a, b])          # builds from the arrays' shapes, then forward

Broadcasting (the elementwise layers) is Keras': sample shapes (without the batch axis) are
aligned on the right, each axis must be equal or 1 in one of them, and an input of lower rank
gets new axes right after the batch axis (Keras' ``expand_dims(x, 1)``), so ``(B, F)`` + ``(B,
T, F)`` adds the vector to every step. Batch sizes must be equal.

Lengths: the output's lengths are the element-wise minimum of the inputs' lengths (None when no
input has any); ``Concatenate`` along the time axis of sequences is the exception, see there.
Merging ignores the padding otherwise: padded steps hold whatever the inputs hold there.
"""

from __future__ import annotations

import functools

import numpy as np

from ._util import check_int, unbroadcast
from .core import Layer

__all__ = ["Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]


def _numeric_list(inputs):
    """True for a list of arrays (a direct call), False for anything else (e.g. symbolic tensors)."""
    return isinstance(inputs, (list, tuple)) and len(inputs) > 0 and all(
        isinstance(a, (np.ndarray, np.generic, list, tuple, int, float)) for a in inputs)


class _Merge(Layer):
    """Base of the merge layers: input-list checks, building, lengths, ``__call__`` on arrays.

    Subclasses define ``_merge(xs) -> (y, cache)`` and ``_grads(dy, cache, xs) -> list`` (``xs``
    at the common rank), or override ``forward``/``backward`` (Concatenate).
    """

    multi_input = True
    pointwise = True  # each time step from that step alone (streams step by step)
    _n_inputs: int | None = None  # exact number of inputs (Subtract: 2), else at least 1

    def _label(self):
        return f"{type(self).__name__} {self.name!r}"

    # ---- building ------------------------------------------------------------------------
    def _check_shapes(self, input_shapes):
        if not isinstance(input_shapes, (list, tuple)) or not input_shapes or not all(
                isinstance(s, (list, tuple)) for s in input_shapes):
            raise ValueError(f"{self._label()}: expects a list of input shapes (one per input, without the "
                             f"batch axis), got {input_shapes!r}")
        if self._n_inputs is not None and len(input_shapes) != self._n_inputs:
            raise ValueError(f"{self._label()}: expects exactly {self._n_inputs} inputs, got {len(input_shapes)}")
        return [tuple(None if d is None else check_int(d, f"{self._label()}: input shape entries", 0)
                      for d in s) for s in input_shapes]

    def build(self, input_shapes, rng=None):
        """Check the inputs' sample shapes (a list, no batch axis) and compute the output shape."""
        shapes = self._check_shapes(input_shapes)
        self.output_shape = self.compute_output_shape(shapes)
        self.input_shape = shapes
        self.built = True

    def compute_output_shape(self, input_shapes):
        shapes = self._check_shapes(input_shapes)
        out = shapes[0]
        for s in shapes[1:]:
            out = self._broadcast(out, s, shapes)
        return tuple(out)

    def _broadcast(self, a, b, shapes):
        """Keras' elementwise output shape of two sample shapes (aligned on the right)."""
        if len(a) < len(b):
            a, b = b, a
        out = list(a[:len(a) - len(b)])
        for i, j in zip(a[len(a) - len(b):], b, strict=True):
            if i is None or j is None:
                out.append(None)
            elif i == 1 or j == 1:
                out.append(j if i == 1 else i)
            elif i != j:
                raise ValueError(f"{self._label()}: inputs have incompatible shapes {self._fmt(shapes)}: "
                                 "each axis must be equal or 1 (Keras broadcasting)")
            else:
                out.append(i)
        return tuple(out)

    @staticmethod
    def _fmt(shapes):
        return ", ".join("(batch, " + ", ".join("None" if d is None else str(d) for d in s) + ")" for s in shapes)

    def compute_lengths(self, xs, lengths):
        """Element-wise minimum of the inputs' lengths (None entries skipped; None if all are)."""
        if lengths is None:
            return None
        if not isinstance(lengths, (list, tuple)) or len(lengths) != len(xs):
            raise ValueError(f"{self._label()}: lengths must be a list with one entry (None or an int "
                             f"array) per input ({len(xs)}), got {type(lengths).__name__}")
        given = [np.asarray(L) for L in lengths if L is not None]
        if not given:
            return None
        out = given[0].astype(np.int64)
        for L in given[1:]:
            if L.shape != out.shape:
                raise ValueError(f"{self._label()}: lengths of different batch sizes {out.shape} and {L.shape}")
            out = np.minimum(out, L)
        return out

    # ---- running -------------------------------------------------------------------------
    def _check_inputs(self, xs):
        """The inputs as arrays (never copied), checked against the built shapes."""
        if not isinstance(xs, (list, tuple)):
            raise TypeError(f"{self._label()}: expects a list of arrays, got {type(xs).__name__}")
        if not self.built:
            raise RuntimeError(f"{self._label()}: not built; call build([shape, ...]) or the layer on a list "
                               "of arrays first")
        xs = [np.asarray(a) for a in xs]
        want = self.input_shape
        if len(xs) != len(want):
            raise ValueError(f"{self._label()}: built for {len(want)} inputs, got {len(xs)}")
        B = xs[0].shape[0] if xs[0].ndim else None
        for k, (a, w) in enumerate(zip(xs, want, strict=True)):
            if a.dtype.kind not in "fiub":
                raise TypeError(f"{self._label()}: input {k} must be numeric, got dtype {a.dtype}")
            if a.ndim != len(w) + 1 or any(d is not None and s != d for s, d in zip(a.shape[1:], w, strict=True)):
                raise ValueError(f"{self._label()}: input {k} has shape {a.shape}, expected "
                                 f"{self._fmt([w])}")
            if a.shape[0] != B:
                raise ValueError(f"{self._label()}: inputs have different batch sizes "
                                 f"{[x.shape[0] for x in xs]}")
        return xs

    def _expanded(self, xs):
        """Inputs at the common rank: new axes right after the batch axis (Keras), then checked."""
        R = max(a.ndim for a in xs)
        ex = [a.reshape(a.shape[:1] + (1,) * (R - a.ndim) + a.shape[1:]) for a in xs]
        for i in range(1, R):
            sizes = {a.shape[i] for a in ex} - {1}
            if len(sizes) > 1:
                raise ValueError(f"{self._label()}: inputs have incompatible shapes "
                                 f"{[a.shape for a in xs]} (each axis equal or 1)")
        return ex

    def forward(self, xs, lengths=None, training=False, need_grad=True):
        """Merge the inputs.

        Parameters
        ----------
        xs : list of ndarray
            ``(B, *shape_i)`` each, broadcastable as described in the module docstring.
        lengths : list, optional
            Not used (the output's lengths come from ``compute_lengths``).

        Returns
        -------
        ndarray
            ``(B, *output_shape)``, a new array.
        """
        xs = self._check_inputs(xs)
        ex = self._expanded(xs)
        y, cache = self._merge(ex)
        if need_grad:  # inference writes nothing on the layer
            self._cache = ([a.shape for a in xs], [a.shape for a in ex], cache)
        return y

    def backward(self, dy):
        """Gradients of the inputs of the last ``forward``: a list, one array per input."""
        shapes, ex_shapes, cache = self._cache
        self.grads = {}
        local = self._grads(np.asarray(dy), cache, ex_shapes)
        return [unbroadcast(g, s).reshape(shape) for g, s, shape in zip(local, ex_shapes, shapes, strict=True)]

    def __call__(self, inputs, lengths=None, training=False, **kwargs):
        """``layer([a, b, ...])`` on arrays: builds from their shapes if needed, then ``forward``.

        Anything but a list of arrays (e.g. symbolic tensors of the functional API) goes to
        ``Layer.__call__``.
        """
        if not _numeric_list(inputs):
            return super().__call__(inputs, lengths=lengths, training=training, **kwargs)
        xs = [np.asarray(a) for a in inputs]
        if not self.built:
            self.build([a.shape[1:] for a in xs])
        return self.forward(xs, lengths=lengths, training=training)


class Add(_Merge):
    """Sum of the inputs (any number >= 1, broadcast as Keras does): ``y = x_0 + x_1 + ...``."""

    def _merge(self, xs):
        y = functools.reduce(np.add, xs[1:], xs[0]) if len(xs) > 1 else xs[0].copy()
        return y, None

    def _grads(self, dy, cache, shapes):
        return [dy] * len(shapes)


class Subtract(_Merge):
    """Difference of exactly two inputs: ``y = x_0 - x_1``."""

    _n_inputs = 2

    def _merge(self, xs):
        return xs[0] - xs[1], None

    def _grads(self, dy, cache, shapes):
        return [dy, -dy]


class Multiply(_Merge):
    """Element-wise product of the inputs (any number >= 1)."""

    def _merge(self, xs):
        y = functools.reduce(np.multiply, xs[1:], xs[0]) if len(xs) > 1 else xs[0].copy()
        return y, xs

    def _grads(self, dy, xs, shapes):
        out = []
        for i in range(len(xs)):
            g = dy
            for j, a in enumerate(xs):
                if j != i:
                    g = g * a
            out.append(g)
        return out


class Average(_Merge):
    """Mean of the inputs (any number >= 1): ``y = (x_0 + ... + x_{n-1}) / n``."""

    def _merge(self, xs):
        y = functools.reduce(np.add, xs[1:], xs[0]) if len(xs) > 1 else xs[0].copy()
        return y / len(xs), None

    def _grads(self, dy, cache, shapes):
        return [dy / len(shapes)] * len(shapes)


class Maximum(_Merge):
    """Element-wise maximum of the inputs (any number >= 1). At ties the gradient goes to the
    first of the tied inputs."""

    _pick = staticmethod(np.argmax)

    def _merge(self, xs):
        stacked = np.stack(np.broadcast_arrays(*xs))  # (n, B, ...)
        idx = self._pick(stacked, axis=0)  # (B, ...): which input gives the output
        return np.take_along_axis(stacked, idx[None], axis=0)[0], idx

    def _grads(self, dy, idx, shapes):
        return [np.where(idx == i, dy, 0).astype(dy.dtype, copy=False) for i in range(len(shapes))]


class Minimum(Maximum):
    """Element-wise minimum of the inputs (any number >= 1). At ties the gradient goes to the
    first of the tied inputs."""

    _pick = staticmethod(np.argmin)


class Concatenate(_Merge):
    """Concatenation along ``axis``.

    Parameters
    ----------
    axis : int
        Axis of the full tensors (batch axis included), as in Keras; default -1 (features).
        The batch axis (0) cannot be concatenated. All other axes must match.

    Notes
    -----
    Lengths: along any axis but the time axis of sequences, the minimum of the inputs'
    lengths. Along the time axis (``axis=1`` of ``(B, T, F)`` inputs) the output is the
    inputs one after another, so only the *last* input may have padding: the output's lengths
    are ``T_0 + ... + T_{n-2} + lengths_{n-1}``; padding in an earlier input would sit inside the
    output sequence, which edgernn's trailing-padding lengths cannot describe (ValueError).
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = check_int(axis, "Concatenate: axis")

    @property
    def pointwise(self):
        """Along the features (``axis=-1``) each time step is concatenated alone."""
        return self.axis == -1

    def _resolve_axis(self, rank):
        """The axis of full tensors of ``rank`` (batch included) as a non-negative int."""
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{self._label()}: axis={self.axis} is out of range for inputs of rank {rank} "
                             f"(batch included; allowed 1..{rank - 1} or -{rank - 1}..-1; the batch axis "
                             "cannot be concatenated)")
        return self.axis % rank

    def compute_output_shape(self, input_shapes):
        shapes = self._check_shapes(input_shapes)
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ValueError(f"{self._label()}: inputs must have the same rank, got {self._fmt(shapes)}")
        r = ranks.pop()
        ax = self._resolve_axis(r + 1) - 1  # in sample coordinates
        out = []
        for p in range(r):
            dims = [s[p] for s in shapes]
            if p == ax:
                out.append(None if None in dims else sum(dims))
                continue
            known = set(dims) - {None}
            if len(known) > 1:
                raise ValueError(f"{self._label()}: inputs must have matching shapes except along axis "
                                 f"{self.axis}, got {self._fmt(shapes)}")
            out.append(known.pop() if known else None)
        return tuple(out)

    def compute_lengths(self, xs, lengths):
        """See the class notes: minimum of the lengths, or offsets along the time axis."""
        if lengths is None or all(L is None for L in lengths) or np.ndim(xs[0]) < 3 \
                or self._resolve_axis(np.ndim(xs[0])) != 1:
            return super().compute_lengths(xs, lengths)
        if not isinstance(lengths, (list, tuple)) or len(lengths) != len(xs):
            raise ValueError(f"{self._label()}: lengths must be a list with one entry per input ({len(xs)})")
        for k, (a, L) in enumerate(zip(xs[:-1], lengths[:-1], strict=True)):
            if L is not None and np.any(np.asarray(L) < np.shape(a)[1]):
                raise ValueError(f"{self._label()}: input {k} has padding (lengths < its {np.shape(a)[1]} steps) "
                                 "but is not the last input of a concatenation along time: the padding would "
                                 "be inside the output sequence")
        if lengths[-1] is None:
            return None
        offset = sum(int(np.shape(a)[1]) for a in xs[:-1])
        return np.asarray(lengths[-1]).astype(np.int64) + offset

    def forward(self, xs, lengths=None, training=False, need_grad=True):
        """Concatenate ``xs`` (list of ``(B, ...)`` arrays of the same rank) along ``axis``."""
        xs = self._check_inputs(xs)
        ax = self._resolve_axis(xs[0].ndim)
        for k, a in enumerate(xs[1:], start=1):
            if a.shape[:ax] + a.shape[ax + 1:] != xs[0].shape[:ax] + xs[0].shape[ax + 1:]:
                raise ValueError(f"{self._label()}: input {k} has shape {a.shape}, input 0 {xs[0].shape}: they "
                                 f"must match except along axis {self.axis}")
        y = np.concatenate(xs, axis=ax)
        if need_grad:
            self._cache = (ax, [a.shape[ax] for a in xs])
        return y

    def backward(self, dy):
        ax, sizes = self._cache
        self.grads = {}
        return [np.array(g) for g in np.split(np.asarray(dy), np.cumsum(sizes)[:-1], axis=ax)]

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
