"""edgernn.onnx.load: ONNX graphs with RNN/GRU/LSTM nodes imported as edgernn models.

Oracles: the expected outputs the ONNX operator test cases carry (including the ``layout=1``
``*_batchwise`` ones onnxruntime rejects), edgernn's own export (round trip), and PyTorch
modules exported with torch.onnx (skipped without torch; the dynamo exporter also needs
onnxscript).
"""

import importlib
import io
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgernn.onnx as eo
from edgernn import Sequential
from edgernn.layers import GRU, LSTM, Activation, Bidirectional, Dense, Dropout, SimpleRNN
from edgernn.onnx import UnsupportedGraphError


# -------------------------------------------------------------------------------------------
# the ONNX operator test cases
# -------------------------------------------------------------------------------------------
def _operator_cases():
    """The RNN/GRU/LSTM node test cases, built in memory (onnx >= 1.23 ships no data files)."""
    import onnx.backend.test.case.node as node_cases

    if hasattr(node_cases, "_NodeTestCases"):  # fast: build only the three modules' cases
        for mod in ("rnn", "gru", "lstm"):
            importlib.import_module(f"onnx.backend.test.case.node.{mod}")
        cases = node_cases._NodeTestCases
    else:
        from onnx.backend.test.loader import load_model_tests

        cases = load_model_tests(kind="node")
    out = {}
    for c in cases:
        if any(k in c.name for k in ("rnn", "gru", "lstm")):
            out[c.name] = c
    return [out[k] for k in sorted(out)]


def _as_graph_with_weights(case, inputs):
    """The case's model with every input but X and sequence_lens turned into initializers."""
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    feeds = {}
    keep = [i for i in m.graph.input if i.name in ("X", "sequence_lens")]
    names = [i.name for i in m.graph.input]
    for name, arr in zip(names, inputs, strict=True):
        if name in ("X", "sequence_lens"):
            feeds[name] = arr
        else:
            m.graph.initializer.append(numpy_helper.from_array(arr, name))
    del m.graph.input[:]
    m.graph.input.extend(keep)
    return m, feeds


def _to_predict_layout(ref, layout):
    """An RNN node output in the graph's layout -> what predict returns (batch-first, D*H)."""
    if ref.ndim == 4:  # Y: (T, D, B, H) or (B, T, D, H)
        r = ref.transpose(2, 0, 1, 3) if layout == 0 else ref
        return r.reshape(r.shape[0], r.shape[1], -1)
    r = ref.transpose(1, 0, 2) if layout == 0 else ref  # Y_h: (D, B, H) or (B, D, H)
    return r.reshape(r.shape[0], -1)


def test_operator_test_cases():
    cases = _operator_cases()
    assert len(cases) == 18, [c.name for c in cases]
    checked, refused, worst = [], [], 0.0
    for case in cases:
        node = case.model.graph.node[0]
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        direction = next((a.s.decode() for a in node.attribute if a.name == "direction"), "forward")
        for inputs, outputs in case.data_sets:
            graph, feeds = _as_graph_with_weights(case, inputs)
            X = feeds["X"]
            x = X if layout == 1 else X.transpose(1, 0, 2)
            for out_name, ref in zip([o.name for o in case.model.graph.output], outputs, strict=True):
                if out_name == "Y_c" or (out_name == "Y" and direction == "reverse"):
                    with pytest.raises(UnsupportedGraphError, match="cell state|reverse-direction") as err:
                        eo.load(graph, output=out_name)
                    assert err.value.op == node.op_type
                    refused.append((case.name, out_name))
                    continue
                for dtype, tol in (("float64", 1e-6), ("float32", 1e-5)):
                    model = eo.load(graph, output=out_name, dtype=dtype)
                    got = model.predict(x, lengths=feeds.get("sequence_lens"))
                    want = _to_predict_layout(ref, layout)
                    assert got.shape == want.shape, (case.name, out_name)
                    err = float(np.abs(got - want).max())
                    assert err < tol, (case.name, out_name, dtype, err)
                    worst = max(worst, err)
                checked.append((case.name, out_name))
    assert len(checked) == 22 and len(refused) == 3, (checked, refused)
    assert {("test_lstm_batchwise", "Y"), ("test_gru_batchwise", "Y_h"),
            ("test_gru_bidirectional", "Y"), ("test_lstm_with_peepholes", "Y_h")} <= set(checked)
    assert worst < 1e-5  # the cases are float32 data computed in float32 (max seen ~1e-7)


