"""A PixelBatch (minicnn/nn/pixels.py: uint8 images by rows, normalised through a table) stands for
exactly the float batch that io.data.normalize gives: the table, floats(), the whole-model op reading the
pixels itself (fast/images.py), the reference op and the layer-by-layer models, and a training epoch."""

from __future__ import annotations

import numpy as np
import pytest

from minicnn.io.data import NORMALIZATIONS, Normalizer, normalize
from minicnn.nn.pixels import PixelBatch, affine_offsets, as_floats
from _fast_compare import fast, ref
from test_fast_convnet import CONVNET_GRID

MEAN, STD = np.array([0.49, 0.48, 0.45]), np.array([0.25, 0.24, 0.26])


def uint8_images(rng, shape):
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_table_and_floats_are_normalize_bit_for_bit(mode, rng):
    """Every pixel value's table entry is normalize's value, so floats() of any rows (repeated, unsorted)
    is normalize(images[rows]) bit for bit."""
    images = uint8_images(rng, (20, 3, 5, 7))
    images[0, :, 0, :4] = [[0, 1, 254, 255]] * 3  # the ends of the range, in every channel
    normalizer = Normalizer(mode, MEAN, STD)
    for c in range(3):
        np.testing.assert_array_equal(normalizer.table[c], normalize(np.arange(256, dtype=np.uint8).reshape(
            1, 1, 1, 256).repeat(3, axis=1), mode, MEAN, STD)[0, c, 0])
    rows = np.array([7, 0, 19, 7, 3])
    batch = normalizer.batch(images, rows)
    assert isinstance(batch, PixelBatch) and batch.shape == (5, 3, 5, 7) and batch.dtype == np.float32
    want = normalize(images[rows], mode, MEAN, STD)
    np.testing.assert_array_equal(batch.floats(), want)
    np.testing.assert_array_equal(as_floats(batch), want)
    looked_up = PixelBatch.of(images, rows, normalizer.table)  # no function: floats() from the table
    assert looked_up.convert is None
    np.testing.assert_array_equal(looked_up.floats(), want)
    np.testing.assert_array_equal(normalizer(images[rows]), want)
    assert as_floats(want) is want


def test_a_layout_the_op_cannot_read_is_a_float_batch_or_an_error(rng):
    """Normalizer.batch gives the float batch for images that are not C-contiguous uint8 (a strided view);
    PixelBatch.of refuses what it cannot read, naming it."""
    images = uint8_images(rng, (10, 3, 4, 4))
    normalizer = Normalizer("center", None, None)
    strided = images[::2]
    got = normalizer.batch(strided, np.array([1, 2]))
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, normalize(strided[[1, 2]], "center"))
    with pytest.raises(ValueError, match="C-contiguous"):
        PixelBatch.of(strided, [0], normalizer.table)
    with pytest.raises(ValueError, match="C-contiguous"):
        PixelBatch.of(images.astype(np.float32), [0], normalizer.table)
    with pytest.raises(ValueError, match="table"):
        PixelBatch.of(images, [0], normalizer.table[:2])
    with pytest.raises(ValueError, match=r"indices in \[0, 10\)"):
        PixelBatch.of(images, [10], normalizer.table)


def pixel_case(rng, case, pruned, mode="standard"):
    """A CONVNET_GRID case's weights (test_fast_convnet.convnet_inputs) over uint8 images: a dataset of
    more images than the batch, its rows unsorted and one repeated; ``mode``'s table ('standard': looked
    up, 'center': computed, see pixels.affine_offsets)."""
    from test_fast_convnet import convnet_inputs

    n, c, h, w = case[:4]
    _, wt, b, p, fc_w, fc_b, labels, mask, fc_mask = convnet_inputs(rng, case, pruned)
    images = uint8_images(rng, (n + 5, c, h, w))
    rows = rng.permutation(n + 5)[:n]
    rows[-1] = rows[0]
    table = Normalizer(mode, MEAN[:c], STD[:c], channels=c).table
    return PixelBatch.of(images, rows, table), (wt, b, p, fc_w, fc_b), labels, mask, fc_mask


