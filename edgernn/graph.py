"""The functional API: ``Input`` tensors, layers called on them, and ``Model(inputs, outputs)``.

Keras' habit, unchanged::

    q = Input(shape=(None, 3))
    x = LSTM(16, return_sequences=True)(q)
    y = Dense(1)(GlobalAveragePooling1D()(x))
    model = Model(q, y)

Calling a layer on a :class:`KerasTensor` builds the layer (checking the shapes, as Keras does)
and records a :class:`Node` instead of computing anything. ``Model`` collects the nodes between
its inputs and outputs in an order where every node comes after the nodes it reads from, and
runs them in that order (``forward``) and in reverse (``backward``, summing the gradients of a
tensor read by several nodes and of a layer called several times). Everything else (compile,
fit, predict, evaluate, callbacks, divergence checks, weights) is ``Sequential``'s: a
``Model`` is a ``Sequential`` whose layers form a graph instead of a chain.

Several inputs travel through the batching code as one :class:`_Multi` (indexing applies to
every array); several outputs come back from ``predict`` as a list, and train with one loss
per output (``compile(loss=[...] or {name: ...}, loss_weights=...)``), as in Keras.
"""

from __future__ import annotations

import inspect
import sys

import numpy as np

from . import losses as losses_mod
from . import metrics as metrics_mod
from .layers.core import Input, KerasTensor, _snake
from .models import Sequential, Summary, _check_shape, _prepare_array

__all__ = ["Input", "KerasTensor", "Model", "Node"]

_INT_KINDS = "iu"


# ------------------------------------------------------------------------------------------------
# symbolic tensors and nodes
# ------------------------------------------------------------------------------------------------
class Node:
    """One call of a layer on symbolic tensors.

    Attributes
    ----------
    layer : Layer
    inputs : list of KerasTensor
        The main inputs (one, or several for a ``multi_input`` layer), then the initial states.
    n_main : int
    n_state : int
        ``initial_state`` tensors (recurrent layers).
    kwargs : dict
        Call options (JSON-able), e.g. ``{"return_attention_scores": True}``.
    outputs : list of KerasTensor
    """

    def __init__(self, layer, inputs, n_main, n_state, kwargs):
        self.layer = layer
        self.inputs = list(inputs)
        self.n_main = n_main
        self.n_state = n_state
        self.kwargs = dict(kwargs)
        self.outputs = []


