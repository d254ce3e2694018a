"""The deployment kit: ``export/run_onnx.py`` (numpy + onnxruntime only) and the
``edgernn export`` command line."""

import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import edgernn.onnx as eo  # noqa: E402
from edgernn import Sequential  # noqa: E402
from edgernn.layers import GRU, LSTM, Dense, Embedding  # noqa: E402

RUNNER = os.path.join(os.path.dirname(__file__), os.pardir, "export", "run_onnx.py")
# run the runner with edgernn and numba made unimportable: it must need numpy + onnxruntime only
NO_EDGERNN = ("import sys, runpy\n"
              "sys.modules['edgernn'] = None\n"
              "sys.modules['numba'] = None\n"
              "sys.argv = sys.argv[1:]\n"
              "sys.exit(runpy.run_path(sys.argv[0], run_name='__main__'))\n")


def model_and_stream(tmp_path, seed=0):
    model = Sequential([LSTM(6, input_shape=(None, 2), return_sequences=True), GRU(4), Dense(2)], seed=seed)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape) for w in model.get_weights()])
    return model, eo.export(model, tmp_path / "s.onnx", streaming=True)


def run(args, stdin=None):
    return subprocess.run([sys.executable, "-c", NO_EDGERNN, RUNNER, *args], input=stdin, capture_output=True,
                          text=True, check=True)


def test_run_onnx_stdin_matches_predict(tmp_path):
    model, path = model_and_stream(tmp_path)
    x = np.random.default_rng(1).standard_normal((15, 2)).astype(np.float32)
    csv = "a,b\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n\n"
    res = run([str(path)], stdin=csv)
    got = np.array([[float(v) for v in line.split(",")] for line in res.stdout.strip().splitlines()])
    ref = np.stack([model.predict(x[None, : t + 1])[0] for t in range(15)])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert "p50" in res.stderr and "p99" in res.stderr


def test_run_onnx_file_plain_and_bench(tmp_path):
    model, path = model_and_stream(tmp_path, seed=2)
    x = np.random.default_rng(3).standard_normal((5, 2))
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    a = run([str(path), str(tmp_path / "x.csv")]).stdout
    b = run([str(path), str(tmp_path / "x.csv"), "--plain"]).stdout
    assert a == b and len(a.splitlines()) == 5
    res = run([str(path), str(tmp_path / "x.csv"), "--quiet", "--bench", "200"])
    assert res.stdout == "" and "benchmark latency: p50" in res.stderr


def test_run_onnx_token_ids(tmp_path):
    model = Sequential([Embedding(10, 3, input_shape=(None,)), LSTM(4), Dense(1)], seed=4)
    path = eo.export(model, tmp_path / "e.onnx", streaming=True)
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    res = run([str(path)], stdin="\n".join(map(str, ids)))
    got = np.array([float(v) for v in res.stdout.split()])
    ref = np.array([model.predict(np.array([ids[: t + 1]]))[0, 0] for t in range(len(ids))])
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_run_onnx_refuses_full_graph_and_bad_rows(tmp_path):
    model, _ = model_and_stream(tmp_path)
    full = eo.export(model, tmp_path / "f.onnx")
    res = subprocess.run([sys.executable, RUNNER, str(full)], input="1,2\n", capture_output=True, text=True)
    assert res.returncode != 0 and "--streaming" in res.stderr
    res = subprocess.run([sys.executable, RUNNER, str(tmp_path / "s.onnx")], input="1,2,3\n", capture_output=True,
                         text=True)
    assert res.returncode != 0 and "expected 2 numbers" in res.stderr