# -------------------------------------------------------------------------------------------
# round trip through edgernn's exporter
# -------------------------------------------------------------------------------------------
ROUND_TRIP = {
    "lstm_stack": lambda: [LSTM(5, return_sequences=True), Dropout(0.2), LSTM(4), Dense(2, activation="softmax")],
    "gru_reset_before": lambda: [GRU(4, reset_after=False, return_sequences=True), Dense(3, activation="tanh")],
    "rnn_relu_backwards": lambda: [SimpleRNN(4, activation="relu", go_backwards=True), Dense(1)],
    "rnn_backwards_seq": lambda: [SimpleRNN(4, go_backwards=True, return_sequences=True), Dense(1)],
    "lstm_peephole_coupled_clip": lambda: [LSTM(3, peephole=True, coupled_gates=True, clip=2.0,
                                                return_sequences=True), Activation("relu")],
    "bi_concat": lambda: [Bidirectional(LSTM(3, return_sequences=True)), Bidirectional(GRU(2))],
    "bi_sum_ave": lambda: [Bidirectional(GRU(3, return_sequences=True), merge_mode="sum"),
                           Bidirectional(SimpleRNN(2), merge_mode="ave")],
    "bi_mul": lambda: [Bidirectional(LSTM(3, return_sequences=True), merge_mode="mul"), Dense(2, use_bias=False)],
    "activations": lambda: [LSTM(3, activation="softsign", recurrent_activation="hard_sigmoid",
                                 return_sequences=True), Dense(2, activation="elu")],
    "bi_units_1": lambda: [Bidirectional(GRU(1, return_sequences=True)), Bidirectional(LSTM(1, use_bias=False))],
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_round_trip_edgernn_export(name, tmp_path):
    rng = np.random.default_rng(abs(hash(name)) % 1000)
    model = Sequential(ROUND_TRIP[name](), seed=1)
    model.build((None, 3))
    for layer in model.layers:
        for p in layer.params.values():
            p[...] = rng.uniform(-0.6, 0.6, p.shape)
    path = tmp_path / "m.onnx"
    eo.export(model, path)
    back = eo.load(path)
    assert [type(la).__name__ for la in back.layers] == [type(la).__name__ for la in model.layers
                                                         if type(la).__name__ != "Dropout"]
    for B, T in [(1, 1), (4, 7)]:
        x = rng.standard_normal((B, T, 3)).astype(np.float32)
        np.testing.assert_array_equal(back.predict(x), model.predict(x))
    assert back.meta["onnx_import"]["input_layout"] == "batch-first"


def test_round_trip_embedding(tmp_path):
    from edgernn.layers import Embedding

    rng = np.random.default_rng(6)
    model = Sequential([Embedding(12, 4, input_shape=(None,)), GRU(3, return_sequences=True),
                        Dense(2, activation="softmax")], seed=3)
    eo.export(model, tmp_path / "m.onnx")
    back = eo.load(tmp_path / "m.onnx")
    assert [type(la).__name__ for la in back.layers] == ["Embedding", "GRU", "Dense"]
    ids = rng.integers(0, 12, size=(3, 5))
    np.testing.assert_array_equal(back.predict(ids), model.predict(ids))


@pytest.mark.parametrize("mask_value", [0.0, -1.0])
def test_round_trip_masking(mask_value, tmp_path):
    from edgernn.layers import Masking

    rng = np.random.default_rng(7)
    model = Sequential([Masking(mask_value, input_shape=(None, 2)), Bidirectional(GRU(3, return_sequences=True)),
                        LSTM(2), Dense(1)], seed=4)
    eo.export(model, tmp_path / "m.onnx")
    back = eo.load(tmp_path / "m.onnx")
    assert [type(la).__name__ for la in back.layers] == ["Masking", "Bidirectional", "LSTM", "Dense"]
    assert back.layers[0].mask_value == mask_value
    x = rng.standard_normal((4, 6, 2)).astype(np.float32)
    x[1, 3:] = mask_value  # trailing padding, an empty sample, a one-step sample
    x[2, :] = mask_value
    x[3, 1:] = mask_value
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_round_trip_lengths_input(tmp_path):
    rng = np.random.default_rng(4)
    model = Sequential([Bidirectional(GRU(3, return_sequences=True)), LSTM(2), Dense(1)], seed=2)
    model.build((None, 2))
    eo.export(model, tmp_path / "m.onnx", lengths_input=True)
    back = eo.load(tmp_path / "m.onnx")
    assert back.meta["onnx_import"]["lengths_input"] == "lengths"
    x = rng.standard_normal((4, 6, 2)).astype(np.float32)
    L = np.array([6, 0, 1, 4])
    np.testing.assert_array_equal(back.predict(x, lengths=L), model.predict(x, lengths=L))


# -------------------------------------------------------------------------------------------
# PyTorch exports
# -------------------------------------------------------------------------------------------
def _torch_export(torch, module, x, dynamo=False):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            prog = torch.onnx.export(module, (x,), dynamo=True, input_names=["x"])
            return prog.model_proto
        torch.onnx.export(module, (x,), f, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch", 1: "time"}})
    return onnx.load_from_string(f.getvalue())


def _head_module(torch, rnn, H, use):
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = rnn, nn.Linear(H, 3)

        def forward(self, x):
            out, h = self.rnn(x)
            if use == "h_n":
                h = h[0] if isinstance(h, tuple) else h
                z = torch.cat([h[-2], h[-1]], -1) if self.rnn.bidirectional else h[-1]
            elif use == "last":
                z = out[:, -1]
            else:
                z = out
            return torch.softmax(self.fc(torch.relu(z)), -1)

    return Net().eval()


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_torch_onnx_export_legacy(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cls = getattr(torch.nn, kind)
    worst = 0.0
    for bi, bf in [(False, True), (True, False), (True, True)]:
        rnn = cls(3, 4, num_layers=2, bidirectional=bi, batch_first=bf).eval()
        x = torch.randn(2, 5, 3) if bf else torch.randn(5, 2, 3)
        model = eo.load(_torch_export(torch, rnn, x))
        assert model.meta["onnx_import"]["input_layout"] == ("batch-first" if bf else "time-major")
        for B, T in [(1, 1), (3, 8)]:  # other sizes than the export's
            xb = rng.standard_normal((B, T, 3)).astype(np.float32)
            with torch.no_grad():
                xt = torch.tensor(xb if bf else xb.transpose(1, 0, 2))
                ref = rnn(xt)[0].numpy()
            ref = ref if bf else ref.transpose(1, 0, 2)
            worst = max(worst, float(np.abs(model.predict(xb) - ref).max()))
        if bf:
            for use in ("seq", "last", "h_n"):
                net = _head_module(torch, rnn, 4 * (2 if bi else 1), use)
                if use == "last" and bi:
                    with pytest.raises(UnsupportedGraphError, match="last step of a forward"):
                        eo.load(_torch_export(torch, net, x))
                    continue
                model = eo.load(_torch_export(torch, net, x))
                xb = rng.standard_normal((3, 6, 3)).astype(np.float32)
                with torch.no_grad():
                    ref = net(torch.tensor(xb)).numpy()
                worst = max(worst, float(np.abs(model.predict(xb) - ref).max()))
                assert model.layers[-1].activation == "softmax"
    assert worst < 1e-5, worst


def test_torch_onnx_export_legacy_fixed_shapes():
    """Without dynamic_axes the exporter folds shapes into constants (incl. batch 1, length 1)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    nn = torch.nn
    worst = 0.0
    for (B, T), kind, bi, use in [((1, 1), "GRU", True, "seq"), ((4, 4), "LSTM", False, "last"),
                                  ((1, 5), "RNN", True, "h_n"), ((3, 1), "LSTM", True, "seq")]:
        rnn = getattr(nn, kind)(3, 4, num_layers=2, bidirectional=bi, batch_first=True).eval()
        net = _head_module(torch, rnn, 4 * (2 if bi else 1), use)
        x = torch.randn(B, T, 3)
        f = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), f, dynamo=False, input_names=["x"])
        model = eo.load(onnx.load_from_string(f.getvalue()))
        with torch.no_grad():
            ref = net(x).numpy()
        worst = max(worst, float(np.abs(model.predict(x.numpy()) - ref).max()))
    assert worst < 1e-5, worst


def test_torch_onnx_export_dynamo():
    """The dynamo exporter writes native LSTM/GRU nodes but unrolls nn.RNN: both import."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")  # the dynamo exporter needs it
    torch.manual_seed(1)
    nn = torch.nn
    x = torch.randn(2, 4, 3)
    lstm_net = _head_module(torch, nn.LSTM(3, 5, batch_first=True), 5, "seq")
    rnn = nn.RNN(3, 4, num_layers=2, bidirectional=True, batch_first=True).eval()
    for module in (lstm_net, rnn):
        model = eo.load(_torch_export(torch, module, x, dynamo=True))
        xb = np.random.default_rng(1).standard_normal((3, 7, 3)).astype(np.float32)  # other B and T
        with torch.no_grad():
            ref = module(torch.tensor(xb))
        ref = (ref[0] if isinstance(ref, tuple) else ref).numpy()
        assert np.abs(model.predict(xb) - ref).max() < 1e-5


def _unrolled_rnn_graph(rng, T, B, I, H, bidirectional, act="Tanh", bias=True):
    """What torch.onnx.export(dynamo=True) writes for nn.RNN(batch_first=True): per-step chains."""
    mk = helper.make_node
    inits, nodes, n = [], [], [0]

    def c(v):
        n[0] += 1
        inits.append(numpy_helper.from_array(np.asarray(v), f"c{n[0]}"))
        return f"c{n[0]}"

    def t(base):
        n[0] += 1
        return f"{base}{n[0]}"

    weights = []
    nodes.append(mk("Transpose", ["x"], ["xt"], perm=[1, 0, 2]))
    cats = []
    for d in range(2 if bidirectional else 1):
        Wt = rng.uniform(-0.6, 0.6, (I, H)).astype(np.float32)
        Rt = rng.uniform(-0.6, 0.6, (H, H)).astype(np.float32)
        wb = rng.uniform(-0.3, 0.3, H).astype(np.float32) if bias else None
        rb = rng.uniform(-0.3, 0.3, H).astype(np.float32) if bias else None
        weights.append((Wt, Rt, wb, rb))
        P = t("p")
        nodes.append(mk("MatMul", ["xt", c(Wt)], [P]))
        if bias:
            P2 = t("pb")
            nodes.append(mk("Add", [P, c(wb)], [P2]))
            P = P2
        if d == 1:
            P2 = t("flip")
            nodes.append(mk("Slice", [P, c([-1]), c([-(2 ** 62)]), c([0]), c([-1])], [P2]))
            P = P2
        h, hs = None, []
        for k in range(T):
            sl, st = t("sl"), t("step")
            nodes += [mk("Slice", [P, c([k]), c([k + 1]), c([0])], [sl]), mk("Squeeze", [sl, c([0])], [st])]
            if h is None:
                rec = c(np.broadcast_to(rb if bias else np.zeros(H, np.float32), (1, B, H)).copy())
            else:
                rec = t("rec")
                nodes.append(mk("MatMul", [h, c(Rt)], [rec]))
                if bias:
                    r2 = t("recb")
                    nodes.append(mk("Add", [rec, c(rb)], [r2]))
                    rec = r2
            a, h = t("add"), t("h")
            nodes += [mk("Add", [rec, st], [a]), mk(act, [a], [h])]
            hs.append(h)
        cat = t("cat")
        nodes.append(mk("Concat", hs[::-1] if d == 1 else hs, [cat], axis=0))
        cats.append(cat)
    y = cats[0]
    if bidirectional:
        y = t("both")
        nodes.append(mk("Concat", cats, [y], axis=2))
    nodes.append(mk("Transpose", [y], ["y"], perm=[1, 0, 2]))
    D = 2 if bidirectional else 1
    g = helper.make_graph(nodes, "unrolled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, T, I])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, T, D * H])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), weights


def _numpy_rnn(x, Wt, Rt, wb, rb, act, reverse=False):
    f = np.tanh if act == "Tanh" else (lambda z: np.maximum(z, 0))
    B, T, _ = x.shape
    h, out = np.zeros((B, Rt.shape[0])), np.zeros((B, T, Rt.shape[0]))
    for k in (range(T - 1, -1, -1) if reverse else range(T)):
        h = f(x[:, k] @ Wt + h @ Rt + (0 if wb is None else wb + rb))
        out[:, k] = h
    return out


@pytest.mark.parametrize("bidirectional,act,bias", [(False, "Tanh", True), (True, "Tanh", True),
                                                    (False, "Relu", False)])
def test_unrolled_rnn_is_rerolled(bidirectional, act, bias):
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(5)
    T, B, I, H = 4, 2, 3, 5
    proto, weights = _unrolled_rnn_graph(rng, T, B, I, H, bidirectional, act, bias)
    onnx.checker.check_model(proto)
    model = eo.load(proto)
    assert [type(la).__name__ for la in model.layers] == ["Bidirectional" if bidirectional else "SimpleRNN"]
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(model.predict(x) - ref).max() < 1e-5
    x2 = rng.standard_normal((3, 9, I))  # the graph is fixed to B=2, T=4; the model is not
    want = np.concatenate([_numpy_rnn(x2, *w, act, reverse=d == 1) for d, w in enumerate(weights)], axis=-1)
    assert np.abs(eo.load(proto, dtype="float64").predict(x2) - want).max() < 1e-6


# -------------------------------------------------------------------------------------------
# refusals
# -------------------------------------------------------------------------------------------
def _lstm_graph(acts=None, initial_h_input=False, extra=None):
    H, I = 2, 3
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((1, 4 * H, I)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((1, 4 * H, H)).astype(np.float32), "R")]
    attrs = {"hidden_size": H}
    if acts:
        attrs["activations"] = acts
    ins = ["xt", "W", "R", "", "", "h0" if initial_h_input else ""]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2], name="to_time_major"),
             helper.make_node("LSTM", ins, ["Y", "Y_h"], name="lstm1", **attrs),
             helper.make_node("Squeeze", ["Y_h", "ax0"], ["h"], name="sq")]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax0"))
    out = "h"
    if extra is not None:
        nodes.append(helper.make_node(extra, ["h"], ["z"], name="extra_node"))
        out = "z"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", I])]
    if initial_h_input:
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "B", H]))
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_refusals_name_node_and_op():
    model = eo.load(_lstm_graph())  # the plain graph imports
    assert [type(la).__name__ for la in model.layers] == ["LSTM"]
    with pytest.raises(UnsupportedGraphError, match=r"'lstm1' \(LSTM\).*LeakyRelu") as e:
        eo.load(_lstm_graph(acts=["Sigmoid", "LeakyRelu", "LeakyRelu"]))
    assert (e.value.node, e.value.op) == ("lstm1", "LSTM")
    with pytest.raises(UnsupportedGraphError, match="differ"):
        eo.load(_lstm_graph(acts=["Sigmoid", "Tanh", "Relu"]))
    with pytest.raises(UnsupportedGraphError, match="one float input|initial_h"):
        eo.load(_lstm_graph(initial_h_input=True))
    with pytest.raises(UnsupportedGraphError, match="initial_h"):
        eo.load(_lstm_graph(initial_h_input=True), input="x")
    with pytest.raises(UnsupportedGraphError, match=r"'extra_node' \(LogSoftmax\)") as e:
        eo.load(_lstm_graph(extra="LogSoftmax"))
    assert e.value.op == "LogSoftmax"
    assert issubclass(UnsupportedGraphError, ValueError)


