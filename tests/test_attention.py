"""Attention layers: values against naive loops (and torch where the computations coincide),
float64 finite differences for every option, masks, configs, saving and ONNX graphs."""

import itertools

import numpy as np
import pytest

from edgernn import Sequential, load_model
from edgernn.layers import GRU, AdditiveAttention, Attention, AttentionPooling1D, Dense, Masking

# ---- naive references ---------------------------------------------------------------------------
KINDS = ["dot", "dot_scale", "concat", "concat_scale", "additive", "additive_noscale", "bahdanau"]


def make_layer(kind, dtype="float64", **kw):
    if kind.startswith("dot") or kind.startswith("concat"):
        return Attention(use_scale=kind.endswith("_scale"), score_mode=kind.split("_")[0], dtype=dtype, **kw)
    if kind == "bahdanau":
        return AdditiveAttention(units=4, dtype=dtype, **kw)
    return AdditiveAttention(use_scale=kind == "additive", dtype=dtype, **kw)


def randomize(layer, seed=5):
    rng = np.random.default_rng(seed)
    for p in layer.params.values():
        p[...] = rng.uniform(0.5, 1.5, p.shape) if p.ndim == 0 else rng.uniform(-1, 1, p.shape)
    return layer


def naive_score(layer, qi, kj):
    """One score, written from the formulas (Keras / Bahdanau)."""
    p = layer.params
    if isinstance(layer, AdditiveAttention):
        if layer.units is not None:
            qi, kj = qi @ p["query_kernel"], kj @ p["key_kernel"]
        t = np.tanh(qi + kj)
        return float(np.sum(p["scale"] * t)) if layer.use_scale else float(np.sum(t))
    if layer.score_mode == "dot":
        s = float(np.dot(qi, kj))
        return s * float(p["scale"]) if layer.use_scale else s
    a = float(p["scale"]) if layer.use_scale else 1.0
    return float(p["concat_score_weight"]) * float(np.sum(np.tanh(a * (qi + kj))))


def naive_attention(layer, q, v, k=None, lq=None, lk=None, causal=False):
    """Loops over batch, query and key steps; a masked softmax over the visible keys only."""
    k = v if k is None else k
    B, Tq = q.shape[:2]
    Tv = v.shape[1]
    out = np.zeros((B, Tq, v.shape[2]))
    W = np.zeros((B, Tq, Tv))
    for b in range(B):
        for i in range(Tq):
            vis = [j for j in range(Tv) if (lk is None or j < lk[b]) and (not causal or j <= i)]
            if vis:
                s = np.array([naive_score(layer, q[b, i], k[b, j]) for j in vis])
                e = np.exp(s - s.max())
                W[b, i, vis] = e / e.sum()
            if lq is None or i < lq[b]:
                out[b, i] = sum(W[b, i, j] * v[b, j] for j in range(Tv))
    return out, W


def naive_pooling(layer, x, lengths=None):
    p = layer.params
    B, T, F = x.shape
    out = np.zeros((B, F))
    for b in range(B):
        n = T if lengths is None else lengths[b]
        if n == 0:
            continue
        e = np.array([np.tanh(x[b, t] @ p["kernel"] + p["bias"]) @ p["context"] for t in range(n)])
        a = np.exp(e - e.max())
        a /= a.sum()
        out[b] = sum(a[t] * x[b, t] for t in range(n))
    return out


def data(kind, key, rng, B=3, Tq=4, Tv=5, D=3, squeeze=False):
    """query (B, Tq, D) [or (B, D)], value, key; widths differ wherever the layer allows it."""
    q = rng.standard_normal((B, D) if squeeze else (B, Tq, D))
    Dk = 4 if kind == "bahdanau" else D
    if key:
        return q, rng.standard_normal((B, Tv, 2)), rng.standard_normal((B, Tv, Dk))
    return q, rng.standard_normal((B, Tv, Dk if kind == "bahdanau" else D)), None


def built(kind, q, v, k, **kw):
    layer = make_layer(kind, **kw)
    xs = [q, v] if k is None else [q, v, k]
    layer.build([a.shape[1:] for a in xs], rng=np.random.default_rng(0))
    return randomize(layer), xs


LQ, LV, LK = np.array([4, 1, 0]), np.array([5, 0, 1]), np.array([3, 2, 1])


