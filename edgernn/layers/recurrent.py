"""Recurrent layers (Keras-style): SimpleRNN, GRU, LSTM and the Bidirectional wrapper.

All recurrence runs in ``edgernn.functional`` (one jitted call per layer and batch); these
classes only hold weights, map Keras options to ONNX ones and shape inputs and outputs.

Weights are stored in ONNX layout and gate order (LSTM i,o,f,c; GRU z,r,h), per direction:
``W`` (D, G*H, I), ``R`` (D, G*H, H), biases ``Wb``, ``Rb`` (D, G*H), peepholes ``P`` (D, 3H).

Bias counting
-------------
ONNX has two biases per gate, ``Wb`` and ``Rb``. For SimpleRNN, LSTM and GRU with
``reset_after=False`` they only ever appear as the sum ``Wb + Rb``, so only ``Wb`` is a
trained parameter and ``Rb`` is kept as a zero buffer: stored in saved files and exported,
but neither trained nor counted. Parameter counts therefore equal Keras':
LSTM ``4(mh + h^2 + h)``, GRU(reset_after=False) ``3(mh + h^2 + h)``, SimpleRNN
``mh + h^2 + h``. With ``reset_after=True`` (the default, ONNX ``linear_before_reset=1``) the
recurrent bias of the candidate gate is inside the reset product, so both biases are trained
and counted (``3(mh + h^2 + 2h)``, as Keras). ``use_bias=False`` stores no bias at all.
``onnx_weights()`` always returns all five arrays (zeros where a bias is absent).
"""

from __future__ import annotations

import copy
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import functional as F
from .. import initializers
from .core import Layer

__all__ = ["RecurrentLayer", "SimpleRNN", "GRU", "LSTM", "Bidirectional", "KERAS_TO_ONNX"]

# Keras activation name -> (ONNX name, alpha, beta); alpha/beta only where ONNX takes them.
KERAS_TO_ONNX = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "hard_sigmoid": ("HardSigmoid", 0.2, 0.5),  # Keras 2: clip(0.2 x + 0.5, 0, 1)
    "linear": ("Affine", 1.0, 0.0),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "elu": ("Elu", 1.0, None),
}


def _keras_activation(name):
    key = "linear" if name is None else str(name).lower()
    if key not in KERAS_TO_ONNX:
        raise ValueError(f"unsupported recurrent activation {name!r}; known: {sorted(KERAS_TO_ONNX)}")
    return key


def _flip_valid(A, lengths):
    """Reverse each sample's valid steps ``[0, lengths[b])`` along axis 1; padding stays put.

    A is (B, T, ...). The permutation is its own inverse (used in forward and backward).
    """
    if lengths is None:
        return np.ascontiguousarray(A[:, ::-1])
    B, T = A.shape[:2]
    t = np.arange(T)[None, :]
    L = np.asarray(lengths)[:, None]
    idx = np.where(t < L, L - 1 - t, t)  # (B, T)
    return np.take_along_axis(A, idx.reshape((B, T) + (1,) * (A.ndim - 2)), axis=1)


# ---- inference over long sequences in chunks of time -----------------------------------------
# Inference of a long sequence runs the time axis in chunks, carrying the states from chunk to
# chunk through the kernels' initial states: the kernels' temporaries (input projection, outputs,
# time-major copy: ~(G+2)*H floats per step and sequence, 1.7 GB for one LSTM(64) sequence of
# 1e6 steps) then scale with the chunk, not with T. A chunk has max(_INFER_CHUNK // B,
# _INFER_MIN_STEPS) steps; shorter sequences take the one-call path unchanged. Chunk k gets
# lengths clip(lengths - t0, 0, steps), so padding and ragged batches work unchanged; reverse
# directions (go_backwards, the backward half of Bidirectional) run the chunks from the last to
# the first, which visits each sequence's valid steps in the same order as one call. QRNN's
# window of earlier inputs is precomputed (``_augmented``) so that chunks need no context. Measured
# (benchmarks/bench_memory.py, LSTM(64), T=1e6, B=1): added peak RSS 1463 MB -> 1.5 MB, and chunks
# of 4096-8192 steps are ~10% faster than one call (1024: 8%, 16384: 7%).
_INFER_CHUNK = 4096  # sequence-steps per chunk (0: never chunk)
_INFER_MIN_STEPS = 256  # at least this many steps per chunk (large batches)


