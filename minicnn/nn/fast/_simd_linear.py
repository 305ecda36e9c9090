"""The linear layer's steps over a group's four images (group_linear.py), as explicit vectors.

Sparse, as 4-lane vectors: each kept weight j (a value, and the slot of its place among the places any
class keeps) meets the group's four images' pooled values at its place, stored side by side (4 * slot ..
4 * slot + 3):
- the logits: sum over a class's kept weights of value * those four (``dot4``);
- the gradients: the weight's four image lanes += the class's four logit gradients * those four, and the
  place's four map gradients += value * the four logit gradients (``grads4``).
Written as loops over four scalars, LLVM left them scalar (a previous attempt: no faster than one
image's row after another); here each kept weight is a 128-bit load or two and one or two vector
multiply-adds (as fmul then fadd, IEEE: the same bits as the plain twins that stand for them under
NUMBA_DISABLE_JIT). No bounds checks: the caller's, as for any Numba indexing.

Dense, the backward as STEP-lane vectors (``dense_grads4``): the linear weight's gradient += the four
images' products and the pooled maps' gradients = the classes' sums, in one pass over the map positions.
As two passes of Numba loops (a class at a time over the weight gradient, then two classes at a time per
image over the maps' gradients, each loop writing one array: LLVM vectorises no loop that writes many)
the four images' map gradients went through memory once per class pair, and the weight rows were read
once per image: 7.5 us per group. Here each STEP positions keep the four map gradients in registers
while a loop over the classes runs inside, and the weight and its gradient are stored class-interleaved
((n_steps, K, STEP): entry (k, e) at step e // STEP, class k, lane e % STEP, zeros past the last
position; a step's classes in one contiguous run, two streams instead of 2K): 3.7 us (timed
alone, the paper model's 2,176 positions and 10 classes). The same multiply-adds in the same order as
the loops it replaced, so the same bits.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import config
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from minicnn.nn.fast._jit import serial
from minicnn.nn.fast._simd import STEP, StepEmitter, splat

#: Images per vector: the op's GROUP.
LANES = 4


def _dot4_python(values, slots, start, stop, table, out, o):
    """out[o + g] += a + b for g < LANES, where a sums values[j] * table[LANES * slots[j] + g] over the
    j = start, start + 2, ... below stop and b over j = start + 1, start + 3, ... (two chains: each
    multiply-add waits on the one before in its chain), each product rounded, then each sum."""
    for g in range(LANES):
        a = b = out.dtype.type(0.0)
        j = start
        while j + 1 < stop:
            a = a + values[j] * table[LANES * slots[j] + g]
            b = b + values[j + 1] * table[LANES * slots[j + 1] + g]
            j += 2
        if j < stop:
            a = a + values[j] * table[LANES * slots[j] + g]
        out[o + g] = out[o + g] + (a + b)


def _grads4_python(values, slots, start, stop, grad_out, k, table, dvalues, dtable):
    """For each j in start .. stop - 1 and g < LANES, s = LANES * slots[j]: dvalues[LANES * j + g] +=
    grad_out[k + g] * table[s + g] and dtable[s + g] += values[j] * grad_out[k + g]."""
    for j in range(start, stop):
        s = LANES * slots[j]
        for g in range(LANES):
            dvalues[LANES * j + g] = dvalues[LANES * j + g] + grad_out[k + g] * table[s + g]
            dtable[s + g] = dtable[s + g] + values[j] * grad_out[k + g]


def _check(name, floats, ints):
    if not all(isinstance(a, types.Array) and a.ndim == 1 for a in floats + ints):
        raise TypingError(f"{name} takes 1-D arrays")
    if not (all(a.dtype == floats[0].dtype for a in floats) and isinstance(floats[0].dtype, types.Float)
            and all(a.dtype == types.int64 for a in ints)):
        raise TypingError(f"{name} needs float arrays of one dtype and int64 slots")


class _Emitter:
    """What both intrinsics' code needs: 4-lane loads and stores at an array's index, splats."""

    def __init__(self, context, builder, dtype):
        self.context, self.builder = context, builder
        self.elem = context.get_data_type(dtype)
        self.align = context.get_abi_sizeof(self.elem)
        self.vector = ir.VectorType(self.elem, LANES)
        self.intp = context.get_value_type(types.intp)

    def pointer(self, array_type, array, index, vector=True):
        data = self.context.make_array(array_type)(self.context, self.builder, array).data
        entry = self.builder.gep(data, [index], inbounds=True)
        return self.builder.bitcast(entry, self.vector.as_pointer()) if vector else entry

    def load(self, array_type, array, index):
        return self.builder.load(self.pointer(array_type, array, index), align=self.align, typ=self.vector)

    def scalar(self, array_type, array, index):
        return self.builder.load(self.pointer(array_type, array, index, vector=False))

    def splat(self, value):
        return splat(self.builder, value, self.vector)

    def times(self, n, factor=LANES):
        return self.builder.mul(n, ir.Constant(self.intp, factor))

    def index(self, value, value_type):
        return self.context.cast(self.builder, value, value_type, types.intp)


@intrinsic
def _dot4_vector(typingctx, values, slots, start, stop, table, out, o):
    """_dot4_python with the two chains as vectors in registers: per kept weight a slot and a value
    loaded, one 4-lane load and a multiply and an add."""
    _check("dot4", (values, table, out), (slots,))

    def codegen(context, builder, signature, args):
        e = _Emitter(context, builder, values.dtype)
        values_v, slots_v, start_v, stop_v, table_v, out_v, o_v = args
        start_n, stop_n = e.index(start_v, signature.args[2]), e.index(stop_v, signature.args[3])
        chains = [cgutils.alloca_once_value(builder, ir.Constant(e.vector, [0.0] * LANES)) for _ in range(2)]

        def add_product(chain, j):
            place = e.times(e.scalar(signature.args[1], slots_v, j))
            product = builder.fmul(e.splat(e.scalar(signature.args[0], values_v, j)),
                                   e.load(signature.args[4], table_v, place))
            builder.store(builder.fadd(builder.load(chain), product), chain)

        pairs_stop = builder.sub(stop_n, builder.and_(builder.sub(stop_n, start_n), ir.Constant(e.intp, 1)))
        with cgutils.for_range_slice(builder, start_n, pairs_stop, ir.Constant(e.intp, 2), e.intp) as (j, _):
            add_product(chains[0], j)
            add_product(chains[1], builder.add(j, ir.Constant(e.intp, 1)))
        with builder.if_then(builder.icmp_signed("<", pairs_stop, stop_n)):
            add_product(chains[0], pairs_stop)
        at = e.index(o_v, signature.args[6])
        total = builder.fadd(builder.load(chains[0]), builder.load(chains[1]))
        out_t = signature.args[5]
        builder.store(builder.fadd(e.load(out_t, out_v, at), total), e.pointer(out_t, out_v, at), align=e.align)
        return context.get_dummy_value()

    return types.void(values, slots, start, stop, table, out, o), codegen


@intrinsic
def _grads4_vector(typingctx, values, slots, start, stop, grad_out, k, table, dvalues, dtable):
    """_grads4_python with the four logit gradients in one vector: per kept weight a slot and a value
    loaded, and two 4-lane load-multiply-add-stores."""
    _check("grads4", (values, grad_out, table, dvalues, dtable), (slots,))

    def codegen(context, builder, signature, args):
        e = _Emitter(context, builder, values.dtype)
        values_v, slots_v, start_v, stop_v, grad_out_v, k_v, table_v, dvalues_v, dtable_v = args
        t = signature.args
        gk = e.load(t[4], grad_out_v, e.index(k_v, t[5]))
        start_n, stop_n = e.index(start_v, t[2]), e.index(stop_v, t[3])
        with cgutils.for_range_slice(builder, start_n, stop_n, ir.Constant(e.intp, 1), e.intp) as (j, _):
            place = e.times(e.scalar(t[1], slots_v, j))
            lanes = e.times(j)
            dv = builder.fadd(e.load(t[7], dvalues_v, lanes), builder.fmul(gk, e.load(t[6], table_v, place)))
            builder.store(dv, e.pointer(t[7], dvalues_v, lanes), align=e.align)
            dg = builder.fadd(e.load(t[8], dtable_v, place), builder.fmul(e.splat(e.scalar(t[0], values_v, j)), gk))
            builder.store(dg, e.pointer(t[8], dtable_v, place), align=e.align)
        return context.get_dummy_value()

    return types.void(values, slots, start, stop, grad_out, k, table, dvalues, dtable), codegen


@serial  # not reassociated: each sum in the order of the intrinsic's
def dense_grads4_loops(dz, pooled, fc_steps, dfc_steps, dfcb, dpooled, n_class, flat_len):
    """For the group's LANES images g, classes k < n_class and map positions e < flat_len, with (k, e)
    class-interleaved (see above) at s = (e // STEP)*n_class*STEP + k*STEP + e % STEP:
      dfcb[k] += (dz[k] + dz[n_class + k]) + (dz[2*n_class + k] + dz[3*n_class + k]);
      dpooled[g*flat_len + e] = sum over k of dz[g*n_class + k] * fc_steps[s]  (k in order, from 0);
      dfc_steps[s] += sum over g of dz[g*n_class + k] * pooled[g*flat_len + e]  (g in order).
    All 1-D: dz (LANES, K), pooled and dpooled (LANES, flat_len), fc_steps and dfc_steps (n_steps, K,
    STEP) flattened, dfcb (K,). Each sum a chain of multiply-adds. The plain definition of dense_grads4."""
    for k in range(n_class):
        dfcb[k] += (dz[k] + dz[n_class + k]) + (dz[2 * n_class + k] + dz[3 * n_class + k])
    for e in range(flat_len):
        at = (e // STEP) * n_class * STEP + e % STEP
        for g in range(LANES):
            o = g * flat_len + e
            dpooled[o] = 0.0
            for k in range(n_class):
                dpooled[o] += dz[g * n_class + k] * fc_steps[at + k * STEP]
        for k in range(n_class):
            s = at + k * STEP
            for g in range(LANES):
                dfc_steps[s] += dz[g * n_class + k] * pooled[g * flat_len + e]


@intrinsic
def _dense_grads4_vector(typingctx, dz, pooled, fc_steps, dfc_steps, dfcb, dpooled, n_class, flat_len):
    """dense_grads4_loops as vector operations, STEP positions at a time: the images' pooled values and
    map gradients in registers over the loop over the classes, each class one load of the weight, a
    load-multiply-add-store of its gradient and four splats of the logit gradients. pooled and dpooled
    are read and written masked to flat_len; fc_steps and dfc_steps whole (they hold whole steps). The
    bias's sums as scalar adds in the twin's order (in the kernel, LLVM reassociated the loop of them)."""
    _check("dense_grads4", (dz, pooled, fc_steps, dfc_steps, dfcb, dpooled), ())
    if not all(isinstance(n, types.Integer) for n in (n_class, flat_len)):
        raise TypingError("dense_grads4 takes integer sizes")

    def codegen(context, builder, signature, args):
        em = StepEmitter(context, builder, signature, args, dz.dtype)
        d_dz, d_pooled, d_fc, d_dfc, d_dfcb, d_dpooled, k_n, n = em.values
        zeros = ir.Constant(em.vec, [0.0] * STEP)
        with cgutils.for_range(builder, k_n, intp=em.intp) as loop:
            g = [builder.load(builder.gep(d_dz, [em.add(em.mul(k_n, i), loop.index)], inbounds=True))
                 for i in range(LANES)]
            bias = builder.gep(d_dfcb, [loop.index], inbounds=True)
            total = builder.fadd(builder.fadd(g[0], g[1]), builder.fadd(g[2], g[3]))
            builder.store(builder.fadd(builder.load(bias), total), bias)
        sums = [cgutils.alloca_once(builder, em.vec) for _ in range(LANES)]
        with cgutils.for_range_slice(builder, em.const(0), n, em.const(STEP), em.intp) as (q, _):
            mask = em.lanes_below(q, n)
            images = [em.load_masked(d_pooled, em.add(em.mul(n, g), q), mask) for g in range(LANES)]
            for ptr in sums:
                builder.store(zeros, ptr)
            step = em.mul(q, k_n)  # the step's classes, class-interleaved
            with cgutils.for_range(builder, k_n, intp=em.intp) as loop:
                k = loop.index
                grads = [em.splat(d_dz, em.add(em.mul(k_n, g), k)) for g in range(LANES)]
                at = em.add(step, em.mul(k, STEP))
                weight, dweight = em.load(d_fc, at), em.load(d_dfc, at)
                for g in range(LANES):
                    dweight = em.fma(grads[g], images[g], dweight)
                builder.store(dweight, em.vector_ptr(d_dfc, at), align=em.align)
                for g in range(LANES):
                    builder.store(em.fma(grads[g], weight, builder.load(sums[g])), sums[g])
            for g in range(LANES):
                em.store(builder.load(sums[g]), d_dpooled, em.add(em.mul(n, g), q), mask)
        return context.get_dummy_value()

    return types.void(dz, pooled, fc_steps, dfc_steps, dfcb, dpooled, n_class, flat_len), codegen


def _gather_places_python(pooled, places, pooled_t):
    """pooled_t[LANES*s + g] = pooled[g, places[s]] for s < places.size and g < LANES (pooled (LANES, L),
    C-contiguous): the group's images' pooled values at the kept places, side by side."""
    for s in range(places.size):
        i = places[s]
        for g in range(LANES):
            pooled_t[LANES * s + g] = pooled[g, i]


@intrinsic
def _gather_places_vector(typingctx, pooled, places, pooled_t):
    """_gather_places_python four places at a time: their LANES*4 values in one gather (two ``vgatherqps``
    with AVX-512) and one vector store; the places left one at a time. As a loop, four scalar loads and
    four scalar stores a place, 1.1 us per group at the paper model's 95 % pruning (823 places). pooled
    must be C-contiguous (checked as the call compiles): read by its data pointer."""
    if not (isinstance(pooled, types.Array) and pooled.ndim == 2 and pooled.layout == "C"):
        raise TypingError("gather_places takes a C-contiguous (LANES, L) pooled array")
    _check("gather_places", (pooled_t,), (places,))
    if pooled.dtype != pooled_t.dtype:
        raise TypingError("gather_places needs pooled and pooled_t of one dtype")

    def codegen(context, builder, signature, args):
        em = _Emitter(context, builder, pooled.dtype)
        pooled_a = context.make_array(pooled)(context, builder, args[0])
        row = cgutils.unpack_tuple(builder, pooled_a.shape, 2)[1]
        places_a = context.make_array(places)(context, builder, args[1])
        out_a = context.make_array(pooled_t)(context, builder, args[2])
        n, i64 = places_a.nitems, ir.IntType(64)
        width = LANES * 4  # values per gather: four places' four images
        wide, addresses = ir.VectorType(em.elem, width), ir.VectorType(i64, width)
        lanes32 = ir.VectorType(ir.IntType(32), width)
        item = em.align
        # lane 4j + g reads image g's row at place j: base + (place_j + g*row) * itemsize
        image_of_lane = builder.mul(ir.Constant(addresses, [lane % LANES for lane in range(width)]),
                                    splat(builder, row, addresses))
        start = builder.add(splat(builder, builder.ptrtoint(pooled_a.data, i64), addresses),
                            builder.mul(image_of_lane, ir.Constant(addresses, [item] * width)))
        quad = ir.VectorType(i64, 4)
        mask = ir.VectorType(ir.IntType(1), width)
        gather = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(wide, [ir.VectorType(pooled_a.data.type, width), ir.IntType(32), mask,
                                                   wide]),
            f"llvm.masked.gather.v{width}f{8 * item}.v{width}p0")
        whole = builder.sub(n, builder.srem(n, ir.Constant(em.intp, 4)))
        zero, four_places = ir.Constant(em.intp, 0), ir.Constant(em.intp, 4)
        with cgutils.for_range_slice(builder, zero, whole, four_places, em.intp) as (s, _):
            four = builder.load(builder.bitcast(builder.gep(places_a.data, [s], inbounds=True), quad.as_pointer()),
                                align=8)
            spread = builder.shuffle_vector(four, ir.Constant(quad, ir.Undefined),
                                            ir.Constant(lanes32, [lane // LANES for lane in range(width)]))
            offsets = builder.mul(spread, ir.Constant(addresses, [item] * width))
            pointers = builder.inttoptr(builder.add(start, offsets), ir.VectorType(pooled_a.data.type, width))
            values = builder.call(gather, [pointers, ir.Constant(ir.IntType(32), item), ir.Constant(mask, [1] * width),
                                           ir.Constant(wide, ir.Undefined)])
            target = builder.gep(out_a.data, [builder.mul(s, ir.Constant(em.intp, LANES))], inbounds=True)
            builder.store(values, builder.bitcast(target, wide.as_pointer()), align=item)
        with cgutils.for_range_slice(builder, whole, n, ir.Constant(em.intp, 1), em.intp) as (s, _):
            place = builder.load(builder.gep(places_a.data, [s], inbounds=True))
            for g in range(LANES):
                at = builder.add(place, builder.mul(row, ir.Constant(em.intp, g)))
                value = builder.load(builder.gep(pooled_a.data, [at], inbounds=True))
                out = builder.add(builder.mul(s, ir.Constant(em.intp, LANES)), ir.Constant(em.intp, g))
                builder.store(value, builder.gep(out_a.data, [out], inbounds=True))
        return context.get_dummy_value()

    return types.void(pooled, places, pooled_t), codegen


#: Classes per pass of dense_logits4: their four images' sums, LANES * CLASS_BLOCK vectors, and the four
#: images' pooled values fit the 32 vector registers.
CLASS_BLOCK = 5


@serial  # not reassociated: each sum in the order of the intrinsic's
def dense_logits4_loops(fc_steps, fc_b, pooled, z_t, n_class, flat_len):
    """z_t[LANES*k + g] = fc_b[k] + the sum over positions e of fc_steps[(k, e)] * pooled[g*flat_len + e]
    for the group's LANES images g and the classes k < n_class: fc_steps (n_steps, K, STEP) flattened,
    class-interleaved (see above), pooled (LANES, flat_len) flattened, 0 past flat_len. Each sum in
    STEP lanes, position e into lane e % STEP as a chain of multiply-adds over the steps, then the lanes
    pairwise (lane l + lane l + STEP/2, ...), then the bias. The plain definition of dense_logits4."""
    n_steps = (flat_len + STEP - 1) // STEP
    lanes, zero = np.empty(STEP, dtype=z_t.dtype), pooled.dtype.type(0.0)
    for k in range(n_class):
        for g in range(LANES):
            for lane in range(STEP):
                lanes[lane] = 0.0
            for e in range(n_steps * STEP):
                value = pooled[g * flat_len + e] if e < flat_len else zero
                lanes[e % STEP] += fc_steps[(e // STEP) * n_class * STEP + k * STEP + e % STEP] * value
            width = STEP // 2
            while width:
                for lane in range(width):
                    lanes[lane] += lanes[lane + width]
                width //= 2
            z_t[LANES * k + g] = fc_b[k] + lanes[0]


@intrinsic
def _dense_logits4_vector(typingctx, fc_steps, fc_b, pooled, z_t, n_class, flat_len):
    """dense_logits4_loops as vector operations: CLASS_BLOCK classes a pass over the positions (their
    LANES * CLASS_BLOCK sums in registers; the classes left one a pass), each step the four images'
    pooled values loaded once (masked to flat_len) and each class's weights once for four multiply-adds.
    As Numba loops (a class a pass, the four images' sums side by side) each step loaded the five vectors
    for four multiply-adds."""
    _check("dense_logits4", (fc_steps, fc_b, pooled, z_t), ())
    if not all(isinstance(n, types.Integer) for n in (n_class, flat_len)):
        raise TypingError("dense_logits4 takes integer sizes")

    def codegen(context, builder, signature, args):
        em = StepEmitter(context, builder, signature, args, fc_steps.dtype)
        d_fc, d_b, d_pooled, d_z, k_n, n = em.values
        zeros = ir.Constant(em.vec, [0.0] * STEP)
        half = ir.VectorType(ir.IntType(32), STEP)

        def lanes_sum(vector):  # the lanes pairwise, as the twin
            width = STEP // 2
            while width:
                high = builder.shuffle_vector(vector, vector, ir.Constant(half, [i + width if i < width else i
                                                                                  for i in range(STEP)]))
                vector = builder.fadd(vector, high)
                width //= 2
            return builder.extract_element(vector, ir.Constant(ir.IntType(32), 0))

        whole = builder.sub(n, builder.srem(n, em.const(STEP)))

        def classes(k0, width):  # a pass over the positions for classes k0 .. k0 + width - 1
            sums = [[cgutils.alloca_once_value(builder, zeros) for _ in range(LANES)] for _ in range(width)]

            def add_step(q, mask):  # the pooled values masked to flat_len in the last step only
                at = [em.add(em.mul(n, g), q) for g in range(LANES)]
                images = [em.load(d_pooled, i) if mask is None else em.load_masked(d_pooled, i, mask) for i in at]
                step = em.mul(q, k_n)
                for c in range(width):
                    weight = em.load(d_fc, em.add(step, em.mul(em.add(k0, c), STEP)))
                    for g in range(LANES):
                        builder.store(em.fma(weight, images[g], builder.load(sums[c][g])), sums[c][g])

            with cgutils.for_range_slice(builder, em.const(0), whole, em.const(STEP), em.intp) as (q, _):
                add_step(q, None)
            with builder.if_then(builder.icmp_signed("<", whole, n)):
                add_step(whole, em.lanes_below(whole, n))
            for c in range(width):
                k = em.add(k0, c)
                bias = builder.load(builder.gep(d_b, [k], inbounds=True))
                for g in range(LANES):
                    out = builder.gep(d_z, [em.add(em.mul(k, LANES), g)], inbounds=True)
                    builder.store(builder.fadd(bias, lanes_sum(builder.load(sums[c][g]))), out)

        blocks = builder.sdiv(k_n, em.const(CLASS_BLOCK))
        with cgutils.for_range(builder, blocks, intp=em.intp) as loop:
            classes(em.mul(loop.index, CLASS_BLOCK), CLASS_BLOCK)
        with cgutils.for_range_slice(builder, em.mul(blocks, CLASS_BLOCK), k_n, em.const(1), em.intp) as (k, _):
            classes(k, 1)
        return context.get_dummy_value()

    return types.void(fc_steps, fc_b, pooled, z_t, n_class, flat_len), codegen


dense_grads4 = dense_grads4_loops if config.DISABLE_JIT else _dense_grads4_vector
gather_places = _gather_places_python if config.DISABLE_JIT else _gather_places_vector
dense_logits4 = dense_logits4_loops if config.DISABLE_JIT else _dense_logits4_vector
dot4 = _dot4_python if config.DISABLE_JIT else _dot4_vector
grads4 = _grads4_python if config.DISABLE_JIT else _grads4_vector
