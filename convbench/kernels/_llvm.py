"""Numba intrinsics that the generated kernels need and Numba does not offer.

- `wide_vectors()` marks the calling function with LLVM's "prefer-vector-width"="512". LLVM tunes
  several Intel AVX-512 CPUs (Skylake-SP through Emerald Rapids) to vectorise with 256-bit
  registers only; the attribute lets the loop vectoriser use the full 512 bits in these kernels
  alone, without a process-wide NUMBA_CPU_FEATURES that would change every other kernel. On a CPU
  without AVX-512 it changes nothing (the widest legal vector is what it gets).
- `stack_tile(like, n)` allocates n elements of like's dtype on the stack and returns a pointer;
  wrapped in `numba.carray` it holds a micro-kernel's accumulators. LLVM promotes such an array
  to registers when every index is a constant after unrolling, which a heap array (np.zeros in
  the kernel) never is.
- `copy_elems(dst, di, src, si, n)`: an unchecked memcpy of n elements (see its docstring).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: The LLVM function attribute that `wide_vectors` adds.
WIDE_ATTRIBUTE = '"prefer-vector-width"="512"'


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
    """dst[di:di + n] = src[si:si + n] as one memcpy, unchecked. With n a literal LLVM expands
    it into vector moves; a loop of element copies would be unrolled into scalar moves instead
    (Numba runs LLVM without its SLP vectoriser)."""
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
        cgutils.raw_memcpy(builder, dptr, sptr, count, context.get_abi_sizeof(
            context.get_value_type(sig.args[0].dtype)))
        return context.get_dummy_value()
    return types.none(dst, di, src, si, n), codegen


@intrinsic
def prefetch(typingctx, arr, index):
    """Asks for the cache line holding arr[index] to be brought into L2 (a hint: no bounds
    check, and an address past the array does no harm)."""
    if not isinstance(arr, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = builder.bitcast(builder.gep(a.data, [idx]), cgutils.voidptr_t)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [cgutils.voidptr_t], fnty)
        # read, locality 2 (prefetcht1: into L2), data cache
        builder.call(fn, [ptr, i32(0), i32(2), i32(1)])
        return context.get_dummy_value()
    return types.none(arr, index), codegen
