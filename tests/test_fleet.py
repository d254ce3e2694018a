"""edgernn.fleet on a real LocalCluster (2 worker processes): a handful of tiny models.

The module shares one cluster; the whole file takes about 15-30 s on 2 busy cores (most of
it starting the cluster and warming its workers). Skipped when dask.distributed is missing.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

import edgernn  # noqa: E402
from edgernn import fleet  # noqa: E402
from edgernn.forecast import ForecastConfig, fit_forecaster  # noqa: E402
from edgernn.layers import GRU, Dense  # noqa: E402

EPOCHS = 3


def build_gru(seed):
    model = edgernn.Sequential([GRU(4, input_shape=(None, 2)), Dense(1)], seed=seed)
    model.compile(loss="mse", optimizer="adam")
    return model


def make_data(n_keys=4, n=24, T=6):
    rng = np.random.default_rng(42)
    data = {}
    for i in range(n_keys):
        x = rng.standard_normal((n, T, 2)).astype(np.float32)
        y = (x[:, -1, :1] * (i + 1) + 0.1 * x[:, 0, 1:]).astype(np.float32)
        data[f"sensor-{i}"] = (x, y)
    return data


def flaky_build(key, seed, marker_dir):
    """Raises ConnectionError on the first attempt for key 'flaky' (a marker file remembers it)."""
    marker = os.path.join(marker_dir, f"tried-{key}")
    if key == "flaky" and not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("simulated lost connection to the data store")
    if key == "broken":
        raise ValueError("simulated bad configuration")
    return build_gru(seed)


@pytest.fixture(scope="module")
def client():
    # workers unpickle this module's functions by value: tests/ is not on their sys.path
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def trained(client):
    data = make_data()
    bad = dict(data)
    x, y = data["sensor-0"]
    xn = x.copy()
    xn[3, 2, 0] = np.nan
    bad["nan-sensor"] = (xn, y)  # fit refuses NaN inputs: this key fails, the others go on
    bad["wrong-shape"] = (x[:, :, :1], y)
    seen = []
    f = fleet.fit(build_gru, bad, client, epochs=EPOCHS, batch_size=8, seed=7, progress=seen.append, chunksize=1)
    return data, f, seen


def one_by_one(data, seed):
    """The reference: a plain loop, the same seeds."""
    out = {}
    edgernn.set_num_threads(1)
    try:
        for k, (x, y) in data.items():
            s = fleet.key_seed(seed, k)
            model = build_gru(s)
            model.fit(x, y, epochs=EPOCHS, batch_size=8, verbose=0, seed=s)
            out[k] = model
    finally:
        edgernn.set_num_threads(os.cpu_count() or 1)
    return out


def test_fleet_equals_training_one_by_one(trained):
    data, f, _ = trained
    ref = one_by_one(data, seed=7)
    assert f.keys == list(data)
    for k, model in ref.items():
        got = f.model(k).get_weights()
        want = model.get_weights()
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
        assert f.history[k]["loss"] == pytest.approx(model.history.history["loss"], rel=0, abs=0)
        assert f.records[k]["attempts"] == 1
        assert f.records[k]["worker"] in f.info["warmup"]


def test_chunked_tasks_give_the_same_models(trained, client):
    data, f, _ = trained
    g = fleet.fit(build_gru, data, client, epochs=EPOCHS, batch_size=8, seed=7, chunksize=3, progress=False,
                  warmup=False)
    assert g.info["tasks"] == 2 and g.info["chunk_sizes"]["max"] == 3
    h = fleet.fit(build_gru, data, client, epochs=EPOCHS, batch_size=8, seed=7, progress=False, warmup=False)
    assert h.info["chunksize"] == "auto"
    for k in data:
        assert g.model_bytes(k) == f.model_bytes(k) == h.model_bytes(k)


def test_failures_are_isolated_and_reported(trained):
    _, f, seen = trained
    assert set(f.failures) == {"nan-sensor", "wrong-shape"}
    assert f.failures["nan-sensor"]["type"] == "ValueError"
    assert "NaN" in f.failures["nan-sensor"]["message"]
    assert "expected input of shape" in f.failures["wrong-shape"]["message"]
    assert f.failures["nan-sensor"]["attempts"] == 1  # permanent: not retried
    with pytest.raises(KeyError, match="training failed"):
        f.model("nan-sensor")
    # progress: one report per task, the last one complete
    assert len(seen) == 6
    last = seen[-1]
    assert (last.total, last.done, last.failed, last.retried, last.eta) == (6, 4, 2, 0, 0)
    assert "4 done, 2 failed" in str(last)


def test_warmup_measured_on_every_worker(trained, client):
    _, f, _ = trained
    warm = f.info["warmup"]
    assert set(warm) == set(client.scheduler_info()["workers"])
    for r in warm.values():
        assert r["error"] is None and r["seconds"] > 0 and r["cpu_seconds"] > 0


def test_transient_errors_are_retried(client, tmp_path):
    data = make_data(n_keys=1)
    data["flaky"] = data["sensor-0"]
    data["broken"] = data["sensor-0"]
    build = functools.partial(flaky_build, marker_dir=str(tmp_path))
    f = fleet.fit(build, data, client, epochs=1, batch_size=8, retries=2, progress=False, warmup=False)
    assert f.keys == ["sensor-0", "flaky"]
    assert f.records["flaky"]["attempts"] == 2
    assert f.failures["broken"]["attempts"] == 1 and not f.failures["broken"]["transient"]
    # no retries allowed: the transient error is final
    os.unlink(tmp_path / "tried-flaky")
    f0 = fleet.fit(build, {"flaky": data["flaky"]}, client, epochs=1, retries=0, progress=False, warmup=False)
    assert f0.failures["flaky"]["type"] == "ConnectionError" and f0.failures["flaky"]["transient"]


def test_save_load_roundtrip(trained, tmp_path, client):
    data, f, _ = trained
    d = tmp_path / "fleet"
    f.save(d)
    files = sorted(os.listdir(d))
    assert "index.json" in files and len([n for n in files if n.endswith(".npz")]) == 4
    assert not [n for n in files if n.startswith(".tmp-")]
    g = fleet.load(d)
    assert g.keys == f.keys and g.kind == "model"
    assert set(g.failures) == set(f.failures)
    assert g.failures["nan-sensor"]["message"] == f.failures["nan-sensor"]["message"]
    assert g.metrics == f.metrics and g.history == f.history
    xs = {k: v[0] for k, v in data.items()}
    p1 = f.predict(xs)
    p2 = g.predict(xs, client=client)  # on the cluster
    for k in xs:
        np.testing.assert_array_equal(p1[k], p2[k])
    ev = g.evaluate(data)
    assert ev["sensor-1"]["loss"] == pytest.approx(float(np.mean((p1["sensor-1"] - data["sensor-1"][1]) ** 2)),
                                                 rel=1e-5)
    # saving a different fleet over it replaces the old files
    h = fleet.Fleet({"only": f.model_bytes("sensor-0")}, {"only": f.records["sensor-0"]})
    h.save(d)
    assert sorted(n for n in os.listdir(d) if n.endswith(".npz")) == [
        next(n for n in os.listdir(d) if n.startswith("only-"))]
    assert fleet.load(d).keys == ["only"]
    # corruption is detected
    name = json.loads((d / "index.json").read_text())["models"][0]["file"]
    (d / name).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="checksum"):
        fleet.load(d)
    with pytest.raises(KeyError, match="no model for keys"):
        f.predict({"nope": xs["sensor-0"]})


def test_forecast_fleet_from_csv_and_arrays(client, tmp_path):
    t = np.arange(120)
    rng = np.random.default_rng(3)
    a = 5 + np.sin(2 * np.pi * t / 12) + 0.05 * rng.standard_normal(t.size)
    csv = tmp_path / "b.csv"
    csv.write_text("time,value\n" + "".join(f"{i},{v}\n" for i, v in enumerate(3 + np.cos(2 * np.pi * t / 12))))
    cfg = ForecastConfig(window=12, test_size=12, cell="gru", units=(4,), dropout=0.0, epochs=2, batch_size=16,
                         season=12)
    b = client.scatter(str(csv))  # a future: the task runs where it is
    f = fleet.fit(cfg, {"a": a, "b": b, "short": a[:20]}, client, progress=False, warmup=False)
    assert f.kind == "forecast" and f.keys == ["a", "b"]
    assert "too short" in f.failures["short"]["message"]
    # the same as fit_forecaster with the key's seed
    import dataclasses

    _, rep = fit_forecaster(a, dataclasses.replace(cfg, seed=fleet.key_seed(0, "a")), verbose=0)
    assert f.metrics["a"]["rmse"] == pytest.approx(rep["rmse"], rel=1e-6)
    assert f.metrics["a"]["baseline_rmse"] == pytest.approx(rep["baseline_rmse"], rel=1e-12)
    assert f.records["a"]["forecast"]["y_pred"] == pytest.approx(list(rep["y_pred"]), rel=1e-6)
    nxt = f.forecast({"a": a})
    assert np.isfinite(nxt["a"]) and abs(nxt["a"] - 5) < 2


def test_export_onnx(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    _, f, _ = trained
    paths = fleet.Fleet({k: f.model_bytes(k) for k in f.keys[:2]}).export_onnx(tmp_path / "onnx", streaming=True)
    assert sorted(paths) == ["sensor-0", "sensor-1"]
    for p in paths.values():
        assert os.path.isfile(p) and p.endswith(".stream.onnx")
    idx = json.loads((tmp_path / "onnx" / "onnx_index.json").read_text())
    assert [m["key"] for m in idx["models"]] == ["sensor-0", "sensor-1"]


def test_tasks_are_shipped_by_reference():
    # what Dask sends for a task: a reference to edgernn.fleet, never a jitted function's code
    blob = cloudpickle.dumps(fleet._fit_chunk)
    assert b"edgernn.fleet" in blob and len(blob) < 200
    import numba

    jitted = numba.njit(lambda x: x)
    with pytest.raises(TypeError, match="numba"):
        fleet.fit(jitted, {"a": (np.zeros((1, 1, 1)), np.zeros((1, 1)))})


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(build=build_gru, datasets=[1, 2]), TypeError, "datasets: expected a mapping"),
    (dict(build=build_gru, datasets={}), ValueError, "datasets: empty"),
    (dict(build=build_gru, datasets={1.5: None}), TypeError, "keys must be str or int"),
    (dict(build="gru", datasets={"a": None}), TypeError, "build: expected"),
    (dict(build=build_gru, datasets={"a": None}, retries=-1), ValueError, "retries"),
    (dict(build=build_gru, datasets={"a": None}, chunksize=0), ValueError, "chunksize"),
    (dict(build=build_gru, datasets={"a": None}, fit_kwargs={"seed": 1}), ValueError, "fit_kwargs"),
    (dict(build=build_gru, datasets={"a": None}, transient="x"), TypeError, "transient"),
    (dict(build=ForecastConfig(), datasets={"a": None}, epochs=3), ValueError, "ForecastConfig"),
])
def test_argument_errors_name_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fleet.fit(**kwargs)


def test_key_seed_is_stable():
    assert fleet.key_seed(0, "a") == fleet.key_seed(0, "a")
    assert len({fleet.key_seed(0, "a"), fleet.key_seed(1, "a"), fleet.key_seed(0, "b"), fleet.key_seed(0, 1),
                fleet.key_seed(0, "1")}) == 5
    with pytest.raises(TypeError, match="keys must be str or int"):
        fleet.key_seed(0, 1.0)


def die_once(key, seed, marker_dir):
    """Kills its worker process the first time key 'die' trains."""
    marker = os.path.join(marker_dir, "died")
    if key == "die" and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return build_gru(seed)


def test_a_lost_worker_does_not_lose_keys(client, tmp_path):
    # last in this file: the nanny restarts the worker, Dask reschedules the task
    data = make_data(n_keys=2)
    data["die"] = data["sensor-0"]
    build = functools.partial(die_once, marker_dir=str(tmp_path))
    f = fleet.fit(build, data, client, epochs=1, batch_size=8, chunksize=1, progress=False, warmup=False)
    assert (tmp_path / "died").exists()
    assert f.keys == ["sensor-0", "sensor-1", "die"] and not f.failures
    assert f.model_bytes("die") != f.model_bytes("sensor-0")  # own seed


# ---- DataFrames (long format: one row per key and time step) ----------------------------------------
CFG_DF = ForecastConfig(window=12, test_size=12, cell="gru", units=(4,), dropout=0.0, epochs=2, batch_size=16,
                        season=12)


def long_frame(n_keys=3, n=96, int_keys=False):
    """(pandas DataFrame sensor/t/value sorted by time (every key in every part), {key: series})."""
    pd = pytest.importorskip("pandas")
    t = np.arange(n)
    series, parts = {}, []
    for i in range(n_keys):
        k = 10 + i if int_keys else f"s{i}"
        v = 3 + i + np.sin(2 * np.pi * t / 12 + i) + 0.05 * np.random.default_rng(i).standard_normal(n)
        series[k] = v
        parts.append(pd.DataFrame({"sensor": k, "t": t, "value": v}))
    df = pd.concat(parts).sort_values("t", kind="stable").reset_index(drop=True)
    return df, series


def windows(rows):
    """prepare: a key's rows (pandas, columns t/value) -> (x (N, 6, 2), y (N, 1)) float32."""
    v = rows["value"].to_numpy(np.float32)
    x = np.stack([np.stack([v[i: i + 6], np.diff(v[i: i + 7])], axis=-1) for i in range(len(v) - 7)])
    return x, v[7:, None].copy()


