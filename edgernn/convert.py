"""Bring models in from PyTorch and Keras: the one place for gate permutations.

edgernn stores recurrent weights in ONNX layout and gate order (docs/SPEC.md): per direction
``W`` (G*H, I), ``R`` (G*H, H) and biases ``Wb``, ``Rb`` (G*H,), LSTM gates i, o, f, c and GRU
gates z, r, h. Other frameworks order the gates differently:

============  ===================  =================  ====================================
framework     LSTM                 GRU                layout
============  ===================  =================  ====================================
ONNX/edgernn  i, o, f, c           z, r, h            W (G*H, I), R (G*H, H), Wb, Rb
PyTorch       i, f, g(=c), o       r, z, n(=h)        weight_ih (G*H, I), weight_hh, b_ih, b_hh
Keras         i, f, c, o           z, r, h            kernel (I, G*H), recurrent_kernel (H, G*H)
============  ===================  =================  ====================================

Copying weights without the permutation runs without an error and gives wrong numbers, so
use :func:`from_torch` / :func:`from_keras` instead of ``set_weights``:

>>> import torch, edgernn.convert                                     # doctest: +SKIP
>>> lstm = torch.nn.LSTM(3, 16, num_layers=2, batch_first=True)       # doctest: +SKIP
>>> head = torch.nn.Linear(16, 1)                                     # doctest: +SKIP
>>> model = edgernn.convert.from_torch([lstm, head], return_sequences=False)   # doctest: +SKIP
>>> # model.predict(x) == head(lstm(x)[0][:, -1])                     # doctest: +SKIP

Neither PyTorch nor Keras is imported here: the objects are read duck-typed (class names,
attributes, ``get_config()``/``get_weights()``), so neither is a dependency of edgernn.
The caller's tensors and arrays are copied, never written to.
"""

from __future__ import annotations

import numpy as np

from .layers import GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding, Masking, SimpleRNN
from .models import Sequential

__all__ = ["from_torch", "from_keras", "from_keras_weights", "ConversionError",
           "torch_to_onnx_gates", "keras_to_onnx_gates", "GATE_ORDER"]


class ConversionError(ValueError):
    """A module, layer or option with no faithful edgernn form (the message names it)."""


# Gate block order of each framework; the permutations below are derived from these names.
GATE_ORDER = {
    "onnx": {"lstm": "iofc", "gru": "zrh", "rnn": "h"},
    "torch": {"lstm": "ifco", "gru": "rzh", "rnn": "h"},  # torch calls c "g" and h "n"
    "keras": {"lstm": "ifco", "gru": "zrh", "rnn": "h"},
}


def _gate_perm(src: str, cell: str):
    onnx_order = GATE_ORDER["onnx"][cell]
    src_order = GATE_ORDER[src][cell]
    return [src_order.index(g) for g in onnx_order]


def _permute_rows(a, perm, H):
    """Reorder the gate blocks (each H rows) along axis 0 of ``a`` (G*H, ...) -> a new array."""
    a = np.asarray(a)
    return np.concatenate([a[k * H:(k + 1) * H] for k in perm], axis=0)


