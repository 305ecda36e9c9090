"""Stochastic gradient descent with momentum and weight decay, as torch.optim.SGD (dampening 0,
no Nesterov), honouring a pruning mask.

    g = grad + weight_decay * param
    v = momentum * v + g            (v = g on the first step, as torch)
    param -= lr * v
With a mask (1 = kept, 0 = pruned) the gradient g and the velocity v are masked, so a pruned weight
receives no update and stays exactly 0.
"""

from __future__ import annotations

import numpy as np


def sgd_step(param: np.ndarray, grad: np.ndarray, velocity: np.ndarray | None, lr: float,
             momentum: float = 0.0, weight_decay: float = 0.0, mask: np.ndarray | None = None):
    """Update ``param`` in place; returns the new velocity (None when momentum is 0).

    param, grad, velocity, mask: same shape (any). velocity None means "first step".
    """
    g = grad + weight_decay * param if weight_decay else grad.copy()
    if mask is not None:
        g *= mask
    if momentum:
        velocity = g if velocity is None else momentum * velocity + g
        if mask is not None:
            velocity *= mask
        step = velocity
    else:
        step = g
    param -= lr * step
    return velocity if momentum else None
