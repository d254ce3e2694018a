"""Issue 11 part 1, the layers around RNNs: Conv1D, LayerNormalization, TimeDistributed,
RepeatVector, Flatten, Reshape, global pooling and the merge layers.

For every layer: float64 central differences of forward/backward on every input and parameter
element (random shapes including size 1, random lengths including 0 where masks apply),
reference values (explicit loops, numpy, torch when installed), config round trips, save/load
in a Sequential, inputs never written, need_grad=False writing nothing, argument errors naming
the argument, ONNX export against onnxruntime (whole Sequential models for single-input
layers; hand-built graphs for the merge layers) and the streaming engine's refusal.
"""

import json

import numpy as np
import pytest

from edgernn import Sequential, load_model
from edgernn.layers import (
    LSTM,
    Add,
    Average,
    Concatenate,
    Conv1D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    Input,
    LayerNormalization,
    Masking,
    Maximum,
    Minimum,
    Multiply,
    RepeatVector,
    Reshape,
    Subtract,
    TimeDistributed,
)
from edgernn.layers import get as get_layer_class

EPS = 1e-6
RTOL = 1e-6


def built(layer, shape, dtype="float64", seed=0):
    layer.dtype = np.dtype(dtype)
    layer.build(shape, rng=np.random.default_rng(seed))
    return layer


def randomize_params(layer, rng, scale=0.5):
    for p in layer.params.values():
        p[...] = scale * rng.standard_normal(p.shape)


def random_lengths(rng, B, T):
    """Lengths in [0, T] with a full-length sample and, for B > 1, an empty one."""
    L = rng.integers(0, T + 1, size=B)
    L[0] = T
    if B > 1:
        L[1] = 0
    return L


def gradcheck(layer, xs, lengths=None, seed=0):
    """Central differences of ``sum(forward(xs) * R)`` against ``backward(R)`` on every element of
    every input and parameter (max-norm relative error < RTOL per array). The differences run
    forward with ``need_grad=False``, so its result is checked against the stored one too."""
    rng = np.random.default_rng(seed)
    multi = getattr(layer, "multi_input", False)
    xs = [np.array(a, dtype=np.float64) for a in xs]

    def run(need_grad=False):
        return layer.forward(xs if multi else xs[0], lengths=lengths, need_grad=need_grad)

    y = run(True)
    R = rng.standard_normal(y.shape)
    dx = layer.backward(R)
    dxs = list(dx) if multi else [dx]
    assert set(layer.grads) == set(layer.params)
    targets = [(x, g, f"input {i}") for i, (x, g) in enumerate(zip(xs, dxs, strict=True))]
    targets += [(layer.params[k], layer.grads[k], k) for k in layer.params]
    for arr, g, name in targets:
        assert g is not None and g.shape == arr.shape, name
        num = np.zeros(arr.shape)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + EPS
            fp = float((run() * R).sum())
            arr[idx] = old - EPS
            fm = float((run() * R).sum())
            arr[idx] = old
            num[idx] = (fp - fm) / (2 * EPS)
        scale = max(np.abs(num).max(initial=0), np.abs(g).max(initial=0), 1e-12)
        assert np.abs(num - g).max(initial=0) <= RTOL * scale, (type(layer).__name__, name)
    np.testing.assert_array_equal(run(), y)


def shapes(seed, n=4):
    """Random (B, T, F) with sizes of 1 included."""
    rng = np.random.default_rng(seed)
    out = [(1, 1, 1), (2, 1, 3), (1, 5, 1)]
    return out + [tuple(int(v) for v in rng.integers(1, 6, size=3)) for _ in range(n)]


