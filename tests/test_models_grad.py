"""Whole-model gradient checks by central finite differences in float64, through every layer type."""

import numpy as np
import pytest

from edgernn import Sequential, losses
from edgernn.layers import GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding, Masking, SimpleRNN

EPS = 1e-6


def gradcheck(model, x, y, lengths=None, training=False, dropout_seed=None, states=None, n_per_param=8,
              check_input=True, seed=0):
    """Compare the model's analytic gradients (params and input) with central differences.

    ``dropout_seed`` reseeds every layer's random stream before each evaluation, so dropout
    masks are the same in every evaluation; ``states`` (list per layer) are restored before
    each evaluation for stateful layers.
    """
    layers = model.layers

    def prepare():
        if dropout_seed is not None:
            for layer in layers:
                layer._rng = np.random.default_rng(dropout_seed)
        if states is not None:
            for layer, s in zip(layers, states, strict=True):
                if s is not None:
                    layer.reset_states([a.copy() for a in s])

    def loss_at():
        prepare()
        return model._loss_and_grads(x, y, lengths, training)[0]

    prepare()
    _, grads, _ = model._loss_and_grads(x, y, lengths, training)
    grads = [g.copy() for g in grads]
    dx = None
    if check_input and x.dtype.kind == "f":
        prepare()
        out = model._forward(x, lengths, training=training)
        pred = out[0] if isinstance(out, list) else out
        _, dy = model.loss.value_and_grad(y, pred, model._mask(pred, model._last_lengths))
        dx = model._backward([dy] + [None] * (len(out) - 1) if isinstance(out, list) else dy).copy()
    rng = np.random.default_rng(seed)
    checked = 0
    targets = [(layer.params[k], g, f"{layer.name}/{k}") for (layer, k), g in zip(model._trainable(), grads, strict=True)]
    if dx is not None:
        targets.append((x, dx, "input"))
    for p, g, name in targets:
        assert g.shape == p.shape, name
        candidates = np.arange(p.size)
        if name == "input":  # perturbing a padding value (0) would change the Masking lengths
            candidates = np.flatnonzero(p.ravel() != 0)
        flat = rng.choice(candidates, size=min(n_per_param, candidates.size), replace=False)
        for i in flat:
            idx = np.unravel_index(i, p.shape)
            old = p[idx]
            p[idx] = old + EPS
            lp = loss_at()
            p[idx] = old - EPS
            lm = loss_at()
            p[idx] = old
            num = (lp - lm) / (2 * EPS)
            assert abs(num - g[idx]) <= 1e-7 + 1e-5 * abs(num), (name, idx, num, g[idx])
            checked += 1
    return checked


def make(layers, loss="mse", seed=0):
    m = Sequential(layers, dtype="float64", seed=seed)
    m.compile(loss=loss, optimizer="sgd")
    return m


