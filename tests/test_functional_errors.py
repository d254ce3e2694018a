"""Bad input to edgernn.functional: a clear ValueError/TypeError naming the argument (and the
expected shape for shape errors).  NaN/inf inputs propagate without crashing."""

from __future__ import annotations

import re

import numpy as np
import pytest

import edgernn.functional as F

try:
    from . import naive
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import naive

CELLS = ["rnn", "gru", "lstm"]
G = {"rnn": 1, "gru": 3, "lstm": 4}
B, T, I, H = 3, 4, 2, 5


def _kw(cell, direction="forward", **over):
    kw = naive.random_case(cell, 1, B=B, T=T, H=H, I=I, direction=direction, lengths=[4, 0, 2],
                           peephole=True, activations=None, alpha_beta=None, input_forget=False)
    kw.update(over)
    return kw


def _raises(exc, arg, cell, kw, shape_hint=True):
    """Call cell(**kw); expect ``exc`` whose message names ``arg`` (as a word)."""
    with pytest.raises(exc) as info:
        getattr(F, cell)(**kw)
    msg = str(info.value)
    assert re.search(rf"(?<![A-Za-z_]){re.escape(arg)}(?![A-Za-z_])", msg), f"{arg!r} not named in: {msg}"
    if shape_hint:
        assert re.search(r"\(.*\)|\[.*\]", msg), f"no expected shape/range in: {msg}"
    return msg


# --- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_X_rank(cell):
    kw = _kw(cell)
    _raises(ValueError, "X", cell, dict(kw, X=kw["X"][0]))
    _raises(ValueError, "X", cell, dict(kw, X=kw["X"][..., None]))
    _raises(ValueError, "X", cell, dict(kw, X=np.float64(1.0)))


@pytest.mark.parametrize("cell", CELLS)
def test_W_R_shapes(cell):
    kw = _kw(cell)
    g = G[cell]
    _raises(ValueError, "W", cell, dict(kw, W=np.zeros((1, g * H, I + 1))))  # input size mismatch
    _raises(ValueError, "W", cell, dict(kw, W=np.zeros((1, g * H + 1, I))))  # gates*hidden mismatch
    _raises(ValueError, "W", cell, dict(kw, W=np.zeros((g * H, I))))  # rank
    _raises(ValueError, "R", cell, dict(kw, R=np.zeros((1, g * H, H + 1))))
    _raises(ValueError, "R", cell, dict(kw, R=np.zeros((1, g * H + g, H))))
    _raises(ValueError, "R", cell, dict(kw, R=np.zeros((g * H, H))))


@pytest.mark.parametrize("cell", CELLS)
def test_num_directions_mismatch(cell):
    kw = _kw(cell)  # weights for one direction
    with pytest.raises(ValueError, match=r"(?<![A-Za-z_])(W|R|Wb|Rb|h0|c0|P)(?![A-Za-z_])"):
        getattr(F, cell)(**dict(kw, direction="bidirectional"))
    kw2 = _kw(cell, "bidirectional")
    with pytest.raises(ValueError, match=r"(?<![A-Za-z_])(W|R|Wb|Rb|h0|c0|P)(?![A-Za-z_])"):
        getattr(F, cell)(**dict(kw2, direction="forward"))


@pytest.mark.parametrize("cell", CELLS)
def test_bias_shapes(cell):
    kw = _kw(cell)
    g = G[cell]
    _raises(ValueError, "Wb", cell, dict(kw, Wb=np.zeros((1, g * H + 1))))
    _raises(ValueError, "Wb", cell, dict(kw, Wb=np.zeros(g * H)))
    _raises(ValueError, "Rb", cell, dict(kw, Rb=np.zeros((2, g * H))))
    # ONNX's concatenated B (D, 2*G*H) passed as Wb is refused, not silently misread
    _raises(ValueError, "Wb", cell, dict(kw, Wb=np.zeros((1, 2 * g * H))))