# ===========================================================================================
# Conv1D
# ===========================================================================================
def conv_loop(x, K, b, s, padding, d, act=np.tanh):
    """Explicit loops: TensorFlow's padding, cross-correlation."""
    B, T, C = x.shape
    k, _, F = K.shape
    span = (k - 1) * d + 1
    if padding == "valid":
        pl = pr = 0
    elif padding == "causal":
        pl, pr = span - 1, 0
    else:
        T_out = -(-T // s)
        total = max((T_out - 1) * s + span - T, 0)
        pl, pr = total // 2, total - total // 2
    xp = np.concatenate([np.zeros((B, pl, C)), x, np.zeros((B, pr, C))], axis=1)
    T_out = (xp.shape[1] - span) // s + 1
    y = np.zeros((B, T_out, F))
    for bb in range(B):
        for j in range(T_out):
            acc = b.copy()
            for i in range(k):
                acc = acc + xp[bb, j * s + i * d] @ K[i]
            y[bb, j] = act(acc)
    return y


CONV_GRID = [(p, k, s, d) for p in ("valid", "same", "causal") for k in (1, 2, 3) for s in (1, 2, 3)
             for d in (1, 2)]


@pytest.mark.parametrize("padding,k,s,d", CONV_GRID)
def test_conv1d_matches_loops_and_gradients(padding, k, s, d):
    rng = np.random.default_rng(CONV_GRID.index((padding, k, s, d)))
    B, T, C, F = int(rng.integers(1, 4)), int(rng.integers(6, 10)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    layer = built(Conv1D(F, k, strides=s, padding=padding, dilation_rate=d, activation="tanh"), (None, C))
    randomize_params(layer, rng)
    x = rng.standard_normal((B, T, C))
    y = layer.forward(x)
    np.testing.assert_allclose(y, conv_loop(x, layer.params["kernel"], layer.params["bias"], s, padding, d),
                               rtol=1e-12, atol=1e-12)
    assert layer.compute_output_shape((T, C)) == y.shape[1:]
    lengths = random_lengths(rng, B, T) if padding == "same" and s == 1 else None  # the zeroing path
    gradcheck(layer, [x[:, : min(T, 6)]], None if lengths is None else np.minimum(lengths, 6), seed=k)


@pytest.mark.parametrize("padding,s,d", [("valid", 1, 1), ("same", 1, 2), ("same", 2, 1), ("causal", 3, 1),
                                         ("causal", 1, 3), ("valid", 2, 2)])
def test_conv1d_matches_torch(padding, s, d):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    layer = built(Conv1D(5, 3, strides=s, padding=padding, dilation_rate=d, use_bias=True), (None, 4))
    randomize_params(layer, rng)
    x = rng.standard_normal((3, 11, 4))
    pl, pr, _ = layer._pads(11)
    xt = torch.nn.functional.pad(torch.tensor(x).transpose(1, 2), (pl, pr))
    ref = torch.nn.functional.conv1d(xt, torch.tensor(layer.params["kernel"]).permute(2, 1, 0),
                                     torch.tensor(layer.params["bias"]), stride=s, dilation=d)
    np.testing.assert_allclose(layer.forward(x), ref.transpose(1, 2).numpy(), rtol=1e-12, atol=1e-12)
    if padding == "same" and s == 1:  # torch's own "same" (stride 1 only) agrees on the split
        same = torch.nn.functional.conv1d(torch.tensor(x).transpose(1, 2),
                                          torch.tensor(layer.params["kernel"]).permute(2, 1, 0),
                                          torch.tensor(layer.params["bias"]), padding="same", dilation=d)
        np.testing.assert_allclose(layer.forward(x), same.transpose(1, 2).numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding,k,s,d", [("valid", 3, 1, 1), ("valid", 2, 2, 2), ("causal", 3, 2, 1),
                                           ("causal", 2, 1, 2), ("same", 3, 1, 2), ("same", 4, 1, 1)])
def test_conv1d_lengths_are_the_sequence_alone(padding, k, s, d):
    """Output lengths = the output steps each sequence has alone, with the same values there,
    whatever the padded steps hold (for 'same' only with stride 1: see the class notes)."""
    rng = np.random.default_rng(k * 10 + s)
    layer = built(Conv1D(3, k, strides=s, padding=padding, dilation_rate=d), (None, 2))
    randomize_params(layer, rng)
    T = 9
    L = np.array([9, 0, 1, 4, 7, 5])
    x = rng.standard_normal((6, T, 2)) * 3  # padding holds garbage, not zeros
    out_L = layer.compute_lengths(x, L)
    y = layer.forward(x, lengths=out_L if padding == "same" else L)
    for b, n in enumerate(L):
        if out_L[b] == 0:
            assert n < layer.span or n == 0
            continue
        alone = layer.forward(x[b:b + 1, :n])
        assert alone.shape[1] == out_L[b]
        np.testing.assert_allclose(y[b, : out_L[b]], alone[0], rtol=1e-12, atol=1e-12)


def test_conv1d_keras_layout_and_fans():
    layer = built(Conv1D(200, 5), (None, 40), dtype="float32", seed=1)
    K = layer.params["kernel"]
    assert K.shape == (5, 40, 200) and layer.params["bias"].shape == (200,) and K.dtype == np.float32
    limit = np.sqrt(6.0 / (5 * 40 + 5 * 200))  # Keras: fans times the window
    assert np.abs(K).max() <= limit and np.abs(K).max() > 0.95 * limit
    assert layer.count_params() == 5 * 40 * 200 + 200
    assert Conv1D(4, (3,), strides=(2,), dilation_rate=[1]).kernel_size == 3
    with pytest.raises(ValueError, match="fewer than the window"):
        built(Conv1D(2, 4, dilation_rate=2), (6, 3))
    assert built(Conv1D(2, 3, padding="SAME", strides=2), (7, 3)).output_shape == (4, 2)


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(filters=0, kernel_size=3), ValueError, "filters"),
    (dict(filters=2.5, kernel_size=3), TypeError, "filters"),
    (dict(filters=2, kernel_size="3"), TypeError, "kernel_size"),
    (dict(filters=2, kernel_size=(3, 3)), ValueError, "kernel_size"),
    (dict(filters=2, kernel_size=3, strides=0), ValueError, "strides"),
    (dict(filters=2, kernel_size=3, dilation_rate=0), ValueError, "dilation_rate"),
    (dict(filters=2, kernel_size=3, padding="full"), ValueError, "padding"),
    (dict(filters=2, kernel_size=3, groups=2), ValueError, "groups"),
    (dict(filters=2, kernel_size=3, data_format="channels_first"), ValueError, "data_format"),
    (dict(filters=2, kernel_size=3, activation="swishy"), ValueError, "activation"),
    (dict(filters=2, kernel_size=3, use_bias="yes"), TypeError, "use_bias"),
    (dict(filters=2, kernel_size=3, kernel_initializer="nope"), ValueError, "initializer"),
])
def test_conv1d_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        Conv1D(**kwargs)


# ===========================================================================================
# LayerNormalization
# ===========================================================================================
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("opts", [{}, {"center": False}, {"scale": False}, {"epsilon": 0.5}])
def test_layer_normalization_values_and_gradients(seed, opts):
    rng = np.random.default_rng(seed)
    B, T, F = shapes(seed)[seed]
    layer = built(LayerNormalization(**opts), (None, F))
    randomize_params(layer, rng)
    x = rng.standard_normal((B, T, F)) * 2 + 1
    eps = opts.get("epsilon", 1e-3)  # Keras' default
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    ref = ref * layer.params.get("gamma", 1.0) + layer.params.get("beta", 0.0)
    np.testing.assert_allclose(layer.forward(x), ref, rtol=1e-12, atol=1e-12)
    gradcheck(layer, [x], seed=seed)


