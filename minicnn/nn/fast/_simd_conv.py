"""The 3x3 conv's 9-tap passes with their sums in vector registers, as explicit vector code (small LLVM
intrinsics).

conv_passes.conv_quarters runs one filter at a time and one input channel per pass over the map: each
step loads 16 plane values and the four conv quarters' running sums and stores the sums back, for 36
multiply-adds. With many channels (Conv-2's 64) those loads and stores of the sums, not the arithmetic,
bound it. Here the loops go the other way: for each STEP positions, BLOCK outputs keep their 4 * BLOCK
sums in vector registers while the loop over the sources runs inside, and each of a source's 16 vector
loads feeds BLOCK * 36 / 16 multiply-adds. LLVM's loop vectoriser only vectorises innermost loops, so
this loop order cannot be written as Numba loops; it is written here as vector operations.

- conv_block: the conv (conv_passes.conv_quarters) of BLOCK filters over every input channel (split.py's
  layers, pair.py, and convnet.py's whole paper model: there 1.18-1.2x its inference).
- input_grad_block: the input gradient (conv_passes.input_grad_quarters) of BLOCK input channels over
  every filter: the same pass transposed, the filters' split conv-map gradients as the sources.

The weight gradient stays conv_passes.weight_grad_codes / weight_grad_quarters: the same pass with its 9
sums in registers (each pixel loaded once for its four products; two sums per tap; two filters sharing
the pixels) ran no faster than LLVM's loop of it.

They run STEP positions at a time; the last step's stores are masked to the positions asked for, and
its loads read up to STEP - 1 entries past the last position's (the caller's buffers must allow it).
Their plain twins (the *_loops functions) are the definitions, and each sum is taken in the twins' order
as multiply-adds: the same bits in the intrinsics and the twins. Under NUMBA_DISABLE_JIT=1 the twins
stand in for them.
"""

from __future__ import annotations

from llvmlite import ir
from numba import config
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from minicnn.nn.fast._jit import serial
from minicnn.nn.fast._simd import STEP, StepEmitter, check_float_vectors

#: Outputs per pass: their 4 * BLOCK sums and a source's 16 vectors fit the 32 vector registers (Conv-2's
#: 64x64 layer's forward, one thread: 2 filters 181, 4 filters 216, 8 filters 174 GFLOP/s).
BLOCK = 4


@serial  # not reassociated: each sum in the order of the intrinsic's
def conv_block_loops(planes, plane_row, c_in, w, b, f0, block, conv, span, wh):
    """conv[(k*4 + r*2 + e)*span + q] = b[f] + sum over c, i, j of w[f, c, i, j] * padded pixel
    (2yy + r + i, 2u + e + j) of channel c, f = f0 + k, for k < block and q < span. All 1-D: planes
    (2, 2, C, plane_row), w (F, C, 3, 3) and conv (block, 2, 2, span) flattened; the pixel is quarter
    plane ((r + i) % 2, (e + j) % 2) at q + ((r + i) // 2)*WH + (e + j) // 2 (parity.py). The plain
    definition of conv_block."""
    quarter = c_in * plane_row
    for k in range(block):
        f = f0 + k
        for r in range(2):
            for e in range(2):
                for q in range(span):
                    acc = b[f]
                    for c in range(c_in):
                        for i in range(3):
                            for j in range(3):
                                at = (((r + i) & 1) * 2 + ((e + j) & 1)) * quarter + c * plane_row + q
                                pixel = planes[at + ((r + i) >> 1) * wh + ((e + j) >> 1)]
                                acc += w[(f * c_in + c) * 9 + i * 3 + j] * pixel
                    conv[(k * 4 + r * 2 + e) * span + q] = acc


