"""Forecast tomorrow's minimum temperature in Melbourne with a stacked LSTM.

Ten years of daily minimum temperatures (1981-1990, 3650 days; Australian Bureau of
Meteorology). The model -- the source articles' stacked forecaster, LSTM(50,
return_sequences=True) -> Dropout(0.2) -> LSTM(100) -> Dropout(0.2) -> Dense(1) -- reads the
last 30 days and predicts the next one. Training uses 1981-1989; the last 365 days (1990)
are the test set, never seen in training, and the scaling is fitted on the training part
only (the ``edgernn.forecast`` pipeline, as in ``forecast_airline.py``).

Daily weather is noisy, so the honest yardsticks are:

- naive: tomorrow = today (hard to beat: temperatures are persistent);
- seasonal naive: tomorrow = the same day last year (the seasonal cycle, but not the weather).

Run:  python examples/forecast_temperatures.py            (under a minute on 2 cores)
      python examples/forecast_temperatures.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes forecast_temperatures.png.
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from edgernn.datasets import load_temperatures  # noqa: E402
from edgernn.forecast import ForecastConfig, fit_forecaster  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG (default: current directory)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 20, quick 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.epochs is None:
        args.epochs = 1 if args.quick else 20
    return args


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    dates, values = load_temperatures()
    test_size = 365
    if args.quick:  # the last four years only, a smaller model
        dates, values = dates[-4 * 365:], values[-4 * 365:]
    units = (16,) if args.quick else (50, 100)
    cfg = ForecastConfig(window=30, test_size=test_size, cell="lstm", units=units, dropout=0.2,
                         epochs=args.epochs, batch_size=32, learning_rate=0.003, seed=args.seed,
                         log=False)  # temperatures can be 0: no log transform
    print(f"Melbourne daily minimum temperature, {len(values)} days ({dates[0]} .. {dates[-1]}); "
          f"train on the first {len(values) - test_size}, test on the last {test_size} ({dates[-test_size][:4]}).")

    t0 = time.perf_counter()
    model, rep = fit_forecaster(values, cfg, verbose=0)
    seconds = time.perf_counter() - t0
    model.summary()
    print(f"trained {cfg.epochs} epochs in {seconds:.1f} s")

    # Baselines for daily data, computed here for the same test days.
    t = rep["test_index"]
    y_true = rep["y_true"]
    naive = values[t - 1]  # tomorrow = today
    seasonal = values[t - 365]  # the same day last year (the source has no 29 February)
    r_model, r_naive, r_seasonal = rmse(rep["y_pred"], y_true), rmse(naive, y_true), rmse(seasonal, y_true)
    mae = float(np.mean(np.abs(rep["y_pred"] - y_true)))
    print(f"\nTest RMSE, one day ahead over {test_size} days (degrees C):")
    print(f"  stacked LSTM                        {r_model:5.3f}   (MAE {mae:.3f})")
    print(f"  naive (tomorrow = today)            {r_naive:5.3f}")
    print(f"  seasonal naive (same day last year) {r_seasonal:5.3f}")
    print(f"  LSTM / naive {r_model / r_naive:.3f}; LSTM / seasonal naive {r_model / r_seasonal:.3f}")

    # ---- plot ------------------------------------------------------------------------------
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(15, 7.5), gridspec_kw={"height_ratios": [1, 1.3]})
    x = np.arange(len(values))
    ax.plot(x, values, color="0.6", lw=0.5, label="series")
    ax.axvspan(t[0], t[-1], color="tab:red", alpha=0.08, label="test year (never seen in training)")
    ticks = x[::365]
    ax.set_xticks(ticks)
    ax.set_xticklabels([dates[i][:4] for i in ticks], fontsize=8)
    ax.set_ylabel("min temperature (C)")
    ax.set_title("Melbourne daily minimum temperature")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the data
    ax2.plot(t, y_true, color="k", lw=1.0, label="truth")
    ax2.plot(t, rep["y_pred"], color="tab:red", lw=1.2, label=f"stacked LSTM, one day ahead (RMSE {r_model:.2f})")
    ax2.plot(t, seasonal, color="tab:blue", lw=0.8, ls="--", alpha=0.7,
             label=f"seasonal naive, same day last year (RMSE {r_seasonal:.2f})")
    ax2.plot([], [], " ", label=f"naive, tomorrow = today: RMSE {r_naive:.2f}")
    month_starts = [i for i in t if dates[i].endswith("-01")]
    ax2.set_xticks(month_starts)
    ax2.set_xticklabels([dates[i][:7] for i in month_starts], fontsize=8, rotation=30)
    ax2.set_ylabel("min temperature (C)")
    ax2.set_title(f"test year {dates[t[0]][:4]}: forecasts against truth")
    ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the data
    fig.tight_layout()
    png = os.path.join(args.out, "forecast_temperatures.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
