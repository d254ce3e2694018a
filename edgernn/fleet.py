"""Fleets: one small model per series (sensor, machine, customer), trained in parallel on Dask.

A fleet is one model definition applied to many named data sets. ``fit`` trains one model
per key on a ``dask.distributed`` cluster (a ``LocalCluster`` on this machine by default, or
any ``Client``) and returns a :class:`Fleet`: the trained models, their histories and
metrics, and a record of every key that failed. One bad series never stops the others.

>>> from edgernn import fleet
>>> from edgernn.forecast import ForecastConfig
>>> cfg = ForecastConfig(cell="gru", units=(16,), dropout=0.0, epochs=20, season=24)
>>> f = fleet.fit(cfg, {"pump-1": series1, "pump-2": "data/pump-2.csv"})  # doctest: +SKIP
>>> f.metrics["pump-1"]["rmse"], f.failures                             # doctest: +SKIP
>>> f.save("pumps/"); f = fleet.load("pumps/"); f.export_onnx("pumps-onnx/")  # doctest: +SKIP

Model definitions
-----------------
``build`` is either

- a callable returning a compiled ``Sequential``. It may take keyword arguments ``key``
  (the data set's key) and ``seed``; pass ``seed`` on to ``Sequential(seed=seed)`` for a
  reproducible fleet. The data of each key is ``(x, y)`` (arrays as ``Sequential.fit``
  takes them), or anything that ``prepare(item)`` turns into ``(x, y)`` on the worker.
  The callable may also return a ``ForecastConfig`` (one per key: e.g. each sensor's own
  season), which is then used as below;
- or a :class:`edgernn.forecast.ForecastConfig`: each key's data is one series (a 1-D array,
  or the path of a CSV file read on the worker) trained with ``edgernn.forecast.fit_forecaster``
  (windows relative to the last value, split by time, scale fitted on the training part).
  The metrics are the one-step test RMSE and the seasonal-naive baseline's RMSE.

DataFrames
----------
``datasets`` may also be a Dask DataFrame in long format (one row per time step and series)
with ``key=`` naming the series column: ``fit(cfg, readings, client, key="sensor",
time="time", column="value")``. The frame is persisted on the cluster with its row order as
a column; if some key's rows lie in several partitions it is shuffled on the key column there;
then one small task per key selects that key's rows (sorted by ``time``, else in the frame's
order) on the worker that holds them, and the key's training task depends on it, so Dask runs
it there. Only the list of keys comes to the client. A ForecastConfig trains on the
``column`` values; a model builder needs ``prepare`` (the key's rows, a pandas DataFrame
without the key column -> ``(x, y)``). ``Fleet.predict``/``evaluate``/``forecast`` take frames
the same way. A pandas DataFrame is grouped on the client. edgernn never imports pandas or
``dask.dataframe`` (the frames are duck-typed): whoever has a Dask DataFrame has them.

Seeds: key ``k`` trains with ``key_seed(seed, k)`` (the ``seed`` given to ``build``, to
``Sequential.fit`` and to ``ForecastConfig.seed``), so a fleet gives the same models as
training the keys one by one with those seeds, whatever the cluster.

Workers, threads and numba
--------------------------
- Parallelism comes from processes: each task trains its model with edgernn limited to one
  thread (``edgernn.set_num_threads(1)`` inside the task; the worker process stays at one
  thread afterwards, which saves setting it again for every task). The default cluster has
  one single-threaded worker process per core. On a cluster of threaded workers
  (``processes=False``) the tasks run in your process and set its thread count to one.
- The jitted kernels live in importable modules (``edgernn._kernels`` ...). Tasks are
  functions of this module, which Dask pickles by reference, never by value; each worker
  imports edgernn and loads the compiled kernels from numba's on-disk cache (compiling them
  once per machine when the cache is empty). ``fit`` warms every worker once with
  ``client.run`` (one training step of the fleet's model on dummy data) and records what
  that cost in ``Fleet.info["warmup"]``. Workers must be able to import edgernn (installed,
  or on ``PYTHONPATH``). ``build`` and ``prepare`` must be plain Python, not numba functions.

Failures and retries
--------------------
An exception while loading, preparing or training one key is recorded in
``Fleet.failures[key]`` (type, message, traceback, attempts) and the other keys go on.
Transient errors (``ConnectionError``, ``TimeoutError``, ``BlockingIOError``,
``InterruptedError``, ``MemoryError`` by default; ``transient=`` to change) are retried up to
``retries`` times; the same seed gives the same model on a retry. When a worker dies, Dask
itself runs its tasks again elsewhere; a task that keeps killing workers (Dask's
``KilledWorker``) counts as a transient error here.

Results
-------
Trained models come back to the client as the bytes of their ``.npz`` files (about 10 KB for
a GRU(8) forecaster), with their records; so the client holds the whole fleet in memory.

Files
-----
``Fleet.save(dir)`` writes one edgernn ``.npz`` model file per key (no pickle) and
``index.json`` (keys, files with their SHA-256, metrics, histories, failures). Every file is
written atomically (temporary file, then rename); model files are named by content, so a
fleet saved over an older one is replaced by the rename of the index: a crash leaves either
the old fleet or the new one, never a mix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Mapping

import numpy as np

__all__ = ["fit", "load", "Fleet", "FleetError", "Progress", "ProgressDisplay", "key_seed", "read_csv_column",
           "INDEX_FORMAT_VERSION"]

logger = logging.getLogger("edgernn.fleet")

INDEX_FORMAT_VERSION = 1
_INDEX_FORMAT = "edgernn.fleet"
_INDEX = "index.json"
DEFAULT_TRANSIENT = (ConnectionError, TimeoutError, BlockingIOError, InterruptedError, MemoryError)
_perf_counter = time.perf_counter  # (fit's argument ``time`` hides the module there)
_TARGET_TASK_SECONDS = 0.2  # chunksize="auto": keys per task so that a task takes about this long
_MAX_AUTO_CHUNK = 64


class FleetError(RuntimeError):
    """Some keys of a fleet-wide ``predict``/``evaluate`` failed.

    Attributes
    ----------
    results : dict
        Key -> result for the keys that succeeded.
    errors : dict
        Key -> ``{"type", "message", "traceback"}`` for the keys that failed.
    """

    def __init__(self, message, results, errors):
        super().__init__(message)
        self.results = results
        self.errors = errors


# -------------------------------------------------------------------------------------------
# helpers shared by the client and the workers
# -------------------------------------------------------------------------------------------
def _check_key(key, where="datasets"):
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
        raise TypeError(f"{where}: keys must be str or int, got {type(key).__name__} {key!r}")
    return int(key) if isinstance(key, np.integer) else key


def key_seed(seed, key):
    """The seed of key ``key`` in a fleet trained with base seed ``seed``.

    Stable across processes, machines and Python versions (SHA-256 of the key, not ``hash``).

    Parameters
    ----------
    seed : int
    key : str or int

    Returns
    -------
    int
        In ``[0, 2**32)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    key = _check_key(key, "key")
    tag = ("s:" + key if isinstance(key, str) else f"i:{key}").encode()
    words = np.frombuffer(hashlib.sha256(tag).digest()[:8], dtype="<u4")
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *map(int, words)]).generate_state(1)[0])


