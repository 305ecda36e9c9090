"""A sparse filter's conv-ReLU-pool and weight gradient in one pass over the map each, its few taps' sums
in vector registers (small LLVM intrinsics).

At the paper's 95 % pruning a filter keeps 1-3 of its 27 weights, and the conv goes tap by tap
(skip.NINE_TAP_MIN_DENSITY). As Numba loops every tap was a pass of its own: the forward stored the four
conv quarters after each tap and pool2_codes read them back; the weight gradient reloaded the codes and
the gradient and masked them again for each tap, after a pass of its own for the bias's sum. Here:

- taps_window_codes: one image's four conv quarters from the filter's taps, summed in registers, and
  pooled 2x2 with codes on the spot (_simd_window.WindowEmitter): nothing is stored but pooled values and codes.
- taps_grad_pass: one pass over a group's pooling codes and map gradients for up to TAPS_PER_PASS taps'
  weight-gradient sums, the gradient masked once per cell for all of them; the first pass also sums the
  bias's gradient and checks that the gradient is finite (pool2.unblocked_sum's sums, the same bits).

A tap is read through tap_offsets: where its pixel for each conv quarter starts in the flat quarter
planes (2, 2, C, plane_row), so that the passes index no (c, i, j) in their loops. The twins (*_loops,
*_python) are the definitions: the forward's sums are multiply-adds in the twin's order, as
conv_passes.conv_quarters takes them (the same bits as before); the gradient's are plain products and
adds (IEEE, no multiply-adds: the plain-Python twin gives the same bits). Under NUMBA_DISABLE_JIT=1 the
twins stand in for the intrinsics.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import config
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from minicnn.nn.fast._jit import serial, stage
from minicnn.nn.fast._simd import STEP, StepEmitter, check_float_vectors
from minicnn.nn.fast._simd_window import WindowEmitter, window_of

#: Taps per weight-gradient pass: their sums and the four masked gradients fit the vector registers, and
#: at 95 % pruning (1-3 taps a filter) one pass per filter.
TAPS_PER_PASS = 4


@serial
def tap_offsets(tap_count, taps, c_in, kh, kw, plane_row, wh):
    """(F, 4 * T) int64, T = the most taps of a filter: offsets[f, 4t + r*2 + e] = where filter f's tap t
    (taps[f, t] = c*KH*KW + i*KW + j, a SkipPlan's) reads its pixel for conv quarter (r, e) at position 0
    in the flat quarter planes (2, 2, C, plane_row): padded pixel (2yy + r + i, 2u + e + j) of channel c
    is quarter plane ((r + i) % 2, (e + j) % 2) at ((r + i) // 2)*WH + (e + j) // 2 + q (parity.py)."""
    n_filt = tap_count.shape[0]
    offsets = np.zeros((n_filt, 4 * max(1, tap_count.max() if n_filt else 1)), dtype=np.int64)
    for f in range(n_filt):
        for t in range(tap_count[f]):
            tap = taps[f, t]
            c, i, j = tap // (kh * kw), (tap // kw) % kh, tap % kw
            for r in range(2):
                for e in range(2):
                    quarter = ((r + i) & 1) * 2 + ((e + j) & 1)
                    offsets[f, 4 * t + r * 2 + e] = ((quarter * c_in + c) * plane_row + ((r + i) >> 1) * wh
                                                     + ((e + j) >> 1))
    return offsets


@serial
def tap_weights(w, tap_count, taps):
    """(F, T): weights[f, t] = w's weight at filter f's tap t (w: (F, C, KH, KW))."""
    n_filt = w.shape[0]
    flat = w.reshape(n_filt, w.size // max(1, n_filt))
    weights = np.zeros((n_filt, max(1, tap_count.max() if n_filt else 1)), dtype=w.dtype)
    for f in range(n_filt):
        for t in range(tap_count[f]):
            weights[f, t] = flat[f, taps[f, t]]
    return weights


@serial  # not reassociated: each sum in the order of the intrinsic's
def taps_window_codes_loops(planes, offsets, weights, count, b, f, at, pooled, code):
    """For q < pooled.size: the four conv quarters a[r*2 + e] = b[f] + the sum over t < count of weights[t]
    * planes[offsets[4t + r*2 + e] + at + q], then pooled[q] = relu of their maximum and code[q] = the
    first maximum's cell, or 4 where ReLU blocks it (_simd_window.window_of). planes: the flat quarter planes;
    at: the image's first position. Returns whether any window's sum is NaN (the caller then takes
    the exact path)."""
    nans = False
    for q in range(pooled.size):
        a0 = a1 = a2 = a3 = b[f]
        for t in range(count):
            wt, p = weights[t], at + q
            a0 += wt * planes[offsets[4 * t] + p]
            a1 += wt * planes[offsets[4 * t + 1] + p]
            a2 += wt * planes[offsets[4 * t + 2] + p]
            a3 += wt * planes[offsets[4 * t + 3] + p]
        pooled[q], code[q], nan = window_of(a0, a1, a2, a3)
        nans = nans or nan
    return nans


@intrinsic
def _taps_window_codes_vector(typingctx, planes, offsets, weights, count, b, f, at, pooled, code):
    """taps_window_codes_loops as STEP-lane vectors: for each step the four quarters' sums in registers
    over the taps (a loop inside the step), then the window step of _simd_window.window_codes; the last step's
    loads and stores masked to pooled.size. No bounds checks (the caller's)."""
    check_float_vectors("taps_window_codes", (planes, weights, b, pooled))
    if not (isinstance(offsets, types.Array) and offsets.dtype == types.int64 and isinstance(code, types.Array)
            and code.dtype == types.int8):
        raise TypingError("taps_window_codes needs int64 offsets and int8 codes")

    def codegen(context, builder, signature, args):
        em = StepEmitter(context, builder, signature, args, planes.dtype)
        d_planes, d_offsets, d_weights, count_, d_b, f_, at_, d_pooled, d_code = em.values
        n = context.make_array(pooled)(context, builder, args[7]).nitems
        windows = WindowEmitter(em, d_pooled, d_code)
        sums = [cgutils.alloca_once(builder, em.vec) for _ in range(4)]
        bias = em.splat(d_b, f_)

        def step(q, mask):
            for ptr in sums:
                builder.store(bias, ptr)
            with cgutils.for_range(builder, count_, intp=em.intp) as loop:
                weight = em.splat(d_weights, loop.index)
                for quarter, ptr in enumerate(sums):
                    offset = builder.load(builder.gep(d_offsets, [em.add(em.mul(loop.index, 4), quarter)]))
                    at = em.add(offset, at_, q)
                    pixel = em.load(d_planes, at) if mask is None else em.load_masked(d_planes, at, mask)
                    builder.store(em.fma(weight, pixel, builder.load(ptr)), ptr)
            windows.step([builder.load(ptr) for ptr in sums], q, mask)

        em.steps(n, step)
        return windows.any_nan()

    return types.boolean(planes, offsets, weights, count, b, f, at, pooled, code), codegen


def _taps_grad_pass_python(planes, offsets, t0, n_taps, with_db, code, grad, out):
    """One weight-gradient pass over positions q < round_up(grad.size, STEP) (those past grad.size count
    as gradient 0, code 4) for taps t0 .. t0 + n_taps - 1: with the gradient masked by the code, m_k =
    grad[q] where code[q] == k else 0, tap t's lane q % STEP gains (m_0 * x_0 + m_1 * x_1) + (m_2 * x_2 +
    m_3 * x_3), x_k = planes[offsets[4t + k] + q]; with ``with_db`` also the bias's lanes gain grad[q]
    where code[q] < 4 (else 0) and the check lanes grad[q] * 0 (pool2.unblocked_sum's sums). The lanes are
    then summed pairwise (lane l += lane l + width, width STEP/2 .. 1): out[2 + t] = tap t's sum, out[0]
    the bias's and out[1] the check (0, or NaN once a gradient is inf or NaN)."""
    zero = grad.dtype.type(0.0)
    lanes = np.zeros((n_taps + 2, STEP), dtype=grad.dtype)  # the taps', then the bias's and the check
    for q in range(-(-grad.size // STEP) * STEP):
        g, k = (grad[q], code[q]) if q < grad.size else (zero, 4)
        m = [g if k == cell else zero for cell in range(4)]
        for t in range(n_taps):
            x = [planes[offsets[4 * (t0 + t) + cell] + q] if q < grad.size else zero for cell in range(4)]
            lanes[t, q % STEP] += (m[0] * x[0] + m[1] * x[1]) + (m[2] * x[2] + m[3] * x[3])
        if with_db:
            lanes[n_taps, q % STEP] += g if k < 4 else zero
            lanes[n_taps + 1, q % STEP] += g * zero
    width = STEP // 2
    while width:
        lanes[:, :width] += lanes[:, width : 2 * width]
        width //= 2
    for t in range(n_taps):
        out[2 + t0 + t] = lanes[t, 0]
    if with_db:
        out[0], out[1] = lanes[n_taps, 0], lanes[n_taps + 1, 0]


@intrinsic
def _taps_grad_pass_vector(typingctx, planes, offsets, t0, n_taps, with_db, code, grad, out):
    """_taps_grad_pass_python as one loop of STEP-lane vector operations (IEEE: no fast-math flags), the
    lane sums in registers, the last step's loads masked to grad.size; n_taps (up to TAPS_PER_PASS) and
    with_db must be literals. No bounds checks (the caller's)."""
    check_float_vectors("taps_grad_pass", (planes, grad, out))
    if not (isinstance(offsets, types.Array) and offsets.dtype == types.int64 and isinstance(code, types.Array)
            and code.dtype == types.int8):
        raise TypingError("taps_grad_pass needs int64 offsets and int8 codes")
    if not (isinstance(n_taps, types.IntegerLiteral) and 0 <= n_taps.literal_value <= TAPS_PER_PASS
            and isinstance(with_db, types.BooleanLiteral)):
        raise TypingError(f"taps_grad_pass's n_taps must be a literal 0..{TAPS_PER_PASS}, with_db a literal bool")
    taps_here, db_here = n_taps.literal_value, with_db.literal_value

    def codegen(context, builder, signature, args):
        em = StepEmitter(context, builder, signature, args, grad.dtype)
        d_planes, d_offsets, t0_, _, _, d_code, d_grad, d_out = em.values
        n = context.make_array(grad)(context, builder, args[6]).nitems
        codes = ir.VectorType(ir.IntType(8), STEP)
        zeros = ir.Constant(em.vec, [0.0] * STEP)
        load_codes = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(codes, [codes.as_pointer(), ir.IntType(32), em.mask_type, codes]),
            f"llvm.masked.load.v{STEP}i8.p0")
        sums = [cgutils.alloca_once_value(builder, zeros) for _ in range(taps_here + (2 if db_here else 0))]
        # each tap's four offsets, read once before the loop
        offsets_ = [[builder.load(builder.gep(d_offsets, [em.add(em.mul(em.add(t0_, t), 4), cell)]))
                     for cell in range(4)] for t in range(taps_here)]

        def step(q, mask):
            code_ptr = builder.bitcast(builder.gep(d_code, [q], inbounds=True), codes.as_pointer())
            if mask is None:
                g, k = em.load(d_grad, q), builder.load(code_ptr, align=1)
            else:
                g = em.load_masked(d_grad, q, mask)
                k = builder.call(load_codes, [code_ptr, ir.Constant(ir.IntType(32), 1), mask,
                                              ir.Constant(codes, [4] * STEP)])
            m = [builder.select(builder.icmp_signed("==", k, ir.Constant(codes, [cell] * STEP)), g, zeros)
                 for cell in range(4)]
            for t in range(taps_here):
                x = [em.load(d_planes, em.add(offsets_[t][cell], q)) if mask is None
                     else em.load_masked(d_planes, em.add(offsets_[t][cell], q), mask) for cell in range(4)]
                pair0 = builder.fadd(builder.fmul(m[0], x[0]), builder.fmul(m[1], x[1]))
                pair1 = builder.fadd(builder.fmul(m[2], x[2]), builder.fmul(m[3], x[3]))
                builder.store(builder.fadd(builder.load(sums[t]), builder.fadd(pair0, pair1)), sums[t])
            if db_here:
                kept = builder.select(builder.icmp_signed("<", k, ir.Constant(codes, [4] * STEP)), g, zeros)
                builder.store(builder.fadd(builder.load(sums[taps_here]), kept), sums[taps_here])
                builder.store(builder.fadd(builder.load(sums[taps_here + 1]), builder.fmul(g, zeros)),
                              sums[taps_here + 1])

        em.steps(n, step)
        places = [em.add(t0_, 2 + t) for t in range(taps_here)] + ([em.const(0), em.const(1)] if db_here else [])
        for ptr, place in zip(sums, places):
            builder.store(em.lane_total(builder.load(ptr)), builder.gep(d_out, [place]))
        return context.get_dummy_value()

    return types.void(planes, offsets, t0, n_taps, with_db, code, grad, out), codegen


taps_window_codes = taps_window_codes_loops if config.DISABLE_JIT else _taps_window_codes_vector
taps_grad_pass = _taps_grad_pass_python if config.DISABLE_JIT else _taps_grad_pass_vector


@stage  # inlined: the passes' taps must be literals
def taps_weight_grad(planes, offsets, count, code, grad, out):
    """Filter f's weight-gradient sums over a group (flat planes, offsets: its row of tap_offsets, count:
    its taps, code and grad: its pooling codes and pooled-map gradients, side by side in the group's
    layout): out[2 + t] = tap t's sum, out[0] = the bias's (grad where code < 4), out[1] = 0 if the
    gradient is finite (else NaN), in passes of up to TAPS_PER_PASS taps (_taps_grad_pass_python)."""
    first = min(count, TAPS_PER_PASS)
    if first == 0:
        taps_grad_pass(planes, offsets, 0, 0, True, code, grad, out)
    elif first == 1:
        taps_grad_pass(planes, offsets, 0, 1, True, code, grad, out)
    elif first == 2:
        taps_grad_pass(planes, offsets, 0, 2, True, code, grad, out)
    elif first == 3:
        taps_grad_pass(planes, offsets, 0, 3, True, code, grad, out)
    else:
        taps_grad_pass(planes, offsets, 0, 4, True, code, grad, out)
    for t in range(first, count, TAPS_PER_PASS):
        more = min(count - t, TAPS_PER_PASS)
        if more == 1:
            taps_grad_pass(planes, offsets, t, 1, False, code, grad, out)
        elif more == 2:
            taps_grad_pass(planes, offsets, t, 2, False, code, grad, out)
        elif more == 3:
            taps_grad_pass(planes, offsets, t, 3, False, code, grad, out)
        else:
            taps_grad_pass(planes, offsets, t, 4, False, code, grad, out)
