"""The fast path's Numba decorators (minicnn/nn/fast/_jit.py: its options, 512-bit vectors where the
CPU has them, cache=True), caching into a folder of the ladder's own.

Numba re-checks only the file that defines a kernel, but a kernel's machine code holds the helpers it
calls from other files (rung 6's kernels hold rung 5's image fill and pooling), so after a change to
rung 5 alone it would load stale code. So, as the fast path does for its files, the ladder's kernels
are cached in a folder named after a hash of the ladder's sources (but the harness, __main__.py, which
compiles nothing), inside the fast path's cache folder (named after fast/'s sources, _jit.py's options
among them): after any change to either, the kernels compile afresh. A user's NUMBA_CACHE_DIR wins.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from minicnn.nn.fast import _jit

import numba  # noqa: E402,I001  (after _jit, which sets up the environment Numba reads)

num_threads = _jit.num_threads


def _cache_dir() -> str | None:
    """<the fast path's cache folder>/ladder-<hash of minicnn/ladder/*.py but __main__.py>; None
    (Numba's own choice) under a user's NUMBA_CACHE_DIR."""
    if "NUMBA_CACHE_DIR" in os.environ or not numba.config.CACHE_DIR:
        return None
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).resolve().parent.glob("*.py")):
        if source.name == "__main__.py":
            continue
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return str(Path(numba.config.CACHE_DIR) / f"ladder-{digest.hexdigest()[:16]}")


_CACHE_DIR = _cache_dir()


def _cached_here(decorator):
    """``decorator`` (one of fast/_jit.py's), with Numba's cache folder set to the ladder's while it
    applies: Numba picks a function's cache folder when it is decorated."""
    def decorate(fn):
        saved = numba.config.CACHE_DIR
        if _CACHE_DIR is not None:
            numba.config.CACHE_DIR = _CACHE_DIR
        try:
            return decorator(fn)
        finally:
            numba.config.CACHE_DIR = saved
    return decorate


kernel = _cached_here(_jit.kernel)
reduction_kernel = _cached_here(_jit.reduction_kernel)
serial = _cached_here(_jit.serial)
serial_reduction = _cached_here(_jit.serial_reduction)
