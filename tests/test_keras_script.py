"""The stacked-LSTM forecaster of the source articles, verbatim but for the imports, the data
(a small synthetic sine series) and the budget (epochs=2)."""

import numpy as np

from edgernn import Sequential
from edgernn.layers import LSTM, Activation, Dense, Dropout


def make_windows(series, window):
    X = np.stack([series[i:i + window] for i in range(len(series) - window)])[..., None]
    return X, series[window:]


def test_keras_script_runs_unchanged():
    rng = np.random.default_rng(0)
    series = np.sin(np.arange(460) * 0.15) + 0.05 * rng.standard_normal(460)
    X, y = make_windows(series, 50)
    X_train, y_train, X_test = X[:350], y[:350], X[350:]

    # ---- verbatim from the issue (epochs=20 -> 2) ----
    model = Sequential()
    model.add(LSTM(input_shape=(None, 1), return_sequences=True, units=50))
    model.add(Dropout(0.2))
    model.add(LSTM(100, return_sequences=False))
    model.add(Dropout(0.2))
    model.add(Dense(units=1))
    model.add(Activation("linear"))
    model.compile(loss="mse", optimizer="rmsprop")
    model.fit(X_train, y_train, batch_size=50, epochs=2, validation_split=0.05)
    predicted = model.predict(X_test)
    # ----

    assert predicted.shape == (len(X_test), 1)
    assert np.isfinite(predicted).all()
    hist = model.history.history
    assert len(hist["loss"]) == 2 and len(hist["val_loss"]) == 2
    assert hist["loss"][1] < hist["loss"][0]
    assert model.count_params() == 4 * (50 + 2500 + 50) + 4 * (5000 + 10000 + 100) + 101
