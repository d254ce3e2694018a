"""Tests for edgernn.datasets: shipped data and sequence utilities."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest

from edgernn import datasets
from edgernn.datasets import (
    adding_problem,
    load_airline,
    load_basic_motions,
    load_japanese_vowels,
    load_sunspots,
    load_temperatures,
    load_text_sample,
    load_ts,
    make_windows,
    pad_sequences,
    train_test_split_time,
)

# ---------------------------------------------------------------------------
# Shipped data
# ---------------------------------------------------------------------------


def test_data_dir_is_inside_package():
    d = datasets.data_dir()
    assert d.name == "data" and d.parent.name == "edgernn"
    assert (d / "SOURCES.md").is_file()


def test_airline():
    dates, y = load_airline()
    assert y.shape == (144,) and y.dtype == np.float32
    assert dates.shape == (144,) and dates.dtype.kind == "U"
    assert dates[0] == "1949-01" and dates[-1] == "1960-12"
    assert y[0] == 112.0 and y[-1] == 432.0
    assert np.isfinite(y).all()


def test_temperatures():
    dates, y = load_temperatures()
    assert y.shape == (3650,) and y.dtype == np.float32
    assert dates[0] == "1981-01-01" and dates[-1] == "1990-12-31"
    assert np.isfinite(y).all()
    assert 0.0 <= y.min() and y.max() < 30.0


def test_sunspots():
    dates, y = load_sunspots()
    assert y.shape == (2820,) and y.dtype == np.float32
    assert dates[0] == "1749-01" and dates[-1] == "1983-12"
    assert y[0] == pytest.approx(58.0)
    assert np.isfinite(y).all() and y.min() >= 0.0


def test_japanese_vowels():
    data = load_japanese_vowels()
    X_train, y_train, X_test, y_test, names = data  # tuple unpacking works
    assert data.X_train is X_train
    assert len(X_train) == 270 and len(X_test) == 370
    assert names == [str(i) for i in range(1, 10)]
    for X, y in ((X_train, y_train), (X_test, y_test)):
        assert y.dtype == np.int64 and y.shape == (len(X),)
        assert set(y.tolist()) == set(range(9))
        lengths = [x.shape[0] for x in X]
        assert min(lengths) >= 7 and max(lengths) <= 29
        for x in X:
            assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 12
            assert np.isfinite(x).all()
    all_lengths = [x.shape[0] for x in X_train + X_test]
    assert min(all_lengths) == 7 and max(all_lengths) == 29
    assert np.bincount(y_train).tolist() == [30] * 9  # 30 utterances per speaker
    # First value of the first training series, as written in the file.
    assert X_train[0][0, 0] == np.float32(1.860936)
    assert X_train[0][0, 1] == np.float32(-0.207383)


def test_basic_motions():
    X_train, y_train, X_test, y_test, names = load_basic_motions()
    assert len(X_train) == 40 and len(X_test) == 40
    assert names == ["Badminton", "Running", "Standing", "Walking"]
    for X, y in ((X_train, y_train), (X_test, y_test)):
        assert y.dtype == np.int64
        assert np.bincount(y, minlength=4).tolist() == [10, 10, 10, 10]
        for x in X:
            assert x.shape == (100, 6) and x.dtype == np.float32
    batch = np.stack(X_train)
    assert batch.shape == (40, 100, 6) and np.isfinite(batch).all()


def test_text_sample():
    body = load_text_sample()
    full = load_text_sample(with_header=True)
    assert isinstance(body, str)
    assert body.startswith("THE REPUBLIC.")
    assert "I went down yesterday to the Piraeus" in body
    assert "Gutenberg" not in body
    assert 240_000 <= len(body) <= 260_000
    assert full.startswith("The Project Gutenberg EBook of The Republic, by Plato")
    assert "*** START OF THIS PROJECT GUTENBERG EBOOK THE REPUBLIC ***" in full
    assert full.endswith(body)
    assert "\r" not in full
    assert body.isascii()


# ---------------------------------------------------------------------------
# .ts parser
# ---------------------------------------------------------------------------

_TS_GOOD = """\
# a comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true b a c

