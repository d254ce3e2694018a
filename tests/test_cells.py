"""Conformance suite over the cell registry: every registered cell is tested the moment it is
registered (``edgernn/cells/base.py`` ``MODULES``).

Layer level (every cell): stream == predict, ONNX export (full and streaming graphs) == predict
in onnxruntime, Bidirectional export, save/load round trip, bad input.
Functional level (the cells driven by the generic driver, ``cells/driver.py``; the three ONNX
cells have their own, larger suites in test_functional*.py): naive float64 oracle
(``tests/naive.py``), central finite differences in float64 on every input and parameter,
inputs never written to, clear errors naming the argument.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgernn
import edgernn.functional as F
from edgernn import Sequential, cells, layers
from edgernn.layers import Bidirectional, Dense

import naive

ALL = sorted(cells.registered())
GENERIC = [n for n in ALL if hasattr(cells.get(n).mod(), "example_params")]
DIRECTIONS = ["forward", "reverse", "bidirectional"]


def layer_class(name):
    return getattr(layers, cells.get(name).layers[0])


def _model(name, seed=0, **kw):
    m = Sequential([layer_class(name)(4, input_shape=(None, 3), return_sequences=True, **kw), Dense(2)], seed=seed)
    rng = np.random.default_rng(seed)
    for la in m.layers:  # nonzero biases
        for k, v in la.params.items():
            if v.ndim <= 2 and k not in ("W", "R", "u", "U", "V", "kernel"):
                v[...] = rng.standard_normal(v.shape) * 0.3
    return m


def test_registry_complete():
    assert set(cells.MODULES) <= set(ALL)
    for name in ALL:
        spec = cells.get(name)
        assert layer_class(name).cell == name
        for fn in spec.functional:
            assert callable(getattr(F, fn))
    with pytest.raises(ValueError, match="unknown cell"):
        cells.get("nope")


# ---------------------------------------------------------------------------------------
# functional: oracle, gradients, inputs untouched, errors
# ---------------------------------------------------------------------------------------
def _case(name, seed, direction, dtype=np.float64, B=None, T=None, I=None, H=None):
    rng = np.random.default_rng(seed)
    B = B or int(rng.integers(1, 4))
    T = T or int(rng.integers(1, 7))
    I = I or int(rng.integers(1, 5))
    H = H or int(rng.integers(1, 6))
    D = 2 if direction == "bidirectional" else 1
    params, states, O = cells.get(name).mod().example_params(rng, D, I, H, dtype)
    init = {f"{s}0": rng.standard_normal((B, D, O)).astype(dtype) for s in states}
    X = rng.standard_normal((B, T, I)).astype(dtype)
    L = rng.integers(0, T + 1, size=B)
    L[0] = T
    return X, params, init, L, O


def _call(name, X, params, init, L, direction, **kw):
    fn = getattr(F, cells.get(name).functional[0])
    return fn(X, **params, **init, lengths=L, direction=direction, **kw)


def _acts(name):
    return cells.get(name).default_activations


@pytest.mark.parametrize("name", GENERIC)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_oracle(name, direction, seed):
    X, params, init, L, O = _case(name, seed, direction)
    Y, Yh = _call(name, X, params, init, L, direction)
    s0 = next(iter(init.values()))
    Yn, Hn = naive.cell_run(name, X, params, s0, O, L, direction, acts=_acts(name))
    np.testing.assert_allclose(Y, Yn, rtol=0, atol=1e-12)
    np.testing.assert_allclose(Yh, Hn, rtol=0, atol=1e-12)
    # float32: computed in float32, close to the float64 oracle
    X32 = X.astype(np.float32)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    i32 = {k: v.astype(np.float32) for k, v in init.items()}
    Y32, _ = _call(name, X32, p32, i32, L, direction)
    assert Y32.dtype == np.float32
    np.testing.assert_allclose(Y32, Yn, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", GENERIC)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_finite_differences(name, direction):
    X, params, init, L, O = _case(name, 3, direction, B=3, T=5, I=3, H=4)
    L = np.array([5, 2, 0])
    Y, Yh, cache = _call(name, X, params, init, L, direction, train=True)
    rng = np.random.default_rng(7)
    wY, wH = rng.standard_normal(Y.shape), rng.standard_normal(Yh.shape)
    grads = getattr(F, cells.get(name).functional[1])(cache, wY, wH)
    inputs = {"X": X, **params, **init}
    assert set(grads) == set(inputs)

    def loss():
        y, h = _call(name, X, params, init, L, direction)
        return float((y * wY).sum() + (h * wH).sum())

    eps = 1e-6
    for key, arr in inputs.items():
        assert grads[key].shape == arr.shape, key
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = loss()
            arr[idx] = old - eps
            down = loss()
            arr[idx] = old
            num = (up - down) / (2 * eps)
            assert abs(num - grads[key][idx]) <= 1e-6 * max(1.0, abs(num)), (key, idx, num, grads[key][idx])


@pytest.mark.parametrize("name", GENERIC)
def test_inputs_never_written(name):
    X, params, init, L, O = _case(name, 4, "bidirectional", dtype=np.float32, B=2, H=1)
    copies = {k: v.copy() for k, v in {"X": X, **params, **init}.items()}
    Y, Yh, cache = _call(name, X, params, init, L, "bidirectional", train=True)
    dY, dH = np.ones_like(Y), np.ones_like(Yh)
    getattr(F, cells.get(name).functional[1])(cache, dY, dH)
    Y2, _ = _call(name, X, params, init, L, "bidirectional")
    np.testing.assert_array_equal(Y, Y2)
    for k, v in {"X": X, **params, **init}.items():
        np.testing.assert_array_equal(v, copies[k], err_msg=k)
    assert np.all(dY == 1) and np.all(dH == 1)


@pytest.mark.parametrize("name", GENERIC)
def test_bad_input_names_the_argument(name):
    X, params, init, L, O = _case(name, 5, "forward", B=2, T=3, I=2, H=3)
    for key in params:
        bad = dict(params)
        bad[key] = params[key][..., :-1] if params[key].shape[-1] > 1 else params[key][:, None]
        with pytest.raises(ValueError, match=rf"\b{key}\b"):
            _call(name, X, bad, init, L, "forward")
    s = next(iter(init))
    with pytest.raises(ValueError, match=s):
        _call(name, X, params, {s: init[s][:, :, :-1] if O > 1 else init[s][:1, :, :1][:0]}, L, "forward")
    with pytest.raises(ValueError, match="lengths"):
        _call(name, X, params, init, np.array([4, 1]), "forward")
    with pytest.raises(ValueError, match="direction"):
        _call(name, X, params, init, L, "sideways")
    with pytest.raises(ValueError, match="X"):
        _call(name, X[0], params, init, L, "forward")


# ---------------------------------------------------------------------------------------
# layers: stream, export, save/load, for every registered cell
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_stream_equals_predict(name):
    m = _model(name, seed=1)
    X = np.random.default_rng(2).standard_normal((2, 9, 3)).astype(np.float32)
    st = m.stream(batch_size=2)
    ys = st.run(X)
    np.testing.assert_allclose(ys, m.predict(X), rtol=0, atol=2e-6)
    st.reset()
    s = st.state
    assert len(s) == 1 and len(s[0]) == len(cells.get(name).state_names)


@pytest.mark.parametrize("name", ALL)
def test_export_verifies_in_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxruntime")
    import edgernn.onnx as eo

    m = _model(name, seed=3)
    for streaming in (False, True):
        path = tmp_path / f"{name}_{streaming}.onnx"
        eo.export(m, path, streaming=streaming)
        report = eo.verify(m, path)  # batch sizes 1, 5 and lengths 1, 11/6: not used while building
        assert report.passed and report.max_abs < 1e-5 and len(report.cases) >= 4
    bi = Sequential([Bidirectional(layer_class(name)(3, return_sequences=True), input_shape=(None, 2)), Dense(1)],
                    seed=4)
    eo.export(bi, tmp_path / "bi.onnx")
    assert eo.verify(bi, tmp_path / "bi.onnx").passed


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(name, tmp_path):
    m = _model(name, seed=5)
    X = np.random.default_rng(6).standard_normal((3, 7, 3)).astype(np.float32)
    m.save(tmp_path / "m.npz")
    m2 = edgernn.load_model(tmp_path / "m.npz")
    assert type(m2.layers[0]) is type(m.layers[0])
    np.testing.assert_array_equal(m2.predict(X), m.predict(X))


@pytest.mark.parametrize("name", ALL)
def test_layer_trains_and_stacks(name):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((32, 6, 3)).astype(np.float32)
    y = X[:, :, :1].cumsum(axis=1)[:, -1] * 0.3
    cls = layer_class(name)
    m = Sequential([cls(6, input_shape=(None, 3), return_sequences=True), cls(5), Dense(1)], seed=9)
    m.compile(loss="mse", optimizer="adam")
    before = m.evaluate(X, y)
    m.fit(X, y, epochs=30, batch_size=8, verbose=0)
    assert m.evaluate(X, y) < 0.7 * before


@pytest.mark.parametrize("name", ALL)
def test_layer_bad_input(name):
    m = _model(name)
    with pytest.raises(ValueError, match="expected input"):
        m.layers[0].forward(np.zeros((2, 4, 5), np.float32))


# ---------------------------------------------------------------------------------------
# cell-specific behaviour
# ---------------------------------------------------------------------------------------
def test_indrnn_is_a_native_rnn_node_and_keeps_u_bounded(tmp_path):
    pytest.importorskip("onnx")
    import onnx

    import edgernn.onnx as eo
    from edgernn.layers import IndRNN

    layer = IndRNN(8, input_shape=(None, 2), max_timesteps=50)
    bound = 2 ** (1 / 50)
    assert layer.recurrent_max_abs == pytest.approx(bound)
    m = Sequential([layer, Dense(1)], seed=0)
    u = m.layers[0].params["u"]
    assert u.min() >= 0 and u.max() <= bound
    eo.export(m, tmp_path / "i.onnx")
    ops = [n.op_type for n in onnx.load(tmp_path / "i.onnx").graph.node]
    assert "RNN" in ops and "Scan" not in ops
    m.compile(loss="mse", optimizer=edgernn.optimizers.SGD(100.0))  # a huge step: u must be clipped
    rng = np.random.default_rng(1)
    m.fit(rng.standard_normal((8, 5, 2)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32),
          epochs=1, batch_size=8, verbose=0)
    assert np.abs(m.layers[0].params["u"]).max() <= bound + 1e-7


def test_jordan_feeds_back_its_output(tmp_path):
    from edgernn.layers import JordanRNN

    m = Sequential([JordanRNN(6, output_units=2, input_shape=(None, 3), return_sequences=True)], seed=0)
    assert m.layers[0].compute_output_shape((None, 3)) == (None, 2)
    X = np.random.default_rng(0).standard_normal((1, 4, 3)).astype(np.float32)
    Y = m.predict(X)  # (1, 4, 2)
    p = {k: v for k, v in m.layers[0].params.items()}
    y = np.zeros(2)
    for t in range(4):  # y_t = tanh(V tanh(W x + U y_{t-1} + b) + c)
        h = np.tanh(p["W"][0] @ X[0, t] + p["U"][0] @ y + p["b"][0])
        y = np.tanh(p["V"][0] @ h + p["c"][0])
        np.testing.assert_allclose(Y[0, t], y, atol=2e-6)
