"""Save and load models: one ``.npz`` file, no pickle.

File layout (``numpy.savez``):

- ``__format_version__``: int64 scalar, currently ``FORMAT_VERSION``;
- ``__config__``: a unicode string scalar holding JSON: the model config (layers and their
  constructor arguments, input shape, dtype), the compile settings (loss, optimizer config,
  metrics) and a manifest of the weight arrays (name, shape, dtype);
- ``layer{i}/{name}``: the arrays of layer ``i`` (e.g. ``layer0/W``, ``layer2/kernel``).

Saving is atomic: the file is written to a temporary file in the same directory, flushed to
disk and renamed over ``path``. Loading uses ``allow_pickle=False`` and refuses files from a
newer format version, files whose arrays do not match their config (missing, extra, wrong
shape or dtype) and corrupt or truncated files, with a ``ValueError`` naming the problem.
Optimizer state (Adam's moments etc.) is not saved: training after loading starts fresh
moment estimates.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

__all__ = ["save_model", "load_model", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_FORMAT = "edgernn.model"


def _manifest(model):
    out = []
    for i, layer in enumerate(model.layers):
        for name, w in zip(layer.weight_names, layer.weights, strict=True):
            out.append({"name": f"layer{i}/{name}", "shape": list(w.shape), "dtype": w.dtype.name})
    return out


def _compile_config(model):
    if model.loss is None:
        return None
    from . import losses, optimizers

    return {"loss": losses.serialize(model.loss),
            "optimizer": None if model.optimizer is None else optimizers.serialize(model.optimizer),
            "metrics": [m if isinstance(m, str) else m.name for m in getattr(model, "_metric_specs", [])]}


def save_model(model, path):
    """Write ``model`` to ``path`` atomically (see the module docstring). Returns ``path``."""
    from . import __version__

    if not model.built:
        raise ValueError("save: the model is not built (no weights yet); build or fit it first")
    path = os.fspath(path)
    arrays = {}
    for i, layer in enumerate(model.layers):
        for name, w in zip(layer.weight_names, layer.weights, strict=True):
            arrays[f"layer{i}/{name}"] = w
    header = {"format": _FORMAT, "format_version": FORMAT_VERSION, "edgernn_version": __version__,
              "model": {"class_name": type(model).__name__, "config": model.get_config()},
              "compile": _compile_config(model), "weights": _manifest(model),
              "meta": getattr(model, "meta", {})}
    arrays["__config__"] = np.array(json.dumps(header))
    arrays["__format_version__"] = np.array(FORMAT_VERSION, np.int64)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would otherwise stick to the saved file
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def _read(path):
    """All arrays of the file, read eagerly, or ValueError for anything unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable edgernn model file (corrupt or truncated?): {exc}") from None


def load_model(path, compile=True):
    """Load a model written by ``model.save``.

    Parameters
    ----------
    path : str or PathLike
    compile : bool
        Re-create the loss, optimizer (fresh state) and metrics saved with the model.

    Returns
    -------
    Sequential

    Raises
    ------
    FileNotFoundError
    ValueError
        Corrupt or truncated file, a newer format version, or arrays that do not match the config.
    """
    from .models import Sequential

    path = os.fspath(path)
    arrays = _read(path)
    for key in ("__format_version__", "__config__"):
        if key not in arrays:
            raise ValueError(f"{path}: not an edgernn model file (no {key!r} entry)")
    try:
        version = int(arrays.pop("__format_version__"))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: invalid format version entry") from None
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: written in model format version {version}, but this edgernn reads versions "
                         f"up to {FORMAT_VERSION}; upgrade edgernn")
    if version < 1:
        raise ValueError(f"{path}: invalid format version {version}")
    try:
        header = json.loads(str(arrays.pop("__config__")[()]))
        spec = header["model"]
        manifest = header["weights"]
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{path}: the config entry is not valid edgernn JSON ({exc})") from None
    if header.get("format") != _FORMAT or spec.get("class_name") != "Sequential":
        raise ValueError(f"{path}: unsupported model kind {spec.get('class_name')!r}")
    try:
        model = Sequential.from_config(spec["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot rebuild the model from its config: {exc}") from None
    if not model.built:
        raise ValueError(f"{path}: the config has no input shape")
    expected = {m["name"]: m for m in _manifest(model)}
    listed = {m.get("name") for m in manifest}
    if listed != set(expected):
        raise ValueError(f"{path}: the weight manifest does not match the layers of the config "
                         f"(expected {sorted(expected)}, listed {sorted(listed)})")
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing:
        raise ValueError(f"{path}: missing weight arrays {missing}")
    if extra:
        raise ValueError(f"{path}: unexpected arrays {extra}")
    for name, m in expected.items():
        a = arrays[name]
        if list(a.shape) != m["shape"] or a.dtype.name != m["dtype"]:
            raise ValueError(f"{path}: array {name!r} has shape {a.shape} dtype {a.dtype}, the config "
                             f"expects shape {tuple(m['shape'])} dtype {m['dtype']}")
    for i, layer in enumerate(model.layers):
        layer.set_weights([arrays[f"layer{i}/{n}"] for n in layer.weight_names])
    meta = header.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: the 'meta' entry of the config must be a JSON object")
    model.meta = meta
    comp = header.get("compile")
    if compile and comp:
        from . import losses, optimizers

        try:
            opt = optimizers.deserialize(comp["optimizer"]) if comp.get("optimizer") else "rmsprop"
            model.compile(optimizer=opt, loss=losses.deserialize(comp["loss"]), metrics=comp.get("metrics"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: invalid compile settings: {exc}") from None
    return model
