"""The results model that the figures, the claims and the report read: rows grouped into *curves*.

A curve is one (schedule, method, scope, lr, criterion) with the mean and standard deviation over seeds of every
metric at each pruning amount (``aggregate``). The figures (``plots.figures``), the claim checks
(``minicnn.study.claims``) and the report (``minicnn.study.report``) all read the same curves, so they
always show the same numbers; a figure's file name and title are defined here once, for the figures
and for the report's links to them. Rows are ``minicnn.study.results.ResultRow`` objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minicnn.paper import ALL_SCHEDULES, LRS, METHODS, SCHEDULES

SCHEDULE_TITLES = {"oneshot": "One-shot", "iterative": "Iterative", "agp": "AGP", "lth": "LTH"}
#: The criterion the paper ranks weights by (L1 / L2 magnitude); others are beyond the paper.
PAPER_CRITERION = "magnitude"
CRITERIA_ORDER = ("magnitude", "random", "gradmag")

#: Columns averaged over seeds.
METRICS = ("test_acc_after", "test_acc_before", "train_acc", "train_loss", "test_loss", "remaining",
           "remaining_effective", "params_total", "params_nonzero", "params_effective", "flops_dense",
           "flops_effective", "training_flops_effective", "epochs", "seconds", "compression_ratio",
           "theoretical_speedup", "epochs_spent", "train_flops_spent")


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


def config_label(schedule: str, method: str, lr: float, criterion: str = PAPER_CRITERION) -> str:
    """'one-shot structured, lr 0.8' (+ ', random criterion' for a criterion other than magnitude)."""
    label = f"{SCHEDULE_TITLES.get(schedule, schedule).lower()} {method}, lr {fmt_lr(lr)}"
    return label if criterion == PAPER_CRITERION else f"{label}, {criterion} criterion"


def figure_stem(schedule: str, method: str, lr: float, scope: str = "layer", preferred: str | None = "layer",
                criterion: str = PAPER_CRITERION) -> str:
    """File name without extension: 'oneshot_structured_lr0.8' (+ '_random' for a criterion other than
    magnitude, + '_global' for a second scope)."""
    stem = f"{schedule}_{method}_lr{fmt_lr(lr)}"
    if criterion != PAPER_CRITERION:
        stem += f"_{criterion}"
    return stem if scope == preferred else f"{stem}_{scope}"


def figure_title(schedule: str, method: str, lr: float, scope: str | None = None,
                 criterion: str = PAPER_CRITERION) -> str:
    """'One-shot structured pruning, lr 0.8' (the paper's figure for that configuration), + ' (global scope)';
    a criterion other than magnitude is named: 'One-shot structured pruning (random criterion), lr 0.8'."""
    what = "pruning" if criterion == PAPER_CRITERION else f"pruning ({criterion} criterion)"
    title = f"{SCHEDULE_TITLES.get(schedule, schedule)} {method} {what}, lr {fmt_lr(lr)}"
    return f"{title} ({scope} scope)" if scope else title


#: The summary figures drawn by ``plots.figures``: file name (without extension) and heading.
SUMMARY_FIGURES = (("summary_schedules", "One-shot vs iterative"), ("summary_lrs", "Learning rates compared"),
                   ("summary_methods", "Structured vs unstructured"),
                   ("summary_flops", "Test accuracy vs effective training FLOPs per image"))

#: The figures beyond the paper's, drawn by ``plots.study_figures`` when ``has_beyond_rows``: name and heading.
STUDY_FIGURES = (("accuracy_vs_compression", "Test accuracy vs compression ratio"),
                 ("accuracy_vs_speedup", "Test accuracy vs theoretical speedup"),
                 ("schedules_equal_compute", "Schedules at equal compute"))


@dataclass
class Curve:
    """One (schedule, method, scope, lr, criterion): per-amount mean/std over seeds of every metric.

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
    criterion: str = PAPER_CRITERION

    @property
    def label(self) -> str:
        return config_label(self.schedule, self.method, self.lr, self.criterion)

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


def is_paper_row(row) -> bool:
    """Whether a row is of the paper's grid: a paper schedule (one-shot, iterative), magnitude criterion."""
    return row.schedule in SCHEDULES and row.criterion == PAPER_CRITERION


def has_beyond_rows(rows) -> bool:
    """Whether any row lies beyond the paper's grid (another criterion, schedule agp or lth)."""
    return any(not is_paper_row(r) for r in rows)


def paper_rows(rows) -> list:
    """The rows of the paper's grid (``is_paper_row``); the claims and the paper's figures read only these."""
    return [r for r in rows if is_paper_row(r)]


def aggregate(rows, scope: str | None = None) -> dict[tuple, Curve]:
    """Group rows into curves keyed (schedule, method, scope, lr, criterion); ``scope`` keeps only that scope.

    Rows of different criteria never share a curve. Curves come in the paper's order (schedule, method,
    criterion, layer scope first, lr). When a (configuration, seed, amount) appears more than once, the
    last row wins (a rerun).
    """
    latest = {}
    for row in rows:
        if scope is not None and row.scope != scope:
            continue
        latest[(row.schedule, row.method, row.scope, lr_key(row.lr), row.criterion, row.seed,
                amount_key(row.amount))] = row
    groups: dict[tuple, dict[float, list]] = {}
    for (schedule, method, sc, lr, criterion, _seed, amount), row in latest.items():
        groups.setdefault((schedule, method, sc, lr, criterion), {}).setdefault(amount, []).append(row)
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
    return Curve(key[0], key[1], key[2], key[3], amounts, mean, std, n, diverged, tuple(sorted(seeds)), key[4])


def _rank(value, order: tuple) -> int:
    return order.index(value) if value in order else len(order)


def _config_order(key) -> tuple:
    schedule, method, scope, lr, criterion = key
    return (_rank(schedule, ALL_SCHEDULES), schedule, _rank(method, METHODS), method,
            _rank(criterion, CRITERIA_ORDER), criterion, scope != "layer", scope, _rank(lr, LRS), -lr)


def curves_for_scope(rows, scope: str | None = None) -> dict[tuple, Curve]:
    """The paper's curves (``paper_rows``: one-shot and iterative, magnitude) of one scope (default:
    ``preferred_scope`` of all the rows), keyed (schedule, method, lr)."""
    scope = scope or preferred_scope(rows)
    return {(k[0], k[1], k[3]): c for k, c in aggregate(paper_rows(rows), scope).items()}
