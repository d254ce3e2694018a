"""Saves killed at random moments (issue 13, "tests that stay"): a child process saves in a loop
and is killed with SIGKILL after a random delay. The file at the path is always a complete,
loadable model (the previous one or a new one), and the next save to the directory leaves no
temporary file behind."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgernn import Sequential, load_model
from edgernn.layers import Dense

CHILD = r"""
import sys
import numpy as np
from edgernn import Sequential
from edgernn.layers import Dense
path = sys.argv[1]
m = Sequential([Dense(128, input_shape=(2048,))], seed=0)   # ~1 MiB of weights
print("ready", flush=True)
i = 0
while True:
    m.layers[0].params["bias"][:] = i
    m.save(path)
    i += 1
"""


def model(value):
    m = Sequential([Dense(128, input_shape=(2048,))], seed=0)
    m.layers[0].params["bias"][:] = value
    return m


def run_kills(tmp_path, kills, seed):
    path = tmp_path / "model.npz"
    model(-1).save(path)
    rng = np.random.default_rng(seed)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    seen = set()
    for _ in range(kills):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env)
        try:
            assert child.stdout.readline().strip() == b"ready"
            time.sleep(float(rng.uniform(0.0, 0.15)))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        m = load_model(path)  # never a partial file
        bias = m.layers[0].params["bias"]
        assert np.all(bias == bias[0])
        seen.add(float(bias[0]))
    left = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    model(7).save(tmp_path / "other.npz")  # the next save to the directory cleans up
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []
    assert float(load_model(path).layers[0].params["bias"][0]) in seen
    return left


def test_killed_saves_leave_a_loadable_file_and_no_temp_files(tmp_path):
    run_kills(tmp_path, kills=3, seed=0)


@pytest.mark.slow
def test_killed_saves_long(tmp_path):
    left = run_kills(tmp_path, kills=30, seed=1)
    assert left  # with 30 kills, some landed mid-save (and were cleaned up above)
