"""The ``edgernn`` command line: demo, train, predict, info, export.

Bad arguments and unreadable files print one line on stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time

import numpy as np

logger = logging.getLogger("edgernn")


class CLIError(Exception):
    """An error reported to the user as one line."""


def _out(*args):
    sys.stdout.write(" ".join(str(a) for a in args) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------
def _read_column(path, column):
    """Read one numeric column of a CSV file (by name or 0-based index; default: last column)."""
    try:
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not rows:
        raise CLIError(f"{path}: no rows")
    header = None
    try:
        float(rows[0][-1] if column is None or not str(column).isdigit() else rows[0][int(column)])
    except (ValueError, IndexError):
        header, rows = [h.strip().strip('"') for h in rows[0]], rows[1:]
    if column is None:
        j = len(rows[0]) - 1
    elif str(column).isdigit():
        j = int(column)
    else:
        if header is None or column not in header:
            raise CLIError(f"{path}: no column named {column!r} (columns: {header})")
        j = header.index(column)
    vals = []
    for k, r in enumerate(rows):
        try:
            vals.append(float(r[j].strip().strip('"')))
        except (ValueError, IndexError):
            raise CLIError(f"{path}, row {k + 2 if header else k + 1}: not a number in column {column!r}: {r}") from None
    if len(vals) < 3:
        raise CLIError(f"{path}: need at least 3 values, got {len(vals)}")
    return np.asarray(vals, dtype=np.float64)


def _plot(path, report, title, dates=None, values=None):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; no plot written (pip install 'edgernn[plot]')")
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    idx = report["test_index"]
    x_all = np.arange(len(values))
    ax.plot(x_all, values, color="0.6", lw=1, label="series")
    ax.plot(idx, report["y_true"], color="k", lw=1.5, label="truth (test)")
    ax.plot(idx, report["y_pred"], color="tab:red", lw=1.5, marker="o", ms=3,
            label=f"edgernn forecast (RMSE {report['rmse']:.1f})")
    ax.plot(idx, report["baseline_pred"], color="tab:blue", lw=1, ls="--",
            label=f"{report['baseline']} (RMSE {report['baseline_rmse']:.1f})")
    if dates is not None:
        ticks = x_all[:: max(1, len(x_all) // 12)]
        ax.set_xticks(ticks)
        ax.set_xticklabels([dates[i] for i in ticks], rotation=45, ha="right", fontsize=8)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
def cmd_demo(args):
    from . import datasets
    from .forecast import ForecastConfig, fit_forecaster

    os.makedirs(args.out, exist_ok=True)
    dates, values = datasets.load_airline()
    cfg = ForecastConfig(epochs=args.epochs if args.epochs else (8 if args.quick else 60), seed=args.seed)
    _out(f"edgernn demo: stacked {cfg.cell.upper()} {list(cfg.units)} forecaster on airline passengers "
         f"({len(values)} months, {dates[0]}..{dates[-1]}); test = last {cfg.test_size} months")
    t0 = time.perf_counter()
    model, rep = fit_forecaster(values, cfg, verbose=0 if args.quiet else 1)
    dt = time.perf_counter() - t0
    _out(model.summary())
    _out(f"trained {cfg.epochs} epochs in {dt:.1f} s")
    _out(f"test RMSE (one step ahead, {cfg.test_size} months): edgernn {rep['rmse']:.2f}   "
         f"{rep['baseline']} {rep['baseline_rmse']:.2f}   "
         f"ratio {rep['rmse'] / rep['baseline_rmse']:.2f}")
    mpath = os.path.join(args.out, "airline_model.npz")
    model.save(mpath)
    _out(f"saved model: {mpath}")
    ppath = _plot(os.path.join(args.out, "airline_forecast.png"), rep,
                  "edgernn: airline passengers, one-step forecast on the held-out 24 months", dates, values)
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
                eonnx.export(model, opath, streaming=streaming)
                report = eonnx.verify(model, opath)
                _out(f"exported {opath}: verified against onnxruntime, {_fmt_report(report)}")
            lat_ort = _ort_stream_latency(opath)
            _out(f"onnxruntime streaming graph per step (session.run, 1 thread): median {lat_ort[0]:.1f} us, "
                 f"p99 {lat_ort[1]:.1f} us; export/run_onnx.py measures its io_binding style")
    return 0


def _fmt_report(report):
    if isinstance(report, dict):
        return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in report.items()
                         if not isinstance(v, (list, dict)))
    return str(report)


def cmd_train(args):
    from .forecast import ForecastConfig, fit_forecaster

    values = _read_column(args.csv, args.column)
    try:
        units = tuple(int(u) for u in str(args.units).split(","))
    except ValueError:
        raise CLIError(f"--units: expected comma-separated integers, got {args.units!r}") from None
    if any(u < 1 for u in units) or args.window < 1 or args.horizon < 1 or args.epochs < 1:
        raise CLIError("--units, --window, --horizon and --epochs must be positive")
    cfg = ForecastConfig(window=args.window, horizon=args.horizon, test_size=args.test_size, cell=args.cell,
                         units=units, epochs=args.epochs, seed=args.seed, season=args.season)
    try:
        model, rep = fit_forecaster(values, cfg, verbose=0 if args.quiet else 1)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    model.save(args.out)
    _out(f"test RMSE (last {cfg.test_size} points): {rep['rmse']:.4g}; {rep['baseline']}: {rep['baseline_rmse']:.4g}")
    _out(f"saved model: {args.out}")
    return 0


def _load(path):
    from .saving import load_model

    if not os.path.exists(path):
        raise CLIError(f"no such file: {path}")
    try:
        return load_model(path)
    except (ValueError, OSError) as exc:
        raise CLIError(f"cannot load {path}: {exc}") from None


def cmd_predict(args):
    from .forecast import forecast_next

    model = _load(args.model)
    values = _read_column(args.csv, args.column)
    try:
        y = forecast_next(model, values)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    _out(f"{y:.6g}")
    return 0


def cmd_info(args):
    model = _load(args.model)
    _out(model.summary())
    if getattr(model, "meta", None):
        for k, v in model.meta.items():
            _out(f"{k}: {v}")
    return 0


def cmd_export(args):
    try:
        from . import onnx as eonnx
    except ImportError as exc:
        raise CLIError(f"ONNX export needs onnx and onnxruntime: pip install 'edgernn[onnx]' ({exc})") from None
    model = _load(args.model)
    try:
        path = eonnx.export(model, args.output, streaming=args.streaming, opset=args.opset)
        if args.no_verify:
            _out(f"exported {path} (not verified)")
            return 0
        report = eonnx.verify(model, path)
    except (ValueError, NotImplementedError) as exc:
        raise CLIError(str(exc)) from None
    _out(f"exported {path}; verified against onnxruntime: {_fmt_report(report)}")
    return 0


# ----------------------------------------------------------------------------------------
def build_parser():
    p = argparse.ArgumentParser(prog="edgernn", description="Numba-accelerated RNN/LSTM/GRU for small CPUs.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train the articles' stacked-LSTM forecaster on the shipped airline data")
    d.add_argument("--out", default="edgernn-demo", help="output directory (default: ./edgernn-demo)")
    d.add_argument("--epochs", type=int, default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quick", action="store_true", help="a few epochs only (smoke test)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.add_argument("--no-export", action="store_true", help="skip the ONNX export and check")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a one-step forecaster on a CSV column")
    t.add_argument("csv")
    t.add_argument("--column", default=None, help="column name or 0-based index (default: last)")
    t.add_argument("--window", type=int, default=24)
    t.add_argument("--horizon", type=int, default=1)
    t.add_argument("--test-size", type=int, default=24)
    t.add_argument("--season", type=int, default=12, help="period of the seasonal-naive baseline (1 = naive)")
    t.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    t.add_argument("--units", default="50,100", help="units per recurrent layer, e.g. 64 or 50,100")
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="model.npz")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="forecast the next value after a CSV column's end")
    pr.add_argument("model")
    pr.add_argument("csv")
    pr.add_argument("--column", default=None)
    pr.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="print a saved model's summary")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("export", help="export a saved model to ONNX and verify it with onnxruntime")
    e.add_argument("model")
    e.add_argument("output")
    e.add_argument("--streaming", action="store_true", help="single-step graph with explicit states")
    e.add_argument("--opset", type=int, default=None)
    e.add_argument("--no-verify", action="store_true")
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
