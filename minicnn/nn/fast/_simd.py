"""Explicit vector code, for the loops that LLVM's loop vectoriser does badly, and a prefetch.

``split_step`` de-interleaves 2*STEP values into their even and their odd ones: the quarter-plane
layout of minicnn/nn/fast/parity.py stores every image row that way. As loops (``even[u] = src[2u]``)
LLVM ran the 16 pairs of a 32-pixel row in its narrow remainder loop; here they are two vector loads,
two shuffles and two stores (``vpermt2ps`` with AVX-512): the image unpacking ran 1.3-2x faster.

``lookup_split_step`` does the same to 2*STEP bytes, each looked up in a table of 256 floats on the way
(a uint8 image normalised as it is unpacked, see images.py): a vector load, one gather, two shuffles.

``unblocked_sums`` adds a map's gradients into STEP lane sums, the blocked ones (pooling code 4) as 0,
for pool2's sums of a map's gradient, whose order is written out (entry q into lane q % STEP, the lanes
pairwise at the end: left to LLVM, a compiled and a cached kernel summed in different orders). As
loops over a lane array LLVM kept them scalar, about one entry per cycle (6 % of a 95 %-pruned paper
model's training step); here each STEP entries are a vector load of each, a compare, a select and two
adds, in the same order, so the same bits, the sums in registers.

``StepEmitter`` holds the IR helpers that these and the other _simd_*.py files' intrinsics share.

Call them straight from the kernel's loop (through a helper in between, Numba counts references on every
call: 3-7x slower). Under NUMBA_DISABLE_JIT=1 plain loops stand in for them.
"""

from __future__ import annotations

from llvmlite import ir
from numba import config
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from minicnn.nn.fast._jit import serial

#: Pairs per vector step: 2*STEP values in, STEP out to each side (512 bits of float32).
STEP = 16


def splat(builder, value, vector_type):
    """value (a scalar) in every lane of vector_type: an insert and a broadcast shuffle."""
    unused = ir.Constant(vector_type, ir.Undefined)
    one = builder.insert_element(unused, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, unused, ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count),
                                                           [0] * vector_type.count))


def check_float_vectors(name, arrays):
    """An intrinsic's typing check: arrays all 1-D floats of one dtype (else a TypingError naming it)."""
    if not all(isinstance(a, types.Array) and a.ndim == 1 for a in arrays):
        raise TypingError(f"{name} takes 1-D arrays")
    if len({a.dtype for a in arrays}) != 1 or not isinstance(arrays[0].dtype, types.Float):
        raise TypingError(f"{name} needs float arrays of one dtype")