@data
1,2,3:4,5,6:b
7,?:8,9:a
1:2:c
"""


def test_load_ts_variable_length_and_missing(tmp_path):
    X, y, names = load_ts(io.StringIO(_TS_GOOD))
    assert names == ["a", "b", "c"]  # sorted, not header order
    assert y.tolist() == [1, 0, 2] and y.dtype == np.int64
    assert [x.shape for x in X] == [(3, 2), (2, 2), (1, 2)]
    np.testing.assert_array_equal(X[0], np.array([[1, 4], [2, 5], [3, 6]], np.float32))
    assert np.isnan(X[1][1, 0]) and X[1][1, 1] == 9.0
    # Same from a path and from a gzip-compressed path.
    p = tmp_path / "toy.ts"
    p.write_text(_TS_GOOD)
    pz = tmp_path / "toy.ts.gz"
    pz.write_bytes(gzip.compress(_TS_GOOD.encode()))
    for path in (p, str(pz)):
        X2, y2, names2 = load_ts(path)
        assert names2 == names and y2.tolist() == y.tolist()
        for a, b in zip(X, X2, strict=True):
            np.testing.assert_array_equal(a, b)


def test_load_ts_numeric_labels_sorted_numerically():
    text = "@classLabel true 10 9 1\n@data\n1,2:10\n3,4:9\n5,6:1\n"
    _, y, names = load_ts(io.StringIO(text))
    assert names == ["1", "9", "10"]
    assert y.tolist() == [2, 1, 0]


def test_load_ts_unlabelled_and_regression():
    X, y, names = load_ts(io.StringIO("@classLabel false\n@data\n1,2:3,4\n"))
    assert y is None and names is None and X[0].shape == (2, 2)
    X, y, names = load_ts(io.StringIO("@targetLabel true\n@data\n1,2:0.5\n3,4,5:-1.5\n"))
    assert names is None and y.dtype == np.float32
    np.testing.assert_array_equal(y, [0.5, -1.5])


@pytest.mark.parametrize(
    "text, lineno, fragment",
    [
        ("@classLabel true a b\n@data\n1,2,x:a\n", 3, "cannot parse value 'x'"),
        ("@dimensions 2\n@classLabel true a b\n@data\n1,2:3,4:a\n1,2:b\n", 5, "expected 2 dimension"),
        (
            "@classLabel true a b\n@data\n1,2:3,4:a\n1,2:3:b\n",
            4,
            "dimension 1 has 1 values but dimension 0 has 2",
        ),
        ("@classLabel true a b\n@data\n1,2:3,4:z\n", 3, "'z' is not declared"),
        ("@classLabel true a\n# ok\nstray line\n@data\n1:a\n", 3, "expected '#' comment"),
        ("@classLabel maybe a\n@data\n1:a\n", 1, "must be true or false"),
        ("@dimensions two\n@data\n1\n", 1, "@dimensions must be an integer"),
        ("@timeStamps true\n@data\n1\n", 1, "not supported"),
        ("@classLabel true a\n@data\n1,2:\n", 3, "empty class label"),
        ("@classLabel true a\n@data\n1,,2:a\n", 3, "cannot parse value ''"),
        ("@targetLabel true\n@data\n1:0.5\n2:abc\n", 4, "cannot parse target value 'abc'"),
    ],
)
def test_load_ts_malformed_reports_line(text, lineno, fragment):
    with pytest.raises(ValueError, match=f"line {lineno}:") as info:
        load_ts(io.StringIO(text))
    assert fragment in str(info.value)
    assert "malformed .ts file" in str(info.value)


def test_load_ts_malformed_names_file(tmp_path):
    p = tmp_path / "broken.ts"
    p.write_text("@classLabel true a\n@data\n1,oops:a\n")
    with pytest.raises(ValueError, match=r"broken\.ts, line 3"):
        load_ts(p)


@pytest.mark.parametrize(
    "text, fragment",
    [("# only comments\n@classLabel true a\n", "no '@data'"), ("@data\n\n", "no series")],
)
def test_load_ts_no_data(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_ts(io.StringIO(text))


# ---------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------


def test_make_windows_values():
    s = np.arange(10, dtype=np.float64)
    X, y = make_windows(s, window=4, horizon=2)
    assert X.shape == (5, 4, 1) and y.shape == (5, 2)
    assert X.dtype == np.float32 and y.dtype == np.float32
    assert X.flags.c_contiguous and y.flags.c_contiguous
    for i in range(5):
        np.testing.assert_array_equal(X[i, :, 0], s[i : i + 4])
        np.testing.assert_array_equal(y[i], s[i + 4 : i + 6])
    X2, y2 = make_windows(s[:, None], window=4, horizon=2, stride=2)
    np.testing.assert_array_equal(X2, X[::2])
    np.testing.assert_array_equal(y2, y[::2])
    X3, y3 = make_windows(s, window=9)
    assert X3.shape == (1, 9, 1) and y3.tolist() == [[9.0]]


def test_make_windows_airline():
    _, series = load_airline()
    X, y = make_windows(series, window=12)
    assert X.shape == (132, 12, 1) and y.shape == (132, 1)
    assert y[-1, 0] == series[-1]


@pytest.mark.parametrize(
    "kwargs",
    [dict(window=0), dict(window=3, horizon=0), dict(window=3, stride=0), dict(window=9, horizon=2)],
)
def test_make_windows_errors(kwargs):
    with pytest.raises(ValueError):
        make_windows(np.arange(10), **kwargs)


def test_make_windows_rejects_2d():
    with pytest.raises(ValueError, match="1-D"):
        make_windows(np.zeros((10, 2)), window=3)


def test_train_test_split_time():
    X = np.arange(20).reshape(10, 2)
    y = np.arange(10)
    X_tr, X_te, y_tr, y_te = train_test_split_time(X, y, test_size=0.25)
    assert len(X_te) == 3 and len(X_tr) == 7  # ceil(2.5)
    np.testing.assert_array_equal(y_tr, np.arange(7))
    np.testing.assert_array_equal(y_te, np.arange(7, 10))
    np.testing.assert_array_equal(X_te, X[7:])
    a_tr, a_te = train_test_split_time(y, test_size=4)
    assert a_tr.tolist() == [0, 1, 2, 3, 4, 5] and a_te.tolist() == [6, 7, 8, 9]
    for bad in (0.0, 1.0, 0, 10):
        with pytest.raises(ValueError):
            train_test_split_time(y, test_size=bad)
    with pytest.raises(ValueError, match="first dimension"):
        train_test_split_time(X, y[:5])
    with pytest.raises(ValueError):
        train_test_split_time()


def test_pad_sequences_post():
    seqs = [np.full((2, 3), 1.0), np.full((4, 3), 2.0), np.zeros((0, 3))]
    X, lengths = pad_sequences(seqs)
    assert X.shape == (3, 4, 3) and X.dtype == np.float32
    assert lengths.dtype == np.int64 and lengths.tolist() == [2, 4, 0]
    assert (X[0, :2] == 1).all() and (X[0, 2:] == 0).all()
    assert (X[1] == 2).all() and (X[2] == 0).all()


def test_pad_sequences_pre_value_and_truncation():
    seqs = [np.arange(1, 6, dtype=np.float64)[:, None], np.array([[7.0]])]
    X, lengths = pad_sequences(seqs, maxlen=3, value=-1.0, padding="pre")
    assert lengths.tolist() == [3, 1]
    assert X[:, :, 0].tolist() == [[3, 4, 5], [-1, -1, 7]]  # truncating="pre" keeps the end
    X, _ = pad_sequences(seqs, maxlen=3, truncating="post")
    assert X[:, :, 0].tolist() == [[1, 2, 3], [7, 0, 0]]


def test_pad_sequences_1d_token_ids():
    X, lengths = pad_sequences([[1, 2, 3], [4]], dtype="int64")
    assert X.shape == (2, 3) and X.dtype == np.int64
    assert X.tolist() == [[1, 2, 3], [4, 0, 0]] and lengths.tolist() == [3, 1]


def test_pad_sequences_japanese_vowels():
    data = load_japanese_vowels()
    X, lengths = pad_sequences(data.X_train)
    assert X.shape == (270, max(lengths), 12) and X.dtype == np.float32
    for i in (0, 100, 269):
        np.testing.assert_array_equal(X[i, : lengths[i]], data.X_train[i])
        assert (X[i, lengths[i] :] == 0).all()


@pytest.mark.parametrize(
    "seqs, kwargs",
    [
        ([], {}),
        ([np.zeros((2, 3)), np.zeros((2, 4))], {}),
        ([np.zeros((2, 3)), np.zeros(2)], {}),
        ([np.zeros((2, 3, 1))], {}),
        ([np.zeros((2, 3))], dict(padding="middle")),
        ([np.zeros((2, 3))], dict(truncating="middle")),
        ([np.zeros((2, 3))], dict(maxlen=-1)),
    ],
)
def test_pad_sequences_errors(seqs, kwargs):
    with pytest.raises(ValueError):
        pad_sequences(seqs, **kwargs)


def test_adding_problem():
    X, y = adding_problem(4000, 40, seed=0)
    assert X.shape == (4000, 40, 2) and X.dtype == np.float32
    assert y.shape == (4000, 1) and y.dtype == np.float32
    values, markers = X[:, :, 0], X[:, :, 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(np.unique(markers).tolist()) == {0.0, 1.0}
    assert (markers[:, :20].sum(axis=1) == 1).all()
    assert (markers[:, 20:].sum(axis=1) == 1).all()
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(axis=1), rtol=1e-6)
    # Predicting the mean gives MSE ~ Var(U1 + U2) = 1/6.
    assert abs(float(y.mean()) - 1.0) < 0.03
    assert abs(float(((y - y.mean()) ** 2).mean()) - 1 / 6) < 0.01


def test_adding_problem_deterministic_and_odd_length():
    X1, y1 = adding_problem(8, 7, seed=123)
    X2, y2 = adding_problem(8, 7, seed=123)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert (X1[:, :3, 1].sum(axis=1) == 1).all() and (X1[:, 3:, 1].sum(axis=1) == 1).all()
    X3, _ = adding_problem(8, 7, seed=124)
    assert not np.array_equal(X1, X3)
    X4, y4 = adding_problem(1, 2, seed=0)
    assert X4[0, :, 1].tolist() == [1.0, 1.0] and y4[0, 0] == pytest.approx(X4[0, :, 0].sum())
    for bad in (dict(n=0, T=5), dict(n=2, T=1), dict(n=2.5, T=5)):
        with pytest.raises(ValueError):
            adding_problem(**bad)
