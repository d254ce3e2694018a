"""Functional RNN, GRU and LSTM with ONNX semantics, batch-first, plus exact BPTT.

Shapes (ONNX ``layout=1``): ``X`` (B, T, I); ``W`` (D, G*H, I); ``R`` (D, G*H, H);
``Wb``, ``Rb`` (D, G*H); ``h0``, ``c0`` (B, D, H); ``P`` (D, 3H); ``lengths`` (B,).
Outputs ``Y`` (B, T, D, H), ``Y_h``/``Y_c`` (B, D, H). ``D`` is 2 for
``direction="bidirectional"``, else 1. Gate order: LSTM i,o,f,c; GRU z,r,h; RNN one gate.

Padded steps (t >= lengths[b]) output zeros and hold the state; reverse directions run
backwards over each sequence's valid part and return outputs in the original time order.

NaN and inf in the inputs or weights propagate to the outputs (nothing is checked or
raised for them here: layers and ``fit`` check their inputs); nothing crashes.

This module validates, casts to contiguous float32 (or float64 when ``X`` is float64) and
calls the time-major kernels of the cell modules (``edgernn/cells/``). The input projection for all steps is one
matrix product before the jitted loop; weight gradients are matrix products after it.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import cells
from ._activations import FAST_SIGMOID, FAST_TANH, SIGMOID, TANH, resolve
from ._config import blas_limit, get_num_threads, with_blas_limit
from .cells import _ops as K
from .cells import _sync as _csync
from .cells import gru as _gru
from .cells import lstm as _lstm
from .cells import rnn as _rnn

__all__ = ["rnn", "gru", "lstm", "rnn_backward", "gru_backward", "lstm_backward"]

_OUT_DERIV = {FAST_SIGMOID, FAST_TANH, SIGMOID, TANH}  # derivative from the output (``cells._ops.out_deriv``)
_DIRECTIONS = ("forward", "reverse", "bidirectional")


# ----------------------------------------------------------------------------------------
# validation and casting (the API boundary)
# ----------------------------------------------------------------------------------------
def _as_float(a, name, dtype=None):
    if a is None:
        return None
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"{name}: expected a numeric array, got {type(a).__name__}") from exc
    if a.dtype.kind not in "fiu" or a.dtype == np.float16 and dtype is None and False:
        raise TypeError(f"{name}: expected a real numeric array, got dtype {a.dtype}")
    if dtype is None:
        dtype = np.float64 if a.dtype == np.float64 else np.float32
    out = np.ascontiguousarray(a, dtype=dtype)
    if not out.flags.writeable:  # numba types read-only arrays apart: each would compile its own kernels (~7 s)
        out = out.copy()
    return out


def _check_shape(a, name, shape, what):
    if a is None:
        return
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {what} = {shape}, got {a.shape}")


def _prepare(cell, X, W, R, Wb, Rb, h0, c0, P, lengths, direction, activations, alpha, beta, clip):
    if not isinstance(direction, str) or direction not in _DIRECTIONS:
        raise ValueError(f"direction: expected one of {_DIRECTIONS}, got {direction!r}")
    X = _as_float(X, "X")
    dt = X.dtype
    if X.ndim != 3:
        raise ValueError(f"X: expected shape (batch, time, features), got rank {X.ndim} array {X.shape}")
    B, T, I = X.shape
    if B == 0 or T == 0:
        raise ValueError(f"X: empty batch or sequence (shape {X.shape}); need batch >= 1 and time >= 1")
    D = 2 if direction == "bidirectional" else 1
    G = cells.get(cell).gates
    W = _as_float(W, "W", dt)
    R = _as_float(R, "R", dt)
    if R is None or R.ndim != 3:
        raise ValueError(f"R: expected shape (num_directions, {G}*hidden, hidden), got {getattr(R, 'shape', None)}")
    H = R.shape[2]
    if H < 1:
        raise ValueError(f"R: hidden size must be >= 1, got R.shape {R.shape}")
    _check_shape(R, "R", (D, G * H, H), "(num_directions, gates*hidden, hidden)")
    if W is None or W.ndim != 3:
        raise ValueError(f"W: expected shape (num_directions, {G}*hidden, input), got {getattr(W, 'shape', None)}")
    if W.shape[:2] == (D, G * H) and W.shape[2] != I:
        raise ValueError(f"X: {I} features per step, but W expects input_size {W.shape[2]} (W: (num_directions, "
                         f"gates*hidden, input_size) = {W.shape})")
    _check_shape(W, "W", (D, G * H, I), "(num_directions, gates*hidden, input_size)")
    Wb = _as_float(Wb, "Wb", dt)
    Rb = _as_float(Rb, "Rb", dt)
    _check_shape(Wb, "Wb", (D, G * H), "(num_directions, gates*hidden)")
    _check_shape(Rb, "Rb", (D, G * H), "(num_directions, gates*hidden)")
    h0 = _as_float(h0, "h0", dt)
    _check_shape(h0, "h0", (B, D, H), "(batch, num_directions, hidden)")
    c0 = _as_float(c0, "c0", dt)
    _check_shape(c0, "c0", (B, D, H), "(batch, num_directions, hidden)")
    P = _as_float(P, "P", dt)
    _check_shape(P, "P", (D, 3 * H), "(num_directions, 3*hidden)")
    L = _lengths(lengths, B, T)
    if clip is None:
        clipv = 0.0
    else:
        if isinstance(clip, (bool, np.bool_)) or not isinstance(clip, numbers.Real):
            raise TypeError(f"clip: expected a positive number or None, got {clip!r:.40}")
        clipv = float(clip)
        if not clipv > 0:
            raise ValueError(f"clip: expected a positive threshold or None, got {clip!r}")
    codes, al, be = resolve(activations, cells.get(cell).default_activations, D, dt, alpha, beta)
    return X, W, R, Wb, Rb, h0, c0, P, L, D, H, codes, al.astype(dt), be.astype(dt), dt.type(clipv)


def _owned(a):
    """``a`` as an array nobody else holds (a copy unless ``a`` is None)."""
    return None if a is None else a.copy()


def _lengths(lengths, B, T):
    """Validated int64 (B,) copy of ``lengths`` (all T when None); each value in [0, T]."""
    if lengths is None:
        return np.full(B, T, np.int64)
    L = np.asarray(lengths)
    if L.dtype.kind not in "iu":
        if L.dtype.kind == "f" and L.size and np.all(np.isfinite(L)) and np.all(L == np.round(L)):
            L = L.astype(np.int64)
        else:
            raise TypeError(f"lengths: expected integers, got dtype {L.dtype}")
    if L.shape != (B,):
        raise ValueError(f"lengths: expected shape (batch,) = ({B},), got {L.shape}")
    L = np.array(L, dtype=np.int64)  # a copy: the cache never shares the caller's array
    if L.size and (L.min() < 0 or L.max() > T):
        raise ValueError(f"lengths: every value must be in [0, {T}] (time steps), got min {L.min()} max {L.max()}")
    return L


def _reverse_index(L, T):
    """idx (B, T): t -> lengths[b]-1-t inside the valid part, t outside. An involution."""
    t = np.arange(T)[None, :]
    Lb = L[:, None]
    return np.where(t < Lb, Lb - 1 - t, t)


def _time_major(X, rev_idx):
    """(B, T, F) -> (T, B, F) contiguous, with each sequence's valid part reversed if rev_idx."""
    if rev_idx is not None:
        X = np.take_along_axis(X, rev_idx[:, :, None], axis=1)
    return np.ascontiguousarray(X.transpose(1, 0, 2))