class StepEmitter:
    """IR helpers over one intrinsic's arguments (each array's data pointer, each integer as intp):
    STEP-lane vectors of 1-D float arrays, loaded, stored (masked or not), splat, multiply-added (the
    intrinsics of _simd_conv.py, _simd_linear.py's dense steps and window_codes below)."""

    def __init__(self, context, builder, signature, args, dtype):
        self.context, self.builder = context, builder
        self.intp = context.get_value_type(types.intp)
        elem = context.get_data_type(dtype)
        self.align = context.get_abi_sizeof(elem)
        self.vec = ir.VectorType(elem, STEP)
        self.mask_type = ir.VectorType(ir.IntType(1), STEP)
        self.suffix = f"v{STEP}{'f32' if self.align == 4 else 'f64'}"  # of LLVM's vector intrinsics' names
        self.fma_fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(self.vec, [self.vec] * 3),
                                                     f"llvm.fma.{self.suffix}")
        self.values = []
        for value, kind in zip(args, signature.args):
            if isinstance(kind, types.Array):
                self.values.append(context.make_array(kind)(context, builder, value).data)
            elif isinstance(kind, types.Integer):
                self.values.append(context.cast(builder, value, kind, types.intp))
            else:
                self.values.append(None)

    def const(self, n):
        return ir.Constant(self.intp, n)

    def add(self, *terms):
        total = terms[0]
        for term in terms[1:]:
            total = self.builder.add(total, term if isinstance(term, ir.Value) else self.const(term))
        return total

    def mul(self, a, b):
        return self.builder.mul(a, b if isinstance(b, ir.Value) else self.const(b))

    def vector_ptr(self, data, index):
        return self.builder.bitcast(self.builder.gep(data, [index], inbounds=True), self.vec.as_pointer())

    def load(self, data, index):
        return self.builder.load(self.vector_ptr(data, index), align=self.align)

    def load_masked(self, data, index, mask):
        """data[index : index + STEP] where mask (a vector of i1) is true, 0 elsewhere (those not read)."""
        load = cgutils.get_or_insert_function(
            self.builder.module, ir.FunctionType(self.vec, [self.vec.as_pointer(), ir.IntType(32), self.mask_type,
                                                            self.vec]),
            f"llvm.masked.load.{self.suffix}.p0")
        return self.builder.call(load, [self.vector_ptr(data, index), ir.Constant(ir.IntType(32), self.align), mask,
                                        ir.Constant(self.vec, [0.0] * STEP)])

    def store(self, value, data, index, mask=None):
        """data[index : index + STEP] = value where mask (a vector of i1) is true (None: every lane)."""
        if mask is None:
            self.builder.store(value, self.vector_ptr(data, index), align=self.align)
            return
        store = cgutils.get_or_insert_function(
            self.builder.module, ir.FunctionType(ir.VoidType(), [self.vec, self.vec.as_pointer(), ir.IntType(32),
                                                                 self.mask_type]),
            f"llvm.masked.store.{self.suffix}.p0")
        self.builder.call(store, [value, self.vector_ptr(data, index), ir.Constant(ir.IntType(32), self.align), mask])

    def spread(self, value, vector_type):
        """value (a scalar) in every lane of vector_type (STEP lanes)."""
        return splat(self.builder, value, vector_type)

    def lanes_below(self, q, stop):
        """The mask of positions q + lane < stop."""
        lanes = ir.VectorType(self.intp, STEP)
        at = self.builder.add(self.spread(q, lanes), ir.Constant(lanes, list(range(STEP))))
        return self.builder.icmp_signed("<", at, self.spread(stop, lanes))

    def splat(self, data, index):
        """data[index] in every lane."""
        value = self.builder.load(self.builder.gep(data, [index], inbounds=True), align=self.align)
        return self.spread(value, self.vec)

    def fma(self, a, b, c):
        return self.builder.call(self.fma_fn, [a, b, c])

    def lane_total(self, v):
        """The sum of v's STEP lanes, pairwise: lane l += lane l + width for width = STEP/2, ..., 1; lane 0."""
        builder, width = self.builder, STEP // 2
        while width:
            lanes = ir.VectorType(ir.IntType(32), width)
            unused = ir.Constant(v.type, ir.Undefined)
            low = builder.shuffle_vector(v, unused, ir.Constant(lanes, list(range(width))))
            high = builder.shuffle_vector(v, unused, ir.Constant(lanes, list(range(width, 2 * width))))
            v, width = builder.fadd(low, high), width // 2
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))

    def steps(self, n, step):
        """step(q, None) for the whole steps q = 0, STEP, ... below n, then step(q, mask of q + lane < n) for
        the last part one if n is not a multiple of STEP."""
        whole = self.builder.sub(n, self.builder.srem(n, self.const(STEP)))
        with cgutils.for_range_slice(self.builder, self.const(0), whole, self.const(STEP), self.intp) as (q, _):
            step(q, None)
        with self.builder.if_then(self.builder.icmp_signed("<", whole, n)):
            step(whole, self.lanes_below(whole, n))


def _split_step_python(src, s, even, e, odd, o):
    """even[e + u] = src[s + 2u] and odd[o + u] = src[s + 2u + 1] for u < STEP (1-D arrays, one dtype)."""
    for u in range(STEP):
        even[e + u] = src[s + 2 * u]
        odd[o + u] = src[s + 2 * u + 1]


def _vector_at(context, builder, array_type, array, index_type, index, vector):
    """&array[index] (a 1-D array's entry) as a pointer to ``vector``."""
    data = context.make_array(array_type)(context, builder, array).data
    i = context.cast(builder, index, index_type, types.intp)
    return builder.bitcast(builder.gep(data, [i], inbounds=True), vector.as_pointer())