def _infer_chunk_steps(layer, B, T):
    """Steps per chunk for an inference pass over (B, T), or 0 for one call."""
    if _INFER_CHUNK <= 0:
        return 0
    steps = max(_INFER_CHUNK // max(B, 1), _INFER_MIN_STEPS, 1)
    if T <= steps:
        return 0
    from .. import cells

    try:
        mod = cells.get(layer.cell).mod()
    except ValueError:  # not a registered cell: one call
        return 0
    if hasattr(mod, "augment") and not hasattr(layer, "window"):  # reads earlier inputs in a way unknown here
        return 0
    return steps


def _direction_view(layer, d):
    """A one-direction shallow copy of the layer: direction ``d``'s weights (views); the backward
    half of a bidirectional layer becomes ``go_backwards``. The layer itself is not modified
    (thread safety)."""
    v = copy.copy(layer)
    v.params = {k: a[d: d + 1] for k, a in layer.params.items()}
    v.buffers = {k: a[d: d + 1] for k, a in layer.buffers.items()}
    v.go_backwards = layer.go_backwards if layer.num_directions == 1 else d == 1
    v.num_directions = 1
    v.merge_mode = None
    return v


def _augmented(view, mod, x, L):
    """A cell whose step reads a window of earlier inputs (the driver's ``augment`` hook: QRNN's
    causal convolution of width ``window``) cannot start a chunk from its states alone. Its
    augmented input (``[x_{t-k+1}, ..., x_t]`` per step, in the direction's own time order, zeros
    before each sequence's start and on padding) is made here for the whole sequence, in the
    original time order, and the chunks run it with ``window=1``: the same inputs to the same
    step. -> (view with window 1, augmented x (B, T, k*I))."""
    B, T, _ = x.shape
    Lf = np.full(B, T, np.int64) if L is None else L
    ridx = F._reverse_index(Lf, T) if view.go_backwards else None
    Xt = F._time_major_copy(x, ridx, Lf, True)  # (T, B, I), a new array
    if Lf.min() < T:
        Xt[np.arange(T)[:, None] >= Lf[None, :]] = 0
    Xa = mod.augment(Xt, {"window": view.window, "pooling": getattr(view, "pooling", None)})
    xa = np.ascontiguousarray(F._batch_first(Xa, ridx))  # (B, T, k*I), original positions
    v = copy.copy(view)
    v.window = 1
    return v, xa


class _ChunkedOutput:
    """The output sequence (B, T, D, O) of a chunked pass, allocated (zeros: padding) by the first
    chunk that returns one, since O is the cell's output width; None without return_sequences."""

    def __init__(self, B, T, D, wanted):
        self.shape, self.wanted, self.Y, self._lock = (B, T, D), wanted, None, threading.Lock()

    def ready(self):
        return not self.wanted or self.Y is not None

    def put(self, t0, t1, d, Yc):
        if not self.wanted:
            return
        with self._lock:
            if self.Y is None:
                self.Y = np.zeros(self.shape + Yc.shape[3:], Yc.dtype)
        self.Y[:, t0:t1, d] = Yc[:, :, 0]


def _run_direction_chunked(layer, x, init, L, steps, out, d):
    """One direction over (B, T) in chunks -> its final states; writes ``out`` for direction d."""
    T = x.shape[1]
    starts = list(range(0, T, steps))
    if layer.go_backwards:
        starts.reverse()
    states = list(init)
    for t0 in starts:
        t1 = min(t0 + steps, T)
        Lc = None if L is None else np.clip(L - t0, 0, t1 - t0)
        if Lc is not None and Lc.max() == 0 and all(s is not None for s in states) and out.ready():
            continue  # nothing valid in this chunk: the states hold, the outputs stay zero
        Yc, h, c, _ = layer._run(x[:, t0:t1], states, Lc, False)
        states = [h] + ([c] if c is not None else [])
        out.put(t0, t1, d, Yc)
    return states


def _infer_chunked(layer, x, init, lengths, steps):
    """Inference of ``layer._run`` in chunks of ``steps`` time steps -> (Y or None, Y_h, Y_c)."""
    from .. import cells
    from .._config import get_num_threads

    B, T, _ = x.shape
    L = None if lengths is None else F._lengths(lengths, B, T)
    D = layer.num_directions
    out = _ChunkedOutput(B, T, D, layer.return_sequences)
    mod = cells.get(layer.cell).mod()
    if hasattr(mod, "augment"):
        views = [_augmented(_direction_view(layer, d), mod, x, L) for d in range(D)]
    else:
        views = [(layer if D == 1 else _direction_view(layer, d), x) for d in range(D)]
    if D == 1:
        finals = [_run_direction_chunked(views[0][0], views[0][1], init, L, steps, out, 0)]
    else:
        jobs = [functools.partial(_run_direction_chunked, views[d][0], views[d][1],
                                  [None if s is None else s[:, d: d + 1] for s in init], L, steps, out, d)
                for d in range(D)]
        if get_num_threads() > 1:  # the two directions side by side, as one call runs them
            with ThreadPoolExecutor(max_workers=D - 1, thread_name_prefix="edgernn-dir") as ex:
                futs = [ex.submit(j) for j in jobs[1:]]
                finals = [jobs[0]()] + [f.result() for f in futs]
        else:
            finals = [j() for j in jobs]
    merged = [np.concatenate([f[k] for f in finals], axis=1) if D > 1 else finals[0][k]
              for k in range(len(finals[0]))]
    return out.Y, merged[0], (merged[1] if len(merged) > 1 else None)


class RecurrentLayer(Layer):
    """Common machinery of SimpleRNN, GRU and LSTM (use those).

    Attributes read by the ONNX exporter and the streaming engine
    ----------------------------------------------------------------
    cell : {"rnn", "gru", "lstm"}
    units : int
    direction : {"forward", "reverse", "bidirectional"}
        ``"reverse"`` when ``go_backwards`` (the output sequence is then flipped back, Keras style).
    num_directions : int
    onnx_activations : list of str
        ONNX names, per direction (LSTM f,g,h; GRU f,g; RNN f).
    activation_alpha, activation_beta : list of float or None
        Values for the activations that take them, in order (onnxruntime's convention).
    clip : float or None
    input_forget : bool
    linear_before_reset : bool
    peephole : bool
    go_backwards, return_sequences, return_state, stateful : bool
    merge_mode : str or None
        Set on the bidirectional inner layer.
    """

    cell = None
    gates = 1
    num_states = 1

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 clip=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        if self.units < 1:
            raise ValueError(f"{type(self).__name__}: units must be >= 1, got {units}")
        self.activation = _keras_activation(activation)
        self.recurrent_activation = _keras_activation(recurrent_activation)
        self.use_bias = bool(use_bias)
        for init in (kernel_initializer, recurrent_initializer, bias_initializer):
            initializers.get(init)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.dropout = float(dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1), got {dropout}")
        self.recurrent_dropout = float(recurrent_dropout)
        if self.recurrent_dropout != 0.0:
            raise NotImplementedError(
                f"{type(self).__name__}: recurrent_dropout is not implemented (it would need a mask "
                "inside the jitted time loop); use dropout= on the inputs or a Dropout layer")
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.clip = None if clip is None else float(clip)
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"{type(self).__name__}: clip must be > 0, got {clip}")
        self.input_forget = False
        self.linear_before_reset = False
        self.peephole = False
        self.merge_mode = None
        self.num_directions = 1
        self._states = None  # stateful: [h (B, D, H), c (B, D, H)]
        self.initial_state_grads = None

    # ---- ONNX view -------------------------------------------------------------------
    def _keras_activations(self):
        return [self.activation]

    @property
    def direction(self):
        if self.num_directions == 2:
            return "bidirectional"
        return "reverse" if self.go_backwards else "forward"

    @property
    def onnx_activations(self):
        return [KERAS_TO_ONNX[a][0] for a in self._keras_activations()] * self.num_directions

    def _alpha_beta(self, idx):
        vals = [KERAS_TO_ONNX[a][idx] for a in self._keras_activations()] * self.num_directions
        vals = [float(v) for v in vals if v is not None]
        return vals or None

    @property
    def activation_alpha(self):
        return self._alpha_beta(1)

    @property
    def activation_beta(self):
        return self._alpha_beta(2)

    def onnx_weights(self):
        """All ONNX inputs as arrays: ``W, R, Wb, Rb`` and ``P`` (None without peepholes).

        Biases are zeros when ``use_bias=False``; ``Rb`` is the zero buffer when it is not
        trained (see the module docstring).
        """
        D, GH = self.num_directions, self.gates * self.units
        zeros = np.zeros((D, GH), self.dtype)
        Wb = self.params.get("Wb", zeros)
        Rb = self.params.get("Rb", self.buffers.get("Rb", zeros))
        return {"W": self.params["W"], "R": self.params["R"], "Wb": Wb, "Rb": Rb,
                "P": self.params.get("P")}

    # ---- building ---------------------------------------------------------------------
    def _build(self, input_shape, rng):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} {self.name!r}: expects input (batch, time, features) "
                             f"with a known feature count, got sample shape {input_shape} "
                             "(input shapes exclude the batch axis: use (time or None, features))")
        I, H, G, D = input_shape[-1], self.units, self.gates, self.num_directions
        kinit = initializers.get(self.kernel_initializer)
        rinit = initializers.get(self.recurrent_initializer)
        binit = initializers.get(self.bias_initializer)
        # Keras kernels are (I, G*H) and (H, G*H); ONNX wants their transposes.
        self.params["W"] = np.stack([kinit((I, G * H), rng, self.dtype).T for _ in range(D)])  # (D, GH, I)
        self.params["R"] = np.stack([rinit((H, G * H), rng, self.dtype).T for _ in range(D)])  # (D, GH, H)
        if self.use_bias:
            self.params["Wb"] = np.stack([binit((G * H,), rng, self.dtype) for _ in range(D)])  # (D, GH)
            self._init_bias(self.params["Wb"])
            if self._rb_trainable():
                self.params["Rb"] = np.stack([binit((G * H,), rng, self.dtype) for _ in range(D)])
            else:
                self.buffers["Rb"] = np.zeros((D, G * H), self.dtype)
        if self.peephole:
            self.params["P"] = np.zeros((D, 3 * H), self.dtype)  # (D, 3H) order i,o,f

    def _init_bias(self, Wb):
        pass

    def _rb_trainable(self):
        return False

    def compute_output_shape(self, input_shape):
        T = input_shape[0]
        H = self.units * (2 if self.merge_mode == "concat" else 1)
        out = (T, H) if self.return_sequences else (H,)
        if self.return_state:
            return [out] + [(self.units,)] * (self.num_states * self.num_directions)
        return out

    # ---- state ----------------------------------------------------------------------
    def _to_internal(self, states, B=None):
        """Keras-order list of (B, H) arrays -> [h (B, D, H), c (B, D, H)]."""
        if isinstance(states, np.ndarray) and self.num_states == 1 and self.num_directions == 1:
            states = [states]
        states = [np.asarray(s, dtype=self.dtype) for s in states]
        n, D, H = self.num_states, self.num_directions, self.units
        if len(states) != n * D:
            raise ValueError(f"{self.name!r}: expected {n * D} initial state arrays, got {len(states)}")
        out = []
        for k in range(n):
            parts = [states[d * n + k] for d in range(D)]
            for p in parts:
                if p.ndim != 2 or p.shape[1] != H or (B is not None and p.shape[0] != B):
                    raise ValueError(f"{self.name!r}: each initial state must be (batch={B}, units={H}), "
                                     f"got {p.shape}")
            out.append(np.ascontiguousarray(np.stack(parts, axis=1)))  # (B, D, H)
        return out

    def _to_keras(self, internal):
        n, D = self.num_states, self.num_directions
        return [internal[k][:, d] for d in range(D) for k in range(n)]

    @property
    def states(self):
        """Stateful layers: the carried state as Keras' list of (B, H) arrays, or None."""
        return None if self._states is None else [s.copy() for s in self._to_keras(self._states)]

    def reset_states(self, states=None):
        """Forget the carried state (or set it to ``states``, Keras' list of (B, H) arrays)."""
        self._states = None if states is None else self._to_internal(states)

    def _initial(self, B, initial_state):
        if initial_state is not None:
            return self._to_internal(initial_state, B), True
        if self.stateful and self._states is not None:
            if self._states[0].shape[0] != B:
                raise ValueError(
                    f"stateful layer {self.name!r} holds state for batch size {self._states[0].shape[0]} "
                    f"but got a batch of {B}; keep the batch size fixed or call reset_states()")
            return self._states, False
        return [None] * self.num_states, False

    # ---- merging directions (Bidirectional) ----------------------------------------------
    def _merge(self, A):
        """(..., D, H) -> (..., H) or (..., 2H) for concat."""
        if self.num_directions == 1:
            return A[..., 0, :]
        m = self.merge_mode
        if m == "concat":
            return A.reshape(A.shape[:-2] + (2 * self.units,))
        a, b = A[..., 0, :], A[..., 1, :]
        return {"sum": lambda: a + b, "ave": lambda: 0.5 * (a + b), "mul": lambda: a * b}[m]()

    def _unmerge(self, d, A):
        """Gradient of ``_merge``: (..., H or 2H) -> (..., D, H); A is what was merged."""
        if self.num_directions == 1:
            return d[..., None, :]
        m = self.merge_mode
        if m == "concat":
            return d.reshape(d.shape[:-1] + (2, self.units))
        if m == "sum":
            return np.stack([d, d], axis=-2)
        if m == "ave":
            return np.stack([0.5 * d, 0.5 * d], axis=-2)
        return np.stack([d * A[..., 1, :], d * A[..., 0, :]], axis=-2)

    # ---- forward / backward ----------------------------------------------------------------
    def _input_features(self):
        """Features per input step (a cell whose input weights are shaped otherwise overrides this)."""
        return self.params["W"].shape[2]

    def _check_input(self, x):
        x = np.asarray(x)
        I = self._input_features()
        if x.ndim != 3 or x.shape[2] != I:
            raise ValueError(f"{type(self).__name__} {self.name!r}: expected input (batch, time, {I}), "
                             f"got shape {x.shape}")
        return x.astype(self.dtype, copy=False)

    def forward(self, x, lengths=None, training=False, need_grad=True, initial_state=None):
        """Run the layer.

        Parameters
        ----------
        x : ndarray (B, T, I)
        lengths : int ndarray (B,), optional
            Valid steps per sample (trailing padding).
        training : bool
            Enables input dropout.
        need_grad : bool
            Keep the kernel cache for ``backward`` (False for inference).
        initial_state : list of ndarray, optional
            Keras order: ``[h]`` (RNN, GRU), ``[h, c]`` (LSTM), each (B, H); bidirectional:
            forward states then backward states.

        Returns
        -------
        y : ndarray
            (B, T, H') if ``return_sequences`` else (B, H') (H' = 2H for concat);
            with ``return_state``, the list ``[y, *states]`` in Keras order.
        """
        x = self._check_input(x)  # (B, T, I)
        B, T, _ = x.shape
        if lengths is not None:
            lengths = np.asarray(lengths)
        mask = None
        if training and self.dropout > 0.0:  # one mask for all steps (Keras)
            keep = self._random().random((B, 1, x.shape[2]), dtype=np.float32) >= self.dropout
            mask = keep.astype(self.dtype) * self.dtype.type(1.0 / (1.0 - self.dropout))  # (B, 1, I)
            x = x * mask
        init, given = self._initial(B, initial_state)
        steps = 0 if need_grad else _infer_chunk_steps(self, B, T)
        if steps:  # inference of a long sequence: in chunks of time, temporaries bounded by the chunk
            Y, Y_h, Y_c = _infer_chunked(self, x, init, lengths, steps)
            cache = None
        else:
            Y, Y_h, Y_c, cache = self._run(x, init, lengths, need_grad)  # Y (B, T, D, H); Y_h (B, D, H)
        if self.stateful:
            self._states = [Y_h.copy()] + ([Y_c.copy()] if Y_c is not None else [])
        if self.return_sequences:
            A = _flip_valid(Y, lengths) if self.go_backwards else Y  # (B, T, D, H)
        else:
            A = Y_h  # (B, D, H): state at each sample's last valid step
        y = self._merge(A)
        if need_grad:  # inference writes no cache on the layer (thread safety)
            self._fwd = (cache, mask, lengths, given, A if self.merge_mode == "mul" else None, Y.dtype)
        if self.return_state:
            finals = [Y_h] + ([Y_c] if Y_c is not None else [])
            return [y] + self._to_keras(finals)
        return y

    def backward(self, dy):
        """Backpropagate ``dy`` (or ``[dy, *dstates]`` with ``return_state``; None entries allowed)."""
        cache, mask, lengths, given, A, dtype = self._fwd
        if cache is None:
            raise RuntimeError(f"{self.name!r}: backward needs forward(..., need_grad=True)")
        dstates = []
        if isinstance(dy, (list, tuple)):
            dy, dstates = dy[0], list(dy[1:])
        dY = dY_h = dY_c = None
        if self.return_sequences:
            dA = np.ascontiguousarray(self._unmerge(dy, A), dtype=dtype)  # (B, T, D, H)
            dY = _flip_valid(dA, lengths) if self.go_backwards else dA
        else:
            dY_h = np.ascontiguousarray(self._unmerge(dy, A), dtype=dtype)  # (B, D, H)
        if dstates and any(s is not None for s in dstates):
            B = (dY if dY is not None else dY_h).shape[0]
            full = [np.zeros((B, self.units), dtype) if s is None else s for s in dstates]
            ds = self._to_internal(full)
            dY_h = ds[0] if dY_h is None else dY_h + ds[0]
            if self.num_states == 2:
                dY_c = ds[1]
        if getattr(cache, "need_dx", None) is not None:
            cache.need_dx = not self._dx_unused  # the functional cells skip the product
        g = self._run_backward(cache, dY, dY_h, dY_c)
        self.grads = {k: g[k] for k in self.params}
        self.initial_state_grads = None
        if given:
            from .. import cells

            names = cells.get(self.cell).state_names
            self.initial_state_grads = self._to_keras([g[f"{n}0"] for n in names if f"{n}0" in g])
        dx = g["X"]  # (B, T, I)
        if self._dx_unused:
            return None
        return dx if mask is None else dx * mask

    def _bias_args(self):
        if not self.use_bias:
            return None, None
        return self.params["Wb"], self.params.get("Rb", self.buffers.get("Rb"))

    def _common(self):
        return dict(direction=self.direction, activations=self.onnx_activations,
                    activation_alpha=self.activation_alpha, activation_beta=self.activation_beta,
                    clip=self.clip)

    def _run(self, x, init, lengths, train):
        """Call the functional kernel -> (Y, Y_h, Y_c or None, cache or None)."""
        raise NotImplementedError

    def _run_backward(self, cache, dY, dY_h, dY_c):
        raise NotImplementedError

    # ---- config ----------------------------------------------------------------------------
    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "recurrent_initializer": self.recurrent_initializer,
                "bias_initializer": self.bias_initializer, "dropout": self.dropout,
                "return_sequences": self.return_sequences, "return_state": self.return_state,
                "go_backwards": self.go_backwards, "stateful": self.stateful, "clip": self.clip}


