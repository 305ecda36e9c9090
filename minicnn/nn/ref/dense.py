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


def masked_linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, mask: np.ndarray):
    """The linear layer with pruned weights: out = x @ (w * mask).T + b.

    x: (N, D), w and mask: (O, D), b: (O,)  ->  out: (N, O), cache.
    """
    out, (x, wm) = linear_forward(x, w * mask, b)
    return out, (x, wm, mask)


def masked_linear_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, O)  ->  dx: (N, D) or None, dw: (O, D) (0 where the mask is 0), db: (O,)."""
    x, wm, mask = cache
    dx, dw, db = linear_backward(dout, (x, wm), need_dx)
    return dx, dw * mask, db
