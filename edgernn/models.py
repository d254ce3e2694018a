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
import os
import sys
import threading
import time
import warnings

import numpy as np

from . import callbacks as cbks
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from ._config import with_blas_limit
from .layers import get as get_layer_class
from .layers.core import Embedding, KerasTensor, Layer, _snake
from .layers.recurrent import Bidirectional, RecurrentLayer

__all__ = ["Sequential"]  # and Model (module __getattr__)

logger = logging.getLogger("edgernn")


PREDICT_BATCH = 1024  # predict's default batch size


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
    divergence_factor : float or None
        ``fit`` raises ``TrainingDiverged`` when a batch loss exceeds this many times the first
        batch loss of the fit (default 1e6; None: only NaN/inf count as divergence).
    """

    divergence_factor = 1e6
    _runners = None  # {id(layer): forward replacement} for inference (a Predictor's private copy)

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
        self._train_lock = threading.Lock()
        self._training_thread = None  # ident of the thread running fit / train_on_batch
        for layer in layers or []:
            self.add(layer)

    # ---- structure ------------------------------------------------------------------
    @property
    def layers(self):
        return list(self._layers)

    def add(self, layer):
        """Append a layer (or an ``Input`` declaring the input shape, before any layer)."""
        if isinstance(layer, KerasTensor):
            if layer.node is not None:
                raise TypeError("Sequential.add expects a Layer or Input(...), got the output of layer "
                                f"{layer.node.layer.name!r} (for graphs of layers use Model(inputs, outputs))")
            if self._layers or self.input_shape is not None:
                raise ValueError("Input(...) must come first, before any layer")
            self.input_shape = layer.sample_shape
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
        X, lengths, ragged = _prepare_array(x, lengths, where, self.dtype, self._int_input())
        if not self.built:
            shape = X.shape[1:]
            if X.ndim == 3 or (self._int_input() and X.ndim == 2):
                shape = (None,) + shape[1:]
            self.build(shape)
        self._check_input_shape(X, where)
        return X, lengths, ragged

    def _check_input_shape(self, X, where):
        _check_shape(X, self.input_shape, where)

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
        """Forward pass that keeps what ``backward`` needs on the layers (training only).

        Inference goes through ``_infer``, which writes nothing on the model or its layers.
        """
        for layer in self._layers:
            out_lengths = layer.compute_lengths(x, lengths)
            x = layer.forward(x, lengths=lengths, training=training, need_grad=need_grad)  # forward reads its input's lengths
            lengths = out_lengths if _first(x).ndim >= 3 else None
        self._last_lengths = lengths
        return x

    def _infer(self, x, lengths=None):
        """Inference forward pass -> (output, lengths of the output or None).

        Writes no shared state (no layer caches, nothing on the model), so ``predict`` and
        ``evaluate`` may run in other threads while this model trains (stateless models).
        Stateful layers still carry their state from call to call, by design.
        """
        runners = self._runners or {}
        for layer in self._layers:
            out_lengths = layer.compute_lengths(x, lengths)
            fwd = runners.get(id(layer), layer.forward)
            x = fwd(x, lengths=lengths, training=False, need_grad=False)  # forward reads its input's lengths
            lengths = out_lengths if _first(x).ndim >= 3 else None
        return x, lengths

    def _backward(self, dy, need_dx=True):
        """Backpropagate dL/d(output); returns dL/d(input), or None without ``need_dx`` (training:
        then the first layer may skip computing it, see ``Layer._dx_unused``)."""
        first = self._layers[0] if self._layers else None
        for layer in reversed(self._layers):
            layer._dx_unused = layer is first and not need_dx
            try:
                dy = layer.backward(dy)
            finally:
                layer._dx_unused = False
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

    def _loss_and_grads(self, x, y, lengths=None, training=False, sample_weight=None):
        """Loss and gradients (list, ``_trainable()`` order) on one prepared batch."""
        out = self._forward(x, lengths, training=training, need_grad=True)
        pred = _first(out)
        mask = self._mask(pred, self._last_lengths)
        if sample_weight is None:
            loss, dy = self.loss.value_and_grad(y, pred, mask)
        else:
            loss, dy = self.loss.value_and_grad(y, pred, mask, sample_weight=sample_weight)
        if isinstance(out, list):
            dy = [dy] + [None] * (len(out) - 1)
        self._backward(dy, need_dx=False)
        return loss, [layer.grads[k] for layer, k in self._trainable()], pred

    # ---- training -------------------------------------------------------------------------
    def _stateful(self):
        return any(getattr(layer, "stateful", False) for layer in self._layers)

    def reset_states(self):
        """Reset the carried state of every stateful recurrent layer."""
        for layer in self._layers:
            if isinstance(layer, (RecurrentLayer, Bidirectional)):
                layer.reset_states()

    # concurrency: one fit at a time; inference of a stateful model refused during a fit in another thread
    def _begin_training(self, what):
        with self._train_lock:
            if self._training_thread is not None:
                other = "another thread" if self._training_thread != threading.get_ident() else "this thread"
                raise RuntimeError(f"{what}: this model is already being trained (fit running in {other}); "
                                   "train one model from one thread at a time")
            self._training_thread = threading.get_ident()

    def _end_training(self):
        with self._train_lock:
            self._training_thread = None

    def _check_inference_allowed(self, what):
        t = self._training_thread
        if t is not None and t != threading.get_ident() and self._stateful():
            raise RuntimeError(f"{what}: this stateful model is being trained in another thread; its carried "
                               "states belong to that fit. Wait for fit to return, or predict with a copy "
                               "(load_model of a saved checkpoint)")

    @with_blas_limit
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            seed=None, lengths=None):
        """Train by backpropagation through time.

        Parameters
        ----------
        x : array (N, T, F), list of (T_i, F) arrays, ids (N, T) for Embedding models, a
            generator / iterator yielding ``(x, y)`` or ``(x, y, sample_weight)`` batches, or a
            Keras ``Sequence``-like object (``__len__`` and ``__getitem__(i)`` giving such
            batches; its ``on_epoch_end()`` is called after every epoch).
        y : array
            Targets matching the output ((N, units) or (N, T, units); (N,) for one unit;
            class ids for sparse losses); a list of per-step target arrays for ragged ``x``.
            Must be None when ``x`` yields batches.
        batch_size : int, default 32
            Arrays only.
        epochs : int
            Index of the last epoch (Keras: trains ``epochs - initial_epoch`` epochs); 0 trains nothing.
        verbose : {"auto", 0, 1, 2}
            "auto" and 1: a live progress bar on stderr when it is a terminal, one line per
            epoch otherwise (logs, CI, notebooks); 2: one line per epoch; 0: silent.
        callbacks : list of Callback
        validation_split : float in [0, 1)
            The last fraction of the samples (before shuffling) is held out, as Keras. Arrays only.
        validation_data : tuple (x_val, y_val[, sample_weight_val]), or a generator / Sequence
        shuffle : bool
        class_weight : dict {class index: weight}, optional
            Weights the loss of each sample (or step) by the weight of its target class (the
            class id, the argmax of a one-hot target, or the rounded binary target).
        sample_weight : array (N,) or (N, T), optional
            Per-sample (per-step for sequence outputs) loss weights; the loss is the mean of
            the weighted per-sample losses (Keras' ``sum_over_batch_size``).
        initial_epoch : int
        steps_per_epoch : int, optional
            Batches per epoch. Generators: required for an endless one (default: until it is
            exhausted); Sequences: default ``len(x)``; arrays: batches are drawn from passes over
            the shuffled data that continue across epochs.
        validation_steps : int, optional
            Batches of a validation generator / Sequence to evaluate each epoch.
        seed : int, optional
            Seeds shuffling and dropout of this call (default: the model's seeded stream).
        lengths : int array (N,), optional
            Valid steps of each padded sample.

        Returns
        -------
        History
            Also has ``train_seconds`` (wall time of the epochs) and ``compile_seconds`` (time
            spent compiling the kernels for the first time in this process, before training).

        Raises
        ------
        TrainingDiverged
            The loss, a gradient or a weight became NaN/inf, or the loss grew by more than
            ``divergence_factor`` over the first batch's loss; the last good weights are restored.
        TypeError, ValueError
            Bad arguments (the message names the argument).
        RuntimeError
            The model is not compiled, or is already being trained in another thread.
        """
        if self.loss is None:
            raise RuntimeError("fit: compile the model first, e.g. model.compile(loss='mse', optimizer='adam')")
        batch_size = 32 if batch_size is None else _check_int(batch_size, "batch_size", 1)
        epochs = _check_int(epochs, "epochs", 0)
        initial_epoch = _check_int(initial_epoch, "initial_epoch", 0)
        steps_per_epoch = None if steps_per_epoch is None else _check_int(steps_per_epoch, "steps_per_epoch", 1)
        validation_steps = None if validation_steps is None else _check_int(validation_steps, "validation_steps", 1)
        verbose = _check_verbose(verbose)
        validation_split = _check_split(validation_split)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"callbacks must be a list of Callback objects, got {type(callbacks).__name__}")
        if class_weight is not None:
            class_weight = _check_class_weight(class_weight)
        self._begin_training("fit")
        try:
            return self._fit(x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data,
                             bool(shuffle), class_weight, sample_weight, initial_epoch, steps_per_epoch,
                             validation_steps, seed, lengths)
        finally:
            self._end_training()

    def _fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data, shuffle,
             class_weight, sample_weight, initial_epoch, steps_per_epoch, validation_steps, seed, lengths):
        stateful = self._stateful()
        rng = self._train_rng if seed is None else np.random.default_rng(seed)
        if _is_batch_source(x):
            if y is not None:
                raise ValueError("fit: y must be None when x is a generator or Sequence (it yields (x, y) batches)")
            for name, v in (("sample_weight", sample_weight), ("lengths", lengths)):
                if v is not None:
                    raise ValueError(f"fit: {name} cannot be given with a generator or Sequence x; "
                                     "yield (x, y, sample_weight) batches instead")
            if validation_split:
                raise ValueError("fit: validation_split needs arrays; give validation_data with a generator")
            source = _SourceBatches(self, x, steps_per_epoch, shuffle and not stateful, rng, class_weight, "x")
        else:
            if y is None:
                raise ValueError("fit: y (the targets) is required when x is an array")
            (X, Y, L, Wt), split_val = self._fit_data(x, y, lengths, validation_split, sample_weight,
                                                      class_weight)
            if split_val is not None:
                validation_data = split_val
            if stateful:
                if shuffle:
                    warnings.warn("fit: shuffle is ignored for a stateful model (batch order is the stream order)",
                                  RuntimeWarning, stacklevel=3)
                    shuffle = False
                if X.shape[0] % batch_size:
                    raise ValueError(f"stateful fit: the number of samples ({X.shape[0]}) must be a multiple of "
                                     f"batch_size ({batch_size})")
            source = _ArrayBatches(self, X, Y, L, Wt, batch_size, shuffle, rng, steps_per_epoch)
        val = self._validation_source(validation_data, validation_steps, batch_size)
        for layer in self._layers:
            if getattr(layer, "seed", None) is None:
                layer._rng = rng  # dropout masks
        self.metrics = self._make_metrics()
        history = cbks.History()
        cb_list = list(callbacks or []) + [history]  # History sees what callbacks add (e.g. "lr")
        bar = cbks.ProgressBar(verbose) if verbose else None
        if bar is not None:
            cb_list.append(bar)
        cb = cbks.CallbackList(cb_list, self)
        self._fit_params = {"epochs": epochs, "steps": source.steps, "batch_size": batch_size}
        self.history = history
        self.stop_training = False
        pairs = self._trainable()
        snapshot = [layer.params[k].copy() for layer, k in pairs]
        guard = _DivergenceGuard(self.divergence_factor)
        history.compile_seconds = self._warm_up(source, bar)
        t0 = time.perf_counter()
        cb.on_train_begin({})
        logs = {}
        last = None
        for epoch in range(initial_epoch, epochs):
            if stateful:
                self.reset_states()
            cb.on_epoch_begin(epoch, {})
            logs, last = self._train_epoch(source, epoch, cb, pairs, snapshot, guard)
            if val is not None:
                if stateful:
                    self.reset_states()
                vlogs = self._evaluate_source(val)
                if stateful:
                    self.reset_states()
                if not math.isfinite(vlogs["loss"]):
                    self._diverged(f"the validation loss became {vlogs['loss']}", epoch, None, pairs, snapshot)
                logs.update({"val_" + k: v for k, v in vlogs.items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        if last is not None and val is None:  # the last update was checked by no later loss: check it now
            self._check_final(last, guard, pairs, snapshot, epoch)
        history.train_seconds = time.perf_counter() - t0
        cb.on_train_end({})
        return history

    def _warm_up(self, source, bar):
        """Compile the kernels this fit needs before timing it (first fit of a kind in this process).

        Runs one forward and backward pass on one sample of the first batch with no training
        behaviour (no dropout draw, no update, stateful states put back). Returns the seconds
        spent (0.0 when nothing had to be compiled).
        """
        key = self._kernel_key()
        if key is None or key in _WARM:
            return 0.0
        first = source.peek()
        if first is None:
            return 0.0
        xb, yb, lb, _ = first
        if _kernels_cached() is False:
            logger.info("compiling kernels once for this machine (numba caches them)...")
            if bar is not None:
                bar.message("compiling kernels once for this machine (numba caches them)...")
        t0 = time.perf_counter()
        inner = [getattr(layer, "layer", layer) for layer in self._layers]
        saved = [(layer, layer._states) for layer in inner if isinstance(layer, RecurrentLayer)]
        for layer, _s in saved:
            layer._states = None
        try:
            with np.errstate(all="ignore"):
                self._loss_and_grads(xb[:1], yb[:1], None if lb is None else lb[:1], training=False)
        except Exception:  # noqa: BLE001 - the same error surfaces, with its context, in the first batch
            pass
        finally:
            for layer, s in saved:
                layer._states = s
            self._last_lengths = None
        _WARM.add(key)
        return time.perf_counter() - t0

    def _kernel_key(self):
        cells = tuple(getattr(layer, "cell", None) for layer in self._layers if getattr(layer, "cell", None))
        if not cells:
            return None
        return cells + (self.dtype.name,)

    def _diverged(self, what, epoch, batch, pairs, snapshot):
        for (layer, k), s in zip(pairs, snapshot, strict=True):
            np.copyto(layer.params[k], s)
        self.reset_states()
        if self.optimizer is not None:
            self.optimizer.reset()  # its moments hold the diverged gradients
        where = f" at epoch {epoch + 1}" + ("" if batch is None else f", batch {batch + 1}")
        raise cbks.TrainingDiverged(
            f"training diverged: {what}{where} (counting from 1); stopped and restored the weights from "
            "before the last update (the optimizer's moments are reset). Try a lower learning rate or "
            "gradient clipping (clipnorm=1.0).",
            epoch=epoch, batch=batch, history=self.history) from None

    def _check_final(self, last, guard, pairs, snapshot, epoch):
        """Loss of the final weights on the last batch: catches a last update that broke them."""
        xb, yb, lb, wb = last
        with np.errstate(all="ignore"):
            pred, Lout = self._infer(xb, lb)
            pred = _first(pred)
            mask = self._mask(pred, Lout)
            if wb is None:
                loss, _ = self.loss.value_and_grad(yb, pred, mask)
            else:
                loss, _ = self.loss.value_and_grad(yb, pred, mask, sample_weight=wb)
        try:
            guard.check_loss(loss)
        except _Diverged as exc:
            self._diverged(exc.what + " after the last update", epoch, None, pairs, snapshot)

    def _validation_source(self, validation_data, validation_steps, batch_size):
        if validation_data is None:
            return None
        if _is_batch_source(validation_data):
            return _SourceBatches(self, validation_data, validation_steps, False, None, None, "validation_data")
        if isinstance(validation_data, _Prepared):
            Xv, Yv, Lv, Wv = validation_data
        else:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, sample_weight_val), "
                                 "a generator or a Sequence")
            Xv, Lv, _ = self._prepare_x(validation_data[0], None, "validation_data x")
            Yv = self._prepare_y(validation_data[1], Xv, Lv, "validation_data y")
            self._check_finite(Xv, "validation_data x")
            self._check_finite(Yv, "validation_data y")
            Wv = None
            if len(validation_data) == 3 and validation_data[2] is not None:
                Wv = self._prepare_weights(validation_data[2], Yv, "validation_data sample_weight")
        return _ArrayBatches(self, Xv, Yv, Lv, Wv, batch_size if batch_size else 32, False, None, None,
                             trim=False, big=True)

    def _fit_data(self, x, y, lengths, validation_split, sample_weight=None, class_weight=None):
        """Checked training arrays ``(X, Y, L, W)`` and the validation split (or None)."""
        X, L, _ = self._prepare_x(x, lengths, "x")
        Y = self._prepare_y(y, X, L, "y")
        self._check_finite(X, "x")
        self._check_finite(Y, "y")
        Wt = None
        if sample_weight is not None:
            Wt = self._prepare_weights(sample_weight, Y, "sample_weight")
        if class_weight is not None:
            cw = self._class_weights(Y, class_weight)
            Wt = cw if Wt is None else Wt * cw.reshape(cw.shape + (1,) * (Wt.ndim - cw.ndim)) \
                if Wt.ndim >= cw.ndim else Wt.reshape(Wt.shape + (1,) * (cw.ndim - Wt.ndim)) * cw
        if not validation_split:
            return (X, Y, L, Wt), None
        split = int(X.shape[0] * (1.0 - validation_split))  # the last samples, before shuffling (Keras)
        if split < 1 or split >= X.shape[0]:
            raise ValueError(f"validation_split={validation_split} leaves no samples for training or "
                             f"validation out of {X.shape[0]}")
        Lt, Lv = (None, None) if L is None else (L[:split], L[split:])
        Wa, Wv = (None, None) if Wt is None else (Wt[:split], Wt[split:])
        return (X[:split], Y[:split], Lt, Wa), _Prepared((X[split:], Y[split:], Lv, Wv))

    def _loss_value_shape(self, Y):
        """Shape of the per-sample (per-step) loss values for prepared targets ``Y``."""
        return Y.shape if self.loss.sparse else Y.shape[:-1]

    def _prepare_weights(self, w, Y, where):
        w = np.asarray(w)
        if w.dtype.kind not in "fiub":
            raise TypeError(f"{where}: expected numbers, got dtype {w.dtype}")
        want = self._loss_value_shape(Y)
        if w.shape not in (want[:1], want) or w.ndim == 0:
            raise ValueError(f"{where}: expected shape {want[:1]} (one weight per sample)"
                             + (f" or {want} (one per step)" if len(want) > 1 else "") + f", got {w.shape}")
        w = w.astype(self.dtype)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{where}: weights must be finite and >= 0")
        return w

    def _class_weights(self, Y, class_weight):
        if self.loss.sparse:
            ids = Y.astype(np.int64)
        elif Y.shape[-1] > 1:
            ids = Y.argmax(axis=-1)
        else:
            ids = np.rint(Y[..., 0]).astype(np.int64)
        present = np.unique(ids)
        missing = [int(c) for c in present if int(c) not in class_weight]
        if missing:
            raise ValueError(f"class_weight: no weight for classes {missing[:10]} found in y "
                             f"(given for {sorted(class_weight)[:10]})")
        table = np.ones(int(present.max()) + 1 if present.size else 1, self.dtype)
        for c, v in class_weight.items():
            if 0 <= c < table.size:
                table[c] = v
        return table[ids]

    def _train_epoch(self, source, epoch, cb, pairs, snapshot, guard):
        """One pass over the batches -> (epoch logs, the last batch or None).

        ``snapshot`` holds the weights from before the last update, restored on divergence.
        """
        tot, cnt = 0.0, 0
        for m in self.metrics:
            m.reset()
        logs = {}
        last = None
        for b, batch in enumerate(source.epoch()):
            xb, yb, lb, wb = batch
            try:
                loss = self._train_step(xb, yb, lb, wb, pairs, snapshot, guard)
            except _Diverged as exc:
                self._diverged(exc.what, epoch, b, pairs, snapshot)
            last = batch
            tot += loss * xb.shape[0]
            cnt += xb.shape[0]
            logs = {"loss": tot / cnt, **{m.name: m.result() for m in self.metrics}}
            cb.on_batch_end(b, logs)
        if last is None and source.is_source:
            raise ValueError(f"fit: {source.where} yielded no batch for epoch {epoch + 1}: an exhausted "
                             "generator? give steps_per_epoch= (and make it yield at least steps_per_epoch * "
                             "epochs batches)")
        return logs, last

    def _train_step(self, xb, yb, lb, wb, pairs, snapshot, guard):
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected and reported here
            loss, grads, pred = self._loss_and_grads(xb, yb, lb, training=True, sample_weight=wb)
            guard.check_loss(loss)
            sq = [float(np.vdot(g, g)) for g in grads]
            if not math.isfinite(sum(sq)):
                raise _Diverged("a gradient became NaN or inf")
            for (layer, k), s in zip(pairs, snapshot, strict=True):
                np.copyto(s, layer.params[k])
            params = [layer.params[k] for layer, k in pairs]
            self.optimizer.apply(params, grads, sq)
            for layer in {id(la): la for la, _ in pairs}.values():  # constraints (IndRNN's |u| bound)
                if hasattr(layer, "constrain"):
                    layer.constrain()
            for (layer, k), p in zip(pairs, params, strict=True):
                if not math.isfinite(float(p.sum(dtype=np.float64))):
                    raise _Diverged(f"the update made weight {layer.name}/{k} NaN or inf")
        if self.metrics:
            mask = self._mask(pred, self._last_lengths)
            for m in self.metrics:
                m.update(yb, pred, mask)
        return loss

    @with_blas_limit
    def train_on_batch(self, x, y, sample_weight=None, class_weight=None):
        """One update on one batch; returns the loss (before the update)."""
        if self.loss is None:
            raise RuntimeError("train_on_batch: compile the model first")
        X, L, _ = self._prepare_x(x, None, "x")
        Y = self._prepare_y(y, X, L, "y")
        self._check_finite(X, "x")
        self._check_finite(Y, "y")
        Wt = None if sample_weight is None else self._prepare_weights(sample_weight, Y, "sample_weight")
        if class_weight is not None:
            cw = self._class_weights(Y, _check_class_weight(class_weight))
            Wt = cw if Wt is None else (Wt.reshape(Wt.shape + (1,) * (cw.ndim - Wt.ndim)) * cw)
        pairs = self._trainable()
        snapshot = [layer.params[k].copy() for layer, k in pairs]
        self._begin_training("train_on_batch")
        try:
            self.metrics = []
            return self._train_step(X, Y, L, Wt, pairs, snapshot, _DivergenceGuard(None))
        except _Diverged as exc:
            for (layer, k), s in zip(pairs, snapshot, strict=True):
                np.copyto(layer.params[k], s)
            raise cbks.TrainingDiverged(f"training diverged: {exc.what}; weights left unchanged") from None
        finally:
            self._end_training()

    # ---- inference ------------------------------------------------------------------------
    def _batches(self, N, batch_size):
        if batch_size is None:
            batch_size = N if self._stateful() else min(N, PREDICT_BATCH)
        else:
            batch_size = _check_int(batch_size, "batch_size", 1)
        return [slice(s, min(N, s + batch_size)) for s in range(0, N, batch_size)]

    @with_blas_limit
    def predict(self, x, batch_size=None, verbose=0, steps=None, callbacks=None, lengths=None):
        """Outputs for ``x`` (inference: dropout off, no gradient caches).

        Inference writes no shared state, so it may run in other threads while the model trains
        (except for stateful models, whose carried states belong to the fit: refused then).

        Parameters
        ----------
        x : array, list of arrays of different lengths, or a generator / Sequence yielding
            ``x`` batches (or ``(x, ...)`` tuples, of which the first item is used)
        batch_size : int, optional
            Default: all samples at once, in chunks of 1024 (stateful models: all at once).
        steps : int, optional
            Batches to take from a generator / Sequence (default: all).
        lengths : int array (N,), optional

        Returns
        -------
        ndarray, or a list of per-sample arrays trimmed to their lengths when ``x`` was a list
        of different lengths and the output is a sequence; ``[output, *states]`` when the last
        layer has ``return_state``.
        """
        self._check_inference_allowed("predict")
        if _is_batch_source(x):
            steps = None if steps is None else _check_int(steps, "steps", 1)
            returns_state = self.built and isinstance(self._layers[-1].output_shape, list)
            outs, flat = [], []
            for item in _iterate_source(x, steps, "x"):
                xb = item[0] if isinstance(item, tuple) else item
                out = self.predict(xb, batch_size=batch_size)
                if returns_state:
                    outs.append(out)
                elif isinstance(out, list):  # ragged sequences: one array per sample
                    flat.extend(out)
                else:
                    outs.append([out])
            if not outs and not flat:
                raise ValueError("predict: the generator / Sequence x yielded no batch")
            if flat and not outs:
                return flat
            if flat:
                raise ValueError("predict: the batches of x mix ragged lists and arrays")
            res = [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
            return res if len(res) > 1 else res[0]
        self._require_built("predict")
        X, L, ragged = self._prepare_x(x, lengths, "x")
        outs = []
        for sl in self._batches(X.shape[0], batch_size):
            out, _ = self._infer(X[sl], None if L is None else L[sl])
            outs.append(out if isinstance(out, list) else [out])
        if len(outs) == 1:  # one batch: its outputs as they are (a copy of any that views the input)
            res = [o.copy() if np.may_share_memory(o, X) else o for o in outs[0]]
        else:
            res = [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
        if ragged and res[0].ndim >= 3:
            res[0] = [res[0][i, : L[i]] for i in range(len(L))]
        return res if len(res) > 1 else res[0]

    def predictor(self):
        """A :class:`edgernn.predictor.Predictor`: this model's inference on a snapshot of its
        weights, checked and packed once, for many small calls (one short window at a time).

        Results equal ``predict``'s (bit for bit, but for single sequences of fewer than 4
        steps: to float32 rounding, see the module); later changes to this model's weights (``fit``,
        ``set_weights``) do not reach it: make a new one.
        """
        from .predictor import Predictor

        return Predictor(self)

    def predict_on_batch(self, x):
        """Outputs for one batch ``x`` (Keras' ``predict_on_batch``): ``predict`` in one chunk."""
        X = np.asarray(x) if not isinstance(x, (list, tuple)) else x
        return self.predict(X, batch_size=len(X))

    def __call__(self, x, lengths=None):
        """Forward pass on one batch (no training behaviour)."""
        return self.predict(x, batch_size=None, lengths=lengths)

    def _evaluate_arrays(self, X, Y, L, batch_size=None, W=None):
        return self._evaluate_source(_ArrayBatches(self, X, Y, L, W, batch_size, False, None, None,
                                                   trim=False, big=batch_size is None))

    def _evaluate_source(self, source):
        metrics = self._make_metrics()
        tot, cnt = 0.0, 0.0
        for xb, yb, lb, wb in source.epoch():
            out, Lout = self._infer(xb, lb)
            pred = _first(out)
            mask = self._mask(pred, Lout)
            if wb is None:
                loss, _ = self.loss.value_and_grad(yb, pred, mask)
            else:
                loss, _ = self.loss.value_and_grad(yb, pred, mask, sample_weight=wb)
            w = float(mask.sum()) if mask is not None else pred.size / pred.shape[-1]
            tot += loss * w
            cnt += w
            for m in metrics:
                m.update(yb, pred, mask)
        out = {"loss": tot / cnt if cnt else float("nan")}
        out.update({m.name: m.result() for m in metrics})
        return out

    @with_blas_limit
    def evaluate(self, x, y=None, batch_size=None, verbose=0, sample_weight=None, steps=None,
                 callbacks=None, return_dict=False, lengths=None):
        """Loss (and metrics) on ``x, y`` without training behaviour.

        ``x`` may also be a generator / Sequence of ``(x, y[, sample_weight])`` batches (``y``
        None; ``steps`` batches, default all).

        Returns
        -------
        float (loss) when there are no metrics, else ``[loss, *metrics]``; a dict with
        ``return_dict=True``.
        """
        if self.loss is None:
            raise RuntimeError("evaluate: compile the model first")
        self._check_inference_allowed("evaluate")
        if _is_batch_source(x):
            if y is not None:
                raise ValueError("evaluate: y must be None when x is a generator or Sequence")
            steps = None if steps is None else _check_int(steps, "steps", 1)
            res = self._evaluate_source(_SourceBatches(self, x, steps, False, None, None, "x"))
        else:
            self._require_built("evaluate")
            if y is None:
                raise ValueError("evaluate: y (the targets) is required when x is an array")
            X, L, _ = self._prepare_x(x, lengths, "x")
            Y = self._prepare_y(y, X, L, "y")
            Wt = None if sample_weight is None else self._prepare_weights(sample_weight, Y, "sample_weight")
            res = self._evaluate_arrays(X, Y, L, batch_size, Wt)
        if return_dict:
            return res
        vals = list(res.values())
        return vals[0] if len(vals) == 1 else vals

    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        """Loss (and metrics) on one batch, no update (Keras' ``test_on_batch``)."""
        n = len(x) if isinstance(x, (list, tuple)) else np.shape(x)[0]
        return self.evaluate(x, y, batch_size=max(1, n), sample_weight=sample_weight, return_dict=return_dict)

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

    def get_layer(self, name=None, index=None):
        """The layer called ``name``, or at position ``index`` (Keras' ``get_layer``)."""
        if (name is None) == (index is None):
            raise ValueError("get_layer: give exactly one of name= and index=")
        if index is not None:
            index = _check_int(index, "index")
            if not -len(self._layers) <= index < len(self._layers):
                raise ValueError(f"get_layer: index {index} out of range for a model with {len(self._layers)} layers")
            return self._layers[index]
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r}; layers: {[layer.name for layer in self._layers]}")

    @property
    def trainable_weights(self):
        """The trained parameter arrays (the live arrays, not copies), in ``get_weights`` order."""
        return [layer.params[k] for layer, k in self._trainable()]

    @property
    def non_trainable_weights(self):
        """Parameters of frozen layers and stored buffers (the live arrays)."""
        out = []
        for layer in self._layers:
            if not layer.trainable:
                out.extend(layer.params.values())
            out.extend(layer.buffers.values())
        return out

    @property
    def weights(self):
        """All stored arrays (the live arrays), in ``get_weights`` order."""
        return [w for layer in self._layers for w in layer.weights]

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
        """Print the layer table (output shapes, parameter counts, totals), as Keras does.

        Parameters
        ----------
        print_fn : callable, optional
            Receives the whole table as one string; default: written to ``sys.stdout``.
            Pass ``print_fn=lambda s: None`` to only get the text.
        line_length : int

        Returns
        -------
        Summary
            The text (a ``str``), so ``text = model.summary(print_fn=...)`` keeps it.
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
        sized = [la for la in self._layers if la.built and hasattr(la, "model_size_bytes")]
        if sized:  # FastRNN/FastGRNN: what the paper reports (sparsified W/U counted by nonzeros)
            rows.append("Model size (float32, sparse W/U by nonzeros): " + ", ".join(
                f"{la.name} {la.model_size_bytes():,} bytes" for la in sized))
        if not self.built:
            rows.append("The model is not built: give input_shape= to the first layer or call build().")
        text = Summary("\n".join(rows))
        if print_fn is not None:
            print_fn(text)
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        return text

    def stream(self, batch_size=1):
        """A step-by-step inference engine with preallocated state (see ``edgernn.streaming``).

        Layers the jitted engine does not run but that are causal (``Conv1D(padding="causal")``,
        ``LayerNormalization``, ``TimeDistributed``, ...) stream layer by layer through
        :class:`edgernn.graph_stream.GraphStream`; a layer that needs the whole sequence is refused
        (``ValueError`` naming it).
        """
        from .streaming import LayerNotInEngine, stream

        try:
            return stream(self, batch_size)
        except LayerNotInEngine:
            from .graph_stream import GraphStream

            return GraphStream(self._as_graph(), batch_size)

    def _as_graph(self):
        """The same layers as a functional Model (the layer objects are shared)."""
        from .graph import Model
        from .layers.core import Input

        self._require_built("stream")
        x = a = Input(shape=self.input_shape, dtype="int64" if self._int_input() else self.dtype.name)
        for layer in self._layers:
            x = layer(x)
        return Model(a, x, name=self.name, dtype=self.dtype.name)

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

        Raises
        ------
        ValueError
            For a path naming another format (``.h5``, ``.keras``, ``.onnx`` ...): edgernn
            writes ``.npz`` only (ONNX: ``edgernn.onnx.export``).
        """
        from .saving import save_model

        return save_model(self, path)

    def __repr__(self):
        return f"<Sequential name={self.name!r} layers={len(self._layers)} built={self.built}>"