def _store_split(builder, values, even_ptr, odd_ptr, align):
    """values' (2*STEP lanes) even lanes to even_ptr, odd lanes to odd_ptr (STEP-lane vectors)."""
    lanes = ir.VectorType(ir.IntType(32), STEP)
    unused = ir.Constant(values.type, ir.Undefined)
    evens = builder.shuffle_vector(values, unused, ir.Constant(lanes, [2 * u for u in range(STEP)]))
    odds = builder.shuffle_vector(values, unused, ir.Constant(lanes, [2 * u + 1 for u in range(STEP)]))
    builder.store(evens, even_ptr, align=align)
    builder.store(odds, odd_ptr, align=align)


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

        src_v, s_v, even_v, e_v, odd_v, o_v = args
        _, s_t, _, e_t, _, o_t = signature.args
        values = builder.load(_vector_at(context, builder, src, src_v, s_t, s_v, wide), align=align, typ=wide)
        _store_split(builder, values, _vector_at(context, builder, even, even_v, e_t, e_v, half),
                     _vector_at(context, builder, odd, odd_v, o_t, o_v, half), align)
        return context.get_dummy_value()

    return types.void(src, s, even, e, odd, o), codegen


split_step = _split_step_python if config.DISABLE_JIT else _split_step_vector


def _lookup_split_step_python(src, s, table, even, e, odd, o):
    """split_step of src's bytes looked up in table: even[e + u] = table[src[s + 2u]], odd[o + u] =
    table[src[s + 2u + 1]] for u < STEP (src: uint8; table: 256 floats of even's and odd's dtype)."""
    for u in range(STEP):
        even[e + u] = table[src[s + 2 * u]]
        odd[o + u] = table[src[s + 2 * u + 1]]


@intrinsic
def _lookup_split_step_vector(typingctx, src, s, table, even, e, odd, o):
    """_lookup_split_step_python as one vector load of 2*STEP bytes, one gather of their table entries
    (LLVM's masked gather; with AVX-512 four ``vgatherqps`` of eight: looked up one by one, the unpacking
    took 3x as long) and the two shuffles of split_step; no bounds checks (the caller's; any byte is a
    place among the table's 256 entries)."""
    if not all(isinstance(a, types.Array) and a.ndim == 1 for a in (src, table, even, odd)):
        raise TypingError("lookup_split_step takes 1-D arrays")
    if not (src.dtype == types.uint8 and table.dtype == even.dtype == odd.dtype):
        raise TypingError("lookup_split_step needs uint8 src and one dtype for table, even and odd")

    def codegen(context, builder, signature, args):
        elem = context.get_data_type(table.dtype)
        wide, half = ir.VectorType(elem, 2 * STEP), ir.VectorType(elem, STEP)
        i64 = ir.IntType(64)
        addresses = ir.VectorType(i64, 2 * STEP)
        src_v, s_v, table_v, even_v, e_v, odd_v, o_v = args
        _, s_t, _, _, e_t, _, o_t = signature.args
        byte_vector = ir.VectorType(ir.IntType(8), 2 * STEP)
        values = builder.load(_vector_at(context, builder, src, src_v, s_t, s_v, byte_vector), align=1,
                              typ=byte_vector)
        # the entries' addresses: table + value * itemsize (llvmlite's gep takes no vector of indices)
        table_data = context.make_array(table)(context, builder, table_v).data
        base = splat(builder, builder.ptrtoint(table_data, i64), addresses)
        offsets = builder.mul(builder.zext(values, addresses),
                              ir.Constant(addresses, [context.get_abi_sizeof(elem)] * 2 * STEP))
        pointers = builder.inttoptr(builder.add(base, offsets), ir.VectorType(table_data.type, 2 * STEP))
        mask = ir.VectorType(ir.IntType(1), 2 * STEP)
        align = context.get_abi_sizeof(elem)
        gather_type = ir.FunctionType(wide, [pointers.type, ir.IntType(32), mask, wide])
        gather = cgutils.get_or_insert_function(builder.module, gather_type,
                                                f"llvm.masked.gather.v{2 * STEP}f{8 * align}.v{2 * STEP}p0")
        looked_up = builder.call(gather, [pointers, ir.Constant(ir.IntType(32), align),
                                          ir.Constant(mask, [1] * 2 * STEP), ir.Constant(wide, ir.Undefined)])
        _store_split(builder, looked_up, _vector_at(context, builder, even, even_v, e_t, e_v, half),
                     _vector_at(context, builder, odd, odd_v, o_t, o_v, half), align)
        return context.get_dummy_value()

    return types.void(src, s, table, even, e, odd, o), codegen