class SimpleRNN(RecurrentLayer):
    """Fully connected (Elman) RNN: ``h_t = activation(W x_t + R h_{t-1} + Wb + Rb)``.

    Parameters
    ----------
    units : int
    activation : str
        Keras name; default ``"tanh"``.
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer, dropout,
    return_sequences, return_state, go_backwards, stateful :
        As in Keras. ``recurrent_dropout`` must be 0.
    clip : float, optional
        ONNX cell clip (pre-activations clipped to [-clip, clip]).
    """

    cell = "rnn"
    gates = 1
    num_states = 1

    def __init__(self, units, activation="tanh", **kwargs):
        if "recurrent_activation" in kwargs:
            raise TypeError("SimpleRNN has no recurrent_activation (it has a single activation)")
        super().__init__(units, activation=activation, **kwargs)

    def _run(self, x, init, lengths, train):
        W, R = self.params["W"], self.params["R"]
        Wb, Rb = self._bias_args()
        out = F.rnn(x, W, R, Wb, Rb, init[0], lengths=lengths, train=train, **self._common())
        return out[0], out[1], None, (out[2] if train else None)

    def _run_backward(self, cache, dY, dY_h, dY_c):
        return F.rnn_backward(cache, dY, dY_h)


class GRU(RecurrentLayer):
    """Gated recurrent unit, ONNX gate order z, r, h.

    Parameters
    ----------
    units : int
    activation, recurrent_activation : str
        Keras names; defaults ``"tanh"`` and ``"sigmoid"`` (ONNX activations [f, g] =
        [recurrent_activation, activation]).
    reset_after : bool
        True (default): reset gate applied after the recurrent product (ONNX
        ``linear_before_reset=1``, PyTorch and Keras' default); both biases are trained.
    Other parameters as ``SimpleRNN``.
    """

    cell = "gru"
    gates = 3
    num_states = 1

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", reset_after=True,
                 **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kwargs)
        self.reset_after = bool(reset_after)
        self.linear_before_reset = self.reset_after

    def _keras_activations(self):
        return [self.recurrent_activation, self.activation]

    def _rb_trainable(self):
        return self.reset_after

    def _run(self, x, init, lengths, train):
        W, R = self.params["W"], self.params["R"]
        Wb, Rb = self._bias_args()
        out = F.gru(x, W, R, Wb, Rb, init[0], lengths=lengths,
                    linear_before_reset=self.linear_before_reset, train=train, **self._common())
        return out[0], out[1], None, (out[2] if train else None)

    def _run_backward(self, cache, dY, dY_h, dY_c):
        return F.gru_backward(cache, dY, dY_h)

    def get_config(self):
        return {**super().get_config(), "recurrent_activation": self.recurrent_activation,
                "reset_after": self.reset_after}


