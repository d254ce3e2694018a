"""Metrics accumulated over an epoch: accuracy, mae, mse, rmse.

Each metric has ``reset()``, ``update(y_true, y_pred, mask)`` and ``result()``; ``mask``
``(B,)`` or ``(B, T)`` weights samples / steps (0 for padding). Targets arrive shaped by the
loss' ``prepare_targets``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Metric", "Accuracy", "MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError", "get"]


class Metric:
    name = "metric"

    def __init__(self):
        self.reset()

    def reset(self):
        self._sum = 0.0
        self._n = 0.0

    def _values(self, y_true, y_pred):
        """Per sample/step values, shape of y_pred without the last axis."""
        raise NotImplementedError

    def update(self, y_true, y_pred, mask=None):
        v = self._values(y_true, y_pred)
        if mask is None:
            self._sum += float(v.sum())
            self._n += v.size
        else:
            self._sum += float((v * mask).sum())
            self._n += float(mask.sum())

    def result(self):
        return self._sum / self._n if self._n else float("nan")


class MeanAbsoluteError(Metric):
    name = "mae"

    def _values(self, y_true, y_pred):
        return np.abs(y_pred - y_true).mean(axis=-1)


class MeanSquaredError(Metric):
    name = "mse"

    def _values(self, y_true, y_pred):
        e = y_pred - y_true
        return (e * e).mean(axis=-1)


class RootMeanSquaredError(MeanSquaredError):
    """sqrt of the mean squared error over the whole epoch (not a mean of batch RMSEs)."""

    name = "rmse"

    def result(self):
        return float(np.sqrt(super().result()))


class Accuracy(Metric):
    """Fraction of correct predictions; the kind follows the loss, as Keras' ``"accuracy"``.

    Parameters
    ----------
    kind : {"binary", "categorical", "sparse"}
        binary: ``y_pred > threshold`` vs ``y_true > 0.5``; categorical: argmax vs argmax;
        sparse: argmax vs class id.
    threshold : float
        0.5 for probabilities, 0 for logits.
    """

    name = "accuracy"

    def __init__(self, kind="binary", threshold=0.5):
        self.kind = kind
        self.threshold = float(threshold)
        super().__init__()

    def _values(self, y_true, y_pred):
        if self.kind == "sparse":
            return (np.argmax(y_pred, axis=-1) == y_true).astype(np.float64)
        if self.kind == "categorical":
            return (np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)).astype(np.float64)
        return ((y_pred > self.threshold) == (y_true > 0.5)).mean(axis=-1)


def get(name, loss=None, output_dim=None):
    """A metric by name: ``"accuracy"``/``"acc"``, ``"mae"``, ``"mse"``, ``"rmse"``.

    ``accuracy`` picks its kind from the loss (sparse/categorical/binary cross-entropy) or,
    for other losses, from the output size (1 -> binary, else categorical).
    """
    if isinstance(name, Metric):
        return name
    key = str(name).lower()
    if key in ("accuracy", "acc"):
        lname = getattr(loss, "name", "")
        if lname == "sparse_categorical_crossentropy":
            return Accuracy("sparse")
        if lname == "categorical_crossentropy":
            return Accuracy("categorical")
        if lname == "binary_crossentropy":
            return Accuracy("binary", 0.0 if getattr(loss, "from_logits", False) else 0.5)
        return Accuracy("binary" if output_dim == 1 else "categorical")
    table = {"mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
             "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
             "rmse": RootMeanSquaredError, "root_mean_squared_error": RootMeanSquaredError}
    if key not in table:
        raise ValueError(f"unknown metric {name!r}; known: accuracy, mae, mse, rmse")
    return table[key]()
