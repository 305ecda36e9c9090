"""NumPy reference implementation: the specification. Plain, readable, never imports numba."""