# ---- forward values -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masks", [False, True])
def test_forward_matches_naive_loops(kind, causal, masks):
    rng = np.random.default_rng(1)
    for key in (False, True):
        q, v, k = data(kind, key, rng)
        layer, xs = built(kind, q, v, k)
        lengths = [LQ, LV] + ([LK] if key else []) if masks else None
        out, w = layer.forward(xs, lengths=lengths, use_causal_mask=causal, return_attention_scores=True)
        lkey = None if not masks else (np.minimum(LV, LK) if key else LV)
        ref_out, ref_w = naive_attention(layer, q, v, k, LQ if masks else None, lkey, causal)
        np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
        vis = ref_w != 0
        np.testing.assert_allclose(w[vis], ref_w[vis], rtol=1e-12, atol=1e-12)
        if masks:  # query rows of padding: weights as Keras returns them, output zeros
            assert np.all(out[1, 1:] == 0) and np.all(out[2] == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_query_without_time_axis_is_one_step(kind):
    rng = np.random.default_rng(2)
    q, v, k = data(kind, True, rng, squeeze=True)
    layer, xs = built(kind, q, v, k)
    out, w = layer.forward(xs, lengths=[None, LV, None], return_attention_scores=True)
    assert out.shape == (3, 2) and w.shape == (3, 5)
    ref_out, ref_w = naive_attention(layer, q[:, None], v, k, None, LV)
    np.testing.assert_allclose(out, ref_out[:, 0], atol=1e-12)
    np.testing.assert_allclose(w, ref_w[:, 0], atol=1e-12)
    assert layer.compute_output_shape([(3,), (None, 2), (None, 4 if kind == "bahdanau" else 3)],
                                      return_attention_scores=True) == [(2,), (None,)]
    assert layer.compute_lengths(xs, [None, LV, None]) is None


def test_attention_pooling_matches_naive_loops():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 3))
    lengths = np.array([6, 0, 1, 4])
    for units in (None, 5):
        layer = AttentionPooling1D(units, dtype="float64")
        layer.build((None, 3), rng=rng)
        layer.params["bias"][...] = rng.uniform(-1, 1, layer.params["bias"].shape)
        for L in (None, lengths):
            np.testing.assert_allclose(layer.forward(x, L), naive_pooling(layer, x, L),
                                       rtol=1e-12, atol=1e-13)
        a = layer.attention_weights(x, lengths)
        assert a.shape == (4, 6) and np.all(a[1] == 0) and np.all(a[2, 1:] == 0) and np.all(a[0, :] > 0)
        np.testing.assert_allclose(a.sum(axis=1), [1, 0, 1, 1], atol=1e-15)


# ---- torch, where its computations coincide -----------------------------------------------------
@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(4, 4), (3, 6), (6, 3)])
def test_dot_attention_equals_torch_sdpa(torch, causal, shape):
    """``Attention(use_scale=True)`` is ``scaled_dot_product_attention`` with ``scale`` = the learned
    scalar and a boolean key mask (torch's causal mask is aligned at the first step, like Keras')."""
    Tq, Tv = shape
    rng = np.random.default_rng(4)
    q, v, k = (rng.standard_normal((3, T, d)) for T, d in ((Tq, 5), (Tv, 2), (Tv, 5)))
    lv = np.array([Tv, 1, 2])  # torch returns NaN on a row with no visible key: none here
    layer, xs = built("dot_scale", q, v, k)
    out, w = layer.forward(xs, lengths=[None, lv, None], use_causal_mask=causal, return_attention_scores=True)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    mask = torch.tensor(np.arange(Tv)[None, None, :] < lv[:, None, None])
    if causal:
        mask = mask & torch.ones(Tq, Tv, dtype=torch.bool).tril()
    ref = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask,
                                                           scale=float(layer.params["scale"]))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    dref = rng.standard_normal(out.shape)
    ref.backward(torch.tensor(dref))
    dq, dv, dk = layer.backward([dref, None])
    for mine, theirs in ((dq, tq), (dv, tv), (dk, tk)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["additive", "bahdanau", "concat_scale"])