lookup_split_step = _lookup_split_step_python if config.DISABLE_JIT else _lookup_split_step_vector


def _scale_split_step_python(src, s, offset, even, e, odd, o):
    """split_step of src's bytes, each value v as v / 255 - offset in even's dtype (the division and the
    subtraction each rounded once): even[e + u] from src[s + 2u], odd[o + u] from src[s + 2u + 1]."""
    dtype = even.dtype.type
    for u in range(STEP):
        even[e + u] = dtype(src[s + 2 * u]) / dtype(255.0) - offset
        odd[o + u] = dtype(src[s + 2 * u + 1]) / dtype(255.0) - offset


@intrinsic
def _scale_split_step_vector(typingctx, src, s, offset, even, e, odd, o):
    """_scale_split_step_python as vector arithmetic: the bytes widened to floats, v / 255 as a product by
    1/255 and one multiply-add correction (the remainder v - q*255 is exact in a multiply-add, and q +
    remainder/255 rounds to the quotient: the tests check all 256 values in both float types), then the
    offset subtracted, and split_step's two shuffles. For the normalisations whose table is v / 255 -
    offset (io.data's 'unit' and 'center', the default), 2.4x faster than the table's gather (0.23
    against 0.56 us per CIFAR image)."""
    if not (all(isinstance(a, types.Array) and a.ndim == 1 for a in (src, even, odd)) and src.dtype == types.uint8
            and even.dtype == odd.dtype and isinstance(even.dtype, types.Float) and offset == even.dtype):
        raise TypingError("scale_split_step takes uint8 src, an offset and even and odd of its float dtype")

    def codegen(context, builder, signature, args):
        elem = context.get_data_type(even.dtype)
        align = context.get_abi_sizeof(elem)
        wide, half = ir.VectorType(elem, 2 * STEP), ir.VectorType(elem, STEP)
        src_v, s_v, offset_v, even_v, e_v, odd_v, o_v = args
        _, s_t, _, _, e_t, _, o_t = signature.args
        byte_vector = ir.VectorType(ir.IntType(8), 2 * STEP)
        values = builder.load(_vector_at(context, builder, src, src_v, s_t, s_v, byte_vector), align=1,
                              typ=byte_vector)
        x = builder.uitofp(values, wide)
        offset = splat(builder, offset_v, wide)
        divisor = ir.Constant(wide, [255.0] * 2 * STEP)
        inverse = splat(builder, builder.fdiv(ir.Constant(elem, 1.0), ir.Constant(elem, 255.0)), wide)  # a constant
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(wide, [wide] * 3),
                                             f"llvm.fma.v{2 * STEP}f{8 * align}")
        guess = builder.fmul(x, inverse)
        remainder = builder.call(fma, [builder.fneg(guess), divisor, x])
        quotient = builder.call(fma, [remainder, inverse, guess])
        even_ptr = _vector_at(context, builder, even, even_v, e_t, e_v, half)
        _store_split(builder, builder.fsub(quotient, offset), even_ptr,
                     _vector_at(context, builder, odd, odd_v, o_t, o_v, half), align)
        return context.get_dummy_value()

    return types.void(src, s, offset, even, e, odd, o), codegen


scale_split_step = _scale_split_step_python if config.DISABLE_JIT else _scale_split_step_vector


@serial  # not reassociated: in the order of q
def unblocked_sums_loop(grad, code, start, stop, lanes, check, zero_blocked):
    """For start <= q < stop: lanes[q % STEP] += grad[q] (0 where code[q] is 4), in order of q, and
    check[q % STEP] += that * 0 (NaN for an inf or NaN) with zero_blocked, which sets the blocked entries
    of grad to 0, or else grad[q] * 0 (blocked or not). The plain loop that unblocked_sums stands for,
    and the rest of a map past its whole vector steps."""
    zero = grad.dtype.type(0.0)
    for q in range(start, stop):
        g = grad[q]
        kept = g if code[q] < 4 else zero
        if zero_blocked:
            grad[q] = kept
        lanes[q % STEP] += kept
        check[q % STEP] += (kept if zero_blocked else g) * zero


def _unblocked_sums_python(grad, code, whole, lanes, check, zero_blocked):
    """unblocked_sums_loop over q < whole (a multiple of STEP): what _unblocked_sums_vector computes."""
    unblocked_sums_loop(grad, code, 0, whole, lanes, check, zero_blocked)