def windows_x(rows):
    return windows(rows)[0]


def test_dask_dataframe_forecast_fleet_equals_arrays(client):
    dd = pytest.importorskip("dask.dataframe")
    df, series = long_frame()
    ref = fleet.fit(CFG_DF, series, client, progress=False, warmup=False, seed=3)
    # keys spread over the partitions (shuffled on the cluster), rows in time order by `time`
    ddf = dd.from_pandas(df.sample(frac=1, random_state=1), npartitions=3)
    f = fleet.fit(CFG_DF, ddf, client, key="sensor", time="t", progress=False, warmup=False, seed=3)
    assert f.info["frame_shuffled"] and f.info["frame_partitions"] == 3
    # one partition per key (no shuffle); no time column: the frame's row order
    by_key = dd.concat([dd.from_pandas(df[df.sensor == k].drop(columns="t"), npartitions=1) for k in series])
    g = fleet.fit(CFG_DF, by_key, client, key="sensor", progress=False, warmup=False, seed=3)
    assert not g.info["frame_shuffled"]
    # keys spread, no time column: the frame's order survives the shuffle
    h = fleet.fit(CFG_DF, dd.from_pandas(df.drop(columns="t"), npartitions=4), client, key="sensor",
                  progress=False, warmup=False, seed=3)
    for other in (f, g, h):
        assert other.keys == list(series) and not other.failures
        for k in series:
            assert other.model_bytes(k) == ref.model_bytes(k)
            assert other.metrics[k] == ref.metrics[k]
    assert f.forecast(ddf, key="sensor", time="t") == ref.forecast(series)
    assert ref.forecast(ddf, client, key="sensor", time="t") == ref.forecast(series)


