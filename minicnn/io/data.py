"""CIFAR-10 as the training code sees it: ``load_cifar10`` (through the HDF5 cache, see
minicnn.io.cache) and per-batch normalisation to float32 (never stored in the cache).

    minicnn.io.dataset   the in-memory Dataset, channel statistics, a synthetic stand-in
    minicnn.io.archive   the official archives: download, md5 verification, decoding
    minicnn.io.cache     the HDF5 cache: where it lives, prepare, load, info
"""

from __future__ import annotations

import os

import numpy as np

from minicnn.errors import DataError
from minicnn.io.cache import load_cache, prepare, resolve_source
from minicnn.io.dataset import Dataset
from minicnn.nn.pixels import PixelBatch, affine_offsets


def _check_limit(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive whole number of images, got {value!r}")
    return int(value)


def load_cifar10(data: str | os.PathLike | None = None, *, train_limit: int | None = None,
                 test_limit: int | None = None, download: bool = True) -> Dataset:
    """Load CIFAR-10, building the cache first if needed (see ``minicnn.io.cache.prepare``).

    data: archive, folder, URL or .h5 cache; None -> ``$MINICNN_DATA`` -> the user cache.
    train_limit, test_limit: keep only the first N images of each split (positive ints).
    Returns a Dataset: x (N, 3, 32, 32) uint8, y (N,) int64, full-training-set channel statistics.
    """
    train_limit = _check_limit(train_limit, "train_limit")
    test_limit = _check_limit(test_limit, "test_limit")
    path = prepare(resolve_source(data), download=download)
    return load_cache(path, train_limit=train_limit, test_limit=test_limit)


# ------------------------------------------------------------------------------ batches and scaling
NORMALIZATIONS = ("center", "unit", "standard")


def normalize(x_uint8: np.ndarray, mode: str, mean: np.ndarray | None = None,
              std: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Scale uint8 images to float32.

    x_uint8: (N, C, H, W) uint8 (center and unit accept any shape).
    mode: 'center' -> x/255 - 0.5 (the default elsewhere: it lets the paper's lr 0.8 train),
          'unit' -> x/255, 'standard' -> (x/255 - mean[c]) / std[c] per channel.
    mean, std: (C,) in [0, 1] units, needed for 'standard' (Dataset.channel_mean/channel_std).
    out: optional float32 array of x's shape to write into.
    Returns float32 of x's shape.
    """
    if mode not in NORMALIZATIONS:
        raise DataError(f"unknown normalisation {mode!r}; choose one of {', '.join(NORMALIZATIONS)}")
    x = np.asarray(x_uint8)
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    elif out.shape != x.shape or out.dtype != np.float32:
        raise DataError(f"normalize: out must be float32 of shape {x.shape}, got {out.dtype} {out.shape}")
    np.divide(x, np.float32(255.0), out=out, dtype=np.float32)
    if mode == "center":
        out -= np.float32(0.5)
    elif mode == "standard":
        if mean is None or std is None:
            raise DataError("normalisation 'standard' needs the channel mean and std of the training set")
        if x.ndim != 4 or x.shape[1] != len(mean) or len(std) != len(mean):
            raise DataError(f"normalisation 'standard' expects (N, {len(mean)}, H, W) images, got {x.shape}")
        m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
        if np.any(s <= 0):
            raise DataError("normalisation 'standard' needs a positive std for every channel")
        out -= m
        out /= s
    return out


class Normalizer:
    """``normalize`` with one mode and one dataset's channel statistics: called on a uint8 batch (N, C, H,
    W) it returns the float32 batch; ``batch(images, rows)`` gives the training loop images[rows] as a
    PixelBatch instead (minicnn.nn.pixels), which the paper model's op normalises as it reads it."""

    def __init__(self, mode: str, mean: np.ndarray | None, std: np.ndarray | None, channels: int = 3):
        self.mode, self.mean, self.std = mode, mean, std
        # every pixel value of every channel, normalised: the table a PixelBatch looks pixels up in
        values = np.broadcast_to(np.arange(256, dtype=np.uint8), (1, channels, 1, 256))
        self.table = normalize(values, mode, mean, std).reshape(channels, 256)  # validates the mode too
        self.offsets = affine_offsets(self.table)  # 'unit' and 'center': computed, not looked up

    def __call__(self, x_uint8: np.ndarray) -> np.ndarray:
        return normalize(x_uint8, self.mode, self.mean, self.std)

    def batch(self, images: np.ndarray, rows: np.ndarray):
        """images[rows] for a training step: a PixelBatch where images are C-contiguous (M, C, H, W)
        uint8 of the table's channels (a Dataset's split), else the float32 batch."""
        if (images.dtype == np.uint8 and images.ndim == 4 and images.shape[1] == len(self.table)
                and images.flags.c_contiguous):
            return PixelBatch.of(images, rows, self.table, self, self.offsets)
        return self(images[rows])


def make_normalizer(mode: str, dataset) -> Normalizer:
    """A Normalizer: uint8 batch (N, 3, H, W) -> float32 batch, with the dataset's channel statistics."""
    return Normalizer(mode, dataset.channel_mean, dataset.channel_std)
