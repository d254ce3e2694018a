"""The ``edgernn`` command line: demo, train, predict, info, export.

Bad arguments and unreadable files print one line on stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
import sys
import tempfile
import time
import zipfile

import numpy as np

logger = logging.getLogger("edgernn")


class CLIError(Exception):
    """An error reported to the user as one line."""


def _out(*args):
    sys.stdout.write(" ".join(str(a) for a in args) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------
# CSV input (export/run_onnx.py has the same rules in its own copy: it must not import edgernn)
_DELIMITERS = ("\t", ";", "|", ",")  # in order of preference when several split every line alike
_LETTER = re.compile(r"[^\W\d]")
_DECIMAL_COMMA = re.compile(r"^[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?$")


def _decode(path, data):
    if b"\x00" in data[:65536]:
        raise CLIError(f"{path}: a binary file, not CSV text")
    try:
        return data.decode("utf-8-sig")  # a UTF-8 BOM (Excel) is skipped
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CLIError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                       "save the file as UTF-8 (or plain ASCII) CSV") from None


def _sniff_delimiter(lines):
    """The delimiter that splits every sampled line into the same number (>1) of fields, or None."""
    sample = lines[:50]
    for d in _DELIMITERS:
        counts = {ln.count(d) for ln in sample}
        if len(counts) == 1 and counts.pop() > 0:
            return d
    for d in _DELIMITERS:  # a header with a different count (quoted names): judge the data lines
        counts = {ln.count(d) for ln in sample[1:]}
        if len(sample) > 1 and len(counts) == 1 and counts.pop() > 0:
            return d
    return None


def _not_number(cell, delimiter):
    try:
        _number(cell, delimiter)
    except ValueError:
        return True
    return False


def _number(cell, delimiter):
    c = cell.strip().strip('"').strip()
    if delimiter != "," and _DECIMAL_COMMA.match(c):
        c = c.replace(",", ".")
    return float(c)


def read_table(path, delimiter=None):
    """Rows of a CSV file as lists of strings, with their 1-based line numbers.

    Returns
    -------
    header : list of str or None
    rows : list of (line_number, list of str)
    delimiter : str
    """
    if path == "-":
        data = sys.stdin.buffer.read()
        path = "<stdin>"
    else:
        if os.path.isdir(path):
            raise CLIError(f"{path} is a directory, not a CSV file")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = _decode(path, data)
    numbered = [(k + 1, ln) for k, ln in enumerate(text.splitlines()) if ln.strip()]
    if not numbered:
        raise CLIError(f"{path}: empty file (no rows)")
    d = delimiter if delimiter else (_sniff_delimiter([ln for _, ln in numbered]) or ",")
    rows = []
    for (k, _ln), r in zip(numbered, csv.reader([ln for _, ln in numbered], delimiter=d), strict=True):
        rows.append((k, [c.strip() for c in r]))
    header = None
    first = rows[0][1]
    if first and all(_not_number(c, d) for c in first) and any(_LETTER.search(c) for c in first):
        header, rows = [c.strip('"').strip() for c in first], rows[1:]  # names, no numbers: a header
    if not rows:
        raise CLIError(f"{path}: no data rows (only a header line: {','.join(header)})")
    return header, rows, d


def _read_column(path, column, delimiter=None):
    """One numeric column of a CSV file (by name or 0-based index; default: the last).

    Returns
    -------
    values : ndarray (N,) float64
    column : str or int
        The column read: its header name when the file has a header, else its index.
    """
    header, rows, d = read_table(path, delimiter)
    where = "<stdin>" if path == "-" else path
    if column is None:
        j = len(rows[0][1]) - 1
    elif str(column).lstrip("-").isdigit():
        j = int(column)
        if j < 0:
            raise CLIError(f"--column: expected a column name or a 0-based index, got {column}")
    else:
        if header is None or column not in header:
            raise CLIError(f"{where}: no column named {column!r} (columns: "
                           f"{header if header else 'the file has no header line'})")
        j = header.index(column)
    vals = []
    for k, r in rows:
        if j >= len(r):
            raise CLIError(f"{where}, line {k}: {len(r)} field(s), no column {j}"
                           f" (delimiter {d!r}; --delimiter sets another)")
        try:
            x = _number(r[j], d)
        except ValueError:
            raise CLIError(f"{where}, line {k}: not a number: {r[j]!r}"
                           + (f" (delimiter {d!r}; --delimiter sets another)" if len(r) == 1 else "")) from None
        if not np.isfinite(x):
            raise CLIError(f"{where}, line {k}: not a finite number: {r[j]!r}")
        vals.append(x)
    if len(vals) < 3:
        raise CLIError(f"{where}: need at least 3 values, got {len(vals)}")
    name = header[j] if header is not None and j < len(header) and header[j] else j
    return np.asarray(vals, dtype=np.float64), name


# ----------------------------------------------------------------------------------------
# output paths: checked before any work, errors name the user's path
def _check_output_file(path, option):
    """Refuse an output file path that cannot be written, before training or exporting."""
    if not path:
        raise CLIError(f"{option}: empty path")
    if os.path.isdir(path):
        raise CLIError(f"{option} {path}: is a directory (give a file name, e.g. {os.path.join(path, 'model.npz')})")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CLIError(f"{option} {path}: directory {os.path.dirname(path) or parent} does not exist")
    _probe_dir(parent, f"{option} {path}")


def _probe_dir(directory, what):
    """Create and remove a file in ``directory``: the one reliable writability check."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".edgernn-probe-", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise CLIError(f"{what}: cannot write in {directory}: {exc.strerror or exc}") from None