# ---- argument checks ----------------------------------------------------------------------------
def _check_shape(X, want, where):
    """``X`` is a batch of samples of shape ``want`` (None: any size)."""
    if X.ndim != len(want) + 1 or any(w is not None and s != w for s, w in zip(X.shape[1:], want, strict=True)):
        exp = "(batch, " + ", ".join("time" if w is None else str(w) for w in want) + ")"
        raise ValueError(f"{where}: expected input of shape {exp}, got {X.shape}")


def _prepare_array(x, lengths, where, dtype, int_input):
    """One input: an array, or a list of sequences of different lengths (padded here, their lengths
    returned) -> (X (N, ...), lengths (N,) int64 or None, ragged: bool)."""
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
    if int_input:
        if X.dtype.kind == "f" and not np.array_equal(X, np.round(X)):
            raise ValueError(f"{where}: the model starts with Embedding and expects integer token ids")
        X = X.astype(np.int64, copy=False)
    else:
        X = X.astype(dtype, copy=False)
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"{where}: empty input (shape {X.shape})")
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.dtype.kind not in "iu" or lengths.shape != (X.shape[0],):
            raise ValueError(f"lengths: expected {X.shape[0]} integers, got shape {lengths.shape} "
                             f"dtype {lengths.dtype}")
        if lengths.size and (lengths.min() < 0 or (X.ndim >= 2 and lengths.max() > X.shape[1])):
            raise ValueError(f"lengths: values must be in [0, {X.shape[1] if X.ndim >= 2 else 0}]")
        lengths = lengths.astype(np.int64)
    return X, lengths, ragged


