"""Every script in examples/ runs in quick mode and writes its plots.

Each example runs as a user would run it: a fresh Python process (``sys.executable``), in an
empty temporary directory, with ``EDGERNN_QUICK=1`` and the non-interactive matplotlib
backend. Skipped when matplotlib (an extra) is not installed; activity_watch also needs
onnx and onnxruntime, fleet_sensors dask.distributed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# script -> (PNG files it must write, extra modules it needs)
CASES = {
    "forecast_airline.py": (["forecast_airline.png"], []),
    "forecast_temperatures.py": (["forecast_temperatures.png"], []),
    "sin_to_cos.py": (["sin_to_cos.png"], []),
    "long_term_dependency.py": (["long_term_dependency_loss.png", "long_term_dependency_gradients.png"], []),
    "indrnn_adding.py": (["indrnn_adding_loss.png"], []),
    "char_lm.py": (["char_lm_bpc.png"], []),
    "qrnn_sin_to_cos.py": (["qrnn_sin_to_cos.png"], []),
    "classify_vowels.py": (["classify_vowels_confusion.png"], []),
    "activity_watch.py": (["activity_watch.png"], ["onnx", "onnxruntime"]),
    "fleet_sensors.py": (["fleet_sensors.png"], ["distributed"]),
    "sru_vs_lstm.py": (["sru_vs_lstm.png"], []),
    "fastgrnn_activity.py": (["fastgrnn_activity.png"], ["onnx", "onnxruntime"]),
    "janet_adding.py": (["janet_adding.png"], []),
    "seq2seq_attention.py": (["seq2seq_attention.png"], []),
    "attention_pooling.py": (["attention_pooling.png"], []),
}


def _missing(modules):
    return [m for m in modules if importlib.util.find_spec(m) is None]


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs_in_quick_mode(script, tmp_path):
    pngs, needs = CASES[script]
    missing = _missing(["matplotlib", *needs])
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    env = dict(os.environ, EDGERNN_QUICK="1", MPLBACKEND="Agg")
    # the package under test, also when it is not installed
    root = str(EXAMPLES.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for png in pngs:
        path = tmp_path / png
        assert path.is_file(), f"{script} did not write {png}; it printed:\n{proc.stdout[-2000:]}"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG file"