def _time_major_copy(X, rev_idx, L, train):
    """Like ``_time_major`` but always a new array (in a scratch buffer without ``train``), so
    it can be modified; a full-length reversal is a view, not a gather."""
    B, T, I = X.shape
    out = np.empty((T, B, I), X.dtype) if train else _scratch("Xt", (T, B, I), X.dtype)
    if rev_idx is None:
        np.copyto(out, X.transpose(1, 0, 2))
    elif L.min() == T:
        np.copyto(out, X[:, ::-1].transpose(1, 0, 2))
    else:
        np.copyto(out, np.take_along_axis(X, rev_idx[:, :, None], axis=1).transpose(1, 0, 2))
    return out


def _project(X2, Wt, out):
    """out (M, G) = X2 (M, I) @ Wt (I, G), rounded the same whatever M. BLAS takes a gemv path
    for a single row, and on some CPUs it sums in another order than the gemm kernels
    (OpenBLAS on AMD Zen 4: up to 1e-5 apart at (64, 1024)), so one step computed alone (a
    chunk of one step at batch 1) would differ from the same step inside a longer call."""
    if X2.shape[0] == 1:
        out[...] = np.dot(np.concatenate([X2, X2]), Wt)[:1]
    else:
        np.dot(X2, Wt, out=out)


def _batch_first(Yt, rev_idx):
    """(T, B, H) -> (B, T, H), undoing the per-sequence reversal."""
    Y = Yt.transpose(1, 0, 2)
    if rev_idx is not None:
        Y = np.take_along_axis(Y, rev_idx[:, :, None], axis=1)
    return Y


@dataclass
class Cache:
    """What the backward pass needs. Opaque to users; pass it to ``*_backward``."""

    cell: str
    given: tuple  # names of the inputs that were given
    args: dict  # prepared inputs and options
    dirs: list = field(default_factory=list)  # per task (direction, batch slice): dict of arrays
    parallel: bool = False  # whether the forward tasks ran in parallel threads
    need_dx: bool = True  # False: the caller discards dL/dX (a model's first layer); backward gives None


def _bias_sum(Wb, Rb, d, GH, dt):
    b = np.zeros(GH, dt)
    if Wb is not None:
        b += Wb[d]
    if Rb is not None:
        b += Rb[d]
    return b


def _kernel_bias(cell, Wb, Rb, d, H, GH, dt, lbr):
    """(bias (GH,), Rbh (H,) or None): the bias the kernels add to each step's gate sums, and
    GRU's recurrent h~ bias, which sits inside r * (.) and is added in the loop."""
    bias = _bias_sum(Wb, Rb, d, GH, dt)
    if cell == "gru" and lbr and Rb is not None:
        bias[2 * H:] -= Rb[d, 2 * H:]
    Rbh = None
    if cell == "gru":
        Rbh = np.zeros(H, dt) if Rb is None else np.ascontiguousarray(Rb[d, 2 * H:])
    return bias, Rbh


def _given(**kw):
    return tuple(k for k, v in kw.items() if v is not None)


# Scratch buffers for temporaries that never leave a call (inference only), kept per thread
# and reused from call to call: a fresh large array costs a page fault per 4 KiB on first
# touch, which measured ~10% of a batch-32 forward pass. Buffers above _SCRATCH_MAX bytes (16 MiB)
# are not kept.
_SCRATCH = threading.local()
_SCRATCH_MAX = 16 << 20


def _scratch(name, shape, dt):
    """An uninitialised C-contiguous array of ``shape``, reused by later calls (same thread)."""
    dt = np.dtype(dt)
    n = math.prod(shape) * dt.itemsize
    if n > _SCRATCH_MAX:
        return np.empty(shape, dt)
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    buf = bufs.get(name)
    if buf is None or buf.nbytes < n:
        buf = bufs[name] = np.empty(max(n, 4096), np.uint8)
    return buf[:n].view(dt).reshape(shape)


# Weight matrices that every time step reads (the recurrent R, or its transpose for BLAS gemv)
# are copied, when large, into a 2 MiB-aligned block of a pooled buffer. Measured: a 1 MiB
# matrix in ordinary 4 KiB pages lands on physical pages that conflict in the 2 MiB L2 about
# half the time (gemv 13 us instead of 9 us); inside an aligned block the kernel backs it with
# one huge page (Linux transparent huge pages; the buffer is large enough for numpy to ask for
# them) and it always takes 9 us. Elsewhere this is an ordinary copy.
_HOT_MIN = 512 << 10
_HUGE = 2 << 20


def _hot(name, M, steps=0):
    """A C-contiguous copy of the 2-D array ``M`` for a hot loop (see above). Small matrices
    stay as they are, unless the loop runs ``steps`` >= 256 times over one of at least 16 KiB
    (measured: a 64 KiB LSTM R in ordinary pages made a T=1000 batch-1 pass take 1.16 ms
    instead of 0.98 ms about every other run)."""
    small = M.nbytes < _HOT_MIN and not (steps >= 256 and M.nbytes >= 16 << 10)
    if small or M.nbytes > _SCRATCH_MAX:
        return np.ascontiguousarray(M)
    out = _hot_empty(name, M.shape, M.dtype)
    np.copyto(out, M)
    return out


