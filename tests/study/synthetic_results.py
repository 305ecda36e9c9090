"""Synthetic result tables for the tests of the curves, the claims, the figures and the report: the
paper's full grid (or a part of it) with plausible, paper-shaped accuracies and a little seed noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minicnn.paper import AMOUNTS, LRS, METHODS, SCHEDULES
from minicnn.study.results import ResultRow, save_results

PARAMS_TOTAL = 20_714
FLOPS_DENSE = 460_000


def paper_like(schedule: str, method: str, lr: float, a: float) -> tuple[float, float, float]:
    """(test acc before, test acc after, train acc) shaped like the paper's figures."""
    base = 0.60
    before = base * (1 - a) ** (3 if method == "structured" else 0.8) + 0.10 * a
    if method == "unstructured" and a < 0.5:
        before = base - 0.05 * a
    if lr == 0.8:
        if schedule == "oneshot":
            after = 0.58 if (a <= 0.3 or method == "unstructured" and a <= 0.6) else 0.10
        else:
            after = 0.58 if (a <= 0.4 or method == "unstructured" and a < 0.7) else (
                0.42 if method == "unstructured" and a <= 0.95 else 0.10)
        gap = 0.06 if after > 0.5 else 0.0
    elif lr == 0.01:
        after = 0.64 - 0.10 * a - (0.05 if a >= 0.95 else 0.0)
        if a >= 0.99:
            after = 0.40 if method == "structured" else 0.49
        gap = 0.06 if a < 0.8 else 0.01
        if schedule == "oneshot" and method == "structured":
            gap = 0.01
    else:
        after = before + 0.02 if schedule == "oneshot" else 0.60 - 0.45 * a
        gap = 0.0
    return before, after, min(after + gap, 1.0)


def scaled(factor_by_lr):
    """Paper-like accuracies after fine-tuning, scaled per learning rate."""
    def accuracy(schedule, method, lr, a):
        before, after, train = paper_like(schedule, method, lr, a)
        return before, after * factor_by_lr[lr], train * factor_by_lr[lr]
    return accuracy


def make_rows(schedules=SCHEDULES, methods=METHODS, lrs=LRS, seeds=(0, 1), amounts=AMOUNTS,
              accuracy=paper_like, scope="layer", criterion="magnitude") -> list[ResultRow]:
    """A full (or partial) results grid with plausible numbers and a little seed noise. ``accuracy`` is
    called (schedule, method, lr, amount) as the paper's; epochs_spent is 10 per step (one-shot: 10)."""
    rows = []
    for schedule in schedules:
        for method in methods:
            for lr in lrs:
                for seed in seeds:
                    noise = np.random.default_rng([seed, len(method), int(lr * 1e4), len(schedule)])
                    for step, a in enumerate(amounts):
                        before, after, train = accuracy(schedule, method, lr, a)
                        jitter = noise.normal(0, 0.003, 3)
                        effective = int(PARAMS_TOTAL * (1 - a) ** (1.5 if method == "structured" else 1))
                        if method == "structured" and a >= 0.95:
                            effective = 10
                        rows.append(ResultRow(
                            schedule=schedule, method=method, scope=scope, lr=lr, seed=seed, step=step, amount=a,
                            remaining=1 - a, params_total=PARAMS_TOTAL, params_nonzero=int(PARAMS_TOTAL * (1 - a)),
                            params_effective=effective, remaining_effective=effective / PARAMS_TOTAL,
                            flops_dense=FLOPS_DENSE, flops_effective=int(FLOPS_DENSE * effective / PARAMS_TOTAL) + 100,
                            training_flops_effective=3 * (int(FLOPS_DENSE * effective / PARAMS_TOTAL) + 100),
                            test_acc_before=float(np.clip(before + jitter[0], 0, 1)),
                            test_acc_after=float(np.clip(after + jitter[1], 0, 1)),
                            train_acc=float(np.clip(train + jitter[2], 0, 1)),
                            train_loss=1.2, test_loss=1.3, epochs=10, seconds=12.5,
                            diverged=bool(lr == 0.8 and method == "structured" and a == 0.5 and seed == 1),
                            criterion=criterion, epochs_spent=10 if schedule == "oneshot" else 10 * (step + 1)))
    return rows


def write_table(folder: Path, rows: list[ResultRow], name: str = "sweep") -> Path:
    """Save ``rows`` as ``folder/name/results.{csv,h5}``; return ``folder/name``."""
    out = folder / name
    out.mkdir()
    save_results(rows, out / "results.csv", out / "results.h5")
    return out


def by_id(claims: list[dict]) -> dict[str, dict]:
    return {c["id"]: c for c in claims}
