"""Explicit SIMD vectors for jitted kernels: a 16-lane vector type and a handful of intrinsics.

LLVM's loop vectoriser turns numba's dot-product loops into vectors, but each dot product then
ends in a horizontal reduction, and the reduction-free formulations (weights packed in panels
of output rows, accumulators held in registers) are not vectorised from numba code at all
(measured 4-8x slower than the dot products). These intrinsics let a kernel say what it wants:
``vload``/``vstore`` move 16 consecutive elements of a 1-D array, ``vsplat`` broadcasts a
scalar, ``vfma`` is a fused multiply-add (``llvm.fmuladd``), ``vadd``/``vsub``/``vmul``/``vdiv``
the arithmetic and ``vselect_gt`` a lane-wise choice (clamps, saturation). A local
variable of the vector type lives in registers (one zmm for float32 with AVX-512, two ymm
with AVX2, four q registers on NEON: LLVM splits the 16 lanes to fit the target).

The element type follows the arrays (float32 or float64), so the same kernel serves both;
vectors of float64 are 16 doubles (two zmm). Nothing here checks bounds: a caller indexes
only what it validated (``vload(a, i)`` reads ``a[i:i + 16]``).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 16


class VecType(types.Type):
    """LANES elements of ``dtype`` (types.float32 or types.float64) held in registers."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"vec{LANES}({dtype})")


_VEC = {types.float32: VecType(types.float32), types.float64: VecType(types.float64)}


def _lltype(dtype):
    return ir.VectorType(ir.FloatType() if dtype == types.float32 else ir.DoubleType(), LANES)


@register_model(VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _lltype(fe_type.dtype))


def _is_farray(a):
    """A C-contiguous float32/float64 array of any rank (indexed flat)."""
    return isinstance(a, types.Array) and a.layout == "C" and a.dtype in _VEC


def _vptr(context, builder, aty, arr, idx):
    a = context.make_array(aty)(context, builder, arr)
    p = builder.gep(a.data, [idx])
    return builder.bitcast(p, _lltype(aty.dtype).as_pointer())


@intrinsic
def vload(typingctx, arr, i):
    """arr.flat[i:i + LANES] as a vector (C-contiguous array, no bounds check)."""
    if not (_is_farray(arr) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load(_vptr(context, builder, sig.args[0], args[0], idx), align=sig.args[0].dtype.bitwidth // 8)

    return _VEC[arr.dtype](arr, i), codegen


@intrinsic
def vstore(typingctx, arr, i, v):
    """arr.flat[i:i + LANES] = v."""
    if not (_is_farray(arr) and isinstance(i, types.Integer) and v == _VEC[arr.dtype]):
        return None

    def codegen(context, builder, sig, args):
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        builder.store(args[2], _vptr(context, builder, sig.args[0], args[0], idx), align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(arr, i, v), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector with every lane ``x`` (float32 or float64 scalar)."""
    if x not in _VEC:
        return None

    def codegen(context, builder, sig, args):
        lt = _lltype(sig.args[0])
        v = builder.insert_element(ir.Constant(lt, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))

    return _VEC[x](x), codegen


@intrinsic
def vzero(typingctx, like):
    """A vector of zeros with the element type of the array ``like``."""
    if not _is_farray(like):
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(_lltype(sig.args[0].dtype), [0.0] * LANES)

    return _VEC[like.dtype](like), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, fused where the target has FMA (``llvm.fmuladd``)."""
    if not (isinstance(a, VecType) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        lt = _lltype(sig.args[0].dtype)
        name = "llvm.fmuladd.v%d%s" % (LANES, "f32" if sig.args[0].dtype == types.float32 else "f64")
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lt, [lt] * 3), name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b."""
    if not (isinstance(a, VecType) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


def _binop(name, op):
    @intrinsic
    def fn(typingctx, a, b):
        if not (isinstance(a, VecType) and a == b):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return a(a, b), codegen

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"a {op[1:]} b, lane by lane."
    return fn


vsub = _binop("vsub", "fsub")
vmul = _binop("vmul", "fmul")
vdiv = _binop("vdiv", "fdiv")


@intrinsic
def vselect_gt(typingctx, a, b, x, y):
    """x where a > b (ordered: false when either is NaN), else y; lane by lane. With it
    ``max(v, lo)`` is ``vselect_gt(lo, v, lo, v)`` and ``min(v, hi)`` is
    ``vselect_gt(v, hi, hi, v)``: NaN passes through, as in numba's scalar min/max."""
    if not (isinstance(a, VecType) and a == b == x == y):
        return None

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[2], args[3])

    return a(a, b, x, y), codegen

