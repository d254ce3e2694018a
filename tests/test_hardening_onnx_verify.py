"""Issue 13 item 10: ``edgernn.onnx.verify`` compares the graph's weights with the model's bit
for bit, runs more inputs, and reports every tampered file with one error type."""

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgernn.onnx as eo
from edgernn import Sequential
from edgernn.layers import GRU, LSTM, Dense

BASE = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def model():
    return Sequential([LSTM(6, input_shape=(None, 3), return_sequences=True), GRU(4), Dense(2)], seed=0)


_FILES = {}


def exported(tmp_path_factory, streaming):
    if streaming not in _FILES:
        path = tmp_path_factory.mktemp("verify") / ("s.onnx" if streaming else "f.onnx")
        eo.export(model(), path, streaming=streaming)
        _FILES[streaming] = path
    return _FILES[streaming]


@pytest.mark.parametrize("streaming", [False, True])
def test_clean_export_verifies_with_weights_and_more_cases(tmp_path_factory, streaming):
    report = eo.verify(model(), exported(tmp_path_factory, streaming))
    assert report.passed and report.weights_compared == 3 + 3 + 2
    assert {c.batch for c in report.cases} >= {1, 3, 5} and {c.length for c in report.cases} >= {1, 4, 11, 23}


def test_tiny_weight_change_is_caught(tmp_path):
    """A change far below atol in the outputs: before, verify passed it."""
    m = model()
    path = tmp_path / "f.onnx"
    eo.export(m, path)
    proto = onnx.load(path)
    t = next(i for i in proto.graph.initializer if i.name == "gru_R")
    a = onnx.numpy_helper.to_array(t).copy()
    a.flat[0] = np.nextafter(a.flat[0], np.float32(np.inf))
    t.CopyFrom(onnx.numpy_helper.from_array(a, "gru_R"))
    onnx.save(proto, path)
    with pytest.raises(eo.VerificationError, match="'gru_R' differs from the model's gru/R \\(1 of") as err:
        eo.verify(m, path)
    assert not err.value.report.passed and err.value.report.max_abs <= 1e-5  # the outputs alone passed


def test_other_model_is_caught(tmp_path):
    path = tmp_path / "f.onnx"
    eo.export(model(), path)
    other = Sequential([LSTM(6, input_shape=(None, 3), return_sequences=True), GRU(4), Dense(2)], seed=1)
    with pytest.raises(eo.VerificationError, match="differs from the model's"):
        eo.verify(other, path)


@pytest.mark.parametrize("blob,match", [(b"", "checker|not a readable"), (b"garbage" * 10, "not a readable|checker"),
                                        (None, "metadata")])
def test_unreadable_or_foreign_files(tmp_path, blob, match):
    path = tmp_path / "x.onnx"
    if blob is None:  # a valid ONNX file that edgernn did not write
        from onnx import TensorProto, helper
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        onnx.save(helper.make_model(g), path)
    else:
        path.write_bytes(blob)
    with pytest.raises(eo.VerificationError, match=match):
        eo.verify(model(), path)
    with pytest.raises(FileNotFoundError):
        eo.verify(model(), tmp_path / "missing.onnx")


def _flip(tmp_path_factory, streaming, data):
    src = exported(tmp_path_factory, streaming)
    blob = bytearray(src.read_bytes())
    for _ in range(data.draw(st.integers(1, 3), label="flips")):
        pos = data.draw(st.integers(0, len(blob) - 1), label="pos")
        blob[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    path = src.parent / "flipped.onnx"
    path.write_bytes(bytes(blob))
    m = model()
    try:
        eo.verify(m, path)
    except eo.VerificationError:
        return
    # passed: then the file must compute what the model computes, on inputs verify never saw
    eo.verify(m, path, cases=[(4, 9), (2, 31)], seed=123)


@pytest.mark.parametrize("streaming", [False, True])
def test_fuzz_bit_flips(tmp_path_factory, streaming):
    settings(BASE, max_examples=20)(given(data=st.data())(lambda data: _flip(tmp_path_factory, streaming, data)))()


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True])
def test_fuzz_bit_flips_long(tmp_path_factory, streaming):
    settings(BASE, max_examples=300)(given(data=st.data())(lambda data: _flip(tmp_path_factory, streaming, data)))()
