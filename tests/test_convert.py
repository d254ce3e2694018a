"""edgernn.convert: PyTorch modules and Keras layers brought in with their weights.

PyTorch cases compare with torch itself (skipped without torch); Keras cases compare with an
independent numpy implementation of Keras' equations on weights laid out as Keras documents
them (kernel (I, G*H) gates i,f,c,o / z,r,h; recurrent_kernel (H, G*H); bias (G*H,) or
(2, 3H) for GRU reset_after=True).
"""

import numpy as np
import pytest

from edgernn import convert
from edgernn.convert import ConversionError, from_keras, from_keras_weights, from_torch


# -------------------------------------------------------------------------------------------
# PyTorch
# -------------------------------------------------------------------------------------------
def _torch_case(torch, cls, I, H, layers, bi, bf, bias, dt, nonlin=None):
    kw = {"nonlinearity": nonlin} if nonlin else {}
    m = cls(I, H, num_layers=layers, bidirectional=bi, batch_first=bf, bias=bias,
            dropout=0.25 if layers > 1 else 0.0, **kw).to(dt).eval()
    with torch.no_grad():  # make the biases matter and distinct
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bi", [False, True])
def test_from_torch_recurrent_equals_torch(kind, bi):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    cls = getattr(torch.nn, kind)
    worst = {}
    for trial, dt in enumerate([torch.float64, torch.float32, torch.float64, torch.float32]):
        I, H, L = (int(v) for v in rng.integers(1, 5, size=3))
        B, T = int(rng.integers(1, 4)), int(rng.integers(1, 9))
        if trial == 0:
            I, H, B, T = 1, 1, 1, 1  # every size 1
        bf, bias = bool(trial % 2), trial != 2
        nonlin = ("relu" if trial % 2 else "tanh") if kind == "RNN" else None
        m = _torch_case(torch, cls, I, H, L, bi, bf, bias, dt, nonlin)
        x = rng.standard_normal((B, T, I))
        xt = torch.tensor(x, dtype=dt)
        with torch.no_grad():
            out, h = m(xt if bf else xt.transpose(0, 1))
        out = (out if bf else out.transpose(0, 1)).numpy()
        hn = (h[0] if isinstance(h, tuple) else h).numpy()
        last = np.concatenate([hn[-2], hn[-1]], -1) if bi else hn[-1]
        seq = from_torch(m)
        fin = from_torch(m, return_sequences=False)
        assert seq.dtype == np.dtype(str(dt).replace("torch.", ""))
        e1 = np.abs(seq.predict(x) - out).max()
        e2 = np.abs(fin.predict(x) - last).max()
        worst[str(dt)] = max(worst.get(str(dt), 0.0), e1, e2)
        assert seq.predict(x).shape == out.shape
        assert len(seq.layers) == L + (L - 1)  # a Dropout between stacked layers (as torch's dropout=)
    assert worst["torch.float64"] < 1e-10, worst
    assert worst["torch.float32"] < 1e-5, worst


def test_from_torch_heads_and_sequential():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True).double().eval()
    head = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3), nn.Softmax(dim=-1)).double()
    x = rng.standard_normal((3, 9, 4))
    with torch.no_grad():
        out, (h, c) = lstm(torch.tensor(x))
        ref_seq = head(out).numpy()
        ref_last = head(out[:, -1]).numpy()
    m_seq = from_torch([lstm, head])
    m_last = from_torch([lstm, head], return_sequences=False)
    np.testing.assert_allclose(m_seq.predict(x), ref_seq, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m_last.predict(x), ref_last, rtol=0, atol=1e-12)
    assert [type(la).__name__ for la in m_last.layers] == ["LSTM", "LSTM", "Dense", "Dense"]
    assert m_last.layers[-1].activation == "softmax"  # fused into the Dense
    # Dense-only nn.Sequential, and GRU -> ReLU -> Linear on every step
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2), nn.Sigmoid()).eval()
    xm = rng.standard_normal((5, 3)).astype(np.float32)
    with torch.no_grad():
        ref = mlp(torch.tensor(xm)).numpy()
    assert np.abs(from_torch(mlp).predict(xm) - ref).max() < 1e-6
    gru = nn.GRU(2, 3).eval()  # batch_first=False
    lin = nn.Linear(3, 1)
    xg = rng.standard_normal((4, 6, 2)).astype(np.float32)
    with torch.no_grad():
        y = lin(torch.relu(gru(torch.tensor(xg).transpose(0, 1))[0])).transpose(0, 1).numpy()
    got = from_torch([gru, nn.ReLU(), lin]).predict(xg)
    assert got.shape == (4, 6, 1) and np.abs(got - y).max() < 1e-5


