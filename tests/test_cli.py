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
    (["info", "{bad}"], "cannot load"),
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