@pytest.mark.parametrize("cell", CELLS)
def test_initial_state_shapes(cell):
    kw = _kw(cell)
    _raises(ValueError, "h0", cell, dict(kw, h0=np.zeros((B + 1, 1, H))))  # batch mismatch
    _raises(ValueError, "h0", cell, dict(kw, h0=np.zeros((B, 1, H + 1))))  # hidden mismatch
    _raises(ValueError, "h0", cell, dict(kw, h0=np.zeros((1, B, H))))  # ONNX layout=0 order
    _raises(ValueError, "h0", cell, dict(kw, h0=np.zeros((B, H))))  # rank
    if cell == "lstm":
        _raises(ValueError, "c0", cell, dict(kw, c0=np.zeros((B, 1, H - 1))))
        _raises(ValueError, "c0", cell, dict(kw, c0=np.zeros((B - 1, 1, H))))
        _raises(ValueError, "P", cell, dict(kw, P=np.zeros((1, 4 * H))))
        _raises(ValueError, "P", cell, dict(kw, P=np.zeros(3 * H)))


@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch_or_time(cell):
    kw = _kw(cell, lengths=None, h0=None)
    kw.pop("c0", None)
    _raises(ValueError, "X", cell, dict(kw, X=np.zeros((0, T, I))), shape_hint=False)
    _raises(ValueError, "X", cell, dict(kw, X=np.zeros((B, 0, I))), shape_hint=False)


@pytest.mark.parametrize("cell", CELLS)
def test_zero_hidden_size(cell):
    kw = _kw(cell, lengths=None, h0=None, Wb=None, Rb=None)
    kw.pop("c0", None)
    kw.pop("P", None)
    with pytest.raises(ValueError, match=r"(?<![A-Za-z_])(R|W|hidden)(?![A-Za-z_])"):
        getattr(F, cell)(**dict(kw, W=np.zeros((1, 0, I)), R=np.zeros((1, 0, 0))))


# --- lengths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_out_of_range_or_wrong_size(cell):
    kw = _kw(cell)
    _raises(ValueError, "lengths", cell, dict(kw, lengths=[4, -1, 2]))
    _raises(ValueError, "lengths", cell, dict(kw, lengths=[5, 0, 2]))  # > T
    _raises(ValueError, "lengths", cell, dict(kw, lengths=[4, 2]))  # wrong length
    _raises(ValueError, "lengths", cell, dict(kw, lengths=[[4, 0, 2]]))  # wrong rank


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_not_integer(cell):
    kw = _kw(cell)
    with pytest.raises((TypeError, ValueError), match="lengths"):
        getattr(F, cell)(**dict(kw, lengths=[4.5, 0, 2]))
    with pytest.raises((TypeError, ValueError), match="lengths"):
        getattr(F, cell)(**dict(kw, lengths=np.array(["4", "0", "2"])))


# --- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_unknown_direction(cell):
    kw = _kw(cell)
    for bad in ("backward", "Forward", "bi", None, 1):
        with pytest.raises((ValueError, TypeError), match="direction"):
            getattr(F, cell)(**dict(kw, direction=bad))


@pytest.mark.parametrize("cell", CELLS)
def test_unknown_or_miscounted_activations(cell):
    kw = _kw(cell)
    n = {"rnn": 1, "gru": 2, "lstm": 3}[cell]
    with pytest.raises(ValueError, match="activation") as info:
        getattr(F, cell)(**dict(kw, activations=["Swish"] * n))
    assert "Swish" in str(info.value)
    with pytest.raises(ValueError, match="activation"):
        getattr(F, cell)(**dict(kw, activations=["Tanh"] * (n + 1)))
    with pytest.raises(ValueError, match="activation"):  # bidirectional needs 2n names
        getattr(F, cell)(**dict(_kw(cell, "bidirectional"), activations=["Tanh"] * n))
    with pytest.raises((ValueError, TypeError), match="activation"):
        getattr(F, cell)(**dict(kw, activations="Tanh" if n > 1 else 42))


# --- dtypes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("arg", ["X", "W", "R", "Wb", "h0"])
def test_non_numeric_dtypes(cell, arg):
    kw = _kw(cell)
    good = np.asarray(kw[arg])
    strings = good.astype(str)
    objects = good.astype(object)
    for bad in (strings, objects, np.full(good.shape, "a"), good.astype(np.complex128)):
        with pytest.raises((TypeError, ValueError), match=rf"(?<![A-Za-z_]){arg}(?![A-Za-z_])"):
            getattr(F, cell)(**dict(kw, **{arg: bad}))