def test_from_torch_embedding_and_gate_order_trap():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(5)
    emb, lstm = nn.Embedding(10, 4), nn.LSTM(4, 3, batch_first=True)
    ids = np.random.default_rng(5).integers(0, 10, size=(2, 7))
    with torch.no_grad():
        ref = lstm(emb(torch.tensor(ids)))[0].numpy()
        plain = lstm(torch.randn(2, 7, 4))[0].numpy()
    assert np.abs(from_torch([emb, lstm]).predict(ids) - ref).max() < 1e-6
    # the trap the converter exists for: torch's parameters copied without the gate permutation
    model = from_torch(lstm)
    x = np.random.default_rng(6).standard_normal((2, 7, 4)).astype(np.float32)
    good = model.predict(x)
    naive = [p.detach().numpy()[None] for p in lstm.parameters()][:3]
    model.layers[0].set_weights(naive + [np.zeros((1, 12), np.float32)])
    assert np.abs(model.predict(x) - good).max() > 1e-2
    assert plain.shape == good.shape


def test_from_torch_refusals_and_no_writes():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    with pytest.raises(ConversionError, match="proj_size"):
        from_torch(nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ConversionError, match="GELU"):
        from_torch([nn.LSTM(3, 4), nn.GELU()])
    with pytest.raises(ConversionError, match="dim"):
        from_torch([nn.LSTM(3, 4), nn.Softmax(dim=1)])

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 4)

        def forward(self, x):
            return self.lstm(x)[0]

    with pytest.raises(ConversionError, match=r"from_torch\(\[net.lstm"):
        from_torch(Net())
    lstm = nn.LSTM(3, 4, batch_first=True)
    before = [p.detach().clone() for p in lstm.parameters()]
    model = from_torch(lstm)
    for la in model.layers:  # writing into edgernn's weights must not touch torch's
        for p in la.params.values():
            p[...] = 7.0
    assert all(torch.equal(a, b) for a, b in zip(before, lstm.parameters(), strict=True))


def test_gate_permutations_explicit():
    H = 2
    blocks = np.repeat(np.arange(4), H)[:, None] * np.ones((1, 3))  # torch LSTM rows i,f,g,o = 0,1,2,3
    assert convert.torch_to_onnx_gates(blocks, "lstm")[::H, 0].tolist() == [0, 3, 1, 2]  # i,o,f,c
    gru = np.repeat(np.arange(3), H)  # torch r,z,n
    assert convert.torch_to_onnx_gates(gru, "gru")[::H].tolist() == [1, 0, 2]  # z,r,h
    k = np.repeat(np.arange(4), H)[None, :] * np.ones((5, 1))  # Keras columns i,f,c,o
    out = convert.keras_to_onnx_gates(k, "lstm")
    assert out.shape == (4 * H, 5) and out[::H, 0].tolist() == [0, 3, 1, 2]
    assert convert.keras_to_onnx_gates(np.repeat(np.arange(3), H), "gru")[::H].tolist() == [0, 1, 2]


# -------------------------------------------------------------------------------------------
# Keras: an independent numpy implementation of Keras' equations
# -------------------------------------------------------------------------------------------
def _sig(z):
    return 1 / (1 + np.exp(-z))


