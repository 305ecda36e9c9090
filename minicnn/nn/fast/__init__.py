"""Numba twins of minicnn.nn.ref: same file names, function names, signatures and contracts; faster.

Each kernel says in a comment what it does differently from the reference and why. All kernels also
run as plain Python under NUMBA_DISABLE_JIT=1 (prange is then range), which the tests use to check
the kernel logic itself.
"""

from minicnn.nn.fast.heap import keep_freed_memory

keep_freed_memory()  # freed batch buffers stay in the process for the next batch (see heap.py)