def test_additive_forms_equal_torch_autograd(torch, kind):
    """The same formulas in torch with copied weights: outputs and every gradient."""
    rng = np.random.default_rng(6)
    q, v, k = data(kind, True, rng)
    layer, xs = built(kind, q, v, k)
    out = layer.forward(xs, lengths=[LQ, LV, None])
    dy = rng.standard_normal(out.shape)
    grads_in = layer.backward(dy)
    T = {n: torch.tensor(a, requires_grad=True) for n, a in zip("qvk", xs, strict=True)}
    P = {n: torch.tensor(np.asarray(a), requires_grad=True) for n, a in layer.params.items()}
    tq, tk = T["q"], T["k"]
    if kind == "bahdanau":
        tq, tk = tq @ P["query_kernel"], tk @ P["key_kernel"]
    pair = tq[:, :, None, :] + tk[:, None, :, :]
    if kind == "concat_scale":
        s = P["concat_score_weight"] * torch.tanh(P["scale"] * pair).sum(-1)
    else:
        s = (P["scale"] * torch.tanh(pair)).sum(-1)
    key_ok = torch.tensor(np.arange(5)[None, None, :] < LV[:, None, None])
    w = torch.softmax(torch.where(key_ok, s, s - 1e9), dim=-1) * key_ok
    ref = (w @ T["v"]) * torch.tensor((np.arange(4)[None, :] < LQ[:, None])[..., None])
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    ref.backward(torch.tensor(dy))
    for mine, n in zip(grads_in, "qvk", strict=True):
        np.testing.assert_allclose(mine, T[n].grad.numpy(), rtol=1e-9, atol=1e-12)
    for n, g in layer.grads.items():
        np.testing.assert_allclose(g, P[n].grad.numpy(), rtol=1e-9, atol=1e-12)


# ---- float64 central differences ----------------------------------------------------------------
def fd_check(layer, xs, lengths, kw, training=False, seed=None, eps=1e-6):
    """Max-norm relative error of the analytic gradients (every input and parameter element)."""
    rng = np.random.default_rng(7)

    def run(need_grad):
        if seed is not None:
            layer._rng = np.random.default_rng(seed)
        return layer.forward(xs, lengths=lengths, training=training, need_grad=need_grad, **kw)

    out = run(True)
    outs = out if isinstance(out, list) else [out]
    R = [rng.standard_normal(o.shape) for o in outs]
    ana_in = layer.backward(R if isinstance(out, list) else R[0])
    assert set(layer.grads) == set(layer.params)
    targets = [(a, g, f"input {i}") for i, (a, g) in enumerate(zip(xs, ana_in, strict=True))]
    targets += [(layer.params[n], layer.grads[n], n) for n in layer.params]

    def loss():
        o = run(False)
        return sum(float((a * r).sum()) for a, r in zip(o if isinstance(o, list) else [o], R, strict=True))

    for arr, g, name in targets:
        assert g.shape == arr.shape, name
        num = np.zeros(arr.shape)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            lp = loss()
            arr[idx] = old - eps
            lm = loss()
            arr[idx] = old
            num[idx] = (lp - lm) / (2 * eps)
        err = np.abs(num - g).max() / max(np.abs(num).max(), 1e-8)
        assert err < 1e-6, (name, err)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("causal,masks,scores,key",
                         list(itertools.product([False, True], [False, True], [False, True], [False, True])))
def test_gradients_finite_differences(kind, causal, masks, scores, key):
    rng = np.random.default_rng(8)
    q, v, k = data(kind, key, rng)
    layer, xs = built(kind, q, v, k)
    lengths = ([LQ, LV] + ([LK] if key else [])) if masks else None
    fd_check(layer, xs, lengths, {"use_causal_mask": causal, "return_attention_scores": scores})


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_query_without_time_axis_and_dropout(kind):
    rng = np.random.default_rng(9)
    q, v, k = data(kind, True, rng, squeeze=True)
    layer, xs = built(kind, q, v, k, dropout=0.3)
    fd_check(layer, xs, [None, LV, LK], {"return_attention_scores": True}, training=True, seed=11)
    q, v, k = data(kind, False, rng)
    layer, xs = built(kind, q, v, k, dropout=0.3)
    fd_check(layer, xs, [LQ, LV], {"use_causal_mask": True}, training=True, seed=12)


