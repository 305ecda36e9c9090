"""2x2 max-pooling with its pooling codes as explicit vector code (a small LLVM intrinsic), and the window
step it shares with _simd_taps.py.

``window_codes`` pools a split conv map 2x2 and keeps each window's pooling code (pool2.pool2_codes): the
running maximum and its cell as selects on three compares, the NaN test as a compare or-ed into a mask.
As Numba's loop LLVM ran it in two 256-bit halves with the NaN flag widened to 64-bit lanes, about 40
vector instructions per 16 windows; here about 20 (the paper model's pooling 1.2x faster, timed alone).
``WindowEmitter`` is its step over four cells' vectors, ``window_of`` the same for one window, the
definition both twins use. Under NUMBA_DISABLE_JIT=1 the plain loop stands in for the intrinsic.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import config
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from minicnn.nn.fast._jit import stage
from minicnn.nn.fast._simd import STEP, StepEmitter


class WindowEmitter:
    """The 2x2 window step of window_codes (and _simd_taps.taps_window_codes) over an intrinsic's StepEmitter:
    from the four cells' vectors, pooled[q : q + STEP] = relu of the window's maximum and code[q : q + STEP]
    = its first maximum's cell (0-3) or 4 where ReLU blocks it (masked stores in a masked step), and
    whether any window's sum was NaN."""

    def __init__(self, em, d_pooled, d_code):
        self.em, self.d_pooled, self.d_code = em, d_pooled, d_code
        self.codes = ir.VectorType(ir.IntType(8), STEP)
        self.store_codes = cgutils.get_or_insert_function(
            em.builder.module, ir.FunctionType(ir.VoidType(), [self.codes, self.codes.as_pointer(), ir.IntType(32),
                                                               em.mask_type]),
            f"llvm.masked.store.v{STEP}i8.p0")
        # lanes with a NaN window sum
        self.seen = cgutils.alloca_once_value(em.builder, ir.Constant(em.mask_type, [0] * STEP))

    def step(self, a, q, mask):
        """The windows q .. q + STEP - 1 of cells a (four vectors), stored where mask (None: all)."""
        em, builder, codes = self.em, self.em.builder, self.codes
        zero = ir.Constant(em.vec, [0.0] * STEP)
        best, k = a[0], ir.Constant(codes, [0] * STEP)
        for i in (1, 2, 3):
            better = builder.fcmp_ordered(">", a[i], best)
            best = builder.select(better, a[i], best)
            k = builder.select(better, ir.Constant(codes, [i] * STEP), k)
        window_sum = builder.fadd(builder.fadd(a[0], a[1]), builder.fadd(a[2], a[3]))
        seen = builder.or_(builder.load(self.seen), builder.fcmp_unordered("!=", window_sum, window_sum))
        builder.store(seen, self.seen)
        pooled_v = builder.select(builder.fcmp_ordered(">", zero, best), zero, best)
        code_v = builder.select(builder.fcmp_ordered(">", best, zero), k, ir.Constant(codes, [4] * STEP))
        code_ptr = builder.bitcast(builder.gep(self.d_code, [q], inbounds=True), codes.as_pointer())
        if mask is None:
            builder.store(pooled_v, em.vector_ptr(self.d_pooled, q), align=em.align)
            builder.store(code_v, code_ptr, align=1)
        else:
            em.store(pooled_v, self.d_pooled, q, mask)
            builder.call(self.store_codes, [code_v, code_ptr, ir.Constant(ir.IntType(32), 1), mask])

    def any_nan(self):
        """Whether a window's sum was NaN in any step so far (an i1)."""
        flags = self.em.builder.bitcast(self.em.builder.load(self.seen), ir.IntType(STEP))
        return self.em.builder.icmp_unsigned("!=", flags, ir.Constant(ir.IntType(STEP), 0))


@stage
def window_of(a0, a1, a2, a3):
    """One 2x2 window of cells a0..a3: (relu of its maximum, the first maximum's cell (0-3) or 4 where
    ReLU blocks it, whether the window's sum is NaN: a NaN in it, or inf and -inf)."""
    best, k = a0, np.int8(0)  # the first maximum wins (strict >)
    if a1 > best:
        best, k = a1, np.int8(1)
    if a2 > best:
        best, k = a2, np.int8(2)
    if a3 > best:
        best, k = a3, np.int8(3)
    window_sum = (a0 + a1) + (a2 + a3)
    relu = best if not best < 0.0 else np.float32(0.0)  # as max(best, 0): -0.0 kept
    return relu, (k if best > 0.0 else np.int8(4)), window_sum != window_sum


def _window_codes_python(conv, at, pooled, code):
    """The 2x2 max-pool of a split conv map with its pooling codes (pool2.pool2_codes without its NaN
    repair): conv (2, 2, L) is the map's four quarter rows, each read from at; for each
    window q < pooled.size, pooled[q] = relu of its maximum, code[q] = the first maximum's cell (0-3) or
    4 where ReLU blocks it (window_of). Returns whether any window's sum is NaN (then the caller repairs
    those)."""
    nans = False
    for q in range(pooled.size):
        pooled[q], code[q], nan = window_of(conv[0, 0, at + q], conv[0, 1, at + q], conv[1, 0, at + q],
                                            conv[1, 1, at + q])
        nans = nans or nan
    return nans


@intrinsic
def _window_codes_vector(typingctx, conv, at, pooled, code):
    """_window_codes_python as STEP-lane vectors: the four cells loaded, the running maximum and its cell
    as selects on three compares, the NaN test as one more compare or-ed into a mask; the last step
    masked to pooled.size. As Numba's loop LLVM ran it at half width, with the NaN flag widened to 64-bit
    lanes (about 40 vector instructions per 16 windows, here about 20). The arrays must be C-contiguous
    (their layouts are checked as the call compiles): the map is read by its data pointer, not reshaped
    (a reshape is a call into Numba's runtime, per map)."""
    arrays = (conv, pooled, code)
    if not (all(isinstance(a, types.Array) and a.layout == "C" for a in arrays) and conv.ndim == 3
            and pooled.ndim == code.ndim == 1):
        raise TypingError("window_codes takes a C-contiguous (2, 2, L) map and 1-D pooled values and codes")
    if conv.dtype != pooled.dtype or not isinstance(conv.dtype, types.Float) or code.dtype != types.int8:
        raise TypingError("window_codes needs conv and pooled of one float dtype and int8 codes")

    def codegen(context, builder, signature, args):
        em = StepEmitter(context, builder, signature, args, conv.dtype)
        d_conv, at_, d_pooled, d_code = em.values
        quarter_ = cgutils.unpack_tuple(builder, context.make_array(conv)(context, builder, args[0]).shape, 3)[2]
        n = context.make_array(pooled)(context, builder, args[2]).nitems
        windows = WindowEmitter(em, d_pooled, d_code)

        def step(q, mask):
            def cell(i):
                at = em.add(em.mul(quarter_, i), at_, q)
                return em.load(d_conv, at) if mask is None else em.load_masked(d_conv, at, mask)

            windows.step([cell(i) for i in range(4)], q, mask)

        em.steps(n, step)
        return windows.any_nan()

    return types.boolean(conv, at, pooled, code), codegen


window_codes = _window_codes_python if config.DISABLE_JIT else _window_codes_vector
