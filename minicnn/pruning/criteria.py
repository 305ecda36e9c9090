"""Pruning criteria: what decides which weights go first, one small function per criterion, chosen by name.

A criterion scores the weights of every prunable layer (conv and linear, in model order):

    score(weights, structured, context) -> one float array per weight
        unstructured: the weight's shape, a score per entry
        structured:   shape (F,), a score per dim-0 slice (conv filter, linear neuron)

Lower scores are pruned first. What happens with the scores is the same for every criterion and lives in
:mod:`minicnn.pruning.masks`: ranking among the still-unpruned entries (ties by position), round(amount * n)
pruned, layerwise or (unstructured) global ranking, masks that only shrink.

Adding a criterion is one function here and one line in ``CRITERIA``::

    def largest(weights, structured, context):  # the largest magnitudes first
        return [-s for s in magnitude(weights, structured, context)]

    CRITERIA = {..., "largest": largest}        # then: minicnn prune --criterion largest ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from minicnn.errors import MiniCNNError

#: Training batches whose |w * g| gradmag sums (the first ones of the training split, in order).
GRADMAG_BATCHES = 8
#: Mixed into the random criterion's seed, so that its stream is its own (not fine-tuning's).
_RANDOM_STREAM = 0x72616E64


@dataclass(frozen=True)
class Context:
    """What a criterion may need beyond the weights: the run's ``seed`` and ``step`` (random), the
    ``model`` the weights belong to and the training data (gradmag): ``images`` uint8 (N, 3, H, W),
    ``labels`` (N,), ``normalize`` (uint8 batch -> float32 batch), ``batch_size`` and ``batches``."""

    seed: int = 0
    step: int = 0
    model: object = None
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    normalize: Callable | None = None
    batch_size: int = 512
    batches: int = GRADMAG_BATCHES


# -------------------------------------------------------------------------------------- criteria
def _slice_l2(weight: np.ndarray) -> np.ndarray:
    """(F,) float64: the L2 norm of each dim-0 slice of ``weight``."""
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    return np.sqrt(np.sum(w * w, axis=1))


def magnitude(weights, structured: bool, context: Context) -> list[np.ndarray]:
    """|w| per entry (L1, as ``l1_unstructured``); structured: the L2 norm of each slice (as
    ``ln_structured(n=2, dim=0)``). The paper's criteria."""
    return [_slice_l2(w) if structured else np.abs(w) for w in weights]


def random(weights, structured: bool, context: Context) -> list[np.ndarray]:
    """Uniform scores in [0, 1) from a generator seeded with (the run's seed, the step): the same seed
    and step give the same masks, other seeds other masks. One draw per entry (structured: per slice),
    tensor after tensor in model order."""
    rng = np.random.default_rng((_RANDOM_STREAM, int(context.seed), int(context.step)))
    return [rng.random(w.shape[0] if structured else w.shape) for w in weights]


def gradmag(weights, structured: bool, context: Context) -> list[np.ndarray]:
    """Gradient times magnitude: sum over b of |w * g_b|, float64, where g_b is the gradient of the mean
    softmax cross-entropy of training batch b (``Sequential.loss_and_gradients`` on the normalised batch;
    pruned weights have g = 0). Batch b holds training images b*B ... (b+1)*B - 1 (B the run's batch
    size, images in the split's order), for b < ``context.batches`` (default 8) while images remain.
    Structured: the sum of the slice's entries' scores (L1 of |w * g| over the slice)."""
    model, images = context.model, context.images
    if model is None or images is None or context.labels is None or context.normalize is None:
        raise MiniCNNError("the gradmag criterion needs the model and its training data")
    layers = model.prunable_layers()
    if [lay.params["weight"].shape for lay in layers] != [np.shape(w) for w in weights]:
        raise MiniCNNError("the gradmag criterion scores the weights of the model it is given")
    scores = [np.zeros(np.shape(w), np.float64) for w in weights]
    size = context.batch_size
    for lo in range(0, min(len(images), context.batches * size), size):
        model.loss_and_gradients(context.normalize(images[lo:lo + size]), context.labels[lo:lo + size])
        for score, w, layer in zip(scores, weights, layers):
            score += np.abs(np.asarray(w, np.float64) * layer.grads["weight"])
    if structured:
        return [s.reshape(s.shape[0], -1).sum(axis=1) for s in scores]
    return scores


#: Every criterion by name; the first is the default.
CRITERIA: dict[str, Callable] = {
    "magnitude": magnitude,
    "random": random,
    "gradmag": gradmag,
}
DEFAULT = "magnitude"


def get_criterion(name: str) -> Callable:
    """The criterion called ``name``; MiniCNNError naming the choices for any other."""
    if name not in CRITERIA:
        raise MiniCNNError(f"unknown pruning criterion {name!r}; choose one of: {', '.join(CRITERIA)}")
    return CRITERIA[name]
