"""Issue 13 items 6-8: hostile model files are refused early with one exception type; saves are
atomic, clean up after killed saves, follow symlinks, keep modes and never touch the umask."""

import io
import json
import os
import stat
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from edgernn import Sequential, initializers, load_model
from edgernn.layers import GRU, LSTM, Bidirectional, Dense, Embedding
from edgernn.saving import LIMITS, ModelFileError


@pytest.fixture
def saved(tmp_path):
    m = Sequential([LSTM(4, input_shape=(None, 2), return_sequences=True), GRU(3), Dense(1)], seed=0)
    m.compile(loss="mse", optimizer="adam")
    path = tmp_path / "ok.npz"
    m.save(path)
    return path


def entries(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def header_of(path):
    data = entries(path)["__config__.npy"]
    return json.loads(str(np.lib.format.read_array(io.BytesIO(data))[()]))


def npy(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def rewrite(path, out, header=None, replace=None, extra=(), compress=zipfile.ZIP_STORED):
    ents = entries(path)
    if header is not None:
        ents["__config__.npy"] = npy(np.array(json.dumps(header)))
    for k, v in (replace or {}).items():
        ents[k] = v
    with zipfile.ZipFile(out, "w", compress) as z:
        for k, v in ents.items():
            z.writestr(k, v)
        for k, v in extra:
            z.writestr(k, v)
    return out


def load_bounded(path, seconds=2.0, mib=64):
    """load_model(path) -> result or exception, asserting bounded time and (Python-tracked) memory."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        return load_model(path)
    except Exception as exc:  # noqa: BLE001
        return exc
    finally:
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert dt < seconds, f"load took {dt:.1f} s"
        assert peak < mib * 2 ** 20, f"load peaked at {peak / 2 ** 20:.0f} MiB"


def refused(path, match):
    got = load_bounded(path)
    assert isinstance(got, ModelFileError), repr(got)
    assert str(path) in str(got)
    assert match in str(got), str(got)


# ---- 13.6: validate before allocating ---------------------------------------------------------------
def edit_layer(h, i, **kw):
    h["model"]["config"]["layers"][i]["config"].update(kw)
    return h


def test_huge_units_refused_fast_without_allocating(saved, tmp_path):
    h = edit_layer(header_of(saved), 0, units=6000)
    refused(rewrite(saved, tmp_path / "a.npz", h), "manifest does not match")
    h = edit_layer(header_of(saved), 0, units=20000)
    for m in h["weights"]:  # a consistent manifest: the arrays in the file are still small
        if m["name"].startswith("layer0/"):
            m["shape"] = [d if d not in (16,) else 80000 for d in m["shape"]]
    refused(rewrite(saved, tmp_path / "b.npz", h), "")
    h = edit_layer(header_of(saved), 0, units=LIMITS["units"] + 1)
    refused(rewrite(saved, tmp_path / "c.npz", h), "out of range")


def test_manifest_claiming_huge_arrays_refused(saved, tmp_path):
    h = header_of(saved)
    h["weights"][0]["shape"] = [1, 10 ** 6, 10 ** 6]
    refused(rewrite(saved, tmp_path / "a.npz", h), "")


def test_zip_bomb_entry_refused(saved, tmp_path):
    bomb = npy(np.zeros((1, 2 * 2 ** 20), np.float32))  # 8 MiB of zeros, deflates to a few KiB
    path = rewrite(saved, tmp_path / "bomb.npz", replace={"layer0/W.npy": bomb}, compress=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    refused(path, "zip bomb")


def test_many_layers_refused_fast(saved, tmp_path):
    h = header_of(saved)
    layers = h["model"]["config"]["layers"]
    h["model"]["config"]["layers"] = [dict(layers[2], config=dict(layers[2]["config"], name=f"d{i}", units=1))
                                      for i in range(16000)]
    refused(rewrite(saved, tmp_path / "many.npz", h), "more than the limit")


def test_fifo_and_directory_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    result = []
    t = threading.Thread(target=lambda: result.append(load_bounded(fifo)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "load_model blocked on a FIFO"
    assert isinstance(result[0], ModelFileError) and "FIFO" in str(result[0])
    got = load_bounded(tmp_path)
    assert isinstance(got, ModelFileError) and "directory" in str(got)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")


def test_load_does_not_draw_random_weights(saved, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("random initialisation during load")

    for name in list(initializers._REGISTRY):
        monkeypatch.setitem(initializers._REGISTRY, name, boom)
    m = load_model(saved)
    assert m.built and m.count_params() > 0


def test_big_model_loads_fast(tmp_path):
    """Orthogonal init of a (256, 1024) recurrent kernel is not done on load."""
    m = Sequential([LSTM(256, input_shape=(None, 4)), Dense(1)], seed=0)
    m.save(tmp_path / "big.npz")
    t0 = time.perf_counter()
    m2 = load_model(tmp_path / "big.npz")
    assert time.perf_counter() - t0 < 2.0
    for a, b in zip(m.get_weights(), m2.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ---- 13.7: strict, one exception type -----------------------------------------------------------
@pytest.mark.parametrize("edit,match", [
    (lambda h: edit_layer(h, 0, units=4.7), "'units' must be an integer"),
    (lambda h: edit_layer(h, 0, units="4"), "'units' must be an integer"),
    (lambda h: edit_layer(h, 0, units=True), "'units' must be an integer"),
    (lambda h: edit_layer(h, 0, units=0), "out of range"),
    (lambda h: edit_layer(h, 0, return_sequences="yes"), "true or false"),
    (lambda h: edit_layer(h, 0, dropout="0.1"), "finite number"),
    (lambda h: edit_layer(h, 0, kernel_initializer="evil"), "unknown initializer"),
    (lambda h: edit_layer(h, 0, activation=["tanh"]), "string"),
    (lambda h: edit_layer(h, 1, name="lstm"), "duplicate layer name"),
    (lambda h: edit_layer(h, 0, recurrent_dropout=0.5), "recurrent_dropout"),
    (lambda h: h["model"]["config"].update(input_shape=[-1, 2]) or h, "out of range"),
    (lambda h: h["model"]["config"].update(input_shape=[None, 2.5]) or h, "integer"),
    (lambda h: h["model"]["config"].update(input_shape=None) or h, "no input shape"),
    (lambda h: h["model"]["config"].update(dtype="float16") or h, "dtype"),
    (lambda h: h["model"]["config"]["layers"][0].update(class_name="Evil") or h, "unknown layer class"),
    (lambda h: h.update(format_version=1.9) or h, "format_version"),
    (lambda h: h.update(format_version="1") or h, "format_version"),
    (lambda h: h.update(format="other") or h, "not an edgernn model file"),
    (lambda h: h.update(meta=[1]) or h, "meta"),
    (lambda h: h.update(weights={}) or h, "manifest"),
    (lambda h: h["weights"].append(dict(h["weights"][0])) or h, "twice"),
    (lambda h: h["weights"][0].update(dtype="int64") or h, "manifest entry"),
    (lambda h: h["weights"][0].update(shape=[1, 16, 2.0]) or h, "invalid shape"),
    (lambda h: h["compile"]["optimizer"]["config"].update(learning_rate="abc") or h, "compile"),
    (lambda h: h["compile"].update(metrics=[1]) or h, "metrics"),
    (lambda h: h["compile"]["loss"].update(class_name="Evil") or h, "compile"),
])
def test_bad_configs_raise_model_file_error(saved, tmp_path, edit, match):
    refused(rewrite(saved, tmp_path / "bad.npz", edit(header_of(saved))), match)


def test_format_version_entry_must_be_an_integer(saved, tmp_path):
    refused(rewrite(saved, tmp_path / "v.npz", replace={"__format_version__.npy": npy(np.array(1.9))}), "integer")
    refused(rewrite(saved, tmp_path / "v2.npz", replace={"__format_version__.npy": npy(np.array(2))}), "upgrade")


def test_duplicate_zip_entries_refused(saved, tmp_path):
    ents = entries(saved)
    path = tmp_path / "dup.npz"
    with pytest.warns(UserWarning, match="Duplicate"):
        with zipfile.ZipFile(path, "w") as z:
            for k, v in ents.items():
                z.writestr(k, v)
            z.writestr("layer0/W.npy", ents["layer0/W.npy"])
    refused(path, "twice")


def test_json_tricks_refused(saved, tmp_path):
    text = json.dumps(header_of(saved))
    for bad, match in [(text.replace('"clip": null', '"clip": NaN', 1), "NaN"),
                       (text[:-1] + ', "format": "edgernn.model"}', "twice"),
                       ("[" * 100000 + "]" * 100000, "")]:
        refused(rewrite(saved, tmp_path / "j.npz", replace={"__config__.npy": npy(np.array(bad))}), match)


def test_array_entries_checked(saved, tmp_path):
    ents = entries(saved)
    W = np.lib.format.read_array(io.BytesIO(ents["layer0/W.npy"]))
    refused(rewrite(saved, tmp_path / "a.npz", replace={"layer0/W.npy": npy(W.astype(np.float64))}), "dtype")
    refused(rewrite(saved, tmp_path / "b.npz", replace={"layer0/W.npy": npy(W[:, :-1])}), "shape")
    refused(rewrite(saved, tmp_path / "c.npz", replace={"layer0/W.npy": ents["layer0/W.npy"] + b"\0" * 8}), "size")
    Wn = W.copy()
    Wn[0, 0, 0] = np.nan
    refused(rewrite(saved, tmp_path / "d.npz", replace={"layer0/W.npy": npy(Wn)}), "NaN")
    obj = b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1, 16, 2), }" + b" " * 52 + b"\n"
    refused(rewrite(saved, tmp_path / "e.npz", replace={"layer0/W.npy": obj + b"\0" * 64}), "")
    refused(rewrite(saved, tmp_path / "f.npz", extra=[("evil.txt", b"x")]), "unexpected entry")


def test_every_layer_kind_round_trips_through_the_strict_loader(tmp_path):
    m = Sequential([Embedding(20, 4, mask_zero=True, input_shape=(None,)),
                    Bidirectional(LSTM(3, peephole=True, return_sequences=True), merge_mode="mul"),
                    GRU(2, reset_after=False, use_bias=False), Dense(2, activation="softmax")], dtype="float64",
                   seed=1)
    m.save(tmp_path / "m.npz")
    m2 = load_model(tmp_path / "m.npz")
    x = np.random.default_rng(0).integers(0, 20, (3, 5))
    np.testing.assert_array_equal(m.predict(x), m2.predict(x))


# ---- 13.8: saves ----------------------------------------------------------------------------------------
def small():
    return Sequential([Dense(2, input_shape=(3,))], seed=0)


def test_save_through_symlink_writes_target(tmp_path):
    target = tmp_path / "real.npz"
    small().save(target)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    m = Sequential([Dense(2, input_shape=(3,))], seed=5)
    m.save(link)
    assert link.is_symlink()
    np.testing.assert_array_equal(load_model(target).get_weights()[0], m.get_weights()[0])


def test_resave_keeps_mode_and_new_file_follows_umask(tmp_path):
    path = tmp_path / "m.npz"
    small().save(path)
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    os.chmod(path, 0o600)
    small().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_never_changes_the_umask(tmp_path, monkeypatch):
    calls = []
    real = os.umask
    monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real(m))
    small().save(tmp_path / "m.npz")
    assert calls == []


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".tmp-edgernn-{pid}-abcdef012345.npz"
    stale.write_bytes(b"partial")
    mine = tmp_path / f".tmp-edgernn-{os.getpid()}-abcdef012345.npz"  # a save in progress in this process
    mine.write_bytes(b"partial")
    old = tmp_path / ".tmp-k3j_x9a2.npz"  # the old naming, left hours ago
    old.write_bytes(b"partial")
    os.utime(old, (time.time() - 7 * 3600,) * 2)
    other = tmp_path / "keep.txt"
    other.write_text("x")
    small().save(tmp_path / "m.npz")
    assert not stale.exists() and not old.exists()
    assert mine.exists() and other.exists()


def test_foreign_format_suffix_is_refused(tmp_path):
    for name in ("m.h5", "m.keras", "m.onnx", "M.HDF5"):
        with pytest.raises(ValueError, match=r"\.npz"):
            small().save(tmp_path / name)
        assert not (tmp_path / name).exists()


def test_save_into_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError):
        small().save(tmp_path / "nodir" / "m.npz")


def test_meta_must_be_plain_json(tmp_path):
    m = small()
    m.meta = {"scale": float("nan")}
    with pytest.raises(ValueError, match="plain JSON"):
        m.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []
