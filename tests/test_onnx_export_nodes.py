"""Graph-construction level: one native RNN/GRU/LSTM node written by ``edgernn.onnx.graph``
(time-major ``layout=0`` between Transposes, ``B = concat(Wb, Rb)``, explicit activation
alpha/beta) run in onnxruntime against ``edgernn.functional``; opset discovery; and the
rule that ``import edgernn`` does not import onnx."""

import subprocess
import sys
import zlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto  # noqa: E402

from edgernn import functional as F  # noqa: E402
from edgernn.onnx.graph import MIN_OPSET, GraphBuilder, make_rnn_node, rnn_attributes, supported_opset  # noqa: E402

G = {"rnn": 1, "gru": 3, "lstm": 4}


def run_node(cell, X, W, R, Wb=None, Rb=None, P=None, h0=None, c0=None, lengths=None, opset=None, **opts):
    """Build x (B,T,I) -> Transpose -> node -> Transpose back, run it; batch-first outputs."""
    g = GraphBuilder(opset or supported_opset())
    D, GH, H = R.shape
    x = g.add_input("x", TensorProto.FLOAT, ["batch", "time", X.shape[2]])
    feeds = {"x": X.astype(np.float32)}
    seq = init_h = init_c = None
    if lengths is not None:
        seq = g.op("Cast", [g.add_input("lengths", TensorProto.INT64, ["batch"])], to=TensorProto.INT32)
        feeds["lengths"] = np.asarray(lengths, np.int64)
    if h0 is not None:
        init_h = g.op("Transpose", [g.add_input("h0", TensorProto.FLOAT, ["batch", D, H])], perm=[1, 0, 2])
        feeds["h0"] = h0.astype(np.float32)
    if c0 is not None:
        init_c = g.op("Transpose", [g.add_input("c0", TensorProto.FLOAT, ["batch", D, H])], perm=[1, 0, 2])
        feeds["c0"] = c0.astype(np.float32)
    xt = g.op("Transpose", [x], perm=[1, 0, 2])
    outs = make_rnn_node(g, cell, xt, W, R, Wb, Rb, P, sequence_lens=seq, initial_h=init_h, initial_c=init_c,
                         **opts)
    g.add_output("Y", g.op("Transpose", [outs[0]], perm=[2, 0, 1, 3]), TensorProto.FLOAT, ["b", "t", "d", "h"])
    for k, o in enumerate(outs[1:]):
        g.add_output(f"S{k}", g.op("Transpose", [o], perm=[1, 0, 2]), TensorProto.FLOAT, ["b", "d", "h"])
    model = g.make_model()
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


CASES = [
    # cell, direction, options
    ("rnn", "forward", {}),
    ("rnn", "reverse", {"activations": ["Relu"]}),
    ("rnn", "bidirectional", {"activations": ["LeakyRelu", "ScaledTanh"], "activation_alpha": [0.2, 0.7],
                              "activation_beta": [1.3]}),
    ("rnn", "forward", {"clip": 0.6, "activations": ["Affine"], "activation_alpha": [0.9],
                        "activation_beta": [0.1]}),
    ("gru", "forward", {"linear_before_reset": True}),
    ("gru", "reverse", {"linear_before_reset": False}),
    ("gru", "bidirectional", {"activations": ["HardSigmoid", "Softsign", "Sigmoid", "Elu"],
                              "activation_alpha": [0.3, 0.8], "activation_beta": [0.45]}),
    ("gru", "forward", {"clip": 0.5, "linear_before_reset": False}),
    ("lstm", "forward", {}),
    ("lstm", "reverse", {"input_forget": True}),
    ("lstm", "bidirectional", {"clip": 0.8}),
    ("lstm", "forward", {"activations": ["HardSigmoid", "Softsign", "ThresholdedRelu"],
                         "activation_alpha": [0.25, 0.1], "activation_beta": [0.4]}),
    ("lstm", "bidirectional", {"input_forget": True,
                               "activations": ["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Softplus", "Tanh"]}),
]


