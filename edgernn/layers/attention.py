"""Attention layers: ``Attention`` (Luong), ``AdditiveAttention`` (Bahdanau) and
``AttentionPooling1D`` (the attention readout of Yang et al. 2016).

``Attention`` and ``AdditiveAttention`` follow Keras 3 (``keras.layers.Attention`` /
``AdditiveAttention``): they take a list ``[query, value]`` or ``[query, value, key]``
(batch-first, ``key`` defaults to ``value``) and return ``softmax(scores(query, key)) @ value``.
They are multi-input layers (``multi_input = True``, see :mod:`edgernn.layers.core`):
``build``/``compute_output_shape`` take a list of sample shapes, ``forward`` a list of arrays
and a list of ``lengths``, and ``backward`` returns one gradient per input.

Masks come from the lengths (trailing padding) of the inputs, as Keras' ``mask`` list does:

- key positions ``j >= lengths`` of the value (and of the key, when both have lengths: the
  smaller one counts) get exactly zero weight: ``-1e9`` is added to their scores before the
  softmax (as Keras does) and the weights are multiplied by the mask afterwards;
- ``use_causal_mask=True``: query step ``i`` attends to keys ``j <= i`` only (Keras' mask,
  aligned at the first step also when ``Tq != Tv``);
- query steps ``i >= lengths`` of the query output zeros; the output has the query's lengths.

A query row that sees no key at all (a value of length 0) has all-zero weights and outputs
zeros. Keras' ``-1e9`` bias there gives a softmax over the biased scores instead (in float32
the uniform average of the padded values): the only place where these layers differ from
Keras, and then only on numbers that mean nothing.

Shapes: query (B, Tq, Dq) or (B, Dq); value (B, Tv, Dv); key (B, Tv, Dk). Output (B, Tq, Dv)
and, with ``return_attention_scores``, the weights (B, Tq, Tv) (after masking, softmax and,
in training, dropout: what Keras returns). A query without a time axis is treated as Tq = 1
and the time axis is dropped from the outputs: (B, Dv) and (B, Tv).
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import initializers
from .core import Layer

__all__ = ["Attention", "AdditiveAttention", "AttentionPooling1D"]

_BIG = 1e9  # Keras' bias on masked scores (float32 and float64)


# ---- argument checks ----------------------------------------------------------------------------
def _check_bool(value, name):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def _check_rate(value, name="dropout"):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r} ({type(value).__name__})")
    value = float(value)
    if not 0.0 <= value < 1.0:  # also refuses NaN
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def _check_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer or None, got {seed!r} ({type(seed).__name__})")
    return int(seed)


def _check_units(units):
    if units is None:
        return None
    if isinstance(units, (bool, np.bool_)) or not isinstance(units, numbers.Integral):
        raise TypeError(f"units must be a positive integer or None, got {units!r} ({type(units).__name__})")
    if int(units) < 1:
        raise ValueError(f"units must be >= 1, got {units}")
    return int(units)


def _check_lengths(lengths, B, T, name):
    """``lengths`` as an int64 (B,) array with values in [0, T] (None stays None)."""
    if lengths is None:
        return None
    L = np.asarray(lengths)
    if L.dtype.kind not in "iu" or L.shape != (B,):
        raise ValueError(f"{name}: expected {B} integers, got shape {L.shape} dtype {L.dtype}")
    if L.size and (L.min() < 0 or L.max() > T):
        raise ValueError(f"{name}: values must be in [0, {T}], got min {L.min()} max {L.max()}")
    return L.astype(np.int64)


def _steps_valid(lengths, T):
    """bool (B, T): ``t < lengths[b]``."""
    return np.arange(T)[None, :] < lengths[:, None]


# ---- masked softmax (shared by all layers here) --------------------------------------------------
def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _masked_softmax(scores, mask, axis=-1):
    """-> (w_soft, weights): softmax of ``scores`` with ``-1e9`` added where ``mask`` is False, and
    the weights ``w_soft * mask`` (exactly zero on masked entries, also in rows with no True)."""
    if mask is None:
        w = _softmax(scores, axis)
        return w, w
    biased = np.where(mask, scores, scores - scores.dtype.type(_BIG))
    w_soft = _softmax(biased, axis)
    return w_soft, w_soft * mask


def _masked_softmax_back(dweights, w_soft, mask, axis=-1):
    """dL/dscores from dL/dweights (the bias has derivative 1 in both branches of the Where)."""
    if mask is not None:
        dweights = dweights * mask
    return w_soft * (dweights - (dweights * w_soft).sum(axis=axis, keepdims=True))


def _is_shape(s):
    return isinstance(s, (tuple, list)) and all(d is None or isinstance(d, numbers.Integral) for d in s)


# ---- Attention ----------------------------------------------------------------------------------
class Attention(Layer):
    """Dot-product (Luong) attention, as ``keras.layers.Attention``.

    ``scores = query @ key^T`` (times the learned scalar ``scale`` when ``use_scale``); with
    ``score_mode="concat"``: ``scores[i, j] = concat_score_weight * sum(tanh(scale * (query_i +
    key_j)))`` (``scale`` only with ``use_scale``). Then ``weights = softmax(scores)`` over the
    keys (masked, see the module docstring), dropout on the weights in training, and
    ``output = weights @ value``.

    Parameters
    ----------
    use_scale : bool
        Learn a scalar ``scale`` (initialised to 1) multiplying the scores (``"dot"``) or the
        tanh argument (``"concat"``).
    score_mode : {"dot", "concat"}
    dropout : float in [0, 1)
        Inverted dropout on the attention weights in training.
    seed : int, optional
        Own random stream for the dropout masks (as ``edgernn.layers.Dropout``); by default a
        model hands its seeded training stream to the layer.
    use_causal_mask : bool
        Default of the call argument of the same name: query step ``i`` sees keys ``j <= i``
        only. (Keras takes it at call time only; edgernn accepts it in both places.)
    return_attention_scores : bool
        Default of the call argument: also return the weights (B, Tq, Tv) (Keras: a call
        argument only). ``forward(..., return_attention_scores=None, use_causal_mask=None)``
        overrides both per call (None: these values).

    Inputs
    ------
    ``[query, value]`` or ``[query, value, key]``: query (B, Tq, D) or (B, D), value (B, Tv, Dv),
    key (B, Tv, D) (default: the value, which then needs D features). ``"dot"`` and
    ``"concat"`` need the query and the key to have the same width.

    Notes
    -----
    A (B, D) query (e.g. the last state of a decoder) is an edgernn extension: it is treated as
    Tq = 1 and the outputs are (B, Dv) and (B, Tv). Keras 3 documents the query as
    (batch_size, Tq, dim) only; by its code, a rank-2 query is broadcast by ``matmul`` against
    every sample's keys and gives (B, B, Tv) scores, which is not attention per sample.

    Attributes
    ----------
    params : ``"scale"`` () when ``use_scale``; ``"concat_score_weight"`` () for ``"concat"``
        (both initialised to 1, as in Keras).
    """

    multi_input = True
    _score_modes = ("dot", "concat")

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0, seed=None, use_causal_mask=False,
                 return_attention_scores=False, **kwargs):
        super().__init__(**kwargs)
        self.use_scale = _check_bool(use_scale, "use_scale")
        if not isinstance(score_mode, str) or score_mode not in self._score_modes:
            raise ValueError(f"score_mode must be one of {self._score_modes}, got {score_mode!r}")
        self.score_mode = score_mode
        self.dropout = _check_rate(dropout, "dropout")
        self.seed = _check_seed(seed)
        if self.seed is not None:
            self._rng = np.random.default_rng(self.seed)
        self.use_causal_mask = _check_bool(use_causal_mask, "use_causal_mask")
        self.return_attention_scores = _check_bool(return_attention_scores, "return_attention_scores")

    # ---- shapes -------------------------------------------------------------------------
    def _check_shapes(self, input_shape):
        """The list of sample shapes [query, value(, key)], checked."""
        what = type(self).__name__
        if not isinstance(input_shape, (list, tuple)) or not all(_is_shape(s) for s in input_shape) \
                or len(input_shape) not in (2, 3):
            raise ValueError(f"{what}: input_shape must be a list of 2 or 3 sample shapes "
                             f"[query, value(, key)], got {input_shape!r}")
        shapes = [tuple(None if d is None else int(d) for d in s) for s in input_shape]
        q, v = shapes[0], shapes[1]
        k = shapes[2] if len(shapes) == 3 else v
        if len(q) not in (1, 2):
            raise ValueError(f"{what}: query must be (Tq, dim) or (dim,) per sample, got {q}")
        for name, s in (("value", v), ("key", k)):
            if len(s) != 2:
                raise ValueError(f"{what}: {name} must be (Tv, dim) per sample, got {s}")
        for name, s in (("query", q), ("value", v), ("key", k)):
            if s[-1] is None:
                raise ValueError(f"{what}: the last axis of the {name} must be known, got {s}")
        if v[0] is not None and k[0] is not None and v[0] != k[0]:
            raise ValueError(f"{what}: value and key must have the same number of steps, got {v} and {k}")
        self._check_widths(q[-1], k[-1])
        return shapes

    def _check_widths(self, dq, dk):
        if dq != dk:
            raise ValueError(f"{type(self).__name__}: query and key must have the same width for "
                             f"score_mode={self.score_mode!r}, got {dq} and {dk}")

    def build(self, input_shape, rng=None):
        """Create the parameters for the sample shapes ``[query, value(, key)]`` (no batch axis)."""
        shapes = self._check_shapes(input_shape)
        self.input_shape = shapes
        self._build(shapes, rng if rng is not None else np.random.default_rng())
        self.output_shape = self.compute_output_shape(shapes)
        self.built = True

    def _build(self, input_shape, rng):
        if self.use_scale:
            self.params["scale"] = np.ones((), self.dtype)
        if self.score_mode == "concat":
            self.params["concat_score_weight"] = np.ones((), self.dtype)

    def compute_output_shape(self, input_shape, return_attention_scores=None):
        """``(Tq, Dv)`` (``(Dv,)`` for a query without time axis); with the scores a list
        ``[(Tq, Dv), (Tq, Tv)]``."""
        shapes = self._check_shapes(input_shape)
        q, v = shapes[0], shapes[1]
        out = q[:-1] + (v[-1],)
        scores = q[:-1] + (v[0],)
        ret = self.return_attention_scores if return_attention_scores is None else \
            _check_bool(return_attention_scores, "return_attention_scores")
        return [out, scores] if ret else out

    def compute_lengths(self, x, lengths):
        """The query's lengths, for the output and the scores (None for a query without time axis).

        ``x`` may be the list of input arrays or None (the built query shape decides then)."""
        if lengths is None or not isinstance(lengths, (list, tuple)) or not lengths:
            return None
        ndim = getattr(x[0], "ndim", None) if isinstance(x, (list, tuple)) and x else None
        if ndim is None and self.built:
            ndim = len(self.input_shape[0]) + 1
        return None if ndim is not None and ndim < 3 else lengths[0]

    # ---- running ----------------------------------------------------------------------------
    def __call__(self, inputs, lengths=None, training=False, **kwargs):
        """Eager call on a list of arrays (built on first use); anything else (e.g. symbolic
        tensors of a graph API) goes to ``Layer.__call__``."""
        if not isinstance(inputs, (list, tuple)) or not all(
                isinstance(a, (np.ndarray, list, tuple, numbers.Number)) for a in inputs):
            return super().__call__(inputs, lengths=lengths, training=training, **kwargs)
        xs = [np.asarray(a) for a in inputs]
        if not self.built:
            self.build([((None,) if a.ndim == 3 else ()) + a.shape[-1:] for a in xs])
        return self.forward(xs, lengths=lengths, training=training, **kwargs)

    def _inputs(self, x, lengths):
        """Checked arrays (query as (B, Tq, Dq)) and lengths."""
        what = type(self).__name__
        if not self.built:
            raise RuntimeError(f"{what} {self.name!r} is not built: call build([query_shape, value_shape]) "
                               "or call the layer on a list of arrays first")
        if not isinstance(x, (list, tuple)) or len(x) not in (2, 3):
            got = type(x).__name__ + (f" of length {len(x)}" if isinstance(x, (list, tuple)) else "")
            raise ValueError(f"{what}: inputs must be a list [query, value] or [query, value, key], "
                             f"got {got}")
        xs = [np.asarray(a) for a in x]
        for name, a in zip(("query", "value", "key"), xs, strict=False):
            if a.dtype.kind not in "fiub":
                raise TypeError(f"{what}: {name} must hold numbers, got dtype {a.dtype}")
        dt = np.result_type(*[a.dtype for a in xs if a.dtype.kind == "f"], self.dtype)
        xs = [a.astype(dt, copy=False) for a in xs]
        q, v = xs[0], xs[1]
        k = xs[2] if len(xs) == 3 else v
        if q.ndim not in (2, 3) or v.ndim != 3 or k.ndim != 3:
            raise ValueError(f"{what}: expected query (B, Tq, D) or (B, D), value (B, Tv, Dv) and key "
                             f"(B, Tv, D), got shapes {[a.shape for a in xs]}")
        B = q.shape[0]
        if v.shape[0] != B or k.shape[0] != B:
            raise ValueError(f"{what}: inputs have different batch sizes {[a.shape[0] for a in xs]}")
        if k.shape[1] != v.shape[1]:
            raise ValueError(f"{what}: value and key must have the same number of steps, got {v.shape} and "
                             f"{k.shape}")
        want = [s[-1] for s in self.input_shape]
        if len(want) == 2 and len(xs) == 3:
            want.append(want[1])
        for name, a, w in zip(("query", "value", "key"), xs, want, strict=False):
            if a.shape[-1] != w:
                raise ValueError(f"{what} {self.name!r}: {name} has {a.shape[-1]} features, the layer was "
                                 f"built for {w}")
        if lengths is None:
            lengths = [None] * len(xs)
        if not isinstance(lengths, (list, tuple)) or len(lengths) != len(xs):
            raise ValueError(f"{what}: lengths must be a list with one entry (None or int array) per input, "
                             f"got {lengths!r}")
        squeeze = q.ndim == 2
        if squeeze and lengths[0] is not None:
            raise ValueError(f"{what}: lengths[0] must be None for a query without a time axis")
        q3 = q[:, None, :] if squeeze else q  # (B, Tq, Dq)
        Tq, Tv = q3.shape[1], v.shape[1]
        lq = None if squeeze else _check_lengths(lengths[0], B, Tq, "lengths[0] (query)")
        lv = _check_lengths(lengths[1], B, Tv, "lengths[1] (value)")
        lk = _check_lengths(lengths[2], B, Tv, "lengths[2] (key)") if len(xs) == 3 else None
        lkey = lv if lk is None else (lk if lv is None else np.minimum(lv, lk))
        return q3, v, k, len(xs) == 3, squeeze, lq, lkey

    def forward(self, x, lengths=None, training=False, need_grad=True, return_attention_scores=None,
                use_causal_mask=None):
        """Attend.

        Parameters
        ----------
        x : list of ndarray
            ``[query (B, Tq, D) or (B, D), value (B, Tv, Dv)]`` or ``[query, value, key (B, Tv, D)]``.
        lengths : list, optional
            One entry per input: None or int (B,) valid steps (trailing padding).
        training : bool
            Dropout on the weights.
        need_grad : bool
            False stores nothing on the layer.
        return_attention_scores, use_causal_mask : bool, optional
            None: the constructor's value.

        Returns
        -------
        ndarray (B, Tq, Dv), or the list ``[output, weights (B, Tq, Tv)]`` with the scores;
        (B, Dv) and (B, Tv) for a query without time axis.
        """
        ret = self.return_attention_scores if return_attention_scores is None else \
            _check_bool(return_attention_scores, "return_attention_scores")
        causal = self.use_causal_mask if use_causal_mask is None else \
            _check_bool(use_causal_mask, "use_causal_mask")
        q, v, k, has_key, squeeze, lq, lkey = self._inputs(x, lengths)
        Tq, Tv = q.shape[1], v.shape[1]
        scores, sc = self._scores(q, k)  # (B, Tq, Tv)
        mask = None
        if lkey is not None:
            mask = _steps_valid(lkey, Tv)[:, None, :]  # (B, 1, Tv)
        if causal:
            c = np.arange(Tv)[None, None, :] <= np.arange(Tq)[None, :, None]  # (1, Tq, Tv)
            mask = c if mask is None else mask & c
        w_soft, w = _masked_softmax(scores, mask)  # (B, Tq, Tv)
        drop = None
        if training and self.dropout > 0.0:
            keep = self._random().random(w.shape, dtype=np.float32) >= self.dropout
            drop = keep.astype(w.dtype) * w.dtype.type(1.0 / (1.0 - self.dropout))
            w = w * drop
        out = w @ v  # (B, Tq, Dv)
        qkeep = None
        if lq is not None:
            qkeep = _steps_valid(lq, Tq)[:, :, None]  # (B, Tq, 1)
            out = np.where(qkeep, out, out.dtype.type(0))
        if need_grad:  # inference writes nothing on the layer (thread safety)
            self._cache = (q, v, k, has_key, squeeze, sc, w_soft, mask, drop, w, qkeep, ret)
        if squeeze:
            out, w = out[:, 0], w[:, 0]
        return [out, w] if ret else out

    def backward(self, dy):
        """Gradients ``[dquery, dvalue(, dkey)]`` of the last ``forward``; fills ``self.grads``.

        ``dy`` is d(output) or, with the scores, ``[d(output), d(weights)]`` (entries may be None).
        """
        q, v, k, has_key, squeeze, sc, w_soft, mask, drop, w, qkeep, ret = self._cache
        if ret and (not isinstance(dy, (list, tuple)) or len(dy) != 2):
            raise ValueError(f"{type(self).__name__}: the last forward returned [output, scores]; backward "
                             "needs a list [d(output), d(scores)] (entries may be None)")
        dout, dw_out = (dy[0], dy[1]) if ret else (dy, None)
        if dout is None:
            dout = np.zeros(w.shape[:2] + v.shape[2:], w.dtype)
        if squeeze:
            dout = dout[:, None]
            dw_out = None if dw_out is None else dw_out[:, None]
        if qkeep is not None:
            dout = np.where(qkeep, dout, dout.dtype.type(0))
        dv = np.swapaxes(w, 1, 2) @ dout  # (B, Tv, Dv)
        dw = dout @ np.swapaxes(v, 1, 2)  # (B, Tq, Tv)
        if dw_out is not None:
            dw = dw + dw_out
        if drop is not None:
            dw = dw * drop
        dscores = _masked_softmax_back(dw, w_soft, mask)  # (B, Tq, Tv)
        dq, dk, self.grads = self._scores_back(dscores, sc)
        if squeeze:
            dq = dq[:, 0]
        if has_key:
            return [dq, dv, dk]
        return [dq, dv + dk]

    # ---- scores: (B, Tq, Dq), (B, Tv, Dk) -> (B, Tq, Tv) and back ----------------------------
    def _scores(self, q, k):
        p = self.params
        if self.score_mode == "dot":
            qk = q @ np.swapaxes(k, 1, 2)  # (B, Tq, Tv)
            return (qk * p["scale"] if self.use_scale else qk), (q, k, qk)
        pair = q[:, :, None, :] + k[:, None, :, :]  # (B, Tq, Tv, D)
        t = np.tanh(pair * p["scale"] if self.use_scale else pair)
        tsum = t.sum(axis=-1)  # (B, Tq, Tv)
        return p["concat_score_weight"] * tsum, (q, k, pair, t, tsum)

    def _scores_back(self, ds, sc):
        p = self.params
        grads = {}
        if self.score_mode == "dot":
            q, k, qk = sc
            if self.use_scale:
                grads["scale"] = (ds * qk).sum()
                ds = ds * p["scale"]
            dq, dk = ds @ k, np.swapaxes(ds, 1, 2) @ q
        else:
            q, k, pair, t, tsum = sc
            grads["concat_score_weight"] = (ds * tsum).sum()
            dpre = (p["concat_score_weight"] * ds)[..., None] * (1.0 - t * t)  # (B, Tq, Tv, D)
            if self.use_scale:
                grads["scale"] = (dpre * pair).sum()
                dpre = dpre * p["scale"]
            dq, dk = dpre.sum(axis=2), dpre.sum(axis=1)
        return dq, dk, {n: np.asarray(grads[n], p[n].dtype) for n in p}  # 0-d arrays, params order

    # ---- streaming (edgernn.graph_stream) ---------------------------------------------------
    def stream_state(self, batch_size, return_attention_scores=None, use_causal_mask=None):
        """State of a causal attention streamed one step at a time: the values (and keys) seen so far,
        in buffers that double when full. Refused unless ``use_causal_mask`` (otherwise every query
        step reads future values)."""
        causal = self.use_causal_mask if use_causal_mask is None else bool(use_causal_mask)
        if not causal:
            raise ValueError(f"stream: layer {type(self).__name__} {self.name!r} attends to every step of its value, "
                             "future ones too; only attention with use_causal_mask=True streams")
        return {"v": None, "k": None, "t": 0}

    def stream_step(self, x, state, return_attention_scores=None, use_causal_mask=None):
        """One query step against all value (key) steps so far -> (B, Dv) (and the weights (B, t + 1))."""
        q, v = np.asarray(x[0]), np.asarray(x[1])  # (B, Dq), (B, Dv)
        k = np.asarray(x[2]) if len(x) == 3 else None
        t = state["t"]
        if state["v"] is None or t == state["v"].shape[1]:  # grow: amortised O(1) per step
            cap = 16 if state["v"] is None else 2 * state["v"].shape[1]
            for name, a in (("v", v), ("k", k)):
                if a is None:
                    continue
                new = np.zeros((a.shape[0], cap, a.shape[1]), np.result_type(a, self.dtype))
                if state[name] is not None:
                    new[:, :t] = state[name][:, :t]
                state[name] = new
        state["v"][:, t] = v
        if k is not None:
            state["k"][:, t] = k
        state["t"] = t + 1
        xs = [q[:, None], state["v"][:, : t + 1]] + ([state["k"][:, : t + 1]] if k is not None else [])
        out = self.forward(xs, training=False, need_grad=False, return_attention_scores=return_attention_scores,
                           use_causal_mask=False)
        if isinstance(out, list):
            return [out[0][:, 0], out[1][:, 0]]
        return out[:, 0]

    # ---- config ------------------------------------------------------------------------------
    def get_config(self):
        return {**super().get_config(), "use_scale": self.use_scale, "score_mode": self.score_mode,
                "dropout": self.dropout, "seed": self.seed, "use_causal_mask": self.use_causal_mask,
                "return_attention_scores": self.return_attention_scores}


# ---- AdditiveAttention --------------------------------------------------------------------------
class AdditiveAttention(Attention):
    """Additive (Bahdanau) attention; with ``units=None`` exactly ``keras.layers.AdditiveAttention``.

    ``units=None`` (Keras): ``scores[i, j] = sum(scale * tanh(query_i + key_j))``, ``scale`` a
    learned (D,) vector (``use_scale``; otherwise a plain sum); query and key of the same width D.

    ``units=int`` (Bahdanau et al. 2015): ``scores[i, j] = v . tanh(query_i @ W + key_j @ U)`` with
    learned ``W`` (Dq, units), ``U`` (Dk, units) and ``v`` = ``scale`` (units,) (all ones, not
    learned, when ``use_scale=False``): a decoder state attends over encoder outputs of another
    width. That is Keras' form applied to the projected query and key.

    Weights, masks, dropout and outputs are those of :class:`Attention`.

    Parameters
    ----------
    use_scale : bool
    dropout : float in [0, 1)
    units : int, optional
        Width of the projections (Bahdanau form); None for Keras' layer.
    seed, use_causal_mask, return_attention_scores
        As for :class:`Attention`.
    kernel_initializer : str
        Of ``W`` and ``U`` (``units`` only).
    scale_initializer : str
        Of ``scale`` (Keras: ``"glorot_uniform"``, U(+-sqrt(3 / D)) for a (D,) vector).

    Attributes
    ----------
    params : ``"query_kernel"`` W (Dq, units) and ``"key_kernel"`` U (Dk, units) (``units`` only);
        ``"scale"`` (D,) or (units,) when ``use_scale``.
    """

    _score_modes = ("additive",)

    def __init__(self, use_scale=True, dropout=0.0, units=None, seed=None, use_causal_mask=False,
                 return_attention_scores=False, kernel_initializer="glorot_uniform",
                 scale_initializer="glorot_uniform", **kwargs):
        if "score_mode" in kwargs:
            raise TypeError("AdditiveAttention has no score_mode argument (its scores are additive)")
        super().__init__(use_scale=use_scale, score_mode="additive", dropout=dropout, seed=seed,
                         use_causal_mask=use_causal_mask, return_attention_scores=return_attention_scores,
                         **kwargs)
        self.units = _check_units(units)
        self.kernel_initializer = kernel_initializer
        self.scale_initializer = scale_initializer
        initializers.get(kernel_initializer), initializers.get(scale_initializer)

    def _check_widths(self, dq, dk):
        if self.units is None and dq != dk:
            raise ValueError(f"AdditiveAttention: query and key must have the same width without units, got "
                             f"{dq} and {dk} (give units= to project both to a common width)")

    def _build(self, input_shape, rng):
        q, v = input_shape[0], input_shape[1]
        k = input_shape[2] if len(input_shape) == 3 else v
        width = q[-1] if self.units is None else self.units
        if self.units is not None:
            init = initializers.get(self.kernel_initializer)
            self.params["query_kernel"] = init((q[-1], self.units), rng, self.dtype)
            self.params["key_kernel"] = init((k[-1], self.units), rng, self.dtype)
        if self.use_scale:
            self.params["scale"] = initializers.get(self.scale_initializer)((width,), rng, self.dtype)

    def _scores(self, q, k):
        p = self.params
        qp, kp = q, k
        if self.units is not None:
            qp = q @ p["query_kernel"]  # (B, Tq, U)
            kp = k @ p["key_kernel"]  # (B, Tv, U)
        t = np.tanh(qp[:, :, None, :] + kp[:, None, :, :])  # (B, Tq, Tv, U)
        return (t @ p["scale"] if self.use_scale else t.sum(axis=-1)), (q, k, t)

    def _scores_back(self, ds, sc):
        q, k, t = sc
        p = self.params
        grads = {}
        if self.use_scale:
            grads["scale"] = np.einsum("bijd,bij->d", t, ds)
            dpre = (ds[..., None] * p["scale"]) * (1.0 - t * t)  # (B, Tq, Tv, U)
        else:
            dpre = ds[..., None] * (1.0 - t * t)
        dq, dk = dpre.sum(axis=2), dpre.sum(axis=1)  # (B, Tq, U), (B, Tv, U)
        if self.units is not None:
            grads["query_kernel"] = q.reshape(-1, q.shape[-1]).T @ dq.reshape(-1, self.units)
            grads["key_kernel"] = k.reshape(-1, k.shape[-1]).T @ dk.reshape(-1, self.units)
            dq, dk = dq @ p["query_kernel"].T, dk @ p["key_kernel"].T
        return dq, dk, {n: grads[n] for n in p}

    def get_config(self):
        cfg = super().get_config()
        del cfg["score_mode"]
        cfg.update(kernel_initializer=self.kernel_initializer, scale_initializer=self.scale_initializer)
        if self.units is not None:  # omitted when None: saved configs hold integer units only
            cfg["units"] = self.units
        return cfg


# ---- AttentionPooling1D -------------------------------------------------------------------------
class AttentionPooling1D(Layer):
    """Attention-weighted sum over time (Yang et al. 2016, "Hierarchical Attention Networks").

    ``u_t = tanh(h_t @ W + b)``, ``a_t = softmax_t(u_t . u_w)``, ``s = sum_t a_t h_t``: a learned
    context vector ``u_w`` scores every step; the output is the weighted mean of the inputs.
    A readout for sequence classifiers, after a recurrent layer with ``return_sequences=True``::

        Sequential([GRU(32, return_sequences=True, input_shape=(None, 12)),
                    AttentionPooling1D(), Dense(9, activation="softmax")])

    Padded steps (``t >= lengths``) get exactly zero weight (``-1e9`` on their scores, then the
    weights are multiplied by the mask); a sample of length 0 outputs zeros.

    Parameters
    ----------
    units : int, optional
        Width of ``u_t`` (the attention space); default: the input width F.
    kernel_initializer, bias_initializer, context_initializer : str

    Input (B, T, F); output (B, F), without lengths.

    Attributes
    ----------
    params : ``"kernel"`` W (F, units), ``"bias"`` b (units,), ``"context"`` u_w (units,).
    """

    def __init__(self, units=None, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 context_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = _check_units(units)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.context_initializer = context_initializer
        for init in (kernel_initializer, bias_initializer, context_initializer):
            initializers.get(init)

    def _build(self, input_shape, rng):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"AttentionPooling1D {self.name!r}: expects (time, features) per sample with "
                             f"known features, got {input_shape}")
        F = int(input_shape[-1])
        U = self.units or F
        self.params["kernel"] = initializers.get(self.kernel_initializer)((F, U), rng, self.dtype)
        self.params["bias"] = initializers.get(self.bias_initializer)((U,), rng, self.dtype)
        self.params["context"] = initializers.get(self.context_initializer)((U,), rng, self.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[-1],)

    def _weights(self, x, lengths):
        p = self.params
        if x.ndim != 3 or x.shape[-1] != p["kernel"].shape[0]:
            raise ValueError(f"AttentionPooling1D {self.name!r}: expected (batch, time, "
                             f"{p['kernel'].shape[0]}), got {x.shape}")
        B, T, F = x.shape
        x2 = x.reshape(-1, F)  # (B*T, F)
        u = np.tanh(x2 @ p["kernel"] + p["bias"]).reshape(B, T, -1)  # (B, T, U)
        e = u @ p["context"]  # (B, T)
        valid = None if lengths is None else _steps_valid(_check_lengths(lengths, B, T, "lengths"), T)
        a_soft, a = _masked_softmax(e, valid, axis=1)  # (B, T)
        return x2, u, valid, a_soft, a

    def attention_weights(self, x, lengths=None):
        """The weights ``a`` (B, T) the layer gives the steps of ``x`` (B, T, F); stores nothing."""
        x = np.asarray(x)
        return self._weights(x.astype(np.result_type(x.dtype, self.dtype), copy=False), lengths)[-1]

    def forward(self, x, lengths=None, training=False, need_grad=True):
        """``s = sum_t a_t x_t``: (B, T, F) -> (B, F)."""
        x2, u, valid, a_soft, a = self._weights(x, lengths)
        s = (a[:, None, :] @ x)[:, 0]  # (B, F)
        if need_grad:
            self._cache = (x, x2, u, valid, a_soft, a)
        return s

    def backward(self, ds):
        x, x2, u, valid, a_soft, a = self._cache
        p = self.params
        dx = a[:, :, None] * ds[:, None, :]  # (B, T, F)
        da = (x @ ds[:, :, None])[:, :, 0]  # (B, T)
        de = _masked_softmax_back(da, a_soft, valid, axis=1)  # (B, T)
        du = de[..., None] * p["context"]  # (B, T, U)
        dz = (du * (1.0 - u * u)).reshape(-1, u.shape[-1])  # (B*T, U)
        self.grads = {"kernel": x2.T @ dz, "bias": dz.sum(axis=0),
                      "context": np.einsum("btu,bt->u", u, de)}
        return dx + (dz @ p["kernel"].T).reshape(x.shape)

    def get_config(self):
        cfg = {**super().get_config(), "kernel_initializer": self.kernel_initializer,
               "bias_initializer": self.bias_initializer, "context_initializer": self.context_initializer}
        if self.units is not None:  # omitted when None: saved configs hold integer units only
            cfg["units"] = self.units
        return cfg
