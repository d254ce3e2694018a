"""edgernn.functional forward: against the naive oracle (float64, ~1e-12), onnxruntime (float32,
1e-5) and PyTorch (float64); dtypes, defaults, argument forms, train=True."""

from __future__ import annotations

import numpy as np
import pytest

import edgernn.functional as F

try:
    from . import naive
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import naive

CELLS = ["rnn", "gru", "lstm"]
DIRECTIONS = ["forward", "reverse", "bidirectional"]
F64_TOL = dict(rtol=1e-12, atol=1e-12)
F32_TOL = dict(rtol=1e-5, atol=1e-5)
OUT_NAMES = ["Y", "Y_h", "Y_c"]


def _cast(kw, dtype):
    return {k: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v) for k, v in kw.items()}


def _assert_outputs(got, expected, tol, rows=None):
    assert len(got) == len(expected)
    for name, g, e in zip(OUT_NAMES[: len(got)], got, expected, strict=True):
        if rows is not None and name != "Y":
            g, e = g[rows], e[rows]
        np.testing.assert_allclose(g, e, err_msg=name, **tol)


def _clip_for(seed):
    return [None, 0.8, 2.0][seed % 3]


# --- against the naive oracle -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("cell", CELLS)
def test_float64_matches_naive(cell, seed):
    kw = naive.random_case(cell, seed, direction=DIRECTIONS[seed % 3], clip=_clip_for(seed // 3))
    got = getattr(F, cell)(**kw)
    assert all(o.dtype == np.float64 for o in got)
    _assert_outputs(got, getattr(naive, cell)(**kw), F64_TOL)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("cell", CELLS)
def test_float32_matches_naive(cell, seed):
    kw = naive.random_case(cell, 100 + seed, direction=DIRECTIONS[seed % 3], clip=_clip_for(seed))
    got = getattr(F, cell)(**_cast(kw, np.float32))
    assert all(o.dtype == np.float32 for o in got)
    _assert_outputs(got, getattr(naive, cell)(**kw), F32_TOL)


@pytest.mark.parametrize("name", list(naive.ACTIVATION_NAMES.values()))
@pytest.mark.parametrize("cell", CELLS)
def test_every_activation_in_every_slot(cell, name):
    n_act = len(naive.DEFAULT_ACTIVATIONS[cell])
    for slot in range(n_act):
        for explicit in (False, True):  # ONNX default alpha/beta, then explicit values
            acts = list(naive.DEFAULT_ACTIVATIONS[cell])
            acts[slot] = name
            kw = naive.random_case(cell, 200 + slot, B=3, T=3, H=2, I=2, direction="bidirectional",
                                   activations=acts + acts[::-1] if n_act > 1 else [name, "Tanh"],
                                   alpha_beta="explicit" if explicit else None, clip=None)
            for dtype, tol in ((np.float64, F64_TOL), (np.float32, F32_TOL)):
                got = getattr(F, cell)(**_cast(kw, dtype))
                _assert_outputs(got, getattr(naive, cell)(**kw), tol)


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_zero_keep_initial_state(cell):
    kw = naive.random_case(cell, 300, B=4, T=3, H=3, I=2, direction="bidirectional", lengths=[0, 3, 0, 1])
    got = getattr(F, cell)(**kw)
    _assert_outputs(got, getattr(naive, cell)(**kw), F64_TOL)
    for b in (0, 2):
        assert np.all(got[0][b] == 0.0)
        np.testing.assert_array_equal(got[1][b], kw["h0"][b])
        if cell == "lstm":
            np.testing.assert_array_equal(got[2][b], kw["c0"][b])


@pytest.mark.parametrize("cell", CELLS)
def test_all_lengths_zero(cell):
    kw = naive.random_case(cell, 301, B=2, T=3, H=2, I=2, direction="bidirectional", lengths=[0, 0])
    _assert_outputs(getattr(F, cell)(**kw), getattr(naive, cell)(**kw), F64_TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_sizes_one(cell):
    for direction in DIRECTIONS:
        kw = naive.random_case(cell, 302, B=1, T=1, H=1, I=1, direction=direction, lengths=[1])
        _assert_outputs(getattr(F, cell)(**kw), getattr(naive, cell)(**kw), F64_TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_longer_sequence_and_wider_layer(cell):
    kw = naive.random_case(cell, 303, B=5, T=17, H=9, I=6, direction="bidirectional", scale=0.4,
                           activations=None, alpha_beta=None)
    _assert_outputs(getattr(F, cell)(**kw), getattr(naive, cell)(**kw), dict(rtol=1e-11, atol=1e-11))
    _assert_outputs(getattr(F, cell)(**_cast(kw, np.float32)), getattr(naive, cell)(**kw), F32_TOL)


# --- against onnxruntime ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("cell", CELLS)
def test_float32_matches_onnxruntime(cell, seed):
    pytest.importorskip("onnxruntime")
    try:
        from . import onnx_util
    except ImportError:
        import onnx_util
    kw = naive.random_case(cell, 400 + seed, direction=DIRECTIONS[seed % 3], clip=_clip_for(seed // 3))
    got = getattr(F, cell)(**_cast(kw, np.float32))
    expected = onnx_util.run_ort(cell, **kw)
    # onnxruntime zeroes Y_h/Y_c of length-0 rows; compare those against the oracle only
    rows = onnx_util.valid_rows(kw.get("lengths"), kw["X"].shape[0])
    _assert_outputs(got, expected, F32_TOL, rows=rows)


# --- against PyTorch --------------------------------------------------------------------------


@pytest.mark.parametrize("cell,act", [("rnn", "Tanh"), ("rnn", "Relu"), ("gru", None), ("lstm", None)])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_matches_torch(cell, act, direction, with_lengths):
    pytest.importorskip("torch")
    D = 2 if direction == "bidirectional" else 1
    kw = naive.random_case(cell, 500, B=3, T=4, H=3, I=2, direction=direction,
                           lengths="random" if with_lengths else None, min_length=1,
                           activations=None if act is None else [act] * D, alpha_beta=None,
                           peephole=False, input_forget=False, linear_before_reset=True)
    expected, _ = naive.torch_reference(cell, kw)
    _assert_outputs(getattr(F, cell)(**kw), expected, F64_TOL)
    _assert_outputs(getattr(F, cell)(**_cast(kw, np.float32)), expected, F32_TOL)


# --- defaults, argument forms, dtypes -----------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_default_activations_equal_explicit(cell):
    kw = naive.random_case(cell, 600, direction="bidirectional", activations=None, alpha_beta=None)
    a = getattr(F, cell)(**kw)
    b = getattr(F, cell)(**dict(kw, activations=naive.DEFAULT_ACTIVATIONS[cell] * 2))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu"])
def test_alpha_beta_defaults_are_onnx_operator_defaults(name):
    alpha, beta = naive.ACTIVATION_DEFAULTS[name.lower()]
    kw = naive.random_case("rnn", 601, B=3, T=3, H=3, I=2, direction="forward", activations=[name],
                           alpha_beta=None, lengths=None)
    implicit = F.rnn(**kw)
    explicit = F.rnn(**dict(kw, activation_alpha=[alpha], activation_beta=None if beta is None else [beta]))
    for x, y in zip(implicit, explicit, strict=True):
        np.testing.assert_array_equal(x, y)
    _assert_outputs(implicit, naive.rnn(**kw), F64_TOL)


def test_alpha_beta_consumed_in_activation_order_with_defaults_after():
    # LSTM bidirectional: (f, g, h) x 2; alphas go only to activations that use one, in order;
    # when the list runs out the remaining ones take their defaults.
    acts = ["HardSigmoid", "Elu", "Tanh", "Sigmoid", "LeakyRelu", "ScaledTanh"]
    kw = naive.random_case("lstm", 602, B=2, T=3, H=2, I=2, direction="bidirectional", activations=acts,
                           alpha_beta=None, peephole=True, input_forget=False)
    for alphas, betas in (([0.3, 0.7], [0.4]), ([0.3, 0.7, 0.05, 1.5], [0.4, 0.9]), ([], []), ([0.3], None)):
        kw2 = dict(kw, activation_alpha=alphas, activation_beta=betas)
        _assert_outputs(F.lstm(**kw2), naive.lstm(**kw2), F64_TOL)


def test_activation_names_are_case_insensitive():
    kw = naive.random_case("gru", 603, direction="forward", activations=["sigmoid", "TANH"], alpha_beta=None)
    a = F.gru(**kw)
    b = F.gru(**dict(kw, activations=["Sigmoid", "Tanh"]))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_follows_input(cell, dtype):
    kw = _cast(naive.random_case(cell, 604, direction="bidirectional"), dtype)
    out = getattr(F, cell)(**kw, train=True)
    for o in out[:-1]:
        assert o.dtype == dtype
    grads = getattr(F, cell + "_backward")(out[-1], np.ones_like(out[0]))
    for k, g in grads.items():
        assert g.dtype == dtype, k
        assert g.shape == np.shape(kw[k]), k


@pytest.mark.parametrize("cell", CELLS)
def test_integer_and_list_inputs_are_cast(cell):
    kw = naive.random_case(cell, 605, B=2, T=3, H=2, I=2, direction="forward", lengths=[3, 2])
    kw_int = dict(kw, X=np.round(kw["X"] * 3).astype(np.int64))
    out = getattr(F, cell)(**kw_int)
    assert all(o.dtype in (np.float32, np.float64) for o in out)
    ref = getattr(naive, cell)(**kw_int)
    tol = F64_TOL if out[0].dtype == np.float64 else F32_TOL
    _assert_outputs(out, ref, tol)
    # nested lists and a list of lengths
    kw_list = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    out = getattr(F, cell)(**kw_list)
    _assert_outputs(out, getattr(naive, cell)(**kw), F32_TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_noncontiguous_inputs_and_inputs_not_modified(cell):
    kw = naive.random_case(cell, 606, B=3, T=4, H=3, I=2, direction="bidirectional")
    expected = getattr(naive, cell)(**kw)
    odd = {}
    for k, v in kw.items():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            big = np.zeros(v.shape + (2,))
            big[..., 1] = v
            odd[k] = big[..., 1]  # strided view
            assert not odd[k].flags.c_contiguous
        else:
            odd[k] = v
    odd["X"] = np.asfortranarray(kw["X"])
    copies = {k: np.array(v, copy=True) for k, v in odd.items() if isinstance(v, np.ndarray)}
    got = getattr(F, cell)(**odd, train=True)
    _assert_outputs(got[:-1], expected, F64_TOL)
    getattr(F, cell + "_backward")(got[-1], np.ones_like(got[0]), np.ones_like(got[1]))
    for k, v in copies.items():
        np.testing.assert_array_equal(odd[k], v, err_msg=f"{k} was modified")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths_dtype", [np.int32, np.int64, np.uint8])
def test_lengths_integer_dtypes(cell, lengths_dtype):
    kw = naive.random_case(cell, 607, B=3, T=4, direction="reverse", lengths=[4, 0, 2])
    got = getattr(F, cell)(**dict(kw, lengths=kw["lengths"].astype(lengths_dtype)))
    _assert_outputs(got, getattr(naive, cell)(**kw), F64_TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_train_returns_same_outputs_plus_cache(cell):
    kw = naive.random_case(cell, 608, direction="bidirectional")
    plain = getattr(F, cell)(**kw)
    trained = getattr(F, cell)(**kw, train=True)
    assert len(trained) == len(plain) + 1
    for x, y in zip(plain, trained[:-1], strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("cell", CELLS)
def test_missing_optional_inputs_equal_zeros(cell):
    kw = naive.random_case(cell, 609, direction="bidirectional", biases=False, h0=False, peephole=False)
    B, T, _ = kw["X"].shape
    D, GH, H = kw["R"].shape
    full = dict(kw, Wb=np.zeros((D, GH)), Rb=np.zeros((D, GH)), h0=np.zeros((B, D, H)))
    if cell == "lstm":
        full.update(c0=np.zeros((B, D, H)), P=np.zeros((D, 3 * H)))
    for x, y in zip(getattr(F, cell)(**kw), getattr(F, cell)(**full), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-15)
    # only one of the two biases
    for which in ("Wb", "Rb"):
        kw1 = dict(kw, **{which: naive.random_case(cell, 610, B=B, T=T, H=H, I=kw["X"].shape[2],
                                                    direction="bidirectional")[which]})
        _assert_outputs(getattr(F, cell)(**kw1), getattr(naive, cell)(**kw1), F64_TOL)


def test_lstm_output_peephole_uses_new_cell_state():
    # a case where using C_{t-1} instead of C_t for the o-gate peephole would differ clearly
    kw = naive.random_case("lstm", 611, B=2, T=3, H=2, I=2, direction="forward", peephole=True,
                           input_forget=False, activations=None, alpha_beta=None, lengths=None)
    kw["P"] = np.array([[0.0, 0.0, 3.0, 3.0, 0.0, 0.0]])  # only the output peephole
    _assert_outputs(F.lstm(**kw), naive.lstm(**kw), F64_TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_full_lengths_equal_no_lengths(cell):
    kw = naive.random_case(cell, 612, direction="bidirectional", lengths=None)
    B, T, _ = kw["X"].shape
    a = getattr(F, cell)(**kw)
    b = getattr(F, cell)(**dict(kw, lengths=[T] * B))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-15)