def torch_to_onnx_gates(a, cell):
    """PyTorch gate blocks (axis 0, G*H rows) in ONNX order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h.

    Parameters
    ----------
    a : ndarray (G*H, ...) or (G*H,)
        ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}`` or ``bias_hh_l{k}`` as numpy.
    cell : {"lstm", "gru", "rnn"}

    Returns
    -------
    ndarray, same shape (a new array)
    """
    a = np.asarray(a)
    G = len(GATE_ORDER["onnx"][cell])
    return _permute_rows(a, _gate_perm("torch", cell), a.shape[0] // G)


def keras_to_onnx_gates(a, cell):
    """Keras gate blocks (last axis, G*H columns) in ONNX order, transposed to rows.

    Parameters
    ----------
    a : ndarray (I, G*H), (H, G*H) or (G*H,)
        ``kernel``, ``recurrent_kernel`` or ``bias``.
    cell : {"lstm", "gru", "rnn"}

    Returns
    -------
    ndarray (G*H, I), (G*H, H) or (G*H,)
    """
    a = np.asarray(a)
    G = len(GATE_ORDER["onnx"][cell])
    t = a.T if a.ndim == 2 else a
    return _permute_rows(t, _gate_perm("keras", cell), t.shape[0] // G)


# -------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------
def _np(t):
    """A torch tensor / parameter / array as a fresh numpy array (never a view of the caller's)."""
    if hasattr(t, "detach"):
        t = t.detach()
        if hasattr(t, "cpu"):
            t = t.cpu()
        t = t.numpy()
    return np.array(t, copy=True)


def _assign(layer, name, value):
    """Copy ``value`` into ``layer``'s parameter or buffer ``name`` (shapes must agree)."""
    store = layer.params if name in layer.params else layer.buffers
    if name not in store:
        raise ConversionError(f"internal: layer {layer.name!r} has no array {name!r}")
    value = np.asarray(value)
    if value.shape != store[name].shape:
        raise ConversionError(f"layer {layer.name!r}: {name} has shape {store[name].shape}, "
                              f"the source gives {value.shape}")
    store[name][...] = value


def _set_recurrent(layer, W, R, Wb, Rb):
    """Store ONNX-layout weights (D, G*H, I), (D, G*H, H), biases (D, G*H) or None in ``layer``.

    Where edgernn trains only ``Wb`` (SimpleRNN, LSTM, GRU reset_after=False), the two biases
    only ever appear as a sum, so ``Wb + Rb`` goes into ``Wb`` and ``Rb`` stays zero.
    """
    _assign(layer, "W", W)
    _assign(layer, "R", R)
    if Wb is None:
        return
    Wb = np.asarray(Wb, np.float64)
    Rb = np.zeros_like(Wb) if Rb is None else np.asarray(Rb, np.float64)
    if "Rb" in layer.params:
        _assign(layer, "Wb", Wb)
        _assign(layer, "Rb", Rb)
    else:
        _assign(layer, "Wb", Wb + Rb)


def _dtype_of(arrays, dtype):
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ConversionError(f"dtype: expected float32 or float64, got {dtype!r}")
        return dt
    return np.dtype(np.float64) if any(np.asarray(a).dtype == np.float64 for a in arrays) else np.dtype(np.float32)


# -------------------------------------------------------------------------------------------
# PyTorch
# -------------------------------------------------------------------------------------------
_TORCH_RNN = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
_TORCH_ACT = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softsign": "softsign",
              "Softmax": "softmax"}
_TORCH_SKIP = ("Identity", "Dropout")


def _torch_modules(module):
    """Flatten ``module`` (a module, nn.Sequential/ModuleList or a list of them) into a list."""
    if isinstance(module, (list, tuple)):
        out = []
        for m in module:
            out.extend(_torch_modules(m))
        return out
    name = type(module).__name__
    if name in ("Sequential", "ModuleList"):
        return _torch_modules(list(module.children()))
    return [module]


def _torch_recurrent(m, index, is_last, return_sequences):
    """Layers (with their weights as ONNX arrays) for one nn.RNN/LSTM/GRU module."""
    kind = type(m).__name__
    cell = _TORCH_RNN[kind]
    where = f"module {index} ({kind})"
    if int(getattr(m, "proj_size", 0) or 0) > 0:
        raise ConversionError(f"{where}: proj_size={m.proj_size} (LSTM projections) has no edgernn form")
    mode = getattr(m, "mode", "")
    activation = "tanh"
    if cell == "rnn":
        nonlin = getattr(m, "nonlinearity", "tanh")
        if nonlin not in ("tanh", "relu"):
            raise ConversionError(f"{where}: nonlinearity={nonlin!r} is not supported")
        activation = nonlin
    elif mode and mode != kind:
        raise ConversionError(f"{where}: unexpected mode {mode!r}")
    H, L = int(m.hidden_size), int(m.num_layers)
    D = 2 if m.bidirectional else 1
    bias = bool(m.bias)
    dropout = float(getattr(m, "dropout", 0.0) or 0.0)
    out = []
    for k in range(L):
        W, R, Wb, Rb = [], [], [], []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            W.append(torch_to_onnx_gates(_np(getattr(m, "weight_ih" + sfx)), cell))
            R.append(torch_to_onnx_gates(_np(getattr(m, "weight_hh" + sfx)), cell))
            if bias:
                Wb.append(torch_to_onnx_gates(_np(getattr(m, "bias_ih" + sfx)), cell))
                Rb.append(torch_to_onnx_gates(_np(getattr(m, "bias_hh" + sfx)), cell))
        seq = True if (k < L - 1 or not is_last) else bool(return_sequences)
        opts = dict(use_bias=bias, return_sequences=seq)
        if cell == "lstm":
            inner = LSTM(H, unit_forget_bias=False, **opts)
        elif cell == "gru":
            inner = GRU(H, reset_after=True, **opts)  # PyTorch = ONNX linear_before_reset=1
        else:
            inner = SimpleRNN(H, activation=activation, **opts)
        layer = Bidirectional(inner, merge_mode="concat") if D == 2 else inner
        arrays = (np.stack(W), np.stack(R), np.stack(Wb) if bias else None, np.stack(Rb) if bias else None)
        out.append((layer, arrays))
        if dropout > 0 and k < L - 1:
            out.append((Dropout(dropout), None))  # identity in predict (PyTorch eval mode)
    return out, int(m.input_size), bool(m.batch_first)


def from_torch(module, *, return_sequences=True, dtype=None, name=None):
    """Build an edgernn ``Sequential`` equal to a PyTorch model.

    Parameters
    ----------
    module : torch.nn.Module or list of modules
        ``nn.RNN`` (``nonlinearity`` tanh or relu), ``nn.LSTM``, ``nn.GRU`` (any ``num_layers``,
        ``bidirectional``, ``batch_first``, ``bias``, ``dropout``), ``nn.Linear``, ``nn.Embedding``
        (first only), ``nn.ReLU``, ``nn.Tanh``, ``nn.Sigmoid``, ``nn.Softsign``,
        ``nn.Softmax(dim=-1)``, ``nn.Dropout``, ``nn.Identity``; an ``nn.Sequential`` or
        ``nn.ModuleList`` of those, or a Python list of them in the order the data flows (a
        custom module's ``forward`` cannot be read: pass its parts, e.g.
        ``[net.lstm, net.fc]``). A recurrent module passes on its output sequence, as in
        ``out, _ = lstm(x)``.
    return_sequences : bool
        What the *last* recurrent module passes on. True: its output sequence
        ``out`` (B, T, D*H). False: the final hidden state of its top layer, ``h_n[-1]``
        (bidirectional: ``torch.cat([h_n[-2], h_n[-1]], dim=-1)``); for a unidirectional
        module without padding this equals ``out[:, -1]``.
    dtype : {"float32", "float64"}, optional
        Default: float64 if the module's weights are float64, else float32.
    name : str, optional
        Model name.

    Returns
    -------
    Sequential
        Built, with the module's weights; ``predict(x)`` with batch-first ``x`` (B, T, I)
        equals the PyTorch output (eval mode). A module with ``batch_first=False`` takes
        (T, B, I) in PyTorch: give edgernn the same data batch-first; the outputs then
        correspond the same way.

    Raises
    ------
    ConversionError
        A module or option with no edgernn form (``proj_size``, other activations, a custom
        module), naming the module and the option.
    """
    mods = _torch_modules(module)
    if not mods:
        raise ConversionError("from_torch: no modules given")
    last_rnn = max((i for i, m in enumerate(mods) if type(m).__name__ in _TORCH_RNN), default=None)
    specs = []  # (layer, arrays or None, kind)
    input_shape = None
    batch_first = None
    all_arrays = []
    for i, m in enumerate(mods):
        kind = type(m).__name__
        where = f"module {i} ({kind})"
        if not hasattr(m, "parameters") and not hasattr(m, "state_dict"):
            raise ConversionError(f"{where}: not a torch.nn.Module")
        if kind in _TORCH_RNN:
            layers, I, bf = _torch_recurrent(m, i, i == last_rnn, return_sequences)
            if batch_first is not None and bf != batch_first:
                raise ConversionError(f"{where}: batch_first={bf} differs from an earlier recurrent module")
            batch_first = bf
            if input_shape is None:
                input_shape = (None, I)
            for layer, arrays in layers:
                specs.append((layer, arrays, "rnn"))
                if arrays is not None:
                    all_arrays.extend(a for a in arrays if a is not None)
        elif kind == "Linear":
            Wt = _np(m.weight)  # (out, in)
            b = None if getattr(m, "bias", None) is None else _np(m.bias)
            if input_shape is None:
                input_shape = (Wt.shape[1],) if last_rnn is None else (None, Wt.shape[1])
            specs.append((Dense(Wt.shape[0], use_bias=b is not None), (Wt.T, b), "dense"))
            all_arrays.append(Wt)
        elif kind == "Embedding":
            if specs:
                raise ConversionError(f"{where}: nn.Embedding is supported as the first module only")
            if getattr(m, "max_norm", None) is not None:
                raise ConversionError(f"{where}: max_norm={m.max_norm} (renormalising lookups) is not supported")
            E = _np(m.weight)
            input_shape = (None,)
            specs.append((Embedding(E.shape[0], E.shape[1]), (E,), "embedding"))
            all_arrays.append(E)
        elif kind in _TORCH_ACT:
            if kind == "Softmax":
                dim = getattr(m, "dim", None)
                rank = 3 if (last_rnn is not None and (i < last_rnn or return_sequences)) else 2
                if dim is None or dim not in (-1, rank - 1):
                    raise ConversionError(f"{where}: dim={dim}; only a softmax over the last axis (dim=-1) "
                                          "is supported")
            act = _TORCH_ACT[kind]
            prev = specs[-1] if specs else None
            if prev is not None and prev[2] == "dense" and prev[0].activation == "linear":
                prev[0].activation = act  # fuse into the Dense before it
            else:
                specs.append((Activation(act), None, "act"))
        elif kind in _TORCH_SKIP:
            if kind == "Dropout":
                specs.append((Dropout(float(m.p)), None, "dropout"))
        else:
            raise ConversionError(
                f"{where}: not supported (supported: nn.RNN/LSTM/GRU, nn.Linear, nn.Embedding, "
                f"{', '.join('nn.' + k for k in _TORCH_ACT)}, nn.Dropout, nn.Identity, nn.Sequential; "
                "for a custom module pass its parts in order, e.g. from_torch([net.lstm, net.fc]))")
    if input_shape is None:
        raise ConversionError("from_torch: the input size is unknown (start with a recurrent module, "
                              "nn.Linear or nn.Embedding)")
    dt = _dtype_of(all_arrays, dtype)
    model = Sequential(name=name or "from_torch", dtype=dt)
    first = True
    for layer, _, _ in specs:
        if first:
            layer.input_spec = tuple(input_shape)
            first = False
        model.add(layer)
    model.build(tuple(input_shape))
    for layer, arrays, kind in specs:
        if arrays is None:
            continue
        if kind == "rnn":
            _set_recurrent(layer, *arrays)
        elif kind == "dense":
            _assign(layer, "kernel", arrays[0])
            if arrays[1] is not None:
                _assign(layer, "bias", arrays[1])
        elif kind == "embedding":
            _assign(layer, "embeddings", arrays[0])
    model.meta["converted_from"] = {"framework": "pytorch", "batch_first": batch_first,
                                    "return_sequences": bool(return_sequences)}
    return model


# -------------------------------------------------------------------------------------------
# Keras
# -------------------------------------------------------------------------------------------
_KERAS_ACTS = {"linear", "tanh", "sigmoid", "relu", "softsign", "softplus", "elu", "softmax"}
_KERAS_SKIP = {"InputLayer", "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "ActivityRegularization"}


def _keras_act(value, where, what, recurrent=False):
    name = value
    if isinstance(value, dict):  # Keras 3 may serialise {"class_name": ..., "config": {"name": ...}}
        name = value.get("config", {}).get("name", value.get("class_name"))
    name = "linear" if name is None else str(name).lower()
    if name == "hard_sigmoid":
        raise ConversionError(f"{where}: {what}='hard_sigmoid' is refused: Keras 2 defines it as "
                              "clip(0.2x + 0.5) and Keras 3 as clip(x/6 + 0.5), and the config does not "
                              "say which")
    if name not in _KERAS_ACTS or (recurrent and name == "softmax"):
        raise ConversionError(f"{where}: {what}={name!r} has no edgernn form")
    return name


def _keras_rnn_layer(cls_name, cfg, where, force_seq=None):
    """(layer, cell) for a Keras SimpleRNN/LSTM/GRU config."""
    if cfg.get("time_major"):
        raise ConversionError(f"{where}: time_major=True is not supported")
    if cfg.get("unroll"):
        pass  # unrolling changes speed, not numbers
    units = int(cfg["units"])
    opts = dict(use_bias=bool(cfg.get("use_bias", True)),
                return_sequences=bool(cfg.get("return_sequences", False)) if force_seq is None else force_seq,
                return_state=bool(cfg.get("return_state", False)),
                go_backwards=bool(cfg.get("go_backwards", False)), stateful=bool(cfg.get("stateful", False)),
                dropout=float(cfg.get("dropout", 0.0) or 0.0))
    act = _keras_act(cfg.get("activation", "tanh"), where, "activation", True)
    if cls_name == "SimpleRNN":
        return SimpleRNN(units, activation=act, **opts), "rnn"
    ract = _keras_act(cfg.get("recurrent_activation", "sigmoid"), where, "recurrent_activation", True)
    if cls_name == "LSTM":
        return LSTM(units, activation=act, recurrent_activation=ract, unit_forget_bias=False, **opts), "lstm"
    return GRU(units, activation=act, recurrent_activation=ract,
               reset_after=bool(cfg.get("reset_after", True)), **opts), "gru"


def _keras_rnn_arrays(cell, weights, units, use_bias, reset_after, where):
    """Keras [kernel, recurrent_kernel, bias] -> ONNX (W, R, Wb, Rb) for one direction."""
    n = 3 if use_bias else 2
    if len(weights) < n:
        raise ConversionError(f"{where}: expected {n} weight arrays (kernel, recurrent_kernel"
                              f"{', bias' if use_bias else ''}), got {len(weights)}")
    K, RK = np.asarray(weights[0]), np.asarray(weights[1])
    G = len(GATE_ORDER["onnx"][cell])
    if K.ndim != 2 or K.shape[1] != G * units or RK.shape != (units, G * units):
        raise ConversionError(f"{where}: kernel {K.shape} / recurrent_kernel {RK.shape} do not match "
                              f"units={units} ({G} gates: expected (I, {G * units}) and ({units}, {G * units}))")
    W = keras_to_onnx_gates(K, cell)
    R = keras_to_onnx_gates(RK, cell)
    Wb = Rb = None
    if use_bias:
        b = np.asarray(weights[2])
        if cell == "gru" and reset_after:
            if b.shape != (2, G * units):
                raise ConversionError(f"{where}: GRU(reset_after=True) bias must be (2, {G * units}), got {b.shape}")
            Wb, Rb = keras_to_onnx_gates(b[0], cell), keras_to_onnx_gates(b[1], cell)
        else:
            if b.shape != (G * units,):
                raise ConversionError(f"{where}: bias must be ({G * units},), got {b.shape}")
            Wb = keras_to_onnx_gates(b, cell)
    return W, R, Wb, Rb, n, K.shape[0]


def from_keras_weights(layers, input_shape=None, *, dtype=None, name=None):
    """Build an edgernn ``Sequential`` from Keras layer configs and weights.

    Parameters
    ----------
    layers : list of (class_name, config, weights)
        One entry per Keras layer in order: its class name (``"LSTM"``), ``layer.get_config()``
        and ``layer.get_weights()`` in Keras' layout: recurrent ``kernel`` (I, G*H) with gates
        i,f,c,o (LSTM) or z,r,h (GRU), ``recurrent_kernel`` (H, G*H), ``bias`` (G*H,) or (2, 3H)
        for ``GRU(reset_after=True)``; Dense ``kernel`` (I, U), ``bias`` (U,); Bidirectional:
        forward weights then backward weights. Supported: SimpleRNN, LSTM, GRU,
        Bidirectional (concat/sum/mul/ave), Dense, TimeDistributed(Dense), Activation, Dropout,
        Masking, Embedding, InputLayer. Masking follows edgernn's semantics: trailing padding
        only, and padded steps of a sequence output are zeros (Keras repeats the last output
        there), so outputs agree on the valid steps.
        ``recurrent_dropout`` and initializers are training-time settings and are ignored.
    input_shape : tuple, optional
        One sample's shape without the batch axis; default: from an ``InputLayer``'s
        ``batch_shape``/``batch_input_shape`` or the first layer's config, else ``(None, I)``
        with I from the first kernel.
    dtype : {"float32", "float64"}, optional
        Default: float64 if the weights are, else float32.
    name : str, optional

    Returns
    -------
    Sequential
        ``predict`` equals the Keras model's ``predict``.

    Raises
    ------
    ConversionError
        Layers or options without an edgernn form, naming the layer and option.
    """
    specs = []
    all_arrays = []
    shape = None if input_shape is None else tuple(input_shape)
    for idx, entry in enumerate(layers):
        try:
            cls_name, cfg, weights = entry
        except (TypeError, ValueError):
            raise ConversionError(f"layer {idx}: expected (class_name, config, weights)") from None
        cfg = dict(cfg or {})
        weights = [np.asarray(w) for w in (weights or [])]
        all_arrays.extend(weights)
        where = f"Keras layer {idx} {cfg.get('name', '')!r} ({cls_name})"
        if shape is None:
            bs = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            if bs is not None:
                shape = tuple(bs)[1:]
        if cls_name == "InputLayer":
            continue
        if cls_name == "TimeDistributed":
            inner = cfg.get("layer") or {}
            if inner.get("class_name") != "Dense":
                raise ConversionError(f"{where}: TimeDistributed({inner.get('class_name')!r}) is not supported "
                                      "(only TimeDistributed(Dense))")
            cls_name, cfg = "Dense", dict(inner.get("config") or {})
        if cls_name == "Masking":
            specs.append((Masking(float(cfg.get("mask_value", 0.0))), None, "plain"))
            continue
        if cls_name in _KERAS_SKIP:
            if cls_name == "Dropout":
                specs.append((Dropout(float(cfg.get("rate", 0.0))), None, "plain"))
            continue
        if cls_name in ("SimpleRNN", "LSTM", "GRU"):
            layer, cell = _keras_rnn_layer(cls_name, cfg, where)
            W, R, Wb, Rb, _, I = _keras_rnn_arrays(cell, weights, layer.units, layer.use_bias,
                                                   getattr(layer, "reset_after", True), where)
            arrays = (W[None], R[None], None if Wb is None else Wb[None], None if Rb is None else Rb[None])
            if shape is None:
                shape = (None, I)
            specs.append((layer, arrays, "rnn"))
        elif cls_name == "Bidirectional":
            inner = cfg.get("layer") or {}
            icls, icfg = inner.get("class_name"), dict(inner.get("config") or {})
            if icls not in ("SimpleRNN", "LSTM", "GRU"):
                raise ConversionError(f"{where}: wraps {icls!r}; only SimpleRNN, LSTM and GRU are supported")
            mode = cfg.get("merge_mode", "concat")
            if mode not in ("concat", "sum", "mul", "ave"):
                raise ConversionError(f"{where}: merge_mode={mode!r} has no edgernn form (it returns a list)")
            back = cfg.get("backward_layer")
            if back is not None:
                bcfg = dict(back.get("config") or {})
                for key in ("units", "activation", "recurrent_activation", "use_bias", "reset_after"):
                    if key in bcfg and key in icfg and bcfg[key] != icfg[key]:
                        raise ConversionError(f"{where}: backward_layer differs from layer in {key!r} "
                                              "(edgernn runs both directions with one configuration)")
            icfg["go_backwards"] = False
            tmpl, cell = _keras_rnn_layer(icls, icfg, where)
            units, ub, ra = tmpl.units, tmpl.use_bias, getattr(tmpl, "reset_after", True)
            fw = _keras_rnn_arrays(cell, weights, units, ub, ra, where + " forward")
            bw = _keras_rnn_arrays(cell, weights[fw[4]:], units, ub, ra, where + " backward")
            arrays = (np.stack([fw[0], bw[0]]), np.stack([fw[1], bw[1]]),
                      None if fw[2] is None else np.stack([fw[2], bw[2]]),
                      None if fw[3] is None else np.stack([fw[3], bw[3]]))
            if shape is None:
                shape = (None, fw[5])
            specs.append((Bidirectional(tmpl, merge_mode=mode), arrays, "rnn"))
        elif cls_name == "Dense":
            act = _keras_act(cfg.get("activation"), where, "activation")
            ub = bool(cfg.get("use_bias", True))
            if len(weights) != (2 if ub else 1):
                raise ConversionError(f"{where}: expected {'kernel, bias' if ub else 'kernel'}, "
                                      f"got {len(weights)} arrays")
            K = weights[0]
            if shape is None:
                shape = (K.shape[0],)
            specs.append((Dense(K.shape[1], activation=act, use_bias=ub), (K, weights[1] if ub else None),
                          "dense"))
        elif cls_name == "Activation":
            specs.append((Activation(_keras_act(cfg.get("activation"), where, "activation")), None, "plain"))
        elif cls_name == "Embedding":
            if specs:
                raise ConversionError(f"{where}: Embedding is supported as the first layer only")
            E = weights[0]
            if shape is None:
                shape = (None,)
            specs.append((Embedding(E.shape[0], E.shape[1], mask_zero=bool(cfg.get("mask_zero", False))),
                          (E,), "embedding"))
        else:
            raise ConversionError(f"{where}: layer class {cls_name!r} is not supported (supported: SimpleRNN, "
                                  "LSTM, GRU, Bidirectional, Dense, TimeDistributed(Dense), Activation, "
                                  "Dropout, Masking, Embedding, InputLayer)")
    if not specs:
        raise ConversionError("from_keras: no layers")
    dt = _dtype_of(all_arrays, dtype)
    model = Sequential(name=name or "from_keras", dtype=dt)
    for layer, _, _ in specs:
        model.add(layer)
    model.build(shape)
    for layer, arrays, kind in specs:
        if kind == "rnn":
            _set_recurrent(layer, *arrays)
        elif kind == "dense":
            _assign(layer, "kernel", arrays[0])
            if arrays[1] is not None:
                _assign(layer, "bias", arrays[1])
        elif kind == "embedding":
            _assign(layer, "embeddings", arrays[0])
    model.meta["converted_from"] = {"framework": "keras"}
    return model


def from_keras(model_or_layers, input_shape=None, *, dtype=None, name=None):
    """Build an edgernn ``Sequential`` from a Keras model object or a list of Keras layers.

    Reads each layer's ``get_config()`` and ``get_weights()`` and its class name (duck-typed:
    TensorFlow/Keras are not imported). See :func:`from_keras_weights` for what is supported.

    Parameters
    ----------
    model_or_layers : keras.Model or list of keras layers
        A Sequential-like model (its ``layers`` in order).
    input_shape : tuple, optional
        One sample's shape without the batch axis; default from the model's ``input_shape``.
    dtype, name
        As in :func:`from_keras_weights`.

    Returns
    -------
    Sequential
    """
    layers = getattr(model_or_layers, "layers", model_or_layers)
    if input_shape is None:
        try:
            ishape = getattr(model_or_layers, "input_shape", None)
        except (AttributeError, ValueError):  # Keras raises when the model has no defined input
            ishape = None
        if isinstance(ishape, tuple) and len(ishape) >= 2:
            input_shape = tuple(ishape)[1:]
    entries = [(type(layer).__name__, layer.get_config(), layer.get_weights()) for layer in layers]
    return from_keras_weights(entries, input_shape, dtype=dtype,
                              name=name or getattr(model_or_layers, "name", None))