def test_pooling_gradients_in_a_sequential():
    from test_models_grad import gradcheck

    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 6, 3))
    m = Sequential([GRU(5, return_sequences=True, input_shape=(None, 3)), AttentionPooling1D(4), Dense(2)],
                   dtype="float64", seed=0)
    m.compile(loss="mse", optimizer="sgd")
    m.layers[1].params["bias"][...] = rng.uniform(-1, 1, 4)
    gradcheck(m, x, rng.standard_normal((4, 2)), lengths=np.array([6, 0, 1, 4]), n_per_param=12)
    layer = AttentionPooling1D(dtype="float64")
    layer.build((None, 3), rng=rng)
    layer.params["bias"][...] = rng.uniform(-1, 1, 3)
    out = layer.forward(x, np.array([6, 0, 1, 4]))
    R = rng.standard_normal(out.shape)
    dx = layer.backward(R)
    eps = 1e-6
    for arr, g in [(x, dx)] + [(layer.params[n], layer.grads[n]) for n in layer.params]:
        num = np.zeros(arr.shape)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            lp = (layer.forward(x, np.array([6, 0, 1, 4]), need_grad=False) * R).sum()
            arr[idx] = old - eps
            lm = (layer.forward(x, np.array([6, 0, 1, 4]), need_grad=False) * R).sum()
            arr[idx] = old
            num[idx] = (lp - lm) / (2 * eps)
        assert np.abs(num - g).max() / np.abs(num).max() < 1e-6


# ---- masks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_padded_keys_get_exactly_zero_weight(kind, dtype):
    rng = np.random.default_rng(13)
    q, v, k = data(kind, True, rng)
    q, v, k = (a.astype(dtype) for a in (q, v, k))
    layer, xs = built(kind, q, v, k, dtype=dtype)
    lengths = [LQ, LV, None]
    out, w = layer.forward(xs, lengths=lengths, return_attention_scores=True)
    assert out.dtype == w.dtype == np.dtype(dtype)
    pad = np.arange(5)[None, None, :] >= LV[:, None, None]  # (B, 1, Tv)
    assert np.all(w[np.broadcast_to(pad, w.shape)] == 0.0)
    assert np.all(w[1] == 0.0) and np.all(out[1] == 0.0)  # a value of length 0: zero weights, zero output
    np.testing.assert_allclose(w[[0, 2]].sum(axis=-1), 1.0, rtol=1e-6)
    # garbage in the padding (values, keys and query steps) changes nothing
    g = [a.copy() for a in xs]
    for b in range(3):
        g[1][b, LV[b]:] = 1e3
        g[2][b, LV[b]:] = -1e3
        g[0][b, LQ[b]:] = 1e3
    out2, w2 = layer.forward(g, lengths=lengths, return_attention_scores=True)
    np.testing.assert_array_equal(out2, out)
    valid_q = np.arange(4)[None, :] < LQ[:, None]
    np.testing.assert_array_equal(w2[valid_q], w[valid_q])


def test_causal_mask_and_call_time_options():
    rng = np.random.default_rng(14)
    q, v = (rng.standard_normal((2, T, 3)).astype(np.float32) for T in (4, 6))
    layer = Attention(use_causal_mask=True, return_attention_scores=True)
    out, w = layer([q, v])  # built on first call; float32
    assert out.dtype == np.float32 and layer.output_shape == [(None, 3), (None, None)]
    seen = np.tril(np.ones((4, 6), bool))  # query i sees keys j <= i
    assert np.all(w[:, ~seen] == 0) and np.all(w[:, seen] > 0)
    plain = layer([q, v], use_causal_mask=False, return_attention_scores=False)  # call time wins
    assert isinstance(plain, np.ndarray) and not np.allclose(plain, out)
    ref, _ = naive_attention(layer, q, v, causal=True)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape([(None, 3), (7, 3)], return_attention_scores=False) == (None, 3)
    assert layer.compute_output_shape([(5, 3), (7, 3)]) == [(5, 3), (5, 7)]
    L = np.array([3, 1])
    assert layer.compute_lengths([q, v], [L, None]) is L
    assert layer.compute_lengths([q, v], None) is None
    assert layer.compute_lengths(None, [L, None]) is L  # from the built shapes


