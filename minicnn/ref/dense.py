"""Fully connected (linear) layer, weights laid out (out, in) as PyTorch.

out = x @ w.T + b;   dx = dout @ w;   dw = dout.T @ x;   db = sum_n dout[n]
"""

from __future__ import annotations

import numpy as np


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    """x: (N, D), w: (O, D), b: (O,)  ->  out: (N, O), cache."""
    return x @ w.T + b, (x, w)


def linear_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, O)  ->  dx: (N, D) (None if not need_dx), dw: (O, D), db: (O,)."""
    x, w = cache
    dx = dout @ w if need_dx else None
    return dx, dout.T @ x, dout.sum(axis=0)
