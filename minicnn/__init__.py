"""minicnn: a from-scratch NumPy/Numba CNN for studying how pruning changes a small CIFAR-10 model."""

__version__ = "0.1.0"

import os as _os

# NumPy's OpenBLAS threads (the wide linear layers' matrix products) wait for the next product by
# spinning on their cores for about 0.1 s, where the Numba kernels run next: Conv-2's inference ran
# 1.25x slower and its training 1.05x. OpenBLAS reads this when it loads, so it is set here, before NumPy
# is imported (a user's own setting wins); its threads then sleep right away.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
