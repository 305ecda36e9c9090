"""The one place with Numba options.

- cache=True: compiled machine code is stored beside the sources, so a second run compiles nothing.
- parallel=True: `prange` loops are split across threads (numba.get_num_threads()).
- fastmath: every kernel may contract a*b + c into one fused multiply-add ('contract': one
  rounding instead of two, and twice the arithmetic per instruction). Kernels whose inner loop is
  a sum (a reduction) may also reassociate it: without that LLVM must add in order and cannot use
  SIMD lanes. Never 'nnan'/'ninf': a diverging run must still see its NaNs.
"""

from __future__ import annotations

import numba

REDUCTION_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

kernel = numba.njit(cache=True, parallel=True, nogil=True, fastmath={"contract"})
reduction_kernel = numba.njit(cache=True, parallel=True, nogil=True, fastmath=REDUCTION_FASTMATH)
serial = numba.njit(cache=True, nogil=True, fastmath={"contract"})


def num_threads() -> int:
    """Threads Numba will use for prange loops."""
    return numba.get_num_threads()