class LSTM(RecurrentLayer):
    """Long short-term memory, ONNX gate order i, o, f, c.

    Parameters
    ----------
    units : int
    activation, recurrent_activation : str
        Keras names; defaults ``"tanh"`` and ``"sigmoid"`` (ONNX activations [f, g, h] =
        [recurrent_activation, activation, activation]).
    unit_forget_bias : bool
        Start the forget-gate bias at 1 (rows 2H:3H of ``Wb``). Default True.
    peephole : bool
        Add peephole weights ``P`` (D, 3H), order i, o, f (ONNX); initialised to zero.
    coupled_gates : bool
        ONNX ``input_forget``: f = 1 - i (the forget-gate weights are then unused).
    Other parameters as ``SimpleRNN``.
    """

    cell = "lstm"
    gates = 4
    num_states = 2

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", unit_forget_bias=True,
                 peephole=False, coupled_gates=False, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.peephole = bool(peephole)
        self.input_forget = bool(coupled_gates)

    def _keras_activations(self):
        return [self.recurrent_activation, self.activation, self.activation]

    def _init_bias(self, Wb):
        if self.unit_forget_bias:
            H = self.units
            Wb[:, 2 * H:3 * H] = 1.0  # forget gate (order i, o, f, c)

    def _run(self, x, init, lengths, train):
        W, R = self.params["W"], self.params["R"]
        Wb, Rb = self._bias_args()
        out = F.lstm(x, W, R, Wb, Rb, init[0], init[1], self.params.get("P"), lengths=lengths,
                     input_forget=self.input_forget, train=train, **self._common())
        return out[0], out[1], out[2], (out[3] if train else None)

    def _run_backward(self, cache, dY, dY_h, dY_c):
        return F.lstm_backward(cache, dY, dY_h, dY_c)

    def get_config(self):
        return {**super().get_config(), "recurrent_activation": self.recurrent_activation,
                "unit_forget_bias": self.unit_forget_bias, "peephole": self.peephole,
                "coupled_gates": self.input_forget}


