"""CIFAR-10 in memory: the ``Dataset`` container, its channel statistics, and a synthetic stand-in of
the same layout for quick tests.

Shapes use N (images), C (channels, 3: red, green, blue), H and W (32 each).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from minicnn.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)


@dataclasses.dataclass(repr=False)
class Dataset:
    """CIFAR-10 (or a stand-in of the same layout) in memory.

    x_train: (N, 3, 32, 32) uint8, C-contiguous, channels red, green, blue.
    y_train: (N,) int64 labels in 0..9.
    x_test, y_test: the same for the test split.
    classes: the 10 class names in label order.
    channel_mean, channel_std: (3,) float64, per-channel mean and population standard deviation of
        the FULL training set in [0, 1] pixel units (also when only the first images were loaded).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    channel_mean: np.ndarray
    channel_std: np.ndarray

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset(x_train={self.x_train.shape} {self.x_train.dtype}, "
            f"x_test={self.x_test.shape} {self.x_test.dtype}, classes={len(self.classes)})"
        )


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std of uint8 images in [0, 1] units.

    x: (N, C, H, W) uint8. Returns two (C,) float64 arrays. Counts pixel values with integer
    arithmetic, so the result does not depend on summation order and needs no float copy of x.
    """
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"channel_stats expects (N, C, H, W) uint8 images, got {x.shape} {x.dtype}")
    values = np.arange(256, dtype=np.int64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].ravel(), minlength=256).astype(np.int64)
        n = int(counts.sum())
        if n == 0:
            means.append(0.0)
            stds.append(0.0)
            continue
        s1 = int((counts * values).sum())
        s2 = int((counts * values * values).sum())
        means.append(s1 / n / 255.0)
        stds.append(((s2 * n - s1 * s1) / (n * n)) ** 0.5 / 255.0)  # exact integer variance
    return np.array(means, dtype=np.float64), np.array(stds, dtype=np.float64)


# --------------------------------------------------------------------------------- synthetic stand-in
SYNTHETIC_COLOURS = np.array([
    [200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [200, 60, 200],
    [60, 200, 200], [128, 128, 128], [230, 140, 30], [30, 120, 230], [110, 30, 160],
], dtype=np.float64)


def make_synthetic(n_train: int, n_test: int, rng: np.random.Generator | None = None) -> Dataset:
    """A small CIFAR-shaped dataset for fast tests: each class has its own mean colour plus noise.

    Returns x (n, 3, 32, 32) uint8 and y (n,) int64 in 0..9 for both splits; a linear model on
    average colours separates the classes, so a short training run reaches high accuracy. Save it
    with ``minicnn.io.cache.write_cache`` for quick command-line runs.
    """
    rng = np.random.default_rng(0) if rng is None else rng

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, len(CLASSES), size=n).astype(np.int64)
        noise = rng.normal(0.0, 30.0, size=(n, *IMAGE_SHAPE))
        x = SYNTHETIC_COLOURS[y][:, :, None, None] + noise
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    mean, std = channel_stats(x_train)
    return Dataset(x_train, y_train, x_test, y_test, list(CLASSES), mean, std)