WIDE_CASES = CONVNET_GRID + [(3, 3, 8, 64, 5, 3, 1, 3)]  # rows of two vector steps


@pytest.mark.parametrize("case", WIDE_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("pruned", [None, "sparse"])
@pytest.mark.parametrize("mode", ["standard", "center"])
def test_whole_model_op_reads_pixels_as_their_floats(case, pruned, mode, rng):
    """The fast op given a PixelBatch returns what it returns for the batch's floats, bit for bit
    (training and inference): the unpacking through the table (whole vector steps by a gather, or
    computed for 'center', other widths pixel by pixel) puts the same values in the same places."""
    batch, params, labels, mask, fc_mask = pixel_case(rng, case, pruned, mode)
    assert batch.offsets.size == (0 if mode == "standard" else case[1])
    floats = batch.floats()
    got = fast.conv_relu_pool_linear_loss(batch, *params, labels, mask, fc_mask)
    want = fast.conv_relu_pool_linear_loss(floats, *params, labels, mask, fc_mask)
    assert got[0] == want[0]
    for a, b in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.conv_relu_pool_linear_forward(batch, *params),
                                  fast.conv_relu_pool_linear_forward(floats, *params))
    ref_got = ref.conv_relu_pool_linear_loss(batch, *params, labels, mask, fc_mask)
    ref_want = ref.conv_relu_pool_linear_loss(floats, *params, labels, mask, fc_mask)
    for a, b in zip(ref_got[1:], ref_want[1:]):
        np.testing.assert_array_equal(a, b)


def test_a_table_with_an_inf_takes_the_exact_path(rng):
    """A table entry of inf (a pixel value that normalises to inf): the op's weight gradient goes the
    way that is exact for non-finite pixels (conv_passes.weight_grad_codes needs finite ones), as for
    the same float batch."""
    batch, params, labels, mask, fc_mask = pixel_case(rng, CONVNET_GRID[0], None)
    table = batch.table.copy()
    value = batch.images[batch.rows[1], 1, 5, 6]
    table[1, value] = np.inf
    batch = PixelBatch.of(batch.images, batch.rows, table)
    got = fast.conv_relu_pool_linear_loss(batch, *params, labels)
    want = fast.conv_relu_pool_linear_loss(batch.floats(), *params, labels)
    for a, b in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(a, b)
    assert not np.isfinite(got[2]).all()  # the inf reached the weight gradient


def test_affine_offsets_find_the_tables_the_op_computes():
    """pixels.affine_offsets: 'center' and 'unit' tables are v / 255 - b (b = 0.5, -0.0), in float32 and
    float64; 'standard' ones and a table with one entry off by its last bit are looked up (no offsets)."""
    assert np.array_equal(affine_offsets(Normalizer("center", None, None).table), [0.5] * 3)
    unit = affine_offsets(Normalizer("unit", None, None).table)
    assert unit.shape == (3,) and np.all(unit == 0.0)
    assert affine_offsets(Normalizer("standard", MEAN, STD).table).size == 0
    wide = (np.arange(256, dtype=np.float64) / 255.0 - 0.25)[None, :].repeat(2, axis=0)
    assert np.array_equal(affine_offsets(wide), [0.25, 0.25]) and affine_offsets(wide).dtype == np.float64
    off = Normalizer("center", None, None).table.copy()
    off[2, 77] = np.nextafter(off[2, 77], np.float32(1.0))
    assert affine_offsets(off).size == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_split_step_equals_its_python_twin(dtype):
    """The computed de-interleave (minicnn/nn/fast/_simd.py: v / 255 as a product and a multiply-add
    correction) against the plain loop it stands for, bit for bit, over every byte value, at odd
    offsets; the twin against NumPy's division."""
    from numba import njit

    from minicnn.nn.fast._simd import STEP, _scale_split_step_python, _scale_split_step_vector

    @njit
    def compiled(src, s, offset, even, e, odd, o):
        _scale_split_step_vector(src, s, offset, even, e, odd, o)

    bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
    src = np.arange(256 + 2 * STEP, dtype=np.int64).astype(np.uint8)  # every value, then 0 .. 2*STEP-1
    for offset in (0.5, -0.0, 0.25, 0.4914):
        offset = dtype(offset)
        for s, e, o in [(0, 0, 0), (32, 5, 1), (96, 2, 7), (224, 0, 3), (255, 1, 1)]:
            got_even, got_odd = np.full(STEP + 8, -1.0, dtype), np.full(STEP + 8, -1.0, dtype)
            want_even, want_odd = got_even.copy(), got_odd.copy()
            compiled(src, s, offset, got_even, e, got_odd, o)
            _scale_split_step_python(src, s, offset, want_even, e, want_odd, o)
            np.testing.assert_array_equal(got_even.view(bits), want_even.view(bits))
            np.testing.assert_array_equal(got_odd.view(bits), want_odd.view(bits))
            values = src[s + 1:s + 2 * STEP:2].astype(dtype) / dtype(255.0) - offset
            np.testing.assert_array_equal(want_odd[o:o + STEP], values)