def test_refuses_unrolled_recurrence():
    """A recurrence unrolled into per-step MatMul/Tanh (dynamo-style) is named as such."""
    T, I, H = 3, 2, 4
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((I, H)).astype(np.float32), "Wx"),
             numpy_helper.from_array(rng.standard_normal((H, H)).astype(np.float32), "Wh")]
    nodes, h = [], None
    for t in range(T):
        inits.append(numpy_helper.from_array(np.array(t, np.int64), f"i{t}"))
        nodes.append(helper.make_node("Gather", ["x", f"i{t}"], [f"x{t}"], axis=1, name=f"step{t}"))
        nodes.append(helper.make_node("MatMul", [f"x{t}", "Wx"], [f"a{t}"]))
        if h is not None:
            nodes.append(helper.make_node("MatMul", [h, "Wh"], [f"r{t}"]))
            nodes.append(helper.make_node("Add", [f"a{t}", f"r{t}"], [f"s{t}"]))
        nodes.append(helper.make_node("Tanh", [f"s{t}" if h else f"a{t}"], [f"h{t}"]))
        h = f"h{t}"
    g = helper.make_graph(nodes, "unrolled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, T, I])],
                          [helper.make_tensor_value_info(h, TensorProto.FLOAT, [2, H])], inits)
    with pytest.raises(UnsupportedGraphError, match=r"'step0' \(Gather\).*unrolled.*T=3.*dynamo=False"):
        eo.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_load_does_not_modify_the_file(tmp_path):
    model = Sequential([LSTM(3, input_shape=(None, 2)), Dense(1)], seed=0)
    path = tmp_path / "m.onnx"
    eo.export(model, path)
    eo.export(model, tmp_path / "s.onnx", streaming=True)
    with pytest.raises(UnsupportedGraphError, match="streaming"):
        eo.load(tmp_path / "s.onnx")
    before = path.read_bytes()
    back = eo.load(path, dtype="float64")
    assert back.dtype == np.float64 and path.read_bytes() == before
    x = np.random.default_rng(0).standard_normal((2, 5, 2))
    assert np.abs(back.predict(x) - model.predict(x)).max() < 1e-6