def _aligned_empty(shape, dt):
    """An uninitialised array of its own, in a 2 MiB-aligned block from 16 KiB (see above)."""
    dt = np.dtype(dt)
    n = math.prod(shape) * dt.itemsize
    if n < 16 << 10:
        return np.empty(shape, dt)
    buf = np.empty(n + _HUGE, np.uint8)
    off = (-buf.ctypes.data) % _HUGE
    return buf[off: off + n].view(dt).reshape(shape)


def _hot_empty(name, shape, dt):
    """An uninitialised array in a 2 MiB-aligned block of the pooled buffer ``name`` (see above)."""
    dt = np.dtype(dt)
    n = math.prod(shape) * dt.itemsize
    if n > _SCRATCH_MAX:
        return np.empty(shape, dt)
    bufs = getattr(_SCRATCH, "hot", None)
    if bufs is None:
        bufs = _SCRATCH.hot = {}
    buf, off = bufs.get(name, (None, 0))
    if buf is None or buf.nbytes < n + 2 * _HUGE:
        buf = np.empty(n + 2 * _HUGE, np.uint8)  # >= 4 MiB: numpy madvises huge pages
        off = (-buf.ctypes.data) % _HUGE  # (kept: reading buf.ctypes costs ~2 us per call)
        bufs[name] = buf, off
    return buf[off: off + n].view(dt).reshape(shape)


# Batch 1: the recurrent matrix is packed into the layout of ``cells._ops.mv_packed`` (blocks
# of output rows, K-major) once per call, for sequences of at least _PACK_MIN_T steps (packing
# costs about two steps' products).
_PACK_MIN_T = 4


def _packed(name, M, B, T):
    """M (N, K) packed for ``mv_packed`` in a hot buffer, or an empty array where the batch-1
    kernels should not use it (batches, short sequences)."""
    if B != 1 or T < _PACK_MIN_T:
        return np.empty(0, M.dtype)
    N, Kk = M.shape
    out = _hot_empty(name, (K.packed_rows(N) * Kk,), M.dtype)
    K.pack_panels(np.ascontiguousarray(M), out)
    return out


def _default_cell(cell, codes, clip, P, input_forget, lbr):
    """The default float32 cell of the fused kernels: fast sigmoid/tanh activations, no clip, no
    peepholes, no input_forget, GRU lbr=1."""
    if clip != 0:
        return False
    if cell == "lstm":
        return P is None and not input_forget and np.asarray(codes).tolist() == [FAST_SIGMOID, FAST_TANH, FAST_TANH]
    if cell == "gru":
        return bool(lbr) and np.asarray(codes).tolist() == [FAST_SIGMOID, FAST_TANH]
    return False


def _transposed_for_gemv(B, T, dt):
    """The transposed weight matrix the batch-1 kernels hand to BLAS gemv (``cells._ops.matmul``),
    or an empty placeholder where gemv is not used: batches, small matrices, and sequences too
    short to pay for the transposing copy (about ten steps' worth of gemv)."""
    none = np.empty((0, 0), dt)
    if B != 1 or T < 32:
        return lambda M, name="RT": none
    return lambda M, name="RT": _hot(name, M.T) if M.size >= K.GEMV_MIN else none


def _fused(cell, B, T, dt, codes, clip, P, input_forget, lbr):
    """Use the fused kernels (``lstm_forward_fused``, ``gru_forward_fused``)? The default float32
    cells (``_default_cell``): every batch of several sequences, and one sequence of at least
    _PACK_MIN_T steps (packing the weights costs about two steps' products; shorter ones take
    the batch-major kernels)."""
    return ((B > 1 or T >= _PACK_MIN_T) and dt == np.float32
            and _default_cell(cell, codes, clip, P, input_forget, lbr))


_XIN_MIN_B = 2  # batches from this size project their inputs inside the fused kernels


def _pack_fused(W, R, bias, Rbh, hot=True):
    """The fused kernels' weights -> (Wp, Rp, bp, rbh, idx): W (ng*H, I) and R (ng*H, H) packed
    unit-interleaved (``cells._ops.pack_gates16``), the bias (ng*H,) in that order, GRU's Rbh
    (H,) padded (None for LSTM), and the order's index. ``hot``: in this thread's pooled hot
    buffers (valid until its next call); otherwise in arrays of their own."""
    H = R.shape[1]
    ng = R.shape[0] // H
    Hp = K.packed_rows(H)
    N = ng * Hp
    I = W.shape[1]
    dt = W.dtype
    if W.shape != (ng * H, I) or R.shape != (ng * H, H) or bias.shape != (ng * H,):
        raise ValueError(f"packing: W {W.shape}, R {R.shape}, bias {bias.shape} do not match ({ng}*{H}, .)")
    if hot:
        Wp = _hot_empty("Wp", (N * I,), dt)
        Rp = _hot_empty("Rp", (N * H,), dt)
    else:
        Wp = np.empty(N * I, dt)
        Rp = _aligned_empty((N * H,), dt)
    K.pack_gates16(W, H, ng, Wp)
    K.pack_gates16(R, H, ng, Rp)
    idx = K.gates16_index(H, ng)
    bp = np.zeros(N, dt)
    bp[idx] = bias
    rbh = None
    if Rbh is not None:
        rbh = np.zeros(Hp, dt)
        rbh[:H] = Rbh
    return Wp, Rp, bp, rbh, idx


