"""The results model that the figures, the claims and the report read: rows grouped into *curves*.

A curve is one (schedule, method, scope, lr) with the mean and standard deviation over seeds of every
metric at each pruning amount (``aggregate``). The figures (``plots.figures``), the claim checks
(``minicnn.study.claims``) and the report (``minicnn.study.report``) all read the same curves, so they
always show the same numbers; a figure's file name and title are defined here once, for the figures
and for the report's links to them. Rows are ``minicnn.study.results.ResultRow`` objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minicnn.paper import LRS, METHODS, SCHEDULES

SCHEDULE_TITLES = {"oneshot": "One-shot", "iterative": "Iterative"}

#: Columns averaged over seeds.
METRICS = ("test_acc_after", "test_acc_before", "train_acc", "train_loss", "test_loss", "remaining",
           "remaining_effective", "params_total", "params_nonzero", "params_effective", "flops_dense",
           "flops_effective", "training_flops_effective", "epochs", "seconds")


class MissingRows(LookupError):
    """The rows a lookup needs are absent (a claim that needs them is not testable)."""


def lr_key(lr) -> float:
    """A learning rate as a canonical float (6 significant digits), so 0.01 read from CSV matches."""
    return float(f"{float(lr):.6g}")


def amount_key(amount) -> float:
    """A pruning amount as a canonical float (rounded to 6 decimals)."""
    return round(float(amount), 6)


def fmt_lr(lr: float) -> str:
    return f"{lr:g}"


def fmt_amount(a: float | None) -> str:
    """Amount 0.95 -> '95%'; None -> 'never'."""
    return "never" if a is None else f"{100 * a:.3g}%"


def config_label(schedule: str, method: str, lr: float) -> str:
    """'one-shot structured, lr 0.8'."""
    return f"{SCHEDULE_TITLES.get(schedule, schedule).lower()} {method}, lr {fmt_lr(lr)}"


def figure_stem(schedule: str, method: str, lr: float, scope: str = "layer", preferred: str | None = "layer") -> str:
    """File name without extension: 'oneshot_structured_lr0.8' (+ '_global' for a second scope)."""
    stem = f"{schedule}_{method}_lr{fmt_lr(lr)}"
    return stem if scope == preferred else f"{stem}_{scope}"


def figure_title(schedule: str, method: str, lr: float, scope: str | None = None) -> str:
    """'One-shot structured pruning, lr 0.8' (the paper's figure for that configuration), + ' (global scope)'."""
    title = f"{SCHEDULE_TITLES.get(schedule, schedule)} {method} pruning, lr {fmt_lr(lr)}"
    return f"{title} ({scope} scope)" if scope else title


#: The summary figures drawn by ``plots.figures``: file name (without extension) and heading.
SUMMARY_FIGURES = (("summary_schedules", "One-shot vs iterative"), ("summary_lrs", "Learning rates compared"),
                   ("summary_methods", "Structured vs unstructured"),
                   ("summary_flops", "Test accuracy vs effective training FLOPs per image"))


@dataclass
class Curve:
    """One (schedule, method, scope, lr): per-amount mean/std over seeds of every metric.

    amounts: sorted increasing. mean[m], std[m]: arrays aligned with amounts (std is the sample
    standard deviation over seeds, 0 with one seed). n: seeds per amount. diverged: diverged seeds
    per amount.
    """

    schedule: str
    method: str
    scope: str
    lr: float
    amounts: np.ndarray
    mean: dict
    std: dict
    n: np.ndarray
    diverged: np.ndarray
    seeds: tuple

    @property
    def label(self) -> str:
        return config_label(self.schedule, self.method, self.lr)

    @property
    def remaining(self) -> np.ndarray:
        return 1.0 - self.amounts

    def index(self, amount: float) -> int | None:
        hits = np.flatnonzero(np.abs(self.amounts - amount) < 1e-6)
        return int(hits[0]) if hits.size else None

    def value(self, amount: float, metric: str = "test_acc_after") -> float:
        """Mean of ``metric`` at ``amount``; raises MissingRows when the amount or value is absent."""
        i = self.index(amount)
        if i is None:
            raise MissingRows(f"no rows at amount {fmt_amount(amount)} for {self.label}")
        v = float(self.mean[metric][i])
        if not math.isfinite(v):
            raise MissingRows(f"no {metric} at amount {fmt_amount(amount)} for {self.label}")
        return v


def scopes_in(rows) -> list[str]:
    return sorted({r.scope for r in rows})


def preferred_scope(rows) -> str | None:
    """'layer' (the paper's per-tensor pruning) when present, else the first scope in the rows."""
    scopes = scopes_in(rows)
    if not scopes:
        return None
    return "layer" if "layer" in scopes else scopes[0]


def aggregate(rows, scope: str | None = None) -> dict[tuple, Curve]:
    """Group rows into curves keyed (schedule, method, scope, lr); ``scope`` keeps only that scope.

    Curves come in the paper's order (schedule, method, layer scope first, lr). When a (configuration,
    seed, amount) appears more than once, the last row wins (a rerun).
    """
    latest = {}
    for row in rows:
        if scope is not None and row.scope != scope:
            continue
        latest[(row.schedule, row.method, row.scope, lr_key(row.lr), row.seed, amount_key(row.amount))] = row
    groups: dict[tuple, dict[float, list]] = {}
    for (schedule, method, sc, lr, _seed, amount), row in latest.items():
        groups.setdefault((schedule, method, sc, lr), {}).setdefault(amount, []).append(row)
    return {key: _curve(key, groups[key]) for key in sorted(groups, key=_config_order)}


def _curve(key: tuple, by_amount: dict[float, list]) -> Curve:
    """The curve of one configuration from its rows, grouped by amount."""
    amounts = np.array(sorted(by_amount), dtype=np.float64)
    mean = {m: np.full(len(amounts), np.nan) for m in METRICS}
    std = {m: np.full(len(amounts), np.nan) for m in METRICS}
    n = np.zeros(len(amounts), dtype=int)
    diverged = np.zeros(len(amounts), dtype=int)
    seeds = set()
    for i, a in enumerate(amounts):
        group = by_amount[float(a)]
        n[i] = len(group)
        diverged[i] = sum(r.diverged for r in group)
        seeds.update(r.seed for r in group)
        for m in METRICS:
            vals = np.array([getattr(r, m) for r in group], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                mean[m][i] = vals.mean()
                std[m][i] = vals.std(ddof=1) if vals.size > 1 else 0.0
    return Curve(key[0], key[1], key[2], key[3], amounts, mean, std, n, diverged, tuple(sorted(seeds)))


def _config_order(key) -> tuple:
    schedule, method, scope, lr = key
    s = SCHEDULES.index(schedule) if schedule in SCHEDULES else len(SCHEDULES)
    m = METHODS.index(method) if method in METHODS else len(METHODS)
    lr_rank = LRS.index(lr) if lr in LRS else len(LRS)
    return (s, schedule, m, method, scope != "layer", scope, lr_rank, -lr)


def curves_for_scope(rows, scope: str | None = None) -> dict[tuple, Curve]:
    """Curves of one scope (default: ``preferred_scope``), keyed (schedule, method, lr)."""
    scope = scope or preferred_scope(rows)
    return {(k[0], k[1], k[3]): c for k, c in aggregate(rows, scope).items()}