def _is_jitted(fn):
    return hasattr(fn, "py_func") and hasattr(fn, "signatures")


def read_csv_column(path, column=None):
    """One numeric column of a CSV file as float64; empty or non-numeric cells become NaN.

    Parameters
    ----------
    path : str or PathLike
        A CSV file (``.gz`` is decompressed), with or without a header row.
    column : str or int, optional
        Header name or 0-based index; default: the last column.

    Returns
    -------
    ndarray (N,)
    """
    import csv
    import gzip

    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if not rows:
        raise ValueError(f"{path}: empty CSV file")

    def num(s):
        try:
            return float(s)
        except ValueError:
            return None

    header = None
    if all(num(c) is None for c in rows[0]) or (column is not None and not isinstance(column, int)):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if column is None:
        idx = len(header if header is not None else rows[0]) - 1 if (header or rows) else 0
    elif isinstance(column, int):
        idx = column
    else:
        if header is None or column not in header:
            raise ValueError(f"{path}: no column named {column!r} (header: {header})")
        idx = header.index(column)
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if idx < len(r):
            v = num(r[idx])
            out[i] = np.nan if v is None else v
    return out


def _scratch_dir():
    """Where model files pass through on their way to bytes: RAM (/dev/shm) when there is one.

    ``save_model`` takes a path and fsyncs the file and its directory (durability for real
    saves); on a disk that costs ~10 ms per model, more than training a tiny one.
    """
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def _to_bytes(model):
    """A model's ``.npz`` file (``edgernn.saving`` format) as bytes."""
    from .saving import save_model

    with tempfile.TemporaryDirectory(prefix="edgernn-fleet-", dir=_scratch_dir()) as d:
        path = os.path.join(d, "model.npz")
        save_model(model, path)
        with open(path, "rb") as fh:
            return fh.read()


def _from_bytes(blob, compile=True):
    """Inverse of ``_to_bytes`` (``edgernn.load_model`` takes a path: go through a temp file)."""
    from .saving import load_model

    with tempfile.TemporaryDirectory(prefix="edgernn-fleet-", dir=_scratch_dir()) as d:
        path = os.path.join(d, "model.npz")
        with open(path, "wb") as fh:
            fh.write(blob)
        return load_model(path, compile=compile)


def _one_thread():
    """Keep edgernn at one thread in this (worker) process: processes give the parallelism.

    Set once and left there: ``set_num_threads`` makes edgernn look for BLAS libraries again
    (tens of ms), which must not happen for every task.
    """
    from ._config import get_num_threads, set_num_threads

    if get_num_threads() != 1:
        set_num_threads(1)


@dataclasses.dataclass
class _Spec:
    """What every task needs: shipped once per task (small; functions by reference when importable)."""

    kind: str  # "forecast" | "model"
    build: object
    prepare: object = None
    fit_kwargs: dict = dataclasses.field(default_factory=dict)
    transient: object = DEFAULT_TRANSIENT
    column: object = None
    frame: object = None  # _FrameSpec when the data came from a DataFrame


def _call_build(build, key, seed):
    import inspect

    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):
        params = {}
    kw = {}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if "key" in params or var_kw:
        kw["key"] = key
    if "seed" in params or var_kw:
        kw["seed"] = seed
    model = build(**kw)
    from .forecast import ForecastConfig
    from .models import Sequential

    if isinstance(model, ForecastConfig):
        return dataclasses.replace(model, seed=seed)
    if not isinstance(model, Sequential):
        raise TypeError(f"build: expected it to return a Sequential or a ForecastConfig, got {type(model).__name__}")
    if model.loss is None:
        raise ValueError("build: the model it returns must be compiled (model.compile(loss=..., optimizer=...))")
    return model


def _series(item, spec):
    if isinstance(item, (str, os.PathLike)):
        item = read_csv_column(item, spec.column)
    v = np.asarray(item, dtype=np.float64)
    if v.ndim == 2 and 1 in v.shape:
        v = v.ravel()
    if v.ndim != 1:
        raise ValueError(f"expected one series (1-D array), got shape {v.shape}")
    return v


def _history_dict(history):
    h = getattr(history, "history", None) or {}
    return {k: [float(x) for x in vals] for k, vals in h.items()}


def _train_one(spec, key, item, seed):
    """Train one key; returns (record, model bytes). Runs on a worker."""
    from .forecast import ForecastConfig

    _raise_data_error(item)
    if spec.kind == "forecast":
        cfg = dataclasses.replace(spec.build, seed=seed)
    else:
        cfg = _call_build(spec.build, key, seed)
        if isinstance(cfg, ForecastConfig) and spec.fit_kwargs:
            raise ValueError("build returned a ForecastConfig: set epochs and batch_size in it, not in fit()")
    if isinstance(cfg, ForecastConfig):
        from .forecast import fit_forecaster

        if isinstance(item, (str, os.PathLike)):
            item = read_csv_column(item, spec.column)
        elif spec.frame is not None and _is_frame(item):  # a key's rows: its value column
            item = _frame_series(item, spec.frame)
        if spec.prepare is not None:
            item = spec.prepare(item)
        model, rep = fit_forecaster(_series(item, spec), cfg, verbose=0)
        metrics = {"rmse": rep["rmse"], "baseline_rmse": rep["baseline_rmse"],
                   "ratio": rep["rmse"] / rep["baseline_rmse"] if rep["baseline_rmse"] > 0 else math.inf}
        extra = {"forecast": {"test_index": [int(i) for i in rep["test_index"]],
                              "y_true": [float(x) for x in rep["y_true"]],
                              "y_pred": [float(x) for x in rep["y_pred"]],
                              "baseline_pred": [float(x) for x in rep["baseline_pred"]],
                              "baseline": rep["baseline"]}}
        history = rep["history"]
    else:
        if spec.prepare is not None:
            item = spec.prepare(item)
        if isinstance(item, (str, os.PathLike)):
            raise TypeError(f"data for key {key!r} is a path: give prepare= to turn it into (x, y)")
        if _is_frame(item):
            raise TypeError(f"data for key {key!r} is its rows of the DataFrame: give prepare= to turn them "
                            "into (x, y)")
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"data for key {key!r}: expected (x, y), got {type(item).__name__}")
        model = cfg
        kwargs = dict(spec.fit_kwargs)
        history = model.fit(item[0], item[1], verbose=0, seed=seed, **kwargs)
        metrics, extra = {}, {}
    hist = _history_dict(history)
    metrics.update({k: v[-1] for k, v in hist.items() if v and k not in metrics})
    record = {"metrics": metrics, "history": hist, "epochs": len(next(iter(hist.values()), [])), **extra}
    return record, _to_bytes(model)


