"""One-step-ahead forecasting of a univariate series with a stacked recurrent model.

This is the pipeline behind ``edgernn demo`` and ``edgernn train``: the source
articles' Keras forecaster (LSTM(50, return_sequences) -> Dropout(0.2) -> LSTM(100) ->
Dropout(0.2) -> Dense(1)), with the data handling a forecaster needs to be honest:

- the split is by time (the last ``test_size`` points are never seen in training);
- each window is expressed relative to its last value (in log space for positive series:
  ``z = log(y)``, inputs ``(z[t-w+1..t] - z[t]) / s``, target ``(z[t+h] - z[t]) / s``), so a
  series with a trend, like airline passengers, does not leave the range seen in training;
- the scale ``s`` is fitted on the training part only.

The preprocessing settings travel with the model (``model.meta["forecast"]``) so that a
saved model can forecast from raw values again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np


@dataclass
class ForecastConfig:
    window: int = 24  # past steps the model sees
    horizon: int = 1  # steps ahead to predict
    test_size: int = 24  # last points held out (by time)
    cell: str = "lstm"  # "lstm" | "gru" | "rnn"
    units: tuple = (50, 100)  # one recurrent layer per entry (the articles' stacked forecaster)
    dropout: float = 0.2  # between layers, as the articles advise
    epochs: int = 60
    batch_size: int = 16
    learning_rate: float = 0.003
    optimizer: str = "adam"
    seed: int = 0
    log: bool | None = None  # log-transform; None = automatic (all values > 0)
    season: int = 12  # seasonal-naive baseline period (12 for monthly data, 365 for daily); 1 = naive
    scale: float = field(default=1.0)  # fitted on the training part
    column: str | int | None = None  # the CSV column trained on (name or 0-based index), for predict


def _transform(values, cfg):
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("series contains NaN or inf values")
    return np.log(v) if cfg.log else v


def _windows(z, window, horizon, scale):
    """Relative windows. z (N,) -> X (M, window, 1), y (M, 1), anchors (M,) (index of the last input)."""
    n = len(z) - window - horizon + 1
    if n < 1:
        raise ValueError(f"series of {len(z)} points is too short for window {window} + horizon {horizon}")
    idx = np.arange(window)[None, :] + np.arange(n)[:, None]  # (M, window)
    last = z[idx[:, -1]]  # (M,)
    X = ((z[idx] - last[:, None]) / scale)[:, :, None]  # (M, window, 1)
    y = ((z[idx[:, -1] + horizon] - last) / scale)[:, None]  # (M, 1)
    return X.astype(np.float32), y.astype(np.float32), idx[:, -1]


def build_model(cfg: ForecastConfig):
    """The articles' stacked recurrent forecaster."""
    from .layers import GRU, LSTM, Dense, Dropout, SimpleRNN
    from .models import Sequential

    Cell = {"lstm": LSTM, "gru": GRU, "rnn": SimpleRNN}.get(cfg.cell)
    if Cell is None:
        raise ValueError(f"cell: expected 'lstm', 'gru' or 'rnn', got {cfg.cell!r}")
    model = Sequential(seed=cfg.seed)
    for k, units in enumerate(cfg.units):
        kw = dict(input_shape=(None, 1)) if k == 0 else {}
        model.add(Cell(int(units), return_sequences=k < len(cfg.units) - 1, **kw))
        if cfg.dropout > 0:
            model.add(Dropout(cfg.dropout))
    model.add(Dense(1))  # the value `horizon` steps ahead
    return model


def fit_forecaster(values, cfg: ForecastConfig | None = None, verbose=1, callbacks=None):
    """Train a forecaster on ``values[:-test_size]``; evaluate one-step forecasts on the rest.

    Parameters
    ----------
    values : array (N,)
        The raw series.
    cfg : ForecastConfig, optional
    verbose : int
        0 silent, 1 progress bar, 2 one line per epoch.

    Returns
    -------
    model : Sequential
        With ``model.meta["forecast"]`` holding the preprocessing settings.
    report : dict
        ``rmse``, ``baseline_rmse`` (seasonal naive with period ``cfg.season``; naive when it is 1),
        ``baseline``, ``test_index``, ``y_true``, ``y_pred``, ``history``.
    """
    cfg = cfg or ForecastConfig()
    v = np.asarray(values, dtype=np.float64).ravel()
    if cfg.log is None:
        cfg.log = bool(np.all(v > 0))
    if cfg.test_size < 0:
        raise ValueError(f"test_size: expected 0 (train on everything) or more, got {cfg.test_size}")
    if cfg.test_size >= len(v) - cfg.window - cfg.horizon + 1:
        raise ValueError(f"series of {len(v)} points is too short for window {cfg.window} + horizon "
                         f"{cfg.horizon} with test_size {cfg.test_size}: no training windows left")
    z = _transform(v, cfg)
    n_train = len(v) - cfg.test_size
    ztr = z[:n_train]
    cfg.scale = float(np.std(np.diff(ztr, n=cfg.horizon))) or 1.0
    X, y, _ = _windows(ztr, cfg.window, cfg.horizon, cfg.scale)
    model = build_model(cfg)
    from .optimizers import get as get_optimizer

    opt = get_optimizer(cfg.optimizer)
    opt.learning_rate = cfg.learning_rate
    model.compile(loss="mse", optimizer=opt)
    history = model.fit(X, y, batch_size=cfg.batch_size, epochs=cfg.epochs, verbose=verbose,
                        callbacks=callbacks, shuffle=True, seed=cfg.seed)
    model.meta["forecast"] = {k: (list(val) if isinstance(val, tuple) else val) for k, val in asdict(cfg).items()}
    # one-step-ahead forecasts for every test point (inputs may reach back into the training part)
    targets = np.arange(n_train, len(v))
    if len(targets) == 0:  # test_size 0: trained on everything, nothing to evaluate
        nan = float("nan")
        return model, dict(rmse=nan, baseline_rmse=nan, baseline="none (test_size 0)", test_index=targets,
                           y_true=v[targets], y_pred=v[targets], baseline_pred=v[targets], history=history)
    y_pred = predict_at(model, v, targets)
    y_true = v[targets]
    season = max(int(cfg.season), 1)
    if season > n_train:
        season = 1
    base = v[targets - max(season, cfg.horizon)]  # the baseline cannot see past t - horizon either
    rmse = float(np.sqrt(np.mean((y_pred - y_true) ** 2)))
    brmse = float(np.sqrt(np.mean((base - y_true) ** 2)))
    return model, dict(rmse=rmse, baseline_rmse=brmse,
                       baseline=(f"seasonal naive (value {season} steps earlier)" if season > 1 else "naive (last value)")
                       if season != 12 else "seasonal naive (same month last year)",
                       test_index=targets, y_true=y_true, y_pred=y_pred, baseline_pred=base, history=history)