def test_dask_dataframe_model_builder_with_prepare(client):
    dd = pytest.importorskip("dask.dataframe")
    df, series = long_frame(int_keys=True)
    rows = {k: df[df.sensor == k].drop(columns="sensor").reset_index(drop=True) for k in series}
    data = {k: windows(r) for k, r in rows.items()}
    ref = fleet.fit(build_gru, data, client, epochs=2, batch_size=16, progress=False, warmup=False, seed=5)
    ddf = dd.from_pandas(df, npartitions=2)
    f = fleet.fit(build_gru, ddf, client, key="sensor", time="t", prepare=windows, epochs=2, batch_size=16,
                  progress=False, warmup=False, seed=5)
    assert f.keys == list(series) == [10, 11, 12]
    for k in series:
        assert f.model_bytes(k) == ref.model_bytes(k)
    got = f.predict(ddf, client, key="sensor", time="t", prepare=windows_x)
    want = ref.predict({k: d[0] for k, d in data.items()})
    ev = f.evaluate(df, key="sensor", time="t", prepare=windows)  # pandas, here
    for k in series:
        np.testing.assert_array_equal(got[k], want[k])
        assert ev[k]["loss"] == pytest.approx(float(np.mean((want[k] - data[k][1]) ** 2)), rel=1e-5)
    # without prepare, a model builder cannot use rows: every key fails alone, for good
    g = fleet.fit(build_gru, ddf, client, key="sensor", epochs=1, progress=False, warmup=False)
    assert not g.keys and set(g.failures) == set(series)
    assert all("give prepare=" in e["message"] and e["attempts"] == 1 for e in g.failures.values())


