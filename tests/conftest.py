"""Shared fixtures.

- ``rng``: a fresh, seeded ``np.random.Generator`` per test (nothing touches the global RNG).
- ``real_data``: the CIFAR-10 archive named by ``MINICNN_DATA``; tests using it are skipped when the
  variable is unset or points nowhere. The HDF5 cache is built in a session temporary folder unless
  ``MINICNN_CACHE`` is already set.
- ``synthetic_cache`` / ``make_synthetic_cache``: a tiny CIFAR-shaped HDF5 cache (``minicnn.io.dataset``'s
  synthetic stand-in), for command-line and training tests that need a ``--data`` file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Read once at import: some test modules clear MINICNN_DATA for their own tests.
_REAL_DATA = os.environ.get("MINICNN_DATA", "").strip()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> str:
    """Path of the real CIFAR-10 source (archive, folder or cache) from MINICNN_DATA, else skip."""
    path = os.environ.get("MINICNN_DATA", "").strip() or _REAL_DATA
    if not path or not Path(path).exists():
        pytest.skip("set MINICNN_DATA to a CIFAR-10 archive (e.g. cifar-10-binary.tar.gz) to run real-data tests")
    added_cache = not os.environ.get("MINICNN_CACHE", "").strip()
    if added_cache:
        os.environ["MINICNN_CACHE"] = str(tmp_path_factory.mktemp("minicnn-cache"))
    yield path
    if added_cache:
        os.environ.pop("MINICNN_CACHE", None)


@pytest.fixture(scope="session")
def make_synthetic_cache(tmp_path_factory):
    """make(n_train, n_test, seed=0) -> path of a synthetic HDF5 cache (built once per argument set)."""
    from minicnn.io import cache, dataset

    built: dict[tuple, Path] = {}

    def make(n_train: int, n_test: int, seed: int = 0) -> Path:
        key = (n_train, n_test, seed)
        if key not in built:
            path = tmp_path_factory.mktemp("synthetic") / f"synthetic-{n_train}-{n_test}-{seed}.h5"
            built[key] = cache.write_cache(dataset.make_synthetic(n_train, n_test, np.random.default_rng(seed)), path,
                                           source="synthetic", source_format="synthetic")
        return built[key]

    return make


@pytest.fixture(scope="session")
def synthetic_cache(make_synthetic_cache) -> Path:
    """A 512-train / 128-test synthetic cache (read-only by convention: tests must not modify it)."""
    return make_synthetic_cache(512, 128)
