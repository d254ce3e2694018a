"""The generic sequence driver: one time loop, forward and BPTT, for every cell that has no
specialised kernels of its own (Jordan, IndRNN and the cells after them).

A cell module provides two jitted step functions over the whole batch and registers them for
its parameter type (a namedtuple class) with :func:`register_steps`::

    forward_step(cell, t, g, S, y, aux, lengths)
        g (B, GH)   the input projection X_t W^T of step t (no bias: the step adds its own)
        S (B, NS)   the carried state: enters as S_{t-1}, leaves as S_t
        y (B, O)    this step's output (zeros on entry)
        aux (B, NA) whatever BPTT needs besides the states (pre-activations, ...)
        Rows with t >= lengths[b] are padding: the step leaves S[b] and y[b] alone.

    backward_step(cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths)
        Sp, Sn (B, NS) the states before and after step t
        dy (B, O)      dL/dy_t from outside;  dS (B, NS) enters as dL/dS_t, leaves as dL/dS_{t-1}
        da (B, GH)     out: dL/dg (zeros on entry; stays zero on padded rows)
        grads          a namedtuple of arrays shaped like the cell's parameters: accumulate
        Padded rows: dS[b] passes through unchanged.

Dispatch is at compile time, on the type of ``cell``: :func:`step` and :func:`step_back` are
``@overload``-ed and resolve to the registered functions, which numba inlines into the driver.
Each cell type gets its own specialisation of the driver, cached on disk like every other
kernel (``cache=True``). Passing the step as a function argument or building the driver in a
closure factory instead was measured 2.5x slower (not inlined) and missed the cache in a
second process; see docs/ARCHITECTURE.md.

Everything around the loop is generic too, in :func:`run` and :func:`backward`: validation of
sizes, the input projection for all steps as one matrix product before the loop, per-sequence
``lengths`` and reversal, bidirectional and batch-slice tasks (in parallel threads), and the
weight gradient ``dW = dA^T X`` and ``dX = dA W`` as matrix products after the loop.

Optional input augmentation (a cell whose step needs more than ``x_t``, e.g. QRNN's causal
convolution over the last ``window`` inputs). If the cell module defines both

    augment(Xt, options) -> Xa             Xt (T, B, I) time-major, each sequence already
                                           reversed if the direction runs backwards and zero
                                           on padded steps; Xa (T, B, I') a new array
    augment_backward(dXa, I, options) -> dXt   dL/dXa (T, B, I') -> dL/dXt (T, B, I)

the driver projects ``Xa`` instead of ``Xt`` (``W`` is then (D, GH, I')), keeps ``Xa`` for
``dW = dA^T Xa`` and maps ``dXa = dA W`` back through ``augment_backward``. Cells without the
hook are unaffected. A module whose ``sizes`` needs its options to read the parameters'
shapes (QRNN: the number of gates follows from ``pooling``) declares a keyword argument
``options`` and gets them.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import numpy as np
from numba.extending import overload

from .._config import jit, with_blas_limit
from ._ops import flush_tiny

__all__ = ["register_steps", "run", "backward", "GenericCache"]

_FORWARD = {}
_BACKWARD = {}


def register_steps(cell_type, forward_step, backward_step):
    """Register the jitted steps of the cell whose parameters are a ``cell_type`` namedtuple."""
    _FORWARD[cell_type] = forward_step
    _BACKWARD[cell_type] = backward_step


def step(cell, t, g, S, y, aux, lengths):  # pragma: no cover - replaced by the overload in jitted code
    raise NotImplementedError


def step_back(cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths):  # pragma: no cover
    raise NotImplementedError


def _lookup(table, cell):
    cls = getattr(cell, "instance_class", None)
    if cls not in table:
        raise TypeError(f"no cell step registered for {cell}")
    return table[cls]


@overload(step, inline="always")
def _ov_step(cell, t, g, S, y, aux, lengths):
    fn = _lookup(_FORWARD, cell)
    return lambda cell, t, g, S, y, aux, lengths: fn(cell, t, g, S, y, aux, lengths)


@overload(step_back, inline="always")
def _ov_step_back(cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths):
    fn = _lookup(_BACKWARD, cell)
    return lambda cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths: fn(
        cell, grads, t, g, Sp, Sn, aux, dy, dS, da, lengths)


@jit
def drive_forward(cell, G, S, lengths, train, Y, Ss, Aux):
    """The time loop. G (T, B, GH); S (B, NS) in/out; Y (T, B, O) zeros on entry;
    with ``train``: Ss (T+1, B, NS) the states (initial one first), Aux (T, B, NA); without,
    both have a leading dimension of 1 and serve as scratch."""
    T = G.shape[0]
    for t in range(T):
        k = t if train else 0
        if train:
            Ss[t] = S
        step(cell, t, G[t], S, Y[t], Aux[k], lengths)
    if train:
        Ss[T] = S


@jit
def drive_backward(cell, grads, G, Ss, Aux, lengths, dY, dS, dA):
    """BPTT of :func:`drive_forward`. dS (B, NS) enters as dL/dS_T and leaves as dL/dS_0;
    dA (T, B, GH) zeros on entry; ``grads`` accumulates the cell's parameter gradients."""
    T = G.shape[0]
    for t in range(T - 1, -1, -1):
        step_back(cell, grads, t, G[t], Ss[t], Ss[t + 1], Aux[t], dY[t], dS, dA[t], lengths)
        flush_tiny(dS)


