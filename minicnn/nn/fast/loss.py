"""Numba softmax cross-entropy: same contract as minicnn.nn.ref.loss.

One batch row per thread: max, exp-sum, log-sum and the gradient row in one pass over the K logits,
with the per-row losses summed in float64 at the end.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import kernel


@kernel
def _softmax_ce(logits, labels, dlogits, row_loss):
    n_img, k = logits.shape
    for n in prange(n_img):
        m = logits[n, 0]
        for j in range(1, k):
            m = max(m, logits[n, j])
        s = 0.0
        for j in range(k):
            e = math.exp(logits[n, j] - m)
            dlogits[n, j] = e
            s += e
        row_loss[n] = math.log(s) + m - logits[n, labels[n]]
        for j in range(k):
            dlogits[n, j] = dlogits[n, j] / s / n_img
        dlogits[n, labels[n]] -= 1.0 / n_img


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray):
    """logits: (N, K), labels: (N,) ints in [0, K)  ->  (loss: float, dlogits: (N, K))."""
    logits = np.ascontiguousarray(logits)
    dlogits = np.empty_like(logits)
    row_loss = np.empty(logits.shape[0], dtype=np.float64)
    _softmax_ce(logits, np.ascontiguousarray(labels, dtype=np.int64), dlogits, row_loss)
    return float(row_loss.mean()), dlogits