@pytest.mark.parametrize("cell", CELLS)
def test_ragged_nested_list(cell):
    kw = _kw(cell)
    ragged = [[[0.0, 1.0], [0.0]], [[1.0, 2.0]]]
    with pytest.raises((TypeError, ValueError), match="X"):
        getattr(F, cell)(**dict(kw, X=ragged))


@pytest.mark.parametrize("cell", CELLS)
def test_bad_clip(cell):
    kw = _kw(cell)
    for bad in (-1.0, 0.0):
        with pytest.raises(ValueError, match="clip"):
            getattr(F, cell)(**dict(kw, clip=bad))


# --- backward arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_backward_bad_arguments(cell):
    kw = _kw(cell)
    out = getattr(F, cell)(**kw, train=True)
    cache = out[-1]
    bwd = getattr(F, cell + "_backward")
    with pytest.raises(ValueError, match="dY"):
        bwd(cache, np.zeros((B, T + 1, 1, H)))
    with pytest.raises(ValueError, match="dY_h"):
        bwd(cache, np.zeros_like(out[0]), np.zeros((B, 2, H)))
    if cell == "lstm":
        with pytest.raises(ValueError, match="dY_c"):
            bwd(cache, np.zeros_like(out[0]), None, np.zeros((B, 1, H + 1)))
    with pytest.raises(TypeError, match="cache"):
        bwd(None, np.zeros_like(out[0]))
    other = {"rnn": "gru", "gru": "lstm", "lstm": "rnn"}[cell]
    with pytest.raises(TypeError, match="cache"):
        getattr(F, other + "_backward")(cache, np.zeros_like(out[0]))


# --- NaN / inf ---------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_propagate_without_crash(cell, dtype):
    kw = _kw(cell, lengths=None)
    kw = {k: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v) for k, v in kw.items()}
    for bad in (np.nan, np.inf, -np.inf):
        X = kw["X"].copy()
        X[0, 1, 0] = bad  # row 0, step 1
        out = getattr(F, cell)(**dict(kw, X=X), train=True)
        Y = out[0]
        if np.isnan(bad):
            assert np.all(np.isnan(Y[0, 1:])), "NaN did not propagate along the sequence"
        # rows are independent: the other rows stay finite and equal to a clean run
        clean = getattr(F, cell)(**kw)
        np.testing.assert_array_equal(Y[1:], clean[0][1:])
        assert np.all(np.isfinite(Y[1:]))
        assert np.all(np.isfinite(Y[0, 0]))  # the step before the bad value is untouched
        # backward runs too (values may be NaN)
        getattr(F, cell + "_backward")(out[-1], np.ones_like(Y))
    W = kw["W"].copy()
    W[0, 0, 0] = np.nan
    out = getattr(F, cell)(**dict(kw, W=W))
    assert np.any(np.isnan(out[0]))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("cell", CELLS)
def test_nan_in_padded_steps_is_ignored(cell):
    # steps past a sequence's length are never read: NaN padding must not leak into the outputs
    kw = _kw(cell, "bidirectional")
    X = kw["X"].copy()
    for b, n in enumerate(kw["lengths"]):
        X[b, n:] = np.nan
    got = getattr(F, cell)(**dict(kw, X=X))
    expected = getattr(naive, cell)(**kw)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("cell", CELLS)
def test_nan_in_padded_steps_does_not_poison_gradients(cell):
    kw = _kw(cell, "bidirectional")
    X = kw["X"].copy()
    for b, n in enumerate(kw["lengths"]):
        X[b, n:] = np.nan
    out = getattr(F, cell)(**dict(kw, X=X), train=True)
    grads = getattr(F, cell + "_backward")(out[-1], np.ones_like(out[0]), np.ones_like(out[1]))
    ref_out = getattr(F, cell)(**kw, train=True)
    ref = getattr(F, cell + "_backward")(ref_out[-1], np.ones_like(out[0]), np.ones_like(out[1]))
    for k in ref:
        if k == "X":
            valid = np.arange(T)[None, :] < np.asarray(kw["lengths"])[:, None]
            np.testing.assert_allclose(grads[k][valid], ref[k][valid], rtol=1e-12, atol=1e-12, err_msg=k)
        else:
            np.testing.assert_allclose(grads[k], ref[k], rtol=1e-12, atol=1e-12, err_msg=k)
