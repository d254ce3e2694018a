"""The deployment path end to end: raw CSV -> ``edgernn train`` -> ``edgernn export`` ->
``export/run_onnx.py`` (numpy + onnxruntime only) gives what ``edgernn predict`` gives."""

import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import edgernn  # noqa: E402
import edgernn.onnx as eo  # noqa: E402
from edgernn.forecast import ForecastConfig, fit_forecaster, forecast_next  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(edgernn.__file__)))
RUNNER = os.path.join(ROOT, "export", "run_onnx.py")
NO_EDGERNN = ("import sys, runpy\n"
              "sys.modules['edgernn'] = None\n"
              "sys.modules['numba'] = None\n"
              "sys.argv = sys.argv[1:]\n"
              "sys.exit(runpy.run_path(sys.argv[0], run_name='__main__'))\n")


def _env():
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def edgernn_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edgernn", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)


def runner(*args, cwd):
    return subprocess.run([sys.executable, "-c", NO_EDGERNN, RUNNER, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def _airline_like(n=72, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 120 * np.exp(0.01 * t) * (1 + 0.15 * np.sin(2 * np.pi * t / 12)) * (1 + 0.02 * rng.normal(size=n))


def test_raw_csv_through_export_and_runner_matches_predict(tmp_path):
    v = _airline_like()
    other = np.linspace(-5, 5, len(v))  # a second numeric column the model was not trained on
    with open(tmp_path / "sales.csv", "w") as fh:
        fh.write("month,passengers,other\n")
        for k, (a, b) in enumerate(zip(v, other, strict=True)):
            fh.write(f"{1950 + k // 12}-{k % 12 + 1:02d},{a:.3f},{b:.3f}\n")
    r = edgernn_cli("train", "sales.csv", "--column", "passengers", "--window", "12", "--units", "8",
                    "--epochs", "3", "--test-size", "12", "--out", "m.npz", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = edgernn_cli("predict", "m.npz", "sales.csv", cwd=tmp_path)  # the trained column, by itself
    assert r.returncode == 0, r.stderr
    predicted = float(r.stdout)
    assert 50 < predicted < 400  # passenger counts, not scaled log differences
    for args in (["m.npz", "s.onnx", "--streaming"], ["m.npz", "f.onnx"]):
        r = edgernn_cli("export", *args, cwd=tmp_path)
        assert r.returncode == 0 and "verified against onnxruntime: OK" in r.stdout, r.stderr

    # the device: numpy + onnxruntime, the same raw CSV; the column comes from the graph's metadata
    r = runner("s.onnx", "sales.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(v)
    assert all(line == "nan" for line in lines[:11])  # fewer than `window` values: no forecast
    got = np.array([float(x) for x in lines[11:]])
    np.testing.assert_allclose(got[-1], predicted, rtol=2e-5)  # the last row = edgernn predict
    model = edgernn.load_model(str(tmp_path / "m.npz"))
    vals32 = v.round(3).astype(np.float32).astype(np.float64)
    ref = np.array([forecast_next(model, vals32[: t + 1]) for t in range(11, len(v))])
    np.testing.assert_allclose(got, ref, rtol=1e-5)  # every row = predict on the rows so far

    # the full graph: raw series in, the same forecast out
    sess = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": vals32.astype(np.float32)[None, :, None]})[0]
    np.testing.assert_allclose(y[0, 0], predicted, rtol=2e-5)
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["input_column"] == "passengers" and meta["input_domain"] == "positive"

    # the runner refuses what the model cannot take, naming the line
    (tmp_path / "neg.csv").write_text("passengers\n120\n-3\n")
    r = runner("s.onnx", "neg.csv", cwd=tmp_path)
    assert r.returncode == 2 and "line 3" in r.stderr and "positive" in r.stderr and "Traceback" not in r.stderr


def test_forecaster_without_log_and_bare_network_export(tmp_path):
    rng = np.random.default_rng(1)
    v = np.sin(np.arange(70) / 3.0) * 5 + rng.normal(0, 0.1, 70)  # crosses zero: no log transform
    model, _ = fit_forecaster(v, ForecastConfig(window=8, units=(6,), epochs=2, test_size=8, cell="gru"),
                              verbose=0)
    assert model.meta["forecast"]["log"] is False
    for streaming in (False, True):
        p = eo.export(model, tmp_path / f"g{int(streaming)}.onnx", streaming=streaming)
        rep = eo.verify(model, p)
        assert rep.passed and rep.max_abs < 1e-5
    st = ort.InferenceSession(str(tmp_path / "g1.onnx"), providers=["CPUExecutionProvider"])
    states = {"state_window": np.zeros((1, 8), np.float32), "state_count": np.zeros((1, 1), np.float32)}
    for t in range(20):
        y, w, c = st.run(None, {"x": np.float32([[v[t]]]), **states})
        states = {"state_window": w, "state_count": c}
    np.testing.assert_allclose(y[0, 0], forecast_next(model, v[:20].astype(np.float32)), rtol=1e-5, atol=1e-5)
    # preprocess=False: the bare network, scaled inputs, as before
    bare = eo.export(model, tmp_path / "bare.onnx", streaming=True, preprocess=False)
    meta = {e.key: e.value for e in onnx.load(bare).metadata_props}
    assert "preprocessing" not in meta and eo.verify(model, bare).passed
    with pytest.raises(ValueError, match="lengths_input"):
        eo.build_model(model, lengths_input=True)
