"""Save and load models: one ``.npz`` file, no pickle.

File layout (``numpy.savez``, entries stored uncompressed):

- ``__format_version__``: int64 scalar, currently ``FORMAT_VERSION``;
- ``__config__``: a unicode string scalar holding JSON: the model config (layers and their
  constructor arguments, input shape, dtype), the compile settings (loss, optimizer config,
  metrics) and a manifest of the weight arrays (name, shape, dtype);
- ``layer{i}/{name}``: the arrays of layer ``i`` (e.g. ``layer0/W``, ``layer2/kernel``).

Saving is atomic: the file is written to a temporary file in the same directory as the
target (``.tmp-edgernn-<pid>-<random>.npz``), flushed to disk and renamed over it. Saving
through a symbolic link writes the link's target. A new file gets the permissions the umask
gives (as ``open`` would; the process umask is never changed); re-saving over an existing file
keeps that file's permission bits. Temporary files left by saves that were killed (their
process is gone) are removed by the next save to the same directory.

Loading validates everything before allocating anything: the file must be a regular file
(a FIFO or a device is refused without being read) and a zip archive with unique entry
names; the format version an integer this edgernn reads; the JSON config strictly typed
(``units`` an integer, not 4.7 or ``"4"``; shape entries positive integers or null) and within
``LIMITS``; the manifest of weight names, shapes and dtypes exactly what the config implies;
every array entry's declared size exactly what its shape and dtype need. Only then is the
model built (without random initialisation: its weights come from the file) and the arrays are
read one at a time, each straight into the layer that owns it. Any malformed, truncated,
tampered or oversized file raises :class:`ModelFileError` (a ``ValueError``) naming the file
and the problem; ``FileNotFoundError`` and ``PermissionError`` are raised as the OS reports
them. Optimizer state (Adam's moments etc.) is not saved: training after loading starts
fresh moment estimates.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
import stat
import time
import zipfile

import numpy as np

__all__ = ["save_model", "load_model", "FORMAT_VERSION", "ModelFileError", "LIMITS"]

FORMAT_VERSION = 1
_FORMAT = "edgernn.model"

#: What ``load_model`` accepts at most (refused before anything is allocated).
LIMITS = {
    "layers": 1024,  # layers in a model
    "units": 65_536,  # units of a recurrent or Dense layer, Embedding output_dim
    "features": 1 << 20,  # input features / a fixed time length
    "vocab": 1 << 24,  # Embedding input_dim
    "config_bytes": 16 << 20,  # the JSON config
    "weight_bytes": 4 << 30,  # all weight arrays together
    "compression_ratio": 64,  # declared / stored size of a compressed entry (edgernn stores, never compresses)
}

_OTHER_FORMATS = {".h5": "HDF5 (Keras)", ".hdf5": "HDF5 (Keras)", ".keras": "Keras", ".tf": "TensorFlow",
                  ".pb": "TensorFlow", ".onnx": "ONNX", ".pt": "PyTorch", ".pth": "PyTorch",
                  ".pkl": "pickle", ".pickle": "pickle", ".joblib": "joblib", ".safetensors": "safetensors",
                  ".json": "JSON", ".tflite": "TensorFlow Lite"}
_TMP_RE = re.compile(r"^\.tmp-edgernn-(\d+)-[0-9a-f]+\.npz$")
_OLD_TMP_RE = re.compile(r"^\.tmp-[A-Za-z0-9_]{8}\.npz$")  # mkstemp names of edgernn <= 0.1.0
_STALE_SECONDS = 6 * 3600  # a temp file this old is stale whatever its process


class ModelFileError(ValueError):
    """A file ``load_model`` cannot load: not an edgernn model file, corrupt, truncated, tampered,
    from a newer format version, or describing a model beyond ``LIMITS``.

    The message names the file and the problem. (A ``ValueError``, so ``except ValueError``
    catches it too.)
    """


# ------------------------------------------------------------------------------------------------
# saving
# ------------------------------------------------------------------------------------------------
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


def _jsonable_config(cfg):
    """The config with initializer callables replaced by their saved names."""
    from . import initializers

    if isinstance(cfg, dict):
        return {k: (initializers.name_of(v) if k.endswith("_initializer") and callable(v) else _jsonable_config(v))
                for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_jsonable_config(v) for v in cfg]
    return cfg


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_stale_temps(directory):
    """Remove temporary files of saves whose process is gone (killed during a save)."""
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for e in entries:
        m = _TMP_RE.match(e.name)
        old = _OLD_TMP_RE.match(e.name)
        if not (m or old):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            stale = now - st.st_mtime > _STALE_SECONDS or (m is not None and not _pid_alive(int(m.group(1))))
            if stale:
                os.unlink(e.path)
        except OSError:
            continue


def save_model(model, path):
    """Write ``model`` to ``path`` atomically (see the module docstring). Returns ``path``.

    Raises
    ------
    ValueError
        The model is not built, or ``path`` names another format (``.h5``, ``.keras``, ...).
    OSError
        The directory does not exist or is not writable.
    """
    from . import __version__

    if not model.built:
        raise ValueError("save: the model is not built (no weights yet); build or fit it first")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in _OTHER_FORMATS:
        hint = " (for ONNX use edgernn.onnx.export(model, path))" if ext == ".onnx" else ""
        raise ValueError(f"save: {path!r} names the {_OTHER_FORMATS[ext]} format ({ext}), which edgernn does "
                         f"not write; edgernn saves models as .npz (numpy zip, JSON config, no pickle): use a "
                         f"path ending in .npz{hint}")
    arrays = {}
    for i, layer in enumerate(model.layers):
        for name, w in zip(layer.weight_names, layer.weights, strict=True):
            arrays[f"layer{i}/{name}"] = w
    header = {"format": _FORMAT, "format_version": FORMAT_VERSION, "edgernn_version": __version__,
              "model": {"class_name": type(model).__name__, "config": _jsonable_config(model.get_config())},
              "compile": _compile_config(model), "weights": _manifest(model),
              "meta": getattr(model, "meta", {})}
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"save: the model's config or model.meta is not plain JSON (strings, finite numbers, "
                         f"true/false/null, lists, dicts): {exc}") from None
    arrays["__config__"] = np.array(text)
    arrays["__format_version__"] = np.array(FORMAT_VERSION, np.int64)
    target = os.path.realpath(path) if os.path.islink(path) else path  # write through a symlink
    directory = os.path.dirname(os.path.abspath(target))
    keep_mode = None
    try:
        st = os.stat(target)
        if stat.S_ISREG(st.st_mode):
            keep_mode = stat.S_IMODE(st.st_mode)
        elif stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"save: {path!r} is a directory; give a file path ending in .npz")
    except FileNotFoundError:
        pass
    _clean_stale_temps(directory)
    tmp = os.path.join(directory, f".tmp-edgernn-{os.getpid()}-{secrets.token_hex(6)}.npz")
    # 0o666 filtered by the umask, as open() gives any new file; the umask itself is never touched
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        if keep_mode is not None:
            os.fchmod(fd, keep_mode)
        with os.fdopen(fd, "wb") as f:
            fd = None
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd is not None:
            os.close(fd)
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


# ------------------------------------------------------------------------------------------------
# loading: validation helpers (each raises _Bad with the problem; load_model adds the path)
# ------------------------------------------------------------------------------------------------
class _Bad(Exception):
    pass


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _want_int(v, where, lo, hi):
    if not _is_int(v):
        raise _Bad(f"{where} must be an integer, got {json.dumps(v)[:40]}")
    if not lo <= v <= hi:
        raise _Bad(f"{where} = {v} is out of range [{lo}, {hi}]")
    return v


def _want_shape(v, where, hi, allow_none_list=False):
    if v is None and allow_none_list:
        return None
    if not isinstance(v, list) or not 1 <= len(v) <= 4:
        raise _Bad(f"{where} must be a list of 1 to 4 dimensions, got {json.dumps(v)[:60]}")
    for k, d in enumerate(v):
        if d is not None:
            _want_int(d, f"{where}[{k}]", 1, hi)
    return v


_INT_KEYS = {"units": ("units", 1), "output_dim": ("units", 1), "input_dim": ("vocab", 1),
             "input_length": ("features", 1)}
_BOOL_KEYS = {"trainable", "use_bias", "return_sequences", "return_state", "go_backwards", "stateful",
              "reset_after", "unit_forget_bias", "peephole", "coupled_gates", "mask_zero"}
_FLOAT_KEYS = {"dropout", "recurrent_dropout", "rate", "mask_value", "clip"}
_STR_KEYS = {"activation", "recurrent_activation", "merge_mode"}
_NONE_OK = {"clip", "seed", "name", "noise_shape"}


def _check_layer_config(spec, where, nested=False):
    from . import initializers
    from .layers import get as get_layer_class

    if not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str) \
            or not isinstance(spec.get("config"), dict):
        raise _Bad(f"{where} must be an object {{'class_name': str, 'config': object}}")
    name = spec["class_name"]
    try:
        cls = get_layer_class(name)
    except ValueError as exc:
        raise _Bad(f"{where}: {exc}") from None
    cfg = spec["config"]
    for key, v in cfg.items():
        w = f"{where} ({name}) config {key!r}"
        if v is None and key in _NONE_OK:
            continue
        if key in _INT_KEYS:
            limit, lo = _INT_KEYS[key]
            _want_int(v, w, lo, LIMITS[limit])
        elif key in _BOOL_KEYS:
            if not isinstance(v, bool):
                raise _Bad(f"{w} must be true or false, got {json.dumps(v)[:40]}")
        elif key in _FLOAT_KEYS:
            if not _is_num(v):
                raise _Bad(f"{w} must be a finite number, got {json.dumps(v)[:40]}")
        elif key in _STR_KEYS or key == "name":
            if not isinstance(v, str) or len(v) > 256:
                raise _Bad(f"{w} must be a string (at most 256 characters)")
        elif key.endswith("_initializer"):
            if not initializers.is_known(v):
                raise _Bad(f"{w}: unknown initializer {json.dumps(v)[:40]}")
        elif key == "input_shape":
            _want_shape(v, w, LIMITS["features"])
        elif key == "noise_shape":
            _want_shape(v, w, LIMITS["features"])
        elif key == "seed":
            if not _is_int(v):
                raise _Bad(f"{w} must be an integer or null")
        elif key == "layer" and name == "Bidirectional":
            if nested:
                raise _Bad(f"{w}: nested Bidirectional layers")
            _check_layer_config(v, f"{where} inner layer", nested=True)
        elif isinstance(v, (dict, list)) and cls.__module__ in ("edgernn.layers.core", "edgernn.layers.recurrent"):
            raise _Bad(f"{w}: unexpected value {json.dumps(v)[:40]}")
    if name == "Bidirectional" and "layer" not in cfg:
        raise _Bad(f"{where} (Bidirectional) has no inner 'layer'")


def _check_header(header):
    if not isinstance(header, dict):
        raise _Bad("the config entry is not a JSON object")
    if header.get("format") != _FORMAT:
        raise _Bad(f"not an edgernn model file (format {json.dumps(header.get('format'))[:40]})")
    spec = header.get("model")
    if not isinstance(spec, dict) or spec.get("class_name") not in ("Sequential", "Model"):
        kind = spec.get("class_name") if isinstance(spec, dict) else None
        raise _Bad(f"unsupported model kind {json.dumps(kind)[:40]}")
    cfg = spec.get("config")
    if not isinstance(cfg, dict):
        raise _Bad("the model config is not a JSON object")
    if spec["class_name"] == "Model":
        _check_graph(cfg)
    if cfg.get("name") is not None and not isinstance(cfg.get("name"), str):
        raise _Bad("the model name must be a string")
    if cfg.get("dtype", "float32") not in ("float32", "float64"):
        raise _Bad(f"model dtype must be 'float32' or 'float64', got {json.dumps(cfg.get('dtype'))[:40]}")
    if cfg.get("seed") is not None and not _is_int(cfg.get("seed")):
        raise _Bad("the model seed must be an integer or null")
    if spec["class_name"] == "Sequential":
        if cfg.get("input_shape") is None:
            raise _Bad("the config has no input shape (the model was never built)")
        _want_shape(cfg["input_shape"], "input_shape", LIMITS["features"])
    layers = cfg.get("layers")
    if not isinstance(layers, list) or not layers:
        raise _Bad("the config has no list of layers")
    if len(layers) > LIMITS["layers"]:
        raise _Bad(f"{len(layers)} layers, more than the limit of {LIMITS['layers']}")
    names = set()
    for i, spec_i in enumerate(layers):
        _check_layer_config(spec_i, f"layer {i}")
        nm = spec_i["config"].get("name")
        if not isinstance(nm, str):
            raise _Bad(f"layer {i} has no name")
        if nm in names:
            raise _Bad(f"duplicate layer name {nm!r}")
        names.add(nm)
        if spec["class_name"] == "Sequential" and i < len(layers) - 1 and spec_i["config"].get("return_state"):
            raise _Bad(f"layer {i} has return_state but is not the last layer")
    manifest = header.get("weights")
    if not isinstance(manifest, list):
        raise _Bad("the weight manifest is missing or not a list")
    comp = header.get("compile")
    if comp is not None and not isinstance(comp, dict):
        raise _Bad("the compile settings are not a JSON object")
    meta = header.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise _Bad("the 'meta' entry of the config must be a JSON object")
    return cfg, manifest


def _check_graph(cfg):
    """The graph part of a functional ``Model`` config: inputs, nodes and outputs, every reference
    pointing backwards (no cycles) and in range."""
    ins = cfg.get("input_layers")
    if not isinstance(ins, list) or not 1 <= len(ins) <= LIMITS["layers"]:
        raise _Bad("the graph config has no list of inputs")
    for k, t in enumerate(ins):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or len(t["name"]) > 256:
            raise _Bad(f"graph input {k} must be {{'name': str, 'shape': [...], 'dtype': str}}")
        _want_shape(t.get("shape"), f"graph input {k} shape", LIMITS["features"])
        if t.get("dtype", "float32") not in ("float32", "float64", "int32", "int64"):
            raise _Bad(f"graph input {k}: dtype must be float32, float64, int32 or int64")
    layers, nodes, outs = cfg.get("layers"), cfg.get("nodes"), cfg.get("outputs")
    if not isinstance(layers, list) or not isinstance(nodes, list) or not isinstance(outs, list) or not outs:
        raise _Bad("the graph config needs lists 'layers', 'nodes' and 'outputs'")
    if len(nodes) > 4 * LIMITS["layers"] or len(outs) > LIMITS["layers"]:
        raise _Bad(f"{len(nodes)} layer calls, more than the limit of {4 * LIMITS['layers']}")

    def ref(r, n, where):
        if not (isinstance(r, list) and len(r) == 2 and all(_is_int(v) for v in r)):
            raise _Bad(f"{where}: a tensor reference must be [node, output]")
        if r[0] == -1:
            if not 0 <= r[1] < len(ins):
                raise _Bad(f"{where}: input {r[1]} out of range")
        elif not (0 <= r[0] < n and 0 <= r[1] < 64):
            raise _Bad(f"{where}: reference {r} does not point to an earlier layer call")

    for i, nd in enumerate(nodes):
        w = f"layer call {i}"
        if not isinstance(nd, dict) or not _is_int(nd.get("layer")) or not 0 <= nd["layer"] < len(layers):
            raise _Bad(f"{w}: 'layer' must index the layers list")
        refs = nd.get("inputs")
        if not isinstance(refs, list) or not 1 <= len(refs) <= 256:
            raise _Bad(f"{w}: 'inputs' must be a list of tensor references")
        for r in refs:
            ref(r, i, w)
        n_main, n_state = nd.get("n_main"), nd.get("n_state", 0)
        if not (_is_int(n_main) and _is_int(n_state) and n_main >= 1 and n_state >= 0
                and n_main + n_state == len(refs)):
            raise _Bad(f"{w}: n_main/n_state do not match its inputs")
        kw = nd.get("kwargs", {})
        if not isinstance(kw, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, (bool, str))
                                                                       or _is_num(v)) for k, v in kw.items()):
            raise _Bad(f"{w}: call arguments must be plain values")
    for r in outs:
        ref(r, len(nodes), "graph outputs")


def _expected_weights(layer, input_shape, dtype):
    """{name: shape} of ``layer``'s stored arrays for ``input_shape``, computed without building
    it; None for a layer class this loader does not know (a registered custom layer)."""
    from .layers import GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding, Masking, SimpleRNN

    if type(layer) in (Dropout, Activation, Masking):
        return {}
    if type(layer) is Dense:
        F = input_shape[-1]
        if F is None:
            raise _Bad(f"layer {layer.name!r}: the last input axis must be known")
        out = {"kernel": (F, layer.units)}
        if layer.use_bias:
            out["bias"] = (layer.units,)
        return out
    if type(layer) is Embedding:
        if len(input_shape) != 1:
            raise _Bad(f"layer {layer.name!r}: Embedding expects token ids (batch, time)")
        return {"embeddings": (layer.input_dim, layer.output_dim)}
    rec = layer.layer if isinstance(layer, Bidirectional) else layer
    if type(rec) in (SimpleRNN, GRU, LSTM):  # other cells' layers: checked after building
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise _Bad(f"layer {layer.name!r}: expects (time, features) input with known features, "
                       f"got {input_shape}")
        I, H, G, D = input_shape[-1], rec.units, rec.gates, rec.num_directions
        out = {"W": (D, G * H, I), "R": (D, G * H, H)}
        buffers = {}
        if rec.use_bias:
            out["Wb"] = (D, G * H)
            (out if rec._rb_trainable() else buffers)["Rb"] = (D, G * H)
        if rec.peephole:
            out["P"] = (D, 3 * H)
        out.update(buffers)
        return out
    return None


def _read_entry(zf, info, limit, what):
    if info.file_size > limit:
        raise _Bad(f"entry {what} declares {info.file_size} bytes, more than the limit of {limit}")
    with zf.open(info) as fh:
        data = fh.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise _Bad(f"entry {what} is truncated")
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def _npy_header(fh, what):
    """(shape, fortran_order, dtype, header length) of an npy stream, bounded reads only."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise _Bad(f"array {what}: unsupported npy version {version}")
    except (_Bad, zipfile.BadZipFile):
        raise
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError/EOFError/SyntaxError... for bad headers
        raise _Bad(f"array {what}: bad npy header ({type(exc).__name__}: {str(exc)[:80]})") from None
    return shape, fortran, np.dtype(dtype), fh.tell()


