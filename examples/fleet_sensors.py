"""A fleet of forecasters: one small GRU per sensor, trained in parallel on a Dask LocalCluster.

Many synthetic hourly sensors, each with its own level, season (12, 24 or 48 hours), trend,
autocorrelated noise and noise level, plus a few broken ones: a run of missing values (NaN),
a stuck sensor (constant) and one that has only just been installed (too short). Each sensor
gets its own GRU(16) forecaster (``edgernn.forecast``: windows relative to the last value,
split by time, scale fitted on the training part), all trained by ``edgernn.fleet.fit`` on a
``LocalCluster`` with one single-threaded worker process per core. The data of half the
sensors is given as CSV files, read on the workers.

For every sensor the script reports the one-step-ahead RMSE on its last 48 hours (never seen
in training) against that sensor's seasonal-naive forecast (the value one season earlier),
lists the sensors that failed and why (the rest of the fleet is unaffected), saves the fleet
(one .npz per sensor plus an index), loads it back and forecasts the next hour of each sensor.

Run:  python examples/fleet_sensors.py            (about a minute on 2 cores)
      python examples/fleet_sensors.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes fleet_sensors.png and the fleet directory fleet_sensors_models/.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from edgernn import fleet  # noqa: E402
from edgernn.forecast import ForecastConfig  # noqa: E402

SEASONS = (24, 12, 48)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few sensors and epochs (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG and the saved fleet (default: .)")
    p.add_argument("--sensors", type=int, default=None, help="healthy sensors (default 40, quick 8)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 12, quick 2)")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: one per core)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.sensors is None:
        args.sensors = 8 if args.quick else 40
    if args.epochs is None:
        args.epochs = 2 if args.quick else 12
    return args


def make_sensors(n, hours, seed):
    """n healthy sensors and three broken ones. Returns (series by key, season by key)."""
    rng = np.random.default_rng(seed)
    t = np.arange(hours)
    series, seasons = {}, {}
    for i in range(n):
        season = SEASONS[i % len(SEASONS)]
        level = rng.uniform(20, 80)
        amp = rng.uniform(0.05, 0.3) * level
        trend = rng.uniform(-0.5, 0.5) * level / hours  # up to half the level over the record
        sigma = rng.uniform(0.01, 0.06) * level
        phi = rng.uniform(0.5, 0.9)  # AR(1) noise: the recent past says something about the next hour
        e = np.empty(hours)
        e[0] = rng.standard_normal() * sigma
        for k in range(1, hours):
            e[k] = phi * e[k - 1] + sigma * np.sqrt(1 - phi**2) * rng.standard_normal()
        shape = np.sin(2 * np.pi * t / season) + 0.3 * np.sin(4 * np.pi * t / season + rng.uniform(0, 6))
        series[f"sensor-{i:03d}"] = level + trend * t + amp * shape + e
        seasons[f"sensor-{i:03d}"] = season
    nan_run = level + amp * np.sin(2 * np.pi * t / 24) + rng.standard_normal(hours) * sigma
    nan_run[hours // 2: hours // 2 + 30] = np.nan  # a 30-hour outage
    series["broken-nan-run"], seasons["broken-nan-run"] = nan_run, 24
    series["broken-stuck"], seasons["broken-stuck"] = np.full(hours, 42.0), 24
    series["broken-new"], seasons["broken-new"] = series["sensor-000"][:40].copy(), 24
    return series, seasons


def check_series(values):
    """Runs on the worker before training: refuse a stuck sensor (the forecaster refuses NaN
    and too-short series by itself)."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if v.size > 1 and finite.size == v.size and np.ptp(finite) == 0:
        raise ValueError(f"constant series ({v[0]:g} for all {v.size} points): the sensor is stuck")
    return v


