"""Training and evaluation: SGD over minibatches, metrics per epoch, divergence detection.

Images stay uint8 in memory and are normalised one batch at a time (minicnn.io.data.normalize), so the
full training set costs 150 MB rather than 600 MB as float32; the paper's model normalises them inside
its op, as it reads each image's pixels (minicnn.nn.pixels).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from minicnn.nn.model import Sequential


@dataclass
class SGDConfig:
    """torch.optim.SGD's settings (the run's learning rate is always given: see minicnn/paper.py)."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass
class Optimizer:
    """Plain SGD (torch.optim.SGD semantics) over every parameter of a model, honouring masks.
    ``velocity`` holds the momentum buffers by 'layer.param'; empty until the first step."""

    config: SGDConfig
    velocity: dict[str, np.ndarray] = field(default_factory=dict)

    def step(self, model: Sequential) -> None:
        c = self.config
        for layer in model.param_layers():
            for name, param in layer.params.items():
                key = f"{layer.name}.{name}"
                v = model.ops.sgd_step(param, layer.grads[name], self.velocity.get(key), c.lr,
                                       c.momentum, c.weight_decay, layer.masks.get(name))
                if v is not None:
                    self.velocity[key] = v


def train_step(model: Sequential, optimizer: Optimizer, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """One SGD step on a batch. x: (N, C, H, W) float32, y: (N,) ints -> (mean loss, number correct)."""
    loss, logits = model.loss_and_gradients(x, y)
    optimizer.step(model)
    return loss, int((logits.argmax(axis=1) == y).sum())


def _batch(normalize, images: np.ndarray, rows: np.ndarray):
    """images[rows] as the model takes them: ``normalize.batch(images, rows)`` where it has one (a
    minicnn.io.data.Normalizer: a PixelBatch the paper model's op normalises as it reads it), else
    normalize(images[rows]) (any uint8 -> float32 function)."""
    batch = getattr(normalize, "batch", None)
    return batch(images, rows) if batch is not None else normalize(images[rows])


def evaluate(model: Sequential, images: np.ndarray, labels: np.ndarray, normalize, batch_size: int = 1024) -> dict:
    """Accuracy and mean loss over a whole split. images: (N, 3, 32, 32) uint8; ``normalize`` maps a
    uint8 batch to float32. Returns {'acc': fraction, 'loss': mean loss}."""
    correct, loss_sum = 0, 0.0
    n = len(labels)
    for lo in range(0, n, batch_size):
        x = _batch(normalize, images, np.arange(lo, min(lo + batch_size, n)))
        y = labels[lo : lo + batch_size]
        logits = model.forward(x, for_backward=False)
        loss, _ = model.ops.softmax_cross_entropy(logits, y)
        loss_sum += loss * len(y)
        correct += int((logits.argmax(axis=1) == y).sum())
    return {"acc": correct / max(n, 1), "loss": loss_sum / max(n, 1)}


def train_epoch(model: Sequential, optimizer: Optimizer, images: np.ndarray, labels: np.ndarray, normalize,
                batch_size: int, rng: np.random.Generator, progress=None, before_batch=None) -> dict:
    """One pass over the data in a random order drawn from ``rng``.

    images: (N, 3, 32, 32) uint8, labels: (N,). ``progress(n_images, running_loss, images_per_s)`` is
    called after each batch when given; ``before_batch(index, n_images)`` before each (index counts the
    epoch's batches from 0; e.g. to change the masks during training). Returns {'loss', 'acc' (running, on
    the training batches), 'diverged' (a NaN/inf loss was seen: the epoch stops there), 'seconds', 'images_per_s'}.
    """
    order = rng.permutation(len(labels))
    start = time.perf_counter()
    seen, correct, loss_sum = 0, 0, 0.0
    diverged = False
    for lo in range(0, len(order), batch_size):
        idx = np.sort(order[lo : lo + batch_size])  # sorted gather is cache-friendlier; the batch is the same set
        x, y = _batch(normalize, images, idx), labels[idx]
        if before_batch is not None:
            before_batch(lo // batch_size, len(y))
        loss, batch_correct = train_step(model, optimizer, x, y)
        if not math.isfinite(loss):
            diverged = True
            break
        seen += len(y)
        correct += batch_correct
        loss_sum += loss * len(y)
        if progress is not None:
            progress(len(y), loss_sum / seen, seen / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    return {"loss": loss_sum / seen if seen else float("nan"), "acc": correct / seen if seen else 0.0,
            "diverged": diverged, "seconds": seconds, "images_per_s": seen / seconds if seconds else 0.0}


def weights_finite(model: Sequential) -> bool:
    """True when every parameter of ``model`` is finite (no NaN or inf: the run has not diverged)."""
    return all(np.isfinite(p).all() for layer in model.param_layers() for p in layer.params.values())


def has_diverged(model: Sequential, history: list[dict], *losses: float) -> bool:
    """Whether a run ended diverged: its last epoch says so (``fit``'s records), a measured loss is NaN or
    infinite, or a weight of ``model`` is."""
    return bool(history and history[-1]["diverged"]) or not (
        all(math.isfinite(loss) for loss in losses) and weights_finite(model))


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The shuffling RNG of one epoch. Derived from (seed, epoch) alone, so a run resumed at epoch k
    shuffles exactly as the uninterrupted run would have."""
    return np.random.default_rng([seed, epoch])


def fit(model: Sequential, optimizer: Optimizer, dataset, *, epochs: int, batch_size: int, normalizer,
        seed: int, start_epoch: int = 0, on_epoch=None, progress_factory=None,
        test_every_epoch: bool = True, before_batch=None) -> list[dict]:
    """Train for epochs start_epoch..epochs-1; after each, evaluate on the test split (with
    ``test_every_epoch=False`` not at all: the caller measures the result itself, and a record's
    test_loss/test_acc are NaN).

    ``on_epoch(epoch_index, record)`` is called after every epoch (to checkpoint); ``progress_factory(
    label, n_images)`` returns a context manager whose value is called as in train_epoch;
    ``before_batch(epoch_index, batch_index, n_images)`` is called before every batch. Returns one
    record per epoch: {'epoch', 'train_loss', 'train_acc' (running), 'test_loss', 'test_acc', 'seconds',
    'images_per_s', 'diverged' (a non-finite loss or weight)}. Training stops after a diverged epoch.
    """
    history = []
    for epoch in range(start_epoch, epochs):
        label = f"epoch {epoch + 1}/{epochs}"
        hook = None if before_batch is None else (lambda b, n, e=epoch: before_batch(e, b, n))
        if progress_factory is None:
            stats = train_epoch(model, optimizer, dataset.x_train, dataset.y_train, normalizer, batch_size,
                                epoch_rng(seed, epoch), before_batch=hook)
        else:
            with progress_factory(label, len(dataset.y_train)) as progress:
                stats = train_epoch(model, optimizer, dataset.x_train, dataset.y_train, normalizer, batch_size,
                                    epoch_rng(seed, epoch), progress, hook)
        if test_every_epoch:
            test = evaluate(model, dataset.x_test, dataset.y_test, normalizer)
        else:
            test = {"loss": float("nan"), "acc": float("nan")}
        diverged = stats["diverged"] or not weights_finite(model) or (
            test_every_epoch and not math.isfinite(test["loss"]))
        record = {"epoch": epoch + 1, "train_loss": stats["loss"], "train_acc": stats["acc"],
                  "test_loss": test["loss"], "test_acc": test["acc"], "seconds": stats["seconds"],
                  "images_per_s": stats["images_per_s"], "diverged": diverged}
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
        if diverged:
            break
    return history