def _open_regular(path):
    """An open binary file object for ``path``, or ModelFileError for anything but a regular file
    (without blocking on a FIFO)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)  # FileNotFoundError / PermissionError as the OS says
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if
                    (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) else "not a regular file")
            raise ModelFileError(f"{path}: not an edgernn model file ({kind}, not a regular file)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _json_constant(name):
    raise _Bad(f"the config contains {name}, which JSON does not allow")


def _no_duplicate_keys(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _Bad(f"the config has the key {k!r} twice in one object")
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
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
    FileNotFoundError, PermissionError
        As the OS reports them when opening ``path``.
    ModelFileError
        (a ``ValueError``) for everything else: not a regular file, not an edgernn model file,
        corrupt, truncated or tampered, a newer format version, a config or manifest that is
        invalid, inconsistent or beyond ``LIMITS``. The message names the problem.
    """
    path = os.fspath(path)
    f, size = _open_regular(path)
    try:
        with f:
            return _load(f, size, path, compile)
    except ModelFileError:
        raise
    except _Bad as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ModelFileError(f"{path}: not a readable edgernn model file (corrupt or truncated?): {exc}") from None
    except MemoryError:
        raise ModelFileError(f"{path}: the file describes arrays too large for this machine's memory") from None
    except RecursionError:
        raise ModelFileError(f"{path}: the config is nested too deeply") from None
    except (OSError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - one documented type for every malformed file
        raise ModelFileError(f"{path}: invalid edgernn model file ({type(exc).__name__}: {str(exc)[:200]})") from None


def _load(f, size, path, compile):
    from . import initializers
    from .layers import get as get_layer_class
    from .models import Sequential

    if size < 22:
        raise _Bad(f"not a readable edgernn model file ({size} bytes: empty or truncated)")
    zf = zipfile.ZipFile(f)
    infos = zf.infolist()
    if len(infos) > 2 + 8 * LIMITS["layers"]:
        raise _Bad(f"{len(infos)} entries in the archive, more than any edgernn model has")
    entries = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise _Bad(f"unexpected entry {info.filename[:80]!r} (not a .npy array)")
        key = info.filename[:-4]
        if key in entries:
            raise _Bad(f"the archive has the entry {info.filename[:80]!r} twice")
        if info.flag_bits & 0x1:
            raise _Bad(f"entry {info.filename[:80]!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Bad(f"entry {info.filename[:80]!r} uses an unsupported compression method {info.compress_type}")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise _Bad(f"entry {info.filename[:80]!r}: stored size {info.compress_size} != declared size "
                       f"{info.file_size}")
        if info.compress_type == zipfile.ZIP_DEFLATED and \
                info.file_size > LIMITS["compression_ratio"] * info.compress_size + 4096:
            raise _Bad(f"entry {info.filename[:80]!r} declares {info.file_size} bytes from {info.compress_size} "
                       "compressed bytes (a zip bomb?)")
        if info.header_offset + info.compress_size > size:
            raise _Bad(f"entry {info.filename[:80]!r} extends past the end of the file (truncated?)")
        entries[key] = info
    for key in ("__format_version__", "__config__"):
        if key not in entries:
            raise _Bad(f"not an edgernn model file (no {key!r} entry)")
    v = _read_entry(zf, entries["__format_version__"], 4096, "__format_version__")
    if v.shape != () or v.dtype.kind not in "iu":
        raise _Bad(f"the format version must be an integer scalar, got dtype {v.dtype} shape {v.shape}")
    version = int(v)
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written in model format version {version}, but this edgernn reads versions "
                             f"up to {FORMAT_VERSION}; upgrade edgernn")
    if version < 1:
        raise _Bad(f"invalid format version {version}")
    c = _read_entry(zf, entries["__config__"], LIMITS["config_bytes"], "__config__")
    if c.shape != () or c.dtype.kind != "U":
        raise _Bad(f"the config entry must be a string scalar, got dtype {c.dtype} shape {c.shape}")
    try:
        header = json.loads(str(c[()]), parse_constant=_json_constant, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise _Bad(f"the config entry is not valid JSON ({exc})") from None
    cfg, manifest = _check_header(header)
    hv = header.get("format_version")
    if not _is_int(hv) or hv != version:
        raise _Bad(f"the config's format_version {json.dumps(hv)[:20]} does not match the file's {version}")

    # the layers, constructed (cheap: no weights) to compute the arrays the config implies
    dtype = np.dtype(cfg.get("dtype", "float32"))
    with initializers.skip_random_init():
        layers = []
        for i, spec in enumerate(cfg["layers"]):
            try:
                layers.append(get_layer_class(spec["class_name"]).from_config(dict(spec["config"])))
            except (TypeError, ValueError, NotImplementedError) as exc:
                raise _Bad(f"layer {i} ({spec['class_name']}): {exc}") from None
    expected = {}
    known = True
    graph = None
    if header["model"]["class_name"] == "Model":  # built (zeros; sizes bounded by the checked configs)
        from .graph import Model

        with initializers.skip_random_init():
            try:
                graph = Model.from_config(cfg, layers)
            except (TypeError, ValueError, KeyError, IndexError, NotImplementedError) as exc:
                raise _Bad(f"the graph cannot be rebuilt: {exc}") from None
        expected = _expected_from_model(graph)
        layers = []
    shape = tuple(cfg.get("input_shape") or ())
    for i, layer in enumerate(layers):
        ws = _expected_weights(layer, shape, dtype)
        if ws is None:
            known = False
        else:
            for n, s in ws.items():
                expected[f"layer{i}/{n}"] = (tuple(s), dtype)
        try:
            out = layer.compute_output_shape(shape)
        except Exception as exc:  # noqa: BLE001
            raise _Bad(f"layer {i} ({type(layer).__name__}) cannot take input {shape}: {exc}") from None
        if isinstance(out, list):
            out = out[0]
        shape = tuple(out)
    declared = {}
    total = 0
    for k, m in enumerate(manifest):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("shape"), list) \
                or m.get("dtype") not in ("float32", "float64"):
            raise _Bad(f"weight manifest entry {k} must be {{'name': str, 'shape': [int...], 'dtype': "
                       "'float32' or 'float64'}")
        if m["name"] in declared:
            raise _Bad(f"the weight manifest lists {m['name'][:80]!r} twice")
        dims = m["shape"]
        if len(dims) > 4 or not all(_is_int(d) and 0 <= d <= LIMITS["vocab"] for d in dims):
            raise _Bad(f"weight manifest entry {m['name'][:80]!r} has an invalid shape {json.dumps(dims)[:60]}")
        dt = np.dtype(m["dtype"])
        total += math.prod(dims) * dt.itemsize
        if total > LIMITS["weight_bytes"]:
            raise _Bad(f"the weights add up to more than the limit of {LIMITS['weight_bytes']} bytes")
        declared[m["name"]] = (tuple(dims), dt)
    if known and declared != expected:
        missing = sorted(set(expected) - set(declared))
        extra = sorted(set(declared) - set(expected))
        diff = [n for n in expected if n in declared and declared[n] != expected[n]]
        detail = (f"missing {missing[:5]}" if missing else f"unexpected {extra[:5]}" if extra else
                  f"{diff[0]!r} is {declared[diff[0]][0]} {declared[diff[0]][1].name}, the config implies "
                  f"{expected[diff[0]][0]} {expected[diff[0]][1].name}")
        raise _Bad(f"the weight manifest does not match the layers of the config ({detail})")
    arrays = set(entries) - {"__format_version__", "__config__"}
    if arrays != set(declared):
        missing = sorted(set(declared) - arrays)
        extra = sorted(arrays - set(declared))
        raise _Bad(f"missing weight arrays {missing[:5]}" if missing else f"unexpected arrays {extra[:5]}")
    headers = {}
    for name, (dims, dt) in declared.items():
        info = entries[name]
        with zf.open(info) as fh:
            a_shape, fortran, a_dtype, hlen = _npy_header(fh, repr(name))
        if tuple(a_shape) != dims or a_dtype.kind != "f" or a_dtype.itemsize != dt.itemsize:
            raise _Bad(f"array {name!r} has shape {tuple(a_shape)} dtype {a_dtype}, the config expects shape "
                       f"{dims} dtype {dt.name}")
        if info.file_size != hlen + math.prod(dims) * dt.itemsize:
            raise _Bad(f"array {name!r}: the entry's size {info.file_size} does not match its shape {dims} "
                       f"({hlen} header bytes + {math.prod(dims) * dt.itemsize} data bytes)")
        headers[name] = (fortran, a_dtype, hlen)

    # everything checked: build (zeros, no random initialisation) and read each array into place
    if graph is not None:
        model = graph
    else:
        model = Sequential(name=cfg.get("name"), dtype=dtype.name, seed=cfg.get("seed"))
        model._layers = layers
        with initializers.skip_random_init():
            model.build(tuple(cfg["input_shape"]))
    if _expected_from_model(model) != declared:
        raise _Bad("the weight manifest does not match the layers of the config")
    for i, layer in enumerate(model.layers):
        for n in layer.weight_names:
            store = layer.params if n in layer.params else layer.buffers
            name = f"layer{i}/{n}"
            fortran, a_dtype, hlen = headers[name]
            with zf.open(entries[name]) as fh:
                fh.read(hlen)
                a = _read_data(fh, entries[name].file_size - hlen, a_dtype, store[n].shape, fortran, name)
            if not np.isfinite(a).all():
                raise _Bad(f"array {name!r} contains NaN or inf")
            np.copyto(store[n], a, casting="same_kind")
            del a
    model.meta = header.get("meta") or {}
    comp = header.get("compile")
    if compile and comp:
        _compile_from(model, comp)
    return model