def test_pandas_dataframe_input_and_bad_rows(client):
    pd = pytest.importorskip("pandas")
    df, series = long_frame(n_keys=2)
    f = fleet.fit(CFG_DF, df, client, key="sensor", time="t", progress=False, warmup=False)
    ref = fleet.fit(CFG_DF, series, client, progress=False, warmup=False)
    assert [f.model_bytes(k) for k in series] == [ref.model_bytes(k) for k in series]
    # one key's rows cannot become a series (text in the value column): that key fails, the others train
    dd = pytest.importorskip("dask.dataframe")
    bad = pd.concat([df.astype({"value": object}),
                     pd.DataFrame({"sensor": "text", "t": np.arange(30), "value": ["x"] * 30})])
    g = fleet.fit(CFG_DF, dd.from_pandas(bad, npartitions=2), client, key="sensor", time="t", progress=False,
                  warmup=False)
    assert g.keys == list(series) and list(g.failures) == ["text"]
    assert g.failures["text"]["attempts"] == 1 and not g.failures["text"]["transient"]
    # the row order kept through a shuffle: partition number in the high bits
    tagged = dd.from_pandas(df, npartitions=3).map_partitions(fleet._tag_order).compute()
    assert sorted(set(tagged[fleet._ORDER].to_numpy() >> 40)) == [0, 1, 2]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(), ValueError, "key: a DataFrame"),
    (dict(key="nope"), ValueError, "key='nope' is not a column"),
    (dict(key="sensor", time="when"), ValueError, "time='when' is not a column"),
    (dict(key="sensor", time="sensor"), ValueError, "same column"),
    (dict(key="t"), ValueError, "column: the DataFrame has 2 value columns"),
    (dict(key="sensor", time="t", column="nope"), ValueError, "column='nope'"),
    (dict(key="value", time="t", column="t"), TypeError, "keys must be str or int"),
])
def test_dataframe_argument_errors(kwargs, exc, match):
    df, _ = long_frame(n_keys=2, n=30)
    with pytest.raises(exc, match=match):
        fleet.fit(CFG_DF, df, **kwargs)


