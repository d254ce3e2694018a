"""Fuzzing ``load_model`` (issue 13, "tests that stay"): truncations, byte flips, JSON edits and
crafted manifests. Every mutated file either loads (and then predicts) or raises
``ModelFileError``; nothing else, within bounded time and memory.

Hypothesis runs derandomized (fixed seed) with a small budget by default; ``-m slow`` runs a
larger one.
"""

import io
import json
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgernn import Sequential, load_model
from edgernn.layers import GRU, LSTM, Dense, Dropout, Masking
from edgernn.saving import ModelFileError

BASE = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FAST = settings(BASE, max_examples=25)
SLOW = settings(BASE, max_examples=1000)

SECONDS = 5.0  # per load, generous for a loaded 2-core CI machine (a good load takes ~10 ms)
MIB = 64


def _model():
    m = Sequential([Masking(input_shape=(None, 2)), LSTM(4, return_sequences=True), Dropout(0.1),
                    GRU(3), Dense(2, activation="tanh")], seed=0)
    m.compile(loss="mse", optimizer="adam", metrics=["mae"])
    return m


_CACHE = {}


def original(tmp_path_factory):
    if "bytes" not in _CACHE:
        path = tmp_path_factory.mktemp("fuzz") / "orig.npz"
        _model().save(path)
        _CACHE["bytes"] = path.read_bytes()
        with zipfile.ZipFile(path) as z:
            _CACHE["entries"] = {i.filename: z.read(i) for i in z.infolist()}
        _CACHE["header"] = json.loads(str(np.lib.format.read_array(
            io.BytesIO(_CACHE["entries"]["__config__.npy"]))[()]))
        _CACHE["dir"] = path.parent
    return _CACHE


def check(blob):
    """Write ``blob``, load it with bounded time and memory; a loaded model must predict."""
    path = _CACHE["dir"] / "mut.npz"
    path.write_bytes(blob)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        model = load_model(path)
    except ModelFileError as exc:
        assert str(path) in str(exc)
        model = None
    finally:
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert dt < SECONDS, f"load took {dt:.2f} s"
    assert peak < MIB * 2 ** 20, f"load peaked at {peak / 2 ** 20:.1f} MiB"
    if model is not None:
        x = np.random.default_rng(0).standard_normal((2, 3, 2)).astype(np.float32)
        try:
            y = model.predict(x)
        except ValueError:  # e.g. an edited input shape that this x does not fit
            return model
        assert np.all(np.isfinite(y[0] if isinstance(y, list) else y))
    return model


def npy(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def zip_of(ents):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in ents.items():
            z.writestr(k, v)
    return buf.getvalue()


def with_header(header):
    ents = dict(_CACHE["entries"])
    ents["__config__.npy"] = npy(np.array(json.dumps(header)))
    return zip_of(ents)


def paths(obj, prefix=()):
    """Every path to a value inside a JSON document."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, prefix + (i,))
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.sampled_from([0, 1, -1, 2, 4, 65537, 10 ** 9])
    | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.5, 4.7, 1.9, -0.0])
    | st.text(max_size=8) | st.sampled_from(["4", "tanh", "float64", "LSTM", "Dense", "zeros"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


# ---- the fuzzers --------------------------------------------------------------------------------------
def _truncation(tmp_path_factory, data):
    o = original(tmp_path_factory)
    n = data.draw(st.integers(0, len(o["bytes"]) - 1), label="keep bytes")
    assert check(o["bytes"][:n]) is None  # every truncation is refused


def _byte_flips(tmp_path_factory, data):
    o = original(tmp_path_factory)
    blob = bytearray(o["bytes"])
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)), min_size=1,
                               max_size=8), label="flips")
    for pos, x in flips:
        blob[pos] ^= x
    check(bytes(blob))


def _json_edit(tmp_path_factory, data):
    o = original(tmp_path_factory)
    header = json.loads(json.dumps(o["header"]))
    ps = [p for p in paths(header) if p]
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        p = data.draw(st.sampled_from(ps), label="path")
        parent = header
        try:
            for k in p[:-1]:
                parent = parent[k]
            if data.draw(st.booleans(), label="delete") and isinstance(parent, dict):
                parent.pop(p[-1], None)
            else:
                parent[p[-1]] = data.draw(json_values, label="value")
        except (KeyError, IndexError, TypeError):
            continue
    check(with_header(header))


def _crafted_manifest(tmp_path_factory, data):
    o = original(tmp_path_factory)
    header = json.loads(json.dumps(o["header"]))
    names = [m["name"] for m in header["weights"]]
    entry = st.fixed_dictionaries({
        "name": st.sampled_from(names) | st.text(max_size=10),
        "shape": st.lists(st.integers(-2, 10 ** 7) | st.sampled_from([0, 1, 2, 3, 4, 12, 16]), max_size=5),
        "dtype": st.sampled_from(["float32", "float64", "int64", "object", "<f4", "|O"])})
    header["weights"] = data.draw(st.lists(entry, max_size=12), label="manifest")
    ents = dict(o["entries"])
    if data.draw(st.booleans(), label="matching arrays"):  # also write arrays of the declared shapes
        for m in header["weights"]:
            if isinstance(m["name"], str) and all(0 <= d <= 64 for d in m["shape"]) and m["dtype"] in (
                    "float32", "float64"):
                ents[m["name"] + ".npy"] = npy(np.zeros(m["shape"], m["dtype"]))
    ents["__config__.npy"] = npy(np.array(json.dumps(header)))
    check(zip_of(ents))


FUZZERS = [_truncation, _byte_flips, _json_edit, _crafted_manifest]


@pytest.mark.parametrize("fuzzer", FUZZERS, ids=lambda f: f.__name__.strip("_"))
def test_fuzz_model_files(fuzzer, tmp_path_factory):
    FAST(given(data=st.data())(lambda data: fuzzer(tmp_path_factory, data)))()


@pytest.mark.slow
@pytest.mark.parametrize("fuzzer", FUZZERS, ids=lambda f: f.__name__.strip("_"))
def test_fuzz_model_files_long(fuzzer, tmp_path_factory):
    SLOW(given(data=st.data())(lambda data: fuzzer(tmp_path_factory, data)))()


def test_the_original_file_loads(tmp_path_factory):
    o = original(tmp_path_factory)
    m = check(o["bytes"])
    assert m is not None and m.count_params() == _model().count_params()