def _read_data(fh, nbytes, dtype, shape, fortran, name):
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:
        chunk = fh.read(min(nbytes - got, 1 << 24))
        if not chunk:
            raise _Bad(f"array {name!r} is truncated")
        view[got:got + len(chunk)] = chunk
        got += len(chunk)
    if fh.read(1):
        raise _Bad(f"array {name!r} has trailing bytes")
    a = np.frombuffer(buf, dtype=dtype)
    return a.reshape(shape, order="F" if fortran else "C")


def _expected_from_model(model):
    return {m["name"]: (tuple(m["shape"]), np.dtype(m["dtype"])) for m in _manifest(model)}


def _compile_from(model, comp):
    from . import losses, optimizers

    def plain(d, what):
        if not isinstance(d, dict) or not isinstance(d.get("class_name"), str) \
                or not isinstance(d.get("config", {}), dict):
            raise _Bad(f"invalid compile settings: {what} must be {{'class_name': str, 'config': object}}")
        for k, v in d.get("config", {}).items():
            if not (v is None or isinstance(v, bool) or _is_num(v)):
                raise _Bad(f"invalid compile settings: {what} {k!r} must be a number, true/false or null, "
                           f"got {json.dumps(v)[:40]}")
        return d

    metrics = comp.get("metrics") or []
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise _Bad("invalid compile settings: metrics must be a list of names")
    try:
        opt_spec = comp.get("optimizer")
        opt = optimizers.deserialize(plain(opt_spec, "optimizer")) if opt_spec else "rmsprop"
        lr = getattr(opt, "learning_rate", 1.0)
        if not isinstance(opt, str) and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
            raise _Bad(f"invalid compile settings: learning_rate {lr!r}")
        model.compile(optimizer=opt, loss=losses.deserialize(plain(comp.get("loss"), "loss")), metrics=metrics)
    except _Bad:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _Bad(f"invalid compile settings: {exc}") from None