def test_key_and_time_only_for_dataframes():
    with pytest.raises(ValueError, match="only for a DataFrame"):
        fleet.fit(CFG_DF, {"a": np.zeros(40)}, key="sensor")
    f = fleet.Fleet({"a": b""})
    with pytest.raises(ValueError, match="only for a DataFrame"):
        f.predict({"a": np.zeros((1, 2, 2))}, key="sensor")
    df, _ = long_frame(n_keys=1, n=30)
    with pytest.raises(ValueError, match="prepare="):
        f.predict(df, key="sensor")


def test_dask_dataframe_grouping_never_reuses_a_task_name(client, monkeypatch):
    """A shuffled frame is scanned twice (keys per partition before and after the shuffle):
    each scan gets task names of its own. A reused name right after its futures were dropped
    can still be known to the scheduler, which then hands back the first scan's result (seen in
    CI: keys trained on another key's rows)."""
    dd = pytest.importorskip("dask.dataframe")
    df, series = long_frame()
    names = []
    submit = client.submit

    def recording(*args, **kw):
        names.append(kw.get("key"))
        return submit(*args, **kw)

    monkeypatch.setattr(client, "submit", recording)
    info = {}
    out = fleet._frame_datasets(dd.from_pandas(df.sample(frac=1, random_state=2), npartitions=3),
                                fleet._FrameSpec("sensor", "t", series=True), client, "datasets", info)
    assert info["frame_shuffled"] and list(out) == list(series)
    named = [n for n in names if n is not None]
    assert len(named) == len(set(named)) and len(named) >= 3 + 3 + len(series)
    for k, fut in out.items():
        np.testing.assert_allclose(fut.result(), series[k])
