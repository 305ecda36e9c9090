"""The kernel ladder: the paper model's training step, from plain loops to the production op, one idea
per rung. The story, the measured table and the figure: README.md in this folder.

Every rung module has ``conv_relu_pool_linear_loss(x, w, b, pad, fc_w, fc_b, labels)`` with the
contract of minicnn.nn.ref.convnet: x (N, C, H, W), w (F, C, KH, KW), b (F,), fc_w (K, F*PH*PW),
fc_b (K,), labels (N,) -> loss, logits (N, K), dw, db, dfc_w, dfc_b, for conv (stride 1, padding pad)
-> ReLU -> 2x2 max-pool -> flatten -> linear -> mean softmax cross-entropy. No pruning masks: those
change which weights a kernel skips, not how it gets fast (rung 7, the production op, takes them).
Rungs 1 to 6 assume finite inputs (the production op also keeps the reference's NaNs).

    python -m minicnn.ladder [--repeats N] [--out DIR]    # images/s per rung beside PyTorch; the figure
"""

from __future__ import annotations

import importlib

#: The rungs' modules in order, each with its idea in a few words.
RUNGS = (
    ("rung1_loops", "plain loops"),
    ("rung2_im2col", "im2col + one matmul"),
    ("rung3_numba_direct", "Numba, image per thread"),
    ("rung4_fused", "conv+ReLU+pool fused"),
    ("rung5_parity", "parity-split layout"),
    ("rung6_ninetap", "nine taps per pass"),
    ("rung7_production", "production op"),
)


def load(name: str):
    """The rung module ``name`` (one of RUNGS' names), imported on first use: rungs 3 to 7 compile Numba
    kernels (cached after the first run)."""
    if name not in dict(RUNGS):
        raise ValueError(f"no rung {name!r}; the rungs are {', '.join(dict(RUNGS))}")
    return importlib.import_module(f"{__name__}.{name}")
