"""Layer base class and the non-recurrent layers: Dense, Dropout, Activation, Embedding, Masking.

Tensors are batch-first: a sequence batch is ``(B, T, F)``, a vector batch ``(B, F)``.
Every layer keeps what its ``backward`` needs from the last ``forward`` on itself, so a
model's backward pass is just the layers' ``backward`` in reverse order.

Variable-length batches travel as ``lengths`` (int array ``(B,)``, trailing padding):
``Masking`` and ``Embedding(mask_zero=True)`` compute them, other layers pass them on.
``forward(x, lengths)`` receives the lengths of its *input*; ``compute_lengths(x, lengths)``
gives those of its output (the same for most layers; a convolution shortens them, pooling and
``RepeatVector`` end them). An output without a time axis has no lengths.

Layers with several inputs (the functional API: ``Concatenate``, ``Attention``, ...)
------------------------------------------------------------------------------------
A layer with ``multi_input = True`` receives lists, one entry per input, in the order of
the call ``layer([a, b, ...])``:

- ``build(input_shapes)`` / ``compute_output_shape(input_shapes)``: a list of sample shapes
  (no batch axis);
- ``compute_lengths(xs, lengths)``: ``lengths`` is a list (entries None or int ``(B,)``);
  returns the lengths of the output (None when the output has no padding);
- ``forward(xs, lengths=[...], training, need_grad)``;
- ``backward(dy)`` returns a list with one gradient per input (None for an input without one,
  e.g. token ids).

A layer with several outputs (``return_state``, ``return_attention_scores``) returns a list
from ``forward`` and ``compute_output_shape``, and its ``backward`` receives a list of the same
length whose entries may be None (an output nothing depended on).

``forward(..., need_grad=False)`` (inference) writes nothing on the layer, so inference may
run in several threads at once; ``backward`` fills ``self.grads`` (same keys as ``params``).

Streaming a functional model (``edgernn.graph_stream``): a layer with ``pointwise = True``
computes each time step from that step alone (its ``forward`` is run on ``(batch, features)``);
a causal layer with a state in time implements ``stream_state(batch_size, **call_options) ->
dict`` and ``stream_step(x, state, **call_options) -> y`` (one step, updating ``state`` in place);
``call_options`` are the keyword arguments the layer was called with in the model.
"""

from __future__ import annotations

import re

import numpy as np

from .. import initializers

__all__ = ["Layer", "Input", "InputLayer", "KerasTensor", "Dense", "Dropout", "Activation", "Embedding", "Masking",
           "ACTIVATIONS"]


