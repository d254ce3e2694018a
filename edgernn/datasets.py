"""Small real data sets shipped with edgernn, plus sequence utilities.

Everything here works offline: the data live in ``edgernn/data/`` inside the
installed package (see ``edgernn/data/SOURCES.md`` for where each file comes
from and its licence).

Loaders
-------
- :func:`load_airline` -- monthly airline passengers, 1949-1960 (144 values).
- :func:`load_temperatures` -- daily minimum temperature in Melbourne, 1981-1990 (3650 values).
- :func:`load_sunspots` -- Zurich monthly sunspot numbers, 1749-1983 (2820 values).
- :func:`load_japanese_vowels` -- 9 speakers, 12 LPC cepstrum channels, variable length 7-29.
- :func:`load_basic_motions` -- smartwatch accelerometer + gyroscope, 6 channels x 100 steps, 4 classes.
- :func:`load_text_sample` -- about 250 KB of Plato's *Republic* (Jowett translation).
- :func:`load_ts` -- reader for the sktime/UEA ``.ts`` format (plain or gzip-compressed).

Utilities
---------
- :func:`make_windows` -- sliding windows for one-step or multi-step forecasting.
- :func:`train_test_split_time` -- chronological (unshuffled) split.
- :func:`pad_sequences` -- Keras-like padding of a list of sequences, with their lengths.
- :func:`adding_problem` -- the synthetic long-memory task of Hochreiter & Schmidhuber.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

__all__ = [
    "ClassificationData",
    "adding_problem",
    "data_dir",
    "load_airline",
    "load_basic_motions",
    "load_japanese_vowels",
    "load_sunspots",
    "load_temperatures",
    "load_text_sample",
    "load_ts",
    "make_windows",
    "pad_sequences",
    "train_test_split_time",
]

_DATA_DIR = Path(__file__).resolve().parent / "data"

_MISSING = frozenset({"?", "nan", "NaN", "NAN"})


def data_dir() -> Path:
    """Return the directory holding the shipped data files.

    Returns
    -------
    pathlib.Path
        ``edgernn/data`` inside the installed package.
    """
    return _DATA_DIR


def _data_path(name: str) -> Path:
    """Find ``name`` or ``name + '.gz'`` in the data directory."""
    for candidate in (_DATA_DIR / name, _DATA_DIR / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"edgernn data file {name!r} not found in {_DATA_DIR}; the package data may not have been installed"
    )


def _open_text(path: str | os.PathLike) -> IO[str]:
    """Open a text file, decompressing it transparently if its name ends in ``.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline=None)
    return open(path, encoding="utf-8", newline=None)


# ---------------------------------------------------------------------------
# Univariate time series (CSV)
# ---------------------------------------------------------------------------


def _load_csv_series(name: str) -> tuple[np.ndarray, np.ndarray]:
    path = _data_path(name)
    dates: list[str] = []
    values: list[float] = []
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        next(reader)  # header row
        for row in reader:
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path.name}, line {reader.line_num}: expected 2 columns, got {len(row)}")
            try:
                values.append(float(row[1]))
            except ValueError:
                raise ValueError(
                    f"{path.name}, line {reader.line_num}: cannot parse value {row[1]!r}"
                ) from None
            dates.append(row[0].strip())
    return np.array(dates, dtype=str), np.array(values, dtype=np.float32)


def load_airline() -> tuple[np.ndarray, np.ndarray]:
    """Monthly totals of international airline passengers, 1949-01 to 1960-12.

    Box & Jenkins (1976) "Series G", in thousands of passengers. Trend plus
    multiplicative yearly seasonality: the classic small forecasting demo.

    Returns
    -------
    dates : numpy.ndarray of str, shape (144,)
        Months as ``'YYYY-MM'``.
    values : numpy.ndarray of float32, shape (144,)
        Passengers (thousands); the first value is 112.

    Examples
    --------
    >>> dates, y = load_airline()
    >>> str(dates[0]), float(y[0]), y.shape
    ('1949-01', 112.0, (144,))
    """
    return _load_csv_series("airline-passengers.csv")


