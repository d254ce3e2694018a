"""Gate nonlinearities chosen by integer code (never by passing Python functions to kernels).

Codes follow the ONNX activation names. ``FAST_TANH``/``FAST_SIGMOID`` are a rational
approximation of tanh (max abs error ~3e-7 in float32) that vectorises; the public API
picks them for float32 inputs and the exact ``np.tanh``-based codes for float64, so that
float64 gradient checks stay exact.

Each activation has its derivative next to it, written in terms of the pre-activation ``x``
and the output ``y`` (whichever is cheaper).
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from ._config import jit

RELU = 0
TANH = 1
SIGMOID = 2
AFFINE = 3
LEAKY_RELU = 4
THRESHOLDED_RELU = 5
SCALED_TANH = 6
HARD_SIGMOID = 7
ELU = 8
SOFTSIGN = 9
SOFTPLUS = 10
FAST_TANH = 11
FAST_SIGMOID = 12

# ONNX name (lower-cased) -> (code, default alpha, default beta): the ONNX operators' defaults.
# onnxruntime uses 0 for Affine/ThresholdedRelu/ScaledTanh when no list is given, so the
# exporter always writes explicit activation_alpha/activation_beta lists.
ACTIVATIONS = {
    "relu": (RELU, 0.0, 0.0),
    "tanh": (TANH, 0.0, 0.0),
    "sigmoid": (SIGMOID, 0.0, 0.0),
    "affine": (AFFINE, 1.0, 0.0),
    "leakyrelu": (LEAKY_RELU, 0.01, 0.0),
    "thresholdedrelu": (THRESHOLDED_RELU, 1.0, 0.0),
    "scaledtanh": (SCALED_TANH, 1.0, 1.0),
    "hardsigmoid": (HARD_SIGMOID, 0.2, 0.5),
    "elu": (ELU, 1.0, 0.0),
    "softsign": (SOFTSIGN, 0.0, 0.0),
    "softplus": (SOFTPLUS, 0.0, 0.0),
}
# Canonical ONNX spelling, for export.
ONNX_NAMES = {
    "relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "affine": "Affine",
    "leakyrelu": "LeakyRelu", "thresholdedrelu": "ThresholdedRelu", "scaledtanh": "ScaledTanh",
    "hardsigmoid": "HardSigmoid", "elu": "Elu", "softsign": "Softsign", "softplus": "Softplus",
}
# Activations that take alpha / beta (in ONNX's activation_alpha / activation_beta lists).
USES_ALPHA = {"affine", "leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid", "elu"}
USES_BETA = {"affine", "scaledtanh", "hardsigmoid"}

# Eigen's rational approximation of tanh on [-7.905, 7.905] (odd numerator deg 13 / even deg 6).
# The constants are float32 so that float32 data is computed in float32 (a Python float would
# promote every operation to float64, halving the SIMD width); max abs error 3.4e-7 in float32.
# The FAST_* codes are only chosen for float32 data (``resolve``).
_CLAMP = np.float32(7.90531110763549805)
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)
# Literal constants for jitted code that keep float32 arithmetic in float32 (and promote
# exactly to float64 for float64 data).
ZERO = np.float32(0.0)
HALF = np.float32(0.5)
ONE = np.float32(1.0)


@jit(inline="always")
def fast_tanh(x):
    x = min(max(x, -_CLAMP), _CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = x * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    r = p / q
    # beyond the clamp tanh is 1 to float32 precision: return it exactly (the rational form
    # gives 1 - 2.4e-7 there, which drifts from onnxruntime over long unbounded recurrences)
    return r if x < _CLAMP and x > -_CLAMP else x / _CLAMP


@jit(inline="always")
def act1(code, x, alpha, beta):
    """One activation value (scalar); used where a loop over codes is not worth it."""
    if code == FAST_SIGMOID:
        return HALF * fast_tanh(HALF * x) + HALF
    if code == FAST_TANH:
        return fast_tanh(x)
    if code == SIGMOID:
        return 1.0 / (1.0 + np.exp(-x))
    if code == TANH:
        return np.tanh(x)
    if code == RELU:
        return max(x, 0.0)
    if code == AFFINE:
        return alpha * x + beta
    if code == LEAKY_RELU:
        return x if x >= 0 else alpha * x
    if code == THRESHOLDED_RELU:
        return x if x > alpha else 0.0 * x
    if code == SCALED_TANH:
        return alpha * np.tanh(beta * x)
    if code == HARD_SIGMOID:
        return min(max(alpha * x + beta, 0.0), 1.0)
    if code == ELU:
        return x if x >= 0 else alpha * (np.exp(x) - 1.0)
    if code == SOFTSIGN:
        return x / (1.0 + abs(x))
    # SOFTPLUS, stable form of log(1 + exp(x))
    return max(x, 0.0) + np.log1p(np.exp(-abs(x)))


@jit(inline="always")
def dact1(code, x, y, alpha, beta):
    """Derivative dy/dx of ``act1`` given pre-activation ``x`` and output ``y``."""
    if code == FAST_SIGMOID or code == SIGMOID:
        return y * (ONE - y)
    if code == FAST_TANH or code == TANH:
        return ONE - y * y
    if code == RELU:
        return 1.0 if x > 0 else 0.0
    if code == AFFINE:
        return alpha
    if code == LEAKY_RELU:
        return 1.0 if x >= 0 else alpha
    if code == THRESHOLDED_RELU:
        return 1.0 if x > alpha else 0.0
    if code == SCALED_TANH:
        t = np.tanh(beta * x)
        return alpha * beta * (1.0 - t * t)
    if code == HARD_SIGMOID:
        v = alpha * x + beta
        return alpha if (v > 0.0 and v < 1.0) else 0.0
    if code == ELU:
        return 1.0 if x >= 0 else y + alpha
    if code == SOFTSIGN:
        d = 1.0 + abs(x)
        return 1.0 / (d * d)
    # SOFTPLUS: derivative is the logistic sigmoid
    return 1.0 / (1.0 + np.exp(-x))


@jit
def act_vec(code, x, out, alpha, beta):
    """out[:] = act(x[:]); the branch on ``code`` sits outside the element loop so it vectorises."""
    n = x.shape[0]
    if code == FAST_SIGMOID:
        for k in range(n):
            out[k] = HALF * fast_tanh(HALF * x[k]) + HALF
    elif code == FAST_TANH:
        for k in range(n):
            out[k] = fast_tanh(x[k])
    elif code == SIGMOID:
        for k in range(n):
            out[k] = 1.0 / (1.0 + np.exp(-x[k]))
    elif code == TANH:
        for k in range(n):
            out[k] = np.tanh(x[k])
    else:
        for k in range(n):
            out[k] = act1(code, x[k], alpha, beta)


@functools.lru_cache(maxsize=256)
def _resolve_cached(names, defaults, n_dirs, dtype, alphas, betas, arg):
    return _resolve(None if names is None else list(names), defaults, n_dirs, np.dtype(dtype),
                    None if alphas is None else list(alphas), None if betas is None else list(betas), arg)


def _numbers(vals, arg):
    """``vals`` (None or a list, tuple or array of real numbers) as a list of floats; TypeError
    naming ``arg`` otherwise (a string or a dict is not a list of values)."""
    if vals is None:
        return None
    if not isinstance(vals, (list, tuple, np.ndarray)):
        raise TypeError(f"{arg}: expected a list of numbers or None, got {type(vals).__name__} {vals!r:.40}")
    items = vals.ravel().tolist() if isinstance(vals, np.ndarray) else vals
    for k, v in enumerate(items):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{arg}[{k}]: expected a number, got {v!r:.40}")
    return [float(v) for v in items]


def resolve(names, defaults, n_dirs, dtype, alphas=None, betas=None, arg="activations"):
    """Map ONNX activation names to (codes, alphas, betas) arrays of shape (n_dirs, n_per_dir).

    ``names`` is None (use ``defaults``, repeated per direction) or a list of
    ``len(defaults) * n_dirs`` names. ``alphas``/``betas`` follow ONNX: one value per
    activation that takes it, in order; missing ones take onnxruntime's defaults.
    Results are cached (a call per layer call otherwise costs ~10 us); callers get copies.
    """
    alphas = _numbers(alphas, "activation_alpha")
    betas = _numbers(betas, "activation_beta")
    try:
        key = (None if names is None else tuple(names), tuple(defaults), int(n_dirs), np.dtype(dtype).str,
               None if alphas is None else tuple(float(a) for a in alphas),
               None if betas is None else tuple(float(b) for b in betas), arg)
        hash(key)
    except (TypeError, ValueError):  # odd arguments: the uncached path raises the right error
        return _resolve(names, defaults, n_dirs, dtype, alphas, betas, arg)
    if isinstance(names, str):
        return _resolve(names, defaults, n_dirs, dtype, alphas, betas, arg)
    codes, al, be = _resolve_cached(*key)
    return codes.copy(), al.copy(), be.copy()


def _resolve(names, defaults, n_dirs, dtype, alphas=None, betas=None, arg="activations"):
    """Map ONNX activation names to (codes, alphas, betas) arrays of shape (n_dirs, n_per_dir).

    ``names`` is None (use ``defaults``, repeated per direction) or a list of
    ``len(defaults) * n_dirs`` names. ``alphas``/``betas`` follow ONNX: one value per
    activation that takes it, in order; missing ones take onnxruntime's defaults.
    """
    per = len(defaults)
    if names is None:
        names = list(defaults) * n_dirs
    if isinstance(names, str) or not hasattr(names, "__len__"):
        raise TypeError(f"{arg}: expected a list of {per * n_dirs} activation names, got {names!r}")
    names = list(names)
    if len(names) != per * n_dirs:
        raise ValueError(
            f"{arg}: expected {per * n_dirs} activation names ({per} per direction x {n_dirs}), got {len(names)}"
        )
    alphas = list(alphas) if alphas is not None else []
    betas = list(betas) if betas is not None else []
    codes = np.empty(len(names), np.int64)
    al = np.zeros(len(names), np.float64)
    be = np.zeros(len(names), np.float64)
    ia = ib = 0
    for k, name in enumerate(names):
        if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
            raise ValueError(
                f"{arg}[{k}]: unknown activation {name!r}; expected one of "
                + ", ".join(ONNX_NAMES.values())
            )
        key = name.lower()
        code, a, b = ACTIVATIONS[key]
        if key in USES_ALPHA and ia < len(alphas):
            a = float(alphas[ia])
            ia += 1
        if key in USES_BETA and ib < len(betas):
            b = float(betas[ib])
            ib += 1
        if dtype == np.float32:
            code = {TANH: FAST_TANH, SIGMOID: FAST_SIGMOID}.get(code, code)
        codes[k], al[k], be[k] = code, a, b
    return codes.reshape(n_dirs, per), al.reshape(n_dirs, per), be.reshape(n_dirs, per)
