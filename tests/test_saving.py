"""Save / load: exact round trips for every layer type; bad files are refused with clear errors."""

import json
import os
import zipfile

import numpy as np
import pytest

from edgernn import Sequential, load_model, losses, optimizers
from edgernn.layers import GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding, Masking, SimpleRNN
from edgernn.saving import FORMAT_VERSION


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(w.dtype) * 0.5 for w in model.get_weights()])


MODELS = {
    "keras_script": lambda: Sequential([LSTM(5, input_shape=(None, 1), return_sequences=True), Dropout(0.2),
                                        LSTM(4), Dropout(0.2), Dense(1), Activation("linear")]),
    "gru_variants": lambda: Sequential([Masking(-1.0, input_shape=(None, 3)),
                                        GRU(4, reset_after=False, return_sequences=True, go_backwards=True),
                                        GRU(3, activation="relu", use_bias=False, return_sequences=True),
                                        Dense(2, activation="softmax")]),
    "lstm_options": lambda: Sequential([LSTM(3, peephole=True, coupled_gates=True, clip=2.0, input_shape=(None, 3),
                                             recurrent_activation="hard_sigmoid", return_sequences=True),
                                        SimpleRNN(2, activation="linear")], dtype="float64"),
    "bidirectional": lambda: Sequential([Bidirectional(LSTM(3, return_sequences=True), merge_mode="ave",
                                                       input_shape=(None, 3)),
                                         Bidirectional(GRU(2), merge_mode="concat"), Dense(1)]),
    "embedding": lambda: Sequential([Embedding(12, 3, mask_zero=True, input_shape=(None,)),
                                     Bidirectional(SimpleRNN(2), merge_mode="mul"), Dense(3)]),
    "state": lambda: Sequential([LSTM(3, stateful=True, return_sequences=True, input_shape=(None, 3)),
                                 GRU(2, return_state=True)]),
}


def _input(name, rng):
    if name == "embedding":
        return rng.integers(0, 12, (4, 6))
    if name == "keras_script":
        return rng.standard_normal((4, 6, 1))
    return rng.standard_normal((4, 6, 3))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_is_exact(name, tmp_path):
    rng = np.random.default_rng(1)
    m = MODELS[name]()
    randomize(m)
    m.compile(loss="mse", optimizer=optimizers.Adam(0.003, clipnorm=1.0), metrics=["mae"])
    x = _input(name, rng)
    path = tmp_path / "m.npz"
    assert m.save(path) == str(path)
    m.reset_states()
    want = m.predict(x)
    m2 = load_model(path)
    m2.reset_states()
    got = m2.predict(x)
    for a, b in zip(want if isinstance(want, list) else [want], got if isinstance(got, list) else [got],
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert m2.get_config() == m.get_config()
    assert m2.summary() == m.summary()
    for a, b in zip(m.get_weights(), m2.get_weights(), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert isinstance(m2.optimizer, optimizers.Adam) and m2.optimizer.clipnorm == 1.0
    assert m2.optimizer.learning_rate == 0.003 and isinstance(m2.loss, losses.MeanSquaredError)
    assert not [p for p in os.listdir(tmp_path) if p != "m.npz"]  # no temporary files left


def test_file_layout_and_no_pickle(tmp_path):
    m = MODELS["keras_script"]()
    path = tmp_path / "m.npz"
    m.save(path)
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        assert int(z["__format_version__"]) == FORMAT_VERSION
        header = json.loads(str(z["__config__"][()]))
    assert {"layer0/W", "layer0/R", "layer0/Wb", "layer0/Rb", "layer4/kernel", "layer4/bias"} <= names
    assert header["model"]["config"]["input_shape"] == [None, 1]
    load_model(path, compile=False)  # uncompiled model files load too
    m.compile(loss=losses.BinaryCrossentropy(from_logits=True), optimizer="sgd")
    m.save(path)
    assert load_model(path).loss.from_logits


def _rewrite(path, out, change):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(out, **arrays)


@pytest.fixture
def saved(tmp_path):
    m = Sequential([GRU(3, input_shape=(None, 2)), Dense(1)])
    path = tmp_path / "ok.npz"
    m.save(path)
    return path


def test_truncated_and_corrupt_files(saved, tmp_path):
    data = saved.read_bytes()
    for i, blob in enumerate([data[: len(data) // 2], data[:100], b"", b"not a zip file at all"]):
        bad = tmp_path / f"bad{i}.npz"
        bad.write_bytes(blob)
        with pytest.raises(ValueError, match="not a readable edgernn model file"):
            load_model(bad)
    # flip bytes inside a stored member: CRC check fails
    corrupt = bytearray(data)
    with zipfile.ZipFile(saved) as z:
        info = z.getinfo("layer0/W.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    corrupt[start:start + 8] = b"\xff" * 8
    bad = tmp_path / "crc.npz"
    bad.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="not a readable"):
        load_model(bad)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")


def test_newer_version_refused(saved, tmp_path):
    out = tmp_path / "new.npz"
    _rewrite(saved, out, lambda a: a.update(__format_version__=np.array(FORMAT_VERSION + 1)))
    with pytest.raises(ValueError, match="newer|upgrade edgernn"):
        load_model(out)


def test_mismatched_arrays_refused(saved, tmp_path):
    cases = {
        "missing": (lambda a: a.pop("layer1/bias"), "missing weight arrays"),
        "shape": (lambda a: a.update({"layer0/W": np.zeros((1, 9, 3), np.float32)}), "shape"),
        "dtype": (lambda a: a.update({"layer0/W": a["layer0/W"].astype(np.float64)}), "dtype"),
        "extra": (lambda a: a.update({"layer5/x": np.zeros(2)}), "unexpected arrays"),
        "noconfig": (lambda a: a.pop("__config__"), "__config__"),
        "badjson": (lambda a: a.update(__config__=np.array("{nope")), "JSON"),
    }
    for name, (change, msg) in cases.items():
        out = tmp_path / f"{name}.npz"
        _rewrite(saved, out, change)
        with pytest.raises(ValueError, match=msg):
            load_model(out)

    def bigger(a):
        h = json.loads(str(a["__config__"][()]))
        h["model"]["config"]["layers"][0]["config"]["units"] = 4
        a["__config__"] = np.array(json.dumps(h))

    out = tmp_path / "config.npz"
    _rewrite(saved, out, bigger)
    with pytest.raises(ValueError, match="manifest|shape"):
        load_model(out)


def test_pickled_object_array_refused(saved, tmp_path):
    out = tmp_path / "pickle.npz"
    _rewrite(saved, out, lambda a: a.update({"layer0/W": np.array([{"evil": 1}], dtype=object)}))
    with pytest.raises(ValueError):
        load_model(out)


def test_save_is_atomic_on_failure(saved, tmp_path, monkeypatch):
    before = saved.read_bytes()
    m = Sequential([GRU(3, input_shape=(None, 2)), Dense(1)])

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        m.save(saved)
    assert saved.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ok.npz"]