def load_temperatures() -> tuple[np.ndarray, np.ndarray]:
    """Daily minimum temperature in Melbourne, Australia, 1981-1990.

    Source: Australian Bureau of Meteorology via the Time Series Data Library.
    Leap days of 1984 and 1988 are absent from the source, hence 3650 values.

    Returns
    -------
    dates : numpy.ndarray of str, shape (3650,)
        Days as ``'YYYY-MM-DD'``.
    values : numpy.ndarray of float32, shape (3650,)
        Temperatures in degrees Celsius.
    """
    return _load_csv_series("daily-min-temperatures.csv")


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """Zurich monthly mean sunspot numbers, 1749-01 to 1983-12.

    Source: Andrews & Herzberg (1985) via the Time Series Data Library. A
    quasi-periodic series (cycle of about 11 years) that is harder than it looks.

    Returns
    -------
    dates : numpy.ndarray of str, shape (2820,)
        Months as ``'YYYY-MM'``.
    values : numpy.ndarray of float32, shape (2820,)
        Sunspot numbers.
    """
    return _load_csv_series("monthly-sunspots.csv")


# ---------------------------------------------------------------------------
# Multivariate classification (.ts, sktime/UEA format)
# ---------------------------------------------------------------------------


class ClassificationData(NamedTuple):
    """Train/test split of a sequence-classification data set.

    A named tuple, so both ``X_train, y_train, X_test, y_test, class_names = data``
    and ``data.X_train`` work.

    Attributes
    ----------
    X_train : list of numpy.ndarray
        One float32 array of shape ``(T_i, n_channels)`` per series.
    y_train : numpy.ndarray of int64, shape (n_train,)
        Class indices into ``class_names``.
    X_test : list of numpy.ndarray
        As ``X_train``.
    y_test : numpy.ndarray of int64, shape (n_test,)
        As ``y_train``.
    class_names : list of str
        Class labels as written in the file, in sorted order (numerically sorted
        when every label is a number); ``y == k`` means ``class_names[k]``.
    """

    X_train: list
    y_train: np.ndarray
    X_test: list
    y_test: np.ndarray
    class_names: list


def _sorted_labels(names: list[str]) -> list[str]:
    """Sort class names: numerically if all of them are numbers, else as strings."""
    unique = list(dict.fromkeys(names))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return sorted(unique)


def _parse_bool(value: str, key: str, source: str, lineno: int) -> bool:
    word = value.split()[0].lower() if value.split() else ""
    if word == "true":
        return True
    if word == "false":
        return False
    raise ValueError(
        f"malformed .ts file {source}, line {lineno}: @{key} must be true or false, got {value!r}"
    )


def load_ts(
    file: str | os.PathLike | IO[str],
) -> tuple[list[np.ndarray], np.ndarray | None, list[str] | None]:
    """Read a time-series classification file in the sktime/UEA ``.ts`` format.

    Format: ``#`` comment lines, ``@key value`` header lines, then ``@data``.
    Each following line is one series: its dimensions (channels) are separated
    by ``:``, the values within a dimension by ``,``, and the class label comes
    after the last ``:`` when the header says ``@classLabel true ...``.
    Missing values (``?`` or ``NaN``) become NaN. Series may have different
    lengths; the channels of one series must have the same length.

    Parameters
    ----------
    file : str, os.PathLike or text file object
        Path to a ``.ts`` file (``.ts.gz`` is decompressed transparently) or an
        open text stream.

    Returns
    -------
    X : list of numpy.ndarray
        One float32 array of shape ``(T_i, n_dims)`` per series.
    y : numpy.ndarray of int64, shape (n_series,), or None
        Class indices into ``class_names`` (None when the file has no labels).
        With ``@targetLabel true`` (regression files) this is a float32 array
        of targets instead.
    class_names : list of str or None
        Class labels from the ``@classLabel`` header line, sorted (numerically
        if they are all numbers); None without class labels.

    Raises
    ------
    ValueError
        On a malformed file; the message names the file and the line number.
    """
    if isinstance(file, (str, os.PathLike)):
        with _open_text(file) as fh:
            return _parse_ts(fh, Path(file).name)
    return _parse_ts(file, getattr(file, "name", "<stream>"))


