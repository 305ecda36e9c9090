"""winograd.py's steps as explicit vector code (small LLVM intrinsics), each beside its plain twin.

- tiles_step: B^T d B of STEP 4x4 tiles at once, a tile per lane: 16 vector loads, 32 adds, 16 stores.
- matmul_panel: ROWS rows by VECTORS * STEP columns of a @ b, all ROWS * VECTORS sums in vector
  registers while the loop over the shared dimension runs inside: each step loads VECTORS vectors of
  b's row k and ROWS entries of a's column k (each splat to every lane) for ROWS * VECTORS
  multiply-adds, so the arithmetic, not the loads, bounds it (8 x 3: 11 loads per 24 multiply-adds, 24
  of the 32 vector registers).
- grad_tiles_step: A dY A^T of STEP 2x2 gradient blocks (the weight gradient's): 4 loads, 16 stores.
- untile_step: A^T M A (+ a bias) of STEP tiles' 16 products, stored as the 2x2 blocks' four quarters.

Written as Numba loops, the tile steps ran as scalar code (LLVM vectorises a loop of 16 load and 16
store streams only after run-time checks that they do not overlap, more than it will emit): 1.0 ms per
image for the forward's tiles against 0.05 ms here. The panel's loop order (the shared dimension
innermost, the sums in registers) is one LLVM's loop vectoriser does not take at all.

The plain twins (the *_loops functions) are the definitions, and the vector code takes each sum in the
twins' order (the panel's as multiply-adds over k = 0, 1, ...): the same bits in the intrinsics and the
twins. Under NUMBA_DISABLE_JIT=1 the twins stand in for them.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import config
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from minicnn.nn.fast._jit import serial
from minicnn.nn.fast._simd import STEP, StepEmitter, check_float_vectors


def _bt(builder, d0, d1, d2, d3):
    """B^T d for one column of 4 (B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])."""
    return builder.fsub(d0, d2), builder.fadd(d1, d2), builder.fsub(d2, d1), builder.fsub(d1, d3)


def _at(builder, m0, m1, m2, m3):
    """A^T m for one column of 4 (A^T = [[1, 1, 1, 0], [0, 1, -1, -1]])."""
    return builder.fadd(builder.fadd(m0, m1), m2), builder.fsub(builder.fsub(m1, m2), m3)


def _a(builder, y0, y1):
    """A y for one column of 2 (A = [[1, 0], [1, 1], [1, -1], [0, -1]])."""
    return y0, builder.fadd(y0, y1), builder.fsub(y0, y1), builder.fneg(y1)


def _tile_transform(builder, d):
    """B^T d B of a 4x4 tile d[R][C], row-major 16: the columns' B^T first, then each row's."""
    cols = [_bt(builder, d[0][c], d[1][c], d[2][c], d[3][c]) for c in range(4)]
    return [x for a in range(4) for x in _bt(builder, cols[0][a], cols[1][a], cols[2][a], cols[3][a])]


def _untile(builder, m):
    """A^T M A of M (16, row-major 4x4), row-major 2x2: the columns' A^T first, then each row's."""
    cols = [_at(builder, m[b], m[4 + b], m[8 + b], m[12 + b]) for b in range(4)]
    return [y for r in range(2) for y in _at(builder, cols[0][r], cols[1][r], cols[2][r], cols[3][r])]


@serial
def tiles_step_loops(src, t, odd_row, odd_col, down, v, at, plane):
    """v[at + xi*plane + lane] = (B^T d B)[xi] for lane < STEP, xi < 16 (row-major 4x4), of the 4x4 tile
    d[R][C] = src[t + lane + (R % 2)*odd_row + (C % 2)*odd_col + (R // 2)*down + C // 2]. All 1-D. The
    plain definition of tiles_step: B^T of each column first, then each row's B."""
    cols = np.empty((4, 4), dtype=v.dtype)  # cols[C] = B^T d's column C
    for lane in range(STEP):
        for c in range(4):
            first = t + lane + (c % 2) * odd_col + c // 2
            d0, d1, d2, d3 = src[first], src[first + odd_row], src[first + down], src[first + odd_row + down]
            cols[c, 0], cols[c, 1], cols[c, 2], cols[c, 3] = d0 - d2, d1 + d2, d2 - d1, d1 - d3
        for a in range(4):
            e0, e1, e2, e3 = cols[0, a], cols[1, a], cols[2, a], cols[3, a]
            row = at + a * 4 * plane + lane
            v[row], v[row + plane], v[row + 2 * plane], v[row + 3 * plane] = e0 - e2, e1 + e2, e2 - e1, e1 - e3


@serial
def grad_tiles_step_loops(dy, at, quarter, v, v_at, plane):
    """v[v_at + xi*plane + lane] = (A dY A^T)[xi] for lane < STEP, xi < 16 (row-major 4x4), of the 2x2
    dY[r][e] = dy[at + (r*2 + e)*quarter + lane], A = (A^T)^T: the weight gradient's tile of a 2x2 output
    block's gradient. All 1-D. The plain definition of grad_tiles_step: A of each column first, then
    each row's."""
    cols = np.empty((2, 4), dtype=v.dtype)  # cols[e] = A dY's column e
    for lane in range(STEP):
        for e in range(2):
            y0, y1 = dy[at + e * quarter + lane], dy[at + (2 + e) * quarter + lane]
            cols[e, 0], cols[e, 1], cols[e, 2], cols[e, 3] = y0, y0 + y1, y0 - y1, -y1
        for a in range(4):
            z0, z1 = cols[0, a], cols[1, a]
            row = v_at + a * 4 * plane + lane
            v[row], v[row + plane], v[row + 2 * plane], v[row + 3 * plane] = z0, z0 + z1, z0 - z1, -z1


@serial  # not reassociated: each sum in the order of the intrinsic's
def matmul_panel_loops(a, a_at, depth, b, b_at, b_row, out, out_at, out_row, rows, vectors, accumulate):
    """out[out_at + r*out_row + v] = sum over k < depth of a[a_at + r*depth + k] * b[b_at + k*b_row + v],
    for r < rows and v < vectors * STEP: a (rows, depth) block of a's rows times a (depth, vectors * STEP)
    block of b; with accumulate (1, else 0) added to out's values, the sum starting from them. All 1-D
    (flattened, row-major). The plain definition of matmul_panel."""
    for r in range(rows):
        for v in range(vectors * STEP):
            acc = out[out_at + r * out_row + v] if accumulate else out.dtype.type(0.0)
            for k in range(depth):
                acc += a[a_at + r * depth + k] * b[b_at + k * b_row + v]
            out[out_at + r * out_row + v] = acc


@serial
def untile_step_loops(m, at, plane, bias, k, dst, d_at, quarter, count):
    """dst[d_at + (r*2 + e)*quarter + lane] = (A^T M A)[r][e] + bias[k] for lane < count (<= STEP), of
    M[xi] = m[at + xi*plane + lane] (row-major 4x4). All 1-D. The plain definition of untile_step: A^T
    of each column first, then each row's A."""
    cols = np.empty((4, 2), dtype=dst.dtype)  # cols[b] = A^T M's column b
    for lane in range(count):
        for b in range(4):
            first = at + b * plane + lane
            m0, m1, m2, m3 = m[first], m[first + 4 * plane], m[first + 8 * plane], m[first + 12 * plane]
            cols[b, 0], cols[b, 1] = m0 + m1 + m2, m1 - m2 - m3
        for r in range(2):
            y0 = cols[0, r] + cols[1, r] + cols[2, r]
            y1 = cols[1, r] - cols[2, r] - cols[3, r]
            dst[d_at + (r * 2) * quarter + lane] = y0 + bias[k]
            dst[d_at + (r * 2 + 1) * quarter + lane] = y1 + bias[k]


@intrinsic
def _tiles_step_vector(typingctx, src, t, odd_row, odd_col, down, v, at, plane):
    """tiles_step_loops as vector operations. No bounds checks (the caller's)."""
    check_float_vectors("tiles_step", (src, v))

    def codegen(context, builder, signature, args):
        em = StepEmitter(context, builder, signature, args, src.dtype)
        d_src, t_, odd_row_, odd_col_, down_, d_v, at_, plane_ = em.values
        d = [[em.load(d_src, em.add(t_, em.mul(odd_row_, r % 2), em.mul(odd_col_, c % 2), em.mul(down_, r // 2),
                                    c // 2)) for c in range(4)] for r in range(4)]
        for xi, value in enumerate(_tile_transform(builder, d)):
            em.store(value, d_v, em.add(at_, em.mul(plane_, xi)))
        return context.get_dummy_value()

    return types.void(src, t, odd_row, odd_col, down, v, at, plane), codegen


@intrinsic
def _grad_tiles_step_vector(typingctx, dy, at, quarter, v, v_at, plane):
    """grad_tiles_step_loops as vector operations. No bounds checks (the caller's)."""
    check_float_vectors("grad_tiles_step", (dy, v))

    def codegen(context, builder, signature, args):
        em = StepEmitter(context, builder, signature, args, dy.dtype)
        d_dy, at_, quarter_, d_v, v_at_, plane_ = em.values
        y = [em.load(d_dy, em.add(at_, em.mul(quarter_, i))) for i in range(4)]
        cols = [_a(builder, y[e], y[2 + e]) for e in range(2)]
        for a in range(4):
            for b, value in enumerate(_a(builder, cols[0][a], cols[1][a])):
                em.store(value, d_v, em.add(v_at_, em.mul(plane_, a * 4 + b)))
        return context.get_dummy_value()

    return types.void(dy, at, quarter, v, v_at, plane), codegen


@intrinsic
def _matmul_panel_vector(typingctx, a, a_at, depth, b, b_at, b_row, out, out_at, out_row, rows, vectors, accumulate):
    """matmul_panel_loops as vector operations; rows, vectors and accumulate must be literal integers. No
    bounds checks (the caller's)."""
    check_float_vectors("matmul_panel", (a, b, out))
    if not all(isinstance(x, types.IntegerLiteral) for x in (rows, vectors, accumulate)):
        raise TypingError("matmul_panel's rows, vectors and accumulate must be literal integers")

    def codegen(context, builder, signature, args):
        em = StepEmitter(context, builder, signature, args, a.dtype)
        d_a, a_at_, depth_, d_b, b_at_, b_row_, d_out, out_at_, out_row_ = em.values[:9]
        n_rows, n_vectors = rows.literal_value, vectors.literal_value

        def out_at(r, v):
            return em.add(out_at_, em.mul(out_row_, r), v * STEP)

        zeros = ir.Constant(em.vec, [0.0] * STEP)
        sums = [cgutils.alloca_once_value(builder, em.load(d_out, out_at(r, v)) if accumulate.literal_value else zeros)
                for r in range(n_rows) for v in range(n_vectors)]
        with cgutils.for_range(builder, depth_, intp=em.intp) as loop:
            k = loop.index
            b_at_k = em.add(b_at_, em.mul(k, b_row_))
            b_vectors = [em.load(d_b, em.add(b_at_k, v * STEP)) for v in range(n_vectors)]
            for r in range(n_rows):
                a_rk = em.splat(d_a, em.add(a_at_, em.mul(depth_, r), k))
                for v in range(n_vectors):
                    ptr = sums[r * n_vectors + v]
                    builder.store(em.fma(a_rk, b_vectors[v], builder.load(ptr)), ptr)
        for r in range(n_rows):
            for v in range(n_vectors):
                em.store(builder.load(sums[r * n_vectors + v]), d_out, out_at(r, v))
        return context.get_dummy_value()

    return types.void(a, a_at, depth, b, b_at, b_row, out, out_at, out_row, rows, vectors, accumulate), codegen


@intrinsic
def _untile_step_vector(typingctx, m, at, plane, bias, k, dst, d_at, quarter, count):
    """untile_step_loops as vector operations. No bounds checks (the caller's): the m entries past count
    are read, the dst entries past it are not written."""
    check_float_vectors("untile_step", (m, bias, dst))

    def codegen(context, builder, signature, args):
        em = StepEmitter(context, builder, signature, args, m.dtype)
        d_m, at_, plane_, d_bias, k_, d_dst, d_at_, quarter_, count_ = em.values
        products = [em.load(d_m, em.add(at_, em.mul(plane_, xi))) for xi in range(16)]
        offset = em.splat(d_bias, k_)
        mask = em.lanes_below(em.const(0), count_)
        for i, value in enumerate(_untile(builder, products)):
            em.store(builder.fadd(value, offset), d_dst, em.add(d_at_, em.mul(quarter_, i)), mask)
        return context.get_dummy_value()

    return types.void(m, at, plane, bias, k, dst, d_at, quarter, count), codegen


tiles_step = tiles_step_loops if config.DISABLE_JIT else _tiles_step_vector
grad_tiles_step = grad_tiles_step_loops if config.DISABLE_JIT else _grad_tiles_step_vector
matmul_panel = matmul_panel_loops if config.DISABLE_JIT else _matmul_panel_vector
untile_step = untile_step_loops if config.DISABLE_JIT else _untile_step_vector
