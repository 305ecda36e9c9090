"""Numba ReLU and flatten: same contract as minicnn.nn.ref.act.

ReLU runs over the flat array split across threads; the cache is the output itself (x > 0 exactly
where out > 0), so no separate boolean mask is stored. Flatten is a free reshape, as in the reference.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import kernel
from minicnn.nn.ref.act import flatten_backward, flatten_forward

__all__ = ["relu_forward", "relu_backward", "flatten_forward", "flatten_backward"]


@kernel
def _relu(x, out):
    for i in prange(x.size):
        v = x[i]
        out[i] = 0.0 if v <= 0 else v  # NaN stays NaN (a diverged run must show it)


@kernel
def _relu_grad(dout, out, dx):
    for i in prange(dout.size):
        dx[i] = dout[i] * np.float32(out[i] > 0)  # a multiplication, as the reference: NaN * 0 stays NaN


def relu_forward(x: np.ndarray):
    """x: any shape  ->  out: same shape, cache."""
    out = np.empty_like(x)
    _relu(np.ascontiguousarray(x).reshape(-1), out.reshape(-1))
    return out, out


def relu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dout: same shape as x  ->  dx."""
    out = cache
    dx = np.empty_like(out, dtype=dout.dtype)
    _relu_grad(np.ascontiguousarray(dout).reshape(-1), out.reshape(-1), dx.reshape(-1))
    return dx