GRID = [(c, d, o, b, p) for (c, d, o) in CASES for b in ("both", "none", "wb")
        for p in ((False, True) if c == "lstm" else (False,))]


@pytest.mark.parametrize("cell,direction,opts,bias,peep", GRID)
def test_node_matches_functional(cell, direction, opts, bias, peep):
    rng = np.random.default_rng(zlib.crc32(repr((cell, direction, bias, peep, opts)).encode()))
    B, T, I, H = 4, 6, 3, 5
    D = 2 if direction == "bidirectional" else 1
    X = rng.standard_normal((B, T, I)).astype(np.float32)
    W = (0.5 * rng.standard_normal((D, G[cell] * H, I))).astype(np.float32)
    R = (0.5 * rng.standard_normal((D, G[cell] * H, H))).astype(np.float32)
    Wb = Rb = None
    if bias in ("both", "wb"):
        Wb = (0.3 * rng.standard_normal((D, G[cell] * H))).astype(np.float32)
    if bias == "both":
        Rb = (0.3 * rng.standard_normal((D, G[cell] * H))).astype(np.float32)
    P = (0.5 * rng.standard_normal((D, 3 * H))).astype(np.float32) if peep else None
    h0 = rng.standard_normal((B, D, H)).astype(np.float32)
    c0 = rng.standard_normal((B, D, H)).astype(np.float32)
    L = np.array([6, 1, 3, 6])
    kw = dict(direction=direction, **opts)
    if cell == "lstm":
        ref = F.lstm(X, W, R, Wb, Rb, h0, c0, P, lengths=L, **kw)
        got = run_node(cell, X, W, R, Wb, Rb, P, h0, c0, lengths=L, **kw)
    else:
        fn = getattr(F, cell)
        ref = fn(X, W, R, Wb, Rb, h0, lengths=L, **kw)
        got = run_node(cell, X, W, R, Wb, Rb, None, h0, lengths=L, **kw)
    for r, o in zip(ref, got, strict=True):
        np.testing.assert_allclose(o, r, atol=2e-6, rtol=1e-5)


def test_attributes_write_every_alpha_beta():
    # HardSigmoid takes alpha and beta, Tanh none, LeakyRelu alpha: defaults filled in explicitly
    a = rnn_attributes("gru", 4, "bidirectional", ["HardSigmoid", "Tanh", "LeakyRelu", "Tanh"], [0.3])
    assert a["activations"] == ["HardSigmoid", "Tanh", "LeakyRelu", "Tanh"]
    assert a["activation_alpha"] == [0.3, 0.01]
    assert a["activation_beta"] == [0.5]
    assert a["hidden_size"] == 4 and a["layout"] == 0 and a["linear_before_reset"] == 1
    assert "activation_alpha" not in rnn_attributes("lstm", 2)


def test_node_rejects_bad_arguments():
    g = GraphBuilder(supported_opset())
    with pytest.raises(ValueError, match="cell"):
        make_rnn_node(g, "conv", "x", np.zeros((1, 1, 1)), np.zeros((1, 1, 1)))
    with pytest.raises(ValueError, match="directions"):
        make_rnn_node(g, "rnn", "x", np.zeros((1, 2, 1)), np.zeros((1, 2, 2)), direction="bidirectional")
    with pytest.raises(ValueError, match="activation"):
        rnn_attributes("rnn", 2, activations=["Swish"])


def test_supported_opset_is_cached_and_runs():
    o = supported_opset()
    assert o >= MIN_OPSET and o <= onnx.defs.onnx_opset_version()
    assert supported_opset() == o


def test_import_edgernn_does_not_import_onnx():
    code = ("import sys, edgernn, edgernn.layers, edgernn.models\n"
            "bad = [m for m in ('onnx', 'onnxruntime') if m in sys.modules]\n"
            "assert not bad, bad\n"
            "import edgernn.onnx\n"
            "assert 'onnx' in sys.modules and edgernn.onnx.onnx is sys.modules['onnx']\n")
    subprocess.run([sys.executable, "-c", code], check=True)