def test_export_cli(tmp_path):
    model, _ = model_and_stream(tmp_path)
    model.save(tmp_path / "m.npz")
    text = eo.export_cli([str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")])
    assert "OK" in text and "max abs" in text
    text = eo.export_cli([str(tmp_path / "m.npz"), str(tmp_path / "s.onnx"), "--streaming", "--opset", "14"])
    assert "OK" in text
    assert onnx.load(tmp_path / "s.onnx").opset_import[0].version == 14
    cli = pytest.importorskip("edgernn.cli")
    assert cli.main(["export", str(tmp_path / "m.npz"), str(tmp_path / "c.onnx")]) == 0
    assert cli.main(["export", str(tmp_path / "m.npz"), str(tmp_path / "c.onnx"), "--opset", "12"]) != 0


# ---- hostile and careless input: one line naming the line, exit status 2, never a silent drop ----------
def run_rc(args, stdin=None):
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
    r = subprocess.run([sys.executable, "-c", NO_EDGERNN, RUNNER, *args], input=data, capture_output=True,
                       timeout=300)
    return r.returncode, r.stdout.decode(), r.stderr.decode("utf-8", "replace")


def _assert_refused(rc, err, *needles):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], err


def test_run_onnx_first_row_bom_semicolons_and_header(tmp_path):
    model, path = model_and_stream(tmp_path)
    x = np.round(np.random.default_rng(5).standard_normal((4, 2)), 4)
    ref_rc, ref, _ = run_rc([str(path)], stdin="".join(f"{a},{b}\n" for a, b in x))
    assert ref_rc == 0 and len(ref.splitlines()) == 4
    # an Excel file: BOM, ';' separators, decimal commas, CRLF; the first row is data and is kept
    excel = "\ufeff" + "".join(f"{a};{b}\r\n".replace(".", ",") for a, b in x)
    rc, out, err = run_rc([str(path)], stdin=excel.encode("utf-8"))
    assert rc == 0, err
    assert out == ref
    rc, out, err = run_rc([str(path)], stdin="a,b\n" + "".join(f"{a},{b}\n" for a, b in x))
    assert rc == 0 and out == ref and "line 1: header skipped: a,b" in err


@pytest.mark.parametrize("stdin, needles", [
    ("1.2.3,4\n1,2\n", ["line 1", "not a number: '1.2.3'"]),  # a typo in the first row is not a header
    ("1,2\n3,nan\n", ["line 2", "not a finite number"]),
    ("1,2\ninf,1\n", ["line 2", "not a finite number"]),
    ("1,2\n3,4,5\n", ["line 2", "expected 2 numbers, got 3 fields"]),
    (b"1,2\n\xff\xfe,3\n", ["line 2", "not UTF-8"]),
    ("1," + "9" * (2 << 20) + "\n", ["line 1", "longer than"]),
    ("", ["no data rows"]),
])
def test_run_onnx_refuses_bad_rows(tmp_path, stdin, needles):
    _, path = model_and_stream(tmp_path)
    rc, out, err = run_rc([str(path)], stdin=stdin)
    _assert_refused(rc, err, *needles)


@pytest.mark.parametrize("ids, needles", [
    ("3\n-1\n", ["line 2", "token id -1 is not an integer in [0, 10)"]),
    ("3\n10\n", ["line 2", "token id 10"]),
    ("3\n99999999999999999999999\n", ["line 2", "token id"]),
    ("3\n2.5\n", ["line 2", "token id 2.5"]),
    ("3\n1e400\n", ["line 2", "not a finite number"]),
])
def test_run_onnx_refuses_bad_token_ids(tmp_path, ids, needles):
    model = Sequential([Embedding(10, 3, input_shape=(None,)), LSTM(4), Dense(1)], seed=4)
    path = eo.export(model, tmp_path / "e.onnx", streaming=True)
    rc, out, err = run_rc([str(path)], stdin=ids)
    _assert_refused(rc, err, *needles)


def test_run_onnx_refuses_bad_files(tmp_path):
    _, path = model_and_stream(tmp_path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    for args, needle in (([str(tmp_path / "junk.onnx")], "cannot load"),
                         ([str(tmp_path / "nope.onnx")], "no such file"),
                         ([str(path), str(tmp_path / "nope.csv")], "cannot read"),
                         ([str(path), str(tmp_path)], "is a directory")):
        rc, _, err = run_rc(args, stdin="1,2\n")
        _assert_refused(rc, err, needle)


def test_stream_runner_step_returns_values_the_caller_can_keep(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_onnx", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model, path = model_and_stream(tmp_path)
    x = np.random.default_rng(7).standard_normal((4, 2)).astype(np.float32)
    r = mod.StreamRunner(str(path))
    ys = [r.step(row) for row in x]
    ref = np.stack([model.predict(x[None, : t + 1])[0] for t in range(4)])
    np.testing.assert_allclose(np.stack(ys), ref, atol=1e-5)
