"""Step-by-step inference of a functional ``Model`` whose every layer is causal.

A chain of layers streams through the jitted engine of :mod:`edgernn.streaming` (one call per
step for the whole model). A graph (several inputs or outputs, merges, residual connections)
streams here: one step runs the model's layer calls in order, each on one time step:

- recurrent layers through their own compiled :class:`edgernn.streaming.Stream` (state kept
  there, no allocation inside it);
- layers that act on every time step alone (``pointwise = True``: Dense, Activation, Dropout,
  the merge layers, LayerNormalization, ...) through their ``forward`` on ``(batch, features)``;
- layers with a state of their own in time (causal ``Conv1D``, causal self-attention) through
  their ``stream_state(batch_size)`` / ``stream_step(x, state)`` methods.

Anything else (a bidirectional or backward layer, pooling over the whole sequence, masks,
``initial_state`` from other tensors, inputs without a time axis) is refused when the stream is
created, naming the layer. Step ``t`` returns what ``model.predict`` gives at step ``t`` (sequence
outputs) or for the first ``t + 1`` steps (outputs without a time axis).
"""

from __future__ import annotations

import numpy as np

from .layers.recurrent import Bidirectional, RecurrentLayer

__all__ = ["GraphStream"]


def _label(layer):
    return f"{type(layer).__name__} {layer.name!r}"


class GraphStream:
    """A functional Model compiled for step-by-step inference (see the module docstring).

    Parameters
    ----------
    model : Model
    batch_size : int

    Attributes
    ----------
    batch_size : int
    input_names : list of str
    """

    def __init__(self, model, batch_size=1):
        from .models import Sequential

        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"stream: batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.model = model
        self.dtype = model.dtype
        self.input_names = model.input_names
        for t in model._inputs:
            if len(t.sample_shape) != 2 or t.dtype.kind != "f":
                raise ValueError(f"stream: input {t.name!r} of shape {t.shape}: a stream takes one step of every "
                                 "input at a time, so each input must be a float sequence (batch, time, features)")
        self._plan = []
        for nd in model._nodes:
            layer = nd.layer
            if nd.n_state:
                raise ValueError(f"stream: layer {_label(layer)} takes its initial state from other tensors "
                                 "(an encoder-decoder): the encoder needs the whole input first; stream the decoder "
                                 "alone, from the encoder's final state")
            if isinstance(layer, (RecurrentLayer, Bidirectional)):
                seq = Sequential(name=layer.name, dtype=model.dtype.name)
                seq._layers = [layer]
                seq.input_shape = (None, nd.inputs[0].sample_shape[-1])
                seq.built = True
                self._plan.append(("rnn", nd, seq.stream(self.batch_size)))  # refuses backward layers, naming them
            elif hasattr(layer, "stream_step"):
                self._plan.append(("state", nd, layer.stream_state(self.batch_size, **nd.kwargs)))
            elif getattr(layer, "pointwise", False):
                self._plan.append(("point", nd, None))
            else:
                raise ValueError(f"stream: layer {_label(layer)} is not causal step by step (it needs the whole "
                                 "sequence, or has no streaming form yet); export the full graph to ONNX instead")
        self._init_states = [None if kind != "state" else _copy(s) for kind, _, s in self._plan]

    def step(self, x):
        """Feed one time step of every input; returns the outputs for it.

        Parameters
        ----------
        x : array, or list of arrays (one per input, in the model's order), or dict by input name
            Each ``(features,)`` for batch size 1 or ``(batch, features)``.

        Returns
        -------
        ndarray or list of ndarray
            ``(outputs,)`` or ``(batch, outputs)`` per model output (fresh arrays).
        """
        m = self.model
        xs = [x[n] for n in self.input_names] if isinstance(x, dict) else (
            list(x) if isinstance(x, (list, tuple)) else [x])
        if len(xs) != len(m._inputs):
            raise ValueError(f"stream.step: the model has {len(m._inputs)} inputs {self.input_names}, got {len(xs)}")
        vals = {}
        one = False
        for t, a in zip(m._inputs, xs, strict=True):
            a = np.asarray(a, dtype=self.dtype)
            F = t.sample_shape[-1]
            if a.ndim == 1 and self.batch_size == 1 and a.shape == (F,):
                a, one = a[None], True
            if a.shape != (self.batch_size, F):
                raise ValueError(f"stream.step: input {t.name!r} expects one step of shape ({F},) or "
                                 f"({self.batch_size}, {F}), got {a.shape}")
            vals[id(t)] = a
        for kind, nd, s in self._plan:
            layer = nd.layer
            ins = [vals[id(t)] for t in nd.inputs]
            if kind == "rnn":
                y = s.step(np.ascontiguousarray(ins[0]))
                if len(nd.outputs) > 1:  # return_state: the states after this step, Keras order
                    y = [y, *s.state[0]]
            elif kind == "state":
                y = layer.stream_step(ins if getattr(layer, "multi_input", False) else ins[0], s, **nd.kwargs)
            else:  # one step as a sequence of length 1, so the layer sees the shapes it was built for
                ins = [a[:, None] if _timed(t) else a for a, t in zip(ins, nd.inputs, strict=True)]
                arg = ins if getattr(layer, "multi_input", False) else ins[0]
                y = layer.forward(arg, training=False, need_grad=False, **nd.kwargs)
                y = [a[:, 0] if _timed(t) else a for a, t in zip(y if isinstance(y, list) else [y], nd.outputs,
                                                                  strict=True)]
            outs = y if isinstance(y, list) else [y]
            for t, a in zip(nd.outputs, outs, strict=True):
                vals[id(t)] = a
        res = [np.array(vals[id(t)][0] if one else vals[id(t)]) for t in m._outputs]
        return res[0] if m._single_output else res

    __call__ = step

    def reset(self):
        """Zero every state: start new sequences."""
        for (kind, _, s), s0 in zip(self._plan, self._init_states, strict=True):
            if kind == "rnn":
                s.reset()
            elif kind == "state":
                _restore(s, s0)

    def __repr__(self):
        return f"<GraphStream model={self.model.name!r} batch_size={self.batch_size} calls={len(self._plan)}>"


def _timed(t):
    """A sequence tensor ((batch, time, features) in the model; one step is (batch, features))."""
    return len(t.sample_shape) >= 2


def _copy(state):
    if isinstance(state, dict):
        return {k: _copy(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_copy(v) for v in state]
    return state.copy() if isinstance(state, np.ndarray) else state


def _restore(state, init):
    for k in state:
        v = init[k]
        if isinstance(state[k], np.ndarray) and isinstance(v, np.ndarray) and state[k].shape == v.shape:
            state[k][...] = v
        else:
            state[k] = _copy(v)