# ---- dropout ------------------------------------------------------------------------------------
def test_dropout_on_weights_is_seeded_inverted_and_training_only():
    rng = np.random.default_rng(15)
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 50, 4))
    a = Attention(dropout=0.5, seed=3, return_attention_scores=True)
    b = Attention(dropout=0.5, seed=3, return_attention_scores=True)
    plain = Attention(return_attention_scores=True)
    oa, wa = a([q, v], training=True)
    ob, wb = b([q, v], training=True)
    np.testing.assert_array_equal(oa, ob)  # same seed, same masks
    _, w0 = plain([q, v])
    dropped = wa == 0
    assert 0.3 < dropped.mean() < 0.7
    np.testing.assert_allclose(wa[~dropped], 2 * w0[~dropped], rtol=1e-6)  # kept weights scaled by 1/(1-rate)
    np.testing.assert_array_equal(a([q, v])[1], w0)  # inference: no dropout


# ---- protocol: arguments, inputs untouched, nothing stored at inference ---------------------------
@pytest.mark.parametrize("make,match,exc", [
    (lambda: Attention(score_mode="general"), "score_mode", ValueError),
    (lambda: Attention(use_scale="yes"), "use_scale", TypeError),
    (lambda: Attention(dropout=1.0), "dropout", ValueError),
    (lambda: Attention(dropout="0.1"), "dropout", TypeError),
    (lambda: Attention(seed=1.5), "seed", TypeError),
    (lambda: Attention(use_causal_mask=1), "use_causal_mask", TypeError),
    (lambda: Attention(return_attention_scores=None), "return_attention_scores", TypeError),
    (lambda: AdditiveAttention(units=0), "units", ValueError),
    (lambda: AdditiveAttention(units=2.5), "units", TypeError),
    (lambda: AdditiveAttention(score_mode="dot"), "score_mode", TypeError),
    (lambda: AdditiveAttention(kernel_initializer="nope"), "nope", ValueError),
    (lambda: AttentionPooling1D(units=-1), "units", ValueError),
])
def test_bad_arguments(make, match, exc):
    with pytest.raises(exc, match=match):
        make()


def test_bad_inputs():
    rng = np.random.default_rng(16)
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    layer = Attention()
    with pytest.raises(ValueError, match="input_shape"):
        layer.build((None, 4))
    with pytest.raises(ValueError, match="same width"):
        layer.build([(None, 4), (None, 5)])
    with pytest.raises(ValueError, match="same width"):
        AdditiveAttention().build([(None, 4), (None, 2), (None, 5)])
    AdditiveAttention(units=3).build([(None, 4), (None, 2), (None, 5)])  # units: any widths
    with pytest.raises(RuntimeError, match="not built"):
        layer.forward([q, v])
    layer([q, v])
    with pytest.raises(ValueError, match="inputs"):
        layer.forward([q])
    with pytest.raises(ValueError, match="batch sizes"):
        layer.forward([q, v[:1]])
    with pytest.raises(ValueError, match="lengths"):
        layer.forward([q, v], lengths=[None])
    with pytest.raises(ValueError, match=r"lengths\[1\]"):
        layer.forward([q, v], lengths=[None, np.array([6, 1])])
    with pytest.raises(ValueError, match=r"lengths\[0\]"):
        layer.forward([q[:, 0], v], lengths=[np.array([1, 1]), None])
    with pytest.raises(ValueError, match="features"):
        layer.forward([q[..., :3], v[..., :3]])
    with pytest.raises(TypeError, match="use_causal_mask"):
        layer.forward([q, v], use_causal_mask="yes")
    out, w = layer.forward([q, v], return_attention_scores=True)
    with pytest.raises(ValueError, match="backward needs a list"):
        layer.backward(np.ones_like(out))
    with pytest.raises(ValueError, match="AttentionPooling1D"):
        AttentionPooling1D().build((4,))


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_not_written_and_inference_stores_nothing(kind):
    rng = np.random.default_rng(17)
    q, v, k = data(kind, True, rng)
    layer, xs = built(kind, q, v, k, dropout=0.2, seed=1)
    copies = [a.copy() for a in xs]
    lengths = [LQ.copy(), LV.copy(), LK.copy()]
    before = {n: (id(a), a.copy()) for n, a in vars(layer).items() if isinstance(a, np.ndarray)}
    keys = set(vars(layer))
    layer.forward(xs, lengths=lengths, need_grad=False, return_attention_scores=True)
    assert set(vars(layer)) == keys and not hasattr(layer, "_cache")
    out, w = layer.forward(xs, lengths=lengths, training=True, return_attention_scores=True)
    layer.backward([np.ones_like(out), np.ones_like(w)])
    for a, c in zip(xs, copies, strict=True):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(lengths[0], LQ)
    assert before == {} or all(id(getattr(layer, n)) == i for n, (i, _) in before.items())
    pool = AttentionPooling1D()
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    pool.build((None, 3))
    keys = set(vars(pool))
    y = pool.forward(x, np.array([4, 2]), need_grad=False)
    assert set(vars(pool)) == keys and y.dtype == np.float32