def test_tf2onnx_style_glue_against_onnxruntime():
    """Zero states from Shape/ConstantOfShape, Dense on sequences via Reshape (B*T, H) and back."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    H, I, U = 4, 3, 2

    def c(name, v):
        return numpy_helper.from_array(np.asarray(v), name)

    inits = [c("W", rng.standard_normal((1, 4 * H, I)).astype(np.float32)),
             c("R", rng.standard_normal((1, 4 * H, H)).astype(np.float32)),
             c("B", rng.standard_normal((1, 8 * H)).astype(np.float32)),
             c("K", rng.standard_normal((H, U)).astype(np.float32)), c("b", rng.standard_normal(U).astype(np.float32)),
             c("ax1", np.array([1], np.int64)), c("s0", np.array([0], np.int64)), c("s2", np.array([2], np.int64)),
             c("flat", np.array([-1, H], np.int64)), c("Uc", np.array([U], np.int64)),
             c("one", np.array([1], np.int64)), c("Hc", np.array([H], np.int64))]
    mk = helper.make_node
    nodes = [mk("Shape", ["x"], ["shp"]), mk("Slice", ["shp", "s0", "one"], ["bsz"]),
             mk("Concat", ["one", "bsz", "Hc"], ["h0shape"], axis=0), mk("ConstantOfShape", ["h0shape"], ["h0"]),
             mk("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             mk("LSTM", ["xt", "W", "R", "B", "", "h0", "h0"], ["Y", "Yh", "Yc"], hidden_size=H, name="lstm"),
             mk("Squeeze", ["Y", "ax1"], ["Ys"]), mk("Transpose", ["Ys"], ["Yb"], perm=[1, 0, 2]),
             mk("Shape", ["Yb"], ["yshape"]), mk("Slice", ["yshape", "s0", "s2"], ["bt"]),
             mk("Reshape", ["Yb", "flat"], ["Y2"]), mk("MatMul", ["Y2", "K"], ["Z"]), mk("Add", ["Z", "b"], ["Zb"]),
             mk("Concat", ["bt", "Uc"], ["oshape"], axis=0), mk("Reshape", ["Zb", "oshape"], ["out"]),
             mk("Softmax", ["out"], ["prob"], axis=-1)]
    g = helper.make_graph(nodes, "tf2onnx_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", I])],
                          [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["B", "T", U])], inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    model = eo.load(proto)
    assert [type(la).__name__ for la in model.layers] == ["LSTM", "Dense", "Activation"]
    for shape in [(1, 1, I), (3, 5, I)]:
        x = rng.standard_normal(shape).astype(np.float32)
        assert np.abs(model.predict(x) - sess.run(None, {"x": x})[0]).max() < 1e-6