def is_symbolic(x):
    """True for a KerasTensor or a (nested) list/tuple holding one."""
    if isinstance(x, KerasTensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(is_symbolic(v) for v in x)
    return False


def _check_call_kwargs(layer, kwargs):
    sig = inspect.signature(layer.forward)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for k, v in kwargs.items():
        if k in ("training", "lengths", "need_grad") or (k not in sig.parameters and not accepts_any):
            raise TypeError(f"layer {layer.name or type(layer).__name__!r}: unexpected call argument {k!r}")
        if not (v is None or isinstance(v, (bool, int, float, str))):
            raise TypeError(f"layer {layer.name or type(layer).__name__!r}: call argument {k!r} must be a plain "
                            f"value (bool, number, string), got {type(v).__name__}")


def call_symbolic(layer, x, kwargs):
    """``layer(x, **kwargs)`` on symbolic tensors: build the layer and record a :class:`Node`."""
    kwargs = dict(kwargs)
    kwargs.pop("training", None)  # Keras' call-time training flag: the model decides
    if kwargs.pop("mask", None) is not None:
        raise ValueError(f"layer {layer.name!r}: pass masks through Masking / Embedding(mask_zero=True) "
                         "(they travel as lengths), not as mask=")
    init = kwargs.pop("initial_state", None)
    multi = bool(getattr(layer, "multi_input", False))
    if multi:
        if not isinstance(x, (list, tuple)) or not x or not all(isinstance(t, KerasTensor) for t in x):
            raise TypeError(f"layer {layer.name or type(layer).__name__!r} takes a list of tensors, e.g. "
                            f"{type(layer).__name__}()([a, b])")
        main = list(x)
    else:
        if isinstance(x, (list, tuple)) and len(x) == 1:
            x = x[0]
        if not isinstance(x, KerasTensor):
            raise TypeError(f"layer {layer.name or type(layer).__name__!r} takes one tensor, got "
                            f"{type(x).__name__}" + (" (a list: use a merge layer such as Concatenate)"
                                                     if isinstance(x, (list, tuple)) else ""))
        main = [x]
    states = []
    if init is not None:
        if not hasattr(layer, "num_states"):
            raise TypeError(f"layer {layer.name!r}: initial_state is for recurrent layers")
        states = list(init) if isinstance(init, (list, tuple)) else [init]
        if not all(isinstance(t, KerasTensor) for t in states):
            raise TypeError(f"layer {layer.name!r}: initial_state must be tensors of the model (mixing "
                            "arrays and tensors is not supported)")
    _check_call_kwargs(layer, kwargs)
    shapes = [t.sample_shape for t in main]
    in_shape = shapes if multi else shapes[0]
    if not layer.built:
        layer.build(in_shape, rng=np.random.default_rng())
        layer._fresh = True  # built here: a Model(seed=...) may initialise it again, reproducibly
    elif not multi and tuple(layer.input_shape)[-1:] != tuple(in_shape)[-1:]:
        raise ValueError(f"layer {layer.name!r} was built for input {layer.input_shape}, but is called on "
                         f"{tuple(in_shape)}")
    shape_kw = {k: v for k, v in kwargs.items()
                if k in inspect.signature(layer.compute_output_shape).parameters}
    out = layer.compute_output_shape(in_shape, **shape_kw) if shape_kw else layer.output_shape
    if states:
        D = getattr(layer, "num_directions", 1)
        want = layer.num_states * D
        if len(states) != want:
            raise ValueError(f"layer {layer.name!r}: expected {want} initial state tensors, got {len(states)}")
        for t in states:
            if t.sample_shape != (layer.units,):
                raise ValueError(f"layer {layer.name!r}: each initial state must have shape (batch, "
                                 f"{layer.units}), got {t.shape}")
    node = Node(layer, main + states, len(main), len(states), kwargs)
    outs = out if isinstance(out, list) else [out]
    dtype = layer.dtype
    node.outputs = [KerasTensor(s, dtype, node, k) for k, s in enumerate(outs)]
    return node.outputs if isinstance(out, list) else node.outputs[0]


# ------------------------------------------------------------------------------------------------
# several arrays as one batch
# ------------------------------------------------------------------------------------------------
class _Multi:
    """Arrays of the same batch (a model's inputs, targets or lengths) moved through the batching
    code as one: indexing applies to each; ``shape``/``ndim`` are the first array's."""

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = list(items)

    def _ref(self):
        return next(a for a in self.items if a is not None)

    @property
    def shape(self):
        return self._ref().shape

    @property
    def ndim(self):
        return self._ref().ndim

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        return _Multi([None if a is None else a[idx] for a in self.items])


def _items(v, n):
    if isinstance(v, _Multi):
        return v.items
    return [v] * n if v is None else [v]


class _OutputMetric:
    """A metric on one output of a multi-output model (Keras names it ``<output>_<metric>``)."""

    def __init__(self, metric, k, prefix):
        self.metric, self.k = metric, k
        self.name = f"{prefix}_{metric.name}"

    def reset(self):
        self.metric.reset()

    def update(self, y, pred, mask=None):
        self.metric.update(y.items[self.k], pred[self.k], None if mask is None else mask[self.k])

    def result(self):
        return self.metric.result()


class _MultiLoss:
    """The weighted sum of one loss per output."""

    sparse = False

    def __init__(self, losses, weights):
        self.losses, self.weights = losses, weights

    def value_and_grad(self, y, pred, mask, sample_weight=None):
        total, grads = 0.0, []
        for k, (loss, w) in enumerate(zip(self.losses, self.weights, strict=True)):
            if loss is None:
                grads.append(None)
                continue
            m = None if mask is None else mask[k]
            if sample_weight is None:
                v, g = loss.value_and_grad(y.items[k], pred[k], m)
            else:
                v, g = loss.value_and_grad(y.items[k], pred[k], m, sample_weight=sample_weight)
            total += w * v
            grads.append(g if w == 1.0 else g * g.dtype.type(w))
        return total, grads


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------
def _as_list(v, what):
    if isinstance(v, KerasTensor):
        return [v], True
    if isinstance(v, dict):
        raise TypeError(f"Model: {what} as a dict is not supported; give a tensor or a list of tensors")
    if isinstance(v, (list, tuple)) and v and all(isinstance(t, KerasTensor) for t in v):
        return list(v), False
    raise TypeError(f"Model: {what} must be a tensor from Input(...) / a layer call, or a list of them; "
                    f"got {type(v).__name__}")


def _collect(inputs, outputs):
    """Nodes between ``inputs`` and ``outputs``, each after the nodes it reads from."""
    given = {id(t) for t in inputs}
    order, seen, visiting = [], set(), set()

    def visit(t, path):
        if id(t) in given:
            return
        node = t.node
        if node is None:
            raise ValueError(f"Model: the graph is disconnected: output depends on input {t.name or t!r}, "
                             f"which is not in inputs ({path})")
        if id(node) in seen:
            return
        if id(node) in visiting:
            raise ValueError("Model: the graph has a cycle")
        visiting.add(id(node))
        stack = [(node, 0)]
        while stack:  # iterative depth-first search (deep graphs do not hit the recursion limit)
            nd, k = stack.pop()
            if k < len(nd.inputs):
                stack.append((nd, k + 1))
                s = nd.inputs[k]
                if id(s) in given:
                    continue
                if s.node is None:
                    raise ValueError(f"Model: the graph is disconnected: layer {nd.layer.name!r} reads input "
                                     f"{s.name or 'tensor'} {s.shape}, which is not in inputs")
                if id(s.node) in seen:
                    continue
                if id(s.node) in visiting:
                    raise ValueError("Model: the graph has a cycle")
                visiting.add(id(s.node))
                stack.append((s.node, 0))
            else:
                visiting.discard(id(nd))
                seen.add(id(nd))
                order.append(nd)

    for t in outputs:
        visit(t, f"output {t!r}")
    return order


class Model(Sequential):
    """A model whose layers form a graph (Keras' functional ``Model``).

    Parameters
    ----------
    inputs : KerasTensor or list of KerasTensor
        From ``Input(...)``.
    outputs : KerasTensor or list of KerasTensor
        Tensors computed from ``inputs`` by calling layers.
    name : str, optional
    dtype : {"float32", "float64"}
    seed : int, optional
        Initialises again, from this seed, the weights of every layer that was built by the
        calls defining this model (not layers built or trained before), and seeds shuffling and
        dropout like ``Sequential(seed=...)``.

    Notes
    -----
    ``predict`` takes one array per input (a list, in the order of ``inputs``, or a dict by input
    name) and returns one array per output (a list when there are several). ``fit`` takes the
    targets the same way; ``compile(loss=...)`` takes one loss for all outputs, a list, or a dict
    by output layer name, and ``loss_weights``. ``lengths=`` is one array per input (None
    entries allowed).
    """

    def __init__(self, inputs=None, outputs=None, name=None, dtype="float32", seed=None, **kwargs):
        if kwargs:
            raise TypeError(f"Model: unexpected arguments {sorted(kwargs)}")
        if inputs is None or outputs is None:
            raise TypeError("Model: give inputs and outputs, e.g. Model(inputs=x_in, outputs=y); for a stack of "
                            "layers use Sequential([...])")
        ins, self._single_input = _as_list(inputs, "inputs")
        outs, self._single_output = _as_list(outputs, "outputs")
        for t in ins:
            if t.node is not None:
                raise ValueError(f"Model: inputs must come from Input(...), got the output of layer "
                                 f"{t.node.layer.name!r}")
        if len({id(t) for t in ins}) != len(ins):
            raise ValueError("Model: the same input is given twice")
        super().__init__(name=name or "model", dtype=dtype, seed=seed)
        self._inputs, self._outputs = ins, outs
        self._nodes = _collect(ins, outs)
        used = {id(s) for nd in self._nodes for s in nd.inputs} | {id(t) for t in outs}
        for t in ins:
            if id(t) not in used:
                raise ValueError(f"Model: input {t.name or t!r} is not used by any output")
        layers = []
        for nd in self._nodes:
            if not any(nd.layer is la for la in layers):
                layers.append(nd.layer)
        self._name_inputs()
        names = set()
        for layer in layers:
            if layer.name is None:
                base = _snake(type(layer).__name__)
                layer.name, k = base, 1
                while layer.name in names:
                    layer.name, k = f"{base}_{k}", k + 1
            elif layer.name in names:
                raise ValueError(f"Model: two layers are named {layer.name!r}")
            names.add(layer.name)
        self._layers = layers
        self._shared = {id(la) for la in layers if sum(nd.layer is la for nd in self._nodes) > 1}
        for layer in layers:
            if self.seed is not None and getattr(layer, "_fresh", False):
                layer.build(layer.input_shape if not getattr(layer, "multi_input", False)
                            else list(layer.input_shape), rng=np.random.default_rng(self._init_seq.spawn(1)[0]))
            layer._fresh = False
            if layer.dtype != self.dtype:
                layer.astype(self.dtype)
        shapes = [t.sample_shape for t in ins]
        self.input_shape = shapes[0] if self._single_input else shapes
        self.built = True
        self._output_losses = None

    def _name_inputs(self):
        names = set()
        for t in self._inputs:
            if t.name is not None:
                if t.name in names:
                    raise ValueError(f"Model: two inputs are named {t.name!r}")
                names.add(t.name)
        for t in self._inputs:
            if t.name is None:
                base, k = "input", 1
                t.name = base
                while t.name in names:
                    t.name, k = f"{base}_{k}", k + 1
                names.add(t.name)

    # ---- structure --------------------------------------------------------------------------
    @property
    def inputs(self):
        return list(self._inputs)

    @property
    def outputs(self):
        return list(self._outputs)

    @property
    def input_names(self):
        return [t.name for t in self._inputs]

    @property
    def output_names(self):
        """One name per output: its layer's name (``name_k`` for the k-th output of a layer with several)."""
        out = []
        for t in self._outputs:
            nm = t.node.layer.name if t.node is not None else t.name
            out.append(nm if t.index == 0 else f"{nm}_{t.index}")
        return out

    def add(self, layer):
        raise TypeError("Model: layers are connected by calling them on tensors; add() is for Sequential")

    def pop(self):
        raise TypeError("Model: pop() is for Sequential")

    def build(self, input_shape=None):
        return self

    @property
    def output_shape(self):
        shapes = [t.sample_shape for t in self._outputs]
        return shapes[0] if self._single_output else shapes

    def _output_sample_shape(self):
        return tuple(self._outputs[0].sample_shape)

    def _int_input(self):
        return self._is_int_input(self._inputs[0])

    def _is_int_input(self, t):
        """Token ids: an integer Input, or one read by an Embedding."""
        return t.dtype.kind in _INT_KINDS or self._feeds_embedding(t)

    def _feeds_embedding(self, t):
        from .layers.core import Embedding

        return any(isinstance(nd.layer, Embedding) and nd.inputs[0] is t for nd in self._nodes)

    # ---- data ----------------------------------------------------------------------------------
    def _prepare_x(self, x, lengths=None, where="x"):
        if self._single_input:
            if isinstance(x, dict):
                x = self._from_dict(x, where)[0]
            return super()._prepare_x(x, lengths, where)
        xs = self._from_dict(x, where) if isinstance(x, dict) else x
        n = len(self._inputs)
        if not isinstance(xs, (list, tuple)) or len(xs) != n:
            raise ValueError(f"{where}: this model has {n} inputs {self.input_names}; give a list of {n} arrays "
                             "(or a dict by input name)")
        if lengths is None:
            ls = [None] * n
        elif isinstance(lengths, _Multi):
            ls = lengths.items
        elif isinstance(lengths, (list, tuple)) and len(lengths) == n:
            ls = list(lengths)
        else:
            raise ValueError(f"lengths: this model has {n} inputs; give a list of {n} entries (None or an int "
                             "array (batch,)) or None")
        Xs, Ls, ragged = [], [], False
        for k, (t, a, lk) in enumerate(zip(self._inputs, xs, ls, strict=True)):
            X, L, r = _prepare_one(self, t, a, lk, f"{where}[{k}] ({t.name})")
            Xs.append(X)
            Ls.append(L)
            ragged = ragged or r
        N = {X.shape[0] for X in Xs}
        if len(N) != 1:
            raise ValueError(f"{where}: the inputs have different numbers of samples {[X.shape[0] for X in Xs]}")
        L = None if all(v is None for v in Ls) else _Multi(Ls)
        return _Multi(Xs), L, ragged

    def _from_dict(self, d, where):
        names = self.input_names
        unknown = sorted(set(d) - set(names))
        missing = [n for n in names if n not in d]
        if unknown or missing:
            raise ValueError(f"{where}: inputs are {names}; " + (f"unknown {unknown}" if unknown else
                                                                 f"missing {missing}"))
        return [d[n] for n in names]

    @staticmethod
    def _check_finite(a, where):
        for k, v in enumerate(a.items if isinstance(a, _Multi) else [a]):
            if v is not None:
                Sequential._check_finite(v, where if not isinstance(a, _Multi) else f"{where}[{k}]")

    def _time_source(self, t):
        """Index of the input whose time axis a sequence output ``t`` follows (the first input of
        each call, back to a model input: the query of an attention, the left side of a merge)."""
        while t.node is not None:
            t = t.node.inputs[0]
        return next(k for k, s in enumerate(self._inputs) if s is t)

    def _ref(self, t, X, lengths):
        if not isinstance(X, _Multi):
            return X, lengths
        k = self._time_source(t)
        return X.items[k], (lengths.items[k] if isinstance(lengths, _Multi) else lengths)

    def _prepare_y(self, y, X, lengths, where="y"):
        if self._single_output:
            if isinstance(y, dict):
                y = self._targets_from_dict(y, where)[0]
            Xr, Lr = self._ref(self._outputs[0], X, lengths)
            return super()._prepare_y(y, Xr, Lr, where)
        n = len(self._outputs)
        ys = self._targets_from_dict(y, where) if isinstance(y, dict) else y
        if not isinstance(ys, (list, tuple)) or len(ys) != n:
            raise ValueError(f"{where}: this model has {n} outputs {self.output_names}; give a list of {n} target "
                             "arrays (or a dict by output name)")
        out = []
        for k, (t, yk, loss) in enumerate(zip(self._outputs, ys, self.loss.losses, strict=True)):
            if loss is None:
                out.append(None)
                continue
            Xr, _ = self._ref(t, X, lengths)
            yk = np.asarray(yk)
            if yk.dtype.kind not in "fiub":
                raise TypeError(f"{where}[{k}]: expected numbers, got dtype {yk.dtype}")
            if yk.shape[:1] != Xr.shape[:1]:
                raise ValueError(f"{where}[{k}]: {yk.shape[0] if yk.ndim else 0} targets for {Xr.shape[0]} inputs")
            T = Xr.shape[1] if Xr.ndim >= 2 else None
            want = (Xr.shape[0],) + tuple(T if d is None else d for d in t.sample_shape)
            yk = loss.prepare_targets(yk, want)
            if not loss.sparse:
                yk = yk.astype(self.dtype, copy=False)
            out.append(yk)
        return _Multi(out)

    def _targets_from_dict(self, d, where):
        names = self.output_names
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"{where}: outputs are {names}; unknown {unknown}")
        return [d.get(n) for n in names]

    def _loss_value_shape(self, Y):
        if isinstance(Y, _Multi):
            return Y.shape[:1]
        return super()._loss_value_shape(Y)

    def _class_weights(self, Y, class_weight):
        if isinstance(Y, _Multi):
            raise ValueError("class_weight: not supported for a model with several outputs (use sample_weight)")
        return super()._class_weights(Y, class_weight)

    # ---- compile --------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None):
        """As ``Sequential.compile``; with several outputs ``loss`` may be a list or a dict by output
        name (an output with loss None is not trained), ``loss_weights`` a list or dict of floats,
        and ``metrics`` a list (applied to every output) or a dict/list of lists per output."""
        if self._single_output:
            if isinstance(loss, (list, tuple)) and len(loss) == 1:
                loss = loss[0]
            if isinstance(loss, dict):
                loss = self._per_output(loss, "loss")[0]
            if loss_weights is not None:
                w = self._per_output(loss_weights, "loss_weights")[0]
                if w is not None and float(w) != 1.0:
                    raise ValueError("loss_weights: with one output, scale the learning rate instead")
            return super().compile(optimizer, loss, metrics)
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='mse'")
        n = len(self._outputs)
        names = self.output_names
        ls = self._per_output(loss, "loss") if isinstance(loss, (list, tuple, dict)) else [loss] * n
        ws = [1.0] * n if loss_weights is None else self._per_output(loss_weights, "loss_weights")
        ws = [1.0 if w is None else float(w) for w in ws]
        if any(not np.isfinite(w) or w < 0 for w in ws):
            raise ValueError(f"loss_weights: must be finite and >= 0, got {ws}")
        objs = [None if lo is None else losses_mod.get(lo) for lo in ls]
        if all(o is None for o in objs):
            raise ValueError("compile: every output has loss None: nothing to train")
        super().compile(optimizer, objs[next(k for k, o in enumerate(objs) if o is not None)], None)
        self.loss = _MultiLoss(objs, ws)
        self._output_losses = objs
        if metrics is None:
            per = [[] for _ in range(n)]
        elif isinstance(metrics, dict):
            per = [list(metrics.get(nm) or []) for nm in names]
            unknown = sorted(set(metrics) - set(names))
            if unknown:
                raise ValueError(f"metrics: outputs are {names}; unknown {unknown}")
        elif isinstance(metrics, (list, tuple)) and metrics and all(isinstance(m, (list, tuple)) for m in metrics):
            if len(metrics) != n:
                raise ValueError(f"metrics: {len(metrics)} lists for {n} outputs")
            per = [list(m) for m in metrics]
        else:
            per = [list(metrics) for _ in range(n)]
        for k, ms in enumerate(per):
            for m in ms:
                metrics_mod.get(m, objs[k] or objs[0], 1)  # validate names now
        self._metric_specs_per_output = per
        self._metric_specs = []

    def _per_output(self, v, what):
        names = self.output_names
        n = len(names)
        if isinstance(v, dict):
            unknown = sorted(set(v) - set(names))
            if unknown:
                raise ValueError(f"{what}: outputs are {names}; unknown {unknown}")
            return [v.get(nm) for nm in names]
        if isinstance(v, (list, tuple)):
            if len(v) != n:
                raise ValueError(f"{what}: {len(v)} entries for {n} outputs {names}")
            return list(v)
        return [v] * n

    def _make_metrics(self):
        if self._single_output:
            return super()._make_metrics()
        out = []
        for k, (specs, t, nm) in enumerate(zip(self._metric_specs_per_output, self._outputs, self.output_names,
                                               strict=True)):
            loss = self._output_losses[k] or next(o for o in self._output_losses if o is not None)
            dim = t.sample_shape[-1] if t.sample_shape else None
            out.extend(_OutputMetric(metrics_mod.get(m, loss, dim), k, nm) for m in specs)
        return out

    # ---- running the graph ----------------------------------------------------------------------
    def _run(self, x, lengths, training, need_grad):
        """-> (list of output arrays, list of their lengths)."""
        n = len(self._inputs)
        xs = x.items if isinstance(x, _Multi) else [x]
        ls = _items(lengths, n)
        if len(xs) != n or len(ls) != n:
            raise ValueError(f"expected {n} inputs, got {len(xs)}")
        vals, lens = {}, {}
        for t, a, lk in zip(self._inputs, xs, ls, strict=True):
            vals[id(t)], lens[id(t)] = a, lk
        saved, shapes = ([], []) if need_grad else (None, None)
        runners = self._runners or {}
        for nd in self._nodes:
            layer = nd.layer
            fwd = runners.get(id(layer), layer.forward)
            ins = [vals[id(t)] for t in nd.inputs]
            ils = [lens[id(t)] for t in nd.inputs]
            kw = dict(nd.kwargs)
            if nd.n_state:
                kw["initial_state"] = ins[nd.n_main:]
            if getattr(layer, "multi_input", False):
                main, mlen = ins[:nd.n_main], ils[:nd.n_main]
                L = layer.compute_lengths(main, mlen)
                y = fwd(main, lengths=mlen, training=training, need_grad=need_grad, **kw)
            else:
                L = layer.compute_lengths(ins[0], ils[0])
                y = fwd(ins[0], lengths=ils[0], training=training, need_grad=need_grad, **kw)
            outs = y if isinstance(y, list) else [y]
            for k, (t, a) in enumerate(zip(nd.outputs, outs, strict=True)):
                vals[id(t)] = a
                lens[id(t)] = L if k == 0 and np.ndim(a) >= 3 else None
            if need_grad:
                saved.append(dict(layer.__dict__) if id(layer) in self._shared else None)
                shapes.append(np.shape(outs[0]))
        if need_grad:
            self._saved, self._out_shapes = saved, shapes
        return [vals[id(t)] for t in self._outputs], [lens[id(t)] for t in self._outputs]

    def _pack(self, outs, lens):
        if self._single_output:
            return outs[0], lens[0]
        return list(outs), list(lens)

    def _forward(self, x, lengths=None, training=False, need_grad=True):
        outs, lens = self._run(x, lengths, training, need_grad)
        out, self._last_lengths = self._pack(outs, lens)
        return out

    def _infer(self, x, lengths=None):
        return self._pack(*self._run(x, lengths, False, False))

    def _mask(self, out, lengths):
        if isinstance(out, list):
            ls = lengths if isinstance(lengths, list) else [lengths] * len(out)
            return [Sequential._mask(o, lk) for o, lk in zip(out, ls, strict=True)]
        return Sequential._mask(out, lengths)

    def _backward(self, dy, need_dx=True):
        """Backpropagate through the nodes; returns dL/d(inputs) (None entries without
        ``need_dx``: a layer whose main inputs are all model inputs may skip them)."""
        dys = dy if isinstance(dy, list) and not self._single_output else [dy]
        model_inputs = {id(t) for t in self._inputs}
        grads = {}

        def add(t, d):
            k = id(t)
            grads[k] = d if k not in grads else grads[k] + d

        for t, d in zip(self._outputs, dys, strict=True):
            if d is not None:
                add(t, d)
        acc = {}
        for i in range(len(self._nodes) - 1, -1, -1):
            nd = self._nodes[i]
            dout = [grads.pop(id(t), None) for t in nd.outputs]
            if all(d is None for d in dout):
                continue
            layer = nd.layer
            if self._saved[i] is not None:
                layer.__dict__.update(self._saved[i])
            if len(dout) == 1:
                dyn = dout[0]
            else:
                if dout[0] is None:  # only the other outputs (states, scores) were used
                    dout[0] = np.zeros(self._out_shapes[i], layer.dtype)
                dyn = dout
            layer._dx_unused = not need_dx and all(id(t) in model_inputs for t in nd.inputs[:nd.n_main])
            try:
                dx = layer.backward(dyn)
            finally:
                layer._dx_unused = False
            if layer.params:
                g = acc.get(id(layer))
                if g is None:
                    acc[id(layer)] = {k: (v.copy() if id(layer) in self._shared else v)
                                      for k, v in layer.grads.items()}
                else:
                    for k, v in layer.grads.items():
                        g[k] = g[k] + v
            if getattr(layer, "multi_input", False):
                dxs = list(dx) if dx is not None else [None] * nd.n_main
            else:
                dxs = [dx]
            for t, d in zip(nd.inputs[:nd.n_main], dxs, strict=True):
                if d is not None:
                    add(t, d)
            if nd.n_state:
                sg = getattr(layer, "initial_state_grads", None) or [None] * nd.n_state
                for t, d in zip(nd.inputs[nd.n_main:], sg, strict=True):
                    if d is not None:
                        add(t, d)
        for layer in self._layers:
            if layer.params:
                layer.grads = acc.get(id(layer)) or {k: np.zeros_like(v) for k, v in layer.params.items()}
        return [grads.get(id(t)) for t in self._inputs]

    def _loss_and_grads(self, x, y, lengths=None, training=False, sample_weight=None):
        if self._single_output:
            return super()._loss_and_grads(x, y, lengths, training, sample_weight)
        out = self._forward(x, lengths, training=training, need_grad=True)
        mask = self._mask(out, self._last_lengths)
        loss, dy = self.loss.value_and_grad(y, out, mask, sample_weight=sample_weight)
        self._backward(dy, need_dx=False)
        return loss, [layer.grads[k] for layer, k in self._trainable()], out

    def _check_final(self, last, guard, pairs, snapshot, epoch):
        if self._single_output:
            return super()._check_final(last, guard, pairs, snapshot, epoch)
        from .models import _Diverged

        xb, yb, lb, wb = last
        with np.errstate(all="ignore"):
            pred, Lout = self._infer(xb, lb)
            loss, _ = self.loss.value_and_grad(yb, pred, self._mask(pred, Lout), sample_weight=wb)
        try:
            guard.check_loss(loss)
        except _Diverged as exc:
            self._diverged(exc.what + " after the last update", epoch, None, pairs, snapshot)

    def _evaluate_source(self, source):
        if self._single_output:
            return super()._evaluate_source(source)
        metrics = self._make_metrics()
        n = len(self._outputs)
        names = self.output_names
        tot, parts, cnt = 0.0, [0.0] * n, 0.0
        for xb, yb, lb, wb in source.epoch():
            pred, Lout = self._infer(xb, lb)
            mask = self._mask(pred, Lout)
            B = pred[0].shape[0]
            for k, loss in enumerate(self.loss.losses):
                if loss is None:
                    continue
                if wb is None:
                    v, _ = loss.value_and_grad(yb.items[k], pred[k], mask[k])
                else:
                    v, _ = loss.value_and_grad(yb.items[k], pred[k], mask[k], sample_weight=wb)
                parts[k] += v * B
                tot += self.loss.weights[k] * v * B
            cnt += B
            for m in metrics:
                m.update(yb, pred, mask)
        out = {"loss": tot / cnt if cnt else float("nan")}
        out.update({f"{nm}_loss": parts[k] / cnt for k, nm in enumerate(names) if self.loss.losses[k] is not None})
        out.update({m.name: m.result() for m in metrics})
        return out

    def _kernel_key(self):
        key = super()._kernel_key()
        return None if key is None else key + ("graph", id(self))

    # ---- weights / summary ------------------------------------------------------------------------
    def summary(self, print_fn=None, line_length=98):
        """The layer table with each layer's inbound connections (Keras' functional summary)."""
        def fmt(shape):
            if isinstance(shape, list):
                return ", ".join(fmt(s) for s in shape)
            return "(" + ", ".join("None" if d is None else str(d) for d in (None,) + tuple(shape)) + ")"

        def src(t):
            if t.node is None:
                return t.name
            return f"{t.node.layer.name}[{t.index}]" if len(t.node.outputs) > 1 else t.node.layer.name

        rows = []
        for t in self._inputs:
            rows.append((f"{t.name} (InputLayer)", fmt(t.sample_shape), 0, ""))
        counted = set()
        for nd in self._nodes:
            layer = nd.layer
            n = 0 if id(layer) in counted else layer.count_params()
            counted.add(id(layer))
            shapes = [o.sample_shape for o in nd.outputs]
            rows.append((f"{layer.name} ({type(layer).__name__})", fmt(shapes if len(shapes) > 1 else shapes[0]), n,
                         ", ".join(src(s) for s in nd.inputs)))
        w1 = max([28] + [len(r[0]) + 2 for r in rows])
        w2 = max([22] + [len(r[1]) + 2 for r in rows])
        w3 = 12
        w4 = max(16, line_length - w1 - w2 - w3)
        width = w1 + w2 + w3 + w4
        lines = [f'Model: "{self.name}"', "_" * width,
                 f"{'Layer (type)':<{w1}}{'Output Shape':<{w2}}{'Param #':>{w3}}  {'Connected to'}", "=" * width]
        for a, b, n, c in rows:
            lines.append(f"{a:<{w1}}{b:<{w2}}{n:>{w3},}  {c}")
        total = sum(layer.count_params() for layer in self._layers)
        trainable = sum(layer.count_params() for layer in self._layers if layer.trainable)
        lines += ["=" * width, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}", "_" * width]
        text = Summary("\n".join(lines))
        if print_fn is not None:
            print_fn(text)
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        return text

    # ---- streaming -------------------------------------------------------------------------------------
    def _chain(self):
        """The layers in order when the graph is a plain chain (one input, one output, one path), else the
        first node that is not, as ``(None, node)``."""
        if not (self._single_input and self._single_output):
            return None, None
        prev = self._inputs[0]
        for nd in self._nodes:
            if nd.n_main != 1 or nd.n_state or nd.kwargs or nd.inputs[0] is not prev or len(nd.outputs) != 1:
                return None, nd
            prev = nd.outputs[0]
        if prev is not self._outputs[0] or self._shared:
            return None, None
        return [nd.layer for nd in self._nodes], None

    def _as_sequential(self):
        """The equivalent ``Sequential`` (same layer objects) when the graph is a chain, else None."""
        layers, _ = self._chain()
        if layers is None:
            return None
        seq = Sequential(name=self.name, dtype=self.dtype.name)
        seq._layers = layers
        seq.input_shape = self.input_shape
        seq.built = True
        seq.meta = getattr(self, "meta", {})
        return seq

    def stream(self, batch_size=1):
        """Step-by-step inference: a chain of layers through the jitted engine of
        ``edgernn.streaming``, any other graph of causal layers through
        :class:`edgernn.graph_stream.GraphStream`; refused (``ValueError`` naming the layer) when a
        layer needs the whole sequence."""
        from .graph_stream import GraphStream
        from .streaming import LayerNotInEngine, stream

        seq = self._as_sequential()
        if seq is not None:
            try:
                return stream(seq, batch_size)
            except LayerNotInEngine:
                pass
        return GraphStream(self, batch_size)

    # ---- config ----------------------------------------------------------------------------------------
    def get_config(self):
        index = {id(la): i for i, la in enumerate(self._layers)}
        nodes = {id(nd): i for i, nd in enumerate(self._nodes)}
        inputs = {id(t): k for k, t in enumerate(self._inputs)}

        def ref(t):
            return [-1, inputs[id(t)]] if t.node is None else [nodes[id(t.node)], t.index]

        return {"name": self.name, "dtype": self.dtype.name, "seed": self.seed,
                "input_layers": [{"name": t.name, "shape": list(t.sample_shape), "dtype": t.dtype.name}
                                 for t in self._inputs],
                "layers": [{"class_name": type(la).__name__, "config": la.get_config()} for la in self._layers],
                "nodes": [{"layer": index[id(nd.layer)], "inputs": [ref(t) for t in nd.inputs],
                           "n_main": nd.n_main, "n_state": nd.n_state, "kwargs": dict(nd.kwargs)}
                          for nd in self._nodes],
                "outputs": [ref(t) for t in self._outputs],
                "single_input": self._single_input, "single_output": self._single_output}

    @classmethod
    def from_config(cls, config, layers=None):
        """Rebuild from ``get_config()``; ``layers`` (constructed from the config) may be given."""
        from .layers import get as get_layer_class

        if layers is None:
            layers = [get_layer_class(s["class_name"]).from_config(dict(s["config"])) for s in config["layers"]]
        ins = [Input(shape=tuple(s["shape"]), name=s["name"], dtype=s.get("dtype", "float32"))
               for s in config["input_layers"]]
        made = []

        def get(r):
            n, k = r
            if n == -1:
                return ins[k]
            out = made[n]
            return out[k] if isinstance(out, list) else out

        for nd in config["nodes"]:
            layer = layers[nd["layer"]]
            args = [get(r) for r in nd["inputs"]]
            main, states = args[:nd["n_main"]], args[nd["n_main"]:]
            kw = dict(nd.get("kwargs") or {})
            if states:
                kw["initial_state"] = states
            x = main if getattr(layer, "multi_input", False) else main[0]
            made.append(call_symbolic(layer, x, kw))
        outs = [get(r) for r in config["outputs"]]
        return cls(ins[0] if config.get("single_input", len(ins) == 1) else ins,
                   outs[0] if config.get("single_output", len(outs) == 1) else outs,
                   name=config.get("name"), dtype=config.get("dtype", "float32"), seed=None)

    def __repr__(self):
        return f"<Model name={self.name!r} inputs={len(self._inputs)} outputs={len(self._outputs)} " \
               f"layers={len(self._layers)}>"


def _prepare_one(model, t, a, lengths, where):
    """One input of a multi-input model: as ``Sequential._prepare_x`` for one array."""
    X, L, ragged = _prepare_array(a, lengths, where, model.dtype, model._is_int_input(t))
    _check_shape(X, t.sample_shape, where)
    return X, L, ragged