def _config_of(model):
    fc = getattr(model, "meta", {}).get("forecast")
    if fc is None:
        raise ValueError("model has no forecasting settings (it was not trained by edgernn train/demo)")
    known = {f.name for f in fields(ForecastConfig)}
    return ForecastConfig(**{k: (tuple(v) if k == "units" else v) for k, v in fc.items() if k in known})


def _predict_from(model, cfg, z, anchors):
    """Forecast z[a + horizon] for each anchor a from the ``window`` values ending at a."""
    if anchors.min() < cfg.window - 1 or anchors.max() > len(z) - 1:
        raise ValueError(f"need {cfg.window} values of history before each forecast")
    idx = anchors[:, None] - np.arange(cfg.window)[::-1][None, :]  # (M, window)
    X = ((z[idx] - z[anchors][:, None]) / cfg.scale)[:, :, None].astype(np.float32)  # (M, window, 1)
    zp = z[anchors] + model.predict(X)[:, 0].astype(np.float64) * cfg.scale
    return np.exp(zp) if cfg.log else zp


def predict_at(model, values, targets):
    """Forecast ``values[t]`` for each t in ``targets`` from the ``window`` values ending at t - horizon."""
    cfg = _config_of(model)
    z = _transform(values, cfg)
    return _predict_from(model, cfg, z, np.asarray(targets) - cfg.horizon)


def forecast_next(model, values):
    """Forecast the value ``horizon`` steps after the end of ``values`` (array (N,), N >= window)."""
    cfg = _config_of(model)
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) < cfg.window:
        raise ValueError(f"need at least {cfg.window} values, got {len(v)}")
    if cfg.log and not np.all(v > 0):
        raise ValueError("this model was trained on log values: all inputs must be > 0")
    return float(_predict_from(model, cfg, _transform(v, cfg), np.array([len(v) - 1]))[0])


def plot_forecast(path, report, values, dates=None, title="one-step forecast of the held-out part",
                  ylabel="value", dpi=100):
    """Plot a :func:`fit_forecaster` report: the series, the test period, truth, forecast, baseline.

    The test period is shaded, the truth is drawn on top of the forecast (so it is never
    hidden), and a second panel shows the training loss per epoch. Used by ``edgernn demo``
    and ``examples/forecast_airline.py``.

    Parameters
    ----------
    path : str
        PNG file to write.
    report : dict
        As returned by :func:`fit_forecaster` (with a non-empty test part).
    values : array (N,)
        The raw series the report was made on.
    dates : sequence of str, optional
        Labels of the N points (x axis); default: the point index.
    title, ylabel : str
    dpi : int

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'edgernn[plot]'``).
    """
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(values, np.float64)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(values))
    idx = np.asarray(report["test_index"])
    ax.plot(x, values, color="0.55", lw=1, label="series (training part)")
    if len(idx):
        ax.axvspan(idx[0] - 0.5, idx[-1] + 0.5, color="0.92", zorder=0, label="test period (never seen in training)")
        ax.plot(idx, report["baseline_pred"], color="tab:blue", lw=1.1, ls="--", zorder=2,
                label=f"{report['baseline']} (RMSE {report['baseline_rmse']:.3g})")
        ax.plot(idx, report["y_pred"], color="tab:red", lw=1.2, ls="-", marker="o", ms=3.5, mfc="none", zorder=3,
                label=f"edgernn forecast, one step ahead (RMSE {report['rmse']:.3g})")
        ax.plot(idx, report["y_true"], color="k", lw=1.6, zorder=4, label="truth (test)")
    if dates is not None:
        step = max(1, len(x) // 12)
        ticks = x[::step]
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(dates[i]) for i in ticks], rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("date")
    else:
        ax.set_xlabel("time step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    hist = report.get("history")
    loss = getattr(hist, "history", {}).get("loss", []) if hist is not None else []
    if len(loss):
        ax2.plot(np.arange(1, len(loss) + 1), loss, color="tab:red")
        ax2.set_yscale("log")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss (MSE, scaled units)")
    ax2.set_title("training", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