def _keras_rnn(cls, cfg, w, x):
    """Keras SimpleRNN/LSTM/GRU forward (B, T, I) -> sequence (B, T, H) and final h (B, H)."""
    H = cfg["units"]
    K, RK = w[0], w[1]
    b = w[2] if len(w) > 2 else None
    B, T, _ = x.shape
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    steps = range(T - 1, -1, -1) if cfg.get("go_backwards") else range(T)
    seq = []
    for t in steps:
        xt = x[:, t]
        if cls == "SimpleRNN":
            h = np.tanh(xt @ K + h @ RK + (0 if b is None else b))
        elif cls == "LSTM":
            z = xt @ K + h @ RK + (0 if b is None else b)
            i, f, cc, o = np.split(z, 4, axis=1)
            c = _sig(f) * c + _sig(i) * np.tanh(cc)
            h = _sig(o) * np.tanh(c)
        else:
            if cfg.get("reset_after", True):
                bi, br = (b[0], b[1]) if b is not None else (0, 0)
                xz, xr, xh = np.split(xt @ K + bi, 3, axis=1)
                rz, rr, rh = np.split(h @ RK + br, 3, axis=1)
                z, r = _sig(xz + rz), _sig(xr + rr)
                hh = np.tanh(xh + r * rh)
            else:
                xz, xr, xh = np.split(xt @ K + (0 if b is None else b), 3, axis=1)
                z = _sig(xz + h @ RK[:, :H])
                r = _sig(xr + h @ RK[:, H:2 * H])
                hh = np.tanh(xh + (r * h) @ RK[:, 2 * H:])
            h = z * h + (1 - z) * hh
        seq.append(h)
    return np.stack(seq, axis=1), h


def _keras_predict(entries, x):
    for cls, cfg, w in entries:
        if cls in ("SimpleRNN", "LSTM", "GRU"):
            seq, h = _keras_rnn(cls, cfg, w, x)
            x = seq if cfg.get("return_sequences") else h
        elif cls == "Bidirectional":
            icls, icfg = cfg["layer"]["class_name"], cfg["layer"]["config"]
            n = len(w) // 2
            sf, hf = _keras_rnn(icls, icfg, w[:n], x)
            sb, hb = _keras_rnn(icls, {**icfg, "go_backwards": True}, w[n:], x)
            if icfg.get("return_sequences"):
                a, b = sf, sb[:, ::-1]
            else:
                a, b = hf, hb
            mode = cfg["merge_mode"]
            x = (np.concatenate([a, b], -1) if mode == "concat" else a + b if mode == "sum"
                 else (a + b) / 2 if mode == "ave" else a * b)
        elif cls in ("Dense", "TimeDistributed"):
            cfg = cfg.get("layer", {}).get("config", cfg)
            z = x @ w[0] + (w[1] if len(w) > 1 else 0)
            x = {"linear": z, "tanh": np.tanh(z), "relu": np.maximum(z, 0),
                 "softmax": np.exp(z) / np.exp(z).sum(-1, keepdims=True)}[cfg.get("activation", "linear")]
    return x


def _kw(rng, cls, I, H, cfg):
    G = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[cls]
    w = [rng.uniform(-0.7, 0.7, (I, G * H)), rng.uniform(-0.7, 0.7, (H, G * H))]
    if cfg.get("use_bias", True):
        two = cls == "GRU" and cfg.get("reset_after", True)
        w.append(rng.uniform(-0.5, 0.5, (2, G * H) if two else (G * H,)))
    return w


