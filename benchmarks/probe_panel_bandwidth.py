#!/usr/bin/env python3
"""How fast one core streams a packed recurrent matrix: the batch-1 LSTM panel loop alone.

A copy of the one-sequence branch of ``cells.lstm.lstm_forward_fused`` (panels of 16 units,
snake order, two accumulator sets, the gates), timed per step for several H, optionally with a
software prefetch ``PD`` k-iterations ahead (``llvm.prefetch``; results are checked
bit-identical to no prefetch). Prints microseconds per step and the rate at which R
(4H x H float32, read once per step) streams into the core, then, for reference, the rate of a
bare loop of FMAs reading an array of each size (8 accumulators, nothing else): what the caches
deliver to one core (issue 14, session 7):

    python benchmarks/probe_panel_bandwidth.py 96,128,160,192,224,256 0,8,16,32
"""

import os
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from edgernn import functional as F  # noqa: E402
from edgernn.cells._ops import vsigmoid, vtanh  # noqa: E402
from edgernn.cells._simd import _is_farray, vadd, vfma, vload, vmul, vsplat, vstore, vzero  # noqa: E402


@intrinsic
def vprefetch(typingctx, arr, i):
    """Prefetch the cache line of arr.flat[i] into L1 (a hint: never faults)."""
    if not (_is_farray(arr) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        p = builder.gep(a.data, [context.cast(builder, args[1], sig.args[1], types.intp)])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(p, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, i), codegen


@numba.njit(fastmath=True, error_model="numpy")
def loop(G, Rp, h, c, hbuf, Y, T, PD):
    """T steps of one sequence; G (T, 4H) the projections, Rp R packed (``pack_gates16``)."""
    N = G.shape[1]
    K = Rp.shape[0] // N
    KP = K * 16
    nu = h.shape[0] // 16
    for t in range(T):
        odd = t & 1
        src = hbuf if odd else h
        dst = h if odd else hbuf
        for i in range(nu):
            u = nu - 1 - i if odd else i  # snake order
            wb = u * 4 * KP
            cu = u * 16
            g = G[t]
            a0 = vload(g, u * 64)
            a1 = vload(g, u * 64 + 16)
            a2 = vload(g, u * 64 + 32)
            a3 = vload(g, u * 64 + 48)
            b0 = vzero(G)
            b1 = vzero(G)
            b2 = vzero(G)
            b3 = vzero(G)
            for k in range(0, K, 2):
                xa = vsplat(src[k])
                xb = vsplat(src[k + 1])
                p = wb + k * 16
                if PD > 0:
                    q = p + PD * 16
                    for j in range(4):
                        vprefetch(Rp, q + j * KP)
                a0 = vfma(xa, vload(Rp, p), a0)
                a1 = vfma(xa, vload(Rp, p + KP), a1)
                a2 = vfma(xa, vload(Rp, p + 2 * KP), a2)
                a3 = vfma(xa, vload(Rp, p + 3 * KP), a3)
                b0 = vfma(xb, vload(Rp, p + 16), b0)
                b1 = vfma(xb, vload(Rp, p + KP + 16), b1)
                b2 = vfma(xb, vload(Rp, p + 2 * KP + 16), b2)
                b3 = vfma(xb, vload(Rp, p + 3 * KP + 16), b3)
            gi = vsigmoid(vadd(a0, b0))
            go = vsigmoid(vadd(a1, b1))
            gf = vsigmoid(vadd(a2, b2))
            gc = vtanh(vadd(a3, b3))
            cn = vfma(gf, vload(c, cu), vmul(gi, gc))
            hn = vmul(go, vtanh(cn))
            vstore(c, cu, cn)
            vstore(dst, cu, hn)
            vstore(Y[t], cu, hn)
    return 0


@numba.njit(fastmath=True, error_model="numpy")
def stream(A, x, reps, out):
    """reps passes of 16-lane FMAs over A (its size a multiple of 128), 8 accumulators."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vzero(A)
    for r in range(reps):
        xs = vsplat(x[r & 7])
        for p in range(0, A.shape[0], 128):
            a0 = vfma(xs, vload(A, p), a0)
            a1 = vfma(xs, vload(A, p + 16), a1)
            a2 = vfma(xs, vload(A, p + 32), a2)
            a3 = vfma(xs, vload(A, p + 48), a3)
            a4 = vfma(xs, vload(A, p + 64), a4)
            a5 = vfma(xs, vload(A, p + 80), a5)
            a6 = vfma(xs, vload(A, p + 96), a6)
            a7 = vfma(xs, vload(A, p + 112), a7)
    vstore(out, 0, vadd(vadd(vadd(a0, a1), vadd(a2, a3)), vadd(vadd(a4, a5), vadd(a6, a7))))


def stream_rate(kib, rounds=5):
    A = F._aligned_empty((kib * 256,), np.float32)
    A[:] = 1.0
    x, out = np.full(8, 1e-3, np.float32), np.zeros(16, np.float32)
    reps = max(10, int(1e8 / A.nbytes))
    stream(A, x, 2, out)
    ts = []
    for _ in range(rounds):
        t0 = time.thread_time()
        stream(A, x, reps, out)
        ts.append(time.thread_time() - t0)
    print(f"bare FMA stream over {kib} KiB: {A.nbytes * reps / np.median(ts) / 1e9:.0f} GB/s")


def main(H, pds, T=1000, rounds=9):
    if H % 16:
        raise SystemExit(f"H must be a multiple of 16, got {H}")
    rng = np.random.default_rng(0)
    N = 4 * H
    Rp = F._aligned_empty((N * H,), np.float32)  # 2 MiB-aligned, as the library's packed R
    Rp[:] = rng.normal(size=Rp.shape).astype(np.float32) * 0.05
    G = rng.normal(size=(T, N)).astype(np.float32) * 0.1
    Y = np.zeros((T, H), np.float32)

    def run(pd):
        h, c, hb = (np.zeros(H, np.float32) for _ in range(3))
        loop(G, Rp, h, c, hb, Y, T, pd)
        return Y.copy()

    ref = run(0)
    for pd in pds:
        if not np.array_equal(run(pd), ref):
            raise SystemExit(f"PD={pd} changed the results")
    ts = {pd: [] for pd in pds}
    for _ in range(rounds):
        for pd in pds:
            t0 = time.thread_time()
            run(pd)
            run(pd)
            ts[pd].append((time.thread_time() - t0) / 2)
    for pd in pds:
        us = np.median(ts[pd]) / T * 1e6
        rel = np.median(np.array(ts[pd]) / np.array(ts[pds[0]]))
        print(f"H={H} R={Rp.nbytes >> 10} KiB PD={pd}: {us:.2f} us/step, R read at {Rp.nbytes / us / 1e3:.0f} GB/s, "
              f"time / no prefetch {rel:.3f}")


if __name__ == "__main__":
    Hs = [int(v) for v in (sys.argv[1] if len(sys.argv) > 1 else "64,256").split(",")]
    PDs = sorted({0, *(int(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "0").split(","))})
    for H in Hs:
        main(H, PDs)
    for kib in (24, 48, 64, 256, 1024):
        stream_rate(kib)
