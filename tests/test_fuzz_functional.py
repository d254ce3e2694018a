"""The functional API fuzzed (issue 13, "tests that stay"), every registered cell.

Valid inputs in odd memory layouts (strided views, negative strides, read-only, Fortran
order, nested lists; each argument its own layout) give what the contiguous call gives, bit for
bit, forward and backward; float64 results match the naive oracle (``tests/naive.py``); a
repeated call gives the same result; no input (incl. the output gradients given to
``*_backward``) is ever written. Invalid inputs (a wrong shape or rank, a non-numeric dtype, bad
lengths, options of the wrong type or value) raise ValueError or TypeError whose message names
the argument, and leave the inputs untouched.

Fixed seed (``derandomize=True``) and a small budget in the default run; ``-m slow`` runs a
larger one.
"""

from __future__ import annotations

import inspect
import re

import naive
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import edgernn.functional as F
from edgernn import cells

BASE = settings(derandomize=True, deadline=None, database=None, phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])  # no shrinking: slow here
CELLS = sorted(cells.registered())
ONNX = ("rnn", "gru", "lstm")
DIRECTIONS = ("forward", "reverse", "bidirectional")
LAYOUTS = ("c", "strided", "negative", "fortran", "readonly", "strided_readonly", "list")


# ---- cases ------------------------------------------------------------------------------------
def _fns(cell):
    spec = cells.get(cell)
    return getattr(F, spec.functional[0]), getattr(F, spec.functional[1])


def _case(data, cell):
    """(kwargs for F.<cell>, oracle(kwargs) -> outputs in float64 or None, dtype)."""
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    direction = data.draw(st.sampled_from(DIRECTIONS), label="direction")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    B, T, I, H = (data.draw(st.integers(1, 4), label=n) for n in "BTIH")
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    L = rng.integers(0, T + 1, size=B) if data.draw(st.booleans(), label="lengths") else None
    if cell in ONNX:
        default_acts = dtype == np.float32 or data.draw(st.booleans(), label="default activations")
        kw = naive.random_case(cell, seed, B=B, T=T, I=I, H=H, direction=direction, lengths=L,
                               h0=data.draw(st.booleans(), label="h0"),
                               clip=data.draw(st.sampled_from([None, 0.7, 3.0]), label="clip"),
                               activations=None if default_acts else "random",
                               alpha_beta=None if default_acts else "random")
        kw = {k: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v) for k, v in kw.items()}

        def oracle(kw):
            return getattr(naive, cell)(**kw)

        return kw, oracle, dtype
    params, widths, O = cells.get(cell).mod().example_params(rng, D, I, H, dtype)
    kw = {"X": rng.standard_normal((B, T, I)).astype(dtype), **params, "lengths": L, "direction": direction}
    if data.draw(st.booleans(), label="initial states"):
        kw.update({f"{s}0": rng.standard_normal((B, D, w)).astype(dtype) for s, w in widths.items()})
    names = cells.get(cell).state_names

    def oracle(kw):
        p = {k: kw[k] for k in params}
        init = {s: kw.get(f"{s}0") for s in names}
        Y, fin = naive.cell_run(cell, kw["X"], p, init, widths, O, kw["lengths"], kw["direction"],
                                acts=cells.get(cell).default_activations)
        return (Y,) + tuple(fin[s] for s in names)

    return kw, oracle, dtype


def _layout(a, how):
    """``a`` (an ndarray) in layout ``how``: same values, different memory."""
    if how == "c" or a.ndim == 0:
        return a
    if how == "list":
        return a.tolist()
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "negative":  # every axis reversed twice: a view with negative strides
        sl = (slice(None, None, -1),) * a.ndim
        out = np.ascontiguousarray(a[sl])[sl]
        assert a.size <= 1 or any(s < 0 for s in out.strides)
        return out
    if how in ("strided", "strided_readonly"):
        big = np.zeros(a.shape + (3,), a.dtype)
        big[..., 1] = a
        out = big[..., 1]
    else:
        out = a.copy()
    if how.endswith("readonly"):
        out.setflags(write=False)
    return out


def _snapshot(kw):
    return {k: np.array(v, copy=True) for k, v in kw.items() if isinstance(v, np.ndarray)}


def _unchanged(kw, snap):
    for k, v in snap.items():
        np.testing.assert_array_equal(kw[k], v, err_msg=f"{k} was modified")


def _equal(a, b, what):
    assert len(a) == len(b), what
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype, what
        np.testing.assert_array_equal(x, y, err_msg=what)