def _snake(name: str) -> str:
    """``"SimpleRNN"`` -> ``"simple_rnn"``, ``"LSTM"`` -> ``"lstm"``, ``"Conv1D"`` -> ``"conv1d"`` (Keras' rule)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class Layer:
    """Base class of all layers.

    Parameters
    ----------
    name : str, optional
        Layer name; a model gives unnamed layers unique names such as ``"lstm_1"``.
    trainable : bool
        When False the layer's parameters are frozen and counted as non-trainable.
    input_shape : tuple, optional
        Shape of one sample, without the batch axis, e.g. ``(None, 1)`` for sequences of any
        length with one feature. Only meaningful on the first layer of a model.
    input_dim : int, optional
        Shortcut for ``input_shape=(input_dim,)`` (Keras style).
    batch_input_shape : tuple, optional
        Keras style ``(batch, *input_shape)``; the batch size is ignored.

    Attributes
    ----------
    params : dict[str, ndarray]
        Parameters (trained unless ``trainable`` is False).
    grads : dict[str, ndarray]
        Gradients of the last ``backward``, same keys and shapes as ``params``.
    buffers : dict[str, ndarray]
        Stored, non-trained, uncounted arrays (e.g. the zero second bias ``Rb`` of an LSTM).
    """

    # Set by a model around ``backward`` when it discards the gradient of this layer's input
    # (the layer reads the model's data): a layer may then skip computing it and return None.
    _dx_unused = False

    def __init__(self, name=None, trainable=True, input_shape=None, input_dim=None,
                 batch_input_shape=None, dtype=None):
        self.name = name
        self.trainable = bool(trainable)
        if batch_input_shape is not None:
            input_shape = tuple(batch_input_shape)[1:]
        if input_dim is not None and input_shape is None:
            input_shape = (int(input_dim),)
        self.input_spec = None if input_shape is None else tuple(
            None if d is None else int(d) for d in input_shape)
        self.dtype = np.dtype(dtype or "float32")
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self._rng = None

    # ---- building -------------------------------------------------------------------
    def build(self, input_shape, rng=None):
        """Create the parameters for samples of ``input_shape`` (no batch axis).

        Parameters
        ----------
        input_shape : tuple
            e.g. ``(T or None, F)``.
        rng : numpy.random.Generator, optional
            Source of the initial weights (a model passes a seeded one).
        """
        self.input_shape = tuple(input_shape)
        self._build(self.input_shape, rng if rng is not None else np.random.default_rng())
        for store in (self.params, self.buffers):  # C order: the kernels and Adam's one-pass update read
            for k, v in store.items():             # them as they are (a transposed init was copied per call)
                store[k] = np.ascontiguousarray(v)
        self.output_shape = self.compute_output_shape(self.input_shape)
        self.built = True

    def _build(self, input_shape, rng):
        """Subclasses create ``self.params`` here."""

    def compute_output_shape(self, input_shape):
        """Output shape (no batch axis) for an input of ``input_shape``."""
        return tuple(input_shape)

    def compute_lengths(self, x, lengths):
        """Sequence lengths after this layer; ``Masking``/``Embedding`` compute them."""
        return lengths

    # ---- running ----------------------------------------------------------------
    def forward(self, x, lengths=None, training=False, need_grad=True):
        """Compute the output; store what ``backward`` needs (unless ``need_grad`` is False)."""
        raise NotImplementedError

    def backward(self, dy):
        """Gradient w.r.t. the input of the last ``forward``; fills ``self.grads``."""
        raise NotImplementedError

    multi_input = False  # True: called on a list of inputs (see the module docstring)

    def __call__(self, x, lengths=None, training=False, **kwargs):
        """On arrays: build if needed and run ``forward`` (inference unless ``training``).
        On symbolic tensors (``Input(...)`` and what layers return from them): record the call
        for a ``Model`` (the functional API) and return the output tensor(s)."""
        from ..graph import call_symbolic, is_symbolic

        if is_symbolic(x) or is_symbolic(kwargs.get("initial_state")):
            if lengths is not None:
                raise ValueError(f"layer {self.name!r}: lengths= is for arrays; in a model masks come from "
                                 "Masking / Embedding(mask_zero=True)")
            return call_symbolic(self, x, kwargs)
        if self.multi_input:
            xs = [np.asarray(a) for a in x]
            if not self.built:
                self.build([a.shape[1:] for a in xs])
            return self.forward(xs, lengths=lengths, training=training, need_grad=False, **kwargs)
        if not self.built:
            self.build(np.shape(x)[1:])
        return self.forward(np.asarray(x), lengths=lengths, training=training, **kwargs)

    def _random(self):
        if self._rng is None:
            self._rng = np.random.default_rng()
        return self._rng

    # ---- weights ------------------------------------------------------------------
    @property
    def weights(self):
        """All stored arrays, parameters first then buffers (the ``get_weights`` order)."""
        return list(self.params.values()) + list(self.buffers.values())

    @property
    def weight_names(self):
        return list(self.params) + list(self.buffers)

    def get_weights(self):
        """Copies of all stored arrays (parameters then buffers)."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        """Copy ``weights`` (same order, shapes as ``get_weights``) into the layer, in place."""
        names = self.weight_names
        if len(weights) != len(names):
            raise ValueError(f"layer {self.name!r} expects {len(names)} arrays ({names}), got {len(weights)}")
        for n, w in zip(names, weights, strict=True):
            store = self.params if n in self.params else self.buffers
            w = np.asarray(w)
            if w.shape != store[n].shape:
                raise ValueError(f"layer {self.name!r}: weight {n!r} has shape {store[n].shape}, got {w.shape}")
            np.copyto(store[n], w, casting="same_kind")

    def count_params(self):
        """Number of scalar parameters (buffers are not counted)."""
        return int(sum(p.size for p in self.params.values()))

    def astype(self, dtype):
        """Convert parameters and buffers to ``dtype`` in place of the old arrays."""
        self.dtype = np.dtype(dtype)
        for store in (self.params, self.buffers):
            for k in store:
                store[k] = store[k].astype(self.dtype)
        self.grads = {}
        return self

    # ---- config -------------------------------------------------------------------
    def get_config(self):
        """JSON-able constructor arguments."""
        cfg = {"name": self.name, "trainable": self.trainable}
        if self.input_spec is not None:
            cfg["input_shape"] = list(self.input_spec)
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"


class KerasTensor:
    """A symbolic tensor: the shape and dtype of a value in a model being defined.

    Attributes
    ----------
    shape : tuple
        With the batch axis first (``None``), as Keras: ``Input(shape=(None, 3)).shape`` is
        ``(None, None, 3)``.
    sample_shape : tuple
        Without the batch axis.
    dtype : numpy.dtype
    node : Node or None
        The call that produced it (None for a model input).
    index : int
        Which output of ``node`` it is.
    name : str
    """

    def __init__(self, sample_shape, dtype, node=None, index=0, name=None):
        self.sample_shape = tuple(None if d is None else int(d) for d in sample_shape)
        self.dtype = np.dtype(dtype)
        self.node = node
        self.index = index
        self.name = name

    @property
    def shape(self):
        return (None,) + self.sample_shape

    @property
    def ndim(self):
        return len(self.sample_shape) + 1

    def __repr__(self):
        src = "input" if self.node is None else f"{self.node.layer.name}[{self.index}]"
        return f"<KerasTensor shape={self.shape} dtype={self.dtype.name} from {src}>"

    def __array__(self, *args, **kwargs):
        raise TypeError("a KerasTensor is symbolic (a placeholder in a model definition) and has no values; "
                        "build a Model(inputs, outputs) and call model.predict(x)")


def Input(shape=None, batch_size=None, name=None, dtype=None, batch_shape=None, sparse=None):  # noqa: N802
    """A model input (Keras' ``keras.Input``).

    Parameters
    ----------
    shape : tuple
        One sample's shape without the batch axis, e.g. ``(None, 3)`` for sequences of any
        length with 3 features, ``(None,)`` for token ids.
    batch_size : int, optional
        Ignored (accepted for Keras compatibility).
    name : str, optional
        Names the input (and the ONNX graph input); default ``"input"``, ``"input_1"``, ...
    dtype : str, optional
        ``"float32"`` (default) or an integer type for token ids (``"int32"``, ``"int64"``).
    batch_shape : tuple, optional
        Keras style ``(batch, *shape)``.

    Returns
    -------
    KerasTensor
        Usable as the first item of ``Sequential([...])`` too.
    """
    if shape is None and batch_shape is not None:
        shape = tuple(batch_shape)[1:]
    if shape is None:
        raise ValueError("Input: shape is required, e.g. Input(shape=(None, 1))")
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        shape = tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):
        raise TypeError(f"Input: shape must be a tuple of ints or None, got {shape!r}") from None
    if any(d is not None and d < 1 for d in shape) or not shape:
        raise ValueError(f"Input: shape must be a non-empty tuple of positive ints or None, got {shape}")
    if sparse:
        raise ValueError("Input: sparse inputs are not supported")
    dt = np.dtype(dtype or "float32")
    if dt.kind not in "f" + "iu":
        raise TypeError(f"Input: dtype must be a float or integer type, got {dt}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"Input: name must be a string, got {type(name).__name__}")
    return KerasTensor(shape, dt, None, 0, name)


InputLayer = Input


InputLayer = Input


# ---- elementwise activations (Dense / Activation layers) -------------------------------------
def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_back(dy, z, y):
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


# name -> (forward(z) -> y, backward(dy, z, y) -> dz). Keras names.
ACTIVATIONS = {
    "linear": (lambda z: z, lambda dy, z, y: dy),
    "relu": (lambda z: np.maximum(z, 0), lambda dy, z, y: dy * (z > 0)),
    "tanh": (np.tanh, lambda dy, z, y: dy * (1 - y * y)),
    "sigmoid": (_sigmoid, lambda dy, z, y: dy * y * (1 - y)),
    "hard_sigmoid": (lambda z: np.clip(0.2 * z + 0.5, 0, 1),
                     lambda dy, z, y: dy * 0.2 * ((z > -2.5) & (z < 2.5))),
    "softsign": (lambda z: z / (1 + np.abs(z)), lambda dy, z, y: dy / (1 + np.abs(z)) ** 2),
    "softplus": (lambda z: np.logaddexp(0, z), lambda dy, z, y: dy * _sigmoid(z)),
    "elu": (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
            lambda dy, z, y: dy * np.where(z > 0, 1, y + 1)),
    "softmax": (_softmax, _softmax_back),
}


def _activation(name):
    key = "linear" if name is None else str(name).lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return key


# ---- Dense ----------------------------------------------------------------------------
class Dense(Layer):
    """Fully connected layer on the last axis: ``y = activation(x @ kernel + bias)``.

    Works on ``(B, F)`` and, per time step, on ``(B, T, F)`` (one matrix product over the
    reshaped ``(B*T, F)`` input).

    Parameters
    ----------
    units : int
        Output features.
    activation : str, optional
        Keras name (``ACTIVATIONS``); None means linear.
    use_bias : bool
    kernel_initializer, bias_initializer : str

    Attributes
    ----------
    params : ``"kernel"`` (F, units) and ``"bias"`` (units,) (Keras layout).
    """

    pointwise = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        if self.units < 1:
            raise ValueError(f"Dense: units must be >= 1, got {units}")
        self.activation = _activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        initializers.get(kernel_initializer), initializers.get(bias_initializer)

    def _build(self, input_shape, rng):
        F = input_shape[-1]
        if F is None:
            raise ValueError(f"Dense {self.name!r}: the last input axis must be known, got {input_shape}")
        self.params["kernel"] = initializers.get(self.kernel_initializer)((F, self.units), rng, self.dtype)
        if self.use_bias:
            self.params["bias"] = initializers.get(self.bias_initializer)((self.units,), rng, self.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, lengths=None, training=False, need_grad=True):
        K = self.params["kernel"]  # (F, U)
        if x.shape[-1] != K.shape[0]:
            raise ValueError(f"Dense {self.name!r}: expected {K.shape[0]} input features, got shape {x.shape}")
        x2 = x.reshape(-1, K.shape[0])  # (B*T, F)
        z = x2 @ K  # (B*T, U)
        if self.use_bias:
            z += self.params["bias"]
        fwd, _ = ACTIVATIONS[self.activation]
        y = fwd(z)
        if need_grad:  # inference writes nothing on the layer (thread safety)
            self._cache = (x.shape, x2, z, y)
        return y.reshape(x.shape[:-1] + (self.units,))

    def backward(self, dy):
        shape, x2, z, y = self._cache
        dz = ACTIVATIONS[self.activation][1](dy.reshape(-1, self.units), z, y)  # (B*T, U)
        self.grads = {"kernel": x2.T @ dz}
        if self.use_bias:
            self.grads["bias"] = dz.sum(axis=0)
        return (dz @ self.params["kernel"].T).reshape(shape)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer}


# ---- Activation -------------------------------------------------------------------------
class Activation(Layer):
    """Elementwise activation by Keras name (``"linear"``, ``"tanh"``, ``"softmax"`` ...)."""

    pointwise = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = _activation(activation)

    def forward(self, x, lengths=None, training=False, need_grad=True):
        y = ACTIVATIONS[self.activation][0](x)
        if need_grad:
            self._cache = (x, y)
        return y

    def backward(self, dy):
        x, y = self._cache
        self.grads = {}
        return ACTIVATIONS[self.activation][1](dy, x, y)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


# ---- Dropout ------------------------------------------------------------------------------
class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability ``rate`` and scale the
    rest by ``1 / (1 - rate)``; the identity otherwise.

    Parameters
    ----------
    rate : float in [0, 1)
    noise_shape : tuple, optional
        Keras style, with the batch axis; ``None`` entries take the input's size, e.g.
        ``(None, 1, None)`` uses one mask for all time steps.
    seed : int, optional
        Own random stream; by default a model hands its seeded training stream to the layer.
    """

    pointwise = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate}")
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def forward(self, x, lengths=None, training=False, need_grad=True):
        if not training or self.rate == 0.0:
            if need_grad:
                self._mask = None
            return x
        shape = x.shape if self.noise_shape is None else tuple(
            x.shape[i] if d is None else d for i, d in enumerate(self.noise_shape))
        keep = self._random().random(shape, dtype=np.float32) >= self.rate
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        if need_grad:
            self._mask = mask
        return x * mask

    def backward(self, dy):
        self.grads = {}
        return dy if self._mask is None else dy * self._mask

    def get_config(self):
        return {**super().get_config(), "rate": self.rate,
                "noise_shape": None if self.noise_shape is None else list(self.noise_shape),
                "seed": self.seed}