_DELEGATED = ("cell", "units", "gates", "num_states", "num_directions", "direction", "onnx_activations",
              "activation_alpha", "activation_beta", "clip", "input_forget", "linear_before_reset",
              "peephole", "go_backwards", "return_sequences", "return_state", "stateful", "activation",
              "recurrent_activation", "use_bias", "dropout", "onnx_weights", "states", "reset_states",
              "initial_state_grads")


class Bidirectional(Layer):
    """Run a recurrent layer in both directions and merge the two outputs.

    One bidirectional kernel call (D = 2): the weights of both directions are stacked in
    ``params`` (``W`` is (2, G*H, I) etc., forward direction first) and ``onnx_weights()``
    gives them to the exporter as they are. The backward half's outputs are in the original
    time order; with ``return_sequences=False`` it contributes its state after reading the
    first step (Keras semantics).

    Parameters
    ----------
    layer : SimpleRNN, GRU or LSTM
        Template; its configuration (not its weights) is used for both directions.
    merge_mode : {"concat", "sum", "mul", "ave"}

    Attributes
    ----------
    layer : RecurrentLayer
        The inner D = 2 layer; recurrent attributes (``cell``, ``units``, ``direction``, ...)
        are also readable on the wrapper.
    merge_mode : str
    """

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kwargs):
        if not isinstance(layer, RecurrentLayer):
            raise TypeError(f"Bidirectional wraps SimpleRNN, GRU or LSTM, got {type(layer).__name__}")
        if backward_layer is not None:
            raise NotImplementedError("Bidirectional: backward_layer is not supported; both directions "
                                      "use `layer`'s configuration")
        if merge_mode not in ("concat", "sum", "mul", "ave"):
            raise ValueError(f"Bidirectional: merge_mode must be 'concat', 'sum', 'mul' or 'ave', "
                             f"got {merge_mode!r}")
        if layer.go_backwards:
            raise ValueError("Bidirectional: the wrapped layer must not have go_backwards=True")
        cfg = layer.get_config()
        if "input_shape" in cfg:
            kwargs.setdefault("input_shape", cfg["input_shape"])
        super().__init__(**kwargs)
        cfg.pop("input_shape", None)
        self.layer = type(layer).from_config(cfg)
        self.layer.num_directions = 2
        self.layer.merge_mode = merge_mode
        self.merge_mode = merge_mode
        self.params = self.layer.params
        self.buffers = self.layer.buffers

    def __getattr__(self, name):
        layer = self.__dict__.get("layer")
        if layer is not None and (name in _DELEGATED or not name.startswith("_")):  # a cell's own attributes too
            return getattr(layer, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def build(self, input_shape, rng=None):
        self.layer.dtype = self.dtype
        self.layer.name = self.layer.name or (self.name and self.name + "_inner")
        self.layer.build(input_shape, rng)
        super().build(input_shape, rng)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def forward(self, x, lengths=None, training=False, need_grad=True, initial_state=None):
        if training:
            self.layer._rng = self._rng
        return self.layer.forward(x, lengths, training, need_grad, initial_state)

    def backward(self, dy):
        dx = self.layer.backward(dy)
        self.grads = self.layer.grads
        return dx

    def astype(self, dtype):
        self.layer.astype(dtype)
        self.dtype = self.layer.dtype
        self.grads = {}
        return self

    def get_config(self):
        inner = self.layer.get_config()
        inner["name"] = None
        return {**super().get_config(), "merge_mode": self.merge_mode,
                "layer": {"class_name": type(self.layer).__name__, "config": inner}}

    @classmethod
    def from_config(cls, config):
        from . import get as get_layer_class

        config = dict(config)
        spec = config.pop("layer")
        inner = get_layer_class(spec["class_name"]).from_config(spec["config"])
        return cls(inner, **config)
