"""The machine a measurement ran on, for the ladder's harness and the benchmarks: the CPU model, and
NumPy's float32 matrix product in GFLOP/s (the machine's practical peak on the threads its BLAS uses)."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name:")]
    return names[0] if names else "unknown (no lscpu)"


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """NumPy's float32 (size x size) @ (size x size) in GFLOP/s, the best of ``repeats``. Measure it before
    any Numba kernel runs: Numba pins its threads to cores, and BLAS's main thread with them."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a @ a
    best = min(seconds(lambda: a @ a) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def seconds(fn) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def import_torch():
    """PyTorch, imported so that its OpenMP threads and minicnn's each get every core (ImportError
    without it). With OMP_PROC_BIND=true (minicnn's default, see minicnn/nn/fast/_jit.py), an OpenMP
    runtime binds the thread that loads it to its first core; a second runtime started after it in the
    same process (Numba's after PyTorch's, or the other way round) then sees that one core only and puts
    all its threads there: Conv-2's 64x64 conv ran 1.8x slower on two threads. So the loading thread
    gets the process's cores back before the import (minicnn's runtime may have bound it) and after it."""
    from minicnn.nn.fast._jit import PROCESS_CORES

    if PROCESS_CORES is not None:
        os.sched_setaffinity(0, PROCESS_CORES)
    import torch

    if PROCESS_CORES is not None:
        os.sched_setaffinity(0, PROCESS_CORES)
    return torch
