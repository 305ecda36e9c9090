"""Numba SGD step: same contract and arithmetic as minicnn.ref.sgd, fused into one pass.

The reference builds temporaries (g, velocity, lr * step); this kernel updates param and velocity
element by element in place, across threads, reading each array once.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.fast._jit import kernel


@kernel
def _sgd(param, grad, velocity, mask, lr, momentum, weight_decay, first, use_mask):
    for i in prange(param.size):
        keep = mask[i] if use_mask else 1.0
        g = (grad[i] + weight_decay * param[i]) * keep
        if momentum != 0.0:
            v = g if first else (momentum * velocity[i] + g) * keep
            velocity[i] = v
            g = v
        param[i] -= lr * g


def sgd_step(param: np.ndarray, grad: np.ndarray, velocity: np.ndarray | None, lr: float,
             momentum: float = 0.0, weight_decay: float = 0.0, mask: np.ndarray | None = None):
    """Update ``param`` in place; returns the new velocity (None when momentum is 0)."""
    first = velocity is None
    if momentum and first:
        velocity = np.zeros_like(param)
    vel = velocity if momentum else np.zeros(1, dtype=param.dtype)
    m = np.ones(1, dtype=param.dtype) if mask is None else np.ascontiguousarray(mask, dtype=param.dtype)
    _sgd(param.reshape(-1), np.ascontiguousarray(grad, dtype=param.dtype).reshape(-1), vel.reshape(-1),
         m.reshape(-1), param.dtype.type(lr), param.dtype.type(momentum), param.dtype.type(weight_decay),
         first, mask is not None)
    return velocity if momentum else None
