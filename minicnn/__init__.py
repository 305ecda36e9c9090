"""minicnn: a from-scratch NumPy/Numba CNN for studying how pruning changes a small CIFAR-10 model."""

__version__ = "0.1.0"
