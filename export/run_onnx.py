#!/usr/bin/env python3
"""Run an edgernn streaming ONNX graph on a device: one sample in, one prediction out.

Needs only numpy and onnxruntime (no edgernn, no numba)::

    python3 run_onnx.py model_stream.onnx samples.csv          # CSV rows from a file
    some_sensor_reader | python3 run_onnx.py model_stream.onnx   # or from stdin ("-")
    python3 run_onnx.py model_stream.onnx --bench 5000          # latency only, synthetic input

Each CSV row is one time step of one stream: its ``features`` numbers (a token id for a model
that starts with an Embedding). A header row and blank lines are skipped. The recurrent
states start at zero and are carried from step to step, so row ``t``'s prediction is what
``model.predict`` gives for the sequence of rows ``0..t``. Predictions go to stdout, one line
per row (comma-separated when the model has several outputs); the latency report goes to
stderr.

Latency is measured per step around the onnxruntime call only (I/O excluded), with
preallocated input/output buffers bound once (``io_binding``), and reported as p50/p90/p99 in
microseconds. ``--plain`` measures the ordinary ``session.run`` call instead.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time

import numpy as np
import onnxruntime as ort


class StreamRunner:
    """Step a streaming graph, carrying its states.

    Parameters
    ----------
    path : str
        Streaming graph written by ``edgernn.onnx.export(..., streaming=True)``.
    threads : int
        onnxruntime intra-op threads (1 is fastest for these small graphs).
    io_binding : bool
        Preallocated, bound buffers (fastest); else ``session.run`` with a dict.
    """

    def __init__(self, path, threads=1, io_binding=True):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        meta = self.sess.get_modelmeta().custom_metadata_map
        if meta.get("graph", "streaming") != "streaming":
            raise SystemExit(f"{path}: this is a full-sequence graph; export with --streaming "
                             "(edgernn export model.npz model_stream.onnx --streaming)")
        self.meta = meta
        inputs = {i.name: i for i in self.sess.get_inputs()}
        if "x" not in inputs:
            raise SystemExit(f"{path}: no input named 'x'; not an edgernn streaming graph")
        xin = inputs["x"]
        self.ids = xin.type == "tensor(int64)"
        self.features = None if self.ids else int(xin.shape[-1])
        self.x = np.zeros((1,) if self.ids else (1, self.features), np.int64 if self.ids else np.float32)
        self.state_in = {n: np.zeros((1, int(i.shape[-1])), np.float32) for n, i in inputs.items()
                         if n != "x"}
        outs = [o.name for o in self.sess.get_outputs()]
        self.state_map = {n: n[: -len("_out")] for n in outs if n.endswith("_out") and n[:-4] in self.state_in}
        self.y_name = "y"
        yshape = next(o for o in self.sess.get_outputs() if o.name == "y").shape
        self.y = np.zeros((1, int(yshape[-1])), np.float32)
        self.state_out = {n: np.zeros_like(self.state_in[s]) for n, s in self.state_map.items()}
        self.binding = None
        if io_binding:
            try:
                self._bind()
            except Exception:  # noqa: BLE001 - an onnxruntime without OrtValue/io_binding support
                self.binding = None

    def _bind(self):
        b = self.sess.io_binding()
        ov = ort.OrtValue.ortvalue_from_numpy
        self._keep = []  # OrtValues share memory with the numpy buffers; keep them alive
        for name, arr in [("x", self.x), *self.state_in.items()]:
            v = ov(arr)
            self._keep.append(v)
            b.bind_ortvalue_input(name, v)
        for name, arr in [(self.y_name, self.y), *self.state_out.items()]:
            v = ov(arr)
            self._keep.append(v)
            b.bind_ortvalue_output(name, v)
        self.binding = b
        self.step(self.x[0])  # check that outputs land in the buffers
        self.reset()

    def reset(self):
        """Zero the states (start a new stream)."""
        for a in self.state_in.values():
            a[...] = 0.0

    def _run(self):
        if self.binding is not None:
            self.sess.run_with_iobinding(self.binding)
            return
        feeds = {"x": self.x, **self.state_in}
        res = self.sess.run(None, feeds)
        for o, r in zip(self.sess.get_outputs(), res, strict=True):
            if o.name == self.y_name:
                self.y[...] = r
            elif o.name in self.state_out:
                self.state_out[o.name][...] = r

    def step(self, sample):
        """One time step; returns the prediction (a view into the output buffer)."""
        self.x[0] = sample
        self._run()
        for out_name, in_name in self.state_map.items():
            np.copyto(self.state_in[in_name], self.state_out[out_name])
        return self.y[0]


def _rows(fh, ids):
    """Parse CSV rows into numbers, skipping blank lines and a header."""
    for k, row in enumerate(csv.reader(fh)):
        cells = [c.strip() for c in row if c.strip()]
        if not cells:
            continue
        try:
            vals = [int(float(c)) for c in cells] if ids else [float(c) for c in cells]
        except ValueError:
            if k == 0:
                continue  # header
            raise SystemExit(f"row {k + 1}: not numbers: {row}") from None
        yield vals


def _percentiles(ts):
    us = np.asarray(ts) * 1e6
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return f"p50 {p50:.1f} us, p90 {p90:.1f} us, p99 {p99:.1f} us, mean {us.mean():.1f} us over {us.size} steps"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="streaming ONNX graph (edgernn export ... --streaming)")
    ap.add_argument("samples", nargs="?", default="-", help="CSV file, one time step per row ('-': stdin)")
    ap.add_argument("--bench", type=int, default=0, metavar="N",
                    help="time N extra steps on random input after the samples (no output)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps before timing (default 20)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plain", action="store_true", help="time session.run instead of io_binding")
    ap.add_argument("--quiet", action="store_true", help="do not print predictions")
    ap.add_argument("--fmt", default="%.7g", help="number format of the predictions (default %%.7g)")
    args = ap.parse_args(argv)

    runner = StreamRunner(args.model, threads=args.threads, io_binding=not args.plain)
    states = json.loads(runner.meta.get("states", "[]"))
    sys.stderr.write(f"{args.model}: input x {'(1,) token id' if runner.ids else f'(1, {runner.features})'}, "
                     f"{len(states)} state tensors, onnxruntime {ort.__version__}, "
                     f"{'io_binding' if runner.binding is not None else 'session.run'}\n")
    out = sys.stdout
    times = []
    if args.bench == 0 or args.samples != "-" or not sys.stdin.isatty():
        fh = sys.stdin if args.samples == "-" else open(args.samples, newline="")  # noqa: SIM115
        try:
            clock = time.perf_counter
            for k, vals in enumerate(_rows(fh, runner.ids)):
                want = 1 if runner.ids else runner.features
                if len(vals) != want:
                    raise SystemExit(f"sample {k + 1}: expected {want} numbers, got {len(vals)}")
                t0 = clock()
                y = runner.step(vals[0] if runner.ids else vals)
                times.append(clock() - t0)
                if not args.quiet:
                    out.write(",".join(args.fmt % v for v in y) + "\n")
        finally:
            if fh is not sys.stdin:
                fh.close()
        out.flush()
        if times:
            skip = args.warmup if len(times) > 2 * args.warmup else min(1, len(times) - 1)
            sys.stderr.write(f"per-step latency ({len(times)} samples, first {skip} excluded): "
                             f"{_percentiles(times[skip:])}\n")
    if args.bench > 0:
        rng = np.random.default_rng(0)
        if runner.ids:
            vocab = 2
            xs = rng.integers(0, vocab, size=args.bench + args.warmup)
        else:
            xs = rng.standard_normal((args.bench + args.warmup, runner.features)).astype(np.float32)
        runner.reset()
        bt = np.empty(args.bench)
        clock = time.perf_counter
        for k in range(args.warmup):
            runner.step(xs[k])
        for k in range(args.bench):
            t0 = clock()
            runner.step(xs[args.warmup + k])
            bt[k] = clock() - t0
        sys.stderr.write(f"benchmark latency: {_percentiles(bt)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
