"""Softmax cross-entropy, averaged over the batch.

p = softmax(z) computed as exp(z - max z) / sum(...) so large logits cannot overflow;
loss = mean_n( -log p[n, y_n] ) = mean_n( logsumexp(z_n) - z[n, y_n] )
dz = (p - onehot(y)) / N
"""

from __future__ import annotations

import numpy as np


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray):
    """logits: (N, K), labels: (N,) ints in [0, K)  ->  (loss: float, dlogits: (N, K))."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_sum
    loss = -log_probs[np.arange(n), labels].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), labels] -= 1.0
    return float(loss), dlogits / n
