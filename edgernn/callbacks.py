"""Training callbacks: History, EarlyStopping, ModelCheckpoint, LearningRateScheduler, ProgressBar.

A callback sees ``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``,
``on_batch_end(batch, logs)``, ``on_epoch_end(epoch, logs)`` and ``on_train_end(logs)``;
``self.model`` is the model being trained and setting ``model.stop_training = True`` ends
training after the current epoch.

Divergence handling is built into ``fit`` (no callback needed): when the loss, a gradient or
a weight becomes NaN or inf, or the loss explodes (``Sequential.divergence_factor`` times the
first batch loss), training stops, the last good weights are put back and ``TrainingDiverged``
is raised, naming the epoch and batch. Checked before and after every update and at the end.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
import time
import warnings

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler",
           "ReduceLROnPlateau", "ProgressBar", "TrainingDiverged"]

logger = logging.getLogger("edgernn")


class TrainingDiverged(FloatingPointError, RuntimeError):
    """The loss, a gradient or a weight became NaN/inf (or the loss exploded) during ``fit``;
    the model holds the last good weights.

    Attributes
    ----------
    epoch, batch : int
        Where it happened (0-based).
    history : History
        What was recorded before.
    """

    def __init__(self, message, epoch=None, batch=None, history=None):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.history = history


class Callback:
    """Base class; override the hooks you need."""

    def __init__(self):
        self.model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class CallbackList:
    """Calls each hook on every callback in order."""

    def __init__(self, callbacks, model):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args, **kw):
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kw)

        return call


class History(Callback):
    """Records the logs of each epoch: ``history.history["loss"]`` is a list, one per epoch.

    ``fit`` also sets ``train_seconds`` (the epochs' wall time) and ``compile_seconds`` (time
    spent compiling edgernn's kernels for the first time in this process, before training and
    not included in ``train_seconds``).
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []
        self.train_seconds = 0.0  # wall time of the epochs (set by fit)
        self.compile_seconds = 0.0  # first-time kernel compilation before training (set by fit)

    def on_train_begin(self, logs=None):
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _better(mode, monitor):
    if mode == "auto":
        mode = "max" if ("acc" in monitor) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs, e.g. ``"val_loss"`` (default) or ``"loss"``.
    min_delta : float
    patience : int
    mode : {"auto", "min", "max"}
    baseline : float, optional
        Stop if the monitor does not beat this.
    restore_best_weights : bool
        At the end, put back the weights of the best epoch.
    start_from_epoch : int
        Epochs to wait before monitoring.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _better(mode, monitor)
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)

    def _improved(self, value, ref):
        if ref is None:
            return True
        if self.mode == "min":
            return value < ref - self.min_delta
        return value > ref + self.min_delta

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = None
        self.best = self.baseline
        self.best_weights = None
        self.best_epoch = None
        self._warned = False

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            if not self._warned:
                warnings.warn(f"EarlyStopping: monitored metric {self.monitor!r} is not available; "
                              f"available: {sorted(logs or {})}", RuntimeWarning, stacklevel=2)
                self._warned = True
            return
        if epoch < self.start_from_epoch:
            return
        if self._improved(value, self.best):
            self.best = value
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch is not None and self.verbose:
            logger.info("EarlyStopping: stopped at epoch %d", self.stopped_epoch + 1)
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (atomically, ``model.save``) after each epoch, or only when it improved.

    Parameters
    ----------
    filepath : str
        May contain ``{epoch}`` and log keys, e.g. ``"ckpt-{epoch:02d}-{val_loss:.4f}.npz"``
        (epoch is 1-based, as Keras).
    monitor : str
    save_best_only : bool
    mode : {"auto", "min", "max"}
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto", verbose=0):
        super().__init__()
        self.filepath = str(filepath)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = _better(mode, monitor)
        self.verbose = verbose
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                warnings.warn(f"ModelCheckpoint: monitored metric {self.monitor!r} is not available; "
                              "saving anyway", RuntimeWarning, stacklevel=2)
            else:
                better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
                if not better:
                    return
                self.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self.model.save(path)
        if self.verbose:
            logger.info("ModelCheckpoint: saved %s", path)


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of each epoch.

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch)`` or ``schedule(epoch, lr)`` -> new learning rate (epoch 0-based).
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose
        try:
            self._two = len(inspect.signature(schedule).parameters) >= 2
        except (TypeError, ValueError):
            self._two = True

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = opt.current_learning_rate()
        new = self.schedule(epoch, lr) if self._two else self.schedule(epoch)
        new = float(new)
        if not math.isfinite(new) or new < 0:
            raise ValueError(f"LearningRateScheduler: schedule returned an invalid learning rate {new!r}")
        opt.learning_rate = new
        if self.verbose:
            logger.info("epoch %d: learning rate %g", epoch + 1, new)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self.model.optimizer.current_learning_rate()


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving (Keras).

    Parameters
    ----------
    monitor : str
        A key of the epoch logs, default ``"val_loss"``.
    factor : float in (0, 1)
    patience : int
        Epochs without improvement before reducing.
    mode : {"auto", "min", "max"}
    min_delta : float
        Smallest change that counts as an improvement.
    cooldown : int
        Epochs to wait after a reduction before counting again.
    min_lr : float
        Lower bound of the learning rate.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, **kwargs):
        super().__init__()
        if kwargs:
            raise TypeError(f"ReduceLROnPlateau: unexpected arguments {sorted(kwargs)}")
        factor = float(factor)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor}")
        self.monitor = monitor
        self.factor = factor
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _better(mode, monitor)
        self.min_delta = abs(float(min_delta))
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self._reset()

    def _reset(self):
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0
        self._warned = False

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        opt = self.model.optimizer
        value = logs.get(self.monitor)
        if value is None:
            if not self._warned:
                warnings.warn(f"ReduceLROnPlateau: monitored metric {self.monitor!r} is not available; "
                              f"available: {sorted(logs)}", RuntimeWarning, stacklevel=2)
                self._warned = True
            logs["lr"] = opt.current_learning_rate()
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        improved = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                         else value > self.best + self.min_delta)
        if improved:
            self.best = value
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                if callable(opt.learning_rate):
                    raise ValueError("ReduceLROnPlateau: the optimizer's learning_rate is a schedule; "
                                     "give it a float learning rate")
                old = opt.current_learning_rate()
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    opt.learning_rate = new
                    if self.verbose:
                        logger.info("epoch %d: ReduceLROnPlateau reducing learning rate to %g", epoch + 1, new)
                    self.cooldown_counter = self.cooldown
                    self.wait = 0
        logs["lr"] = opt.current_learning_rate()