def test_layer_normalization_over_several_axes_and_torch():
    rng = np.random.default_rng(5)
    layer = built(LayerNormalization(axis=[1, -1]), (4, 3))
    assert layer.params["gamma"].shape == (4, 3)
    randomize_params(layer, rng)
    x = rng.standard_normal((2, 4, 3))
    gradcheck(layer, [x])
    vec = built(LayerNormalization(axis=1), (5,))
    randomize_params(vec, rng)
    gradcheck(vec, [rng.standard_normal((3, 5))])
    mid = built(LayerNormalization(axis=1), (4, 3))  # the time axis only: gamma (T,)
    randomize_params(mid, rng)
    gradcheck(mid, [rng.standard_normal((2, 4, 3))])
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.layer_norm(torch.tensor(x), (4, 3), torch.tensor(layer.params["gamma"]),
                                         torch.tensor(layer.params["beta"]), eps=1e-3)
    np.testing.assert_allclose(layer.forward(x), ref.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs,shape,exc,word", [
    (dict(axis="last"), None, TypeError, "axis"),
    (dict(axis=[]), None, ValueError, "axis"),
    (dict(epsilon=-1.0), None, ValueError, "epsilon"),
    (dict(epsilon="small"), None, ValueError, "epsilon"),
    (dict(center="yes"), None, TypeError, "center"),
    (dict(scale=None), None, TypeError, "scale"),
    (dict(rms_scaling=True), None, ValueError, "rms_scaling"),
    (dict(gamma_initializer="nope"), None, ValueError, "initializer"),
    (dict(axis=0), (None, 3), ValueError, "axis"),
    (dict(axis=3), (None, 3), ValueError, "axis"),
    (dict(axis=[2, -1]), (None, 3), ValueError, "axis"),
    (dict(axis=1), (None, 3), ValueError, "known sizes"),
])
def test_layer_normalization_bad_arguments(kwargs, shape, exc, word):
    with pytest.raises(exc, match=word):
        layer = LayerNormalization(**kwargs)
        built(layer, shape)


# ===========================================================================================
# global pooling
# ===========================================================================================
@pytest.mark.parametrize("cls", [GlobalAveragePooling1D, GlobalMaxPooling1D])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("keepdims", [False, True])
def test_pooling_values_masks_and_gradients(cls, seed, keepdims):
    rng = np.random.default_rng(seed)
    B, T, F = shapes(seed)[seed]
    layer = built(cls(keepdims=keepdims), (None, F))
    x = rng.standard_normal((B, T, F))
    L = random_lengths(rng, B, T)
    y = layer.forward(x, lengths=L)
    assert y.shape == ((B, 1, F) if keepdims else (B, F))
    y = y.reshape(B, F)
    for b in range(B):
        valid = x[b, : L[b]]
        want = np.zeros(F) if L[b] == 0 else (valid.mean(0) if cls is GlobalAveragePooling1D else valid.max(0))
        np.testing.assert_allclose(y[b], want, rtol=1e-12, atol=1e-15)
    garbage = x.copy()
    garbage[np.arange(T)[None, :] >= L[:, None]] = 1e6  # padded steps are ignored
    np.testing.assert_array_equal(layer.forward(garbage, lengths=L).reshape(B, F), y)
    full = layer.forward(x).reshape(B, F)
    np.testing.assert_allclose(full, x.mean(1) if cls is GlobalAveragePooling1D else x.max(1), rtol=1e-12)
    gradcheck(layer, [x], L, seed=seed)
    gradcheck(layer, [x], None, seed=seed)
    assert layer.compute_lengths(x, L) is None  # the pooled output has no padding


@pytest.mark.parametrize("cls", [GlobalAveragePooling1D, GlobalMaxPooling1D])
def test_pooling_bad_arguments(cls):
    with pytest.raises(TypeError, match="keepdims"):
        cls(keepdims="yes")
    with pytest.raises(ValueError, match="data_format"):
        cls(data_format="channels_first")
    with pytest.raises(ValueError, match=r"\(batch, time, features\)"):
        built(cls(), (3,))


# ===========================================================================================
# merge layers
# ===========================================================================================
MERGES = {Add: lambda xs: sum(xs[1:], xs[0]), Subtract: lambda xs: xs[0] - xs[1],
          Multiply: lambda xs: np.prod(np.broadcast_arrays(*xs), axis=0),
          Average: lambda xs: sum(xs[1:], xs[0]) / len(xs),
          Maximum: lambda xs: np.max(np.broadcast_arrays(*xs), axis=0),
          Minimum: lambda xs: np.min(np.broadcast_arrays(*xs), axis=0)}
# sample shapes of the inputs; Keras broadcasting (axes equal or 1; lower ranks get axes after batch)
MERGE_SHAPES = [[(4, 3), (4, 3)], [(4, 3), (1, 3), (4, 1)], [(4, 3), (3,)], [(1,), (2, 5, 1)], [(1, 1), (1, 1)]]


@pytest.mark.parametrize("cls", list(MERGES))
@pytest.mark.parametrize("k", range(len(MERGE_SHAPES)))
def test_merge_values_and_gradients(cls, k):
    rng = np.random.default_rng(k)
    sample = MERGE_SHAPES[k][:2] if cls is Subtract else MERGE_SHAPES[k]
    B = int(rng.integers(1, 4))
    xs = [rng.standard_normal((B,) + s) for s in sample]
    layer = cls()
    y = layer(xs)  # builds from the arrays
    assert layer.multi_input and layer.built
    ref = MERGES[cls]([x.reshape(x.shape[:1] + (1,) * (max(map(np.ndim, xs)) - x.ndim) + x.shape[1:]) for x in xs])
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    assert y.shape[1:] == layer.compute_output_shape(sample)
    gradcheck(layer, xs, seed=k)


