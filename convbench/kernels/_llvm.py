"""Numba intrinsics for the generated kernels: explicit SIMD vectors, and what they need.

Numba has no vector type; its loops are vectorised (or not) by LLVM's heuristics, which keep a
micro-kernel's accumulators in registers on some CPU tunings and tile shapes but unroll, spill
or vectorise the wrong loop on others (AVX2 tiles, float64). These intrinsics write the vectors
out instead, so the register tile is what the source says on every x86 target:

- `Vec(dtype, lanes)`: a Numba type lowered to an LLVM vector `<lanes x dtype>` held in registers.
- `vzero(like, lanes)`, `vsplat(x, lanes)`, `vbroadcast(arr, i, lanes)` (arr[i] in every lane),
  `vload(arr, i, lanes)` (arr[i:i + lanes]),
  `vstore(arr, i, v)`, `vfma(a, b, c)` (a*b + c: one FMA where the CPU has them, else a multiply
  and an add), `vadd(a, b)`. Loads and stores are unchecked: the callers index within their
  arrays.
- `wide_vectors()` marks the calling function with LLVM's "prefer-vector-width"="512". LLVM tunes
  several Intel AVX-512 CPUs (Skylake-SP through Emerald Rapids) for 256-bit vectors and then
  splits every 512-bit operation in two; the attribute gives these kernels alone the full width,
  where a process-wide NUMBA_CPU_FEATURES would change every other kernel too. Without AVX-512 it
  changes nothing.
- `stack_tile(like, n)`: n elements of like's dtype on the stack (a pointer, for numba.carray).
- `copy_elems(dst, di, src, si, n)`: an unchecked memcpy of n elements; with n a literal LLVM
  expands it into vector moves (a loop of element copies would be unrolled into scalar moves:
  Numba runs LLVM without its SLP vectoriser).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

#: The LLVM function attribute that `wide_vectors` adds.
WIDE_ATTRIBUTE = '"prefer-vector-width"="512"'


class Vec(types.Type):
    """A SIMD vector of `lanes` elements of `dtype` (a Numba scalar type)."""

    def __init__(self, dtype, lanes: int):
        self.dtype = dtype
        self.lanes = lanes
        super().__init__(name=f"Vec({dtype}, {lanes})")

    @property
    def key(self):
        return self.dtype, self.lanes


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, fe_type.lanes))


def _lanes(lanes):
    return lanes.literal_value if isinstance(lanes, types.IntegerLiteral) else None


def _element_ptr(context, builder, aty, arr, ity, idx, vty):
    """Pointer to arr[idx], as a pointer to vty's LLVM type."""
    data = context.make_array(aty)(context, builder, arr).data
    ptr = builder.gep(data, [context.cast(builder, idx, ity, types.intp)])
    return builder.bitcast(ptr, context.get_value_type(vty).as_pointer())


def _align(context, dtype) -> int:
    return context.get_abi_sizeof(context.get_value_type(dtype))


@intrinsic
def vzero(typingctx, like, lanes):
    if not isinstance(like, types.Array) or _lanes(lanes) is None:
        return None
    vt = Vec(like.dtype, _lanes(lanes))

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)
    return vt(like, lanes), codegen


@intrinsic
def vsplat(typingctx, x, lanes):
    if not isinstance(x, types.Float) or _lanes(lanes) is None:
        return None
    vt = Vec(x, _lanes(lanes))

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(vt)
        undef = ir.Constant(ty, ir.Undefined)
        one = builder.insert_element(undef, args[0], ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(one, undef, mask)
    return vt(x, lanes), codegen


@intrinsic
def vbroadcast(typingctx, arr, index, lanes):
    if not isinstance(arr, types.Array) or not isinstance(index, types.Integer) \
            or _lanes(lanes) is None:
        return None
    vt = Vec(arr.dtype, _lanes(lanes))

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1],
                           arr.dtype)
        x = builder.load(ptr, align=_align(context, arr.dtype))
        ty = context.get_value_type(vt)
        undef = ir.Constant(ty, ir.Undefined)
        one = builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(one, undef, mask)
    return vt(arr, index, lanes), codegen


@intrinsic
def vload(typingctx, arr, index, lanes):
    if not isinstance(arr, types.Array) or not isinstance(index, types.Integer) \
            or _lanes(lanes) is None:
        return None
    vt = Vec(arr.dtype, _lanes(lanes))

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1], vt)
        return builder.load(ptr, align=_align(context, vt.dtype))
    return vt(arr, index, lanes), codegen


@intrinsic
def vstore(typingctx, arr, index, v):
    if not isinstance(arr, types.Array) or not isinstance(index, types.Integer) \
            or not isinstance(v, Vec) or v.dtype != arr.dtype:
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1], v)
        builder.store(args[2], ptr, align=_align(context, v.dtype))
        return context.get_dummy_value()
    return types.none(arr, index, v), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(a)
        bits = 8 * _align(context, a.dtype)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty, ty, ty]), f"llvm.fmuladd.v{a.lanes}f{bits}")
        return builder.call(fn, args)
    return a(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return a(a, b), codegen


@intrinsic
def wide_vectors(typingctx):
    def codegen(context, builder, sig, args):
        # llvmlite's FunctionAttributes only accepts a fixed list of names; a string attribute
        # is written out verbatim, so add it to the underlying set.
        set.add(builder.function.attributes, WIDE_ATTRIBUTE)
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def stack_tile(typingctx, like, n):
    if not isinstance(n, types.IntegerLiteral) or not isinstance(like, types.Array):
        return None
    size = n.literal_value
    dtype = like.dtype

    def codegen(context, builder, sig, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype), size=size)
    return types.CPointer(dtype)(like, n), codegen


@intrinsic
def copy_elems(typingctx, dst, di, src, si, n):
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)
            and dst.dtype == src.dtype and isinstance(di, types.Integer)
            and isinstance(si, types.Integer) and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        d = context.make_array(sig.args[0])(context, builder, args[0])
        s = context.make_array(sig.args[2])(context, builder, args[2])
        count = context.cast(builder, args[4], sig.args[4], types.intp)
        dptr = builder.gep(d.data, [context.cast(builder, args[1], sig.args[1], types.intp)])
        sptr = builder.gep(s.data, [context.cast(builder, args[3], sig.args[3], types.intp)])
        cgutils.raw_memcpy(builder, dptr, sptr, count, _align(context, sig.args[0].dtype))
        return context.get_dummy_value()
    return types.none(dst, di, src, si, n), codegen
