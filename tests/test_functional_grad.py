"""Gradient checks of rnn_backward / gru_backward / lstm_backward.

Central finite differences in float64 on every input (X, W, R, Wb, Rb, h0, c0, P) of the loss
``L = sum(Y*gY) + sum(Y_h*gH) [+ sum(Y_c*gC)]`` with random projections gY, gH, gC, for every
cell, direction and option (lengths incl. 0 and T, peepholes, input_forget, clip with some gates
clipped, linear_before_reset 0/1, non-default activations).  Cases are chosen (by trying seeds)
so that no pre-activation lies within ``MARGIN`` of a clip boundary or an activation kink,
where finite differences would be meaningless.  Also compared with PyTorch autograd.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgernn.functional as F

try:
    from . import naive
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import naive

EPS = 1e-6
MARGIN = 1e-4
REL_TOL = 1e-6
DIRECTIONS = ["forward", "reverse", "bidirectional"]

SMOOTH = {
    "rnn": [["Softsign", "ScaledTanh", "Affine", "Elu", "Softplus", "Sigmoid"]],
    "gru": [["Sigmoid", "Softsign", "ScaledTanh"], ["Softsign", "Elu", "ScaledTanh", "Softplus", "Affine"]],
    "lstm": [["Sigmoid", "Softsign", "ScaledTanh"], ["Softsign", "ScaledTanh", "Affine", "Elu"],
             ["Softplus", "Softsign", "ScaledTanh", "Elu"]],
}
# piecewise-linear activations (derivative tested away from the kinks)
KINKY = {
    "rnn": [["LeakyRelu", "Relu", "ThresholdedRelu", "HardSigmoid"]],
    "gru": [["HardSigmoid"], ["LeakyRelu", "Relu", "ThresholdedRelu"]],
    "lstm": [["HardSigmoid"], ["LeakyRelu", "Relu", "ThresholdedRelu"], ["LeakyRelu", "HardSigmoid", "Relu"]],
}

VARIANTS = {
    "rnn": ["plain", "lengths", "clip", "smooth", "kinky"],
    "gru": ["plain", "lengths", "clip", "smooth", "kinky", "lbr0", "lbr0_clip_lengths"],
    "lstm": ["plain", "lengths", "clip", "smooth", "kinky", "peephole", "input_forget",
             "peephole_input_forget_clip_lengths"],
}
CASES = [(cell, v, d) for cell in VARIANTS for v in VARIANTS[cell] for d in DIRECTIONS]


def _case(cell, variant, direction, seed):
    """Keyword arguments for one gradient case (float64); None if the seed gives no margin."""
    opts = dict(direction=direction, activations=None, alpha_beta=None, peephole=False, input_forget=False,
                linear_before_reset=True, lengths=None, B=2, T=3, H=2, I=2)
    if "lengths" in variant or variant in ("clip", "smooth", "kinky"):
        opts.update(lengths="random", B=3)
    if variant == "plain":
        opts.update(B=1 + seed % 2, T=1 + seed % 3, H=1 + seed % 2)
    if variant == "smooth":
        opts.update(activations="random", alpha_beta="explicit", pools=SMOOTH[cell])
    if variant == "kinky":
        opts.update(activations="random", alpha_beta="explicit", pools=KINKY[cell])
    if "peephole" in variant:
        opts.update(peephole=True)
    if "input_forget" in variant:
        opts.update(input_forget=True)
    if "lbr0" in variant:
        opts.update(linear_before_reset=False)
    if variant == "smooth" and cell == "lstm":
        opts.update(peephole=bool(seed % 2))
    kw = naive.random_case(cell, seed, **opts)
    clip = None
    if "clip" in variant:
        # clip at a quantile of |pre-activations| so that a good share of them is clipped
        pre = np.concatenate([np.abs(e["pre"]) for e in naive.forward_trace(cell, **kw) if e["clipped"]])
        clip = float(np.quantile(pre, 0.7))
        kw["clip"] = clip
    trace = naive.forward_trace(cell, **kw)
    if naive.min_kink_distance(trace, clip) < MARGIN:
        return None
    if clip is not None:
        pre = np.concatenate([e["pre"] for e in trace if e["clipped"]])
        if not (np.any(np.abs(pre) > clip) and np.any(np.abs(pre) < clip)):
            return None
    return kw


def _find_case(cell, variant, direction):
    base = 1000 * (CASES.index((cell, variant, direction)) + 1)
    for seed in range(base, base + 200):
        kw = _case(cell, variant, direction, seed)
        if kw is not None:
            return kw
    raise RuntimeError("no case with enough margin found")  # pragma: no cover


def _loss(cell, kw, gY, gH, gC):
    out = getattr(F, cell)(**kw)
    val = np.sum(out[0] * gY) + np.sum(out[1] * gH)
    if cell == "lstm":
        val += np.sum(out[2] * gC)
    return val


def _numeric_grad(cell, kw, name, gY, gH, gC):
    x0 = kw[name]
    g = np.zeros_like(x0)
    for idx in np.ndindex(x0.shape):
        xp = x0.copy()
        xp[idx] += EPS
        xm = x0.copy()
        xm[idx] -= EPS
        g[idx] = (_loss(cell, dict(kw, **{name: xp}), gY, gH, gC)
                  - _loss(cell, dict(kw, **{name: xm}), gY, gH, gC)) / (2 * EPS)
    return g


def _projections(cell, kw, rng):
    B, T, _ = np.shape(kw["X"])
    D, _, H = np.shape(kw["R"])
    gY = rng.standard_normal((B, T, D, H))
    gH = rng.standard_normal((B, D, H))
    gC = rng.standard_normal((B, D, H)) if cell == "lstm" else None
    return gY, gH, gC


def _analytic(cell, kw, gY, gH, gC):
    out = getattr(F, cell)(**kw, train=True)
    bwd = getattr(F, cell + "_backward")
    return bwd(out[-1], gY, gH, gC) if cell == "lstm" else bwd(out[-1], gY, gH)


def _inputs(cell, kw):
    names = ["X", "W", "R", "Wb", "Rb", "h0"] + (["c0", "P"] if cell == "lstm" else [])
    return [n for n in names if kw.get(n) is not None]


@pytest.mark.parametrize("cell,variant,direction", CASES, ids=["-".join(c) for c in CASES])
def test_gradient_matches_finite_differences(cell, variant, direction):
    kw = _find_case(cell, variant, direction)
    rng = np.random.default_rng(CASES.index((cell, variant, direction)))
    gY, gH, gC = _projections(cell, kw, rng)
    grads = _analytic(cell, kw, gY, gH, gC)
    names = _inputs(cell, kw)
    assert sorted(grads) == sorted(names)
    for name in names:
        num = _numeric_grad(cell, kw, name, gY, gH, gC)
        ana = grads[name]
        assert ana.shape == num.shape, name
        err = np.max(np.abs(ana - num))
        scale = max(1.0, np.max(np.abs(num)))
        assert err <= REL_TOL * scale, (
            f"{cell} {variant} {direction}: d{name} max abs error {err:.3g} (scale {scale:.3g})\n"
            f"analytic={ana.ravel()[:12]}\nnumeric={num.ravel()[:12]}"
        )


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_clipped_gates_have_zero_gradient(cell):
    # with a tiny clip every gate pre-activation is clipped, so nothing that only enters
    # through them gets a gradient (LSTM: the cell-state path and c0 still do)
    kw = naive.random_case(cell, 77, B=2, T=3, H=2, I=2, direction="bidirectional", lengths=None,
                           activations=None, alpha_beta=None, peephole=False, input_forget=False,
                           scale=1.5)
    trace = naive.forward_trace(cell, **kw)
    clip = 0.5 * min(float(np.min(np.abs(e["pre"]))) for e in trace if e["clipped"])
    kw["clip"] = clip
    gY, gH, gC = _projections(cell, kw, np.random.default_rng(5))
    grads = _analytic(cell, kw, gY, gH, gC)
    for name in ("X", "W", "R", "Wb", "Rb"):
        np.testing.assert_array_equal(grads[name], 0.0, err_msg=name)
    if cell != "lstm":
        # Y_h depends on h0 only through gates (GRU: also through z*h_prev)
        if cell == "rnn":
            np.testing.assert_array_equal(grads["h0"], 0.0)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_backward_without_dY_h_and_with_only_dY_h(cell):
    kw = _find_case(cell, "lengths", "bidirectional")
    gY, gH, gC = _projections(cell, kw, np.random.default_rng(1))
    out = getattr(F, cell)(**kw, train=True)
    bwd = getattr(F, cell + "_backward")
    a = bwd(out[-1], gY)
    b = bwd(out[-1], np.zeros_like(gY), gH)
    c = bwd(out[-1], gY, gH)
    for k in c:
        np.testing.assert_allclose(a[k] + b[k], c[k], rtol=1e-12, atol=1e-12, err_msg=k)
    if cell == "lstm":
        d = bwd(out[-1], None, None, gC)
        num = _numeric_grad(cell, kw, "h0", np.zeros_like(gY), np.zeros_like(gH), gC)
        np.testing.assert_allclose(d["h0"], num, rtol=0, atol=1e-7)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_gradient_larger_case(cell):
    # longer sequences and wider layers, every option on at once
    opts = dict(B=3, T=6, H=3, I=3, direction="bidirectional", lengths=[6, 2, 5], scale=0.5)
    if cell == "lstm":
        opts.update(peephole=True, input_forget=False)
    if cell == "gru":
        opts.update(linear_before_reset=False)
    for seed in range(50, 250):
        kw = naive.random_case(cell, seed, activations=None, alpha_beta=None, **opts)
        pre = np.concatenate([np.abs(e["pre"]) for e in naive.forward_trace(cell, **kw) if e["clipped"]])
        kw["clip"] = float(np.quantile(pre, 0.8))
        if naive.min_kink_distance(naive.forward_trace(cell, **kw), kw["clip"]) > MARGIN:
            break
    else:  # pragma: no cover
        pytest.fail("no case with enough margin found")
    gY, gH, gC = _projections(cell, kw, np.random.default_rng(4))
    grads = _analytic(cell, kw, gY, gH, gC)
    for name in _inputs(cell, kw):
        num = _numeric_grad(cell, kw, name, gY, gH, gC)
        err = np.max(np.abs(grads[name] - num))
        assert err <= REL_TOL * max(1.0, np.max(np.abs(num))), f"d{name}: max abs error {err:.3g}"


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_backward_is_repeatable_and_leaves_inputs_alone(cell):
    kw = _find_case(cell, "lengths", "bidirectional")
    gY, gH, gC = _projections(cell, kw, np.random.default_rng(6))
    copies = [a.copy() for a in (gY, gH, gC) if a is not None]
    out = getattr(F, cell)(**kw, train=True)
    bwd = getattr(F, cell + "_backward")
    args = (gY, gH, gC) if cell == "lstm" else (gY, gH)
    first = bwd(out[-1], *args)
    second = bwd(out[-1], *args)  # the cache must survive a backward pass
    for k in first:
        np.testing.assert_array_equal(first[k], second[k], err_msg=k)
    for a, c in zip([a for a in args if a is not None], copies, strict=True):
        np.testing.assert_array_equal(a, c)
    # dY=None means zeros
    none = bwd(out[-1], None, gH)
    zero = bwd(out[-1], np.zeros_like(gY), gH)
    for k in none:
        np.testing.assert_array_equal(none[k], zero[k], err_msg=k)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_backward_float32_close_to_float64(cell):
    kw = _find_case(cell, "plain", "bidirectional")
    gY, gH, gC = _projections(cell, kw, np.random.default_rng(2))
    g64 = _analytic(cell, kw, gY, gH, gC)
    kw32 = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
            for k, v in kw.items()}
    g32 = _analytic(cell, kw32, gY.astype(np.float32), gH.astype(np.float32),
                    None if gC is None else gC.astype(np.float32))
    for k in g64:
        assert g32[k].dtype == np.float32
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-4, atol=1e-4, err_msg=k)


# --- PyTorch autograd ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell,act", [("rnn", "Tanh"), ("rnn", "Relu"), ("gru", None), ("lstm", None)])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_gradient_matches_torch_autograd(cell, act, direction, with_lengths):
    pytest.importorskip("torch")
    D = 2 if direction == "bidirectional" else 1
    kw = naive.random_case(cell, 31, B=3, T=4, H=3, I=2, direction=direction,
                           lengths="random" if with_lengths else None, min_length=1,
                           activations=None if act is None else [act] * D, alpha_beta=None,
                           peephole=False, input_forget=False, linear_before_reset=True)
    gY, gH, gC = _projections(cell, kw, np.random.default_rng(3))
    if with_lengths:  # torch's padded outputs are constants: any gY there is irrelevant
        gY = gY * (np.arange(gY.shape[1])[None, :, None, None] < kw["lengths"][:, None, None, None])
    _, expected = naive.torch_reference(cell, kw, gY, gH, gC)
    got = _analytic(cell, kw, gY, gH, gC)
    assert sorted(got) == sorted(expected)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-10, atol=1e-10, err_msg=k)
