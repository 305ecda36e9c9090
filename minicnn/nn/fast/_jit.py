"""The one place with Numba options.

- cache=True: compiled machine code is stored beside the sources, in a folder named after their hash
  (see _kernel_cache_dir), so a second run compiles nothing.
- parallel=True: `prange` loops are split across threads (numba.get_num_threads()).
- fastmath: every kernel may contract a*b + c into one fused multiply-add ('contract': one
  rounding instead of two, and twice the arithmetic per instruction). Kernels whose inner loop is
  a sum (a reduction) may also reassociate it: without that LLVM must add in order and cannot use
  SIMD lanes. Never 'nnan'/'ninf': a diverging run must still see its NaNs.
"""

from __future__ import annotations

import os

# Pin the threads of parallel loops to cores (unpinned, 2 threads ran slower than 1: 27 vs 18 ms per
# batch; pinned 16 ms). Only for multi-threaded runs the user has not configured: one-thread sweep
# workers must not all be pinned to the first core.
if "OMP_PROC_BIND" not in os.environ and os.environ.get("NUMBA_NUM_THREADS", "") != "1" and (os.cpu_count() or 1) > 1:
    os.environ["OMP_PROC_BIND"] = "true"

#: The cores this process may run on, as when this module was imported: an OpenMP runtime that pins
#: (OMP_PROC_BIND) binds the thread that loads it to its first core, and a second runtime loaded after it
#: would see that one core only (see minicnn.ladder.machine.import_torch). None where the OS has no
#: affinity calls.
PROCESS_CORES = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def _wide_vector_features() -> str | None:
    """On a CPU with AVX-512, the target features that let LLVM vectorise with 512-bit registers (else
    None). LLVM's tuning for such CPUs prefers 256-bit vectors (some throttle their clock on wide ones);
    our loops are bound by instruction throughput, not by the clock (a training step 1.2x faster). A
    user's own NUMBA_CPU_FEATURES wins."""
    if "NUMBA_CPU_FEATURES" in os.environ:
        return None
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    features = llvm.get_host_cpu_features()
    return features.flatten() + ",-prefer-256-bit" if features.get("avx512f") else None


_CPU_FEATURES = _wide_vector_features()


def _kernel_cache_dir(sources=None) -> str | None:
    """Where the compiled kernels are cached: a folder named after a hash of all of minicnn/nn/fast's
    sources (None where the user set NUMBA_CACHE_DIR). Numba re-checks only the file that defines a
    kernel, but a kernel's machine code holds every helper it calls from other files (convnet.py's from
    conv_passes.py, parity.py's from _simd.py): after a change to a helper alone, it would load stale code.
    Beside the sources (``sources``: this folder) if that folder is writable, else in the user's cache
    folder."""
    if "NUMBA_CACHE_DIR" in os.environ:
        return None
    import hashlib
    from pathlib import Path

    here = Path(sources or Path(__file__).resolve().parent)
    digest = hashlib.sha256()
    for source in sorted(here.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    name = f"numba-{digest.hexdigest()[:16]}"
    beside = here / "__pycache__"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return str(beside / name)
    except OSError:
        pass
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minicnn" / name)


_CACHE_DIR = _kernel_cache_dir()

import numba  # noqa: E402  (after the environment above, which the OpenMP runtime reads when it starts)

if _CACHE_DIR is not None:  # read when a cached kernel is defined, i.e. after this module (see above)
    numba.config.CACHE_DIR = _CACHE_DIR

# Set on Numba's settings rather than in os.environ: Numba may already be imported (a kernel module's
# `from numba import prange` comes first), and when the environment changes it re-reads all of it,
# including settings it can no longer change (NUMBA_NUM_THREADS, once its threads run). Its code
# generator starts at the first compilation or cache lookup, so this applies unless one came before.
if _CPU_FEATURES is not None and numba.config.CPU_FEATURES is None:
    numba.config.CPU_FEATURES = _CPU_FEATURES

REDUCTION_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

kernel = numba.njit(cache=True, parallel=True, nogil=True, fastmath={"contract"})
reduction_kernel = numba.njit(cache=True, parallel=True, nogil=True, fastmath=REDUCTION_FASTMATH)
serial = numba.njit(cache=True, nogil=True, fastmath={"contract"})
serial_reduction = numba.njit(cache=True, nogil=True, fastmath=REDUCTION_FASTMATH)
# A stage of a kernel's loop, inlined into the kernel's Numba IR and so compiled under the kernel's flags:
# no call, so no reference counting of its array arguments per call (as calls: whole-model op 2-4 % slower).
stage = numba.njit(cache=True, nogil=True, inline="always")


def num_threads() -> int:
    """Threads Numba will use for prange loops."""
    return numba.get_num_threads()