def test_merge_ties_single_input_and_lengths():
    a = np.array([[1.0, 2.0, 3.0]])
    layer = Maximum()
    layer([a, a.copy()])
    ga, gb = layer.backward(np.ones((1, 3)))
    np.testing.assert_array_equal(ga, 1.0)  # ties: the first input takes the gradient
    np.testing.assert_array_equal(gb, 0.0)
    for cls in (Add, Multiply, Average, Maximum, Minimum, Concatenate):
        y = cls()([a])
        np.testing.assert_array_equal(y, a)
        assert y is not a
    x = np.zeros((3, 5, 2))
    L1, L2 = np.array([5, 2, 0]), np.array([3, 4, 1])
    assert Add().compute_lengths([x, x], [None, None]) is None
    np.testing.assert_array_equal(Add().compute_lengths([x, x], [L1, None]), L1)
    np.testing.assert_array_equal(Multiply().compute_lengths([x, x, x], [L1, None, L2]), [3, 2, 0])
    with pytest.raises(ValueError, match="one entry"):
        Add().compute_lengths([x, x], [L1])


def test_concatenate_axes_shapes_and_time_lengths():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 5))
    layer = Concatenate()
    np.testing.assert_array_equal(layer([a, b]), np.concatenate([a, b], axis=-1))
    assert layer.compute_output_shape([(None, 3), (None, 5)]) == (None, 8)
    gradcheck(layer, [a, b])
    t = Concatenate(axis=1)
    c = rng.standard_normal((2, 6, 3))
    assert t.compute_output_shape([(4, 3), (6, 3)]) == (10, 3)
    assert t.compute_output_shape([(None, 3), (6, 3)]) == (None, 3)
    np.testing.assert_array_equal(t([a, c]), np.concatenate([a, c], axis=1))
    gradcheck(t, [a, c])
    three = Concatenate(axis=-2)
    with pytest.raises(RuntimeError, match="not built"):
        three.forward([a, c])
    three([a, c, a[:, :1]])
    gradcheck(three, [a, c, a[:, :1]])
    # along time only the last input may be padded: its lengths move by the earlier steps
    np.testing.assert_array_equal(t.compute_lengths([a, c], [None, np.array([6, 2])]), [10, 6])
    np.testing.assert_array_equal(t.compute_lengths([a, c], [np.array([4, 4]), np.array([0, 1])]), [4, 5])
    assert t.compute_lengths([a, c], [np.array([4, 4]), None]) is None
    with pytest.raises(ValueError, match="inside the output sequence"):
        t.compute_lengths([a, c], [np.array([4, 3]), None])
    np.testing.assert_array_equal(layer.compute_lengths([a, b], [np.array([4, 3]), np.array([2, 4])]), [2, 3])


@pytest.mark.parametrize("make,shapes_,exc,word", [
    (lambda: Add(), [(None, 3), (None, 4)], ValueError, "incompatible shapes"),
    (lambda: Maximum(), [(5, 3), (4, 3)], ValueError, "incompatible shapes"),
    (lambda: Subtract(), [(3,), (3,), (3,)], ValueError, "exactly 2 inputs"),
    (lambda: Add(), [], ValueError, "list of input shapes"),
    (lambda: Add(), (3,), ValueError, "list of input shapes"),
    (lambda: Concatenate(axis=0), [(3,), (3,)], ValueError, "axis"),
    (lambda: Concatenate(axis=3), [(4, 3), (4, 3)], ValueError, "axis"),
    (lambda: Concatenate(), [(4, 3), (3,)], ValueError, "same rank"),
    (lambda: Concatenate(), [(4, 3), (5, 3)], ValueError, "matching shapes"),
    (lambda: Concatenate(axis="time"), None, TypeError, "axis"),
])
def test_merge_bad_arguments(make, shapes_, exc, word):
    with pytest.raises(exc, match=word):
        make().build(shapes_)


def test_merge_runtime_checks():
    layer = Add()
    layer.build([(None, 3), (None, 3)])
    with pytest.raises(ValueError, match="batch sizes"):
        layer.forward([np.zeros((2, 4, 3)), np.zeros((3, 4, 3))])
    with pytest.raises(ValueError, match="incompatible"):
        layer.forward([np.zeros((2, 4, 3)), np.zeros((2, 5, 3))])
    with pytest.raises(ValueError, match="built for 2 inputs"):
        layer.forward([np.zeros((2, 4, 3))])
    with pytest.raises(ValueError, match="input 1 has shape"):
        layer.forward([np.zeros((2, 4, 3)), np.zeros((2, 4, 2))])


# ===========================================================================================
# reshaping
# ===========================================================================================
def test_repeat_vector():
    rng = np.random.default_rng(0)
    for B, F, n in [(1, 1, 1), (3, 2, 4), (2, 5, 1)]:
        layer = built(RepeatVector(n), (F,))
        x = rng.standard_normal((B, F))
        y = layer.forward(x)
        assert y.shape == (B, n, F) and layer.output_shape == (n, F)
        np.testing.assert_array_equal(y, np.stack([x] * n, axis=1))
        gradcheck(layer, [x])
        assert layer.compute_lengths(x, None) is None
    for bad, exc in [(0, ValueError), (2.0, TypeError), (True, TypeError)]:
        with pytest.raises(exc, match="n"):
            RepeatVector(bad)
    with pytest.raises(ValueError, match=r"\(batch, features\)"):
        built(RepeatVector(2), (None, 3))