# ---- valid inputs in odd layouts ------------------------------------------------------------------
def fuzz_layouts(data):
    cell = data.draw(st.sampled_from(CELLS), label="cell")
    fn, bwd = _fns(cell)
    kw, oracle, dtype = _case(data, cell)
    ref = fn(**kw, train=True)
    outs, cache = ref[:-1], ref[-1]
    odd = {}
    for k, v in kw.items():  # (a float32 X as a list would be float64: X's dtype sets the computation's)
        layouts = LAYOUTS if k != "X" or dtype == np.float64 else LAYOUTS[:-1]
        odd[k] = _layout(v, data.draw(st.sampled_from(layouts), label=f"layout {k}")) if isinstance(v, np.ndarray) \
            else v
    snap = _snapshot(odd)
    got = fn(**odd, train=True)
    _equal(got[:-1], outs, "forward, odd layouts vs contiguous")
    _equal(fn(**odd), outs, "a repeated call (no train)")
    # against the oracle
    expected = oracle(kw)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-4)
    for g, e in zip(outs, expected, strict=True):
        np.testing.assert_allclose(g, e, **tol)
    # backward: gradients of the outputs, in odd layouts too, never written
    rng = np.random.default_rng(0)
    ds = [rng.standard_normal(o.shape).astype(dtype) for o in outs]
    g_ref = bwd(cache, *ds)
    ds_odd = [_layout(d, data.draw(st.sampled_from(LAYOUTS), label=f"layout d{i}")) for i, d in enumerate(ds)]
    ds_snap = [np.array(d, copy=True) for d in ds_odd if isinstance(d, np.ndarray)]
    g_odd = bwd(got[-1], *ds_odd)
    assert set(g_odd) == set(g_ref)
    for k in g_ref:
        np.testing.assert_array_equal(g_odd[k], g_ref[k], err_msg=f"gradient {k}")
    for d, s in zip([d for d in ds_odd if isinstance(d, np.ndarray)], ds_snap, strict=True):
        np.testing.assert_array_equal(d, s, err_msg="an output gradient was modified")
    _unchanged(odd, snap)


def test_fuzz_layouts():
    settings(BASE, max_examples=60)(given(data=st.data())(fuzz_layouts))()


@pytest.mark.slow
def test_fuzz_layouts_long():
    settings(BASE, max_examples=2000)(given(data=st.data())(fuzz_layouts))()


# ---- invalid inputs ---------------------------------------------------------------------------
_BAD_OPTION = ["zzz", {}, [object()], (1, "x")]  # never a valid value of any option
_NOT_NUMBERS = [np.array(["a", "b"]), np.array([1 + 2j]), np.array([{}], dtype=object), {"a": 1}, "abc"]
_OPTIONS = {"direction", "activations", "activation", "output_activation", "activation_alpha", "activation_beta",
            "clip", "window", "pooling", "beta", "highway_scale"}  # not flags: any value is a valid flag


def _options(fn):
    return sorted(_OPTIONS & set(inspect.signature(fn).parameters))


def _shape_mutation(data, a, first_axis=0):
    """A different shape for array ``a``: one axis (from ``first_axis``) one shorter or longer, or
    one axis more or less."""
    kind = data.draw(st.sampled_from(["axis", "rank+", "rank-"] if a.ndim > 1 else ["axis", "rank+"]), label="kind")
    if kind == "rank+":
        return a[..., None]
    if kind == "rank-":
        return a[..., 0]
    ax = data.draw(st.integers(first_axis, a.ndim - 1), label="axis")
    if a.shape[ax] > 1 and data.draw(st.booleans(), label="shorter"):
        return np.take(a, range(a.shape[ax] - 1), axis=ax)
    return np.concatenate([a, np.take(a, [0], axis=ax)], axis=ax)