def _forward_fused(cell, st, Xt, W, R, bias, Rbh, hinit, cinit, L, Lmax, train, Yout=None, packed=None):
    """One direction with the fused kernels: weights packed unit-interleaved
    (``cells._ops.pack_gates16``), the input projection with the bias (for all steps before the
    loop by ``project_panels``, or inside the kernel for batches), then the time loop. With ``train`` keeps in ``st`` what the fused
    backward kernels read: the gate outputs and states in the kernels' own layouts.
    Lmax: the longest of the lengths L.
    Yout: None, or (Y, b0, d): the caller's C-contiguous output Y (B', T, D, H), H a multiple of
    16, whose part Y[b0:b0 + B, :, d] is written directly (no copy; Y is returned as None).
    Otherwise returns Y (T, B, H) (a view of a scratch buffer). Also returns h, c (B, H).
    packed: ``_pack_fused(W, R, bias, Rbh)`` made earlier (W, R, bias, Rbh are then not read).
    """
    T, B, I = Xt.shape
    Wp, Rp, bp, rbh, idx = _pack_fused(W, R, bias, Rbh) if packed is None else packed
    H = hinit.shape[1]
    Hp = K.packed_rows(H)
    N = bp.shape[0]
    dt = Xt.dtype
    # batches: the kernel projects the inputs itself, step by step in its registers (no G to
    # write and read back); one sequence: all steps at once before the loop
    xin = B >= _XIN_MIN_B
    if xin:
        G = np.empty((T, B, N), dt) if train else _scratch("G", (1, 1, N), dt)
    else:
        G = np.empty((T, B, N), dt) if train else _scratch("G", (T, B, N), dt)
    nsplit = _split_threads(cell, B, T, Lmax, Hp, I, train)
    if Yout is None:
        Yp = _scratch("Yt", (T, B, Hp), dt)
        Yp[Lmax:] = 0  # the kernel writes every row before
        ysb, yst, y0 = Hp, B * Hp, 0
        Ybuf = Yp
    else:  # Y[b0:b0 + B, :, d] of Y (B', T, D, H), C-contiguous: strides in elements
        Ybuf, b0, d = Yout
        it = dt.itemsize
        ysb, yst = Ybuf.strides[0] // it, Ybuf.strides[1] // it
        y0 = (b0 * Ybuf.strides[0] + d * Ybuf.strides[2]) // it
        if Lmax < T:
            Ybuf[b0:b0 + B, Lmax:, d] = 0
    h = np.zeros((B, Hp), dt)
    h[:, :H] = hinit
    hbuf = np.empty((B, Hp), dt)
    shape_s = (T + 1, B, Hp) if train else (1, 1, 1)
    Hs = np.empty(shape_s, dt)
    c = None
    if cell == "gru":
        RH = np.zeros((T, B, Hp) if train else (1, 1, 1), dt)
        if not _split_or_project(_gru.gru_seq_split, nsplit, xin, Xt, Wp, bp, G, (Rp, rbh), Ybuf, yst, y0,
                                 (h, hbuf)):
            _gru.gru_forward_fused(G, Rp, rbh, L, train, Ybuf, ysb, yst, y0, h, hbuf, Hs, RH, Xt, Wp, bp, xin)
    else:
        c = np.zeros((B, Hp), dt)
        if cinit is not None:
            c[:, :H] = cinit
        Cs = np.empty(shape_s, dt)
        Hc = np.zeros((T, B, Hp) if train else (1, 1, 1), dt)
        if not _split_or_project(_lstm.lstm_seq_split, nsplit, xin, Xt, Wp, bp, G, (Rp,), Ybuf, yst, y0,
                                 (h, c, hbuf)):
            _lstm.lstm_forward_fused(G, Rp, L, train, Ybuf, ysb, yst, y0, h, c, hbuf, Hs, Cs, Hc, Xt, Wp, bp, xin)
    if train:  # *_backward_fused read these layouts as they are
        Hs[Lmax:] = h  # steps past every sequence's end hold the state
        st.update(fused=True, G=G, Hs=Hs, idx=idx)
        if cell == "gru":
            st["RH"] = RH
        else:
            st.update(Cs=Cs, Hc=Hc)
    return None if Yout is not None else Yp[:, :, :H], h[:, :H], None if c is None else c[:, :H]