def test_flatten_and_reshape():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4))
    flat = built(Flatten(), (3, 4))
    assert flat.output_shape == (12,) and built(Flatten(), (None, 4)).output_shape == (None,)
    np.testing.assert_array_equal(flat.forward(x), x.reshape(2, 12))
    gradcheck(flat, [x])
    r = built(Reshape((2, -1)), (3, 4))
    assert r.output_shape == (2, 6)
    np.testing.assert_array_equal(r.forward(x), x.reshape(2, 2, 6))
    gradcheck(r, [x])
    assert built(Reshape((-1, 2)), (None, 4)).output_shape == (None, 2)
    assert built(Reshape((4, 3, 1)), (12,)).output_shape == (4, 3, 1)
    with pytest.raises(ValueError, match="cannot reshape"):
        built(Reshape((5, -1)), (3, 4))
    with pytest.raises(ValueError, match="cannot reshape"):
        built(Reshape((-1, 5)), (None, 4)).forward(x)
    for bad, exc in [(5, TypeError), ((2, 0), ValueError), ((-1, -1), ValueError), ((2.5,), TypeError),
                     ((-2, 3), ValueError)]:
        with pytest.raises(exc, match="target_shape"):
            Reshape(bad)
    with pytest.raises(ValueError, match="data_format"):
        Flatten(data_format="channels_first")


def test_time_distributed_dense_conv_and_lstm():
    rng = np.random.default_rng(2)
    td = built(TimeDistributed(Dense(3, activation="tanh")), (None, 4))
    randomize_params(td, rng)
    assert td.params is td.layer.params and td.weight_names == ["kernel", "bias"]
    assert td.output_shape == (None, 3) and td.count_params() == 15
    x = rng.standard_normal((2, 5, 4))
    ref = np.tanh(x @ td.params["kernel"] + td.params["bias"])
    np.testing.assert_allclose(td.forward(x), ref, rtol=1e-12)
    gradcheck(td, [x])
    L = np.array([5, 0])
    assert td.compute_lengths(x, L) is L
    # a convolution over the inner axis of (B, T, T2, C) per outer step
    tdc = built(TimeDistributed(Conv1D(2, 2, padding="causal", activation="tanh")), (3, 4, 2))
    randomize_params(tdc, rng)
    x4 = rng.standard_normal((2, 3, 4, 2))
    y4 = tdc.forward(x4)
    for t in range(3):
        np.testing.assert_allclose(y4[:, t], tdc.layer.forward(x4[:, t]), rtol=1e-12)
    gradcheck(tdc, [x4])
    tdl = built(TimeDistributed(LSTM(2, return_sequences=True)), (3, 4, 2), dtype="float32")
    x4 = x4.astype(np.float32)
    np.testing.assert_allclose(tdl.forward(x4)[:, 1], tdl.layer.forward(x4[:, 1]), rtol=1e-6)


def test_time_distributed_errors():
    with pytest.raises(TypeError, match="layer"):
        TimeDistributed("dense")
    with pytest.raises(TypeError, match="one input"):
        TimeDistributed(Add())
    with pytest.raises(ValueError, match="stateful"):
        TimeDistributed(LSTM(2, stateful=True))
    with pytest.raises(ValueError, match="return_state"):
        TimeDistributed(LSTM(2, return_state=True))
    with pytest.raises(ValueError, match="rank >= 3"):
        built(TimeDistributed(Dense(2)), (4,))
    with pytest.raises(ValueError, match="class_name"):
        TimeDistributed.from_config({"layer": "Dense"})


# ===========================================================================================
# shared contracts: configs, inputs never written, inference writes nothing, float32
# ===========================================================================================
def layer_cases():
    """(layer, sample shapes, arrays maker) for every layer class of this issue."""
    return [
        (Conv1D(3, 2, strides=2, padding="same", dilation_rate=1, activation="relu", name="c"), (None, 2)),
        (Conv1D(3, 3, padding="same", name="c1"), (None, 2)),
        (LayerNormalization(axis=[1, 2], epsilon=0.01, center=False, name="ln"), (5, 2)),
        (GlobalAveragePooling1D(keepdims=True), (None, 2)),
        (GlobalMaxPooling1D(), (None, 2)),
        (TimeDistributed(Dense(2, activation="tanh"), name="td"), (None, 2)),
        (RepeatVector(3), (2,)),
        (Flatten(), (5, 2)),
        (Reshape((2, 5)), (5, 2)),
        (Concatenate(axis=1), [(5, 2), (5, 2)]),
        (Add(), [(5, 2), (1, 2)]),
        (Subtract(), [(5, 2), (2,)]),
        (Multiply(), [(5, 2), (5, 1)]),
        (Average(), [(5, 2), (5, 2)]),
        (Maximum(), [(5, 2), (5, 2), (5, 2)]),
        (Minimum(), [(5, 2), (5, 2)]),
    ]


def _arrays(shape, rng, B=3, T=5, dtype=np.float64):
    if isinstance(shape, list):
        return [_arrays(s, rng, B, T, dtype)[0] for s in shape]
    return [rng.standard_normal((B,) + tuple(T if d is None else d for d in shape)).astype(dtype)]


