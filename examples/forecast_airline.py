"""Forecast the airline-passengers series with the source articles' stacked LSTM.

The model is LSTM(50, return_sequences=True) -> Dropout(0.2) -> LSTM(100) -> Dropout(0.2)
-> Dense(1), trained on the first 120 months (1949-1958) and tested on the last 24
(1959-1960), which it never sees during training. The forecasting pipeline
(``edgernn.forecast``, the same one behind ``edgernn demo``) keeps the evaluation honest:

- the split is by time;
- each input window is expressed relative to its last value in log space, so a trending
  series does not leave the range seen in training;
- the scale is fitted on the training part only.

Each test month is forecast one step ahead from the 24 true months before it. The yardstick
is the seasonal-naive forecast "same month last year", which is hard to beat on this series.

Run:  python examples/forecast_airline.py            (under a minute on 2 cores)
      python examples/forecast_airline.py --quick    (seconds; also EDGERNN_QUICK=1)
Writes forecast_airline.png.
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib
import numpy as np

matplotlib.use("Agg")

from edgernn.datasets import load_airline  # noqa: E402
from edgernn.forecast import ForecastConfig, fit_forecaster, plot_forecast  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few epochs only (seconds); also EDGERNN_QUICK=1")
    p.add_argument("--out", default=".", help="directory for the PNG (default: current directory)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 60, quick 3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.quick = args.quick or os.environ.get("EDGERNN_QUICK", "") not in ("", "0")
    if args.epochs is None:
        args.epochs = 3 if args.quick else 60
    return args


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    dates, values = load_airline()
    cfg = ForecastConfig(window=24, test_size=24, cell="lstm", units=(50, 100), dropout=0.2,
                         epochs=args.epochs, seed=args.seed)
    print(f"Airline passengers, {len(values)} months ({dates[0]} .. {dates[-1]}); "
          f"train on the first {len(values) - cfg.test_size}, test on the last {cfg.test_size}.")

    t0 = time.perf_counter()
    model, rep = fit_forecaster(values, cfg, verbose=0)
    seconds = time.perf_counter() - t0
    model.summary()
    print(f"trained {cfg.epochs} epochs in {seconds:.1f} s")

    # Seasonal naive: this month = the same month one year earlier (the report computes it).
    mape = 100 * np.mean(np.abs(rep["y_pred"] - rep["y_true"]) / rep["y_true"])
    ratio = rep["rmse"] / rep["baseline_rmse"]
    print(f"\nTest RMSE, one step ahead over {cfg.test_size} months (thousands of passengers):")
    print(f"  stacked LSTM                      {rep['rmse']:7.2f}   (MAPE {mape:.1f} %)")
    print(f"  seasonal naive (same month, -1 y) {rep['baseline_rmse']:7.2f}")
    print(f"  ratio LSTM / seasonal naive       {ratio:7.2f}  ({'better' if ratio < 1 else 'worse'} than the baseline)")

    # ---- plot (the same figure as `edgernn demo`'s: edgernn.forecast.plot_forecast) ----------
    png = plot_forecast(os.path.join(args.out, "forecast_airline.png"), rep, values, dates,
                        title="edgernn: airline passengers, forecast of the held-out 24 months",
                        ylabel="passengers (thousands)")
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