def _parse_ts(lines, source: str):
    def fail(lineno: int, msg: str):
        raise ValueError(f"malformed .ts file {source}, line {lineno}: {msg}")

    header: dict[str, str] = {}
    class_names: list[str] | None = None
    has_class = False
    has_target = False
    n_dims: int | None = None
    in_data = False
    X: list[np.ndarray] = []
    labels: list[str] = []
    label_lines: list[int] = []

    lineno = 0
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                fail(lineno, f"expected '#' comment, '@key value' header or '@data', got {line[:40]!r}")
            key, _, value = line[1:].partition(" ")
            key = key.lower()
            value = value.strip()
            if key == "data":
                in_data = True
                continue
            header[key] = value
            if key == "classlabel":
                has_class = _parse_bool(value, "classLabel", source, lineno)
                if has_class:
                    names = value.split()[1:]
                    class_names = names if names else None
            elif key == "targetlabel":
                has_target = _parse_bool(value, "targetLabel", source, lineno)
            elif key == "timestamps":
                if _parse_bool(value, "timeStamps", source, lineno):
                    fail(lineno, "time-stamped series (@timeStamps true) are not supported")
            elif key == "dimensions":
                try:
                    n_dims = int(value)
                except ValueError:
                    fail(lineno, f"@dimensions must be an integer, got {value!r}")
                if n_dims < 1:
                    fail(lineno, f"@dimensions must be >= 1, got {n_dims}")
            continue

        # A data line.
        fields = line.split(":")
        labelled = has_class or has_target
        if labelled:
            if len(fields) < 2:
                fail(lineno, "expected at least one dimension followed by ':label'")
            label = fields[-1].strip()
            fields = fields[:-1]
            if not label:
                fail(lineno, "empty class label")
        if n_dims is None:
            n_dims = len(fields)  # first series fixes the number of dimensions
        if len(fields) != n_dims:
            fail(lineno, f"expected {n_dims} dimension(s), got {len(fields)}")
        channels = []
        for d, field in enumerate(fields):
            tokens = field.split(",")
            try:
                vals = [np.nan if t.strip() in _MISSING else float(t) for t in tokens]
            except ValueError:
                bad = next(t for t in tokens if t.strip() not in _MISSING and not _is_float(t))
                fail(lineno, f"dimension {d}: cannot parse value {bad.strip()!r}")
            channels.append(vals)
        length = len(channels[0])
        for d, ch in enumerate(channels):
            if len(ch) != length:
                fail(lineno, f"dimension {d} has {len(ch)} values but dimension 0 has {length}")
        X.append(np.array(channels, dtype=np.float32).T.copy())
        if labelled:
            if has_class and class_names is not None and label not in class_names:
                fail(
                    lineno, f"class label {label!r} is not declared in @classLabel ({' '.join(class_names)})"
                )
            labels.append(label)
            label_lines.append(lineno)

    if not in_data:
        raise ValueError(f"malformed .ts file {source}: no '@data' line (read {lineno} lines)")
    if not X:
        raise ValueError(f"malformed .ts file {source}: no series after '@data'")

    if has_class:
        names = _sorted_labels(class_names if class_names is not None else labels)
        index = {name: i for i, name in enumerate(names)}
        y = np.array([index[lab] for lab in labels], dtype=np.int64)
        return X, y, names
    if has_target:
        try:
            y = np.array([float(lab) for lab in labels], dtype=np.float32)
        except ValueError:
            for lab, ln in zip(labels, label_lines, strict=True):
                if not _is_float(lab):
                    fail(ln, f"cannot parse target value {lab!r}")
        return X, y, None
    return X, None, None


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _load_ts_pair(name: str) -> ClassificationData:
    X_train, y_train, names_train = load_ts(_data_path(f"{name}_TRAIN.ts"))
    X_test, y_test, names_test = load_ts(_data_path(f"{name}_TEST.ts"))
    if names_train != names_test:  # pragma: no cover - guards the shipped files
        raise ValueError(f"{name}: train and test files declare different classes")
    return ClassificationData(X_train, y_train, X_test, y_test, names_train)


