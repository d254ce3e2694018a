"""The numba cache follows the package's sources (docs/ARCHITECTURE.md, "Numba cache").

numba keys a cached function by its own file's timestamp: a cached driver that inlined a
cell's step from another module would keep the old step after that module changed. edgernn
caches its kernels under ``edgernn-<hash of every .py file of the package>``. This test edits
nothing in the repository: it edits a copy of the package and shows that a second process sees
the edit through the generic driver (which inlines the cell's step from another module).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np

import edgernn
from edgernn import _config
from edgernn.cells import driver


def test_cache_dir_is_named_by_the_source_hash():
    assert _config.SOURCE_HASH == _config.source_hash(os.path.dirname(edgernn.__file__))
    assert os.path.basename(_config.cache_dir()) == f"edgernn-{_config.SOURCE_HASH}"
    edgernn.functional.indrnn(np.ones((1, 2, 1), np.float32), np.ones((1, 2, 1)), np.ones((1, 2)))
    if _config._cache_dir_writable():
        assert f"edgernn-{_config.SOURCE_HASH}" in driver.drive_forward.stats.cache_path


def test_any_source_change_changes_the_hash(tmp_path):
    pkg = tmp_path / "edgernn"
    shutil.copytree(os.path.dirname(edgernn.__file__), pkg, ignore=shutil.ignore_patterns("__pycache__", "data"))
    h0 = _config.source_hash(str(pkg))
    assert h0 == _config.SOURCE_HASH
    with open(pkg / "cells" / "indrnn.py", "a") as f:
        f.write("\n# a comment is a change\n")
    assert _config.source_hash(str(pkg)) != h0


SCRIPT = textwrap.dedent("""
    import numpy as np, edgernn.functional as F
    from edgernn.cells import driver
    Y, _ = F.indrnn(np.ones((1, 3, 1)), np.full((1, 2, 1), 0.5), np.zeros((1, 2)), activation="Affine")
    print(float(Y[0, -1, 0, 0]), sum(driver.drive_forward.stats.cache_hits.values()))
""")


def test_edited_inlined_step_is_recompiled(tmp_path):
    src = os.path.dirname(edgernn.__file__)
    root = tmp_path / "copy"
    shutil.copytree(src, root / "edgernn", ignore=shutil.ignore_patterns("__pycache__"))
    path = os.pathsep.join([str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env = dict(os.environ, PYTHONPATH=path, NUMBA_CACHE_DIR=str(tmp_path / "cache"))  # the copy first

    def run():
        out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, cwd=root,
                             timeout=600)
        assert out.returncode == 0, out.stderr
        value, hits = out.stdout.split()
        return float(value), int(hits)

    assert run() == (0.5, 0)  # compiled and cached
    assert run() == (0.5, 1)  # loaded from the cache
    step = root / "edgernn" / "cells" / "indrnn.py"
    text = step.read_text()
    assert "v = gr[j] + u[j] * h[j] + b[j]" in text
    step.write_text(text.replace("v = gr[j] + u[j] * h[j] + b[j]", "v = 2 * gr[j] + u[j] * h[j] + b[j]"))
    value, hits = run()  # the driver (another module) inlines the edited step: fresh cache
    assert value == 1.0 and hits == 0