@intrinsic
def _unblocked_sums_vector(typingctx, grad, code, whole, lanes, check, zero_blocked):
    """unblocked_sums_loop over q < whole (a multiple of STEP) as one loop of vector operations (IEEE: no
    fast-math flags), the lane sums kept in registers; zero_blocked must be a constant. No bounds checks
    (the caller's)."""
    if not all(isinstance(a, types.Array) and a.ndim == 1 for a in (grad, code, lanes, check)):
        raise TypingError("unblocked_sums takes 1-D arrays")
    if not (grad.dtype == lanes.dtype == check.dtype and isinstance(grad.dtype, types.Float)
            and code.dtype == types.int8):
        raise TypingError("unblocked_sums needs float grad, lanes and check of one dtype and int8 codes")
    if not isinstance(zero_blocked, types.BooleanLiteral):
        raise TypingError("unblocked_sums' zero_blocked must be a literal True or False")
    store = zero_blocked.literal_value

    def codegen(context, builder, signature, args):
        elem = context.get_data_type(grad.dtype)
        align = context.get_abi_sizeof(elem)
        floats, codes = ir.VectorType(elem, STEP), ir.VectorType(ir.IntType(8), STEP)
        intp = context.get_value_type(types.intp)

        def at(array_type, array, index, vector):  # &array[index] as a vector pointer
            data = context.make_array(array_type)(context, builder, array).data
            return builder.bitcast(builder.gep(data, [index], inbounds=True), vector.as_pointer())

        grad_v, code_v, whole_v, lanes_v, check_v, _ = args
        whole_n = context.cast(builder, whole_v, signature.args[2], types.intp)
        zeros = ir.Constant(floats, [0.0] * STEP)
        sums = []  # the two running vectors, in allocas that LLVM turns into registers
        for array_type, array in ((lanes, lanes_v), (check, check_v)):
            ptr = cgutils.alloca_once(builder, floats)
            start = builder.load(at(array_type, array, ir.Constant(intp, 0), floats), align=align, typ=floats)
            builder.store(start, ptr)
            sums.append(ptr)
        with cgutils.for_range_slice(builder, ir.Constant(intp, 0), whole_n, ir.Constant(intp, STEP), intp) as (q, _):
            g_ptr = at(grad, grad_v, q, floats)
            g = builder.load(g_ptr, align=align, typ=floats)
            k = builder.load(at(code, code_v, q, codes), align=1, typ=codes)
            kept = builder.select(builder.icmp_signed("<", k, ir.Constant(codes, [4] * STEP)), g, zeros)
            if store:
                builder.store(kept, g_ptr, align=align)
            for ptr, value in ((sums[0], kept), (sums[1], builder.fmul(kept if store else g, zeros))):
                builder.store(builder.fadd(builder.load(ptr), value), ptr)
        for (array_type, array), ptr in zip(((lanes, lanes_v), (check, check_v)), sums):
            builder.store(builder.load(ptr), at(array_type, array, ir.Constant(intp, 0), floats), align=align)
        return context.get_dummy_value()

    return types.void(grad, code, whole, lanes, check, zero_blocked), codegen


unblocked_sums = _unblocked_sums_python if config.DISABLE_JIT else _unblocked_sums_vector


def _prefetch_python(array, index):
    """Nothing: a hint only."""


@intrinsic
def _prefetch_vector(typingctx, array, index):
    """A hint that array[index]'s cache line will be read soon: LLVM's prefetch, into L2 (prefetcht1)."""
    if not (isinstance(array, types.Array) and array.ndim == 1):
        raise TypingError("prefetch takes a 1-D array")

    def codegen(context, builder, signature, args):
        array_v, index_v = args
        data = context.make_array(array)(context, builder, array_v).data
        i = context.cast(builder, index_v, signature.args[1], types.intp)
        byte_ptr = ir.IntType(8).as_pointer()
        address = builder.bitcast(builder.gep(data, [i], inbounds=True), byte_ptr)
        i32 = ir.IntType(32)
        signature_ = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        function = cgutils.get_or_insert_function(builder.module, signature_, "llvm.prefetch.p0")
        # read (0), locality 2 (L2), data cache (1)
        builder.call(function, [address, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


prefetch = _prefetch_python if config.DISABLE_JIT else _prefetch_vector
