"""The engine: the NumPy reference ops (ref/), their Numba twins (fast/), the one switch between them
(backend), layers, models and the training loop."""
