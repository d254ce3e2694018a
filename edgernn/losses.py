"""Losses with their gradients, Keras names and reductions.

A loss is computed per sample (or per time step of a sequence output) by reducing over the
last (feature) axis, then averaged over the batch (and valid time steps). ``mask``
(``(B,)`` or ``(B, T)``, 1 for valid, 0 for padded steps) excludes padding from the mean.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Loss", "MeanSquaredError", "MeanAbsoluteError", "Huber", "BinaryCrossentropy",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "get"]

EPSILON = 1e-7  # Keras' backend epsilon, for clipping probabilities


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class Loss:
    """Base class: subclasses implement ``elementwise(y_true, y_pred) -> (L, dL)``.

    ``L`` has the shape of ``y_pred`` without its last axis; ``dL`` = dL/dy_pred, shaped like
    ``y_pred``.
    """

    name = "loss"
    sparse = False  # targets are class ids

    def elementwise(self, y_true, y_pred):
        raise NotImplementedError

    def prepare_targets(self, y, pred_shape):
        """Return ``y`` shaped to match predictions of ``pred_shape`` (batch axis included;
        ``None`` entries match anything), or raise ValueError."""
        y = np.asarray(y)
        want = tuple(pred_shape)

        def match(shape, target):
            return len(shape) == len(target) and all(t is None or s == t for s, t in zip(shape, target, strict=False))

        if match(y.shape, want):
            return y
        if want[-1] == 1 and match(y.shape, want[:-1]):  # (B,) for (B, 1), as Keras
            return y[..., None]
        raise ValueError(f"loss {self.name!r}: targets of shape {y.shape} do not match model outputs "
                         f"of shape {tuple('batch' if i == 0 else d for i, d in enumerate(want))}")

    def value_and_grad(self, y_true, y_pred, mask=None, sample_weight=None):
        """Mean loss and its gradient w.r.t. ``y_pred``.

        Parameters
        ----------
        y_true : ndarray
            Targets, shaped by ``prepare_targets``.
        y_pred : ndarray (B, ..., F)
        mask : ndarray (B,) or (B, T), optional
            Weights of each sample / step (0 for padding).
        sample_weight : ndarray (B,) or (B, T), optional
            Loss weights (Keras' ``sample_weight``): the loss is the mean over the valid samples
            / steps of the weighted losses (``sum(L * w * mask) / sum(mask)``).

        Returns
        -------
        value : float
        grad : ndarray like ``y_pred``
        """
        L, dL = self.elementwise(y_true, y_pred)  # (B[, T]), (B[, T], F)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=y_pred.dtype)
            sw = sw.reshape(sw.shape + (1,) * (L.ndim - sw.ndim))
        if mask is None:
            n = L.size
            scale = y_pred.dtype.type(1.0 / max(n, 1))
            if sample_weight is None:
                return float(L.sum() / max(n, 1)), dL * scale
            w = np.broadcast_to(sw, L.shape)
            return float((L * w).sum() * scale), dL * (w * scale)[..., None]
        w = mask.astype(y_pred.dtype)
        n = float(w.sum())
        scale = y_pred.dtype.type(1.0 / max(n, 1.0))
        if sample_weight is not None:
            w = w * sw
        return float((L * w).sum() * scale), dL * (w * scale)[..., None]

    def __call__(self, y_true, y_pred, mask=None):
        y_pred = np.asarray(y_pred)
        return self.value_and_grad(self.prepare_targets(y_true, y_pred.shape), y_pred, mask)[0]

    def get_config(self):
        return {}


class MeanSquaredError(Loss):
    """mean((y_pred - y_true)^2) over the last axis."""

    name = "mse"

    def elementwise(self, y_true, y_pred):
        err = y_pred - y_true
        F = y_pred.shape[-1]
        return (err * err).mean(axis=-1), err * y_pred.dtype.type(2.0 / F)


class MeanAbsoluteError(Loss):
    """mean(|y_pred - y_true|) over the last axis."""

    name = "mae"

    def elementwise(self, y_true, y_pred):
        err = y_pred - y_true
        return np.abs(err).mean(axis=-1), np.sign(err) * y_pred.dtype.type(1.0 / y_pred.shape[-1])


class Huber(Loss):
    """Huber loss: 0.5 e^2 for |e| <= delta, delta (|e| - 0.5 delta) beyond; mean over the last axis."""

    name = "huber"

    def __init__(self, delta=1.0):
        self.delta = float(delta)

    def elementwise(self, y_true, y_pred):
        d = self.delta
        err = y_pred - y_true
        a = np.abs(err)
        small = a <= d
        L = np.where(small, 0.5 * err * err, d * a - 0.5 * d * d)
        g = np.where(small, err, d * np.sign(err))
        return L.mean(axis=-1), g * y_pred.dtype.type(1.0 / y_pred.shape[-1])

    def get_config(self):
        return {"delta": self.delta}


class BinaryCrossentropy(Loss):
    """Binary cross-entropy, mean over the last axis.

    Parameters
    ----------
    from_logits : bool
        True: ``y_pred`` are logits (stable form ``max(z,0) - z y + log1p(exp(-|z|))``);
        False: probabilities, clipped to ``[1e-7, 1 - 1e-7]`` as Keras does.
    """

    name = "binary_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def elementwise(self, y, p):
        F = p.shape[-1]
        if self.from_logits:
            L = np.maximum(p, 0) - p * y + np.log1p(np.exp(-np.abs(p)))
            g = _sigmoid(p) - y
        else:
            inside = (p > EPSILON) & (p < 1 - EPSILON)
            q = np.clip(p, EPSILON, 1 - EPSILON)
            L = -(y * np.log(q) + (1 - y) * np.log1p(-q))
            g = (-(y / q) + (1 - y) / (1 - q)) * inside
        return L.mean(axis=-1), g * p.dtype.type(1.0 / F)

    def get_config(self):
        return {"from_logits": self.from_logits}


class CategoricalCrossentropy(Loss):
    """Categorical cross-entropy with one-hot (or soft) targets over the last axis.

    Parameters
    ----------
    from_logits : bool
        True: log-softmax of ``y_pred`` (stable); False: probabilities, renormalised to sum 1
        and clipped to ``[1e-7, 1 - 1e-7]`` as Keras does.
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def elementwise(self, y, p):
        if self.from_logits:
            z = p - p.max(axis=-1, keepdims=True)
            lse = np.log(np.exp(z).sum(axis=-1, keepdims=True))
            logq = z - lse
            L = -(y * logq).sum(axis=-1)
            g = np.exp(logq) * y.sum(axis=-1, keepdims=True) - y
            return L, g
        s = p.sum(axis=-1, keepdims=True)
        q = p / s
        inside = (q > EPSILON) & (q < 1 - EPSILON)
        qc = np.clip(q, EPSILON, 1 - EPSILON)
        L = -(y * np.log(qc)).sum(axis=-1)
        gq = -(y / qc) * inside  # dL/dq
        g = (gq - (gq * q).sum(axis=-1, keepdims=True)) / s  # through q = p / sum(p)
        return L, g

    def get_config(self):
        return {"from_logits": self.from_logits}


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer class ids as targets (shape of ``y_pred`` without
    its last axis, or with a trailing 1)."""

    name = "sparse_categorical_crossentropy"
    sparse = True

    def prepare_targets(self, y, pred_shape):
        y = np.asarray(y)
        want = tuple(pred_shape[:-1])
        if y.ndim == len(want) + 1 and y.shape[-1] == 1:
            y = y[..., 0]
        if y.ndim != len(want) or any(t is not None and s != t for s, t in zip(y.shape, want, strict=False)):
            raise ValueError(f"loss {self.name!r}: class-id targets of shape {y.shape} do not match "
                             f"model outputs of shape {tuple(pred_shape)} (expected {want})")
        if y.dtype.kind == "f":
            if not np.array_equal(y, np.round(y)):
                raise ValueError(f"loss {self.name!r}: targets must be integer class ids")
        elif y.dtype.kind not in "iu":
            raise TypeError(f"loss {self.name!r}: targets must be integer class ids, got dtype {y.dtype}")
        C = pred_shape[-1]
        if C is not None and y.size and (y.min() < 0 or y.max() >= C):
            raise ValueError(f"loss {self.name!r}: class ids must be in [0, {C}), got min {y.min()} max {y.max()}")
        return y.astype(np.intp)

    def elementwise(self, y, p):
        onehot = np.zeros(p.shape, p.dtype)
        np.put_along_axis(onehot, y[..., None], 1, axis=-1)
        return super().elementwise(onehot, p)


_REGISTRY = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def get(loss):
    """A ``Loss`` from a Keras name (``"mse"``, ``"binary_crossentropy"``, ...) or an instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss.lower() in _REGISTRY:
        return _REGISTRY[loss.lower()]()
    raise ValueError(f"unknown loss {loss!r}; known: {sorted(_REGISTRY)} or a Loss instance")


def serialize(loss):
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def deserialize(spec):
    classes = {c.__name__: c for c in set(_REGISTRY.values())}
    if spec.get("class_name") not in classes:
        raise ValueError(f"unknown loss class {spec.get('class_name')!r}")
    return classes[spec["class_name"]](**spec.get("config", {}))