# ---- config, saving, Sequential -----------------------------------------------------------------
@pytest.mark.parametrize("layer", [
    Attention(use_scale=True, score_mode="concat", dropout=0.1, seed=4, use_causal_mask=True,
              return_attention_scores=True, name="att"),
    AdditiveAttention(use_scale=False, units=7, dropout=0.2, name="add"),
    AdditiveAttention(),
    AttentionPooling1D(units=6, name="pool"),
    AttentionPooling1D(),
])
def test_config_round_trip(layer):
    from edgernn.layers import get

    cfg = layer.get_config()
    clone = get(type(layer).__name__).from_config(cfg)
    assert type(clone) is type(layer) and clone.get_config() == cfg
    if isinstance(layer, Attention):
        shapes = [(None, 3), (None, 2), (None, 3)]
        layer.build(shapes, rng=np.random.default_rng(0))
        clone.build(shapes, rng=np.random.default_rng(1))
    else:
        layer.build((None, 3), rng=np.random.default_rng(0))
        clone.build((None, 3), rng=np.random.default_rng(1))
    clone.set_weights(layer.get_weights())
    assert clone.weight_names == layer.weight_names


def test_sequential_gru_attention_pooling_fit_save_load(tmp_path):
    rng = np.random.default_rng(18)
    X = [rng.standard_normal((n, 3)).astype(np.float32) for n in rng.integers(1, 9, size=24)]
    y = np.array([int(x[:, 0].sum() > 0) for x in X])
    m = Sequential([GRU(6, return_sequences=True, input_shape=(None, 3)), AttentionPooling1D(),
                    Dense(2, activation="softmax")], seed=0)
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    m.fit(X, y, epochs=2, batch_size=8, verbose=0)
    assert m.layers[1].output_shape == (6,) and m.layers[1].count_params() == 6 * 6 + 6 + 6
    p = m.predict(X)
    m.save(tmp_path / "m.npz")
    m2 = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(m2.predict(X), p)
    assert [type(la).__name__ for la in m2.layers] == ["GRU", "AttentionPooling1D", "Dense"]
    one = np.concatenate([m.predict([x]) for x in X[:5]])  # no padding at all
    np.testing.assert_allclose(one, p[:5], rtol=1e-5, atol=1e-6)


# ---- ONNX ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def _session(ort, model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("masking", [True, False])
def test_onnx_export_attention_pooling_sequential(ort, tmp_path, masking):
    import edgernn.onnx as eo

    layers = [Masking(0.0, input_shape=(None, 3))] if masking else []
    m = Sequential(layers + [GRU(5, return_sequences=True, input_shape=(None, 3)), AttentionPooling1D(4),
                             Dense(2, activation="softmax")], seed=0)
    rng = np.random.default_rng(19)
    m.set_weights([rng.uniform(-0.8, 0.8, w.shape) for w in m.get_weights()])
    path = tmp_path / "pool.onnx"
    eo.export(m, path, verify=True, lengths_input=not masking)  # variable lengths, incl. 0 and 1
    report = eo.verify(m, path)
    assert report.passed and any("(lengths)" in c.what for c in report.cases)
    with pytest.raises(eo.UnsupportedError, match="streaming"):
        eo.build_model(m, streaming=True)