def fuzz_invalid(data):
    cell = data.draw(st.sampled_from(CELLS), label="cell")
    fn, _ = _fns(cell)
    kw, _, _ = _case(data, cell)
    arrays = sorted(k for k, v in kw.items() if isinstance(v, np.ndarray))
    what = data.draw(st.sampled_from(["shape", "dtype", "lengths", "option"]), label="mutation")
    if what == "shape":  # (X's batch and time sizes are free: the features are mutated)
        name = data.draw(st.sampled_from([k for k in arrays if k != "lengths"]), label="argument")
        bad = _shape_mutation(data, kw[name], 2 if name == "X" else 0)
    elif what == "dtype":
        name = data.draw(st.sampled_from(arrays), label="argument")
        bad = data.draw(st.sampled_from(_NOT_NUMBERS), label="value")
    elif what == "lengths":
        name = "lengths"
        B, T = kw["X"].shape[:2]
        bad = data.draw(st.sampled_from([np.full(B, T + 1), np.full(B, -1), np.full(B, 0.5), np.zeros(B + 1, int),
                                         np.zeros((B, 1), int), "abc", [None] * B]), label="value")
    else:
        opts = _options(fn)
        name = data.draw(st.sampled_from(opts), label="option")
        bad = data.draw(st.sampled_from(_BAD_OPTION + ([-1.0, float("nan")] if name == "clip" else [])),
                        label="value")
    if isinstance(bad, np.ndarray) and bad.dtype.kind in "fiu" and data.draw(st.booleans(), label="readonly"):
        bad.setflags(write=False)
    args = dict(kw, **{name: bad})
    snap = _snapshot(args)
    with pytest.raises((ValueError, TypeError)) as ei:
        fn(**args)
    msg = str(ei.value)
    assert re.search(rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])", msg), \
        f"{cell}: {name} = {bad!r:.60}: the message does not name {name}: {type(ei.value).__name__}: {msg}"
    _unchanged(args, snap)


def fuzz_invalid_backward(data):
    """Output gradients of a wrong shape or dtype, or a cache that is not one: errors naming them."""
    cell = data.draw(st.sampled_from(CELLS), label="cell")
    fn, bwd = _fns(cell)
    kw, _, _ = _case(data, cell)
    *outs, cache = fn(**kw, train=True)
    names = list(inspect.signature(bwd).parameters)[1:]  # dY, dY_h[, dY_c]
    ds = {n: np.ones_like(o) for n, o in zip(names, outs, strict=True)}
    what = data.draw(st.sampled_from(["shape", "dtype", "cache"]), label="mutation")
    if what == "cache":
        name, bad = "cache", data.draw(st.sampled_from([None, {}, "zzz", fn(**kw)]), label="value")
        args = dict(ds, cache=bad)
    else:
        name = data.draw(st.sampled_from(names), label="argument")
        bad = _shape_mutation(data, ds[name]) if what == "shape" else data.draw(st.sampled_from(_NOT_NUMBERS),
                                                                                  label="value")
        args = dict(ds, cache=cache, **{name: bad})
    snap = _snapshot(args)
    with pytest.raises((ValueError, TypeError)) as ei:
        bwd(**args)
    msg = str(ei.value)
    assert re.search(rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])", msg), \
        f"{cell}: {name} = {bad!r:.60}: the message does not name {name}: {type(ei.value).__name__}: {msg}"
    _unchanged(args, snap)


def test_fuzz_invalid_backward():
    settings(BASE, max_examples=60)(given(data=st.data())(fuzz_invalid_backward))()


@pytest.mark.slow
def test_fuzz_invalid_backward_long():
    settings(BASE, max_examples=1500)(given(data=st.data())(fuzz_invalid_backward))()


def test_fuzz_invalid_inputs():
    settings(BASE, max_examples=300)(given(data=st.data())(fuzz_invalid))()


@pytest.mark.slow
def test_fuzz_invalid_inputs_long():
    settings(BASE, max_examples=4000)(given(data=st.data())(fuzz_invalid))()


@pytest.mark.parametrize("cell", ["lstm", "sru"])
def test_read_only_inputs_compile_no_new_kernels(cell):
    """Found by the layout fuzzer: read-only weights reached the jitted kernels as numba's
    read-only array type, so each combination compiled a specialisation of its own (7 s for
    ``lstm_forward``, again in every fresh cache). Read-only inputs are copied at the boundary."""
    from edgernn.cells import driver
    from edgernn.cells import lstm as lstm_mod

    kernel = lstm_mod.lstm_forward if cell == "lstm" else driver.drive_forward
    rng = np.random.default_rng(0)
    fn, _ = _fns(cell)
    if cell == "lstm":
        kw = dict(X=rng.standard_normal((1, 5, 3)), W=rng.standard_normal((1, 16, 3)), R=rng.standard_normal((1, 16, 4)),
                  P=rng.standard_normal((1, 12)), h0=rng.standard_normal((1, 1, 4)), clip=2.0)
    else:
        params, _, _ = cells.get(cell).mod().example_params(rng, 1, 3, 4, np.float64)
        kw = dict(X=rng.standard_normal((1, 5, 3)), **params)
    ref = fn(**kw)
    n = len(kernel.signatures)
    for v in kw.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    _equal(fn(**kw), ref, "read-only inputs")
    assert len(kernel.signatures) == n, kernel.signatures[n:]
