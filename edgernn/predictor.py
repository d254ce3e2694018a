"""Inference with the weights checked and packed once: ``model.predictor()``.

``model.predict`` reads the model's live weights on every call: it validates them, packs the
recurrent matrices into the kernels' layout and sizes its buffers, which for a short window
(batch 1, ten steps) costs more than the recurrent steps themselves. A ``Predictor`` is made
once, like an onnxruntime ``InferenceSession``: a private copy of the model whose LSTM and GRU
layers keep their packed weights, so a call only checks its input and runs the kernels.

    >>> p = model.predictor()        # a snapshot: later training does not change it
    >>> y = p(x)                     # == model.predict(x)

The results are those of ``model.predict`` on the same input, bit for bit: the fast layers run
the same kernels on the same packed weights (``functional._forward_fused``), and any call the
fast path does not cover (sequence lengths, initial states, long sequences predicted in chunks,
batches split over threads, other layers) runs the layer's own ``forward``. One exception: a
single sequence of fewer than 4 steps, which ``predict`` gives to the batch-major kernels
(packing the weights would cost more than its steps), runs on the packed weights here: equal to
float32 rounding (a few units in the last place), not bit for bit.
"""

from __future__ import annotations

import numpy as np

from . import functional as F
from ._activations import resolve
from ._config import blas_limit
from .cells import _ops as K
from .layers.recurrent import _infer_chunk_steps
from .models import PREDICT_BATCH

__all__ = ["Predictor"]


class Predictor:
    """A model's inference on a snapshot of its weights, packed once (see the module docstring).

    Made by ``Sequential.predictor()`` / ``Model.predictor()``. Calls take the arguments of
    ``predict`` and return what it returns; results are fresh arrays. Thread-safe: calls write
    no shared state.

    Parameters
    ----------
    model : Sequential or Model
        A built model without stateful layers (their carried state belongs to the model).

    Attributes
    ----------
    fast_layers : list of str
        Names of the layers that run on packed weights.
    """

    def __init__(self, model):
        model._require_built("predictor")
        if model._stateful():
            raise ValueError("predictor: a stateful model carries its states from call to call; "
                             "use model.predict or model.stream()")
        self._model = _snapshot(model)
        runners = {}
        for layer in self._model.layers:
            r = _FusedRunner.make(layer)
            if r is not None:
                runners[id(layer)] = r
        self._model._runners = runners
        self.fast_layers = [r.layer.name for r in runners.values()]

    def __call__(self, x, batch_size=None, lengths=None):
        """``model.predict(x, batch_size, lengths=lengths)`` on the snapshot."""
        m = self._model
        if batch_size is not None or lengths is not None or not isinstance(x, np.ndarray) or x.ndim < 2 \
                or not 0 < x.shape[0] <= PREDICT_BATCH:
            return m.predict(x, batch_size=batch_size, lengths=lengths)
        # one array, one batch: predict's own steps without its generality (sources, batching, ragged lists)
        X, _, _ = m._prepare_x(x, None, "x")
        with blas_limit():
            out, _ = m._infer(X)
        res = out if isinstance(out, list) else [out]
        res = [o.copy() if np.may_share_memory(o, X) else o for o in res]
        return res if len(res) > 1 else res[0]

    predict = __call__

    def __repr__(self):
        return f"<Predictor of {self._model.name!r}: fast layers {self.fast_layers}>"


def _snapshot(model):
    """A copy of ``model`` with copies of its weights (layers, config and weights; no optimizer)."""
    clone = type(model).from_config(model.get_config())
    if not clone.built:
        clone.build(model.input_shape)
    clone.set_weights(model.get_weights())
    return clone


class _FusedRunner:
    """``layer.forward`` for inference of an LSTM or GRU layer with the fused kernels' default
    cell, on weights packed once; anything else goes to ``layer.forward``."""

    def __init__(self, layer, packed):
        self.layer = layer
        self.packed = packed
        self.H = layer.units
        self.GH = layer.gates * layer.units

    @classmethod
    def make(cls, layer):
        """A runner for ``layer``, or None where the fused kernels never run it."""
        from .layers.recurrent import GRU, LSTM

        if type(layer) not in (LSTM, GRU) or layer.num_directions != 1 or layer.go_backwards:
            return None
        if layer.dtype != np.float32 or layer.return_state:
            return None
        from . import cells

        codes, _, _ = resolve(layer.onnx_activations, cells.get(layer.cell).default_activations, 1,
                              layer.dtype, layer.activation_alpha, layer.activation_beta)
        clip = 0.0 if layer.clip is None else float(layer.clip)
        lbr = bool(getattr(layer, "linear_before_reset", True))
        if not F._default_cell(layer.cell, codes[0], clip, layer.params.get("P"),
                               getattr(layer, "input_forget", False), lbr):
            return None
        W, R = layer.params["W"], layer.params["R"]  # (1, GH, I), (1, GH, H)
        Wb, Rb = layer._bias_args()
        H, GH = layer.units, layer.gates * layer.units
        bias, Rbh = F._kernel_bias(layer.cell, Wb, Rb, 0, H, GH, layer.dtype, lbr)
        return cls(layer, F._pack_fused(np.ascontiguousarray(W[0]), np.ascontiguousarray(R[0]), bias, Rbh,
                                        hot=False))

    def __call__(self, x, lengths=None, training=False, need_grad=True, initial_state=None, **kw):
        layer = self.layer
        if lengths is not None or initial_state is not None or training or need_grad or kw:
            return layer.forward(x, lengths=lengths, training=training, need_grad=need_grad,
                                 initial_state=initial_state, **kw)
        x = layer._check_input(x)  # (B, T, I), float32
        B, T, I = x.shape
        H = self.H
        # one sequence of fewer than 4 steps: predict packs no weights for it and runs the batch-major
        # kernels; here they are packed already, so the fused kernels run it (float32 rounding apart)
        if F._tasks(B, T, 1, self.GH, H + I)[1] or _infer_chunk_steps(layer, B, T):
            return layer.forward(x, training=False, need_grad=False)  # the general path, as predict takes it
        if not x.flags.c_contiguous or not x.flags.writeable:
            x = x.copy()
        L = np.full(B, T, np.int64)
        Xt = x.reshape(T, 1, I) if B == 1 else F._time_major_copy(x, None, L, False)  # (T, B, I)
        Y = np.empty((B, T, 1, H), x.dtype) if layer.return_sequences else None
        direct = Y is not None and H % K.PANEL == 0
        Yt, h, _ = F._forward_fused(layer.cell, {}, Xt, None, None, None, None, np.zeros((B, H), x.dtype),
                                    None, L, T, False, (Y, 0, 0) if direct else None, packed=self.packed)
        if Y is None:
            return np.ascontiguousarray(h)  # (B, H)
        if not direct:
            Y[:, :, 0, :] = Yt.transpose(1, 0, 2)
        return Y.reshape(B, T, H)

