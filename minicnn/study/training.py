"""A training run: a model trained into one checkpoint, checkpointed after every epoch and resumed
when rerun with the same settings (``TrainConfig``; only ``epochs`` may grow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minicnn.errors import CheckpointError, MiniCNNError
from minicnn.io.data import load_cifar10, make_normalizer
from minicnn.nn.model import build_model
from minicnn.nn.train import Optimizer, SGDConfig, evaluate, fit, has_diverged
from minicnn.study.config import TrainConfig


def _resume_state(config: TrainConfig, out: Path, backend: str, echo):
    """(model, info) of the unfinished or finished run in ``out``; MiniCNNError if ``out`` holds
    something else."""
    from minicnn.io.checkpoint import UnknownVersion, load_checkpoint

    try:
        model, info = load_checkpoint(out, backend=backend)
    except UnknownVersion:
        raise
    except CheckpointError:
        raise MiniCNNError(f"{out} exists and is not a minicnn checkpoint; choose another --out "
                           f"or pass --force to overwrite it") from None
    diffs = config.differences(info["config"], ignore=TrainConfig.EXTENDABLE)
    if diffs:
        raise MiniCNNError(f"{out} holds a run with other settings ({'; '.join(diffs)}); "
                           f"choose another --out or pass --force to start over")
    return model, info


def snapshot_path(out, epoch: int) -> Path:
    """Where the weights of training run ``out`` after ``epoch`` epochs are kept: OUT.epochK.h5 beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.epoch{epoch}{out.suffix or '.h5'}")


def run_training(config: TrainConfig, out, *, data_path=None, dataset=None, backend: str = "fast",
                 force: bool = False, progress_factory=None, on_epoch=None, echo=print, snapshots=()) -> dict:
    """Train the run described by ``config`` into checkpoint ``out``, resuming it if ``out`` holds an
    unfinished run with the same settings. ``snapshots``: epochs after which the weights are also saved
    to ``snapshot_path(out, epoch)`` (what an lth run rewinds to).

    Returns {'train_acc' (full training split, after training), 'test_acc', 'diverged' (a non-finite
    loss or weight was seen), 'history', 'model'}.
    """
    from minicnn.io.checkpoint import save_checkpoint
    from minicnn.io.files import check_writable

    out = Path(out)
    optimizer = Optimizer(SGDConfig(config.lr, config.momentum, config.weight_decay))
    model, history, start = None, [], 0
    if out.exists() and not force:
        model, info = _resume_state(config, out, backend, echo)
        history, start = info["history"], info["epoch"]
        optimizer.velocity = info["velocity"]
        finished = start >= config.epochs or (history and history[-1]["diverged"])
        if finished and "final" in info["extra"]:
            echo(f"{out} already holds this run ({start} epochs); nothing to do")
            return {**info["extra"]["final"], "history": history, "model": model}
        if start:
            echo(f"resuming {out} after epoch {start}")
    else:
        check_writable(out)

    if dataset is None:
        dataset = load_cifar10(data_path, train_limit=config.train_limit, test_limit=config.test_limit)
    normalizer = make_normalizer(config.normalize, dataset)
    if model is None:
        model = build_model(config.arch, np.random.default_rng(config.seed), backend=backend)
    stored = config.to_dict()

    def checkpoint(epoch, record):
        history.append(record)
        save_checkpoint(out, model, optimizer, config=stored, epoch=epoch + 1, history=history)
        if epoch + 1 in snapshots:
            save_checkpoint(snapshot_path(out, epoch + 1), model, None, config=stored, epoch=epoch + 1,
                            history=history)
        if on_epoch is not None:
            on_epoch(record)

    if not (history and history[-1]["diverged"]):
        fit(model, optimizer, dataset, epochs=config.epochs, batch_size=config.batch_size,
            normalizer=normalizer, seed=config.seed, start_epoch=start, on_epoch=checkpoint,
            progress_factory=progress_factory)
    train_m = evaluate(model, dataset.x_train, dataset.y_train, normalizer)
    test_m = evaluate(model, dataset.x_test, dataset.y_test, normalizer)
    diverged = has_diverged(model, history, train_m["loss"], test_m["loss"])
    final = {"train_acc": train_m["acc"], "test_acc": test_m["acc"], "diverged": diverged}
    save_checkpoint(out, model, optimizer, config=stored, epoch=len(history), history=history,
                    extra={"final": final})
    return {**final, "history": history, "model": model}