# ----------------------------------------------------------------------------------------
# Python side: validation, projection, tasks, gradients
# ----------------------------------------------------------------------------------------
@dataclass
class GenericCache:
    """What :func:`backward` needs; opaque to users."""

    cell: str
    given: tuple
    args: dict
    tasks: list = field(default_factory=list)
    parallel: bool = False


def _prepare(spec, X, params, init, lengths, direction, options=None):
    from .. import functional as F

    if not isinstance(direction, str) or direction not in F._DIRECTIONS:
        raise ValueError(f"direction: expected one of {F._DIRECTIONS}, got {direction!r}")
    X = F._as_float(X, "X")
    if X.ndim != 3:
        raise ValueError(f"X: expected shape (batch, time, features), got rank {X.ndim} array {X.shape}")
    B, T, I = X.shape
    if B == 0 or T == 0:
        raise ValueError(f"X: empty batch or sequence (shape {X.shape}); need batch >= 1 and time >= 1")
    D = 2 if direction == "bidirectional" else 1
    dt = X.dtype
    P = {k: F._as_float(v, k, dt) for k, v in params.items()}
    mod = spec.mod()
    kw = {"options": options} if "options" in inspect.signature(mod.sizes).parameters else {}
    sizes = mod.sizes(P, D, I, **kw)  # validates every parameter's shape; dict with H, O, GH, NS, NA
    states = {}
    for name, width in zip(spec.state_names, sizes["widths"], strict=True):
        s = F._as_float(init.get(name), f"{name}0", dt)
        F._check_shape(s, f"{name}0", (B, D, width), "(batch, num_directions, state size)")
        states[name] = s
    L = F._lengths(lengths, B, T)
    return X, P, states, L, D, sizes


def _forward_task(spec, a, d, b0, b1, train, Y, finals):
    from .. import functional as F

    mod = spec.mod()
    X, L, sz = a["X"][b0:b1], a["L"][b0:b1], a["sizes"]
    B, T, I = X.shape
    dt = X.dtype
    reverse = a["direction"] == "reverse" or d == 1
    ridx = F._reverse_index(L, T) if reverse else None
    Xt = F._time_major_copy(X, ridx, L, train)  # (T, B, I): a copy, never the caller's array
    if L.min() < T:
        Xt[np.arange(T)[:, None] >= L[None, :]] = 0  # NaN padding cannot reach dW
    if hasattr(mod, "augment"):  # optional hook (module docstring): e.g. a causal convolution
        Xt = mod.augment(Xt, a["options"])
        I = Xt.shape[2]
    W = a["P"]["W"][d]  # (GH, I)
    GH, NS, O, NA = sz["GH"], sz["NS"], sz["O"], sz["NA"]
    G = np.empty((T, B, GH), dt)
    F._project(Xt.reshape(T * B, I), W.T, G.reshape(T * B, GH))  # (T, B, GH)
    S = np.zeros((B, NS), dt)
    col = 0
    for name, width in zip(spec.state_names, sz["widths"], strict=True):
        s0 = a["init"][name]
        if s0 is not None:
            S[:, col: col + width] = s0[b0:b1, d]
        col += width
    Yt = np.zeros((T, B, O), dt)
    Ss = np.empty((T + 1 if train else 1, B, NS), dt)
    Aux = np.empty((T if train else 1, B, max(NA, 1)), dt)
    cell = mod.make_cell(a["P"], d, a["options"], dt)
    drive_forward(cell, G, S, L, train, Yt, Ss, Aux)
    Y[b0:b1, :, d, :] = F._batch_first(Yt, ridx)
    col = 0
    for k, width in enumerate(sz["widths"]):
        finals[k][b0:b1, d] = S[:, col: col + width]
        col += width
    return dict(d=d, b0=b0, b1=b1, Xt=Xt, ridx=ridx, G=G, Ss=Ss, Aux=Aux, cell=cell)