@pytest.mark.parametrize("case", range(len(layer_cases())))
def test_contracts(case):
    layer, shape = layer_cases()[case]
    rng = np.random.default_rng(case)
    built(layer, shape, dtype="float32")
    randomize_params(layer, rng)
    multi = getattr(layer, "multi_input", False)
    # config round trip (JSON), same class, same output for the same weights
    cfg = json.loads(json.dumps(layer.get_config()))
    twin = get_layer_class(type(layer).__name__).from_config(cfg)
    assert twin.get_config() == layer.get_config()
    built(twin, shape, dtype="float32")
    twin.set_weights(layer.get_weights())
    xs = _arrays(shape, rng, dtype=np.float32)
    L = np.array([5, 0, 3]) if not multi and len(shape) == 2 and shape[0] is None else None
    Ls = None if not multi else [np.array([5, 2, 0])] + [None] * (len(xs) - 1)
    lengths = Ls if multi else L
    arg = xs if multi else xs[0]
    # inference writes nothing on the layer
    before = {k: id(v) for k, v in vars(layer).items()}
    inner = getattr(layer, "layer", None)
    before_inner = None if inner is None else {k: id(v) for k, v in vars(inner).items()}
    y = layer.forward(arg, lengths=lengths, need_grad=False)
    assert {k: id(v) for k, v in vars(layer).items()} == before
    if inner is not None:
        assert {k: id(v) for k, v in vars(inner).items()} == before_inner
    np.testing.assert_array_equal(twin.forward(arg, lengths=lengths, need_grad=False), y)
    assert y.dtype == np.float32  # float32 in, float32 out
    # the caller's arrays are never written (read-only inputs, lengths and output gradients)
    for a in xs + ([L] if L is not None else []) + [v for v in (Ls or []) if v is not None]:
        a.setflags(write=False)
    y2 = layer.forward(arg, lengths=lengths, need_grad=True)
    np.testing.assert_array_equal(y2, y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy.setflags(write=False)
    dx = layer.backward(dy)
    assert set(layer.grads) == set(layer.params)
    for g, a in zip(dx if multi else [dx], xs, strict=True):
        assert g.shape == a.shape
    if multi:
        assert layer.compute_output_shape(shape) == y.shape[1:]
    # a float64 layer computes in float64
    layer.astype("float64")
    assert all(p.dtype == np.float64 for p in layer.params.values())
    assert layer.forward([a.astype(np.float64) for a in xs] if multi else xs[0].astype(np.float64),
                         lengths=lengths).dtype == np.float64


# ===========================================================================================
# Sequential: fit / predict / save / load, whole-model gradients with masks
# ===========================================================================================
def test_issue_example_and_save_load(tmp_path):
    rng = np.random.default_rng(0)
    model = Sequential([Input(shape=(None, 3)), Conv1D(8, 3, padding="causal"), LSTM(8), Dense(1)], seed=0)
    model.compile(loss="mse", optimizer="adam")
    x = rng.standard_normal((16, 7, 3)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)
    hist = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    model.save(tmp_path / "m.npz")
    back = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_sequential_with_every_single_input_layer(tmp_path):
    rng = np.random.default_rng(1)
    model = Sequential([Input(shape=(None, 3)), Masking(), Conv1D(6, 3, padding="same", activation="tanh"),
                        LayerNormalization(), LSTM(5, return_sequences=True),
                        TimeDistributed(Dense(4, activation="relu")), Dropout(0.1),
                        Conv1D(4, 2, strides=2, padding="causal"), GlobalMaxPooling1D(), Dense(4),
                        RepeatVector(3), Flatten(), Reshape((3, 4)), GlobalAveragePooling1D(), Dense(2)], seed=1)
    model.compile(loss="mse", optimizer="adam")
    x = rng.standard_normal((10, 9, 3)).astype(np.float32)
    L = random_lengths(rng, 10, 9)
    x[np.arange(9)[None, :] >= L[:, None]] = 0.0
    model.fit(x, rng.standard_normal((10, 2)), epochs=2, batch_size=5, verbose=0)
    p = model.predict(x)
    assert p.shape == (10, 2) and np.isfinite(p).all()
    for b in (0, 3, 6):  # each sample alone gives the same output: padding is ignored end to end
        if L[b]:
            np.testing.assert_allclose(model.predict(x[b:b + 1, : L[b]])[0], p[b], rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "all.npz")
    back = load_model(tmp_path / "all.npz")
    assert [type(la).__name__ for la in back.layers] == [type(la).__name__ for la in model.layers]
    assert back.get_config() == model.get_config()
    np.testing.assert_array_equal(back.predict(x), p)


def test_whole_model_gradients_with_masks():
    from test_models_grad import gradcheck as model_gradcheck
    from test_models_grad import make

    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 7, 3))
    x[1, 4:] = 0.0
    x[2, 1:] = 0.0
    x[3] = 0.0  # a sample of length 0
    m = make([Masking(input_shape=(None, 3)), Conv1D(4, 3, padding="same", activation="tanh"),
              LayerNormalization(), LSTM(3, return_sequences=True), TimeDistributed(Dense(3)),
              Conv1D(3, 2, strides=2, padding="valid"), GlobalAveragePooling1D(), Dense(2)])
    for layer in m.layers:
        randomize_params(layer, rng, 0.4)
    assert model_gradcheck(m, x, rng.standard_normal((4, 2)), n_per_param=6) > 0


# ===========================================================================================
# ONNX
# ===========================================================================================
def _onnx():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import edgernn.onnx as eo

    return eo


def _randomized(model, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-scale, scale, w.shape) for w in model.get_weights()])
    return model


ONNX_MODELS = {
    "conv_causal": lambda: [Input(shape=(None, 3)), Conv1D(8, 3, padding="causal", dilation_rate=2,
                                                           activation="relu"), LSTM(8), Dense(1)],
    "conv_same_s2_masked": lambda: [Input(shape=(None, 3)), Masking(), Conv1D(5, 3, padding="same", strides=2),
                                    LSTM(4, return_sequences=True), GlobalAveragePooling1D(), Dense(2)],
    "conv_same_s1_masked": lambda: [Input(shape=(None, 3)), Masking(), Conv1D(5, 4, padding="same"),
                                    GlobalMaxPooling1D(keepdims=True), Dense(2)],
    "conv_valid_masked": lambda: [Input(shape=(None, 3)), Masking(), Conv1D(5, 2, strides=3, dilation_rate=2,
                                                                            use_bias=False),
                                  GlobalMaxPooling1D(), Dense(2)],
    "layernorm_td": lambda: [Input(shape=(None, 3)), LSTM(6, return_sequences=True), LayerNormalization(),
                             TimeDistributed(Dense(2, activation="tanh"))],
    "fixed_T": lambda: [Input(shape=(6, 3)), Conv1D(4, 3), LayerNormalization(axis=[1, 2]), Flatten(), Dense(6),
                        Reshape((3, 2)), LayerNormalization(axis=1, scale=False), GlobalAveragePooling1D()],
    "lstm_conv_same_masked": lambda: [Input(shape=(None, 3)), Masking(), LSTM(4, return_sequences=True),
                                      Conv1D(3, 3, padding="same"), TimeDistributed(Dense(2))],
    "td_conv": lambda: [Input(shape=(4, 4)), Reshape((-1, 2, 2)), TimeDistributed(Conv1D(3, 2)), Flatten()],
    "td_lstm": lambda: [Input(shape=(4, 4)), Reshape((-1, 2, 2)), TimeDistributed(LSTM(3)), LSTM(2)],
}


