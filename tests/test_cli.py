"""The ``edgernn`` command line: the main job (demo) and train/predict/info/export, plus errors."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import edgernn
from edgernn.cli import main


def _run(args, cwd, env_extra=None):
    env = dict(os.environ, MPLBACKEND="Agg")
    # the subprocess must import this checkout's edgernn whatever its working directory
    root = os.path.dirname(os.path.dirname(os.path.abspath(edgernn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "edgernn.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_demo_quick_end_to_end(tmp_path):
    """The README's main job, shrunk: trains, reports RMSE vs the baseline, saves, plots, exports."""
    r = _run(["demo", "--quick", "--quiet", "--out", "out"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test RMSE" in r.stdout and "seasonal naive" in r.stdout
    assert "verified against onnxruntime" in r.stdout
    files = ["airline_model.npz", "airline_model.onnx", "airline_model_stream.onnx"]
    if importlib.util.find_spec("matplotlib") is not None:  # plotting is an extra ([plot])
        files.append("airline_forecast.png")
    else:
        assert "no plot written" in r.stderr
    for f in files:
        assert (tmp_path / "out" / f).stat().st_size > 0, f
    # the saved model carries the forecasting settings and reloads for `info` and `predict`
    r = _run(["info", "out/airline_model.npz"], cwd=tmp_path)
    assert r.returncode == 0 and "Total params: 70,901" in r.stdout


def _series_csv(path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = 10 + np.sin(2 * np.pi * t / 12) + 0.05 * rng.normal(size=n)
    with open(path, "w") as fh:
        fh.write("month,value\n")
        for k, x in enumerate(v):
            fh.write(f"{k},{x:.5f}\n")
    return v


def test_train_predict_info_export(tmp_path, capsys):
    v = _series_csv(tmp_path / "s.csv")
    model = str(tmp_path / "m.npz")
    assert main(["train", str(tmp_path / "s.csv"), "--column", "value", "--window", "12", "--units", "8",
                 "--epochs", "3", "--test-size", "12", "--cell", "gru", "--out", model, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test RMSE" in out and os.path.exists(model)
    assert main(["predict", model, str(tmp_path / "s.csv"), "--column", "value"]) == 0
    y = float(capsys.readouterr().out.strip())
    assert abs(y - v.mean()) < 5  # a finite forecast on the series' scale
    assert main(["info", model]) == 0
    assert "gru" in capsys.readouterr().out.lower()
    pytest.importorskip("onnxruntime")
    assert main(["export", model, str(tmp_path / "m.onnx"), "--streaming"]) == 0
    assert "verified" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["info", "missing.npz"], "no such file"),
    (["train", "missing.csv"], "cannot read"),
    (["train", "{csv}", "--column", "nope"], "no column named"),
    (["train", "{csv}", "--units", "a,b"], "--units"),
    (["train", "{csv}", "--test-size", "5", "--window", "500", "--epochs", "1"], "too short for window"),
    (["info", "{bad}"], "is not an edgernn model file"),
])
def test_errors_are_one_line(tmp_path, capsys, argv, msg):
    _series_csv(tmp_path / "s.csv", n=40)
    (tmp_path / "bad.npz").write_bytes(b"not a zip file at all")
    argv = [a.format(csv=tmp_path / "s.csv", bad=tmp_path / "bad.npz") for a in argv]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rc = main(argv)
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert rc != 0
    assert msg in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_arguments_exit_nonzero(tmp_path):
    r = _run(["demo", "--epochs", "many"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = _run(["frobnicate"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr


# ---- output paths: checked before training, one line naming the user's path, nothing lost -------------
def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
    assert ".tmp-" not in r.stderr


TRAIN_FAST = ["--window", "6", "--units", "4", "--epochs", "1", "--test-size", "6", "--quiet"]


@pytest.mark.parametrize("out, msg", [
    ("nodir/m.npz", "directory nodir does not exist"),
    ("adir", "is a directory"),
])
def test_train_refuses_bad_out_before_training(tmp_path, out, msg):
    _series_csv(tmp_path / "s.csv", n=40)
    (tmp_path / "adir").mkdir()
    r = _run(["train", "s.csv", "--out", out, *TRAIN_FAST], cwd=tmp_path)
    _one_line_error(r, f"--out {out}", msg)
    assert "test RMSE" not in r.stdout  # refused before any training


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only directories")
def test_train_refuses_read_only_directory(tmp_path):
    _series_csv(tmp_path / "s.csv", n=40)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = _run(["train", "s.csv", "--out", "ro/m.npz", *TRAIN_FAST], cwd=tmp_path)
    finally:
        ro.chmod(0o755)
    _one_line_error(r, "--out ro/m.npz", "cannot write in")


def test_export_and_demo_refuse_bad_paths(tmp_path):
    _series_csv(tmp_path / "s.csv", n=40)
    assert main(["train", str(tmp_path / "s.csv"), "--out", str(tmp_path / "m.npz"), *TRAIN_FAST]) == 0
    r = _run(["export", "m.npz", "nodir/m.onnx"], cwd=tmp_path)
    _one_line_error(r, "output nodir/m.onnx", "does not exist")
    (tmp_path / "afile").write_text("x")
    r = _run(["demo", "--quick", "--out", "afile"], cwd=tmp_path)
    _one_line_error(r, "--out afile", "not a directory")
    r = _run(["demo", "--quick", "--out", "afile/sub"], cwd=tmp_path)
    _one_line_error(r, "--out afile/sub", "cannot create")


def test_a_save_that_fails_after_training_keeps_the_model(tmp_path, capsys, monkeypatch):
    from edgernn.models import Sequential

    _series_csv(tmp_path / "s.csv", n=40)
    target = str(tmp_path / "m.npz")
    real = Sequential.save

    def failing(self, path, *a, **k):
        if os.fspath(path) == target:
            raise OSError(28, "No space left on device")
        return real(self, path, *a, **k)

    monkeypatch.setattr(Sequential, "save", failing)
    assert main(["train", str(tmp_path / "s.csv"), "--out", target, *TRAIN_FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--out {target}" in err and "No space left on device" in err and len(err.splitlines()) == 1
    rescued = err.split("saved to ")[1]
    try:
        assert edgernn.load_model(rescued).meta["forecast"]["window"] == 6
    finally:
        os.unlink(rescued)


# ---- predict reads the column the model was trained on -------------------------------------------------
def test_predict_uses_the_trained_column(tmp_path, capsys):
    rng = np.random.default_rng(0)
    t = np.arange(60)
    a = 50 + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, 60)
    b = 500 + 3 * t
    (tmp_path / "mine.csv").write_text("sensor_a,sensor_b\n" + "".join(f"{x:.4f},{y:.1f}\n" for x, y in zip(a, b,
                                                                                                              strict=True)))
    csv_path, model = str(tmp_path / "mine.csv"), str(tmp_path / "a.npz")
    assert main(["train", csv_path, "--column", "sensor_a", "--out", model, *TRAIN_FAST]) == 0
    assert "'sensor_a'" in capsys.readouterr().out
    assert main(["predict", model, csv_path]) == 0
    y = float(capsys.readouterr().out)
    assert main(["predict", model, csv_path, "--column", "sensor_a"]) == 0
    assert float(capsys.readouterr().out) == y and 30 < y < 70  # sensor_a's scale, not sensor_b's ~680
    (tmp_path / "other.csv").write_text("x,y\n" + "1,2\n" * 30)
    assert main(["predict", model, str(tmp_path / "other.csv")]) == 2
    assert "trained on column 'sensor_a'" in capsys.readouterr().err


# ---- CSV input -------------------------------------------------------------------------------------------
def test_csv_semicolons_decimal_commas_bom_and_delimiter(tmp_path):
    from edgernn.cli import _read_column

    v = np.round(10 + np.sin(np.arange(30)), 3)
    (tmp_path / "c.csv").write_text("t,value\n" + "".join(f"{k},{x}\n" for k, x in enumerate(v)))
    (tmp_path / "s.csv").write_bytes(("\ufeff\"t\";\"value\"\r\n" + "".join(
        f"{k};{str(x).replace('.', ',')}\r\n" for k, x in enumerate(v))).encode("utf-8"))
    (tmp_path / "p.csv").write_text("".join(f"{k}|{x}\n" for k, x in enumerate(v)))
    ref, col = _read_column(str(tmp_path / "c.csv"), None)
    np.testing.assert_array_equal(ref, v)
    assert col == "value"
    got, col = _read_column(str(tmp_path / "s.csv"), "value")
    np.testing.assert_array_equal(got, v)
    np.testing.assert_array_equal(_read_column(str(tmp_path / "p.csv"), None)[0], v)
    np.testing.assert_array_equal(_read_column(str(tmp_path / "p.csv"), "1", delimiter="|")[0], v)


@pytest.mark.parametrize("content, msg", [
    (b"month,value\n", "no data rows (only a header line"),
    (b"", "empty file"),
    (b"value\n1.5\n2.5\n\xb0C 3\n4\n", "line 4: not UTF-8 text (byte 0xb0)"),
    (b"t;value\n1;2,5\n2;3,5\n3;oops\n4;1,0\n", "line 4: not a number: 'oops'"),
    (b"v\n1\n2\nnan\n4\n", "line 4: not a finite number"),
    (b"PK\x03\x04\x00\x00binary", "a binary file"),
])
def test_bad_csv_one_line_naming_the_line(tmp_path, content, msg):
    (tmp_path / "bad.csv").write_bytes(content)
    r = _run(["train", "bad.csv", *TRAIN_FAST], cwd=tmp_path)
    _one_line_error(r, "bad.csv", msg)


# ---- CLI polish ------------------------------------------------------------------------------------------
def test_version_module_entry_and_help_defaults(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgernn", "--version"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(edgernn.__file__))))
    assert r.returncode == 0 and r.stdout.strip() == f"edgernn {edgernn.__version__}"
    r = _run(["train", "--help"], cwd=tmp_path)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for s in ("(default: 24)", "(default: 60)", "(default: model.npz)", "(default: 50,100)", "(default: lstm)"):
        assert s in text, s
    r = _run(["export", "--help"], cwd=tmp_path)
    assert "--opset" in r.stdout and "newest" in r.stdout


@pytest.mark.parametrize("argv, msg", [
    (["demo", "--epochs", "0"], "--epochs: must be a positive integer, got 0"),
    (["demo", "--epochs", "-1"], "--epochs: must be a positive integer, got -1"),
    (["train", "s.csv", "--epochs", "0"], "--epochs: must be a positive integer"),
    (["train", "s.csv", "--test-size", "-2"], "--test-size"),
    (["info", "s.csv"], "is not an edgernn model file"),
])
def test_bad_values_refused(tmp_path, argv, msg):
    _series_csv(tmp_path / "s.csv", n=40)
    r = _run(argv, cwd=tmp_path)
    _one_line_error(r, msg)
    assert "allow_pickle" not in r.stderr and "training" not in r.stdout


def test_test_size_zero_trains_on_everything(tmp_path):
    _series_csv(tmp_path / "s.csv", n=40)
    r = _run(["train", "s.csv", "--window", "6", "--units", "4", "--epochs", "1", "--test-size", "0", "--quiet",
              "--out", "m.npz"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "trained on all 40 points" in r.stdout and os.path.exists(tmp_path / "m.npz")


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_onnx_files_get_the_umask_mode(tmp_path):
    pytest.importorskip("onnxruntime")
    _series_csv(tmp_path / "s.csv", n=40)
    assert main(["train", str(tmp_path / "s.csv"), "--out", str(tmp_path / "m.npz"), *TRAIN_FAST]) == 0
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(edgernn.__file__)))
    for umask in (0o022, 0o027):
        r = subprocess.run([sys.executable, "-m", "edgernn", "export", "m.npz", f"m{umask}.onnx", "--no-verify"],
                           cwd=tmp_path, env=env, capture_output=True, text=True,
                           preexec_fn=lambda u=umask: os.umask(u))
        assert r.returncode == 0, r.stderr
        assert (tmp_path / f"m{umask}.onnx").stat().st_mode & 0o777 == 0o666 & ~umask