# ---- Embedding ------------------------------------------------------------------------------
class Embedding(Layer):
    """Token ids ``(B, T)`` to vectors ``(B, T, output_dim)``.

    Parameters
    ----------
    input_dim : int
        Vocabulary size; ids must be in ``[0, input_dim)``.
    output_dim : int
    embeddings_initializer : str
        Keras default ``"uniform"`` (U(-0.05, 0.05)).
    mask_zero : bool
        Id 0 is padding: lengths = 1 + the last position of a nonzero id (trailing padding only).
    input_length : int, optional
        Keras style; sets ``input_shape=(input_length,)``.

    Attributes
    ----------
    params : ``"embeddings"`` (input_dim, output_dim).
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", mask_zero=False,
                 input_length=None, **kwargs):
        if input_length is not None and "input_shape" not in kwargs:
            kwargs["input_shape"] = (input_length,)
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = embeddings_initializer
        self.mask_zero = bool(mask_zero)
        initializers.get(embeddings_initializer)

    def _build(self, input_shape, rng):
        if len(input_shape) != 1:
            raise ValueError(f"Embedding {self.name!r}: expects token ids of shape (batch, time), "
                             f"got sample shape {input_shape}")
        self.params["embeddings"] = initializers.get(self.embeddings_initializer)(
            (self.input_dim, self.output_dim), rng, self.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def _ids(self, x):
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"Embedding {self.name!r}: expected ids of shape (batch, time), got {x.shape}")
        ids = x.astype(np.intp)
        if x.dtype.kind == "f" and not np.array_equal(ids, x):
            raise ValueError(f"Embedding {self.name!r}: token ids must be integers")
        if ids.size and (ids.min() < 0 or ids.max() >= self.input_dim):
            raise ValueError(f"Embedding {self.name!r}: token ids must be in [0, {self.input_dim}), "
                             f"got min {ids.min()} max {ids.max()}")
        return ids

    def compute_lengths(self, x, lengths):
        if not self.mask_zero:
            return lengths
        nz = np.asarray(x) != 0  # (B, T)
        T = nz.shape[1]
        last = np.where(nz.any(axis=1), T - np.argmax(nz[:, ::-1], axis=1), 0)
        return last if lengths is None else np.minimum(last, lengths)

    def forward(self, x, lengths=None, training=False, need_grad=True):
        ids = self._ids(x)  # (B, T)
        if need_grad:
            self._ids_cache = ids
        return self.params["embeddings"][ids]  # (B, T, E)

    def backward(self, dy):
        E = self.params["embeddings"]
        g = np.zeros_like(E)
        np.add.at(g, self._ids_cache.ravel(), dy.reshape(-1, E.shape[1]))
        self.grads = {"embeddings": g}
        return None  # ids have no gradient

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": self.embeddings_initializer, "mask_zero": self.mask_zero}


# ---- Masking ----------------------------------------------------------------------------------
class Masking(Layer):
    """Mark trailing padding: a step is padding when all its features equal ``mask_value``.

    ``lengths[b]`` = 1 + the last step of sample ``b`` with any feature != ``mask_value``
    (0 for an all-padding sample). Following recurrent layers stop at ``lengths`` (padded
    steps output zeros and keep the state) and losses on sequence outputs ignore them.
    The output is the input with padded steps set to zero.

    Notes
    -----
    Only trailing padding is supported: a padding step *inside* a sequence (a hole) is
    processed as an ordinary input, unlike Keras, which skips it.
    """

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def compute_lengths(self, x, lengths):
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"Masking {self.name!r}: expected (batch, time, features), got {x.shape}")
        valid = np.any(x != self.mask_value, axis=-1)  # (B, T)
        T = valid.shape[1]
        last = np.where(valid.any(axis=1), T - np.argmax(valid[:, ::-1], axis=1), 0)
        return last if lengths is None else np.minimum(last, lengths)

    def forward(self, x, lengths=None, training=False, need_grad=True):
        lengths = self.compute_lengths(x, lengths)  # (B,): the input's lengths, cut at the padding
        keep = (np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None])  # (B, T)
        keep = keep[..., None].astype(x.dtype)  # (B, T, 1)
        if need_grad:
            self._keep = keep
        return x * keep

    def backward(self, dy):
        self.grads = {}
        return dy * self._keep

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}