def _graph(layer, xs, lengths, time_major, **kw):
    """A graph with inputs q, v(, k) and their int64 lengths, written by the layer's converter."""
    from onnx import TensorProto

    from edgernn.onnx import ConversionContext, GraphBuilder, Value, get_converter, supported_opset

    g = GraphBuilder(supported_opset())
    ctx = ConversionContext(g=g)
    vals = []
    for name, a, L, tm in zip("qvk", xs, lengths, time_major, strict=False):
        if a.ndim == 2:
            shape, axis = ["batch", a.shape[-1]], None
        else:
            shape = [f"t_{name}", "batch", a.shape[-1]] if tm else ["batch", f"t_{name}", a.shape[-1]]
            axis = 0 if tm else 1
        g.add_input(name, TensorProto.FLOAT, shape)
        lname = None
        if L is not None:
            lname = g.add_input(f"len_{name}", TensorProto.INT64, ["batch"])
        vals.append(Value(name, axis, lname))
    res = get_converter(layer)(ctx, layer, vals, **kw)
    res = res if isinstance(res, list) else [res]
    for i, r in enumerate(res):
        assert r.time_axis in (None, 1) and r.lengths == (vals[0].lengths if r.time_axis == 1 else None)
        g.add_output(f"y{i}", r.name, TensorProto.FLOAT, None)
    return g.make_model()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("causal,scores,key", [(False, True, True), (True, False, False), (True, True, True)])
def test_onnx_graph_multi_input(ort, kind, causal, scores, key):
    rng = np.random.default_rng(20)
    q, v, k = data(kind, key, rng)
    layer, xs = built(kind, q, v, k, dtype="float32")
    n = len(xs)
    time_major = [kind in ("dot", "concat"), kind == "bahdanau", True][:n]
    kw = {"use_causal_mask": causal, "return_attention_scores": scores}
    sess = _session(ort, _graph(layer, xs, [1] * n, time_major, **kw))
    # sizes and lengths never seen while building; Tq != Tv and Tq == Tv (causal)
    for B, Tq, Tv in [(1, 3, 7), (6, 6, 6), (4, 1, 2), (5, 9, 4)]:
        x = [rng.standard_normal((B, Tq if i == 0 else Tv, a.shape[-1])).astype(np.float32)
             for i, a in enumerate(xs)]
        L = [rng.integers(0, Tq + 1, B), rng.integers(0, Tv + 1, B), rng.integers(0, Tv + 1, B)][:n]
        L[1][0] = 0  # a value of length 0
        if B > 1:
            L[0][1], L[1][1] = Tq, Tv
        ref = layer.forward(x, lengths=L, need_grad=False, **kw)
        ref = ref if isinstance(ref, list) else [ref]
        feeds = {}
        for name, a, Li, tm in zip("qvk", x, L, time_major, strict=False):
            feeds[name] = np.ascontiguousarray(a.transpose(1, 0, 2)) if tm else a
            feeds[f"len_{name}"] = Li.astype(np.int64)
        got = sess.run(None, feeds)
        assert len(got) == len(ref)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        if scores:
            pad = np.arange(Tv)[None, None, :] >= np.minimum(L[1], L[-1])[:, None, None]
            assert np.all(got[1][np.broadcast_to(pad, got[1].shape)] == 0.0)


@pytest.mark.parametrize("kind", ["dot_scale", "bahdanau", "additive"])
def test_onnx_graph_query_without_time_axis_and_no_lengths(ort, kind):
    rng = np.random.default_rng(21)
    q, v, k = data(kind, True, rng, squeeze=True)
    layer, xs = built(kind, q, v, k, dtype="float32")
    graph = _graph(layer, xs, [None, 1, None], [False, False, True], return_attention_scores=True)
    sess = _session(ort, graph)
    for B, Tv in [(2, 1), (7, 5)]:
        x = [rng.standard_normal((B, q.shape[-1])), rng.standard_normal((B, Tv, 2)),
             rng.standard_normal((B, Tv, k.shape[-1]))]
        x = [a.astype(np.float32) for a in x]
        Lv = rng.integers(0, Tv + 1, B)
        ref = layer.forward(x, lengths=[None, Lv, None], need_grad=False, return_attention_scores=True)
        got = sess.run(None, {"q": x[0], "v": x[1], "len_v": Lv.astype(np.int64),
                              "k": np.ascontiguousarray(x[2].transpose(1, 0, 2))})
        assert got[0].shape == (B, 2) and got[1].shape == (B, Tv)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
