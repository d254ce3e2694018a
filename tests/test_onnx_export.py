"""Whole-model ONNX export checked in onnxruntime against ``model.predict``.

The grid samples cell type x direction x layers x return_sequences x lengths x variant
(peephole / coupled gates / non-default activations / clip / reset_before) x bias, with fixed
seeds; every sampled model is exported and run at batch sizes 1 and 7 and lengths 1 and 37.
Weights (biases, the zero ``Rb`` buffers and peepholes included) are random, so every input
of every node matters.
"""

import itertools
import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import edgernn.onnx as eo  # noqa: E402
from edgernn import Sequential, load_model  # noqa: E402
from edgernn.layers import (  # noqa: E402
    GRU,
    LSTM,
    Activation,
    Bidirectional,
    Dense,
    Dropout,
    Embedding,
    Masking,
    SimpleRNN,
)

CLS = {"rnn": SimpleRNN, "gru": GRU, "lstm": LSTM}
CASES = [(1, 1), (1, 37), (7, 1), (7, 37)]
UNBOUNDED = {"linear", "elu", "acts"}


def randomize(model, seed, scale=0.5):
    """Random weights everywhere (uniform in [-scale, scale])."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-scale, scale, w.shape) for w in model.get_weights()])
    return model


def recurrent(cell, direction, variant, bias, **kw):
    kw = dict(kw, use_bias=bias)
    if variant == "peephole":
        kw["peephole"] = True
    elif variant == "coupled":
        kw["coupled_gates"] = True
    elif variant == "peephole+coupled":
        kw.update(peephole=True, coupled_gates=True)
    elif variant == "acts":  # non-default activations with alpha/beta (hard_sigmoid, linear)
        if cell == "rnn":
            kw["activation"] = "relu"
        else:
            kw.update(activation="softsign", recurrent_activation="hard_sigmoid")
    elif variant == "linear":
        kw["activation"] = "linear"
    elif variant == "elu":
        kw["activation"] = "elu"
    elif variant == "clip":
        kw["clip"] = 0.7
    elif variant == "reset_before":
        kw["reset_after"] = False
    if direction == "backwards":
        kw["go_backwards"] = True
    layer = CLS[cell](**kw)
    if direction.startswith("bi_"):
        layer = Bidirectional(layer, merge_mode=direction[3:])
    return layer


def build(cell, direction, n_layers, return_sequences, lengths, variant, bias, seed, F=3):
    layers = [Masking(0.0)] if lengths == "masking" else []
    for i in range(n_layers):
        last = i == n_layers - 1
        layers.append(recurrent(cell, direction, variant, bias, units=4 + i,
                                return_sequences=return_sequences if last else True))
    layers.append(Dense(2))
    model = Sequential(layers, seed=seed)
    model.build((None, F))
    # unbounded activations over 37 steps: small weights, or float32 rounding dominates
    return randomize(model, seed, 0.25 if variant in UNBOUNDED else 0.5)


VARIANTS = {"rnn": ["default", "acts", "clip", "linear"],
            "gru": ["default", "acts", "clip", "reset_before", "elu"],
            "lstm": ["default", "peephole", "coupled", "peephole+coupled", "acts", "clip", "linear"]}
DIRECTIONS = ["forward", "backwards", "bi_concat", "bi_sum", "bi_mul", "bi_ave"]
FULL = [(c, d, n, rs, ln, v, b) for c in CLS for d in DIRECTIONS for n in (1, 2) for rs in (True, False)
        for ln in ("none", "masking", "input") for v in VARIANTS[c] for b in (True, False)]
_rng = np.random.default_rng(2024)
GRID = [FULL[i] for i in sorted(_rng.choice(len(FULL), size=216, replace=False))]


def test_grid_covers_every_value():
    for k, values in enumerate([CLS, DIRECTIONS, (1, 2), (True, False), ("none", "masking", "input"),
                                set(itertools.chain(*VARIANTS.values())), (True, False)]):
        assert {g[k] for g in GRID} == set(values), k


@pytest.mark.parametrize("cell,direction,n_layers,rs,lengths,variant,bias", GRID,
                         ids=["-".join(map(str, g)) for g in GRID])
def test_full_graph_grid(tmp_path, cell, direction, n_layers, rs, lengths, variant, bias):
    seed = GRID.index((cell, direction, n_layers, rs, lengths, variant, bias))
    model = build(cell, direction, n_layers, rs, lengths, variant, bias, seed)
    path = eo.export(model, tmp_path / "m.onnx", lengths_input=lengths == "input")
    report = eo.verify(model, path, cases=CASES, seed=seed)
    assert report.passed and report.max_abs <= 1e-5
    assert {(c.batch, c.length) for c in report.cases} >= set(CASES)
    if lengths != "none":
        assert any("lengths" in c.what for c in report.cases)


STREAM_GRID = [
    ("lstm", 2, False, "default", True, "none"),
    ("lstm", 2, True, "peephole", False, "masking"),
    ("lstm", 1, True, "coupled", True, "none"),
    ("lstm", 1, False, "acts", True, "masking"),
    ("gru", 2, True, "default", True, "none"),
    ("gru", 1, False, "reset_before", False, "none"),
    ("gru", 2, False, "clip", True, "masking"),
    ("rnn", 2, True, "default", True, "masking"),
    ("rnn", 1, False, "acts", False, "none"),
]


@pytest.mark.parametrize("cell,n_layers,rs,variant,bias,lengths", STREAM_GRID)
def test_streaming_grid(tmp_path, cell, n_layers, rs, variant, bias, lengths):
    seed = 100 + STREAM_GRID.index((cell, n_layers, rs, variant, bias, lengths))
    model = build(cell, "forward", n_layers, rs, lengths, variant, bias, seed)
    path = eo.export(model, tmp_path / "s.onnx", streaming=True)
    report = eo.verify(model, path, cases=CASES, seed=seed)
    assert report.passed


def step_session(sess, x):
    """Step a streaming session over x (B, T, F) from zero states; returns y per step and states."""
    B, T = x.shape[:2]
    states = {i.name: np.zeros((B, i.shape[-1]), np.float32) for i in sess.get_inputs() if i.name != "x"}
    ys = []
    res = {}
    for t in range(T):
        res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x[:, t], **states}),
                       strict=True))
        states = {k: res[k + "_out"] for k in states}
        ys.append(res["y"])
    return np.stack(ys, axis=1), res


def test_streaming_names_shapes_and_metadata(tmp_path):
    model = randomize(Sequential([LSTM(5, return_sequences=True, input_shape=(None, 3)), Dropout(0.5),
                                  GRU(4, return_sequences=True), SimpleRNN(3), Dense(2)], seed=1), 1)
    path = eo.export(model, tmp_path / "s.onnx", streaming=True)
    m = onnx.load(path)
    ins = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    outs = [o.name for o in m.graph.output]
    assert ins == {"x": ["batch", 3], "state_0_h": ["batch", 5], "state_0_c": ["batch", 5],
                   "state_1_h": ["batch", 4], "state_2_h": ["batch", 3]}
    assert outs[0] == "y" and set(outs[1:]) == {"state_0_h_out", "state_0_c_out", "state_1_h_out",
                                                "state_2_h_out"}
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["graph"] == "streaming" and meta["input_features"] == "3"
    assert meta["edgernn_version"]
    states = json.loads(meta["states"])
    assert [s["input"] for s in states] == ["state_0_h", "state_0_c", "state_1_h", "state_2_h"]
    assert states[0] == {"input": "state_0_h", "output": "state_0_h_out", "shape": ["batch", 5],
                         "layer": model.layers[0].name, "kind": "h", "initial": "zeros"}
    assert [layer["class"] for layer in json.loads(meta["layers"])] == ["LSTM", "Dropout", "GRU", "SimpleRNN",
                                                                        "Dense"]
    assert not any(n.op_type == "Dropout" for n in m.graph.node)
    # stepping in onnxruntime == predict on every prefix (independent of verify)
    x = np.random.default_rng(0).standard_normal((3, 9, 3)).astype(np.float32)
    ys, _ = step_session(ort.InferenceSession(path), x)
    ref = np.stack([model.predict(x[:, : t + 1]) for t in range(9)], axis=1)
    np.testing.assert_allclose(ys, ref, atol=1e-5)


def test_streaming_padding_like_edgernn_stream(tmp_path):
    # Masking after a ReLU: interior all-zero steps are padding (skipped, state held), as in
    # edgernn's own streaming engine (predict only skips trailing padding).
    model = randomize(Sequential([Dense(3, input_shape=(None, 3)), Activation("relu"), Masking(0.0),
                                  LSTM(4, return_sequences=True), Dense(2)], seed=2), 2)
    path = eo.export(model, tmp_path / "s.onnx", streaming=True)
    x = np.random.default_rng(1).standard_normal((4, 12, 3)).astype(np.float32)
    ys, _ = step_session(ort.InferenceSession(path), x)
    st = model.stream(batch_size=4)
    ref = np.stack([np.array(st.step(x[:, t])).reshape(4, -1) for t in range(12)], axis=1)
    np.testing.assert_allclose(ys, ref, atol=1e-5)


def test_reload_from_disk(tmp_path):
    model = randomize(Sequential([Masking(0.0, input_shape=(None, 2)),
                                  Bidirectional(LSTM(4, return_sequences=True, peephole=True), merge_mode="ave"),
                                  GRU(3, go_backwards=True), Dense(2, activation="softmax")], seed=3), 3)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    path = eo.export(loaded, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == sorted(["m.npz", "m.onnx"]) or set(os.listdir(tmp_path)) == {"m.npz", "m.onnx"}
    sess = ort.InferenceSession(str(path))
    x = np.random.default_rng(5).standard_normal((6, 13, 2)).astype(np.float32)
    x[2, 5:] = 0.0
    x[3, :] = 0.0
    x[4, 1:] = 0.0
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], model.predict(x), atol=1e-5)
    assert eo.verify(model, path).passed


def test_each_opset(tmp_path):
    best = eo.supported_opset()
    assert best >= 14
    full = randomize(Sequential([Masking(0.0, input_shape=(None, 3)),
                                 Bidirectional(GRU(3, return_sequences=True), merge_mode="concat"),
                                 LSTM(3, go_backwards=True, return_sequences=True, peephole=True),
                                 Dense(2, activation="hard_sigmoid")], seed=4), 4)
    stream = randomize(Sequential([Masking(0.0, input_shape=(None, 3)), LSTM(3, return_sequences=True),
                                   SimpleRNN(2), Dense(1)], seed=5), 5)
    for opset in range(14, best + 1):
        for model, streaming in ((full, False), (stream, True)):
            path = eo.export(model, tmp_path / f"m{opset}{streaming}.onnx", streaming=streaming, opset=opset)
            m = onnx.load(path)
            assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [opset]
            assert eo.verify(model, path, cases=[(1, 1), (3, 6)]).passed


def test_opset_errors(tmp_path):
    model = Sequential([LSTM(2, input_shape=(None, 1))])
    with pytest.raises(ValueError, match="opset 13"):
        eo.export(model, tmp_path / "m.onnx", opset=13)
    with pytest.raises(ValueError, match="newer than"):
        eo.export(model, tmp_path / "m.onnx", opset=eo.supported_opset() + 1)
    with pytest.raises(TypeError):
        eo.export(model, tmp_path / "m.onnx", opset="14")
    assert not os.listdir(tmp_path)


def test_unsupported_raises_naming_layer_and_option(tmp_path):
    bi = Sequential([Bidirectional(LSTM(2), input_shape=(None, 1), name="bi")])
    with pytest.raises(eo.UnsupportedError, match=r"'bi'.*Bidirectional in a streaming graph"):
        eo.export(bi, tmp_path / "a.onnx", streaming=True)
    back = Sequential([GRU(2, go_backwards=True, input_shape=(None, 1), name="gb")])
    with pytest.raises(eo.UnsupportedError, match=r"'gb' \(GRU\).*go_backwards=True"):
        eo.export(back, tmp_path / "b.onnx", streaming=True)

    class MyLSTM(LSTM):  # a subclass may compute anything: never exported as its parent
        pass

    sub = Sequential([MyLSTM(2, input_shape=(None, 1), name="mine")])
    with pytest.raises(eo.UnsupportedError, match=r"'mine' \(MyLSTM\).*no ONNX converter"):
        eo.export(sub, tmp_path / "c.onnx")
    with pytest.raises(ValueError, match="lengths_input"):
        eo.export(Sequential([LSTM(2, input_shape=(None, 1))]), tmp_path / "d.onnx", streaming=True,
                  lengths_input=True)
    with pytest.raises(ValueError, match="not built"):
        eo.export(Sequential([LSTM(2)]), tmp_path / "e.onnx")
    assert not os.listdir(tmp_path)  # nothing written, no temporary files left


def test_register_custom_converter(tmp_path):
    class Double(Activation):
        def __init__(self, **kw):
            super().__init__("linear", **kw)

        def forward(self, x, lengths=None, training=False, need_grad=True):
            return 2 * x

    @eo.register(Double)
    def convert_double(ctx, layer, x):
        return eo.Value(ctx.g.op("Mul", [x.name, ctx.g.const(2.0, np.float32)]), x.time_axis)

    model = randomize(Sequential([LSTM(3, input_shape=(None, 2), return_sequences=True), Double()], seed=6), 6)
    assert eo.verify(model, eo.export(model, tmp_path / "m.onnx")).passed


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    bi = Sequential([Bidirectional(LSTM(2), input_shape=(None, 1))])
    with pytest.raises(eo.UnsupportedError):
        eo.export(bi, target, streaming=True)
    model = Sequential([LSTM(2, input_shape=(None, 1))])
    good = eo.export(model, target)
    assert onnx.load(good).graph.node
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_verify_detects_a_different_model(tmp_path):
    model = randomize(Sequential([GRU(3, input_shape=(None, 2)), Dense(1)], seed=7), 7)
    path = eo.export(model, tmp_path / "m.onnx")
    model.layers[0].params["R"][0, 0, 0] += 0.1
    with pytest.raises(eo.VerificationError, match="differs") as err:
        eo.verify(model, path)
    assert not err.value.report.passed and err.value.report.max_abs > 1e-5
    # export(verify=True) refuses to write a graph that does not verify
    with pytest.raises(eo.VerificationError):
        eo.export(model, tmp_path / "n.onnx", verify=True, atol=-1.0)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_embedding_return_state_stateful_and_others(tmp_path):
    rng = 10
    models = {
        "embedding_mask_zero": Sequential([Embedding(12, 4, mask_zero=True, input_shape=(None,)),
                                           GRU(5, return_sequences=True), Dense(3, activation="softmax")]),
        "embedding": Sequential([Embedding(12, 4, input_shape=(None,)), LSTM(3), Dense(1, activation="sigmoid")]),
        "return_state_lstm": Sequential([Masking(0.0, input_shape=(None, 3)), LSTM(4, return_sequences=True),
                                         LSTM(3, return_state=True)]),
        "return_state_bi": Sequential([Bidirectional(GRU(3, return_sequences=True, return_state=True),
                                                     input_shape=(None, 2), merge_mode="mul")]),
        "stateful": Sequential([LSTM(4, stateful=True, return_sequences=True, input_shape=(None, 2)),
                                SimpleRNN(3, stateful=True), Dense(2)]),
        "stateful_bi": Sequential([Masking(0.0, input_shape=(None, 2)),
                                   Bidirectional(LSTM(3, stateful=True, return_sequences=True), merge_mode="sum"),
                                   Dense(1)]),
        "dense_only": Sequential([Dense(4, input_shape=(3,), activation="tanh"), Activation("softmax")]),
        "fixed_length": Sequential([LSTM(3, input_shape=(8, 2)), Dense(1)]),
        "activations": Sequential([Dense(4, input_shape=(None, 2), activation="elu"), Activation("softsign"),
                                   GRU(3, return_sequences=True), Activation("softplus"),
                                   Activation("hard_sigmoid"), Dense(2, use_bias=False, activation="relu")]),
    }
    for name, model in models.items():
        randomize(model, rng)
        rng += 1
        for streaming in (False, True):
            if streaming and name in ("return_state_bi", "stateful_bi"):
                continue
            path = eo.export(model, tmp_path / f"{name}{streaming}.onnx", streaming=streaming)
            report = eo.verify(model, path)
            assert report.passed, (name, streaming)
    # return_state outputs, in Keras order
    outs = [o.name for o in onnx.load(tmp_path / "return_state_biFalse.onnx").graph.output]
    assert outs == ["y", "state_0_h_out", "state_0_h_backward_out"]
    outs = [o.name for o in onnx.load(tmp_path / "return_state_lstmFalse.onnx").graph.output]
    assert outs == ["y", "state_1_h_out", "state_1_c_out"]
    ins = [i.name for i in onnx.load(tmp_path / "stateful_biFalse.onnx").graph.input]
    assert ins == ["x", "state_0_h", "state_0_h_backward", "state_0_c", "state_0_c_backward"]
    meta = {p.key: p.value for p in onnx.load(tmp_path / "embeddingTrue.onnx").metadata_props}
    assert meta["input_dtype"] == "int64" and meta["vocabulary_size"] == "12"
    # stateful: the full graph carries the state like predict does across calls
    model = models["stateful"]
    sess = ort.InferenceSession(str(tmp_path / "statefulFalse.onnx"))
    model.reset_states()
    x = np.random.default_rng(0).standard_normal((2, 10, 2)).astype(np.float32)
    st = {i.name: np.zeros((2, i.shape[-1]), np.float32) for i in sess.get_inputs() if i.name != "x"}
    for chunk in (x[:, :4], x[:, 4:]):
        res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": chunk, **st}), strict=True))
        st = {k: res[k + "_out"] for k in st}
        np.testing.assert_allclose(res["y"], model.predict(chunk), atol=1e-5)


def test_lengths_input_matches_predict_with_lengths(tmp_path):
    model = randomize(Sequential([LSTM(4, return_sequences=True, input_shape=(None, 2)),
                                  GRU(3, go_backwards=True, return_sequences=True), Dense(1)], seed=8), 8)
    path = eo.export(model, tmp_path / "m.onnx", lengths_input=True)
    sess = ort.InferenceSession(str(path))
    assert [i.name for i in sess.get_inputs()] == ["x", "lengths"]
    x = np.random.default_rng(2).standard_normal((5, 9, 2)).astype(np.float32)
    L = np.array([9, 0, 1, 4, 8])
    np.testing.assert_allclose(sess.run(None, {"x": x, "lengths": L})[0], model.predict(x, lengths=L), atol=1e-5)
    # a list of sequences of different lengths, as predict takes it
    seqs = [x[i, : L[i]] for i in range(5) if L[i]]
    ref = model.predict(seqs)
    got = sess.run(None, {"x": x[L > 0], "lengths": L[L > 0]})[0]
    for r, g, n in zip(ref, got, L[L > 0], strict=True):
        np.testing.assert_allclose(g[:n], r, atol=1e-5)


def test_float64_model_exports_float32(tmp_path):
    model = randomize(Sequential([LSTM(3, input_shape=(None, 2)), Dense(1)], seed=9, dtype="float64"), 9)
    path = eo.export(model, tmp_path / "m.onnx")
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in onnx.load(path).graph.initializer
               if t.name.startswith(("lstm", "dense")))
    assert eo.verify(model, path).passed


def test_report_contents(tmp_path):
    model = randomize(Sequential([SimpleRNN(3, input_shape=(None, 2), return_sequences=True)], seed=11), 11)
    full = eo.export(model, tmp_path / "f.onnx")
    stream = eo.export(model, tmp_path / "s.onnx", streaming=True)
    report = eo.verify(model, [full, stream])
    d = report.as_dict()
    assert d["passed"] and d["max_abs"] <= 1e-5 and len(d["opsets"]) == 2
    assert {c["batch"] for c in d["cases"]} >= {1} and {c["length"] for c in d["cases"]} >= {1}
    assert {c["graph"] for c in d["cases"]} == {"f.onnx", "s.onnx"}
    assert str(report).startswith("OK: ")
    assert "max abs" in report.table()
