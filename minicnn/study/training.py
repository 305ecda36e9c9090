"""A training run: a model trained into one checkpoint, checkpointed after every epoch and resumed
when rerun with the same settings."""

from __future__ import annotations

import numpy as np

from minicnn.io.data import make_normalizer
from minicnn.nn.train import Optimizer, SGDConfig, evaluate, fit


#: Settings that define a training run: a checkpoint trained with other values is another run.
RUN_KEYS = ("arch", "lr", "batch_size", "momentum", "weight_decay", "seed", "normalize", "train_limit",
            "test_limit")


def config_differences(stored: dict, wanted: dict, keys=RUN_KEYS) -> list[str]:
    """'lr: 0.8 -> 0.01' for every key whose value differs."""
    return [f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in keys if stored.get(k) != wanted.get(k)]


def run_training(config: dict, out, *, data_path=None, dataset=None, backend: str = "fast", force: bool = False,
                 progress_factory=None, on_epoch=None, echo=print) -> dict:
    """Train the run described by ``config`` into checkpoint ``out``, resuming it if ``out`` holds an
    unfinished run with the same settings.

    config: {'arch', 'epochs', 'lr', 'batch_size', 'momentum', 'weight_decay', 'seed', 'normalize',
    'train_limit', 'test_limit'}. Returns {'train_acc' (full training split, after training),
    'test_acc', 'diverged', 'history', 'model'}.
    """
    from pathlib import Path

    from minicnn.io.checkpoint import load_checkpoint, save_checkpoint
    from minicnn.io.files import check_writable
    from minicnn.io.data import load_cifar10
    from minicnn.errors import CheckpointError, MiniCNNError
    from minicnn.nn.model import build_model

    out = Path(out)
    model, optimizer, history, start = None, Optimizer(SGDConfig(config["lr"], config["momentum"],
                                                                 config["weight_decay"])), [], 0
    if out.exists() and not force:
        try:
            model, info = load_checkpoint(out, backend=backend)
        except CheckpointError:
            raise MiniCNNError(f"{out} exists and is not a minicnn checkpoint; choose another --out "
                               f"or pass --force to overwrite it") from None
        diffs = config_differences(info["config"], config)
        if diffs:
            raise MiniCNNError(f"{out} holds a run with other settings ({'; '.join(diffs)}); "
                               f"choose another --out or pass --force to start over")
        history, start = info["history"], info["epoch"]
        optimizer.velocity = info["velocity"]
        finished = start >= config["epochs"] or (history and history[-1]["diverged"])
        if finished and "final" in info["extra"]:
            echo(f"{out} already holds this run ({start} epochs); nothing to do")
            return {**info["extra"]["final"], "history": history, "model": model}
        if start:
            echo(f"resuming {out} after epoch {start}")
    else:
        check_writable(out)

    dataset = dataset if dataset is not None else load_cifar10(data_path, train_limit=config["train_limit"],
                                                               test_limit=config["test_limit"])
    normalizer = make_normalizer(config["normalize"], dataset)
    if model is None:
        model = build_model(config["arch"], np.random.default_rng(config["seed"]), backend=backend)

    def checkpoint(epoch, record):
        history.append(record)
        save_checkpoint(out, model, optimizer, config=config, epoch=epoch + 1, history=history)
        if on_epoch is not None:
            on_epoch(record)

    diverged = bool(history and history[-1]["diverged"])
    if not diverged:
        fit(model, optimizer, dataset, epochs=config["epochs"], batch_size=config["batch_size"],
            normalizer=normalizer, seed=config["seed"], start_epoch=start, on_epoch=checkpoint,
            progress_factory=progress_factory)
    diverged = bool(history and history[-1]["diverged"])
    final = {"train_acc": evaluate(model, dataset.x_train, dataset.y_train, normalizer)["acc"],
             "test_acc": evaluate(model, dataset.x_test, dataset.y_test, normalizer)["acc"],
             "diverged": diverged}
    save_checkpoint(out, model, optimizer, config=config, epoch=len(history), history=history,
                    extra={"final": final})
    return {**final, "history": history, "model": model}
