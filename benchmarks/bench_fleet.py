#!/usr/bin/env python3
"""Fleet throughput: models per second on 1, 2 and all local Dask workers vs a plain loop.

The fleet: ``--models`` (default 1,000) small forecasters, one per synthetic series of 240
hourly values (window 24, GRU(8) -> Dense(1), 3 epochs, batch 32, ``edgernn.forecast``
pipeline), the kind of model a per-sensor fleet trains nightly.

Measured:

1. ``loop``: a plain sequential loop in this process (``fit_forecaster`` per series, one
   edgernn thread, kernels already compiled): the baseline a user writes by hand.
2. ``fleet``: ``edgernn.fleet.fit`` on a ``LocalCluster`` of 1, 2, ... single-threaded worker
   processes (``--workers``; "all" is every core), with ``chunksize`` 1 (one task per model)
   and "auto" (chunks sized to ~0.2 s of work). Time of the training phase (workers already
   started and warmed), the median of ``--repeats`` runs; and the CPU time per model: inside
   the tasks (thread time), in the worker processes (tasks + Dask's communication threads)
   and in this process (client + scheduler, which a LocalCluster runs here).
3. Dask's own cost: round trips of empty tasks on the same cluster (tasks per second).
4. Worker warm-up (``client.run``: import edgernn, build the model, one training step): on
   fresh workers with an empty numba cache (every worker compiles the kernels, at the same
   time), on fresh workers with the cache filled (load from disk), and on a warm worker.

Usage::

    python benchmarks/bench_fleet.py                  # 1,000 models (about 5 minutes on 2 cores)
    python benchmarks/bench_fleet.py --quick          # 100 models, one repeat
    python benchmarks/bench_fleet.py --workers 1,2,4 --models 2000 --json out.json

Needs dask[distributed] (``pip install -e ".[fleet]"``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's edgernn, also when not installed

import distributed  # noqa: E402

import edgernn  # noqa: E402
from edgernn import fleet  # noqa: E402
from edgernn.forecast import ForecastConfig, fit_forecaster  # noqa: E402

CFG = ForecastConfig(window=24, test_size=24, cell="gru", units=(8,), dropout=0.0, epochs=3, batch_size=32,
                     season=24)


def make_series(n, length=240, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    out = {}
    for i in range(n):
        level = rng.uniform(20, 80)
        out[f"s{i:05d}"] = (level + 0.2 * level * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 6))
                            + rng.normal(0, 0.03 * level, length))
    return out


def loop(series):
    """The hand-written loop: same models, same seeds, one after the other."""
    edgernn.set_num_threads(1)
    fit_forecaster(next(iter(series.values())), dataclasses.replace(CFG), verbose=0)  # compile / load
    t0, c0 = time.perf_counter(), time.process_time()
    for k, v in series.items():
        fit_forecaster(v, dataclasses.replace(CFG, seed=fleet.key_seed(0, k)), verbose=0)
    return time.perf_counter() - t0, time.process_time() - c0


def _noop(x):
    return x


def _proc_cpu():
    return time.process_time()


def empty_tasks(client, n=1000):
    client.gather(client.map(_noop, range(50), pure=False))
    t0 = time.perf_counter()
    client.gather(client.map(_noop, range(n), pure=False))
    return n / (time.perf_counter() - t0)


def cluster(n, cache_dir=None):
    """n single-threaded worker processes; with ``cache_dir``, numba's cache there.

    The variable is set in this process while the workers start: they inherit it (Dask's
    ``env=`` comes too late, the spawned workers import edgernn and numba while re-importing
    this script).
    """
    saved = os.environ.get("NUMBA_CACHE_DIR")
    if cache_dir:
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
    try:
        c = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                     silence_logs=50)
    finally:
        if saved is None:
            os.environ.pop("NUMBA_CACHE_DIR", None)
        else:
            os.environ["NUMBA_CACHE_DIR"] = saved
    return c, distributed.Client(c)


def warmup_costs(n_workers):
    """Warm-up per worker: empty numba cache, filled cache (fresh workers), warm worker."""
    spec = fleet._Spec(kind="forecast", build=CFG)
    d = tempfile.mkdtemp(prefix="edgernn-bench-numba-")
    out = {}
    try:
        for label in ("empty cache", "filled cache"):
            c, client = cluster(n_workers, d)
            try:
                t0 = time.perf_counter()
                res = client.run(fleet._warm_worker, spec, "s", 0)
                out[label] = {"wall": time.perf_counter() - t0,
                              "per_worker": sorted(r["seconds"] for r in res.values()),
                              "cpu_per_worker": sorted(r["cpu_seconds"] for r in res.values()),
                              "errors": [r["error"] for r in res.values() if r["error"]]}
                if label == "filled cache":
                    res = client.run(fleet._warm_worker, spec, "s", 0)
                    out["warm worker"] = {"per_worker": sorted(r["seconds"] for r in res.values())}
            finally:
                client.close()
                c.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=None, help="fleet size (default 1000, quick 100)")
    p.add_argument("--workers", default=None, help="comma-separated worker counts (default 1,2,...,all)")
    p.add_argument("--repeats", type=int, default=None, help="runs per setting (default 3, quick 1)")
    p.add_argument("--chunksizes", default="1,auto", help='keys per task, e.g. "1,10,auto"')
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-warmup-costs", action="store_true", help="skip the numba cache measurements")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--malloc-trim", choices=["dask", "off"], default="dask",
                   help="dask: workers get Dask's MALLOC_TRIM_THRESHOLD_=65536 (its default); off: glibc's own")
    a = p.parse_args()
    if a.malloc_trim == "off":
        import dask

        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    n_models = a.models or (100 if a.quick else 1000)
    repeats = a.repeats or (1 if a.quick else 3)
    ncores = fleet._local_workers()
    workers = ([int(w) for w in a.workers.split(",")] if a.workers
               else sorted({1, 2, ncores}) if ncores >= 2 else [1])
    chunks = [c if c == "auto" else int(c) for c in a.chunksizes.split(",")]
    series = make_series(n_models)
    res = {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "machine": platform.processor() or platform.machine(),
           "cores": ncores, "loadavg_start": os.getloadavg(), "models": n_models, "repeats": repeats,
           "python": platform.python_version(), "dask": distributed.__version__, "config": dataclasses.asdict(CFG),
           "malloc_trim": a.malloc_trim}
    print(f"{n_models} models: GRU(8) forecasters, 240 points each, {CFG.epochs} epochs; {ncores} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start")

    runs = [loop(series) for _ in range(repeats)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    res["loop"] = {"wall": [r[0] for r in runs], "cpu": [r[1] for r in runs]}
    print(f"plain loop, 1 process: {n_models / wall:.1f} models/s (median wall {wall:.2f} s, "
          f"CPU {1000 * cpu / n_models:.1f} ms per model)")

    res["fleet"] = []
    for n in workers:
        c, client = cluster(n)
        try:
            res.setdefault("empty_tasks_per_s", {})[n] = empty_tasks(client)
            fleet.fit(CFG, dict(list(series.items())[:20]), client, progress=False)  # warm the workers
            for ch in chunks:
                walls, task_cpu, worker_cpu, here_cpu = [], [], [], []
                for _ in range(repeats):
                    w0, h0 = client.run(_proc_cpu), time.process_time()
                    f = fleet.fit(CFG, series, client, chunksize=ch, progress=False, warmup=False)
                    w1, h1 = client.run(_proc_cpu), time.process_time()
                    assert not f.failures, f.failures
                    walls.append(f.info["fit_wall_seconds"])
                    task_cpu.append(sum(r["cpu_seconds"] for r in f.records.values()))
                    worker_cpu.append(sum(w1[k] - w0[k] for k in w1))
                    here_cpu.append(h1 - h0)
                w = statistics.median(walls)
                ms = {name: 1000 * statistics.median(v) / n_models
                      for name, v in (("task", task_cpu), ("worker", worker_cpu), ("here", here_cpu))}
                row = {"workers": n, "chunksize": ch, "wall": walls, "task_cpu": task_cpu, "worker_cpu": worker_cpu,
                       "client_scheduler_cpu": here_cpu, "models_per_s": n_models / w,
                       "cpu_ms_per_model": ms, "model_file_bytes": len(f.model_bytes(f.keys[0])),
                       "chunk_sizes": f.info["chunk_sizes"], "tasks": f.info["tasks"]}
                res["fleet"].append(row)
                print(f"fleet, {n} worker(s), chunksize {ch!s:>4}: {n_models / w:6.1f} models/s (median wall "
                      f"{w:.2f} s, speed-up vs loop {wall / w:.2f}x, {f.info['tasks']} tasks); CPU per model: "
                      f"{ms['task']:.1f} ms in the tasks, {ms['worker']:.1f} ms in the worker processes, "
                      f"{ms['here']:.1f} ms in the client + scheduler")
            print(f"   empty tasks on {n} worker(s): {res['empty_tasks_per_s'][n]:.0f} tasks/s")
        finally:
            client.close()
            c.close()
    if not a.no_warmup_costs:
        res["warmup"] = warmup_costs(max(workers))
        for label, r in res["warmup"].items():
            print(f"warm-up ({label}), per worker: " + ", ".join(f"{s:.2f} s" for s in r["per_worker"]))
    res["loadavg_end"] = os.getloadavg()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