def _check_output_dir(path, option):
    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{option} {path}: exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot create the directory: {exc.strerror or exc}") from None
    _probe_dir(path, f"{option} {path}")


def _save_model(model, path, option="--out"):
    """Save; if that fails after all (disk full, directory removed), keep the model elsewhere."""
    try:
        return model.save(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    rescue = os.path.join(tempfile.gettempdir(), f"edgernn-unsaved-{os.getpid()}-{int(time.time())}.npz")
    try:
        model.save(rescue)
    except OSError:
        raise CLIError(f"{option} {path}: cannot write the model ({reason}); it could not be saved anywhere") from None
    raise CLIError(f"{option} {path}: cannot write the model ({reason}); the trained model was saved to {rescue}")


def _stream_latency(model, n=2000):
    """Median and p99 per-step latency (us) of edgernn's streaming API, if available."""
    if not hasattr(model, "stream"):
        return None
    s = model.stream(batch_size=1)
    x = np.zeros(model.input_shape[-1], np.float32)
    for _ in range(50):
        s.step(x)
    ts = np.empty(n)
    for k in range(n):
        t0 = time.perf_counter()
        s.step(x)
        ts[k] = time.perf_counter() - t0
    return float(np.median(ts) * 1e6), float(np.percentile(ts, 99) * 1e6)


def _ort_stream_latency(path, n=2000):
    """Median and p99 per-step latency (us) of a streaming graph in onnxruntime, states fed back."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros((1, int(i.shape[-1])), np.float32) for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    back = [(k, o[: -len("_out")]) for k, o in enumerate(outs) if o.endswith("_out")]
    ts = np.empty(n)
    for k in range(n + 50):
        t0 = time.perf_counter()
        res = sess.run(outs, feeds)
        for j, name in back:
            feeds[name] = res[j]
        if k >= 50:
            ts[k - 50] = time.perf_counter() - t0
    return float(np.median(ts) * 1e6), float(np.percentile(ts, 99) * 1e6)


# ----------------------------------------------------------------------------------------
def _positive(value, option):
    if value < 1:
        raise CLIError(f"{option}: must be a positive integer, got {value}")
    return value


def cmd_demo(args):
    from . import datasets
    from .forecast import ForecastConfig, fit_forecaster, plot_forecast

    epochs = (8 if args.quick else 60) if args.epochs is None else _positive(args.epochs, "--epochs")
    _check_output_dir(args.out, "--out")
    dates, values = datasets.load_airline()
    cfg = ForecastConfig(epochs=epochs, seed=args.seed, column="Passengers")
    _out(f"edgernn demo: stacked {cfg.cell.upper()} {list(cfg.units)} forecaster on airline passengers "
         f"({len(values)} months, {dates[0]}..{dates[-1]}); test = last {cfg.test_size} months")
    t0 = time.perf_counter()
    model, rep = fit_forecaster(values, cfg, verbose=0 if args.quiet else 1)
    dt = time.perf_counter() - t0
    hist = getattr(model, "history", None)
    dt = getattr(hist, "train_seconds", 0.0) or dt  # the epochs only: compiling kernels is not training
    model.summary(print_fn=_out)
    _out(f"trained {cfg.epochs} epochs in {dt:.1f} s")
    _out(f"test RMSE (one step ahead, {cfg.test_size} months): edgernn {rep['rmse']:.2f}   "
         f"{rep['baseline']} {rep['baseline_rmse']:.2f}   "
         f"ratio {rep['rmse'] / rep['baseline_rmse']:.2f}")
    mpath = os.path.join(args.out, "airline_model.npz")
    _save_model(model, mpath, "--out")
    _out(f"saved model: {mpath}")
    try:
        ppath = plot_forecast(os.path.join(args.out, "airline_forecast.png"), rep, values, dates,
                              title="edgernn demo: airline passengers, one-step forecast of the held-out 24 months",
                              ylabel="passengers (thousands)")
    except ImportError:
        logger.warning("matplotlib is not installed; no plot written (pip install 'edgernn[plot]')")
        ppath = None
    if ppath:
        _out(f"plot: {ppath}")
    lat = _stream_latency(model)
    if lat:
        _out(f"edgernn streaming latency per step: median {lat[0]:.1f} us, p99 {lat[1]:.1f} us")
    if not args.no_export:
        try:
            from . import onnx as eonnx
        except ImportError as exc:
            _out(f"ONNX export skipped ({exc}); pip install 'edgernn[onnx]'")
        else:
            for streaming in (False, True):
                opath = os.path.join(args.out, "airline_model" + ("_stream" if streaming else "") + ".onnx")
                report = _export_file(eonnx, model, opath, streaming, None, verify=True, option="--out")
                _out(f"exported {opath} (raw passenger counts in, forecasts out): verified against "
                     f"onnxruntime, {_fmt_report(report)}")
            # the network alone, one step, as model.stream() runs it: the like-for-like comparison
            import onnx as _onnx

            net = os.path.join(tempfile.mkdtemp(prefix="edgernn-demo-"), "net_stream.onnx")
            _onnx.save(eonnx.build_model(model, streaming=True, preprocess=False), net)
            lat_ort = _ort_stream_latency(net)
            _out(f"onnxruntime, the same network one step (session.run, 1 thread): median {lat_ort[0]:.1f} us, "
                 f"p99 {lat_ort[1]:.1f} us; export/run_onnx.py measures its io_binding style")
            os.unlink(net)
            os.rmdir(os.path.dirname(net))
    return 0


def _fmt_report(report):
    if isinstance(report, dict):
        return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in report.items()
                         if not isinstance(v, (list, dict)))
    return str(report)


def cmd_train(args):
    from .forecast import ForecastConfig, fit_forecaster

    try:
        units = tuple(int(u) for u in str(args.units).split(","))
    except ValueError:
        raise CLIError(f"--units: expected comma-separated integers, got {args.units!r}") from None
    if any(u < 1 for u in units):
        raise CLIError(f"--units: every entry must be a positive integer, got {args.units!r}")
    for opt in ("window", "horizon", "epochs", "season"):
        _positive(getattr(args, opt), "--" + opt.replace("_", "-"))
    if args.test_size < 0:
        raise CLIError(f"--test-size: must be 0 (train on everything) or more, got {args.test_size}")
    _check_output_file(args.out, "--out")
    values, column = _read_column(args.csv, args.column, args.delimiter)
    cfg = ForecastConfig(window=args.window, horizon=args.horizon, test_size=args.test_size, cell=args.cell,
                         units=units, epochs=args.epochs, seed=args.seed, season=args.season, column=column)
    try:
        model, rep = fit_forecaster(values, cfg, verbose=0 if args.quiet else 1)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    _save_model(model, args.out, "--out")
    if cfg.test_size:
        _out(f"test RMSE (last {cfg.test_size} points): {rep['rmse']:.4g}; {rep['baseline']}: "
             f"{rep['baseline_rmse']:.4g}")
    else:
        _out(f"trained on all {len(values)} points (--test-size 0: no held-out test)")
    _out(f"saved model: {args.out} (column {column!r})")
    return 0


def _load(path):
    from .saving import load_model

    if not os.path.exists(path):
        raise CLIError(f"no such file: {path}")
    if os.path.isdir(path):
        raise CLIError(f"{path} is a directory, not a model file")
    if not zipfile.is_zipfile(path):
        raise CLIError(f"{path} is not an edgernn model file (expected a .npz written by model.save or "
                       "edgernn train)")
    try:
        return load_model(path)
    except Exception as exc:  # noqa: BLE001 - any malformed file: one line, never a traceback
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CLIError(f"cannot load {path}: {msg}") from None


def cmd_predict(args):
    from .forecast import _config_of, forecast_next

    model = _load(args.model)
    try:
        cfg = _config_of(model)
    except ValueError as exc:
        raise CLIError(f"{args.model}: {exc}") from None
    column = args.column if args.column is not None else cfg.column
    try:
        values, _ = _read_column(args.csv, column, args.delimiter)
    except CLIError as exc:
        if args.column is None and cfg.column is not None:
            raise CLIError(f"{exc} (the model was trained on column {cfg.column!r}; --column picks another)") \
                from None
        raise
    try:
        y = forecast_next(model, values)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    _out(f"{y:.6g}")
    return 0


def cmd_info(args):
    model = _load(args.model)
    model.summary(print_fn=_out)
    if getattr(model, "meta", None):
        for k, v in model.meta.items():
            _out(f"{k}: {v}")
    return 0


def _export_file(eonnx, model, path, streaming, opset, verify, option="output"):
    """Export and verify, with errors as one line naming ``path``; a graph that fails is removed.

    Returns
    -------
    report : VerifyReport or None
    """
    try:
        eonnx.export(model, path, streaming=streaming, opset=opset)
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot write: {exc.strerror or exc}") from None
    except (ValueError, NotImplementedError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    if not verify:
        return None
    try:
        return eonnx.verify(model, path)
    except (ValueError, NotImplementedError) as exc:
        os.unlink(path)
        raise CLIError(f"{path} removed: {str(exc).splitlines()[0]}") from None


def cmd_export(args):
    try:
        from . import onnx as eonnx
    except ImportError as exc:
        raise CLIError(f"ONNX export needs onnx and onnxruntime: pip install 'edgernn[onnx]' ({exc})") from None
    _check_output_file(args.output, "output")
    model = _load(args.model)
    report = _export_file(eonnx, model, args.output, args.streaming, args.opset, verify=not args.no_verify)
    if report is None:
        _out(f"exported {args.output} (not verified)")
    else:
        _out(f"exported {args.output}; verified against onnxruntime: {_fmt_report(report)}")
    return 0


# ----------------------------------------------------------------------------------------
class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, but not "(default: None)" or for flags."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    from . import __version__

    p = argparse.ArgumentParser(prog="edgernn", formatter_class=_Help,
                                description="Numba-accelerated RNN/LSTM/GRU for small CPUs.")
    p.add_argument("--version", action="version", version=f"edgernn {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="{demo,train,predict,info,export}")

    d = sub.add_parser("demo", formatter_class=_Help,
                       help="train the articles' stacked-LSTM forecaster on the shipped airline data")
    d.add_argument("--out", default="edgernn-demo", help="output directory")
    d.add_argument("--epochs", type=int, default=None, help="training epochs (default: 60; 8 with --quick)")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--quick", action="store_true", help="a few epochs only (smoke test)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.add_argument("--no-export", action="store_true", help="skip the ONNX export and check")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", formatter_class=_Help, help="train a one-step forecaster on a CSV column")
    t.add_argument("csv", help="CSV file ('-': stdin); delimiter detected, decimal commas read with ';'")
    t.add_argument("--column", default=None, help="column name or 0-based index (default: the last column)")
    t.add_argument("--delimiter", default=None, help="field delimiter (default: detected: , ; tab or |)")
    t.add_argument("--window", type=int, default=24, help="past values the model sees")
    t.add_argument("--horizon", type=int, default=1, help="steps ahead to forecast")
    t.add_argument("--test-size", type=int, default=24,
                   help="last values held out for the test RMSE (0: train on everything)")
    t.add_argument("--season", type=int, default=12, help="period of the seasonal-naive baseline (1 = naive)")
    t.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm", help="recurrent cell")
    t.add_argument("--units", default="50,100", help="units per recurrent layer, e.g. 64 or 50,100")
    t.add_argument("--epochs", type=int, default=60, help="training epochs")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--out", default="model.npz", help="model file to write")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", formatter_class=_Help,
                        help="forecast the next value after a CSV column's end")
    pr.add_argument("model", help="model file (.npz from edgernn train or demo)")
    pr.add_argument("csv", help="CSV file ('-': stdin)")
    pr.add_argument("--column", default=None,
                    help="column name or 0-based index (default: the column the model was trained on)")
    pr.add_argument("--delimiter", default=None, help="field delimiter (default: detected)")
    pr.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", formatter_class=_Help, help="print a saved model's summary")
    i.add_argument("model", help="model file (.npz)")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("export", formatter_class=_Help,
                       help="export a saved model to ONNX and verify it with onnxruntime")
    e.add_argument("model", help="model file (.npz)")
    e.add_argument("output", help="ONNX file to write")
    e.add_argument("--streaming", action="store_true", help="single-step graph with explicit states")
    e.add_argument("--opset", type=int, default=None,
                   help="ONNX opset, 14 or later (default: the newest the installed onnxruntime runs)")
    e.add_argument("--no-verify", action="store_true", help="skip the comparison with onnxruntime")
    e.set_defaults(func=cmd_export)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except CLIError as exc:
        sys.stderr.write(f"edgernn {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