def load_japanese_vowels() -> ClassificationData:
    """Japanese Vowels: speaker recognition from the vowel /ae/.

    Nine male speakers; each utterance is a sequence of 12 LPC cepstrum
    coefficients per frame, 7 to 29 frames long (Kudo, Toyama & Shimbo, 1999;
    UCI / UEA archive). 270 training and 370 test series.

    Returns
    -------
    ClassificationData
        ``X_train`` / ``X_test``: lists of float32 arrays of shape ``(T_i, 12)``
        with ``7 <= T_i <= 29``; ``y_train`` / ``y_test``: int64 in ``0..8``;
        ``class_names``: ``['1', ..., '9']`` (speaker numbers).

    See Also
    --------
    pad_sequences : stack the variable-length series into one batch with lengths.

    Examples
    --------
    >>> data = load_japanese_vowels()
    >>> len(data.X_train), len(data.X_test), data.X_train[0].shape[1]
    (270, 370, 12)
    """
    return _load_ts_pair("JapaneseVowels")


def load_basic_motions() -> ClassificationData:
    """Basic Motions: activity recognition from a smartwatch.

    3-axis accelerometer and 3-axis gyroscope (6 channels), 100 steps at 10 Hz,
    four activities; 40 training and 40 test series (UEA multivariate archive).

    Returns
    -------
    ClassificationData
        ``X_train`` / ``X_test``: lists of float32 arrays of shape ``(100, 6)``
        (``np.stack`` them for a ``(40, 100, 6)`` batch); ``y_train`` /
        ``y_test``: int64 in ``0..3``; ``class_names``:
        ``['Badminton', 'Running', 'Standing', 'Walking']``.
    """
    return _load_ts_pair("BasicMotions")


# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------


def load_text_sample(with_header: bool = False) -> str:
    """About 250 KB of Plato's *Republic*, Jowett's translation, for character models.

    Project Gutenberg eBook #1497. The slice starts at the dialogue itself
    ("THE REPUBLIC. PERSONS OF THE DIALOGUE ... BOOK I. I went down yesterday to
    the Piraeus ...") and ends at a paragraph boundary in Book IV; Jowett's
    introduction is left out. Plain ASCII.

    Parameters
    ----------
    with_header : bool, default False
        Include the Project Gutenberg header (title, translator, licence notice,
        producer credit) in front of the text.

    Returns
    -------
    str
        The text, with ``'\\n'`` line endings.
    """
    with _open_text(_data_path("plato-republic-slice.txt")) as fh:
        text = fh.read()
    if with_header:
        return text
    marker = text.find("*** START OF")
    if marker < 0:  # pragma: no cover - guards the shipped file
        return text
    rest = text[text.index("\n", marker) + 1 :]
    stripped = rest.lstrip("\n")
    if stripped.startswith("Produced by"):
        stripped = stripped[stripped.index("\n") + 1 :] if "\n" in stripped else ""
    return stripped.lstrip("\n")


# ---------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------


