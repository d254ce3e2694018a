"""``Sequential``: a stack of layers with Keras' compile / fit / predict / evaluate API.

Training is backpropagation through time: each batch runs the layers' ``forward`` (the
recurrent ones as one jitted kernel call each), the loss, the layers' ``backward`` in reverse
order and one optimizer update. Nothing loops over samples or time steps in Python.

Inputs
------
- A batch-first array ``(N, T, F)`` (or ``(N, T)`` token ids for an ``Embedding`` model,
  ``(N, F)`` for a Dense-only model).
- A list of arrays of different lengths ``[(T_i, F), ...]``: padded with zeros internally
  and passed down as ``lengths``; ``predict`` then returns sequence outputs as a list trimmed
  to each length.
- A padded array with ``Masking`` as a layer, or with ``lengths=`` given explicitly.
Padding is trailing only. Losses and metrics on sequence outputs ignore padded steps.

Stateful layers
---------------
The final states of a batch become the initial states of the next one (gradients are cut at
batch borders: truncated BPTT). ``fit`` resets the states at the start of every epoch and
around validation, keeps the batch order (``shuffle`` is ignored, with a warning) and needs
a sample count divisible by ``batch_size``. ``reset_states()`` resets by hand.

``return_state``
----------------
Only the last layer of a ``Sequential`` may return its states. ``predict`` then returns
``[output, *states]``; losses and metrics use ``output`` only.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from . import callbacks as cbks
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from ._config import with_blas_limit
from .layers import get as get_layer_class
from .layers.core import Embedding, Input, Layer, _snake
from .layers.recurrent import Bidirectional, RecurrentLayer

__all__ = ["Sequential"]

logger = logging.getLogger("edgernn")


class Summary(str):
    """The text of ``model.summary()``; shown as a table (not a quoted string) in a REPL."""

    def __repr__(self):
        return str(self)


class _Diverged(Exception):
    def __init__(self, what):
        super().__init__(what)
        self.what = what


def _first(y):
    return y[0] if isinstance(y, list) else y


class Sequential:
    """A linear stack of layers.

    Parameters
    ----------
    layers : list of Layer, optional
        May start with ``Input(shape=...)``.
    name : str
    dtype : {"float32", "float64"}
        Parameter and computation dtype; inputs are cast once, at the boundary.
    seed : int, optional
        Seeds weight initialisation, shuffling and dropout: equal seeds and equal calls give
        bit-identical models and training runs.

    Attributes
    ----------
    layers : list of Layer
    input_shape, output_shape : tuple
        Without the batch axis (``None`` for a free time axis).
    optimizer, loss : set by ``compile``
    history : History
        Of the last ``fit``.
    """

    def __init__(self, layers=None, name=None, dtype="float32", seed=None):
        self.name = name or "sequential"
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"Sequential: dtype must be float32 or float64, got {dtype!r}")
        self.seed = None if seed is None else int(seed)
        seq = np.random.SeedSequence(self.seed)
        self._init_seq, train_seq = seq.spawn(2)
        self._train_rng = np.random.default_rng(train_seq)
        self._layers: list[Layer] = []
        self.input_shape = None
        self.built = False
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self.stop_training = False
        # user metadata saved with the model (JSON-able), e.g. a forecaster's preprocessing
        self.meta: dict = {}
        self.history = None
        self._fit_params = {}
        for layer in layers or []:
            self.add(layer)

    # ---- structure ------------------------------------------------------------------
    @property
    def layers(self):
        return list(self._layers)

    def add(self, layer):
        """Append a layer (or an ``Input`` declaring the input shape, before any layer)."""
        if isinstance(layer, Input):
            if self._layers or self.input_shape is not None:
                raise ValueError("Input(...) must come first, before any layer")
            self.input_shape = layer.shape
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a Layer, got {type(layer).__name__}")
        if self._layers and getattr(self._layers[-1], "return_state", False):
            raise ValueError(f"layer {self._layers[-1].name!r} has return_state=True: only the last layer "
                             "of a Sequential model may return its states")
        if any(layer is other for other in self._layers):
            raise ValueError("the same layer instance cannot be added twice")
        if layer.name is None:
            base = _snake(type(layer).__name__)
            names = {other.name for other in self._layers}
            layer.name = base
            k = 1
            while layer.name in names:
                layer.name = f"{base}_{k}"
                k += 1
        elif layer.name in {other.name for other in self._layers}:
            raise ValueError(f"duplicate layer name {layer.name!r}")
        if not self._layers and self.input_shape is None and layer.input_spec is not None:
            self.input_shape = layer.input_spec
        self._layers.append(layer)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def pop(self):
        """Remove and return the last layer."""
        if not self._layers:
            raise ValueError("pop: the model has no layers")
        return self._layers.pop()

    def build(self, input_shape=None):
        """Create the weights of every layer for samples of ``input_shape``.

        Parameters
        ----------
        input_shape : tuple, optional
            One sample's shape *without* the batch axis, e.g. ``(None, 1)``; defaults to the
            shape given by ``Input``/``input_shape=`` on the first layer.
        """
        if input_shape is None:
            input_shape = self.input_shape
        if input_shape is None:
            raise ValueError("build: no input shape; pass input_shape=(time, features) to the first layer, "
                             "add Input(shape=...), or call build(input_shape)")
        shape = tuple(None if d is None else int(d) for d in input_shape)
        self.input_shape = shape
        for i, layer in enumerate(self._layers):
            if layer.dtype != self.dtype and layer.built:
                layer.astype(self.dtype)
            layer.dtype = self.dtype
            if not layer.built:
                layer.build(shape, rng=np.random.default_rng(self._init_seq.spawn(1)[0]))
            elif tuple(layer.input_shape)[-1:] != shape[-1:]:
                raise ValueError(f"layer {layer.name!r} was built for input {layer.input_shape}, "
                                 f"but receives {shape}")
            out = layer.output_shape
            if isinstance(out, list):
                if i != len(self._layers) - 1:
                    raise ValueError(f"layer {layer.name!r}: return_state=True only on the last layer")
                out = out[0]
            shape = tuple(out)
        self.built = bool(self._layers)
        return self

    @property
    def output_shape(self):
        if not self.built:
            return None
        return self._layers[-1].output_shape

    def _require_built(self, what):
        if not self.built:
            raise RuntimeError(f"{what}: the model is not built yet; give input_shape=(time, features) to the "
                               "first layer, add Input(shape=...), call build(input_shape) or fit first")

    # ---- compile ------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Set the optimizer, the loss and the metrics.

        Parameters
        ----------
        optimizer : str or Optimizer
            ``"sgd"``, ``"rmsprop"``, ``"adam"``, ``"adamw"`` (Keras defaults) or an instance.
        loss : str or Loss
            ``"mse"``, ``"mae"``, ``"huber"``, ``"binary_crossentropy"``,
            ``"categorical_crossentropy"``, ``"sparse_categorical_crossentropy"`` or an instance
            (e.g. ``losses.BinaryCrossentropy(from_logits=True)``).
        metrics : list of str, optional
            ``"accuracy"``, ``"mae"``, ``"mse"``, ``"rmse"``.
        """
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='mse'")
        self.optimizer = optimizers_mod.get(optimizer)
        self.loss = losses_mod.get(loss)
        self._metric_specs = list(metrics or [])
        for m in self._metric_specs:
            metrics_mod.get(m, self.loss, 1)  # validate names now
        self.metrics = []

    def _make_metrics(self):
        out = self._output_sample_shape()
        dim = out[-1] if out else None
        return [metrics_mod.get(m, self.loss, dim) for m in self._metric_specs]

    def _output_sample_shape(self):
        return tuple(_first_shape(self._layers[-1].output_shape))

    # ---- data preparation -----------------------------------------------------------------
    def _int_input(self):
        return bool(self._layers) and isinstance(self._layers[0], Embedding)

    def _prepare_x(self, x, lengths=None, where="x"):
        """-> (X array (N, ...), lengths (N,) int64 or None, ragged: bool)."""
        ragged = False
        if isinstance(x, (list, tuple)) and len(x) and all(hasattr(a, "__len__") for a in x):
            items = [np.asarray(a) for a in x]
            shapes = {a.shape for a in items}
            if len(shapes) > 1:
                if any(a.ndim == 0 for a in items) or len({a.shape[1:] for a in items}) != 1:
                    raise ValueError(f"{where}: a list of sequences may differ in length only, "
                                     f"got shapes {sorted(shapes)[:4]}")
                L = np.array([a.shape[0] for a in items], np.int64)
                X = np.zeros((len(items), int(L.max())) + items[0].shape[1:], np.result_type(*items))
                for i, a in enumerate(items):  # once per call, not per batch
                    X[i, : len(a)] = a
                if lengths is not None:
                    raise ValueError(f"{where}: give either a list of sequences or lengths=, not both")
                lengths, ragged = L, True
            else:
                X = np.stack(items) if items[0].ndim else np.asarray(items)
        else:
            X = np.asarray(x)
        if X.dtype.kind not in "fiub":
            raise TypeError(f"{where}: expected numbers, got dtype {X.dtype}")
        if self._int_input():
            if X.dtype.kind == "f" and not np.array_equal(X, np.round(X)):
                raise ValueError(f"{where}: the model starts with Embedding and expects integer token ids")
            X = X.astype(np.int64, copy=False)
        else:
            X = X.astype(self.dtype, copy=False)
        if X.ndim == 0 or X.shape[0] == 0:
            raise ValueError(f"{where}: empty input (shape {X.shape})")
        if not self.built:
            shape = X.shape[1:]
            if X.ndim == 3 or (self._int_input() and X.ndim == 2):
                shape = (None,) + shape[1:]
            self.build(shape)
        self._check_input_shape(X, where)
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu" or lengths.shape != (X.shape[0],):
                raise ValueError(f"lengths: expected {X.shape[0]} integers, got shape {lengths.shape} "
                                 f"dtype {lengths.dtype}")
            if lengths.size and (lengths.min() < 0 or lengths.max() > X.shape[1]):
                raise ValueError(f"lengths: values must be in [0, {X.shape[1]}]")
            lengths = lengths.astype(np.int64)
        return X, lengths, ragged

    def _check_input_shape(self, X, where):
        want = self.input_shape
        if X.ndim != len(want) + 1 or any(w is not None and s != w for s, w in zip(X.shape[1:], want, strict=True)):
            exp = "(batch, " + ", ".join("time" if w is None else str(w) for w in want) + ")"
            raise ValueError(f"{where}: expected input of shape {exp}, got {X.shape}")

    def _prepare_y(self, y, X, lengths, where="y"):
        """Targets shaped for the loss; ragged target lists are padded like x."""
        if isinstance(y, (list, tuple)) and len(y) and all(hasattr(a, "__len__") for a in y):
            items = [np.asarray(a) for a in y]
            if len({a.shape for a in items}) > 1:
                if lengths is None or [len(a) for a in items] != list(lengths):
                    raise ValueError(f"{where}: sequences of targets must have the lengths of the inputs")
                Y = np.zeros((len(items), X.shape[1]) + items[0].shape[1:], np.result_type(*items))
                for i, a in enumerate(items):
                    Y[i, : len(a)] = a
                y = Y
            else:
                y = np.stack(items) if items[0].ndim else np.asarray(items)
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{where}: expected numbers, got dtype {y.dtype}")
        if y.shape[:1] != X.shape[:1]:
            raise ValueError(f"{where}: {y.shape[0] if y.ndim else 0} targets for {X.shape[0]} inputs")
        out = self._output_sample_shape()
        want = (X.shape[0],) + tuple(X.shape[1] if d is None else d for d in out)
        y = self.loss.prepare_targets(y, want)
        if not self.loss.sparse:
            y = y.astype(self.dtype, copy=False)
        return y

    @staticmethod
    def _check_finite(a, where):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = np.flatnonzero(~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1))
            raise ValueError(f"{where} contains NaN or inf (first at sample {bad[0]}, {bad.size} samples in all)")

    # ---- forward / backward ---------------------------------------------------------------
    def _forward(self, x, lengths=None, training=False, need_grad=True):
        for layer in self._layers:
            lengths = layer.compute_lengths(x, lengths)
            x = layer.forward(x, lengths=lengths, training=training, need_grad=need_grad)
            if _first(x).ndim < 3:
                lengths = None
        self._last_lengths = lengths
        return x

    def _backward(self, dy):
        for layer in reversed(self._layers):
            dy = layer.backward(dy)
            if dy is None:
                break
        return dy

    @staticmethod
    def _mask(out, lengths):
        if lengths is None or out.ndim < 3:
            return None
        return np.arange(out.shape[1])[None, :] < lengths[:, None]  # (B, T)

    def _trainable(self):
        """[(layer, name)] of the trained parameters, in a fixed order."""
        return [(layer, k) for layer in self._layers if layer.trainable for k in layer.params]

    def _loss_and_grads(self, x, y, lengths=None, training=False):
        """Loss and gradients (list, ``_trainable()`` order) on one prepared batch."""
        out = self._forward(x, lengths, training=training, need_grad=True)
        pred = _first(out)
        loss, dy = self.loss.value_and_grad(y, pred, self._mask(pred, self._last_lengths))
        if isinstance(out, list):
            dy = [dy] + [None] * (len(out) - 1)
        self._backward(dy)
        return loss, [layer.grads[k] for layer, k in self._trainable()], pred

    # ---- training -------------------------------------------------------------------------
    def _stateful(self):
        return any(getattr(layer, "stateful", False) for layer in self._layers)

    def reset_states(self):
        """Reset the carried state of every stateful recurrent layer."""
        for layer in self._layers:
            if isinstance(layer, (RecurrentLayer, Bidirectional)):
                layer.reset_states()

    @with_blas_limit
    def fit(self, x, y, batch_size=None, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0, seed=None, lengths=None):
        """Train by backpropagation through time.

        Parameters
        ----------
        x : array (N, T, F), list of (T_i, F) arrays, or ids (N, T) for Embedding models
        y : array
            Targets matching the output ((N, units) or (N, T, units); (N,) for one unit;
            class ids for sparse losses); a list of per-step target arrays for ragged ``x``.
        batch_size : int, default 32
        epochs : int
        verbose : {0, 1, 2}
            1: progress bar on stderr when it is a terminal; 2: one line per epoch.
        callbacks : list of Callback
        validation_split : float in [0, 1)
            The last fraction of the samples (before shuffling) is held out, as Keras.
        validation_data : tuple (x_val, y_val), optional
        shuffle : bool
        initial_epoch : int
        seed : int, optional
            Seeds shuffling and dropout of this call (default: the model's seeded stream).
        lengths : int array (N,), optional
            Valid steps of each padded sample.

        Returns
        -------
        History

        Raises
        ------
        TrainingDiverged
            The loss or a gradient became NaN/inf; the weights from before the last update
            are restored.
        """
        if self.loss is None:
            raise RuntimeError("fit: compile the model first, e.g. model.compile(loss='mse', optimizer='adam')")
        batch_size = 32 if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        (X, Y, L), val = self._fit_data(x, y, lengths, validation_data, validation_split)
        stateful = self._stateful()
        if stateful:
            if shuffle:
                warnings.warn("fit: shuffle is ignored for a stateful model (batch order is the stream order)",
                              RuntimeWarning, stacklevel=2)
                shuffle = False
            if X.shape[0] % batch_size:
                raise ValueError(f"stateful fit: the number of samples ({X.shape[0]}) must be a multiple of "
                                 f"batch_size ({batch_size})")
        rng = self._train_rng if seed is None else np.random.default_rng(seed)
        for layer in self._layers:
            if getattr(layer, "seed", None) is None:
                layer._rng = rng  # dropout masks
        self.metrics = self._make_metrics()
        steps = math.ceil(X.shape[0] / batch_size)
        history = cbks.History()
        cb_list = list(callbacks or []) + [history]  # History sees what callbacks add (e.g. "lr")
        if verbose:
            cb_list.append(cbks.ProgressBar(verbose))
        cb = cbks.CallbackList(cb_list, self)
        self._fit_params = {"epochs": epochs, "steps": steps, "batch_size": batch_size}
        self.history = history
        self.stop_training = False
        pairs = self._trainable()
        snapshot = [layer.params[k].copy() for layer, k in pairs]
        cb.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            if stateful:
                self.reset_states()
            cb.on_epoch_begin(epoch, {})
            order = rng.permutation(X.shape[0]) if shuffle else None
            logs = self._train_epoch(X, Y, L, order, batch_size, epoch, cb, pairs, snapshot)
            if val is not None:
                if stateful:
                    self.reset_states()
                logs.update({"val_" + k: v for k, v in self._evaluate_arrays(*val, batch_size).items()})
                if stateful:
                    self.reset_states()
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cb.on_train_end({})
        return history

    def _fit_data(self, x, y, lengths, validation_data, validation_split):
        """Checked training arrays ``(X, Y, L)`` and validation arrays (or None)."""
        X, L, _ = self._prepare_x(x, lengths, "x")
        Y = self._prepare_y(y, X, L, "y")
        self._check_finite(X, "x")
        self._check_finite(Y, "y")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            Xv, Lv, _ = self._prepare_x(validation_data[0], None, "validation x")
            Yv = self._prepare_y(validation_data[1], Xv, Lv, "validation y")
            self._check_finite(Xv, "validation x")
            self._check_finite(Yv, "validation y")
            return (X, Y, L), (Xv, Yv, Lv)
        if not validation_split:
            return (X, Y, L), None
        if not 0.0 < validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        split = int(X.shape[0] * (1.0 - validation_split))  # the last samples, before shuffling (Keras)
        if split < 1 or split >= X.shape[0]:
            raise ValueError(f"validation_split={validation_split} leaves no samples for training or "
                             f"validation out of {X.shape[0]}")
        Lt, Lv = (None, None) if L is None else (L[:split], L[split:])
        return (X[:split], Y[:split], Lt), (X[split:], Y[split:], Lv)

    def _train_epoch(self, X, Y, L, order, batch_size, epoch, cb, pairs, snapshot):
        """One pass over the batches; returns the epoch logs (mean loss weighted by batch size, metrics).

        ``snapshot`` holds the weights from before the last update, restored on divergence.
        """
        N = X.shape[0]
        has_time = Y.ndim >= 3 or (self.loss.sparse and Y.ndim >= 2)
        trim = L is not None and not self._stateful()
        tot, cnt = 0.0, 0
        for m in self.metrics:
            m.reset()
        for b in range(math.ceil(N / batch_size)):
            sl = slice(b * batch_size, min(N, (b + 1) * batch_size))
            idx = order[sl] if order is not None else sl
            xb, yb = X[idx], Y[idx]
            lb = None if L is None else L[idx]
            if trim:  # drop the padding beyond this batch's longest sample
                Tb = max(1, int(lb.max()))
                if Tb < xb.shape[1]:
                    xb = xb[:, :Tb]
                    yb = yb[:, :Tb] if has_time else yb
            try:
                loss = self._train_step(xb, yb, lb, pairs, snapshot)
            except _Diverged as exc:
                for (layer, k), s in zip(pairs, snapshot, strict=True):
                    np.copyto(layer.params[k], s)
                self.reset_states()
                raise cbks.TrainingDiverged(
                    f"training diverged: {exc.what} at epoch {epoch + 1}, batch {b + 1} (counting from 1); "
                    "stopped and restored the weights from before the last update. Try a lower "
                    "learning rate or gradient clipping (clipnorm=1.0).",
                    epoch=epoch, batch=b, history=self.history) from None
            tot += loss * xb.shape[0]
            cnt += xb.shape[0]
            logs = {"loss": tot / cnt, **{m.name: m.result() for m in self.metrics}}
            cb.on_batch_end(b, logs)
        return logs

    def _train_step(self, xb, yb, lb, pairs, snapshot):
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected and reported here
            loss, grads, pred = self._loss_and_grads(xb, yb, lb, training=True)
            if not math.isfinite(loss):
                raise _Diverged(f"the loss became {loss}")
            sq = [float(np.vdot(g, g)) for g in grads]
            if not math.isfinite(sum(sq)):
                raise _Diverged("a gradient became NaN or inf")
            for (layer, k), s in zip(pairs, snapshot, strict=True):
                np.copyto(s, layer.params[k])
            self.optimizer.apply([layer.params[k] for layer, k in pairs], grads, sq)
            for layer in {id(la): la for la, _ in pairs}.values():  # constraints (IndRNN's |u| bound)
                if hasattr(layer, "constrain"):
                    layer.constrain()
        if self.metrics:
            mask = self._mask(pred, self._last_lengths)
            for m in self.metrics:
                m.update(yb, pred, mask)
        return loss

    @with_blas_limit
    def train_on_batch(self, x, y):
        """One update on one batch; returns the loss (before the update)."""
        if self.loss is None:
            raise RuntimeError("train_on_batch: compile the model first")
        X, L, _ = self._prepare_x(x, None, "x")
        Y = self._prepare_y(y, X, L, "y")
        pairs = self._trainable()
        snapshot = [layer.params[k].copy() for layer, k in pairs]
        self.metrics = []
        try:
            return self._train_step(X, Y, L, pairs, snapshot)
        except _Diverged as exc:
            for (layer, k), s in zip(pairs, snapshot, strict=True):
                np.copyto(layer.params[k], s)
            raise cbks.TrainingDiverged(f"training diverged: {exc.what}; weights left unchanged") from None

    # ---- inference ------------------------------------------------------------------------
    def _batches(self, N, batch_size):
        if batch_size is None:
            batch_size = N if self._stateful() else min(N, 1024)
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return [slice(s, min(N, s + batch_size)) for s in range(0, N, batch_size)]

    @with_blas_limit
    def predict(self, x, batch_size=None, verbose=0, lengths=None):
        """Outputs for ``x`` (inference: dropout off, no gradient caches).

        Parameters
        ----------
        x : array or list of arrays of different lengths
        batch_size : int, optional
            Default: all samples at once, in chunks of 1024 (stateful models: all at once).
        lengths : int array (N,), optional

        Returns
        -------
        ndarray, or a list of per-sample arrays trimmed to their lengths when ``x`` was a list
        of different lengths and the output is a sequence; ``[output, *states]`` when the last
        layer has ``return_state``.
        """
        self._require_built("predict")
        X, L, ragged = self._prepare_x(x, lengths, "x")
        outs = []
        for sl in self._batches(X.shape[0], batch_size):
            out = self._forward(X[sl], None if L is None else L[sl], training=False, need_grad=False)
            outs.append(out if isinstance(out, list) else [out])
        self._last_lengths = None
        res = [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
        if ragged and res[0].ndim >= 3:
            res[0] = [res[0][i, : L[i]] for i in range(len(L))]
        return res if len(res) > 1 else res[0]

    def __call__(self, x, lengths=None):
        """Forward pass on one batch (no training behaviour)."""
        return self.predict(x, batch_size=None, lengths=lengths)

    def _evaluate_arrays(self, X, Y, L, batch_size=None):
        metrics = self._make_metrics()
        tot, cnt = 0.0, 0.0
        for sl in self._batches(X.shape[0], batch_size):
            lb = None if L is None else L[sl]
            pred = _first(self._forward(X[sl], lb, training=False, need_grad=False))
            mask = self._mask(pred, self._last_lengths)
            loss, _ = self.loss.value_and_grad(Y[sl], pred, mask)
            w = float(mask.sum()) if mask is not None else pred.size / pred.shape[-1]
            tot += loss * w
            cnt += w
            for m in metrics:
                m.update(Y[sl], pred, mask)
        self._last_lengths = None
        out = {"loss": tot / cnt if cnt else float("nan")}
        out.update({m.name: m.result() for m in metrics})
        return out

    @with_blas_limit
    def evaluate(self, x, y, batch_size=None, verbose=0, return_dict=False, lengths=None):
        """Loss (and metrics) on ``x, y`` without training behaviour.

        Returns
        -------
        float (loss) when there are no metrics, else ``[loss, *metrics]``; a dict with
        ``return_dict=True``.
        """
        if self.loss is None:
            raise RuntimeError("evaluate: compile the model first")
        self._require_built("evaluate")
        X, L, _ = self._prepare_x(x, lengths, "x")
        Y = self._prepare_y(y, X, L, "y")
        res = self._evaluate_arrays(X, Y, L, batch_size)
        if return_dict:
            return res
        vals = list(res.values())
        return vals[0] if len(vals) == 1 else vals

    # ---- weights ----------------------------------------------------------------------------
    def get_weights(self):
        """Copies of every layer's arrays, layer by layer (parameters, then buffers)."""
        return [w for layer in self._layers for w in layer.get_weights()]

    def set_weights(self, weights):
        """Inverse of ``get_weights`` (copies into the existing arrays)."""
        weights = list(weights)
        expected = sum(len(layer.weights) for layer in self._layers)
        if len(weights) != expected:
            raise ValueError(f"set_weights: expected {expected} arrays, got {len(weights)}")
        k = 0
        for layer in self._layers:
            n = len(layer.weights)
            layer.set_weights(weights[k:k + n])
            k += n

    def count_params(self):
        """Number of parameters (Keras' count: an LSTM has 4(mh + h^2 + h))."""
        self._require_built("count_params")
        return sum(layer.count_params() for layer in self._layers)

    def astype(self, dtype):
        """Convert all weights (and the computation) to ``dtype`` ("float32" or "float64")."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"astype: dtype must be float32 or float64, got {dtype}")
        self.dtype = dtype
        for layer in self._layers:
            layer.astype(dtype)
        if self.optimizer is not None:
            self.optimizer.reset()
        return self

    # ---- summary ------------------------------------------------------------------------------
    def summary(self, print_fn=None, line_length=78):
        """The layer table: output shapes and parameter counts, totals.

        Returns the text (a ``str`` that a REPL shows as the table); it is also passed to
        ``print_fn`` if given, else logged at INFO level on the ``"edgernn"`` logger.
        """
        def fmt(shape):
            if shape is None:
                return "?"
            if isinstance(shape, list):
                return ", ".join(fmt(s) for s in shape)
            return "(" + ", ".join("None" if d is None else str(d) for d in (None,) + tuple(shape)) + ")"

        shapes = [fmt(layer.output_shape if layer.built else None) for layer in self._layers]
        w1 = max([32] + [len(layer.name) + len(type(layer).__name__) + 5 for layer in self._layers])
        w2 = max([26] + [len(s) + 2 for s in shapes])
        w3 = max(12, line_length - w1 - w2)
        line_length = w1 + w2 + w3
        rows = [f'Model: "{self.name}"', "_" * line_length,
                f"{'Layer (type)':<{w1}}{'Output Shape':<{w2}}{'Param #':>{w3}}", "=" * line_length]
        total = trainable = 0
        for layer, shape in zip(self._layers, shapes, strict=True):
            n = layer.count_params() if layer.built else 0
            total += n
            trainable += n if layer.trainable else 0
            rows.append(f"{(layer.name + ' (' + type(layer).__name__ + ')'):<{w1}}{shape:<{w2}}{n:>{w3},}")
        rows += ["=" * line_length, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                 f"Non-trainable params: {total - trainable:,}", "_" * line_length]
        if any(isinstance(layer, (RecurrentLayer, Bidirectional)) for layer in self._layers):
            rows.append("Recurrent layers are counted as Keras counts them (one bias per gate): ONNX's "
                        "second bias Rb is a stored zero buffer, neither trained nor counted, except for "
                        "GRU(reset_after=True), which trains and counts both biases.")
        if not self.built:
            rows.append("The model is not built: give input_shape= to the first layer or call build().")
        text = Summary("\n".join(rows))
        if print_fn is not None:
            print_fn(text)
        else:
            logger.info("%s", text)
        return text

    def stream(self, batch_size=1):
        """A step-by-step inference engine with preallocated state (see ``edgernn.streaming``)."""
        from .streaming import stream

        return stream(self, batch_size)

    # ---- config / saving ------------------------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "dtype": self.dtype.name, "seed": self.seed,
                "input_shape": None if self.input_shape is None else list(self.input_shape),
                "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()}
                           for layer in self._layers]}

    @classmethod
    def from_config(cls, config):
        layers = [get_layer_class(spec["class_name"]).from_config(spec["config"]) for spec in config["layers"]]
        model = cls(name=config.get("name"), dtype=config.get("dtype", "float32"), seed=config.get("seed"))
        for layer in layers:
            model.add(layer)
        if config.get("input_shape") is not None:
            model.build(tuple(config["input_shape"]))
        return model

    def save(self, path):
        """Save architecture, weights and compile settings to one ``.npz`` file (atomic).

        Optimizer state (moments) is not saved. See ``edgernn.load_model``.
        """
        from .saving import save_model

        return save_model(self, path)

    def __repr__(self):
        return f"<Sequential name={self.name!r} layers={len(self._layers)} built={self.built}>"


def _first_shape(shape):
    return shape[0] if isinstance(shape, list) else shape