def make_build(seasons, epochs):
    def build(key, seed):
        season = seasons[key]
        return ForecastConfig(window=2 * season, test_size=48, cell="gru", units=(16,), dropout=0.0,
                              epochs=epochs, batch_size=64, learning_rate=0.005, season=season, seed=seed)
    return build


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    hours = 24 * (14 if args.quick else 28)
    series, seasons = make_sensors(args.sensors, hours, args.seed)
    print(f"{len(series)} sensors, {hours} hourly values each ({args.sensors} healthy, 3 broken); "
          f"one GRU(16) forecaster per sensor, {args.epochs} epochs, tested on the last 48 hours.")

    with tempfile.TemporaryDirectory() as tmp:
        # half the sensors arrive as CSV files: the workers read them (the data does not go
        # through this process)
        data = {}
        for i, (key, v) in enumerate(series.items()):
            if i % 2:
                path = os.path.join(tmp, f"{key}.csv")
                with open(path, "w") as fh:
                    fh.write("hour,value\n" + "".join(f"{h},{x:.10g}\n" for h, x in enumerate(v)))
                data[key] = path
            else:
                data[key] = v
        t0 = time.perf_counter()
        f = fleet.fit(make_build(seasons, args.epochs), data, prepare=check_series, seed=args.seed,
                      n_workers=args.workers, progress=True)
        wall = time.perf_counter() - t0
    info = f.info
    warm = sorted(r["seconds"] for r in info["warmup"].values())
    cpu = sum(r["cpu_seconds"] for r in f.records.values())
    print(f"\n{len(series)} keys ({len(f)} models, {len(f.failures)} failed) on {info['n_workers']} workers in "
          f"{info['fit_wall_seconds']:.1f} s ({len(series) / info['fit_wall_seconds']:.2f} keys/s; "
          f"{cpu:.1f} s of CPU in the tasks); "
          f"{wall:.1f} s with cluster start-up and worker warm-up "
          f"({', '.join(f'{w:.2f}' for w in warm)} s per worker)")

    # ---- per-sensor RMSE against each sensor's seasonal naive ----------------------------------
    ratios = {}
    print(f"\n{'sensor':<16}{'season':>7}{'GRU RMSE':>10}{'naive RMSE':>12}{'ratio':>7}")
    for key in f.keys:
        m = f.metrics[key]
        ratios[key] = m["rmse"] / m["baseline_rmse"]
        if len(ratios) <= 12 or args.quick:
            print(f"{key:<16}{seasons[key]:>6}h{m['rmse']:>10.3f}{m['baseline_rmse']:>12.3f}{ratios[key]:>7.2f}")
    if len(ratios) > 12 and not args.quick:
        print(f"... ({len(ratios) - 12} more)")
    r = np.array(list(ratios.values()))
    print(f"\nRMSE / seasonal-naive RMSE over {r.size} sensors: median {np.median(r):.2f}, "
          f"best {r.min():.2f}, worst {r.max():.2f}; the GRU beats the seasonal naive on "
          f"{int((r < 1).sum())} of {r.size}")
    print(f"\nfailed ({len(f.failures)}), the rest of the fleet unaffected:")
    for key, err in f.failures.items():
        print(f"  {key:<16} {err['type']}: {err['message']}")

    # ---- save, load, forecast the next hour --------------------------------------------------------
    d = f.save(os.path.join(args.out, "fleet_sensors_models"))
    g = fleet.load(d)
    nxt = g.forecast({k: series[k] for k in g.keys[:3]})
    print(f"\nsaved to {d}/ ({len(g)} models + index.json) and loaded back; next hour: "
          + ", ".join(f"{k} {v:.2f}" for k, v in nxt.items()))

    # ---- plot ----------------------------------------------------------------------------------------
    show = sorted(ratios, key=ratios.get)
    show = [show[0], show[len(show) // 2], show[-1]]  # best, median and worst sensor
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), gridspec_kw={"width_ratios": [2, 2, 2, 1.6]})
    for ax, key, label in zip(axes[:3], show, ("best", "median", "worst"), strict=True):
        fc = f.records[key]["forecast"]
        v = series[key]
        idx = np.asarray(fc["test_index"])
        lo = idx[0] - 3 * seasons[key]
        ax.plot(np.arange(lo, idx[0]), v[lo:idx[0]], color="0.6", lw=1, label="history")
        ax.plot(idx, fc["y_true"], color="k", lw=1.5, label="truth (test)")
        ax.plot(idx, fc["y_pred"], color="tab:red", lw=1.3,
                label=f"GRU, one step ahead (RMSE {f.metrics[key]['rmse']:.2f})")
        ax.plot(idx, fc["baseline_pred"], color="tab:blue", lw=1, ls="--",
                label=f"seasonal naive (RMSE {f.metrics[key]['baseline_rmse']:.2f})")
        ax.set_title(f"{label}: {key} (season {seasons[key]} h, RMSE ratio {ratios[key]:.2f})", fontsize=9)
        ax.set_xlabel("hour")
        ax.legend(fontsize=6.5, loc="best", framealpha=0.6)
    ax = axes[3]
    ax.hist(r, bins=min(20, max(5, r.size // 3)), color="tab:red", alpha=0.8)
    ax.axvline(1.0, color="k", ls="--", lw=1)
    ax.set_xlabel("RMSE / seasonal-naive RMSE")
    ax.set_ylabel("sensors")
    ax.set_title(f"{r.size} sensors, {len(f.failures)} failed", fontsize=9)
    fig.tight_layout()
    png = os.path.join(args.out, "fleet_sensors.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