def randomize(model, seed=3, scale=0.5):
    """Nonzero biases and peepholes (zeros at init would hide bugs)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for k in ("Wb", "Rb", "P", "bias"):
            if k in layer.params:
                layer.params[k][...] = scale * rng.standard_normal(layer.params[k].shape)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng, rng.standard_normal((4, 6, 3))


@pytest.mark.parametrize("cell", [SimpleRNN, GRU, LSTM])
@pytest.mark.parametrize("opts", [{}, {"go_backwards": True}, {"use_bias": False}])
def test_stacked_recurrent(cell, opts, data):
    rng, x = data
    m = make([cell(5, return_sequences=True, input_shape=(None, 3), **opts), cell(4, **opts), Dense(2)])
    randomize(m)
    gradcheck(m, x, rng.standard_normal((4, 2)))


def test_lstm_options(data):
    rng, x = data
    m = make([LSTM(4, return_sequences=True, peephole=True, coupled_gates=True, input_shape=(None, 3),
                   activation="softsign", recurrent_activation="hard_sigmoid"),
              LSTM(3, peephole=True, clip=3.0, activation="elu"), Dense(1, activation="tanh")])
    randomize(m)
    gradcheck(m, x, rng.standard_normal((4, 1)))


def test_gru_variants(data):
    rng, x = data
    m = make([GRU(4, reset_after=False, return_sequences=True, input_shape=(None, 3)),
              GRU(3, activation="linear", recurrent_activation="sigmoid", return_sequences=True),
              SimpleRNN(2, activation="relu")])
    randomize(m)
    gradcheck(m, x, rng.standard_normal((4, 2)))


@pytest.mark.parametrize("mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("seq", [True, False])
def test_bidirectional_with_masking(mode, seq, data):
    rng, x = data
    x = x.copy()
    x[1, 4:] = 0.0
    x[2, 1:] = 0.0
    x[3] = 0.0  # an all-padding sample (length 0)
    m = make([Masking(input_shape=(None, 3)),
              Bidirectional(LSTM(3, return_sequences=True, peephole=True), merge_mode=mode),
              Bidirectional(GRU(2, return_sequences=seq), merge_mode=mode), Dense(2)])
    randomize(m)
    y = rng.standard_normal((4, 6, 2) if seq else (4, 2))
    gradcheck(m, x, y)


def test_ragged_lengths_with_sequence_loss(data):
    rng, x = data
    lengths = np.array([6, 2, 5, 1])
    m = make([SimpleRNN(3, return_sequences=True, go_backwards=True, input_shape=(None, 3)),
              LSTM(3, return_sequences=True), Dense(2)], loss="huber")
    randomize(m)
    gradcheck(m, x, 2 * rng.standard_normal((4, 6, 2)), lengths=lengths)


def test_embedding_classifier():
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 9, size=(4, 5))
    ids[0, 3:] = 0
    ids[2, 1:] = 0
    m = make([Embedding(9, 3, mask_zero=True, input_shape=(None,)), GRU(4), Dense(3), Activation("softmax")],
             loss="sparse_categorical_crossentropy")
    randomize(m)
    gradcheck(m, ids, np.array([0, 2, 1, 1]))


@pytest.mark.parametrize("loss", [losses.CategoricalCrossentropy(from_logits=True), "categorical_crossentropy",
                                  losses.BinaryCrossentropy(from_logits=True), "binary_crossentropy", "mae"])
def test_losses_through_model(loss, data):
    rng, x = data
    probs = isinstance(loss, str) and loss.endswith("crossentropy")
    head = [Dense(3), Activation("softmax" if "categorical" in str(loss) else "sigmoid")] if probs else [Dense(3)]
    m = make([LSTM(4, input_shape=(None, 3))] + head, loss=loss)
    randomize(m)
    y = np.eye(3)[[0, 2, 1, 1]] if "ategorical" in repr(loss) else (rng.random((4, 3)) > 0.5).astype(float)
    gradcheck(m, x, y)


def test_dropout_with_fixed_masks(data):
    rng, x = data
    m = make([LSTM(4, return_sequences=True, dropout=0.3, input_shape=(None, 3)), Dropout(0.4),
              GRU(3, dropout=0.2), Dropout(0.5, noise_shape=(None, 1)), Dense(1)])
    randomize(m)
    gradcheck(m, x, rng.standard_normal((4, 1)), training=True, dropout_seed=11)


def test_stateful_truncated_bptt(data):
    rng, x = data
    m = make([LSTM(4, stateful=True, return_sequences=True, input_shape=(None, 3)),
              GRU(3, stateful=True), Dense(1)])
    randomize(m)
    m.predict(rng.standard_normal((4, 5, 3)))  # a previous batch leaves a nonzero state
    states = [layer.states if hasattr(layer, "states") else None for layer in m.layers]
    assert states[0][0].any()
    gradcheck(m, x, rng.standard_normal((4, 1)), states=states)


def test_return_state_last_layer(data):
    rng, x = data
    m = make([GRU(4, return_sequences=True, input_shape=(None, 3)), LSTM(3, return_state=True)])
    randomize(m)
    gradcheck(m, x, rng.standard_normal((4, 3)))


def test_initial_state_gradients(data):
    rng, x = data
    layer = LSTM(3, return_sequences=True)
    layer.dtype = np.dtype("float64")
    layer.build((None, 3), rng=np.random.default_rng(0))
    h0, c0 = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    dy = rng.standard_normal((4, 6, 3))

    def f():
        return float((layer.forward(x, initial_state=[h0, c0]) * dy).sum())

    f()
    layer.backward(dy)
    dh0, dc0 = layer.initial_state_grads
    for arr, g in ((h0, dh0), (c0, dc0)):
        for idx in [(0, 0), (3, 2), (1, 1)]:
            old = arr[idx]
            arr[idx] = old + EPS
            lp = f()
            arr[idx] = old - EPS
            lm = f()
            arr[idx] = old
            assert abs((lp - lm) / (2 * EPS) - g[idx]) < 1e-7


@pytest.mark.parametrize("cls", [LSTM, GRU, SimpleRNN])
@pytest.mark.parametrize("graph", [False, True])
def test_training_skips_the_discarded_input_gradient(cls, graph):
    """Training does not compute dL/dX of a layer that reads the model's data (its product is
    skipped); the weight gradients are bit-identical to those of a full backward pass."""
    from edgernn import Model
    from edgernn.layers import Input

    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 7, 3)).astype(np.float32)
    y = rng.normal(size=(5, 7, 1)).astype(np.float32)
    if graph:
        inp = Input(shape=(None, 3))
        m = Model(inp, Dense(1)(cls(8, return_sequences=True)(inp)))
    else:
        m = Sequential([cls(8, return_sequences=True, input_shape=(None, 3)), Dense(1)], seed=1)
    m.compile(optimizer="adam", loss="mse")
    rnn = next(layer for layer in m.layers if isinstance(layer, cls))
    _, grads, _ = m._loss_and_grads(x, y)
    grads = [g.copy() for g in grads]
    assert rnn._fwd[0].need_dx is False and rnn._dx_unused is False
    out = m._forward(x, None, training=False, need_grad=True)
    _, dy = m.loss.value_and_grad(y, out, None)
    dx = m._backward(dy)
    dx = dx[0] if isinstance(dx, list) else dx
    assert dx.shape == x.shape and np.abs(dx).sum() > 0
    for (layer, k), g in zip(m._trainable(), grads, strict=True):
        np.testing.assert_array_equal(layer.grads[k], g)