def _fmt_logs(logs):
    return " - ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in logs.items())


class ProgressBar(Callback):
    """Progress on stderr, as Keras' ``verbose``.

    ``verbose="auto"`` or 1: a live bar when the stream is a terminal, one line per epoch
    otherwise (log files, CI, ``nohup``, notebooks, whose streams are not TTYs); 2: one line
    per epoch; 0: nothing.

    Parameters
    ----------
    verbose : {"auto", 0, 1, 2}
    stream : file, optional
        Defaults to ``sys.stderr`` (looked up at use time).
    interval : float
        Minimum seconds between redraws of the bar.
    """

    def __init__(self, verbose=1, stream=None, interval=0.1, width=30):
        super().__init__()
        self.verbose = 1 if verbose == "auto" else int(verbose)
        self.stream = stream
        self.interval = float(interval)
        self.width = int(width)

    def _out(self):
        return self.stream if self.stream is not None else sys.stderr

    def _live(self):
        if self.verbose != 1:
            return False
        isatty = getattr(self._out(), "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # closed stream
            return False

    def message(self, text):
        """Write one line (e.g. "compiling kernels ...") unless silent."""
        if self.verbose:
            self._write(text + "\n")

    def on_train_begin(self, logs=None):
        self.epochs = self.model._fit_params.get("epochs", 1)
        self.steps = self.model._fit_params.get("steps", 0)

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._epoch = epoch
        if self._live():
            self._write(f"Epoch {epoch + 1}/{self.epochs}\n")

    def _write(self, text):
        out = self._out()
        out.write(text)
        out.flush()

    def on_batch_end(self, batch, logs=None):
        if not self._live():
            return
        now = time.perf_counter()
        done = batch + 1
        self._done = done
        if now - self._last < self.interval and (self.steps is None or done < self.steps):
            return
        if self.steps is None:  # a generator of unknown length: a counter, no bar
            self._last = now
            self._write(f"\r{done} steps - {now - self._t0:.0f}s - {_fmt_logs(logs or {})}\033[K")
            return
        self._last = now
        frac = done / max(self.steps, 1)
        filled = int(self.width * frac)
        bar = "=" * max(filled - 1, 0) + (">" if filled < self.width else "=") + "." * (self.width - filled)
        elapsed = now - self._t0
        eta = elapsed / done * (self.steps - done)
        n = len(str(self.steps))
        self._write(f"\r{done:>{n}}/{self.steps} [{bar}] - ETA: {eta:.0f}s - {_fmt_logs(logs or {})}\033[K")

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._t0
        if self._live():
            steps = self.steps if self.steps is not None else getattr(self, "_done", 0)
            n = len(str(steps))
            self._write(f"\r{steps:>{n}}/{steps} [{'=' * self.width}] - {elapsed:.1f}s - "
                        f"{_fmt_logs(logs or {})}\033[K\n")
        elif self.verbose:
            self._write(f"Epoch {epoch + 1}/{self.epochs} - {elapsed:.1f}s - {_fmt_logs(logs or {})}\n")
