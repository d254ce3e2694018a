#!/usr/bin/env python3
"""Peak memory of ``Sequential.predict`` on one long sequence (issue 13 item 11).

Each case runs in a fresh Python process: build ``Sequential([<Cell>(H, input_shape=(None, I))])``
(``return_sequences=False``: only the final output is returned), warm the kernels on a short
sequence, then predict one sequence of ``T`` steps and report the growth of the process' peak
resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after minus before; the input array
is allocated and the kernels are loaded before the first reading, so the figure is what
``predict`` itself adds) and the process CPU time of that call (least of ``--repeat``; one
edgernn thread). Usage::

    python benchmarks/bench_memory.py                      # T=1e6, H=64, I=1, every cell below
    python benchmarks/bench_memory.py --T 4000000 --cells LSTM
    python benchmarks/bench_memory.py --chunk 0            # no chunking (the old behaviour)

``--chunk`` sets ``edgernn.layers.recurrent._INFER_CHUNK`` in the child process (0: off).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, resource, sys, time
import numpy as np
import edgernn
from edgernn import Sequential
import edgernn.layers as L
import edgernn.layers.recurrent as rec
cell, T, H, I, chunk, direction = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
reps, B = int(sys.argv[7]), int(sys.argv[8])
if chunk != "default" and hasattr(rec, "_INFER_CHUNK"):
    rec._INFER_CHUNK = int(chunk)
edgernn.set_num_threads(1)
kw = {"go_backwards": True} if direction == "reverse" else {}
layer = getattr(L, cell)(H, **kw)
if direction == "bidirectional":
    layer = L.Bidirectional(layer, input_shape=(None, I))
else:
    layer = getattr(L, cell)(H, input_shape=(None, I), **kw)
m = Sequential([layer], seed=0)
m.predict(np.zeros((1, 50, I), np.float32))  # compile / load kernels
x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
kb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before = kb()
times = []
for _ in range(reps):
    t0 = time.process_time()
    y = m.predict(x)
    times.append(time.process_time() - t0)
after = kb()
dt = min(times)
print(json.dumps(dict(cell=cell, B=B, T=T, H=H, I=I, direction=direction, chunk=getattr(rec, "_INFER_CHUNK", None),
                      before_mb=before / 1024, peak_mb=after / 1024, added_mb=(after - before) / 1024,
                      seconds=dt, y0=float(np.asarray(y).ravel()[0]))))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=1_000_000)
    ap.add_argument("--H", type=int, default=64)
    ap.add_argument("--I", type=int, default=1)
    ap.add_argument("--B", type=int, default=1, help="sequences in the batch")
    ap.add_argument("--cells", default="LSTM,GRU,SimpleRNN,SRU")
    ap.add_argument("--directions", default="forward")
    ap.add_argument("--chunk", default="default", help="chunk length (0: off), default: the library's")
    ap.add_argument("--repeat", type=int, default=1, help="predict calls; the time is the least CPU time")
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.pathsep + \
        env.get("PYTHONPATH", "")
    rows = []
    print(f"{'cell':10} {'direction':14} {'B':>4} {'T':>9} {'H':>4} {'chunk':>6} {'added MB':>9} {'peak MB':>8} {'CPU s':>6}")
    for cell in a.cells.split(","):
        for direction in a.directions.split(","):
            r = subprocess.run([sys.executable, "-c", CHILD, cell, str(a.T), str(a.H), str(a.I), a.chunk, direction, str(a.repeat), str(a.B)],
                               env=env, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{cell:10} {direction:14} failed: {r.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{cell:10} {direction:14} {row['B']:>4} {row['T']:>9} {row['H']:>4} {str(row['chunk']):>6} "
                  f"{row['added_mb']:>9.1f} {row['peak_mb']:>8.1f} {row['seconds']:>6.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