@serial  # not reassociated: each sum in the order of the intrinsic's
def input_grad_block_loops(dconv, row, n_filt, w, c0, block, dplanes, plane_row, c_in, wh, lead, stop):
    """dplanes[(R*2 + C)*c_in*plane_row + c*plane_row + p] = sum over f, i, j, r, e with (r + i) % 2 = R and
    (e + j) % 2 = C of w[f, c, i, j] * dconv[f, r, e, lead + p - ((r + i) // 2)*WH - (e + j) // 2], for
    c = c0 + k, k < block and p < stop: the transposed conv of the filters' split conv-map gradients.
    All 1-D: dconv (F, 2, 2, row) (lead zeros on both sides of each map), w (F, C, 3, 3), dplanes
    (2, 2, C, plane_row) flattened. The plain definition of input_grad_block."""
    for k in range(block):
        c = c0 + k
        for big_r in range(2):
            for big_c in range(2):
                for p in range(stop):
                    acc = dplanes.dtype.type(0.0)
                    for f in range(n_filt):
                        for i in range(3):
                            for j in range(3):
                                for r in range(2):
                                    for e in range(2):
                                        if ((r + i) & 1) == big_r and ((e + j) & 1) == big_c:
                                            at = (f * 4 + r * 2 + e) * row + lead + p
                                            grad = dconv[at - ((r + i) >> 1) * wh - ((e + j) >> 1)]
                                            acc += w[(f * c_in + c) * 9 + i * 3 + j] * grad
                    dplanes[(big_r * 2 + big_c) * c_in * plane_row + c * plane_row + p] = acc


def _check_arrays(name, arrays, block):
    check_float_vectors(name, arrays)
    if not isinstance(block, types.IntegerLiteral):
        raise TypingError(f"{name}'s block must be a literal integer")


class _ConvEmitter(StepEmitter):
    """StepEmitter with the blocked passes' loop."""

    def blocked_loop(self, stop, n_block, n_sources, first_sums, source_vectors, weight_at, terms, store_sums):
        """For q in steps of STEP below stop: sums[k][quarter] = first_sums(k, q), then for each source s,
        its 16 vectors source_vectors(s, q) (a dict) and for each k, tap and conv quarter (terms: (tap,
        out quarter, source key)), sums[k][out quarter] = fma(w at weight_at(k, s, tap), the source
        vector, sums[k][out quarter]); then store_sums(k, quarter, q, value, mask of q + lane < stop)."""
        builder = self.builder
        sums = [[cgutils.alloca_once(builder, self.vec) for _ in range(4)] for _ in range(n_block)]
        with cgutils.for_range_slice(builder, self.const(0), stop, self.const(STEP), self.intp) as (q, _):
            for k in range(n_block):
                for quarter, ptr in enumerate(sums[k]):
                    builder.store(first_sums(k, quarter, q), ptr)
            with cgutils.for_range(builder, n_sources, intp=self.intp) as loop:
                vectors = source_vectors(loop.index, q)
                for k in range(n_block):
                    acc = [builder.load(ptr) for ptr in sums[k]]
                    weights = {}
                    for tap, out, key in terms:
                        if tap not in weights:
                            weights[tap] = weight_at(k, loop.index, tap)
                        acc[out] = self.fma(weights[tap], vectors[key], acc[out])
                    for ptr, value in zip(sums[k], acc):
                        builder.store(value, ptr)
            mask = self.lanes_below(q, stop)
            for k in range(n_block):
                for quarter, ptr in enumerate(sums[k]):
                    store_sums(k, quarter, q, builder.load(ptr), mask)


# the 36 multiply-adds of a source, in the twins' order: (tap i*3 + j, conv or plane quarter, source key)
_CONV_TERMS = [(i * 3 + j, r * 2 + e, (r + i, e + j)) for i in range(3) for j in range(3)
               for r in range(2) for e in range(2)]
_INPUT_GRAD_TERMS = [(i * 3 + j, ((r + i) & 1) * 2 + ((e + j) & 1), (r, e, (r + i) >> 1, (e + j) >> 1))
                     for i in range(3) for j in range(3) for r in range(2) for e in range(2)]