def test_lookup_split_step_equals_its_python_twin(rng):
    """The gathering de-interleave (minicnn/nn/fast/_simd.py) against the plain loop it stands for, at
    odd offsets, over every byte value."""
    from numba import njit

    from minicnn.nn.fast._simd import STEP, _lookup_split_step_python, _lookup_split_step_vector

    @njit
    def compiled(src, s, table, even, e, odd, o):
        _lookup_split_step_vector(src, s, table, even, e, odd, o)

    table = rng.standard_normal(256).astype(np.float32)
    src = np.arange(256 + 2 * STEP, dtype=np.int64).astype(np.uint8)  # every value, then 0 .. 2*STEP-1
    for s, e, o in [(0, 0, 0), (3, 5, 1), (224, 2, 7), (255, 0, 3)]:
        got_even, got_odd = np.full(STEP + 8, -1.0, np.float32), np.full(STEP + 8, -1.0, np.float32)
        want_even, want_odd = got_even.copy(), got_odd.copy()
        compiled(src, s, table, got_even, e, got_odd, o)
        _lookup_split_step_python(src, s, table, want_even, e, want_odd, o)
        np.testing.assert_array_equal(got_even, want_even)
        np.testing.assert_array_equal(got_odd, want_odd)
        np.testing.assert_array_equal(want_odd[o:o + STEP], table[src[s + 1:s + 2 * STEP:2]])


@pytest.mark.parametrize("spec", ["paper", "conv4,relu,conv4,relu,pool2,flatten,linear10"])
def test_an_epoch_through_a_normalizer_trains_as_through_float_batches(spec):
    """train_epoch and evaluate with a Normalizer (PixelBatches) and with a plain function of the
    same values give the same weights and metrics bit for bit: the paper's model reads the pixels in its
    op, any other model gets the floats."""
    from minicnn.io.dataset import make_synthetic
    from minicnn.nn.model import build_model
    from minicnn.nn.train import Optimizer, SGDConfig, evaluate, train_epoch

    data = make_synthetic(70, 10, np.random.default_rng(1))
    normalizer = Normalizer("standard", data.channel_mean, data.channel_std)
    runs = []
    for normalize in (normalizer, lambda x: normalizer(x)):
        model = build_model(spec, np.random.default_rng(0))
        stats = train_epoch(model, Optimizer(SGDConfig(lr=0.1)), data.x_train, data.y_train, normalize, 32,
                            np.random.default_rng(2))
        runs.append((stats["loss"], evaluate(model, data.x_test, data.y_test, normalize, batch_size=4),
                     [p.copy() for layer in model.param_layers() for p in layer.params.values()]))
    (loss_a, eval_a, params_a), (loss_b, eval_b, params_b) = runs
    assert loss_a == loss_b and eval_a == eval_b
    for a, b in zip(params_a, params_b):
        np.testing.assert_array_equal(a, b)