def make_windows(series, window: int, horizon: int = 1, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cut a univariate series into (input window, following values) pairs.

    Window ``i`` is ``series[i*stride : i*stride + window]`` and its target is
    the next ``horizon`` values.

    Parameters
    ----------
    series : array_like, shape (T,) or (T, 1)
        The series.
    window : int
        Input length (>= 1).
    horizon : int, default 1
        Number of future values to predict (>= 1).
    stride : int, default 1
        Step between consecutive windows (>= 1).

    Returns
    -------
    X : numpy.ndarray of float32, shape (N, window, 1)
        Input windows, batch-first with one feature.
    y : numpy.ndarray of float32, shape (N, horizon)
        Targets. ``N = (T - window - horizon) // stride + 1``.

    Raises
    ------
    ValueError
        If the series is not 1-D (or ``(T, 1)``), a parameter is < 1, or the
        series is shorter than ``window + horizon``.

    Examples
    --------
    >>> X, y = make_windows(np.arange(6), window=3)
    >>> X[:, :, 0].tolist(), y.tolist()
    ([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]], [[3.0], [4.0], [5.0]])
    """
    s = np.asarray(series)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise ValueError(f"make_windows expects a 1-D series (or shape (T, 1)), got shape {s.shape}")
    for name, v in (("window", window), ("horizon", horizon), ("stride", stride)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    window, horizon, stride = int(window), int(horizon), int(stride)
    T = s.shape[0]
    if T < window + horizon:
        raise ValueError(f"series of length {T} is shorter than window + horizon = {window + horizon}")
    s = s.astype(np.float32)
    views = np.lib.stride_tricks.sliding_window_view(s, window + horizon)[::stride]
    X = np.ascontiguousarray(views[:, :window])[:, :, None]
    y = np.ascontiguousarray(views[:, window:])
    return X, y


def train_test_split_time(*arrays, test_size: float | int = 0.2) -> list[np.ndarray]:
    """Split arrays along their first axis without shuffling: the test part is the end.

    Parameters
    ----------
    *arrays : array_like
        One or more arrays with the same first dimension (e.g. ``X`` and ``y``
        from :func:`make_windows`).
    test_size : float or int, default 0.2
        Fraction in ``(0, 1)`` of the rows for the test part, or an absolute
        number of rows. The fraction is rounded up.

    Returns
    -------
    list of numpy.ndarray
        ``[a_train, a_test, b_train, b_test, ...]`` as in scikit-learn.

    Raises
    ------
    ValueError
        If no array is given, lengths differ, or either part would be empty.
    """
    if not arrays:
        raise ValueError("train_test_split_time needs at least one array")
    arrs = [np.asarray(a) for a in arrays]
    n = arrs[0].shape[0] if arrs[0].ndim else 0
    for a in arrs:
        if a.ndim == 0 or a.shape[0] != n:
            raise ValueError("all arrays must have the same first dimension")
    if isinstance(test_size, (float, np.floating)):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"a fractional test_size must be in (0, 1), got {test_size}")
        n_test = int(np.ceil(test_size * n))
    else:
        n_test = int(test_size)
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size!r} leaves an empty train or test part for {n} rows")
    out: list[np.ndarray] = []
    for a in arrs:
        out.extend((a[: n - n_test], a[n - n_test :]))
    return out


def pad_sequences(
    sequences,
    maxlen: int | None = None,
    value: float = 0.0,
    padding: str = "post",
    truncating: str = "pre",
    dtype="float32",
) -> tuple[np.ndarray, np.ndarray]:
    """Pad a list of variable-length sequences into one batch (Keras-like).

    Parameters
    ----------
    sequences : sequence of array_like
        Each of shape ``(T_i, F)`` (feature sequences) or ``(T_i,)`` (e.g.
        token ids). All must have the same number of dimensions and ``F``.
        ``T_i = 0`` is allowed.
    maxlen : int, optional
        Length of the output. Default: the longest sequence.
    value : float, default 0.0
        Padding value.
    padding : {"post", "pre"}, default "post"
        Where to pad. ``"post"`` (default) matches the ``lengths`` convention
        of edgernn's layers: valid steps first, padding after.
    truncating : {"pre", "post"}, default "pre"
        For sequences longer than ``maxlen``, drop steps from the start
        (``"pre"``, Keras' default, keeps the most recent steps) or from the end.
    dtype : data-type, default float32
        Output dtype (use ``"int64"`` for token ids).

    Returns
    -------
    padded : numpy.ndarray, shape (B, T, F) or (B, T)
        ``(B, T)`` when the inputs are 1-D.
    lengths : numpy.ndarray of int64, shape (B,)
        Number of valid (non-padding) steps of each row: ``min(T_i, maxlen)``.
        Pass it as ``lengths=`` to the model when ``padding="post"``.

    Raises
    ------
    ValueError
        Empty input, mixed dimensions or feature sizes, bad ``padding`` /
        ``truncating``, or a negative ``maxlen``.

    Examples
    --------
    >>> X, lengths = pad_sequences([np.ones((2, 3)), np.ones((4, 3))])
    >>> X.shape, lengths.tolist()
    ((2, 4, 3), [2, 4])
    """
    if padding not in ("post", "pre"):
        raise ValueError(f"padding must be 'post' or 'pre', got {padding!r}")
    if truncating not in ("post", "pre"):
        raise ValueError(f"truncating must be 'post' or 'pre', got {truncating!r}")
    seqs = [np.asarray(s) for s in sequences]
    if not seqs:
        raise ValueError("pad_sequences needs at least one sequence")
    ndim = seqs[0].ndim
    if ndim not in (1, 2):
        raise ValueError(f"each sequence must be 1-D (T,) or 2-D (T, F), got shape {seqs[0].shape}")
    feat = seqs[0].shape[1:]
    for i, s in enumerate(seqs):
        if s.ndim != ndim or s.shape[1:] != feat:
            raise ValueError(
                f"sequence {i} has shape {s.shape}, incompatible with sequence 0 of shape {seqs[0].shape}"
            )
    raw_lengths = np.array([s.shape[0] for s in seqs], dtype=np.int64)
    if maxlen is None:
        maxlen = int(raw_lengths.max())
    elif int(maxlen) != maxlen or maxlen < 0:
        raise ValueError(f"maxlen must be a non-negative integer, got {maxlen!r}")
    maxlen = int(maxlen)
    out = np.full((len(seqs), maxlen) + feat, value, dtype=dtype)
    lengths = np.minimum(raw_lengths, maxlen)
    for i, s in enumerate(seqs):
        n = int(lengths[i])
        if n == 0:
            continue
        part = s[-n:] if truncating == "pre" else s[:n]
        if padding == "post":
            out[i, :n] = part
        else:
            out[i, maxlen - n :] = part
    return out, lengths


def adding_problem(n: int, T: int, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber, 1997): a long-memory benchmark.

    Each input step has two channels: a value drawn uniformly from ``[0, 1)``
    and a marker that is 1 at exactly two steps -- one in the first half
    (``t < T // 2``) and one in the second half -- and 0 elsewhere. The target is
    the sum of the two marked values. Always predicting the mean (1.0) gives a
    mean squared error of about 1/6 (0.167); a model that solves the task gets
    far below that.

    Parameters
    ----------
    n : int
        Number of sequences (>= 1).
    T : int
        Sequence length (>= 2).
    seed : int, numpy.random.Generator or None
        Seed for ``numpy.random.default_rng``; the same seed gives the same data.

    Returns
    -------
    X : numpy.ndarray of float32, shape (n, T, 2)
        Channel 0: values; channel 1: markers.
    y : numpy.ndarray of float32, shape (n, 1)
        Sum of the two marked values.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if int(T) != T or T < 2:
        raise ValueError(f"T must be an integer >= 2, got {T!r}")
    n, T = int(n), int(T)
    rng = np.random.default_rng(seed)
    half = T // 2
    X = np.zeros((n, T, 2), dtype=np.float32)
    X[:, :, 0] = rng.random((n, T), dtype=np.float32)
    rows = np.arange(n)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, T, size=n)
    X[rows, first, 1] = 1.0
    X[rows, second, 1] = 1.0
    y = (X[rows, first, 0] + X[rows, second, 0])[:, None].astype(np.float32)
    return X, y