def _error_info(exc):
    return {"type": type(exc).__name__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]}


def _is_transient(spec, exc):
    t = spec.transient
    if t is None:
        return False
    if isinstance(t, type) or isinstance(t, tuple):
        return isinstance(exc, t)
    return bool(t(exc))


def _fit_chunk(spec, items):
    """Task: train each ``(key, item, seed)`` of ``items`` in turn, one thread; never raises for one key.

    Returns
    -------
    list of (key, record, model bytes or None)
    """
    out = []
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = None
    _one_thread()
    for key, item, seed in items:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            record, blob = _train_one(spec, key, item, seed)
            record["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - isolate this key, report it
            record, blob = {"status": "failed", "error": _error_info(exc),
                            "transient": _is_transient(spec, exc)}, None
        record.update(seconds=time.perf_counter() - t0, cpu_seconds=time.thread_time() - c0,
                      worker=worker, pid=os.getpid())
        out.append((key, record, blob))
    return out


def _dummy_batch(model):
    """Zeros shaped for ``model`` (batch 2; a free time axis gets 8 steps), and matching targets."""
    shape = tuple(8 if d is None else d for d in model.input_shape)
    x = np.zeros((2,) + shape, dtype=np.int64 if model._int_input() else model.dtype)
    out = model._output_sample_shape()
    y = np.zeros((2,) + tuple(8 if d is None else d for d in out), dtype=model.dtype)
    if getattr(model.loss, "sparse", False):
        y = np.zeros(y.shape[:-1], dtype=np.int64)
    return x, y


def _warm_worker(spec, key, seed):
    """``client.run`` target: import edgernn, build the fleet's model, one training step and one
    prediction on dummy data (loads, or compiles, the kernels it needs). Returns the cost."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = {"pid": os.getpid()}
    try:
        _one_thread()
        from .forecast import ForecastConfig, build_model

        model = spec.build if spec.kind == "forecast" else _call_build(spec.build, key, seed)
        if isinstance(model, ForecastConfig):
            cfg = model
            model = build_model(cfg)
            model.compile(loss="mse", optimizer=cfg.optimizer)
        if model.built:
            x, y = _dummy_batch(model)
            model.train_on_batch(x, y)
            model.predict(x)
        res["error"] = None
    except Exception as exc:  # noqa: BLE001 - warm-up is best effort; the real tasks report errors
        res["error"] = f"{type(exc).__name__}: {exc}"
    res.update(seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
    return res


def _predict(blob, x, kwargs):
    return _from_bytes(blob, compile=False).predict(x, **kwargs)


def _evaluate(blob, xy, kwargs):
    if not isinstance(xy, (tuple, list)) or len(xy) != 2:
        raise TypeError(f"expected (x, y), got {type(xy).__name__}")
    return _from_bytes(blob).evaluate(xy[0], xy[1], return_dict=True, **kwargs)


def _forecast(blob, values):
    from .forecast import forecast_next

    return forecast_next(_from_bytes(blob, compile=False), values)


def _remote(fn, *args):
    """Task wrapper on a worker: one edgernn thread, then ``fn``."""
    _one_thread()
    for a in args:
        _raise_data_error(a)
    return fn(*args)


def _prepared(fn, prepare, blob, item, *args):
    """``fn(blob, prepare(item), *args)``: ``prepare`` runs where the task runs."""
    return fn(blob, prepare(item), *args)


# -------------------------------------------------------------------------------------------
# DataFrames: one key column, rows of every key grouped where they live
# -------------------------------------------------------------------------------------------
_ORDER = "__edgernn_row__"  # the frame's row order, kept through a shuffle


def _is_dask_frame(obj):
    return hasattr(obj, "npartitions") and hasattr(obj, "to_delayed") and hasattr(obj, "columns")


def _is_frame(obj):
    """A pandas or Dask DataFrame (duck-typed: edgernn never needs pandas itself)."""
    return _is_dask_frame(obj) or (hasattr(obj, "columns") and hasattr(obj, "groupby") and hasattr(obj, "iloc"))


@dataclasses.dataclass(frozen=True)
class _FrameSpec:
    """How a DataFrame becomes per-key data: the key column, the time column (rows are sorted by
    it, else kept in the frame's order), the value column (series), and whether to make series."""

    key: object
    time: object = None
    column: object = None
    series: bool = False

    def value_column(self, columns):
        if self.column is not None:
            return self.column
        rest = [c for c in columns if c not in (self.key, self.time, _ORDER)]
        if len(rest) != 1:
            raise ValueError(f"column: the DataFrame has {len(rest)} value columns {rest[:6]}; name the series "
                             "with column=")
        return rest[0]


def _frame_key(k, column):
    if isinstance(k, (np.floating, float)) and float(k).is_integer():
        raise TypeError(f"key column {column!r}: keys must be str or int, got float {k!r} (cast the column to int)")
    try:
        return _check_key(k.item() if isinstance(k, np.generic) else k, f"key column {column!r}")
    except TypeError:
        raise TypeError(f"key column {column!r}: keys must be str or int, got {type(k).__name__} {k!r}") from None


def _tag_order(frame, partition_info=None):
    """Add the row order (partition number, then position) as a column (map_partitions)."""
    n = 0 if partition_info is None else int(partition_info["number"])
    return frame.assign(**{_ORDER: np.arange(len(frame), dtype=np.int64) + (n << 40)})


def _partition_keys(frame, column):
    """The keys of one partition, in order of first appearance (runs on a worker)."""
    return [_frame_key(k, column) for k in frame[column].drop_duplicates().tolist()]


def _frame_rows(frame, fs: _FrameSpec, key):
    """The rows of ``key`` (pandas), in time order (else the frame's order); without the key column."""
    rows = frame[frame[fs.key] == key]
    by = ([fs.time] if fs.time is not None else []) + ([_ORDER] if _ORDER in rows.columns else [])
    if by:
        rows = rows.sort_values(by, kind="stable")
    return rows.drop(columns=[c for c in (fs.key, _ORDER) if c in rows.columns]).reset_index(drop=True)


def _frame_series(rows, fs: _FrameSpec):
    col = fs.value_column(list(rows.columns))
    if col not in rows.columns:
        raise ValueError(f"column: no column {col!r} in the DataFrame (columns: {list(rows.columns)[:10]})")
    return np.asarray(rows[col].to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


class _DataError:
    """A key's data could not be made on the worker: raised again when the key is used, so that
    it fails alone and for good (an exception in the task itself would count as a lost task)."""

    def __init__(self, exc):
        self.exc = exc


def _raise_data_error(item):
    if isinstance(item, _DataError):
        raise item.exc


def _frame_item(frame, fs: _FrameSpec, key):
    """One key's data from the partition (or frame) that holds its rows (runs on a worker)."""
    try:
        rows = _frame_rows(frame, fs, key)
        return _frame_series(rows, fs) if fs.series else rows
    except Exception as exc:  # noqa: BLE001 - reported with the key (see _DataError)
        return _DataError(exc)


def _check_frame_columns(frame, fs: _FrameSpec, where):
    cols = list(frame.columns)
    for name, col in (("key", fs.key), ("time", fs.time), ("column", fs.column)):
        if col is not None and col not in cols:
            raise ValueError(f"{where}: {name}={col!r} is not a column of the DataFrame (columns: {cols[:10]})")
    if fs.time is not None and fs.time == fs.key:
        raise ValueError(f"{where}: time and key name the same column {fs.key!r}")
    if fs.series:
        try:
            fs.value_column(cols)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


def _frame_datasets(frame, fs: _FrameSpec, client, where, info=None):
    """Key -> data for every key of ``frame``: local objects for a pandas DataFrame; for a Dask
    DataFrame, futures computed on the worker that holds each key's rows (nothing is collected
    to the client but the keys). Keys in order of first appearance in the frame.

    Dask: the frame is persisted with its row order as a column; when some key's rows lie in
    several partitions it is shuffled on the key column (rows of a key come together on one
    worker); then one small task per key selects its rows there (sorted by ``time``, else in
    the frame's order) and the key's training task depends on that result, so Dask runs it
    where the rows are.
    """
    if fs.key is None:
        raise ValueError(f"{where}: a DataFrame needs key= (the column that names each series)")
    _check_frame_columns(frame, fs, where)
    if not _is_dask_frame(frame):
        out = {}
        for k in frame[fs.key].drop_duplicates().tolist():
            k = _frame_key(k, fs.key)
            out[k] = _frame_item(frame, fs, k)
            _raise_data_error(out[k])  # here: on the client, at once
        return out
    if client is None:
        raise ValueError(f"{where}: a Dask DataFrame needs client= (the cluster that holds it)")
    token = uuid.uuid4().hex[:8]
    tagged = client.persist(frame.map_partitions(_tag_order))

    def partitions(df):
        # a fresh task name on every call: a name reused right after its futures were dropped may
        # still be known to the scheduler, which then returns the earlier result (the keys of the
        # frame before the shuffle: seen in CI as keys trained on another key's partition)
        name = uuid.uuid4().hex[:8]
        parts = client.compute(df.to_delayed())
        keys = client.gather([client.submit(_partition_keys, p, fs.key, pure=False,
                                            key=f"edgernn-fleet-keys-{name}-{i}") for i, p in enumerate(parts)])
        return parts, keys

    parts, keys_per_part = partitions(tagged)
    order, seen, spread = [], set(), False
    for ks in keys_per_part:
        for k in ks:
            if k in seen:
                spread = True
            else:
                seen.add(k)
                order.append(k)
    if info is not None:
        info.update(frame_partitions=len(parts), frame_shuffled=spread)
    if spread:  # rows of a key in several partitions: bring each key's rows together on one worker
        del parts
        parts, keys_per_part = partitions(client.persist(tagged.shuffle(on=fs.key)))
    del tagged
    found = [k for ks in keys_per_part for k in ks]
    if len(found) != len(set(found)) or set(found) != seen:  # never train a key on rows that are not its own
        raise RuntimeError(f"{where}: grouping the Dask DataFrame by {fs.key!r} gave keys {found[:8]} in "
                           f"{len(parts)} partitions for {len(seen)} keys; the cluster returned stale results")
    items, n = {}, 0
    for p, ks in zip(parts, keys_per_part, strict=True):
        for k in ks:
            items[k] = client.submit(_frame_item, p, fs, k, pure=False, key=f"edgernn-fleet-rows-{token}-{n}")
            n += 1
    return {k: items[k] for k in order}


def _default_client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


# -------------------------------------------------------------------------------------------
# progress
# -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Progress:
    """Where a fleet stands; passed to a ``progress`` callback after every finished task.

    Attributes
    ----------
    total, done, failed, retried : int
        Keys in all, trained, failed for good, retries so far.
    elapsed : float
        Seconds since the first task was submitted.
    eta : float or None
        Seconds left at the rate so far (None before the first result).
    dashboard : str or None
        Dask's dashboard link, when the cluster has one.
    last_key : str or int or None
        Key of the last result.
    """

    total: int
    done: int = 0
    failed: int = 0
    retried: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    dashboard: str | None = None
    last_key: object = None

    @property
    def finished(self):
        return self.done + self.failed

    def __str__(self):
        rate = self.finished / self.elapsed if self.elapsed > 0 else 0.0
        eta = "?" if self.eta is None else f"{self.eta:.0f}s"
        return (f"fleet: {self.finished}/{self.total} models ({self.done} done, {self.failed} failed, "
                f"{self.retried} retried) - {rate:.1f} models/s - ETA {eta}")


class ProgressDisplay:
    """The default fleet progress: a live line on a terminal (stderr), else a log line
    (``edgernn.fleet`` logger, INFO) every ``interval`` seconds and at the end.

    Parameters
    ----------
    stream : file, optional
        Default ``sys.stderr`` (looked up at use time).
    interval : float
        Minimum seconds between updates (terminal: 0.2 s is the default redraw rate).
    """

    def __init__(self, stream=None, interval=None):
        self.stream = stream
        self.interval = interval
        self._last = -math.inf
        self._started = False

    def _out(self):
        return self.stream if self.stream is not None else sys.stderr

    def _live(self):
        isatty = getattr(self._out(), "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:
            return False

    def __call__(self, p: Progress):
        live = self._live()
        if not self._started:
            self._started = True
            if p.dashboard:
                msg = f"fleet of {p.total} models; Dask dashboard: {p.dashboard}"
                if live:
                    self._out().write(msg + "\n")
                else:
                    logger.info("%s", msg)
        end = p.finished >= p.total
        interval = self.interval if self.interval is not None else (0.2 if live else 10.0)
        now = time.perf_counter()
        if not end and now - self._last < interval:
            return
        self._last = now
        if live:
            out = self._out()
            out.write("\r" + str(p) + "\033[K" + ("\n" if end else ""))
            out.flush()
        else:
            logger.info("%s", p)


# -------------------------------------------------------------------------------------------
# the fleet
# -------------------------------------------------------------------------------------------
def _slug(key):
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(key)).strip("._") or "key"
    return s[:40]


def _atomic_write(path, data: bytes):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=d)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


class Fleet:
    """Trained models by key, with their histories, metrics and the keys that failed.

    Made by :func:`fit` and :func:`load`; build one by hand from model files' bytes.

    Parameters
    ----------
    blobs : dict, optional
        Key (str or int) -> bytes of an edgernn ``.npz`` model file.
    records, failures, info : dict, optional
        See the attributes.
    kind : {"model", "forecast"}

    Attributes
    ----------
    kind : {"model", "forecast"}
        ``"forecast"`` when built from a ``ForecastConfig`` (then :meth:`forecast` works).
    metrics : dict
        Key -> dict of floats (final training logs; for forecasters ``rmse``,
        ``baseline_rmse`` and their ``ratio`` on the held-out test part).
    history : dict
        Key -> dict of per-epoch lists (``loss``, ...).
    records : dict
        Key -> everything recorded for it (``status``, ``seconds``, ``cpu_seconds``, ``worker``,
        ``attempts``; forecasters: the test forecasts under ``"forecast"``).
    failures : dict
        Key -> ``{"type", "message", "traceback", "attempts", "transient"}``.
    info : dict
        How the fleet was trained: workers, warm-up cost per worker, wall time, ...
    """

    def __init__(self, blobs=None, records=None, failures=None, kind="model", info=None):
        for k, b in (blobs or {}).items():
            _check_key(k, "blobs")
            if not isinstance(b, (bytes, bytearray)):
                raise TypeError(f"blobs: the model of key {k!r} must be the bytes of an .npz model file, "
                                f"got {type(b).__name__}")
        if kind not in ("model", "forecast"):
            raise ValueError(f"kind: expected 'model' or 'forecast', got {kind!r}")
        self._blobs = dict(blobs or {})
        self.records = dict(records or {})
        self.failures = dict(failures or {})
        self.kind = kind
        self.info = dict(info or {})

    # ---- access ---------------------------------------------------------------------------
    @property
    def keys(self):
        """Keys with a trained model, in the order of the input."""
        return list(self._blobs)

    @property
    def metrics(self):
        return {k: self.records[k].get("metrics", {}) for k in self._blobs}

    @property
    def history(self):
        return {k: self.records[k].get("history", {}) for k in self._blobs}

    def __len__(self):
        return len(self._blobs)

    def __contains__(self, key):
        return key in self._blobs

    def __iter__(self):
        return iter(self._blobs)

    def model(self, key, compile=True):
        """The model of ``key``, loaded from its saved bytes (a fresh ``Sequential`` each call)."""
        if key not in self._blobs:
            if key in self.failures:
                f = self.failures[key]
                raise KeyError(f"key {key!r} has no model: its training failed ({f['type']}: {f['message']})")
            raise KeyError(f"key {key!r} is not in this fleet")
        return _from_bytes(self._blobs[key], compile=compile)

    __getitem__ = model

    def model_bytes(self, key):
        """The ``.npz`` model file of ``key`` as bytes (what ``save`` writes)."""
        if key not in self._blobs:
            raise KeyError(f"key {key!r} has no model in this fleet")
        return self._blobs[key]

    def __repr__(self):
        return f"<Fleet kind={self.kind!r} models={len(self._blobs)} failed={len(self.failures)}>"

    # ---- fleet-wide inference -----------------------------------------------------------------
    def _check_data_keys(self, datasets, where):
        if not isinstance(datasets, Mapping):
            raise TypeError(f"{where}: datasets must be a mapping key -> data, got {type(datasets).__name__}")
        missing = [k for k in datasets if k not in self._blobs]
        if missing:
            raise KeyError(f"{where}: no model for keys {missing[:10]}" + (" ..." if len(missing) > 10 else ""))

    def _inputs(self, datasets, client, where, key, time, column=None, series=False, prepare=None):
        """(key -> data, client): a DataFrame grouped by ``key`` (Dask: on the cluster, with the
        default client when none is given), a mapping checked."""
        if prepare is not None and (not callable(prepare) or _is_jitted(prepare)):
            raise TypeError("prepare: expected a plain Python function item -> data")
        if _is_frame(datasets):
            if not series and prepare is None:
                raise ValueError(f"{where}: give prepare= to turn each key's rows (a pandas DataFrame) into the "
                                 "model's data")
            if _is_dask_frame(datasets) and client is None:
                client = _default_client()
            datasets = _frame_datasets(datasets, _FrameSpec(key, time, column, series), client, where)
        elif key is not None or time is not None:
            raise ValueError(f"{where}: key/time are only for a DataFrame")
        self._check_data_keys(datasets, where)
        return datasets, client

    def _map(self, fn, datasets, kwargs, client, where, prepare=None):
        results, errors = {}, {}
        if client is None:
            for k, item in datasets.items():
                try:
                    results[k] = fn(self._blobs[k], item if prepare is None else prepare(item), *kwargs)
                except Exception as exc:  # noqa: BLE001 - reported per key below
                    errors[k] = _error_info(exc)
        else:
            pre = () if prepare is None else (_prepared, fn, prepare)
            futs = {k: client.submit(_remote, *(pre or (fn,)), self._blobs[k], item, *kwargs, pure=False,
                                     key=f"edgernn-fleet-{where}-{uuid.uuid4().hex[:8]}-{i}")
                    for i, (k, item) in enumerate(datasets.items())}
            for k, f in futs.items():
                try:
                    results[k] = f.result()
                except Exception as exc:  # noqa: BLE001
                    errors[k] = _error_info(exc)
        if errors:
            first = next(iter(errors.items()))
            raise FleetError(f"{where}: {len(errors)} of {len(datasets)} keys failed, e.g. {first[0]!r}: "
                             f"{first[1]['type']}: {first[1]['message']}", results, errors)
        return results

    def predict(self, datasets, client=None, batch_size=None, *, key=None, time=None, prepare=None):
        """``model.predict(x)`` for every key.

        Parameters
        ----------
        datasets : mapping or DataFrame
            Key -> inputs ``x`` (N, T, F) of that key's model; or a Dask (or pandas) DataFrame
            with ``key=`` and ``prepare=`` (as in :func:`fit`: each key's rows are grouped where
            they live and ``prepare`` turns them into ``x`` there).
        client : dask.distributed.Client, optional
            Run on the cluster (one task per key); default: here, one key after the other (a
            Dask DataFrame: on Dask's default client).
        batch_size : int, optional
        key, time : str, optional
            DataFrames: the key column and the column that orders each key's rows.
        prepare : callable, optional
            ``prepare(item) -> x``, run where the task runs.

        Returns
        -------
        dict
            Key -> predictions.

        Raises
        ------
        KeyError
            A key has no model.
        FleetError
            Some keys failed; ``.results`` holds the others.
        """
        datasets, client = self._inputs(datasets, client, "predict", key, time, prepare=prepare)
        return self._map(_predict, datasets, ({"batch_size": batch_size},), client, "predict", prepare)

    def evaluate(self, datasets, client=None, batch_size=None, *, key=None, time=None, prepare=None):
        """``model.evaluate(x, y, return_dict=True)`` for every key of ``datasets`` (key -> (x, y));
        DataFrames as in :meth:`predict`, ``prepare`` returning ``(x, y)``."""
        datasets, client = self._inputs(datasets, client, "evaluate", key, time, prepare=prepare)
        return self._map(_evaluate, datasets, ({"batch_size": batch_size},), client, "evaluate", prepare)

    def forecast(self, series, client=None, *, key=None, time=None, column=None):
        """Forecasters: the value ``horizon`` steps after the end of each series (key -> values (N,),
        or a Dask / pandas DataFrame with ``key=``, ``time=`` and the value ``column=`` as in
        :func:`fit`).

        Returns
        -------
        dict
            Key -> float.
        """
        if self.kind != "forecast":
            raise ValueError("forecast: this fleet was not built from a ForecastConfig; use predict")
        series, client = self._inputs(series, client, "forecast", key, time, column, series=True)
        return self._map(_forecast, series, (), client, "forecast")

    # ---- files ------------------------------------------------------------------------------
    def save(self, directory):
        """Write the fleet to ``directory``: one ``.npz`` per model and ``index.json`` (atomic).

        Model files are named ``<key>-<sha256 prefix>.npz``; ``index.json`` is written last, by
        rename, and files of an older fleet in the same directory are removed after it.

        Returns
        -------
        str
            ``directory``.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        entries, keep = [], {_INDEX}
        for k, blob in self._blobs.items():
            digest = hashlib.sha256(blob).hexdigest()
            name = f"{_slug(k)}-{digest[:16]}.npz"
            path = os.path.join(directory, name)
            if not (os.path.isfile(path) and _sha256_file(path) == digest):
                _atomic_write(path, blob)
            keep.add(name)
            entries.append({"key": k, "file": name, "sha256": digest, "record": self.records.get(k, {})})
        failures = [{"key": k, **f} for k, f in self.failures.items()]
        index = {"format": _INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION, "kind": self.kind,
                 "models": entries, "failures": failures, "info": _jsonable(self.info)}
        _fsync_dir(directory)
        _atomic_write(os.path.join(directory, _INDEX), json.dumps(_jsonable(index), indent=1).encode())
        _fsync_dir(directory)
        for name in os.listdir(directory):  # files of a previous fleet saved here
            if name not in keep and re.fullmatch(r".+-[0-9a-f]{16}\.npz", name):
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass
        return directory

    def export_onnx(self, directory, streaming=False, verify=True, opset=None):
        """Export every model to ``directory/<key>.onnx`` (``edgernn.onnx.export``, atomic) and
        write ``onnx_index.json`` (key -> file).

        Parameters
        ----------
        directory : str or PathLike
        streaming : bool
            The single-step graph with explicit states (what a device runs sample by sample).
        verify : bool
            Check each file against onnxruntime before it replaces the target (needs onnxruntime).
        opset : int, optional

        Returns
        -------
        dict
            Key -> path of the ``.onnx`` file.
        """
        from . import onnx as eonnx

        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        paths, names = {}, set()
        for i, k in enumerate(self._blobs):
            name = _slug(k) + (".stream" if streaming else "") + ".onnx"
            if name in names:
                name = f"{_slug(k)}-{i}" + (".stream" if streaming else "") + ".onnx"
            names.add(name)
            path = os.path.join(directory, name)
            eonnx.export(self.model(k, compile=False), path, streaming=streaming, opset=opset, verify=verify)
            paths[k] = path
        idx = {"format": _INDEX_FORMAT + ".onnx", "streaming": bool(streaming),
               "models": [{"key": k, "file": os.path.basename(p)} for k, p in paths.items()]}
        _atomic_write(os.path.join(directory, "onnx_index.json"), json.dumps(idx, indent=1).encode())
        return paths


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else str(x)  # JSON has no inf/nan
    if x is None or isinstance(x, (str, int, bool)):
        return x
    return str(x)


def _unjson_floats(d):
    if isinstance(d, dict):
        return {k: _unjson_floats(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_unjson_floats(v) for v in d]
    if d in ("inf", "-inf", "nan"):
        return float(d)
    return d


def load(directory, verify=True):
    """Read a fleet written by :meth:`Fleet.save`.

    Parameters
    ----------
    directory : str or PathLike
    verify : bool
        Check every model file's SHA-256 against the index.

    Returns
    -------
    Fleet
        Models are loaded on access (``fleet.model(key)``).

    Raises
    ------
    FileNotFoundError
        No ``index.json`` or a model file is missing.
    ValueError
        Not a fleet index, a newer format version, or a file whose checksum does not match.
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, _INDEX)
    with open(path, "rb") as fh:
        try:
            index = json.loads(fh.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a valid fleet index ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != _INDEX_FORMAT:
        raise ValueError(f"{path}: not an edgernn fleet index")
    version = index.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: invalid format version {version!r}")
    if version > INDEX_FORMAT_VERSION:
        raise ValueError(f"{path}: fleet format version {version}, this edgernn reads up to "
                         f"{INDEX_FORMAT_VERSION}; upgrade edgernn")
    blobs, records, failures = {}, {}, {}
    try:
        for e in index["models"]:
            k = _check_key(e["key"], path)
            fname = e["file"]
            if os.path.basename(fname) != fname:
                raise ValueError(f"{path}: invalid model file name {fname!r}")
            with open(os.path.join(directory, fname), "rb") as fh:
                blob = fh.read()
            if verify and hashlib.sha256(blob).hexdigest() != e["sha256"]:
                raise ValueError(f"{path}: model file {fname!r} of key {k!r} does not match its checksum "
                                 "(corrupt or replaced)")
            blobs[k] = blob
            records[k] = _unjson_floats(e.get("record", {}))
        for f in index.get("failures", []):
            f = dict(f)
            failures[_check_key(f.pop("key"), path)] = f
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: malformed fleet index ({type(exc).__name__}: {exc})") from None
    return Fleet(blobs, records, failures, kind=index.get("kind", "model"), info=index.get("info", {}))


# -------------------------------------------------------------------------------------------
# fit
# -------------------------------------------------------------------------------------------
def _local_workers():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _dashboard(client):
    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard (bokeh missing) or no scheduler info
        return None
    try:
        info = client.scheduler_info()
        if "dashboard" not in info.get("services", {}):
            return None
    except Exception:  # noqa: BLE001
        pass
    return link


def _validate(build, datasets, epochs, batch_size, fit_kwargs, prepare, retries, transient, chunksize,
              n_workers, progress, warmup, seed, key=None, time=None):
    from .forecast import ForecastConfig

    if isinstance(build, ForecastConfig):
        kind = "forecast"
        if epochs is not None or batch_size is not None or fit_kwargs:
            raise ValueError("epochs/batch_size/fit_kwargs: set them in the ForecastConfig given as build")
    elif callable(build):
        kind = "model"
        if _is_jitted(build):
            raise TypeError("build: a numba-jitted function cannot be a model builder (and is never shipped to "
                            "workers by value); give a plain Python function")
    else:
        raise TypeError(f"build: expected a function returning a compiled Sequential, or a ForecastConfig; "
                        f"got {type(build).__name__}")
    if prepare is not None and (not callable(prepare) or _is_jitted(prepare)):
        raise TypeError("prepare: expected a plain Python function item -> data")
    if _is_frame(datasets):
        if key is None:
            raise ValueError("key: a DataFrame as datasets needs key= (the column that names each series)")
    elif key is not None or time is not None:
        raise ValueError("key/time: only for a DataFrame given as datasets")
    elif not isinstance(datasets, Mapping):
        raise TypeError(f"datasets: expected a mapping key -> data (e.g. a dict) or a DataFrame with key=, "
                        f"got {type(datasets).__name__}")
    elif not datasets:
        raise ValueError("datasets: empty; give at least one key")
    else:
        for k in datasets:
            _check_key(k)
    if fit_kwargs is not None and not isinstance(fit_kwargs, Mapping):
        raise TypeError(f"fit_kwargs: expected a dict, got {type(fit_kwargs).__name__}")
    for bad in ("x", "y", "verbose", "seed"):
        if fit_kwargs and bad in fit_kwargs:
            raise ValueError(f"fit_kwargs: {bad!r} is set by the fleet")
    if chunksize == "auto":
        chunksize = None
    for name, val, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("retries", retries, 0),
                          ("chunksize", chunksize, 1), ("n_workers", n_workers, 1)):
        if val is not None and (isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo):
            raise ValueError(f"{name}: expected an int >= {lo}, got {val!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if transient is not None and not (callable(transient) and not isinstance(transient, type)):
        ts = transient if isinstance(transient, tuple) else (transient,)
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in ts):
            raise TypeError("transient: expected exception classes, a tuple of them, or a function exc -> bool")
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise TypeError("progress: expected True, False or a function Progress -> None")
    if not isinstance(warmup, bool):
        raise TypeError(f"warmup: expected True or False, got {warmup!r}")
    return kind


def fit(build, datasets, client=None, *, key=None, time=None, epochs=None, batch_size=None, fit_kwargs=None,
        prepare=None, seed=0, retries=2, transient=DEFAULT_TRANSIENT, chunksize="auto", n_workers=None,
        progress=True, warmup=True, column=None):
    """Train one model per key of ``datasets``, in parallel on Dask.

    Parameters
    ----------
    build : callable or ForecastConfig
        A function returning a compiled ``Sequential`` or a ``ForecastConfig`` (it may take
        keyword arguments ``key`` and ``seed``), or one ``ForecastConfig`` for every key. With
        a ``ForecastConfig`` each key's data is one series.
    datasets : mapping or DataFrame
        Key (str or int) -> data: ``(x, y)`` arrays for a model builder (``x`` (N, T, F)),
        a series (N,) or a CSV path (read on the worker) for a ForecastConfig, a Dask
        ``Future`` or ``Delayed`` of either (the task then runs where the data is), or
        anything ``prepare`` turns into one of those.
        Or a Dask (or pandas) DataFrame in long format with ``key=``: one row per time step
        and series, the series named by the ``key`` column. Each key's rows are grouped on
        the cluster, on the worker that holds them (shuffled there first if a key's rows lie in
        several partitions; only the keys come to the client), and its model trains there. A
        ForecastConfig trains on the ``column`` values; a model builder needs ``prepare``,
        which receives the key's rows as a pandas DataFrame (without the key column).
    client : dask.distributed.Client, optional
        Default: a ``LocalCluster`` of ``n_workers`` single-threaded worker processes, closed
        at the end (without Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` for its workers, which
        costs small models 10-20% more CPU).
    epochs, batch_size : int, optional
        Passed to ``Sequential.fit`` (model builders only).
    fit_kwargs : dict, optional
        More ``Sequential.fit`` arguments (``validation_split``, ``callbacks``, ``shuffle``, ...).
    prepare : callable, optional
        ``prepare(item) -> data``, run on the worker before training (load, clean, window,
        or raise to refuse a key). Forecasters: a CSV path is read first and ``prepare``
        receives the series.
    seed : int
        Base seed; key ``k`` uses ``key_seed(seed, k)``.
    retries : int
        How many times a key whose error is transient (or whose worker died) is tried again.
    transient : exception class, tuple of them, or callable exc -> bool
        Which exceptions are transient.
    chunksize : int or "auto"
        Keys per task. "auto" starts with one key per task, then sizes chunks so that a task
        takes about 0.2 s: a tiny model trains in ~10 ms, and Dask spends a few ms on every
        task. An int fixes it (1: finest balance and progress).
    n_workers : int, optional
        Workers of the default ``LocalCluster`` (default: the cores this process may use).
    progress : bool or callable
        True: :class:`ProgressDisplay` (terminal line, else log lines); a function receives a
        :class:`Progress` after every finished task; False: nothing.
    warmup : bool
        Warm every worker once with ``client.run`` (import, build, one training step on dummy
        data) and record the cost in ``Fleet.info["warmup"]``.
    column : str or int, optional
        Column of CSV files given as data (default: the last one); of a DataFrame, the series'
        values (default: the one column besides ``key`` and ``time``).
    key : str, optional
        DataFrames: the column that names the series (sensor id, ...). Its values are the
        fleet's keys (str or int).
    time : str, optional
        DataFrames: the column that orders each key's rows (default: the frame's row order).

    Returns
    -------
    Fleet
        ``fleet.failures`` lists the keys that failed, with their errors.

    Raises
    ------
    ImportError
        ``dask.distributed`` is not installed (``pip install edgernn[fleet]``).
    """
    kind = _validate(build, datasets, epochs, batch_size, fit_kwargs, prepare, retries, transient, chunksize,
                     n_workers, progress, warmup, seed, key, time)
    try:
        import distributed
    except ImportError:
        raise ImportError("edgernn.fleet needs dask.distributed: pip install 'edgernn[fleet]'") from None

    fk = dict(fit_kwargs or {})
    if epochs is not None:
        fk["epochs"] = int(epochs)
    if batch_size is not None:
        fk["batch_size"] = int(batch_size)
    fs = _FrameSpec(key, time, column, series=kind == "forecast") if _is_frame(datasets) else None
    spec = _Spec(kind=kind, build=build, prepare=prepare, fit_kwargs=fk, transient=transient, column=column,
                 frame=fs)
    if fs is not None and not _is_dask_frame(datasets):  # pandas: grouped here, before any cluster starts
        datasets = _frame_datasets(datasets, fs, None, "datasets")
    if progress is True:
        progress = ProgressDisplay()
    elif progress is False:
        progress = None

    if client is not None and not (hasattr(client, "submit") and hasattr(client, "run")):
        raise TypeError(f"client: expected a dask.distributed.Client or None, got {type(client).__name__}")
    if client is not None and n_workers is not None:
        raise ValueError("n_workers: only for the default LocalCluster (client=None); size your own cluster")
    own = None
    if client is None:
        import dask

        n = int(n_workers) if n_workers is not None else _local_workers()
        # Dask gives its workers MALLOC_TRIM_THRESHOLD_=65536 (memory goes back to the OS at
        # once); the many short-lived arrays of a small model's training then cost 10-20% more
        # CPU per model (measured, benchmarks/README.md). Fleet workers hold little memory.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               dashboard_address=":0")
        client = own = distributed.Client(cluster)
    info = {"n_workers": len(client.scheduler_info().get("workers", {})), "chunksize": chunksize,
            "seed": int(seed), "retries": int(retries)}
    try:
        t_start = _perf_counter()
        if fs is not None and _is_dask_frame(datasets):  # grouped on the cluster: key -> future
            datasets = _frame_datasets(datasets, fs, client, "datasets", info)
            info["frame_group_seconds"] = _perf_counter() - t_start
        if not datasets:
            raise ValueError("datasets: the DataFrame has no rows")
        keys = [_check_key(k) for k in datasets]
        if len(set(keys)) != len(keys):
            raise ValueError("datasets: keys must be unique (int and numpy int keys of equal value collide)")
        seeds = {k: key_seed(seed, k) for k in keys}
        if warmup:
            t0 = _perf_counter()
            res = client.run(_warm_worker, spec, keys[0], seeds[keys[0]])
            info["warmup"] = res
            info["warmup_wall_seconds"] = _perf_counter() - t0
            errs = {w: r["error"] for w, r in res.items() if r.get("error")}
            if errs:
                logger.warning("fleet warm-up failed on %d worker(s): %s", len(errs), next(iter(errs.values())))
        blobs, records, failures = _run(client, spec, datasets, keys, seeds, chunksize, int(retries),
                                        progress, info, distributed)
        info["wall_seconds"] = _perf_counter() - t_start
    finally:
        if own is not None:
            cluster = own.cluster
            own.close()
            cluster.close()
    order = {k: i for i, k in enumerate(keys)}
    blobs = dict(sorted(blobs.items(), key=lambda kv: order[kv[0]]))
    failures = dict(sorted(failures.items(), key=lambda kv: order[kv[0]]))
    if blobs and all("forecast" in records[k] for k in blobs):
        kind = "forecast"  # a builder that returns ForecastConfigs
    if failures:
        logger.info("fleet: %d of %d keys failed: %s", len(failures), len(keys), ", ".join(map(repr, list(failures)[:10])))
    return Fleet(blobs, records, failures, kind=kind, info=info)


def _slots(client):
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - no answer: assume one
        return 1


def _run(client, spec, datasets, keys, seeds, chunksize, retries, progress, info, distributed):
    """Submit the keys in chunks, keep the cluster busy, collect results, retry transient failures.

    At most ``4 x worker threads`` tasks are in flight; ``chunksize="auto"`` starts with one
    key per task and then sizes chunks so that a task takes about ``_TARGET_TASK_SECONDS`` of
    CPU (a tiny model trains in ~10 ms, while Dask spends several ms on every task).
    """
    from collections import deque

    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    items = {}
    for k in keys:
        item = datasets[k]
        if hasattr(item, "dask") and hasattr(item, "key") and not isinstance(item, distributed.Future):
            item = client.compute(item)  # a Delayed: computed on the cluster, trained where it lands
        items[k] = item
    attempts = {k: 0 for k in keys}
    blobs, records, failures = {}, {}, {}
    state = Progress(total=len(keys), dashboard=_dashboard(client))
    spec_f = client.scatter(spec, broadcast=True, hash=False)
    auto = chunksize == "auto"
    queue = deque(keys)
    pending = {}
    recent = deque(maxlen=64)  # CPU seconds per key, for "auto"
    slots, slots_checked = _slots(client), time.perf_counter()
    sizes = []

    def next_size():
        if not auto:
            return chunksize
        if not recent:
            return 1
        per_key = max(float(np.median(recent)), 1e-4)
        size = max(1, round(_TARGET_TASK_SECONDS / per_key))
        return int(max(1, min(size, _MAX_AUTO_CHUNK, math.ceil(len(queue) / (2 * slots)))))

    def refill():
        nonlocal slots, slots_checked
        if time.perf_counter() - slots_checked > 2.0:
            slots, slots_checked = _slots(client), time.perf_counter()
        while queue and len(pending) < 4 * slots:
            n = next_size()
            chunk = [queue.popleft() for _ in range(min(n, len(queue)))]
            for k in chunk:
                attempts[k] += 1
            sizes.append(len(chunk))
            fut = client.submit(_fit_chunk, spec_f, [(k, items[k], seeds[k]) for k in chunk], pure=False,
                                key=f"edgernn-fleet-fit-{token}-{len(sizes)}")
            pending[fut] = chunk
            ac.add(fut)

    t0 = time.perf_counter()
    ac = as_completed()
    refill()
    for fut in ac:
        chunk = pending.pop(fut)
        again = []
        try:
            out = fut.result()
        except Exception as exc:  # noqa: BLE001 - the whole task was lost (worker died, ...)
            err = _error_info(exc)
            out = [(k, {"status": "failed", "error": err, "transient": True}, None) for k in chunk]
        for k, rec, blob in out:
            rec["attempts"] = attempts[k]
            if "cpu_seconds" in rec:  # CPU, not wall time: a busy machine must not shrink the chunks
                recent.append(rec["cpu_seconds"])
            if rec["status"] == "ok":
                blobs[k], records[k] = blob, rec
                state.done += 1
            elif rec.get("transient") and attempts[k] <= retries:
                again.append(k)
                state.retried += 1
                logger.info("fleet: key %r failed with a transient error (%s), retrying (attempt %d of %d)",
                            k, rec["error"]["type"], attempts[k] + 1, retries + 1)
            else:
                failures[k] = {**rec["error"], "attempts": attempts[k], "transient": bool(rec.get("transient"))}
                records[k] = {kk: v for kk, v in rec.items() if kk != "error"}
                state.failed += 1
            state.last_key = k
        fut.release()
        queue.extendleft(reversed(again))  # retried first
        refill()
        if progress is not None:
            state.elapsed = time.perf_counter() - t0
            rate = state.finished / state.elapsed if state.elapsed > 0 else 0
            state.eta = (state.total - state.finished) / rate if rate > 0 else None
            progress(dataclasses.replace(state))
    info["tasks"] = len(sizes)
    info["chunk_sizes"] = {"min": min(sizes), "median": float(np.median(sizes)), "max": max(sizes)}
    info["fit_wall_seconds"] = time.perf_counter() - t0
    return blobs, records, failures
