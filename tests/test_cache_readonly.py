"""The numba cache directory may be read-only or impossible to create (a read-only root
filesystem on a device, a system-wide install): edgernn must still import and run, compiling
in memory and warning once. Each case runs in a fresh interpreter, since the decision is made
when edgernn is imported.

Tests run as root in some CI containers, where ``chmod 555`` stops nobody; a cache directory
*below a regular file* cannot be created by anyone, so that is what is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import json, warnings, logging
    import numpy as np
    logging.basicConfig(level=logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import edgernn
        import edgernn.functional as F
        rng = np.random.default_rng(0)
        X = rng.normal(size=(2, 5, 3)).astype(np.float32)
        W = rng.normal(size=(1, 16, 3)).astype(np.float32) * 0.3
        R = rng.normal(size=(1, 16, 4)).astype(np.float32) * 0.3
        Y, Y_h, Y_c = F.lstm(X, W, R)
        Y2, _ = F.gru(X, W[:, :12], R[:, :12])
        edgernn.set_num_threads(1)
    msgs = [str(w.message) for w in caught if "numba cache directory" in str(w.message)]
    print(json.dumps({"y": Y.tolist(), "y2": Y2.tolist(), "warnings": msgs,
                      "threads": edgernn.get_num_threads()}))
    """
)


def _run(env_update):
    env = dict(os.environ)
    env.update(env_update)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                       cwd=ROOT)
    assert p.returncode == 0, f"subprocess failed:\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


@pytest.fixture(scope="module")
def reference():
    """Results with the cache directory of this test run (writable; no warning expected)."""
    out, _ = _run({})
    assert out["warnings"] == []
    return out


def test_uncreatable_cache_dir_compiles_in_memory_and_warns_once(tmp_path, reference):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a regular file: nothing can be created below it\n")
    out, stderr = _run({"NUMBA_CACHE_DIR": str(blocker / "numba_cache")})
    assert len(out["warnings"]) == 1, out["warnings"]
    assert "compiling in memory" in out["warnings"][0]
    assert str(blocker / "numba_cache") in out["warnings"][0]
    # the same numbers as with a working cache
    assert out["y"] == reference["y"]
    assert out["y2"] == reference["y2"]
    assert out["threads"] == 1
    assert not (blocker / "numba_cache").exists()
    # the logger says it once too (logging goes to stderr)
    assert stderr.count("compiling in memory") == 1


@pytest.mark.parametrize("kind", ["below_a_file", "a_file", "writable"])
def test_cache_probe(tmp_path, monkeypatch, kind):
    from edgernn import _config

    f = tmp_path / "regular_file"
    f.write_text("")
    path = {"below_a_file": f / "cache", "a_file": f, "writable": tmp_path / "new" / "cache"}[kind]
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(path))
    monkeypatch.setattr(_config, "_cache_ok", None)
    assert _config._cache_dir_writable() is (kind == "writable")
    if kind == "writable":
        sub = path / f"edgernn-{_config.SOURCE_HASH}"  # kernels are cached by source hash
        assert list(path.iterdir()) == [sub] and list(sub.iterdir()) == []  # the probe file is gone


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_read_only_cache_dir_as_normal_user(tmp_path, reference):
    d = tmp_path / "ro_cache"
    d.mkdir()
    d.chmod(0o555)
    try:
        out, _ = _run({"NUMBA_CACHE_DIR": str(d)})
    finally:
        d.chmod(0o755)
    assert len(out["warnings"]) == 1
    assert out["y"] == reference["y"]


def test_set_num_threads_validates():
    import edgernn

    before = edgernn.get_num_threads()
    with pytest.raises(ValueError, match="n must be >= 1"):
        edgernn.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        edgernn.set_num_threads(1.5)
    edgernn.set_num_threads(1)
    assert edgernn.get_num_threads() == 1
    edgernn.set_num_threads(before)
    assert edgernn.get_num_threads() == before
