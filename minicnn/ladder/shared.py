"""What rungs 3 to 6 share and do not teach: the network's head (linear layer, softmax cross-entropy
and their gradients), compiled, one image at a time per thread, and the op around a rung's forward and
backward kernels. The head is 8 % of the training FLOPs; the rungs are about the convolution.

Why not NumPy's matrix products, as rung 2: their BLAS threads and Numba's meet on the same two cores.
Once a parallel Numba kernel has run, its OpenMP threads are pinned to the cores (minicnn/nn/fast/
_jit.py) and wait for the next loop by spinning a while; the products, 1 ms of work, then took from
1.5 to 600 ms on this shared machine. Here the head runs on Numba's own threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from minicnn.ladder._jit import num_threads, reduction_kernel, serial


@serial
def part_range(n_img, n_parts, t):
    """range of the images of slice t when n_img images are cut into n_parts slices (one per thread)."""
    per_part = (n_img + n_parts - 1) // n_parts
    return range(t * per_part, min(n_img, (t + 1) * per_part))


@reduction_kernel
def _head(flat, fc_w, fc_b, labels, logits, dflat, dfc_part, dfcb_part, loss_part):
    """logits (N, K), dflat (N, D) and each thread t's sums dfc_part[t] (K, D), dfcb_part[t] (K,) and
    loss_part[t] (the summed loss of its images) for flat (N, D), fc_w (K, D), fc_b (K,), labels (N,)."""
    n_img, n_parts = flat.shape[0], dfc_part.shape[0]
    n_class, d = fc_w.shape
    for t in prange(n_parts):
        for n in part_range(n_img, n_parts, t):
            z, x_n, dx_n = logits[n], flat[n], dflat[n]
            for k in range(n_class):
                acc = fc_b[k]
                for i in range(d):
                    acc += fc_w[k, i] * x_n[i]
                z[k] = acc
            top = z.max()
            log_total = math.log(np.sum(np.exp(z - top)))
            loss_part[t] += top + log_total - z[labels[n]]
            dx_n[:] = 0.0
            for k in range(n_class):  # d loss / d z = (softmax - one-hot) / N
                g = (math.exp(z[k] - top - log_total) - (k == labels[n])) / n_img
                dfcb_part[t, k] += g
                for i in range(d):
                    dfc_part[t, k, i] += g * x_n[i]
                for i in range(d):
                    dx_n[i] += g * fc_w[k, i]


def linear_loss(pooled: np.ndarray, fc_w: np.ndarray, fc_b: np.ndarray, labels: np.ndarray):
    """The head on the pooled maps (N, F, PH, PW): -> loss, logits (N, K), the pooled maps' gradient
    (N, F, PH, PW), dfc_w (K, F*PH*PW), dfc_b (K,), as the reference."""
    n_img, dtype = pooled.shape[0], pooled.dtype
    flat = pooled.reshape(n_img, pooled[0].size)
    n_parts = max(1, min(num_threads(), n_img))
    logits, dflat = np.empty((n_img, fc_b.size), dtype=dtype), np.empty_like(flat)
    dfc_part = np.zeros((n_parts,) + fc_w.shape, dtype=dtype)
    dfcb_part, loss_part = np.zeros((n_parts, fc_b.size), dtype=dtype), np.zeros(n_parts)
    _head(flat, fc_w.astype(dtype), fc_b.astype(dtype), np.asarray(labels, dtype=np.int64), logits, dflat, dfc_part,
          dfcb_part, loss_part)
    loss = float(loss_part.sum() / n_img)
    return loss, logits, dflat.reshape(pooled.shape), dfc_part.sum(axis=0), dfcb_part.sum(axis=0)


def thread_parts(x: np.ndarray, w: np.ndarray):
    """(n_parts, dw_part, db_part): the slices the batch is cut into, one per thread, and each slice's
    gradient sums (n_parts, F, C, KH, KW) and (n_parts, F), zeroed. A thread writes only its own."""
    n_parts = max(1, min(num_threads(), x.shape[0]))
    return n_parts, np.zeros((n_parts,) + w.shape, dtype=x.dtype), np.zeros((n_parts, w.shape[0]), dtype=x.dtype)


def run_fused(forward, backward, code_len: int, x, w, b, pad, fc_w, fc_b, labels):
    """The training step around a fused rung's kernels: forward(x, w, b, pad, pooled, code, n_parts)
    writes the pooled maps (N, F, PH, PW) and the pooling codes (N, F, code_len); backward(x, pad,
    dpooled, code, dw_part, db_part) the gradient sums of each thread's slice."""
    (n_img, _, h, width), (n_filt, _, kh, kw) = x.shape, w.shape
    pooled = np.empty((n_img, n_filt, (h + 2 * pad - kh + 1) // 2, (width + 2 * pad - kw + 1) // 2), dtype=x.dtype)
    code = np.empty((n_img, n_filt, code_len), dtype=np.int8)
    n_parts, dw_part, db_part = thread_parts(x, w)
    forward(x, w, b.astype(x.dtype), pad, pooled, code, n_parts)
    loss, logits, dpooled, dfc_w, dfc_b = linear_loss(pooled, fc_w, fc_b, labels)
    backward(x, pad, dpooled, code, dw_part, db_part)
    return loss, logits, dw_part.sum(axis=0), db_part.sum(axis=0), dfc_w, dfc_b
