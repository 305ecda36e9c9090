"""The engine: the NumPy reference ops (ref/), their Numba twins (fast/), the one switch between them
(backend), layers, models, the memory a model needs (footprint) and the training loop."""
