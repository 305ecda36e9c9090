"""ReLU and flatten.

relu(x) = max(x, 0); its gradient passes dout where x > 0 and is 0 elsewhere (0 at x == 0, as PyTorch).
"""

from __future__ import annotations

import numpy as np


def relu_forward(x: np.ndarray):
    """x: any shape  ->  out: same shape, cache."""
    out = np.maximum(x, 0)
    return out, out > 0


def relu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dout: same shape as x  ->  dx."""
    return dout * cache


def flatten_forward(x: np.ndarray):
    """x: (N, C, H, W)  ->  out: (N, C*H*W) in C order (as torch.flatten(x, 1)), cache."""
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:]))), x.shape


def flatten_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dout: (N, D)  ->  dx: (N, C, H, W)."""
    return dout.reshape(cache)
