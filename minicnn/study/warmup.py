"""Compile ahead: the kernels a training run of a model uses, compiled (into Numba's cache) on a tiny
synthetic dataset through the very calls `minicnn train` makes, so that the user's first run starts at
once. `minicnn data prepare` runs it beside building the data cache (``start``/``finish``): a fresh
install's first `minicnn train` then loads its kernels instead of compiling them (about 30 s on 2 cores).
"""

from __future__ import annotations

import numpy as np

from minicnn import paper


def compile_training_kernels(arch: str = paper.ARCH) -> None:
    """Run one short epoch of ``arch`` with the fast backend (train steps, the SGD update, evaluation of
    both splits), as `minicnn train` runs them; the same array types give the same compiled kernels."""
    from minicnn.io.data import make_normalizer
    from minicnn.io.dataset import make_synthetic
    from minicnn.nn.model import build_model
    from minicnn.nn.train import Optimizer, SGDConfig, evaluate, fit

    dataset = make_synthetic(64, 16, np.random.default_rng(0))
    normalizer = make_normalizer(paper.NORMALIZE, dataset)
    model = build_model(arch, np.random.default_rng(0), backend="fast")
    fit(model, Optimizer(SGDConfig(paper.BASELINE_LR)), dataset, epochs=1, batch_size=32, normalizer=normalizer,
        seed=0)
    evaluate(model, dataset.x_train, dataset.y_train, normalizer)


def _child(arch: str) -> None:
    compile_training_kernels(arch)


def start(arch: str = paper.ARCH):
    """Begin compiling in a child process (the data cache can be built meanwhile); None if it cannot start."""
    import multiprocessing

    try:
        process = multiprocessing.get_context("spawn").Process(target=_child, args=(arch,), daemon=True)
        process.start()
    except OSError:
        return None
    return process


def finish(process) -> bool:
    """Wait for ``start``'s child; whether it compiled everything (if not, the first run compiles)."""
    if process is None:
        return False
    process.join()
    return process.exitcode == 0