def _check_int(value, name, minimum=None):
    """``value`` as an int, or TypeError/ValueError naming ``name`` (no silent truncation of 2.7)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_verbose(verbose):
    if verbose == "auto":
        return "auto"
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    if isinstance(verbose, (int, np.integer)) and int(verbose) in (0, 1, 2):
        return int(verbose)
    raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")


def _check_split(validation_split):
    if validation_split is None:
        return 0.0
    if isinstance(validation_split, (bool, np.bool_)) or not isinstance(validation_split, (int, float, np.integer,
                                                                                            np.floating)):
        raise TypeError(f"validation_split must be a number in [0, 1), got {validation_split!r} "
                        f"({type(validation_split).__name__})")
    v = float(validation_split)
    if not 0.0 <= v < 1.0:  # also refuses NaN
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
    return v


def _check_class_weight(class_weight):
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{class index: weight}}, got {type(class_weight).__name__}")
    out = {}
    for k, v in class_weight.items():
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or int(k) < 0:
            raise ValueError(f"class_weight: keys must be class indices (integers >= 0), got {k!r}")
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(v)) or float(v) < 0:
            raise ValueError(f"class_weight: the weight of class {k} must be a finite number >= 0, got {v!r}")
        out[int(k)] = float(v)
    return out


# ---- divergence ----------------------------------------------------------------------------------
class _DivergenceGuard:
    """Non-finite losses, and losses ``factor`` times the first loss of the fit (or more)."""

    def __init__(self, factor):
        self.factor = factor
        self.ref = None

    def check_loss(self, loss):
        if not math.isfinite(loss):
            raise _Diverged(f"the loss became {loss}")
        if self.factor is None:
            return
        if self.ref is None:
            self.ref = max(abs(loss), 1e-6)
        elif loss > self.factor * self.ref:
            raise _Diverged(f"the loss exploded to {loss:.3g}, {loss / self.ref:.2g} times the first batch's "
                            f"{self.ref:.3g} (divergence_factor={self.factor:g})")


# ---- kernel warm-up ------------------------------------------------------------------------------
_WARM: set = set()  # (cells..., dtype) of the fits whose kernels are compiled in this process


def _kernels_cached():
    """False when numba has no cache yet for some of edgernn's kernels (they will be compiled),
    True when it has, None when unknown."""
    try:
        # inline="always" helpers are compiled into their callers, never cached on their own
        disp = [f for name, mod in list(sys.modules.items()) if name.startswith("edgernn.") and mod is not None
                for f in list(vars(mod).values()) if hasattr(f, "_cache") and hasattr(f, "signatures")
                and getattr(f, "targetoptions", {}).get("inline") != "always"]
        if not disp:
            return None
        return all(f.signatures or os.path.exists(f._cache._cache_file._index_path) for f in disp)
    except Exception:  # noqa: BLE001 - numba internals: only decides whether to show a message
        return None


# ---- batch sources -------------------------------------------------------------------------------
class _Prepared(tuple):
    """Validation arrays already checked (from validation_split)."""


def _is_batch_source(x):
    """A generator / iterator or a Keras Sequence-like object (not an array, list or tuple)."""
    if x is None or isinstance(x, (np.ndarray, list, tuple, str, bytes, dict)) or np.isscalar(x):
        return False
    if hasattr(x, "__next__"):
        return True
    return hasattr(x, "__getitem__") and hasattr(x, "__len__") and not hasattr(x, "__array__") \
        and not hasattr(x, "__array_interface__")


def _iterate_source(src, steps, where, order=None):
    """Items of a generator / Sequence: ``steps`` of them (default: all / until exhausted)."""
    if hasattr(src, "__next__"):
        for k, item in enumerate(src):
            yield item
            if steps is not None and k + 1 >= steps:
                return
        return
    n = len(src)
    count = n if steps is None else steps
    for k in range(count):
        i = k % n if n else k
        yield src[int(order[i]) if order is not None else i]


class _ArrayBatches:
    """Batches ``(x, y, lengths, sample_weight)`` of checked arrays."""

    is_source = False
    where = "x"

    def __init__(self, model, X, Y, L, W, batch_size, shuffle, rng, steps_per_epoch, trim=True, big=False):
        self.model, self.X, self.Y, self.L, self.W = model, X, Y, L, W
        self.batch_size, self.shuffle, self.rng = batch_size, shuffle, rng
        self.big = big  # evaluation: the model's default chunking
        N = X.shape[0]
        self.trim = trim and isinstance(L, np.ndarray) and isinstance(X, np.ndarray) and not model._stateful()
        self.has_time = Y.ndim >= 3 or (model.loss.sparse and Y.ndim >= 2)
        self.steps_per_epoch = steps_per_epoch
        self.steps = steps_per_epoch or (len(model._batches(N, batch_size)) if big else
                                         math.ceil(N / batch_size))
        self._pending = []  # batches of the current pass (steps_per_epoch continues passes across epochs)

    def peek(self):
        return self._take(slice(0, min(self.X.shape[0], self.batch_size or 1)))

    def _pass(self):
        N = self.X.shape[0]
        if self.big:
            return list(self.model._batches(N, self.batch_size))
        order = self.rng.permutation(N) if self.shuffle else None
        sls = [slice(b * self.batch_size, min(N, (b + 1) * self.batch_size))
               for b in range(math.ceil(N / self.batch_size))]
        return [order[sl] if order is not None else sl for sl in sls]

    def _take(self, idx):
        xb, yb = self.X[idx], self.Y[idx]
        lb = None if self.L is None else self.L[idx]
        wb = None if self.W is None else self.W[idx]
        if self.trim:  # drop the padding beyond this batch's longest sample
            Tb = max(1, int(lb.max()))
            if Tb < xb.shape[1]:
                xb = xb[:, :Tb]
                if self.has_time:
                    yb = yb[:, :Tb]
                    if wb is not None and wb.ndim >= 2:
                        wb = wb[:, :Tb]
        return xb, yb, lb, wb

    def epoch(self):
        if self.steps_per_epoch is None:
            for idx in self._pass():
                yield self._take(idx)
            return
        for _ in range(self.steps_per_epoch):
            if not self._pending:
                self._pending = self._pass()
            yield self._take(self._pending.pop(0))


class _SourceBatches:
    """Batches from a generator / iterator or a Sequence-like object, checked one by one."""

    is_source = True

    def __init__(self, model, src, steps, shuffle, rng, class_weight, where):
        self.model, self.src, self.shuffle, self.rng = model, src, shuffle, rng
        self.class_weight, self.where = class_weight, where
        self.iterator = hasattr(src, "__next__")
        if not self.iterator and len(src) == 0:
            raise ValueError(f"{where}: the Sequence is empty (len 0)")
        self.steps_arg = steps
        self.steps = steps if steps is not None else (None if self.iterator else len(src))
        self._buffer = []

    def _prepare(self, item):
        where = self.where
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(f"{where}: each batch must be a tuple (x, y) or (x, y, sample_weight), "
                             f"got {type(item).__name__}" + (f" of length {len(item)}" if isinstance(item, (tuple, list))
                                                             else ""))
        m = self.model
        X, L, _ = m._prepare_x(item[0], None, f"{where} batch x")
        Y = m._prepare_y(item[1], X, L, f"{where} batch y")
        m._check_finite(X, f"{where} batch x")
        m._check_finite(Y, f"{where} batch y")
        W = None
        if len(item) == 3 and item[2] is not None:
            W = m._prepare_weights(item[2], Y, f"{where} batch sample_weight")
        if self.class_weight is not None:
            cw = m._class_weights(Y, self.class_weight)
            W = cw if W is None else W.reshape(W.shape + (1,) * (cw.ndim - W.ndim)) * cw
        return X, Y, L, W

    def peek(self):
        if self.iterator:
            if not self._buffer:
                try:
                    self._buffer.append(next(self.src))
                except StopIteration:
                    return None
            item = self._buffer[0]
        else:
            item = self.src[0]
        return self._prepare(item)

    def epoch(self):
        if self.iterator:
            count = 0
            while self._buffer and (self.steps is None or count < self.steps):
                count += 1
                yield self._prepare(self._buffer.pop(0))
            left = None if self.steps is None else self.steps - count
            if left is None or left > 0:
                for item in _iterate_source(self.src, left, self.where):
                    yield self._prepare(item)
            return
        n = len(self.src)
        order = self.rng.permutation(n) if (self.shuffle and self.rng is not None) else None
        for item in _iterate_source(self.src, self.steps, self.where, order):
            yield self._prepare(item)
        if hasattr(self.src, "on_epoch_end"):
            self.src.on_epoch_end()


def _first_shape(shape):
    return shape[0] if isinstance(shape, list) else shape


def __getattr__(name):
    if name == "Model":  # edgernn.models.Model (defined in edgernn.graph, which builds on Sequential)
        from .graph import Model

        return Model
    raise AttributeError(f"module 'edgernn.models' has no attribute {name!r}")