@intrinsic
def _conv_block_vector(typingctx, planes, plane_row, c_in, w, b, f0, block, conv, span, wh):
    """conv_block_loops as vector operations; block must be a literal integer. No bounds checks (the
    caller's): the planes are read up to round_up(span, STEP) + WH entries into a channel's row."""
    _check_arrays("conv_block", (planes, w, b, conv), block)

    def codegen(context, builder, signature, args):
        em = _ConvEmitter(context, builder, signature, args, planes.dtype)
        d_planes, row, c_in_, d_w, d_b, f0_, _, d_conv, span_, wh_ = em.values
        quarter_len = em.mul(c_in_, row)

        def pixels(c, q):  # (R, C) -> the padded pixels (2yy + R, 2u + C) of channel c, R, C < 4
            at = em.add(em.mul(c, row), q)
            return {(rr, cc): em.load(d_planes, em.add(em.mul(quarter_len, (rr & 1) * 2 + (cc & 1)), at,
                                                       em.mul(wh_, rr >> 1), cc >> 1))
                    for rr in range(4) for cc in range(4)}

        def bias(k, quarter, q):  # the sums start at filter f0 + k's bias
            return em.splat(d_b, em.add(f0_, k))

        def weight(k, c, tap):  # w[f0 + k, c, tap] in every lane
            return em.splat(d_w, em.add(em.mul(em.add(em.mul(em.add(f0_, k), c_in_), c), 9), tap))

        def store(k, quarter, q, value, mask):  # conv[k, quarter, q : q + STEP]
            em.store(value, d_conv, em.add(em.mul(span_, k * 4 + quarter), q), mask)

        em.blocked_loop(span_, block.literal_value, c_in_, bias, pixels, weight, _CONV_TERMS, store)
        return context.get_dummy_value()

    return types.void(planes, plane_row, c_in, w, b, f0, block, conv, span, wh), codegen


@intrinsic
def _input_grad_block_vector(typingctx, dconv, row, n_filt, w, c0, block, dplanes, plane_row, c_in, wh, lead,
                             stop):
    """input_grad_block_loops as vector operations; block must be a literal integer. No bounds checks
    (the caller's): dconv is read up to lead + round_up(stop, STEP) entries into the last filter's maps."""
    _check_arrays("input_grad_block", (dconv, w, dplanes), block)

    def codegen(context, builder, signature, args):
        em = _ConvEmitter(context, builder, signature, args, dconv.dtype)
        d_dconv, row_, _, d_w, c0_, _, d_dplanes, plane_row_, c_in_, wh_, lead_, stop_ = em.values
        zeros = ir.Constant(em.vec, [0.0] * STEP)

        def gradients(f, p):  # (r, e, dy, dx) -> conv quarter (r, e)'s gradient dy rows and dx columns back
            out = {}
            for r in range(2):
                for e in range(2):
                    at = em.add(em.mul(em.add(em.mul(f, 4), r * 2 + e), row_), lead_, p)
                    for dy in range(2):
                        for dx in range(2):
                            out[r, e, dy, dx] = em.load(d_dconv, builder.sub(at, em.add(em.mul(wh_, dy), dx)))
            return out

        def zero(k, quarter, p):  # the sums start at 0
            return zeros

        def weight(k, f, tap):  # w[f, c0 + k, tap] in every lane
            return em.splat(d_w, em.add(em.mul(em.add(em.mul(f, c_in_), c0_, k), 9), tap))

        def store(k, quarter, p, value, mask):  # dplanes[quarter, c0 + k, p : p + STEP]
            plane = em.add(em.mul(em.mul(c_in_, plane_row_), quarter), em.mul(em.add(c0_, k), plane_row_), p)
            em.store(value, d_dplanes, plane, mask)

        em.blocked_loop(stop_, block.literal_value, em.values[2], zero, gradients, weight, _INPUT_GRAD_TERMS, store)
        return context.get_dummy_value()

    return types.void(dconv, row, n_filt, w, c0, block, dplanes, plane_row, c_in, wh, lead, stop), codegen


conv_block = conv_block_loops if config.DISABLE_JIT else _conv_block_vector
input_grad_block = input_grad_block_loops if config.DISABLE_JIT else _input_grad_block_vector