@with_blas_limit
def run(spec, X, params, init, lengths, direction, options, train):
    """Forward pass of a generic cell over a batch of sequences.

    Parameters
    ----------
    spec : Cell
    X : array (B, T, I)
    params : dict
        The cell's parameters by name, each with a leading direction axis; ``W`` (D, GH, I) is
        the input projection. None entries are absent optional parameters.
    init : dict
        Initial state per name in ``spec.state_names``: (B, D, width) or None (zeros).
    lengths : int array (B,) or None
    direction : {"forward", "reverse", "bidirectional"}
    options : dict
        The cell's own options (activation codes, ...), as its ``make_cell`` reads them.
    train : bool

    Returns
    -------
    Y : array (B, T, D, O)
    finals : list of arrays (B, D, width), one per state
    cache : GenericCache or None
    """
    from .. import functional as F

    given = tuple(k for k, v in {"X": X, **params, **{f"{n}0": init.get(n) for n in spec.state_names}}.items()
                  if v is not None)
    X, P, states, L, D, sz = _prepare(spec, X, params, init, lengths, direction, options)
    if train:  # the cache owns the parameters backward reads (an in-place optimizer step cannot leak in)
        P = {k: F._owned(v) for k, v in P.items()}
    B, T, I = X.shape
    dt = X.dtype
    Y = np.empty((B, T, D, sz["O"]), dt)
    finals = [np.empty((B, D, w), dt) for w in sz["widths"]]
    a = dict(X=X, P=P, init=states, L=L, D=D, sizes=sz, direction=direction, options=options)
    tasks, parallel = F._tasks(B, T, D, sz["GH"], I + sz["NS"])
    sts = F._run_tasks([functools.partial(_forward_task, spec, a, d, b0, b1, train, Y, finals)
                        for d, b0, b1 in tasks], parallel)
    cache = GenericCache(spec.name, given, a, sts, parallel) if train else None
    return Y, finals, cache


def _backward_task(spec, a, st, dY, dfinals):
    from .. import functional as F

    mod = spec.mod()
    d, b0, b1 = st["d"], st["b0"], st["b1"]
    sz = a["sizes"]
    Xt, ridx = st["Xt"], st["ridx"]
    T, B, I = Xt.shape
    dt = Xt.dtype
    dS = np.zeros((B, sz["NS"]), dt)
    col = 0
    for k, width in enumerate(sz["widths"]):
        if dfinals[k] is not None:
            dS[:, col: col + width] = dfinals[k][b0:b1, d]
        col += width
    dYt = np.zeros((T, B, sz["O"]), dt) if dY is None else F._time_major(dY[b0:b1, :, d, :], ridx)
    dA = np.zeros((T, B, sz["GH"]), dt)
    grads = mod.make_grads(st["cell"])
    drive_backward(st["cell"], grads, st["G"], st["Ss"], st["Aux"], a["L"][b0:b1], dYt, dS, dA)
    dA2 = dA.reshape(T * B, sz["GH"])  # (T*B, GH)
    g = mod.grads_dict(grads)  # the cell's own parameter gradients, by name, for direction d
    g["W"] = dA2.T @ Xt.reshape(T * B, I)  # (GH, I)
    dXt = (dA2 @ a["P"]["W"][d]).reshape(T, B, I)
    if hasattr(mod, "augment"):
        dXt = mod.augment_backward(dXt, a["X"].shape[2], a["options"])
    g["X"] = F._batch_first(dXt, ridx)
    g["S0"] = dS
    return g


@with_blas_limit
def backward(spec, cache, dY, dfinals):
    """Gradients of :func:`run` by BPTT: dict with an entry per input that was given."""
    from .. import functional as F

    if not isinstance(cache, GenericCache) or cache.cell != spec.name:
        raise TypeError(f"cache: expected the cache returned by {spec.name}(..., train=True)")
    a = cache.args
    X, D, sz = a["X"], a["D"], a["sizes"]
    dt = X.dtype
    B, T, I = X.shape
    dY = F._grad_in(dY, "dY", (B, T, D, sz["O"]), dt)
    dfinals = [F._grad_in(g, ("dY_h", "dY_c")[k], (B, D, w), dt)  # the *_backward functions' argument names
               for k, (g, w) in enumerate(zip(dfinals, sz["widths"], strict=True))]
    out = {"X": np.zeros((B, T, I), dt)}
    for k, v in a["P"].items():
        if v is not None:
            out[k] = np.zeros_like(v)
    dS0 = np.empty((B, D, sz["NS"]), dt)
    parts = F._run_tasks([functools.partial(_backward_task, spec, a, st, dY, dfinals) for st in cache.tasks],
                         cache.parallel)
    for st, p in zip(cache.tasks, parts, strict=True):
        d, b0, b1 = st["d"], st["b0"], st["b1"]
        out["X"][b0:b1] += p["X"]
        dS0[b0:b1, d] = p["S0"]
        for k in a["P"]:
            if a["P"][k] is not None and k in p:
                out[k][d] += p[k]
    col = 0
    for name, width in zip(spec.state_names, sz["widths"], strict=True):
        out[f"{name}0"] = dS0[:, :, col: col + width].copy()
        col += width
    return {k: out[k] for k in cache.given}
