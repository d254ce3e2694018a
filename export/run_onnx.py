#!/usr/bin/env python3
"""Run an edgernn streaming ONNX graph on a device: one sample in, one prediction out.

Needs only numpy and onnxruntime (no edgernn, no numba)::

    python3 run_onnx.py model_stream.onnx samples.csv          # CSV rows from a file
    some_sensor_reader | python3 run_onnx.py model_stream.onnx   # or from stdin ("-")
    python3 run_onnx.py model_stream.onnx --bench 5000          # latency only, synthetic input

Each CSV row is one time step of one stream: its ``features`` numbers (a token id for a model
that starts with an Embedding), or the one field ``--column`` picks. The delimiter is detected
from the first line (tab, ``;`` -- with decimal commas --, ``|``, else ``,``) or set with
``--delimiter``; a UTF-8 BOM, blank lines and a header line (no field a number) are skipped.
Anything else that is not finite numbers -- a field that does not parse, NaN or inf, a token id
outside the vocabulary, non-UTF-8 bytes, a line over 1 MiB -- stops the run with a one-line
error naming the line, exit status 2. The recurrent states start at zero and are carried from
step to step, so row ``t``'s prediction is what ``model.predict`` gives for the sequence of rows
``0..t``. For a forecaster exported by ``edgernn export`` (raw values in), row ``t`` prints
what ``edgernn predict`` prints for rows ``0..t`` (``nan`` until the model's window is full).
Predictions go to stdout, one line per row (comma-separated when the model has several
outputs); the latency report goes to stderr.

Latency is measured per step around the onnxruntime call only (I/O excluded), with
preallocated input/output buffers bound once (``io_binding``), and reported as p50/p90/p99 in
microseconds. ``--plain`` measures the ordinary ``session.run`` call instead.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
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
            raise InputError(f"{path}: this is a full-sequence graph; export with --streaming "
                             "(edgernn export model.npz model_stream.onnx --streaming)")
        self.meta = meta
        inputs = {i.name: i for i in self.sess.get_inputs()}
        if "x" not in inputs:
            raise InputError(f"{path}: no input named 'x'; not an edgernn streaming graph")
        xin = inputs["x"]
        self.ids = xin.type == "tensor(int64)"
        self.vocabulary = int(meta.get("vocabulary_size", 2**62)) if self.ids else None
        self.positive = meta.get("input_domain") == "positive"  # a forecaster in log space
        self.features = None if self.ids else int(xin.shape[-1])
        self.x = np.zeros((1,) if self.ids else (1, self.features), np.int64 if self.ids else np.float32)
        self.state_in = {n: np.zeros((1, int(i.shape[-1])), np.float32) for n, i in inputs.items()
                         if n != "x"}  # every state starts at zero (a forecaster's window and count too)
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

    def step(self, sample, copy=True):
        """One time step; returns the prediction.

        Parameters
        ----------
        sample : array_like
            ``features`` numbers (a token id for an Embedding model).
        copy : bool
            True (default): a new array the caller can keep. False: the bound output buffer,
            overwritten by the next step (no allocation).
        """
        self.x[0] = sample
        self._run()
        for out_name, in_name in self.state_map.items():
            np.copyto(self.state_in[in_name], self.state_out[out_name])
        return self.y[0].copy() if copy else self.y[0]


class InputError(Exception):
    """Bad input (CSV rows, arguments, the model file): reported as one line, exit status 2."""


MAX_LINE = 1 << 20  # bytes; a longer line is refused (a runaway or binary input)
_LETTER = re.compile(r"[^\W\d]")  # a header names its columns: no field a number, some field a word
_DECIMAL_COMMA = re.compile(r"^[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?$")


def _detect_delimiter(line):
    """The delimiter of a CSV line: tab, ';' or '|' when present (';' goes with decimal commas), else ','."""
    for d in ("\t", ";", "|"):
        if d in line:
            return d
    return ","


def _lines(fh, name):
    """Decoded, numbered lines of a binary stream; one line at a time (live input works)."""
    k = 0
    while True:
        raw = fh.readline(MAX_LINE + 1)
        if not raw:
            return
        k += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            raise InputError(f"{name}, line {k}: longer than {MAX_LINE} bytes; not a CSV row")
        if b"\x00" in raw:
            raise InputError(f"{name}, line {k}: contains NUL bytes; a binary file, not CSV text")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{name}, line {k}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                             "save the file as UTF-8 (or plain ASCII)") from None
        if k == 1:
            text = text.lstrip("\ufeff")  # a UTF-8 BOM (Excel)
        yield k, text.rstrip("\r\n")


def _number(cell, delimiter):
    c = cell.strip().strip('"').strip()
    if delimiter != "," and _DECIMAL_COMMA.match(c):
        c = c.replace(",", ".")
    return float(c)


def _rows(fh, runner, name="<stdin>", delimiter=None, column=None):
    """Parse CSV rows into numbers: yields (line number, values).

    Blank lines are skipped, and so is a first line in which no field is a number and some
    field has a letter (a header; reported on stderr). Every other line must hold finite numbers: the model's feature
    count, or one value picked by ``column``. Token ids must be integers in the vocabulary.
    """
    ids = runner.ids
    want = 1 if ids else runner.features
    header = None
    j = None
    seen = False
    for k, line in _lines(fh, name):
        if not line.strip():
            continue
        d = delimiter or _detect_delimiter(line)
        delimiter = d
        cells = [c.strip() for c in next(csv.reader([line], delimiter=d))]
        if not seen:
            seen = True
            parsed = []
            for c in cells:
                try:
                    parsed.append(_number(c, d))
                except ValueError:
                    parsed.append(None)
            if cells and all(v is None for v in parsed) and any(_LETTER.search(c) for c in cells):
                header = [c.strip('"').strip() for c in cells]
                sys.stderr.write(f"{name}, line {k}: header skipped: {line.strip()[:200]}\n")
                continue
        if j is None:
            j = _pick_column(column, header, runner, cells, want, name, k)
        if j is not None:
            if j >= len(cells):
                raise InputError(f"{name}, line {k}: {len(cells)} field(s), no column {j} (delimiter {d!r})")
            cells = [cells[j]]
        elif len(cells) != want:
            raise InputError(f"{name}, line {k}: expected {want} number{'s' if want > 1 else ''}, got "
                             f"{len(cells)} fields (delimiter {d!r}; --column picks one field, --delimiter "
                             "sets the delimiter)")
        vals = []
        for c in cells:
            try:
                v = _number(c, d)
            except ValueError:
                raise InputError(f"{name}, line {k}: not a number: {c[:80]!r}") from None
            if not math.isfinite(v):
                raise InputError(f"{name}, line {k}: not a finite number: {c[:80]!r} (NaN/inf would poison "
                                 "the recurrent state)")
            vals.append(v)
        if ids:
            v = vals[0]
            if v != int(v) or not 0 <= v < runner.vocabulary:
                raise InputError(f"{name}, line {k}: token id {cells[0][:40]} is not an integer in "
                                 f"[0, {runner.vocabulary})")
            vals = [int(v)]
        elif runner.positive and min(vals) <= 0:
            raise InputError(f"{name}, line {k}: {cells[0][:40]}: this model takes positive values only "
                             "(it forecasts in log space)")
        yield k, vals


def _pick_column(column, header, runner, cells, want, name, k):
    """Index of the one field to read, or None to read every field."""
    if column is None:
        trained = runner.meta.get("input_column")
        if want == 1 and len(cells) > 1 and trained is not None and header is not None and trained in header:
            return header.index(trained)
        return None
    if want != 1:
        raise InputError(f"--column: the model takes {want} features per step; it reads every field")
    if column.isdigit():
        return int(column)
    if header is None or column not in header:
        raise InputError(f"{name}, line {k}: no column named {column!r} "
                         f"(columns: {header if header else 'the input has no header line'})")
    return header.index(column)


def _percentiles(ts):
    us = np.asarray(ts) * 1e6
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return f"p50 {p50:.1f} us, p90 {p90:.1f} us, p99 {p99:.1f} us, mean {us.mean():.1f} us over {us.size} steps"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("model", help="streaming ONNX graph (edgernn export ... --streaming)")
    ap.add_argument("samples", nargs="?", default="-", help="CSV file, one time step per row ('-': stdin)")
    ap.add_argument("--column", default=None,
                    help="one-feature models: the CSV column to read, a header name or 0-based index "
                         "(default: the column the model was trained on when the header has it, else the "
                         "only field)")
    ap.add_argument("--delimiter", default=None,
                    help="field delimiter (default: detected from the first line: tab, ';', '|', else ',')")
    ap.add_argument("--bench", type=int, default=0, metavar="N",
                    help="time N extra steps on random input after the samples (no output)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps before timing")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--plain", action="store_true", help="time session.run instead of io_binding")
    ap.add_argument("--quiet", action="store_true", help="do not print predictions")
    ap.add_argument("--fmt", default="%.7g", help="number format of the predictions")
    args = ap.parse_args(argv)
    try:
        return _main(args)
    except InputError as exc:
        sys.stderr.write(f"run_onnx.py: error: {exc}\n")
        return 2
    except BrokenPipeError:  # e.g. piped into head
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


def _main(args):
    if args.bench < 0 or args.warmup < 0 or args.threads < 1:
        raise InputError("--bench and --warmup must be >= 0, --threads >= 1")
    if not os.path.isfile(args.model):
        raise InputError(f"{args.model}: no such file")
    try:
        runner = StreamRunner(args.model, threads=args.threads, io_binding=not args.plain)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors for a file that is not a model
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load {args.model}: {msg[:300]}") from None
    states = json.loads(runner.meta.get("states", "[]"))
    sys.stderr.write(f"{args.model}: input x {'(1,) token id' if runner.ids else f'(1, {runner.features})'}, "
                     f"{len(states)} state tensors, onnxruntime {ort.__version__}, "
                     f"{'io_binding' if runner.binding is not None else 'session.run'}\n")
    if "preprocessing" in runner.meta:
        pp = json.loads(runner.meta["preprocessing"])
        sys.stderr.write(f"forecaster: raw values in; row t prints the forecast {pp['horizon']} step(s) after it, "
                         f"nan for the first {int(pp['window']) - 1} rows (window {pp['window']})\n")
    out = sys.stdout
    times = []
    if args.bench == 0 or args.samples != "-" or not sys.stdin.isatty():
        if args.samples == "-":
            fh, name = sys.stdin.buffer, "<stdin>"
        else:
            if os.path.isdir(args.samples):
                raise InputError(f"{args.samples} is a directory, not a CSV file")
            try:
                fh = open(args.samples, "rb")  # noqa: SIM115
            except OSError as exc:
                raise InputError(f"cannot read {args.samples}: {exc.strerror or exc}") from None
            name = args.samples
        try:
            clock = time.perf_counter
            for _, vals in _rows(fh, runner, name, args.delimiter, args.column):
                t0 = clock()
                y = runner.step(vals[0] if runner.ids else vals, copy=False)
                times.append(clock() - t0)
                if not args.quiet:
                    out.write(",".join(args.fmt % v for v in y) + "\n")
                    if fh is sys.stdin.buffer:
                        out.flush()  # live input: one line in, one line out
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()
        out.flush()
        if times:
            skip = args.warmup if len(times) > 2 * args.warmup else min(1, len(times) - 1)
            sys.stderr.write(f"per-step latency ({len(times)} samples, first {skip} excluded): "
                             f"{_percentiles(times[skip:])}\n")
        elif args.bench == 0:
            raise InputError(f"{name}: no data rows")
    if args.bench > 0:
        rng = np.random.default_rng(0)
        if runner.ids:
            xs = rng.integers(0, min(runner.vocabulary, 2**31), size=args.bench + args.warmup)
        elif runner.positive:
            xs = np.exp(rng.standard_normal((args.bench + args.warmup, runner.features))).astype(np.float32)
        else:
            xs = rng.standard_normal((args.bench + args.warmup, runner.features)).astype(np.float32)
        runner.reset()
        bt = np.empty(args.bench)
        clock = time.perf_counter
        for k in range(args.warmup):
            runner.step(xs[k], copy=False)
        for k in range(args.bench):
            t0 = clock()
            runner.step(xs[args.warmup + k], copy=False)
            bt[k] = clock() - t0
        sys.stderr.write(f"benchmark latency: {_percentiles(bt)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