@pytest.mark.parametrize("name", list(ONNX_MODELS))
def test_onnx_sequential_models(tmp_path, name):
    eo = _onnx()
    model = _randomized(Sequential(ONNX_MODELS[name](), seed=3), seed=len(name))
    T = model.input_shape[0]
    cases = [(1, 7), (5, 13), (2, 5)] if T is None else [(1, T), (5, T)]  # sizes not seen while building
    for lengths_input in (False, True):
        path = eo.export(model, tmp_path / f"{name}.onnx", lengths_input=lengths_input)
        report = eo.verify(model, path, cases=cases, seed=7)
        assert report.passed and report.max_abs <= 1e-5, report.table()
        assert report.weights_compared == sum(len(la.params) for la in model.layers)
        if lengths_input:  # variable lengths, 0 included
            assert any("lengths" in c.what for c in report.cases)


def _ort_run(path, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def test_onnx_masking_before_a_new_time_axis(tmp_path):
    """Masking -> LSTM -> RepeatVector -> LSTM: the repeated sequence has no padding (the graph's
    lengths end at RepeatVector, as predict's do); padded inputs checked by hand."""
    eo = _onnx()
    model = _randomized(Sequential([Input(shape=(None, 3)), Masking(), LSTM(6), RepeatVector(4),
                                    LSTM(5, return_sequences=True), TimeDistributed(Dense(2))], seed=4))
    path = eo.export(model, tmp_path / "ae.onnx")
    rng = np.random.default_rng(0)
    for B, T in [(1, 9), (6, 14)]:
        x = rng.standard_normal((B, T, 3)).astype(np.float32)
        L = random_lengths(rng, B, T)
        x[np.arange(T)[None, :] >= L[:, None]] = 0.0
        np.testing.assert_allclose(_ort_run(path, {"x": x}), model.predict(x), atol=1e-5)


@pytest.mark.parametrize("opset", [14, 17, None])
def test_onnx_opsets(tmp_path, opset):
    """LayerNormalization as primitives (opset < 17) or the operator; ReduceMean/ReduceMax with
    axes as attributes (< 18) or inputs."""
    eo = _onnx()
    model = _randomized(Sequential([Input(shape=(None, 3)), Masking(), LayerNormalization(epsilon=0.1),
                                    Conv1D(4, 3, strides=2, padding="same"), LayerNormalization(center=False),
                                    GlobalMaxPooling1D(keepdims=True), LayerNormalization(scale=False),
                                    GlobalAveragePooling1D()], seed=5))
    path = eo.export(model, tmp_path / "m.onnx", opset=opset, lengths_input=True)
    ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
    assert ("LayerNormalization" in ops) == (opset is None or opset >= 17)
    assert eo.verify(model, path, cases=[(3, 6), (4, 1)]).passed
    path = eo.export(model, tmp_path / "m2.onnx", opset=opset)
    assert eo.verify(model, path, cases=[(3, 6), (4, 1)]).passed


def test_onnx_streaming(tmp_path):
    eo = _onnx()
    model = _randomized(Sequential([Input(shape=(None, 3)), LSTM(4, return_sequences=True), LayerNormalization(),
                                    TimeDistributed(Dense(2))], seed=6))
    path = eo.export(model, tmp_path / "s.onnx", streaming=True)
    assert eo.verify(model, path, cases=[(2, 6)]).passed
    for layers, what in [([Conv1D(2, 2, padding="causal")], "Conv1D"), ([GlobalAveragePooling1D()], "Global"),
                         ([LayerNormalization(axis=1)], "axis"), ([Flatten()], "Flatten")]:
        shape = (5, 3) if what in ("axis", "Flatten") else (None, 3)
        m = Sequential([Input(shape=shape), LSTM(3, return_sequences=True)] + layers)
        with pytest.raises(eo.UnsupportedError, match=what):
            eo.export(m, tmp_path / "bad.onnx", streaming=True)


def _merge_graph(layer, arrays_list, lengths=None, time_major=None):
    """Graph x0, x1, ... (and len0, ...) -> the layer's converter -> y (and its lengths); run at
    every set of arrays in ``arrays_list`` (sizes the graph never saw)."""
    import onnx
    from onnx import TensorProto

    from edgernn.onnx import ConversionContext, GraphBuilder, Value, get_converter, supported_opset

    g = GraphBuilder(supported_opset())
    ctx = ConversionContext(g=g)
    first = arrays_list[0]
    values = []
    for i, a in enumerate(first):
        tm = bool(time_major and time_major[i])
        dims = ["batch"] + [f"d{i}_{j}" for j in range(1, a.ndim)]
        name = g.add_input(f"x{i}", TensorProto.FLOAT, [dims[1], dims[0], dims[2]] if tm else dims)
        L = g.add_input(f"len{i}", TensorProto.INT64, ["batch"]) if lengths and lengths[i] is not None else None
        values.append(Value(name, (0 if tm else 1) if a.ndim == 3 else None, L))
    out = get_converter(layer)(ctx, layer, values)
    g.add_output("y", ctx.batch_first(out).name, TensorProto.FLOAT,
                 ["batch"] + [f"o{j}" for j in range(len(layer.output_shape))])
    if out.lengths is not None:
        g.add_output("lengths", out.lengths, TensorProto.INT64, ["batch"])
    model = g.make_model()
    onnx.checker.check_model(model, full_check=True)
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    results = []
    for arrays in arrays_list:
        feeds = {}
        for i, a in enumerate(arrays):
            tm = bool(time_major and time_major[i])
            feeds[f"x{i}"] = np.ascontiguousarray(a.transpose(1, 0, 2) if tm else a).astype(np.float32)
            if lengths and lengths[i] is not None:
                feeds[f"len{i}"] = lengths[i](a.shape[0], a.shape[1])
        results.append((feeds, sess.run(None, feeds)))
    return results


def _lengths_of(B, T):
    return random_lengths(np.random.default_rng(B * 100 + T), B, T).astype(np.int64)


@pytest.mark.parametrize("cls", [Add, Subtract, Multiply, Average, Maximum, Minimum])
def test_onnx_merge_layers(cls):
    _onnx()
    rng = np.random.default_rng(0)
    sample = [(None, 3), (None, 3), (3,)] if cls is not Subtract else [(None, 3), (3,)]
    layer = cls()
    layer.build(sample)
    sizes = [(2, 5), (4, 1), (1, 8)]
    arrays_list = [[rng.standard_normal((B, T, 3) if len(s) == 2 else (B, 3)).astype(np.float32) for s in sample]
                   for B, T in sizes]
    lengths = [_lengths_of, None] + ([_lengths_of] if len(sample) == 3 else [])
    if len(sample) == 3:  # two sequences with lengths: the minimum; one of them time-major
        lengths = [_lengths_of, lambda B, T: np.full(B, max(T - 1, 0), np.int64), None]
    tm = [False, True, False] if len(sample) == 3 else [True, False]
    for feeds, (y, L) in _merge_graph(layer, arrays_list, lengths, tm):
        xs = [feeds[f"x{i}"].transpose(1, 0, 2) if tm[i] else feeds[f"x{i}"] for i in range(len(sample))]
        np.testing.assert_allclose(y, layer.forward(xs), rtol=1e-6, atol=1e-6)
        ls = [feeds.get(f"len{i}") for i in range(len(sample))]
        np.testing.assert_array_equal(L, layer.compute_lengths(xs, ls))


def test_onnx_concatenate():
    _onnx()
    rng = np.random.default_rng(1)
    feat = Concatenate()
    feat.build([(None, 3), (None, 2)])
    sizes = [(2, 5), (3, 1)]
    arrays = [[rng.standard_normal((B, T, 3)).astype(np.float32), rng.standard_normal((B, T, 2)).astype(np.float32)]
              for B, T in sizes]
    for feeds, (y, L) in _merge_graph(feat, arrays, [_lengths_of, _lengths_of], [True, False]):
        xs = [feeds["x0"].transpose(1, 0, 2), feeds["x1"]]
        np.testing.assert_allclose(y, feat.forward(xs), rtol=1e-6)
        np.testing.assert_array_equal(L, feat.compute_lengths(xs, [feeds["len0"], feeds["len1"]]))
    time = Concatenate(axis=1)
    time.build([(None, 3), (None, 3)])
    arrays = [[rng.standard_normal((B, T, 3)).astype(np.float32), rng.standard_normal((B, T + 2, 3)).astype(np.float32)]
              for B, T in sizes]
    for feeds, (y, L) in _merge_graph(time, arrays, [None, _lengths_of], [False, True]):
        xs = [feeds["x0"], feeds["x1"].transpose(1, 0, 2)]
        np.testing.assert_allclose(y, time.forward(xs), rtol=1e-6)
        np.testing.assert_array_equal(L, time.compute_lengths(xs, [None, feeds["len1"]]))
    vec = Concatenate(axis=-1)
    vec.build([(3,), (1,)])
    arrays = [[rng.standard_normal((B, 3)).astype(np.float32), rng.standard_normal((B, 1)).astype(np.float32)]
              for B in (1, 4)]
    for feeds, (y,) in _merge_graph(vec, arrays):
        np.testing.assert_allclose(y, vec.forward([feeds["x0"], feeds["x1"]]), rtol=1e-6)
    eo = _onnx()
    with pytest.raises(eo.UnsupportedError, match="inside the output sequence"):
        _merge_graph(time, arrays_list=[[np.zeros((1, 2, 3)), np.zeros((1, 2, 3))]], lengths=[_lengths_of, None])


# ===========================================================================================
# streaming engine
# ===========================================================================================
@pytest.mark.parametrize("layer", [Conv1D(2, 2, padding="causal", dilation_rate=2, name="cv"),
                                   LayerNormalization(name="ln"), TimeDistributed(Dense(2), name="td")])
def test_causal_layers_stream_step_by_step(layer):
    """Not in the jitted engine: the model streams layer by layer (edgernn.graph_stream), = predict."""
    model = Sequential([Input(shape=(None, 3)), LSTM(3, return_sequences=True), layer], seed=0)
    x = np.random.default_rng(0).standard_normal((2, 7, 3)).astype(np.float32)
    s = model.stream(batch_size=2)
    steps = np.stack([s.step(x[:, t]) for t in range(7)], axis=1)
    np.testing.assert_allclose(steps, model.predict(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer,label", [
    (Conv1D(2, 2, padding="same", name="cs"), "Conv1D 'cs'"),
    (GlobalAveragePooling1D(name="gap"), "GlobalAveragePooling1D 'gap'"),
])
def test_streaming_refuses_layers_that_need_the_future(layer, label):
    model = Sequential([Input(shape=(None, 3)), LSTM(3, return_sequences=True), layer])
    with pytest.raises(ValueError, match=label):
        model.stream()
