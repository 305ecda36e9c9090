"""Explicit vector code, for the one copy that LLVM's loop vectoriser does badly.

``split_step`` de-interleaves 2*STEP values into their even and their odd ones: the quarter-plane
layout of minicnn/nn/fast/parity.py stores every image row that way. As loops (``even[u] = src[2u]``)
LLVM ran the 16 pairs of a 32-pixel row in its narrow remainder loop; here they are two vector loads,
two shuffles and two stores (``vpermt2ps`` with AVX-512): the image unpacking ran 1.3-2x faster.

Call it straight from the kernel's loop (through a helper in between, Numba counts references on every
call: 3-7x slower). Under NUMBA_DISABLE_JIT=1 the plain loop below stands in for it.
"""

from __future__ import annotations

from llvmlite import ir
from numba import config
from numba.core import types
from numba.core.errors import TypingError
from numba.extending import intrinsic

#: Pairs per vector step: 2*STEP values in, STEP out to each side (512 bits of float32).
STEP = 16


def _split_step_python(src, s, even, e, odd, o):
    """even[e + u] = src[s + 2u] and odd[o + u] = src[s + 2u + 1] for u < STEP (1-D arrays, one dtype)."""
    for u in range(STEP):
        even[e + u] = src[s + 2 * u]
        odd[o + u] = src[s + 2 * u + 1]


@intrinsic
def _split_step_vector(typingctx, src, s, even, e, odd, o):
    """_split_step_python as one vector load of 2*STEP values and two shuffles; no bounds checks (the
    caller's, as for any Numba indexing)."""
    if not all(isinstance(a, types.Array) and a.ndim == 1 for a in (src, even, odd)):
        raise TypingError("split_step takes 1-D arrays")
    if not src.dtype == even.dtype == odd.dtype:
        raise TypingError("split_step needs one dtype for src, even and odd")

    def codegen(context, builder, signature, args):
        elem = context.get_data_type(src.dtype)
        align = context.get_abi_sizeof(elem)
        wide, half = ir.VectorType(elem, 2 * STEP), ir.VectorType(elem, STEP)

        def at(array_type, array, index_type, index, vector):  # &array[index] as a vector pointer
            data = context.make_array(array_type)(context, builder, array).data
            i = context.cast(builder, index, index_type, types.intp)
            return builder.bitcast(builder.gep(data, [i], inbounds=True), vector.as_pointer())

        src_v, s_v, even_v, e_v, odd_v, o_v = args
        _, s_t, _, e_t, _, o_t = signature.args
        values = builder.load(at(src, src_v, s_t, s_v, wide), align=align, typ=wide)
        lanes = ir.VectorType(ir.IntType(32), STEP)
        unused = ir.Constant(wide, ir.Undefined)
        evens = builder.shuffle_vector(values, unused, ir.Constant(lanes, [2 * u for u in range(STEP)]))
        odds = builder.shuffle_vector(values, unused, ir.Constant(lanes, [2 * u + 1 for u in range(STEP)]))
        builder.store(evens, at(even, even_v, e_t, e_v, half), align=align)
        builder.store(odds, at(odd, odd_v, o_t, o_v, half), align=align)
        return context.get_dummy_value()

    return types.void(src, s, even, e, odd, o), codegen


split_step = _split_step_python if config.DISABLE_JIT else _split_step_vector