# One sequence over several threads (inference, default LSTM and GRU): each thread computes a
# share of the units at every step, and the threads meet at a barrier per step inside the kernel
# (``cells.lstm.lstm_seq_split``, ``cells.gru.gru_seq_split``, ``cells._sync``): measured 1.75x on
# 2 cores for LSTM (64, 256) at T=1000, 1.2x for (16, 64). Starting the pool's threads costs ~0.1-0.3 ms here, so only
# sequences of at least _SPLIT_MIN_MACS multiply-adds (~1 ms on one core) are split, with at
# least _SPLIT_MIN_UNITS units per thread, and never over more threads than free cores.
_SPLIT_MIN_UNITS = 32
_SPLIT_MIN_MACS = 16_000_000
_SPLIT_START_S = 0.005  # the caller gives up waiting for a pool thread to start after this
_SPLIT_BACKOFF_S = 0.5  # after two runs in a row that had to yield their cores often (busy machine): no split
_split_backoff_until = 0.0  # for this long (one such run is not enough: the first run of a process loads kernels)
_split_busy = False  # the last run was such a run


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _split_threads(cell, B, T, Lmax, Hp, I, train):
    """Threads to share one sequence's steps (1: the caller's thread alone)."""
    ng = {"lstm": 4, "gru": 3}.get(cell)
    if ng is None or B != 1 or train or Lmax != T or T * ng * Hp * (Hp + I) < _SPLIT_MIN_MACS:
        return 1
    if _split_backoff_until and time.monotonic() < _split_backoff_until:
        return 1
    if threading.current_thread().name.startswith(_POOL_PREFIX):  # a task of a parallel call: the pool is busy
        return 1
    return max(1, min(get_num_threads(), _cores(), Hp // _SPLIT_MIN_UNITS))


def _split_run(kernel, w, n, sync, args, deadline=None):
    """Thread w's part of ``kernel`` (``*_seq_split``), yielding its core whenever a wait takes long.
    Thread 0 (``deadline``) aborts the run if a thread has not started by then.
    -> (done, number of yields)"""
    p, yields = 0, 0
    while True:
        p = kernel(w, n, sync, *args, p)
        if p <= 0:
            return p == 0, yields
        if deadline is not None and p == 2 and time.perf_counter() > deadline and _csync.cancel(sync, n):
            kernel(w, n, sync, *args, p)  # returns at once (aborted)
            return False, yields
        yields += p > 2  # (waiting for the threads to start is not a busy machine)
        os.sched_yield() if hasattr(os, "sched_yield") else time.sleep(0)


def _split_or_project(kernel, nsplit, xin, Xt, Wp, bp, G, weights, Y, yst, y0, states):
    """Before a fused kernel: run the whole sequence split over ``nsplit`` threads (True: done,
    h holds the final state), or else (not split, or the split run aborted) project the inputs
    for all steps unless the kernel does it itself (``xin``) and return False."""
    T, B, I = Xt.shape
    N = bp.shape[0]
    if nsplit > 1 and _forward_split(kernel, nsplit, Xt.reshape(T, I), Wp, bp, G.reshape(T, N), weights, Y, yst,
                                     y0, states):
        return True
    if not xin:
        K.project_panels(Xt.reshape(T * B, I), Wp, bp, G.reshape(T * B, N))
    return False


def _forward_split(kernel, n, X2, Wp, bp, G2, weights, Y, yst, y0, states):
    """``kernel`` (``lstm_seq_split`` or ``gru_seq_split``) on n threads (this one and n - 1 of
    the pool), with its recurrent ``weights`` (Rp,) or (Rp, rbh) and ``states`` (h, c, hbuf) or
    (h, hbuf). False if it was aborted (a pool thread did not start in time: the states are then
    untouched)."""
    T = G2.shape[0]
    nu = states[0].shape[1] // K.PANEL
    ub = [round(i * nu / n) for i in range(n + 1)]  # panels per thread
    mb = [min(T, 3 * round(i * T / (3 * n))) for i in range(n)] + [T]  # projected steps per thread
    sync = np.zeros((n + 1) * _csync.SLOT, np.int64)
    args = [(X2, Wp, bp, G2, mb[w], mb[w + 1], *weights, Y, yst, y0, *states, ub[w], ub[w + 1]) for w in range(n)]
    futures = _submit([functools.partial(_split_run, kernel, w, n, sync, args[w]) for w in range(1, n)])
    global _split_backoff_until, _split_busy
    try:
        ok, yields = _split_run(kernel, 0, n, sync, args[0], time.perf_counter() + _SPLIT_START_S)
    except BaseException:  # KeyboardInterrupt between two waits: the other threads must not wait for ever
        _csync.abort(sync, n)
        raise
    for f in futures:
        yields += f.result()[1]
    busy = not ok or yields > T // 8  # (measured: idle 0-80 per 1000 steps, next to a busy process 500-1500)
    if busy and _split_busy:  # the cores are busy with other work: one thread per sequence for a while
        _split_backoff_until = time.monotonic() + _SPLIT_BACKOFF_S
    _split_busy = busy
    if ok and T & 1:  # h_t alternates between h and hbuf (states[-1]): the last one went to hbuf
        states[0][:] = states[-1]
    return ok


def _forward_bmaj(cell, st, Xt, W, R, bias, Rbh, hinit, cinit, P, L, codes, al, be, clipv, input_forget,
                  lbr, train):
    """One direction with the batch-major kernels (every option). Fills ``st`` for BPTT."""
    T, B, I = Xt.shape
    H = R.shape[1]
    GH = R.shape[0]
    dt = Xt.dtype
    Tk = T if train else 1
    # (T, B, G*H); becomes the gate outputs
    Gm = np.empty((T, B, GH), dt) if train else _scratch("G", (T, B, GH), dt)
    _project(Xt.reshape(T * B, I), W.T, Gm.reshape(T * B, GH))
    tr = _transposed_for_gemv(B, T, dt)
    Yt = _scratch("Yt", (T, B, H), dt)
    Yt.fill(0)  # padded steps
    h = np.empty((B, H), dt)
    hinit = np.ascontiguousarray(hinit)
    need_a = train and (clipv > 0 or not all(int(k) in _OUT_DERIV for k in codes[:2]))
    A = np.empty((Tk if need_a else 1, B, GH), dt)  # pre-activations, only when BPTT needs them
    Hs = np.empty((T + 1 if train else 1, B, H), dt)
    st.update(A=A, Gt=Gm, Hs=Hs)
    c = None
    # batch 1 (LSTM, GRU lbr=1): the packed R only; otherwise R (and R^T for gemv)
    Rp = _packed("Rp", R, B, T) if cell == "lstm" or cell == "gru" and lbr else np.empty(0, dt)
    if Rp.size:
        Rn = R
        tr = _transposed_for_gemv(2, T, dt)  # none
    else:
        Rn = _hot("Rn", R, T * B)
    if cell == "rnn":
        _rnn.rnn_forward(Gm, bias, Rn, tr(R), hinit, L, codes[0], al[0], be[0], clipv, train, Yt, h, A, Hs)
    elif cell == "gru":
        RH = np.empty((Tk, B, H), dt)
        Rzr, Rh = R[: 2 * H], R[2 * H:]
        _gru.gru_forward(Gm, bias, Rn, tr(R), Rp, Rzr, tr(Rzr, "RzrT"), Rh, tr(Rh, "RhT"), Rbh, hinit, L, codes,
                         al, be, clipv, bool(lbr), train, Yt, h, A, Hs, RH)
        st["RH"] = RH
    else:
        cinit = np.zeros((B, H), dt) if cinit is None else np.ascontiguousarray(cinit)
        Pd = np.zeros(3 * H, dt) if P is None else P
        c = np.empty((B, H), dt)
        Cs = np.empty((T + 1 if train else 1, B, H), dt)
        Hc = np.empty((Tk, B, H), dt)
        _lstm.lstm_forward(Gm, bias, Rn, tr(R), Rp, Pd, hinit, cinit, L, codes, al, be, clipv, bool(input_forget),
                       P is not None, train, Yt, h, c, A, Hs, Cs, Hc)
        st.update(Cs=Cs, Hc=Hc)
    return Yt, h, c


def _forward_task(cell, a, d, b0, b1, train, Y, Y_h, Y_c):
    """Direction ``d`` of the sequences ``b0:b1``: fills their part of Y, Y_h, Y_c and returns
    what BPTT needs. Tasks write disjoint slices and may run in parallel threads."""
    X, L, H, GH, dt = a["X"][b0:b1], a["L"][b0:b1], a["H"], a["GH"], a["X"].dtype
    Wb, Rb, h0, c0, P = a["Wb"], a["Rb"], a["h0"], a["c0"], a["P"]
    cell_lbr = a["lbr"]
    B, T, _ = X.shape
    reverse = a["direction"] == "reverse" or d == 1
    ridx = _reverse_index(L, T) if reverse else None
    Lmax = T if a["full"] else int(L.max())
    if B == 1 and a["full"] and not reverse and not train:  # read only: (1, T, I) serves as (T, 1, I)
        Xt = X.reshape(T, 1, X.shape[2])
    else:
        Xt = _time_major_copy(X, ridx, L, train)  # (T, B, I), a copy: never the caller's array
        if not a["full"] and L.min() < T:  # padded steps never matter: zero them so NaN padding cannot reach dW
            Xt[np.arange(T)[:, None] >= L[None, :]] = 0
    hinit = np.zeros((B, H), dt) if h0 is None else h0[b0:b1, d]
    cinit = None if c0 is None else c0[b0:b1, d]
    bias, Rbh = _kernel_bias(cell, Wb, Rb, d, H, GH, dt, cell_lbr)
    st = dict(d=d, b0=b0, b1=b1, Xt=Xt, ridx=ridx)
    W, R = a["W"][d], a["R"][d]
    if _fused(cell, B, T, dt, a["codes"][d], a["clip"], P, a["input_forget"], cell_lbr):
        direct = ridx is None and H % K.PANEL == 0 and Y.flags.c_contiguous
        Yt, h, c = _forward_fused(cell, st, Xt, W, R, bias, Rbh, hinit, cinit, L, Lmax, train,
                                  (Y, b0, d) if direct else None)
        if not direct:
            Y[b0:b1, :, d, :] = _batch_first(Yt, ridx)
    else:
        Yt, h, c = _forward_bmaj(cell, st, Xt, W, R, bias, Rbh, hinit, cinit, None if P is None else P[d], L,
                                 a["codes"][d], a["al"][d], a["be"][d], a["clip"], a["input_forget"], cell_lbr,
                                 train)
        Y[b0:b1, :, d, :] = _batch_first(Yt, ridx)
    Y_h[b0:b1, d] = h
    if cell == "lstm":
        Y_c[b0:b1, d] = c
    return st


# Parallel tasks: the directions of a bidirectional layer and slices of a batch are independent
# computations, so with more than one thread (``edgernn.set_num_threads``) they run side by
# side in a thread pool (the kernels release the GIL), each calling BLAS single-threaded. No
# synchronisation inside the time loop: measured 1.8x on 2 cores for a (64 -> 256) LSTM layer
# at batch 32. Work below _TASK_MIN_MACS per task is not split (thread hand-off costs ~50 us).
_TASK_MIN_MACS = 4_000_000
_TASK_MIN_BATCH = 8
_POOL = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()
_POOL_PREFIX = "edgernn-pool"


def _tasks(B, T, D, GH, K_in):
    """(tasks, parallel): (direction, b0, b1) for every task of a call, and whether to run them
    in parallel threads."""
    n = get_num_threads()
    if n == 1:
        return [(d, 0, B) for d in range(D)], False
    chunks = 1
    per_seq = T * GH * K_in  # multiply-adds per sequence and direction
    if n > 1:
        chunks = max(1, min(max(1, n // D), B // max(1, _TASK_MIN_BATCH), B * per_seq // max(1, _TASK_MIN_MACS)))
    bounds = [round(i * B / chunks) for i in range(chunks + 1)]
    tasks = [(d, bounds[i], bounds[i + 1]) for d in range(D) for i in range(chunks)]
    parallel = n > 1 and len(tasks) > 1 and B * per_seq * D >= 2 * _TASK_MIN_MACS
    return tasks, parallel


def _run_tasks(fns, parallel):
    """Run the callables, in parallel threads if asked (BLAS single-threaded in each)."""
    if not parallel:
        return [f() for f in fns]
    with blas_limit(1):
        return [f.result() for f in _submit(fns)]


def _submit(fns):
    """The callables submitted to edgernn's thread pool (``get_num_threads()`` threads) -> futures."""
    global _POOL, _POOL_SIZE
    n = get_num_threads()
    # Replacing the pool (set_num_threads) and submitting happen under one lock: another thread
    # never submits to a pool that was just shut down. A replaced pool still runs what was
    # queued on it (shutdown(wait=False) cancels nothing).
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE != n:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix=_POOL_PREFIX)
            _POOL_SIZE = n
        return [_POOL.submit(f) for f in fns]


# ----------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------
@with_blas_limit
def _run(cell, X, W, R, Wb, Rb, h0, c0, P, lengths, direction, activations, activation_alpha,
         activation_beta, clip, train, input_forget=False, linear_before_reset=True):
    given = _given(X=X, W=W, R=R, Wb=Wb, Rb=Rb, h0=h0, c0=c0, P=P) if train else ()
    (X, W, R, Wb, Rb, h0, c0, P, L, D, H, codes, al, be, clipv) = _prepare(
        cell, X, W, R, Wb, Rb, h0, c0, P, lengths, direction, activations, activation_alpha,
        activation_beta, clip)
    dt = X.dtype
    B, T, I = X.shape
    GH = cells.get(cell).gates * H
    Y = np.empty((B, T, D, H), dt)  # every direction writes all of its slice
    Y_h = np.empty((B, D, H), dt)
    Y_c = np.empty((B, D, H), dt) if cell == "lstm" else None
    if train:  # the cache owns what backward reads: an in-place optimizer step cannot change the gradients
        W, R, P = _owned(W), _owned(R), _owned(P)
    a = dict(X=X, W=W, R=R, Wb=Wb, Rb=Rb, h0=h0, c0=c0, P=P, L=L, D=D, H=H, codes=codes, al=al, be=be,
             clip=clipv, input_forget=bool(input_forget), lbr=bool(linear_before_reset), direction=direction,
             I=I, GH=GH, full=lengths is None or bool(L.min() == T))
    tasks, parallel = _tasks(B, T, D, GH, H + I)
    sts = _run_tasks([functools.partial(_forward_task, cell, a, d, b0, b1, train, Y, Y_h, Y_c)
                      for d, b0, b1 in tasks], parallel)
    out = (Y, Y_h) if cell != "lstm" else (Y, Y_h, Y_c)
    if not train:
        return out
    return out + (Cache(cell, given, a, list(sts), parallel),)


def rnn(X, W, R, Wb=None, Rb=None, h0=None, lengths=None, direction="forward", activations=None,
        activation_alpha=None, activation_beta=None, clip=None, train=False):
    """Elman RNN over a batch of sequences (ONNX ``RNN``): ``H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)``.

    Parameters
    ----------
    X : array (B, T, I)
    W : array (D, H, I)
    R : array (D, H, H)
    Wb, Rb : array (D, H), optional
    h0 : array (B, D, H), optional
    lengths : int array (B,), optional
        Valid steps per sequence; padded steps output zeros and hold the state.
    direction : {"forward", "reverse", "bidirectional"}
    activations : list of str, optional
        ONNX activation names, one per direction (default ``Tanh``).
    activation_alpha, activation_beta : list of float, optional
    clip : float, optional
        Pre-activations are clipped to [-clip, clip].
    train : bool
        Also return a cache for :func:`rnn_backward`.

    Returns
    -------
    Y : array (B, T, D, H)
    Y_h : array (B, D, H)
    cache : Cache, only if ``train``
    """
    return _run("rnn", X, W, R, Wb, Rb, h0, None, None, lengths, direction, activations, activation_alpha,
                activation_beta, clip, train)


def gru(X, W, R, Wb=None, Rb=None, h0=None, lengths=None, direction="forward", linear_before_reset=True,
        activations=None, activation_alpha=None, activation_beta=None, clip=None, train=False):
    """GRU over a batch of sequences (ONNX ``GRU``, gates z, r, h).

    Parameters are those of :func:`rnn` with ``W`` (D, 3H, I), ``R`` (D, 3H, H), biases (D, 3H)
    and two activations per direction (default ``Sigmoid, Tanh``), plus:

    linear_before_reset : bool, default True
        True: ``h~ = g(X Wh + r * (H Rh^T + Rbh) + Wbh)`` (PyTorch, Keras ``reset_after``).
        False: ``h~ = g(X Wh + (r * H) Rh^T + Rbh + Wbh)``.

    Returns
    -------
    Y : array (B, T, D, H)
    Y_h : array (B, D, H)
    cache : Cache, only if ``train``
    """
    return _run("gru", X, W, R, Wb, Rb, h0, None, None, lengths, direction, activations, activation_alpha,
                activation_beta, clip, train, linear_before_reset=linear_before_reset)


def lstm(X, W, R, Wb=None, Rb=None, h0=None, c0=None, P=None, lengths=None, direction="forward",
         input_forget=False, activations=None, activation_alpha=None, activation_beta=None, clip=None,
         train=False):
    """LSTM over a batch of sequences (ONNX ``LSTM``, gates i, o, f, c).

    Parameters are those of :func:`rnn` with ``W`` (D, 4H, I), ``R`` (D, 4H, H), biases (D, 4H)
    and three activations per direction (default ``Sigmoid, Tanh, Tanh``: f, g, h), plus:

    c0 : array (B, D, H), optional
        Initial cell state.
    P : array (D, 3H), optional
        Peephole weights, order i, o, f; the output peephole uses the new cell state.
    input_forget : bool
        Couple the input and forget gates: ``f = 1 - i``.

    Returns
    -------
    Y : array (B, T, D, H)
    Y_h, Y_c : array (B, D, H)
    cache : Cache, only if ``train``
    """
    return _run("lstm", X, W, R, Wb, Rb, h0, c0, P, lengths, direction, activations, activation_alpha,
                activation_beta, clip, train, input_forget=input_forget)


# ----------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------
def _grad_in(g, name, shape, dt):
    if g is None:
        return None
    g = _as_float(g, name, dt)
    if g.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {g.shape}")
    return g


def _backward_task(cell, a, st, dY, dY_h, dY_c, need_dx=True):
    """BPTT of one forward task (direction ``st["d"]``, sequences ``st["b0"]:st["b1"]``):
    that task's share of every gradient."""
    d, b0, b1 = st["d"], st["b0"], st["b1"]
    W, R, L, H = a["W"], a["R"], a["L"][b0:b1], a["H"]
    ridx, Xt = st["ridx"], st["Xt"]
    T, B, I = Xt.shape
    GH = R.shape[1]
    dt = Xt.dtype
    X2 = Xt.reshape(T * B, I)  # (T*B, I), step order
    dh = np.zeros((B, H), dt) if dY_h is None else dY_h[b0:b1, d]
    dc = np.zeros((B, H), dt) if dY_c is None else dY_c[b0:b1, d]
    dYd = None if dY is None else dY[b0:b1, :, d, :]
    g = dict(P=np.zeros(3 * H, dt), c0=dc)
    if st.get("fused"):
        return _backward_fused(cell, a, st, W[d], R[d], L, dYd, dh, dc, g, need_dx)
    if dYd is None:
        dYt = np.zeros((T, B, H), dt)
    else:
        dYt = _time_major(dYd, ridx)  # (T, B, H)
    dh = dh.copy()  # the kernel writes into it
    dA = np.zeros((T, B, GH), dt)  # (T, B, G*H)
    Hprev = st["Hs"][:T].reshape(T * B, H)  # (T*B, H)
    if cell == "rnn":
        _rnn.rnn_backward(_hot("RT", R[d].T), _hot("R", R[d]), L, a["codes"][d, 0], a["al"][d, 0], a["be"][d, 0],
                       a["clip"], dYt, dh, st["A"], st["Gt"], dA)
        dRec = dA
        g["R"] = dA.reshape(T * B, GH).T @ Hprev
    elif cell == "gru":
        dRec = np.zeros((T, B, GH), dt)
        _gru.gru_backward(np.ascontiguousarray(R[d].T), R[d], np.ascontiguousarray(R[d, : 2 * H].T), R[d, : 2 * H],
                       np.ascontiguousarray(R[d, 2 * H:].T), R[d, 2 * H:], L,
                       a["codes"][d], a["al"][d], a["be"][d], a["clip"], a["lbr"], dYt, dh,
                       st["A"], st["Gt"], st["Hs"], st["RH"], dA, dRec)
        dRec2 = dRec.reshape(T * B, GH)
        Hin = Hprev if a["lbr"] else st["RH"].reshape(T * B, H)  # what multiplies Rh
        g["R"] = np.concatenate([dRec2[:, : 2 * H].T @ Hprev, dRec2[:, 2 * H:].T @ Hin])
    else:
        dc = dc.copy()
        Pd = np.zeros(3 * H, dt) if a["P"] is None else a["P"][d]
        _lstm.lstm_backward(_hot("RT", R[d].T), _hot("R", R[d]), Pd, L, a["codes"][d], a["al"][d], a["be"][d], a["clip"],
                        a["input_forget"], a["P"] is not None, dYt, dh, dc, st["A"], st["Gt"], st["Hs"],
                        st["Cs"], st["Hc"], dA, g["P"])
        dRec = dA
        g["R"] = dA.reshape(T * B, GH).T @ Hprev
        g["c0"] = dc
    dA2 = dA.reshape(T * B, GH)  # (T*B, G*H)
    g["W"] = dA2.T @ X2
    if need_dx:
        g["X"] = _batch_first((dA2 @ W[d]).reshape(T, B, I), ridx)
    g["Wb"] = dA2.sum(axis=0)
    g["Rb"] = g["Wb"] if dRec is dA else dRec.reshape(T * B, GH).sum(axis=0)
    g["h0"] = dh
    return g


def _backward_fused(cell, a, st, W, R, L, dYd, dh, dc, g, need_dx):
    """BPTT of one ``_forward_fused`` task on the layouts it saved (unit-interleaved gates,
    states padded to Hp): the weight gradients come out of three products in that order and
    are put back in ONNX order by one gather of rows."""
    G, Hs, idx, ridx = st["G"], st["Hs"], st["idx"], st["ridx"]
    T, B, N = G.shape
    H = R.shape[1]
    Hp = Hs.shape[2]
    I = W.shape[1]
    dt = G.dtype
    dYt = np.zeros((T, B, Hp), dt)  # (T, B, Hp)
    if dYd is not None:
        dYt[:, :, :H] = _time_major(dYd, ridx)
    dhp = np.zeros((B, Hp), dt)  # the kernel writes into them (never into dY_h, dY_c)
    dhp[:, :H] = dh
    dcp = np.zeros((B, Hp), dt)
    if cell == "lstm":
        dcp[:, :H] = dc
    ng = N // Hp
    Rb = _hot_empty("Rb", (Hp // K.PANEL, N, K.PANEL), dt)
    K.pack_back16(R, H, ng, Rb)
    dA = np.zeros((T, B, N), dt)  # (T, B, N), unit-interleaved; padded steps stay zero
    dRec = dA
    Hprev = Hs[:T].reshape(T * B, Hp)  # (T*B, Hp)
    if cell == "gru":
        dRec = np.zeros((T, B, N), dt)
        _gru.gru_backward_fused(Rb, L, dYt, dhp, G, Hs, st["RH"], dA, dRec)
        # Rh multiplies h_{t-1} (lbr=1): one product for all three gates
    else:
        _lstm.lstm_backward_fused(Rb, L, dYt, dhp, dcp, G, st["Cs"], st["Hc"], dA)
        g["c0"] = dcp[:, :H]
    dA2 = dA.reshape(T * B, N)
    dRec2 = dRec.reshape(T * B, N)
    g["R"] = (dRec2.T @ Hprev)[idx, :H]  # (G*H, H)
    g["W"] = (dA2.T @ st["Xt"].reshape(T * B, I))[idx]  # (G*H, I)
    if need_dx:
        Wpad = np.zeros((N, I), dt)  # W's rows in the unit-interleaved order, zero rows for padding
        Wpad[idx] = W
        g["X"] = _batch_first((dA2 @ Wpad).reshape(T, B, I), ridx)
    g["Wb"] = dA2.sum(axis=0)[idx]
    g["Rb"] = g["Wb"] if dRec is dA else dRec2.sum(axis=0)[idx]
    g["h0"] = dhp[:, :H]
    return g


@with_blas_limit
def _backward(cell, cache, dY, dY_h, dY_c=None):
    if not isinstance(cache, Cache) or cache.cell != cell:
        raise TypeError(f"cache: expected the cache returned by {cell}(..., train=True)")
    a = cache.args
    X, W, R, D, H = a["X"], a["W"], a["R"], a["D"], a["H"]
    dt = X.dtype
    B, T, I = X.shape
    GH = cells.get(cell).gates * H
    dY = _grad_in(dY, "dY", (B, T, D, H), dt)
    dY_h = _grad_in(dY_h, "dY_h", (B, D, H), dt)
    dY_c = _grad_in(dY_c, "dY_c", (B, D, H), dt)
    dX = np.zeros((B, T, I), dt) if cache.need_dx else None
    dW = np.zeros_like(W)
    dR = np.zeros_like(R)
    dWb = np.zeros((D, GH), dt)
    dRb = np.zeros((D, GH), dt)
    dh0 = np.empty((B, D, H), dt)
    dc0 = np.empty((B, D, H), dt)
    dP = np.zeros((D, 3 * H), dt)
    parts = _run_tasks([functools.partial(_backward_task, cell, a, st, dY, dY_h, dY_c, cache.need_dx)
                        for st in cache.dirs],
                       cache.parallel and get_num_threads() > 1)
    for st, p in zip(cache.dirs, parts, strict=True):
        d, b0, b1 = st["d"], st["b0"], st["b1"]
        dW[d] += p["W"]
        dR[d] += p["R"]
        dWb[d] += p["Wb"]
        dRb[d] += p["Rb"]
        dP[d] += p["P"]
        if dX is not None:
            dX[b0:b1] += p["X"]
        dh0[b0:b1, d] = p["h0"]
        dc0[b0:b1, d] = p["c0"]
    grads = dict(X=dX, W=dW, R=dR, Wb=dWb, Rb=dRb, h0=dh0, c0=dc0, P=dP)
    return {k: grads[k] for k in cache.given}


def rnn_backward(cache, dY, dY_h=None):
    """Gradients of :func:`rnn` by BPTT.

    Parameters
    ----------
    cache : Cache
        From ``rnn(..., train=True)``.
    dY : array (B, T, D, H) or None
    dY_h : array (B, D, H), optional

    Returns
    -------
    dict
        Gradient for each input that was given: ``X, W, R, Wb, Rb, h0``.
    """
    return _backward("rnn", cache, dY, dY_h)


def gru_backward(cache, dY, dY_h=None):
    """Gradients of :func:`gru` by BPTT; see :func:`rnn_backward`."""
    return _backward("gru", cache, dY, dY_h)


def lstm_backward(cache, dY, dY_h=None, dY_c=None):
    """Gradients of :func:`lstm` by BPTT: dict with ``X, W, R, Wb, Rb, h0, c0, P`` (those given).

    Parameters
    ----------
    cache : Cache
        From ``lstm(..., train=True)``.
    dY : array (B, T, D, H) or None
    dY_h, dY_c : array (B, D, H), optional
    """
    return _backward("lstm", cache, dY, dY_h, dY_c)


def __getattr__(name):
    """The functional API of the cells without kernels of their own here (``jordan``, ``indrnn``,
    ... and their ``*_backward``), found in the cell registry."""
    for spec in cells.registered().values():
        if name in spec.functional:
            return getattr(spec.mod(), name)
    raise AttributeError(f"module 'edgernn.functional' has no attribute {name!r}")