def test_from_keras_weights_equals_keras_equations():
    rng = np.random.default_rng(11)
    cases = [
        [("InputLayer", {"batch_shape": [None, None, 3]}, []),
         ("LSTM", {"name": "l1", "units": 5, "return_sequences": True}, None),
         ("GRU", {"name": "g1", "units": 4, "return_sequences": True, "reset_after": False}, None),
         ("SimpleRNN", {"name": "s1", "units": 3, "return_sequences": False}, None),
         ("Dense", {"name": "d", "units": 2, "activation": "softmax"}, None)],
        [("GRU", {"units": 4, "return_sequences": True}, None),
         ("LSTM", {"units": 2, "go_backwards": True, "use_bias": False}, None),
         ("Dense", {"units": 3, "activation": "tanh"}, None)],
        [("Bidirectional", {"merge_mode": "concat", "layer": {"class_name": "LSTM", "config": {
            "units": 3, "return_sequences": True}}}, None),
         ("Bidirectional", {"merge_mode": "ave", "layer": {"class_name": "GRU", "config": {
             "units": 2, "return_sequences": False}}}, None),
         ("Dense", {"units": 1}, None)],
        [("Masking", {"mask_value": 0.0}, None),
         ("Bidirectional", {"merge_mode": "sum", "layer": {"class_name": "SimpleRNN", "config": {
            "units": 2, "return_sequences": True}}}, None),
         ("Bidirectional", {"merge_mode": "mul", "layer": {"class_name": "GRU", "config": {
             "units": 3, "return_sequences": True, "reset_after": False}}}, None),
         ("TimeDistributed", {"layer": {"class_name": "Dense", "config": {"units": 2}}}, None)],
    ]
    worst = {"float64": 0.0, "float32": 0.0}
    for case in cases:
        I = 3
        entries = []
        for cls, cfg, _ in case:
            if cls in ("SimpleRNN", "LSTM", "GRU"):
                w = _kw(rng, cls, I, cfg["units"], cfg)
                I = cfg["units"]
            elif cls == "Bidirectional":
                icls, icfg = cfg["layer"]["class_name"], cfg["layer"]["config"]
                w = _kw(rng, icls, I, icfg["units"], icfg) + _kw(rng, icls, I, icfg["units"], icfg)
                I = icfg["units"] * (2 if cfg["merge_mode"] == "concat" else 1)
            elif cls in ("Dense", "TimeDistributed"):
                U = cfg.get("layer", {}).get("config", cfg)["units"]
                w = [rng.uniform(-1, 1, (I, U)), rng.uniform(-1, 1, U)]
                I = U
            else:
                w = []
            entries.append((cls, cfg, w))
        for B, T in [(1, 1), (3, 6)]:
            x = rng.standard_normal((B, T, 3))
            ref = _keras_predict(entries, x)
            m64 = from_keras_weights(entries)
            m32 = from_keras_weights(entries, dtype="float32")
            assert m64.dtype == np.float64
            worst["float64"] = max(worst["float64"], np.abs(m64.predict(x) - ref).max())
            worst["float32"] = max(worst["float32"], np.abs(m32.predict(x) - ref).max())
    assert worst["float64"] < 1e-10 and worst["float32"] < 1e-5, worst


class _FakeKerasLayer:
    def __init__(self, cfg, weights):
        self._cfg, self._w = cfg, weights

    def get_config(self):
        return dict(self._cfg)

    def get_weights(self):
        return list(self._w)


def test_from_keras_model_object_duck_typed():
    rng = np.random.default_rng(2)
    LSTMk = type("LSTM", (_FakeKerasLayer,), {})
    Densek = type("Dense", (_FakeKerasLayer,), {})
    lw = _kw(rng, "LSTM", 2, 4, {})
    dw = [rng.standard_normal((4, 1)), rng.standard_normal(1)]
    saved = [a.copy() for a in lw + dw]

    class Model:
        name = "keras_model"
        input_shape = (None, 5, 2)
        layers = [LSTMk({"units": 4, "activation": "tanh", "recurrent_activation": "sigmoid"}, lw),
                  Densek({"units": 1, "activation": "linear"}, dw)]

    model = from_keras(Model())
    assert model.input_shape == (5, 2) and model.name == "keras_model"
    x = rng.standard_normal((4, 5, 2)).astype(np.float32)
    ref = _keras_predict([("LSTM", {"units": 4}, lw), ("Dense", {}, dw)], x.astype(np.float64))
    assert np.abs(model.predict(x) - ref).max() < 1e-5
    assert all(np.array_equal(a, b) for a, b in zip(saved, lw + dw, strict=True))  # not written to


def test_from_keras_refusals():
    rng = np.random.default_rng(0)
    w = _kw(rng, "LSTM", 2, 3, {})
    with pytest.raises(ConversionError, match="hard_sigmoid"):
        from_keras_weights([("LSTM", {"units": 3, "recurrent_activation": "hard_sigmoid"}, w)])
    with pytest.raises(ConversionError, match="'gelu'"):
        from_keras_weights([("LSTM", {"units": 3, "activation": "gelu"}, w)])
    with pytest.raises(ConversionError, match="Conv1D"):
        from_keras_weights([("Conv1D", {"filters": 3}, [])])
    with pytest.raises(ConversionError, match="merge_mode=None"):
        from_keras_weights([("Bidirectional", {"merge_mode": None, "layer": {"class_name": "LSTM",
                                                                              "config": {"units": 3}}}, w + w)])
    with pytest.raises(ConversionError, match="units=4"):
        from_keras_weights([("LSTM", {"units": 4}, w)])
