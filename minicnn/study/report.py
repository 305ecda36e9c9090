"""Markdown report of a pruning sweep: what ran, the results tables, the figures, and every claim of
the paper checked against the measured rows.

The input is the list of row dicts of a results table (``minicnn.study.results.load_results``). Rows are
grouped into *curves*, one per (schedule, method, scope, lr), with the mean and standard deviation over
seeds at each pruning amount (``aggregate``). The plotting code (``plots.figures``) uses the same
grouping, so the figures and the tables always show the same numbers.

Each claim of the paper is a small function of the curves with an explicit tolerance that is printed
in the report beside the verdict (``evaluate_claims``). Claims are checked on the layerwise rows when
there are any (the paper prunes each tensor separately), else on the one scope present. A claim whose
rows are absent is reported as "not testable" and names what is missing, so a partial sweep still
gets a complete report.

Conventions used by the claims (all accuracies are fractions; "points" are percentage points):
- "~10%" (chance on CIFAR-10) means at most ``CHANCE + NEAR_CHANCE`` = 15%.
- "about X%" means within ``ABOUT`` = 5 points of X.
- The *unpruned accuracy* of a curve is the better of the test accuracy before and after fine-tuning
  at amount 0 (before fine-tuning it is the trained baseline, shared by every learning rate).
- A curve's *fall* (onset of the drop) is the first amount at which the test accuracy after
  fine-tuning is more than ``FALL`` = 10 points below its unpruned accuracy.
- A curve *collapses* at the first amount from which every larger amount is at ~10%.
- *Steepness* is the largest decrease of the test accuracy after fine-tuning between two neighbouring
  amounts of the grid.
- The *train-test gap* is train accuracy minus test accuracy, both after fine-tuning; the model
  *overfits* where the gap exceeds ``GAP`` = 3 points and train and test are *similar* where
  |gap| <= 3 points.
- Learning rates and schedules are compared by the mean test accuracy after fine-tuning over the
  amounts that all compared curves have; "best" allows a tie of ``TIE`` = 1 point.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from minicnn.errors import MiniCNNError

#: The paper's grid (Table 1, Section 1.3).
PAPER_AMOUNTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
PAPER_LRS = (0.8, 0.01, 0.0001)
PAPER_EPOCHS = 10
SCHEDULES = ("oneshot", "iterative")
METHODS = ("structured", "unstructured")
SCHEDULE_TITLES = {"oneshot": "One-shot", "iterative": "Iterative"}

#: Columns averaged over seeds.
METRICS = ("test_acc_after", "test_acc_before", "train_acc", "train_loss", "test_loss", "remaining",
           "remaining_effective", "params_total", "params_nonzero", "params_effective", "flops_dense",
           "flops_effective", "training_flops_effective", "epochs", "seconds")

# Tolerances of the claims (fractions of 1; 0.01 = one percentage point).
CHANCE = 0.10          # accuracy of a constant guess on CIFAR-10's balanced test split
NEAR_CHANCE = 0.05     # "~10%": at most 15%
ABOUT = 0.05           # "about X%": X +- 5 points
GAP = 0.03             # train - test gap above 3 points = overfitting; |gap| <= 3 points = similar
SLIGHT_GAP = (0.01, 0.10)  # "slightly overfitting": gap in (1, 10] points
TIE = 0.01             # comparisons of means: within 1 point counts as a tie
FALL = 0.10            # a "fall"/"drop": more than 10 points below the unpruned accuracy
RECOVER = 0.10         # "recovers": fine-tuning gains at least 10 points
WINDOW = 0.10          # "around X% of the parameters": X +- 10 points of amount
STEEPER = 0.02         # one curve is steeper than another when its largest step is 2+ points larger
FAR = 0.05             # "far less aggressive": 5+ points more accuracy right after pruning
SIMILAR = 0.02         # "similar" schedules: mean difference at least -2 points
UNDERFIT = 0.05        # underfitting: mean train accuracy 5+ points below that at lr 0.01
R2_LINEAR = 0.90       # "linear decline": R^2 of a straight-line fit >= 0.9
SLOW_STEP = 0.10       # "slow decline": no step between neighbouring amounts (up to 95%) above 10 points
DECENT = 0.40          # "ran decently well": baseline test accuracy >= 40% (the paper gives no number)
NO_EFFECTIVE = 0.01    # "kernels wiped out": fewer than 1% of the parameters still effective

CONFIRMED, PARTLY, NOT_CONFIRMED, NOT_TESTABLE = "confirmed", "partly", "not confirmed", "not testable"
VERDICTS = (CONFIRMED, PARTLY, NOT_CONFIRMED, NOT_TESTABLE)

_EPS = 1e-9

#: The first line of every report (`minicnn report` replaces only files that start with it).
REPORT_TITLE = "# Pruning a small CIFAR-10 CNN: results and the paper's claims"


# ------------------------------------------------------------------------------------- grouping
def lr_key(lr) -> float:
    """A learning rate as a canonical float (6 significant digits), so 0.01 read from CSV matches."""
    return float(f"{float(lr):.6g}")


def _amount_key(amount) -> float:
    return round(float(amount), 6)


def fmt_lr(lr: float) -> str:
    return f"{lr:g}"


def config_label(schedule: str, method: str, lr: float) -> str:
    """'one-shot structured, lr 0.8'."""
    return f"{SCHEDULE_TITLES.get(schedule, schedule).lower()} {method}, lr {fmt_lr(lr)}"


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
        """Mean of ``metric`` at ``amount``; raises _Missing when the amount or value is absent."""
        i = self.index(amount)
        if i is None:
            raise _Missing(f"no rows at amount {_pa(amount)} for {self.label}")
        v = float(self.mean[metric][i])
        if not math.isfinite(v):
            raise _Missing(f"no {metric} at amount {_pa(amount)} for {self.label}")
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

    When a (configuration, seed, amount) appears more than once, the last row wins (a rerun).
    """
    latest: dict[tuple, dict] = {}
    for row in rows:
        sc = row.scope
        if scope is not None and sc != scope:
            continue
        key = (row.schedule, row.method, sc, lr_key(row.lr), row.seed, _amount_key(row.amount))
        latest[key] = row
    groups: dict[tuple, dict[float, list[dict]]] = {}
    for (schedule, method, sc, lr, _seed, amount), row in latest.items():
        groups.setdefault((schedule, method, sc, lr), {}).setdefault(amount, []).append(row)
    curves = {}
    for key in sorted(groups, key=_config_order):
        by_amount = groups[key]
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
        curves[key] = Curve(key[0], key[1], key[2], key[3], amounts, mean, std, n, diverged,
                            tuple(sorted(seeds)))
    return curves


def _num(v) -> float:
    if v is None or v == "":
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _config_order(key) -> tuple:
    schedule, method, scope, lr = key
    s = SCHEDULES.index(schedule) if schedule in SCHEDULES else len(SCHEDULES)
    m = METHODS.index(method) if method in METHODS else len(METHODS)
    lr_rank = PAPER_LRS.index(lr) if lr in PAPER_LRS else len(PAPER_LRS)
    return (s, schedule, m, method, scope != "layer", scope, lr_rank, -lr)


def curves_for_scope(rows, scope: str | None = None) -> dict[tuple, Curve]:
    """Curves of one scope (default: ``preferred_scope``), keyed (schedule, method, lr)."""
    scope = scope or preferred_scope(rows)
    return {(k[0], k[1], k[3]): c for k, c in aggregate(rows, scope).items()}


# ------------------------------------------------------------------------------- claim helpers
class _Missing(Exception):
    """The rows a claim needs are absent: the claim is not testable."""


class _suppress_missing:
    """``with _suppress_missing():`` skips a block whose rows are absent."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, _Missing)


class _Data:
    def __init__(self, curves: dict[tuple, Curve]):
        self.curves = curves

    def curve(self, schedule: str, method: str, lr: float) -> Curve:
        c = self.curves.get((schedule, method, lr_key(lr)))
        if c is None or not np.isfinite(c.mean["test_acc_after"]).any():
            raise _Missing(f"no rows for {config_label(schedule, method, lr)}")
        return c

    def available(self, schedule: str, method: str, lr: float) -> Curve | None:
        try:
            return self.curve(schedule, method, lr)
        except _Missing:
            return None


@dataclass
class Outcome:
    measurement: str
    verdict: str
    reason: str = ""


@dataclass
class Claim:
    cid: str
    section: str
    text: str
    tolerance: str
    check: Callable[[_Data], Outcome]


CLAIMS: list[Claim] = []


def _claim(cid: str, section: str, text: str, tolerance: str):
    def register(fn):
        CLAIMS.append(Claim(cid, section, text, tolerance, fn))
        return fn
    return register


def _p(v: float) -> str:
    """0.4567 -> '45.7%'."""
    return f"{100 * v:.1f}%" if math.isfinite(v) else "n/a"


def _pts(v: float) -> str:
    """0.052 -> '+5.2 pts'."""
    return f"{100 * v:+.1f} pts" if math.isfinite(v) else "n/a"


def _pa(a: float | None) -> str:
    """Amount 0.95 -> '95%'; None -> 'never'."""
    return "never" if a is None else f"{100 * a:.3g}%"


def _acc(c: Curve, metric: str = "test_acc_after") -> tuple[np.ndarray, np.ndarray]:
    """(amounts, values) of ``metric`` where it is finite."""
    v = c.mean[metric]
    ok = np.isfinite(v)
    if not ok.any():
        raise _Missing(f"no {metric} for {c.label}")
    return c.amounts[ok], v[ok]


def _unpruned(c: Curve) -> float:
    """The better of the test accuracy before and after fine-tuning at amount 0."""
    i = c.index(0.0)
    if i is None:
        raise _Missing(f"no rows at amount 0 (unpruned) for {c.label}")
    vals = [c.mean[m][i] for m in ("test_acc_before", "test_acc_after") if np.isfinite(c.mean[m][i])]
    if not vals:
        raise _Missing(f"no accuracy at amount 0 for {c.label}")
    return float(max(vals))


def _fall(c: Curve, drop: float = FALL) -> float | None:
    """First amount where the test accuracy after fine-tuning is > ``drop`` below the unpruned one."""
    ref = _unpruned(c)
    amounts, acc = _acc(c)
    for a, v in zip(amounts, acc):
        if v < ref - drop:
            return float(a)
    return None


def _near_chance(v) -> np.ndarray | bool:
    return np.asarray(v) <= CHANCE + NEAR_CHANCE + _EPS


def _collapse(c: Curve) -> float | None:
    """First amount from which every larger amount has test accuracy after fine-tuning at ~10%."""
    amounts, acc = _acc(c)
    near = _near_chance(acc)
    if not near[-1]:
        return None
    i = len(near) - 1
    while i > 0 and near[i - 1]:
        i -= 1
    return float(amounts[i])


def _steps(c: Curve, upto: float | None = None) -> list[tuple[float, float, float]]:
    """(from, to, decrease) between neighbouring amounts, decrease > 0 when accuracy falls."""
    amounts, acc = _acc(c)
    if upto is not None:
        keep = amounts <= upto + _EPS
        amounts, acc = amounts[keep], acc[keep]
    return [(float(amounts[i]), float(amounts[i + 1]), float(acc[i] - acc[i + 1]))
            for i in range(len(amounts) - 1)]


def _steepest(c: Curve, upto: float | None = None) -> tuple[float, float, float]:
    steps = _steps(c, upto)
    if not steps:
        raise _Missing(f"fewer than two amounts for {c.label}")
    return max(steps, key=lambda s: s[2])


def _fmt_step(step) -> str:
    a, b, d = step
    return f"{100 * d:.1f} pts ({_pa(a)}->{_pa(b)})"


def _gaps(c: Curve) -> tuple[np.ndarray, np.ndarray]:
    """(amounts, train acc - test acc after fine-tuning) where both are known."""
    g = c.mean["train_acc"] - c.mean["test_acc_after"]
    ok = np.isfinite(g)
    if not ok.any():
        raise _Missing(f"no train accuracy for {c.label}")
    return c.amounts[ok], g[ok]


def _common_means(curves: list[Curve], metric: str = "test_acc_after",
                  pruned_only: bool = False) -> tuple[list[float], list[float]]:
    """Mean of ``metric`` of each curve over the amounts every curve has (optionally only > 0)."""
    sets = []
    for c in curves:
        a, _v = _acc(c, metric)
        sets.append({_amount_key(x) for x in a})
    common = sorted(set.intersection(*sets))
    if pruned_only:
        common = [a for a in common if a > 0]
    if not common:
        raise _Missing("no amount common to " + ", ".join(c.label for c in curves))
    means = [float(np.mean([c.value(a, metric) for a in common])) for c in curves]
    return means, common


def _amounts_note(common: list[float]) -> str:
    if len(common) == len(PAPER_AMOUNTS) and all(abs(a - b) < 1e-6 for a, b in zip(common, PAPER_AMOUNTS)):
        return "the 12 paper amounts"
    return f"{len(common)} common amounts"


def _count_verdict(ok: int, total: int, reason_bad: str = "") -> tuple[str, str]:
    if ok == total:
        return CONFIRMED, ""
    if ok * 2 >= total and ok > 0:
        return PARTLY, reason_bad
    return NOT_CONFIRMED, reason_bad


def _two_part(a: bool, b: bool, why_a: str, why_b: str) -> tuple[str, str]:
    """Verdict of a claim made of two parts: both -> confirmed, one -> partly, none -> not."""
    reasons = "; ".join(w for ok, w in ((a, why_a), (b, why_b)) if not ok)
    if a and b:
        return CONFIRMED, ""
    if a or b:
        return PARTLY, reasons
    return NOT_CONFIRMED, reasons


def _r2(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(R^2, slope) of a least-squares straight line; R^2 = 0 for a flat series."""
    if len(x) < 3:
        raise _Missing("fewer than three amounts for a straight-line fit")
    slope, intercept = np.polyfit(x, y, 1)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot < 1e-12:
        return 0.0, float(slope)
    ss_res = float(np.sum((y - (slope * x + intercept)) ** 2))
    return 1.0 - ss_res / ss_tot, float(slope)


def _dead_note(c: Curve, amount: float) -> str:
    """Why a structured model at ``amount`` can only guess: almost no effective parameters left."""
    i = c.index(amount)
    if i is None or c.method != "structured":
        return ""
    eff, total = c.mean["params_effective"][i], c.mean["params_total"][i]
    if np.isfinite(eff) and np.isfinite(total) and total > 0 and eff / total < NO_EFFECTIVE:
        return (f"at {_pa(amount)} structured pruning removes every conv filter: {eff:,.0f} of {total:,.0f} "
                f"parameters stay effective, so the prediction cannot depend on the image")
    return ""


# ----------------------------------------------------------------------------------- generic claims
def _lr_best(d: _Data, schedule: str, method: str) -> Outcome:
    curves = [d.curve(schedule, method, lr) for lr in PAPER_LRS]
    means, common = _common_means(curves)
    m = dict(zip(PAPER_LRS, means))
    meas = (f"mean test acc after over {_amounts_note(common)}: "
            + ", ".join(f"lr {fmt_lr(lr)} {_p(v)}" for lr, v in m.items()))
    others = {lr: v for lr, v in m.items() if lr != 0.01}
    best_lr = max(others, key=others.get)
    if m[0.01] >= others[best_lr] + TIE:
        return Outcome(meas, CONFIRMED)
    if m[0.01] >= others[best_lr] - TIE:
        return Outcome(meas, CONFIRMED, f"tied within {100 * TIE:.0f} point with lr {fmt_lr(best_lr)}")
    return Outcome(meas, NOT_CONFIRMED,
                   f"lr {fmt_lr(best_lr)} is better by {100 * (others[best_lr] - m[0.01]):.1f} pts")


def _recovery(d: _Data, schedule: str, method: str, lr: float, amount: float = 0.99) -> Outcome:
    c = d.curve(schedule, method, lr)
    before, after = c.value(amount, "test_acc_before"), c.value(amount, "test_acc_after")
    gain = after - before
    meas = f"at {_pa(amount)}: before fine-tuning {_p(before)}, after {_p(after)} ({_pts(gain)})"
    near = bool(_near_chance(before))
    dead = _dead_note(c, amount)
    if near and gain >= RECOVER:
        return Outcome(meas, CONFIRMED)
    if near and gain >= RECOVER / 2:
        return Outcome(meas, PARTLY, f"starts near 10% but fine-tuning gains only {100 * gain:.1f} pts"
                       + (f"; {dead}" if dead else ""))
    if not near and gain >= RECOVER:
        return Outcome(meas, PARTLY, f"recovers, but from {_p(before)}, not ~10%")
    reason = dead or (f"fine-tuning gains {100 * gain:.1f} pts" if near else
                      f"accuracy before fine-tuning is {_p(before)}, not ~10%, and fine-tuning gains "
                      f"{100 * gain:.1f} pts")
    return Outcome(meas, NOT_CONFIRMED, reason)


def _mean_above(d: _Data, schedule: str, method: str, hi_lr: float, lo_lr: float) -> Outcome:
    """Mean test accuracy after fine-tuning at ``hi_lr`` above that at ``lo_lr`` by more than TIE."""
    a, b = d.curve(schedule, method, hi_lr), d.curve(schedule, method, lo_lr)
    (ma, mb), common = _common_means([a, b])
    meas = (f"mean test acc after over {_amounts_note(common)}: lr {fmt_lr(hi_lr)} {_p(ma)}, "
            f"lr {fmt_lr(lo_lr)} {_p(mb)}")
    if ma > mb + TIE:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, f"lr {fmt_lr(hi_lr)} is {_pts(ma - mb)} vs lr {fmt_lr(lo_lr)}")


# ---------------------------------------------------------------------------------- the claims
@_claim("C01", "1.2", "The baseline (8 conv kernels, batch 512, lr 0.8) is what \"ran decently well\".",
        f"baseline test accuracy (amount 0, before fine-tuning) >= {_p(DECENT)} (the paper gives no number)")
def _c01(d: _Data) -> Outcome:
    vals = []
    for c in d.curves.values():
        i = c.index(0.0)
        if i is not None and np.isfinite(c.mean["test_acc_before"][i]):
            vals.append(float(c.mean["test_acc_before"][i]))
    if not vals:
        raise _Missing("no rows at amount 0")
    base = float(np.mean(vals))
    meas = f"baseline test acc {_p(base)}"
    if base >= DECENT:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, f"below {_p(DECENT)}")


@_claim("C02", "2.1.1", "One-shot structured, lr 0.8: \"a huge dip down to an accuracy of 10% after removing "
        "more than 30% of the parameters\".",
        "first amount with test acc after <= 15% lies in (30%, 50%]; partly if the dip to ~10% "
        "happens at another amount")
def _c02(d: _Data) -> Outcome:
    c = d.curve("oneshot", "structured", 0.8)
    amounts, acc = _acc(c)
    near = _near_chance(acc)
    first = float(amounts[np.argmax(near)]) if near.any() else None
    before_dip = [f"{_pa(a)}: {_p(v)}" for a, v in zip(amounts, acc) if first is None or a <= first + _EPS][-2:]
    meas = f"first amount at ~10%: {_pa(first)}; " + ", ".join(before_dip)
    if first is None:
        return Outcome(meas, NOT_CONFIRMED, "never falls to ~10%")
    if 0.3 + _EPS < first <= 0.5 + _EPS:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, PARTLY, f"the dip to ~10% comes at {_pa(first)}, not just above 30%")


@_claim("C03", "2.1.1", "One-shot structured, lr 0.8: \"The model seems to get stuck after 30% of the "
        "parameters are removed\" (fine-tuning leaves it at ~10%).",
        "test acc after <= 15% at every amount above 30% (partly: at least half of them)")
def _c03(d: _Data) -> Outcome:
    c = d.curve("oneshot", "structured", 0.8)
    amounts, acc = _acc(c)
    sel = amounts > 0.3 + _EPS
    if not sel.any():
        raise _Missing(f"no amounts above 30% for {c.label}")
    stuck = int(_near_chance(acc[sel]).sum())
    before = c.mean["test_acc_before"][np.isin(c.amounts, amounts[sel])]
    meas = (f"{stuck}/{int(sel.sum())} amounts above 30% at ~10% (test acc after {_p(acc[sel].min())}"
            f"-{_p(acc[sel].max())}; mean before {_p(float(np.nanmean(before)))}, after {_p(float(acc[sel].mean()))})")
    verdict, reason = _count_verdict(stuck, int(sel.sum()), "fine-tuning lifts some of them above 15%")
    return Outcome(meas, verdict, reason)


@_claim("C04", "2.1.1", "One-shot structured: at lr 0.0001 \"there was not such a steep drop off of accuracy\" "
        "as at lr 0.8; \"the drop of accuracy also happened a less aggressive manner\".",
        f"largest decrease between neighbouring amounts at lr 0.0001 smaller than at lr 0.8 by >= "
        f"{100 * STEEPER:.0f} pts")
def _c04(d: _Data) -> Outcome:
    hi = _steepest(d.curve("oneshot", "structured", 0.8))
    lo = _steepest(d.curve("oneshot", "structured", 0.0001))
    meas = f"steepest step: lr 0.8 {_fmt_step(hi)}, lr 0.0001 {_fmt_step(lo)}"
    if lo[2] <= hi[2] - STEEPER:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, "lr 0.0001 falls as steeply as lr 0.8")


@_claim("C05", "2.1.1", "One-shot structured, lr 0.0001: the model \"was able to gain some accuracy from where it "
        "started\" (fine-tuning raises test accuracy above its value right after pruning).",
        f"mean (after - before) over pruned amounts >= {100 * TIE:.0f} pt; partly if > 0")
def _c05(d: _Data) -> Outcome:
    c = d.curve("oneshot", "structured", 0.0001)
    g = c.mean["test_acc_after"] - c.mean["test_acc_before"]
    sel = (c.amounts > 0) & np.isfinite(g)
    if not sel.any():
        raise _Missing(f"no pruned amounts with accuracy before and after for {c.label}")
    gain = float(g[sel].mean())
    meas = f"mean gain from fine-tuning {_pts(gain)} (range {_pts(float(g[sel].min()))} to {_pts(float(g[sel].max()))})"
    if gain >= TIE:
        return Outcome(meas, CONFIRMED)
    if gain > 0:
        return Outcome(meas, PARTLY, "the gain is below 1 point")
    return Outcome(meas, NOT_CONFIRMED, "fine-tuning at lr 0.0001 does not raise test accuracy")


@_claim("C06", "2.1.1", "Structured pruning: \"Kernels being wiped out entirely could also completely mess up the "
        "model\".",
        f"every structured row with < {100 * NO_EFFECTIVE:.0f}% of the parameters still effective (all conv "
        f"filters removed) has test acc after <= 15% (partly: at least half)")
def _c06(d: _Data) -> Outcome:
    hits = []
    for (schedule, method, lr), c in d.curves.items():
        if method != "structured":
            continue
        frac = c.mean["params_effective"] / c.mean["params_total"]
        for i in np.flatnonzero(np.isfinite(frac) & (frac < NO_EFFECTIVE)):
            if np.isfinite(c.mean["test_acc_after"][i]):
                hits.append((c, float(c.amounts[i]), float(c.mean["test_acc_after"][i])))
    if not hits:
        raise _Missing("no structured rows with every conv filter removed")
    ok = sum(bool(_near_chance(v)) for _c, _a, v in hits)
    top = max(hits, key=lambda h: h[2])
    meas = (f"{ok}/{len(hits)} such rows at ~10% (highest: {_p(top[2])}, {top[0].label} at {_pa(top[1])})")
    verdict, reason = _count_verdict(ok, len(hits), "some models without any filter score above 15%")
    return Outcome(meas, verdict, reason)


@_claim("C07", "2.1.2", "One-shot structured: \"the learning rate of .01 seems to be the best out of the 3 chosen\".",
        f"mean test acc after at lr 0.01 >= that at lr 0.8 and at lr 0.0001 minus {100 * TIE:.0f} pt")
def _c07(d: _Data) -> Outcome:
    return _lr_best(d, "oneshot", "structured")


@_claim("C08", "2.1.2", "One-shot structured, lr 0.01: \"a good recovery from an initial test accuracy of 10% at a "
        "pruning amount of 99%\".",
        f"at 99%: test acc before <= 15% and fine-tuning gains >= {100 * RECOVER:.0f} pts (partly: >= "
        f"{50 * RECOVER:.0f} pts, or the full gain from above 15%)")
def _c08(d: _Data) -> Outcome:
    return _recovery(d, "oneshot", "structured", 0.01)


@_claim("C09", "2.1.2", "One-shot structured, lr 0.01: \"The models seem to not be overfitting either, as the "
        "training accuracy and the test accuracy after training seem to be pretty similar as more parameters are "
        "pruned\".",
        f"|train acc - test acc after| <= {100 * GAP:.0f} pts at every amount; partly if only at amounts >= 50%")
def _c09(d: _Data) -> Outcome:
    amounts, g = _gaps(d.curve("oneshot", "structured", 0.01))
    worst = int(np.argmax(np.abs(g)))
    meas = f"train - test gap {_pts(float(g.min()))} to {_pts(float(g.max()))} (largest |gap| at {_pa(amounts[worst])})"
    if np.all(np.abs(g) <= GAP + _EPS):
        return Outcome(meas, CONFIRMED)
    high = amounts >= 0.5 - _EPS
    if high.any() and np.all(np.abs(g[high]) <= GAP + _EPS):
        return Outcome(meas, PARTLY, "similar only from 50% pruned on")
    return Outcome(meas, NOT_CONFIRMED, f"gap of {_pts(float(g[worst]))} at {_pa(amounts[worst])}")


@_claim("C10", "2.1.3", "One-shot structured, lr 0.0001: \"the models are not overfitting or underfitting\".",
        f"not overfitting: train - test gap <= {100 * GAP:.0f} pts at every amount; not underfitting: mean train acc "
        f"at most {100 * UNDERFIT:.0f} pts below that at lr 0.01")
def _c10(d: _Data) -> Outcome:
    c = d.curve("oneshot", "structured", 0.0001)
    _amounts, g = _gaps(c)
    over_ok = bool(np.all(g <= GAP + _EPS))
    meas = f"largest train - test gap {_pts(float(g.max()))}"
    ref = d.available("oneshot", "structured", 0.01)
    if ref is None:
        return Outcome(meas + "; underfitting not testable (no rows for lr 0.01)",
                       PARTLY if over_ok else NOT_CONFIRMED,
                       "" if over_ok else "overfits")
    (t_lo, t_ref), _common = _common_means([c, ref], "train_acc")
    under_ok = t_lo >= t_ref - UNDERFIT
    meas += f"; mean train acc {_p(t_lo)} vs {_p(t_ref)} at lr 0.01"
    verdict, reason = _two_part(over_ok, under_ok, "overfits", "underfits relative to lr 0.01")
    return Outcome(meas, verdict, reason)


@_claim("C11", "2.1.3", "One-shot structured, lr 0.0001 \"is not the best it is not the worst either\": below lr "
        "0.01 (\"the accuracy is not there when compared\") but not below lr 0.8.",
        f"mean test acc after: lr 0.0001 < lr 0.01 - {100 * TIE:.0f} pt, and lr 0.0001 >= lr 0.8 - {100 * TIE:.0f} pt")
def _c11(d: _Data) -> Outcome:
    curves = [d.curve("oneshot", "structured", lr) for lr in PAPER_LRS]
    (m8, m01, m0001), _common = _common_means(curves)
    meas = f"mean test acc after: lr 0.8 {_p(m8)}, lr 0.01 {_p(m01)}, lr 0.0001 {_p(m0001)}"
    verdict, reason = _two_part(m0001 < m01 - TIE, m0001 >= m8 - TIE,
                                "lr 0.0001 is not below lr 0.01", "lr 0.0001 is the worst")
    return Outcome(meas, verdict, reason)


@_claim("C12", "2.2.1", "One-shot, lr 0.8: unstructured pruning shows \"a drop off in accuracy in a much later stage "
        "in the pruning\" than structured.",
        f"fall (first amount > {100 * FALL:.0f} pts below the unpruned accuracy) at least 20 pts of amount later "
        "for unstructured; partly if later by less")
def _c12(d: _Data) -> Outcome:
    fu = _fall(d.curve("oneshot", "unstructured", 0.8))
    fs = _fall(d.curve("oneshot", "structured", 0.8))
    meas = f"fall at: structured {_pa(fs)}, unstructured {_pa(fu)}"
    if fs is None and fu is None:
        return Outcome(meas, NOT_CONFIRMED, "neither curve falls 10 pts below its unpruned accuracy")
    u = math.inf if fu is None else fu
    s = math.inf if fs is None else fs
    if u - s >= 0.2 - _EPS:
        return Outcome(meas, CONFIRMED)
    if u > s:
        return Outcome(meas, PARTLY, "later, but by less than 20% of the parameters")
    return Outcome(meas, NOT_CONFIRMED, "unstructured falls no later than structured")


@_claim("C13", "2.2.1", "One-shot: unstructured pruning is \"a far less aggressive way to prune the model\" than "
        "structured.",
        f"mean test acc right after pruning (before fine-tuning) over pruned amounts, all learning rates: "
        f"unstructured >= structured + {100 * FAR:.0f} pts; partly if higher by less")
def _c13(d: _Data) -> Outcome:
    us, ss, effs = [], [], []
    for lr in PAPER_LRS:
        cu, cs = d.available("oneshot", "unstructured", lr), d.available("oneshot", "structured", lr)
        if cu is None or cs is None:
            continue
        (mu, ms), _common = _common_means([cu, cs], "test_acc_before", pruned_only=True)
        us.append(mu)
        ss.append(ms)
        with _suppress_missing():  # the effective fraction is context only; older tables may lack it
            (eu, es), _common = _common_means([cu, cs], "remaining_effective", pruned_only=True)
            effs.append((eu, es))
    if not us:
        raise _Missing("no rows for one-shot structured and unstructured at the same learning rate")
    mu, ms = float(np.mean(us)), float(np.mean(ss))
    meas = f"mean test acc before fine-tuning: unstructured {_p(mu)}, structured {_p(ms)}"
    if effs:
        eu, es = float(np.mean([e[0] for e in effs])), float(np.mean([e[1] for e in effs]))
        meas += f"; mean effective parameters left {_p(eu)} vs {_p(es)}"
    if mu >= ms + FAR:
        return Outcome(meas, CONFIRMED)
    if mu > ms:
        return Outcome(meas, PARTLY, f"less aggressive by only {100 * (mu - ms):.1f} pts")
    return Outcome(meas, NOT_CONFIRMED, "unstructured pruning costs as much accuracy as structured")


@_claim("C14", "2.2.2", "One-shot unstructured: \"models trained with a learning rate of .01 performed better when "
        "being pruned then at the other learning rates\" (also 2.2.3: .01 is the \"middle ground\").",
        f"mean test acc after at lr 0.01 >= that at lr 0.8 and at lr 0.0001 minus {100 * TIE:.0f} pt")
def _c14(d: _Data) -> Outcome:
    return _lr_best(d, "oneshot", "unstructured")


@_claim("C15", "2.2.2", "One-shot unstructured, lr 0.01: \"The accuracy drop when compared the amount of pruning is "
        "'minimal' when compared to the other rates\".",
        f"mean drop (unpruned accuracy - test acc after) over pruned amounts is the smallest of the three "
        f"learning rates (tie {100 * TIE:.0f} pt) and <= {100 * FALL:.0f} pts; partly if only one holds")
def _c15(d: _Data) -> Outcome:
    curves = [d.curve("oneshot", "unstructured", lr) for lr in PAPER_LRS]
    means, _common = _common_means(curves, pruned_only=True)
    drops = {lr: _unpruned(c) - m for lr, c, m in zip(PAPER_LRS, curves, means)}
    meas = "mean drop over pruned amounts: " + ", ".join(f"lr {fmt_lr(lr)} {100 * v:.1f} pts"
                                                          for lr, v in drops.items())
    smallest = drops[0.01] <= min(drops[0.8], drops[0.0001]) + TIE
    small = drops[0.01] <= FALL
    verdict, reason = _two_part(smallest, small, "another learning rate drops less",
                                f"the drop exceeds {100 * FALL:.0f} pts")
    return Outcome(meas, verdict, reason)


@_claim("C16", "2.2.2", "One-shot unstructured, lr 0.01: \"the training and testing accuracies converge\" as more is "
        "pruned.",
        f"|train - test gap| at amounts >= 90% <= {100 * GAP:.0f} pts and no larger than at amounts <= 30%; "
        "partly if they were never apart")
def _c16(d: _Data) -> Outcome:
    amounts, g = _gaps(d.curve("oneshot", "unstructured", 0.01))
    low, high = g[amounts <= 0.3 + _EPS], g[amounts >= 0.9 - _EPS]
    if not low.size or not high.size:
        raise _Missing("no amounts <= 30% and >= 90% for one-shot unstructured, lr 0.01")
    gl, gh = float(np.mean(low)), float(np.mean(high))
    meas = f"mean train - test gap: {_pts(gl)} at <= 30%, {_pts(gh)} at >= 90%"
    if abs(gh) > GAP:
        return Outcome(meas, NOT_CONFIRMED, "train and test still differ at high pruning")
    if abs(gh) > abs(gl) + _EPS:
        return Outcome(meas, NOT_CONFIRMED, "the gap grows with pruning")
    if abs(gl) <= GAP:
        return Outcome(meas, PARTLY, "similar at every amount: nothing to converge from")
    return Outcome(meas, CONFIRMED)


@_claim("C17", "2.2.3", "One-shot unstructured, lr 0.0001: \"a fall in accuracy around ... the middle of the chart, "
        "when about half of the parameters are missing\".",
        f"fall (first amount > {100 * FALL:.0f} pts below the unpruned accuracy) within 50% +- {100 * WINDOW:.0f}%")
def _c17(d: _Data) -> Outcome:
    f = _fall(d.curve("oneshot", "unstructured", 0.0001))
    others = []
    for lr in (0.8, 0.01):
        c = d.available("oneshot", "unstructured", lr)
        if c is not None:
            with _suppress_missing():
                others.append(f"lr {fmt_lr(lr)} {_pa(_fall(c))}")
    meas = f"fall at {_pa(f)}" + (f" (other rates: {', '.join(others)})" if others else "")
    if f is not None and abs(f - 0.5) <= WINDOW + _EPS:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, "no fall" if f is None else f"the fall is at {_pa(f)}")


@_claim("C18", "2.2.3", "One-shot unstructured: \"if we go too high, we see a sharp decline in accuracy, and if we "
        "go too low, the decline isn't at sharp but it happens over a longer period\" (lr 0.8 vs 0.0001).",
        f"steepest step at lr 0.8 >= that at lr 0.0001 + {100 * STEEPER:.0f} pts, and lr 0.0001 declines (by "
        f">= {100 * STEEPER:.0f} pts) over at least as many neighbouring steps; partly if one holds")
def _c18(d: _Data) -> Outcome:
    hi, lo = d.curve("oneshot", "unstructured", 0.8), d.curve("oneshot", "unstructured", 0.0001)
    sh, sl = _steepest(hi), _steepest(lo)
    nh = sum(s[2] >= STEEPER for s in _steps(hi))
    nl = sum(s[2] >= STEEPER for s in _steps(lo))
    meas = (f"steepest step: lr 0.8 {_fmt_step(sh)}, lr 0.0001 {_fmt_step(sl)}; declining steps: "
            f"lr 0.8 {nh}, lr 0.0001 {nl}")
    verdict, reason = _two_part(sh[2] >= sl[2] + STEEPER, nl >= nh, "lr 0.8 is not sharper",
                                "lr 0.0001 declines over fewer steps")
    return Outcome(meas, verdict, reason)


def _schedule_pairs(d: _Data) -> list[tuple[str, float, Curve, Curve]]:
    pairs = []
    for method in METHODS:
        for lr in PAPER_LRS:
            a, b = d.available("iterative", method, lr), d.available("oneshot", method, lr)
            if a is not None and b is not None:
                pairs.append((method, lr, a, b))
    if not pairs:
        raise _Missing("no configuration run with both schedules")
    return pairs


@_claim("C19", "3", "Iterative pruning: \"the results are either better or similar to one shot pruning\".",
        f"for every method x lr, mean test acc after (iterative - one-shot) >= -{100 * SIMILAR:.0f} pts; partly if "
        "for at least half")
def _c19(d: _Data) -> Outcome:
    diffs = []
    for method, lr, it, os_ in _schedule_pairs(d):
        (mi, mo), _common = _common_means([it, os_])
        diffs.append((f"{method} lr {fmt_lr(lr)}", mi - mo))
    ok = sum(v >= -SIMILAR - _EPS for _n, v in diffs)
    meas = "iterative - one-shot: " + ", ".join(f"{n} {_pts(v)}" for n, v in diffs)
    worst = min(diffs, key=lambda x: x[1])
    verdict, reason = _count_verdict(ok, len(diffs), f"iterative is worse for {worst[0]}")
    return Outcome(meas, verdict, reason)


@_claim("C20", "3", "\"Iterative pruning proved to be a better approach ... in terms of accuracy and accuracy drop "
        "off\".",
        f"in more than half of the method x lr pairs iterative has a higher mean test acc after (by > {100 * TIE:.0f} "
        f"pt), and in more than half its fall comes no earlier; partly if one holds")
def _c20(d: _Data) -> Outcome:
    pairs = _schedule_pairs(d)
    better = later = 0
    for _method, _lr, it, os_ in pairs:
        (mi, mo), _common = _common_means([it, os_])
        better += mi > mo + TIE
        fi, fo = _fall(it), _fall(os_)
        later += (math.inf if fi is None else fi) >= (math.inf if fo is None else fo)
    n = len(pairs)
    meas = f"iterative more accurate in {better}/{n} pairs, falls no earlier in {later}/{n}"
    verdict, reason = _two_part(better * 2 > n, later * 2 > n, "not more accurate in most pairs",
                                "falls earlier in most pairs")
    return Outcome(meas, verdict, reason)


@_claim("C21", "3.1.1", "Structured, lr 0.8: \"with the one-shot method, the accuracy drop off was sooner and much "
        "more drastic\" than with iterative pruning.",
        f"one-shot falls at a smaller amount, and its steepest step is >= {100 * STEEPER:.0f} pts larger; partly if "
        "one holds")
def _c21(d: _Data) -> Outcome:
    os_, it = d.curve("oneshot", "structured", 0.8), d.curve("iterative", "structured", 0.8)
    fo, fi = _fall(os_), _fall(it)
    so, si = _steepest(os_), _steepest(it)
    meas = (f"fall: one-shot {_pa(fo)}, iterative {_pa(fi)}; steepest step: one-shot {_fmt_step(so)}, "
            f"iterative {_fmt_step(si)}")
    sooner = (math.inf if fo is None else fo) < (math.inf if fi is None else fi)
    verdict, reason = _two_part(sooner, so[2] >= si[2] + STEEPER, "one-shot does not fall sooner",
                                "one-shot is not more drastic")
    return Outcome(meas, verdict, reason)


@_claim("C22", "3.1.1", "Iterative structured, lr 0.8: \"the model is overfitting\".",
        f"train - test gap > {100 * GAP:.0f} pts at some amount where test acc after is above ~10%")
def _c22(d: _Data) -> Outcome:
    c = d.curve("iterative", "structured", 0.8)
    amounts, g = _gaps(c)
    test = np.array([c.value(a) for a in amounts])
    alive = ~_near_chance(test)
    if not alive.any():
        return Outcome("test acc after at ~10% at every amount", NOT_CONFIRMED,
                       "train and test are both at chance: nothing to overfit")
    i = int(np.argmax(np.where(alive, g, -np.inf)))
    meas = f"largest train - test gap {_pts(float(g[i]))} at {_pa(amounts[i])}"
    if g[i] > GAP:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, f"gap never above {100 * GAP:.0f} pts")


@_claim("C23", "3.1.1", "Iterative structured, lr 0.8: \"converges down to 10% accuracy after about half of the "
        "parameters are removed\".",
        f"collapse (first amount from which test acc after stays <= 15%) within 50% +- {100 * WINDOW:.0f}%")
def _c23(d: _Data) -> Outcome:
    at = _collapse(d.curve("iterative", "structured", 0.8))
    meas = f"stays at ~10% from {_pa(at)}" if at is not None else "does not end at ~10%"
    if at is not None and abs(at - 0.5) <= WINDOW + _EPS:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, "never converges to ~10%" if at is None else f"converges at {_pa(at)}")


@_claim("C24", "3.1.2", "Iterative structured: \"We continue to see the trend of a middle ground learning rate which "
        "was .01\".",
        f"mean test acc after at lr 0.01 >= that at lr 0.8 and at lr 0.0001 minus {100 * TIE:.0f} pt")
def _c24(d: _Data) -> Outcome:
    return _lr_best(d, "iterative", "structured")


@_claim("C25", "3.1.2", "Iterative structured, lr 0.01: \"allows the model to retain some accuracy even after loosing "
        "99% of all parameters, which includes all the kernels\".",
        "test acc after at 99% above 15%")
def _c25(d: _Data) -> Outcome:
    c = d.curve("iterative", "structured", 0.01)
    v = c.value(0.99)
    meas = f"test acc after at 99%: {_p(v)}"
    if not _near_chance(v):
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, _dead_note(c, 0.99) or "at chance")


@_claim("C26", "3.1.2", "Iterative structured, lr 0.01: \"an accuracy of about 40% at 99% of parameters removed\".",
        f"test acc after at 99% within 40% +- {100 * ABOUT:.0f} pts")
def _c26(d: _Data) -> Outcome:
    c = d.curve("iterative", "structured", 0.01)
    v = c.value(0.99)
    meas = f"test acc after at 99%: {_p(v)}"
    if abs(v - 0.40) <= ABOUT + _EPS:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, _dead_note(c, 0.99) or f"{_pts(v - 0.40)} from 40%")


@_claim("C27", "3.1.2", "Iterative structured, lr 0.01: \"The model also goes from slightly overfitting to having "
        "similar training and test accuracies towards the end\".",
        f"mean train - test gap at amounts <= 30% in ({100 * SLIGHT_GAP[0]:.0f}, {100 * SLIGHT_GAP[1]:.0f}] pts and "
        f"|gap| at amounts >= 90% <= {100 * GAP:.0f} pts; partly if one holds")
def _c27(d: _Data) -> Outcome:
    amounts, g = _gaps(d.curve("iterative", "structured", 0.01))
    low, high = g[amounts <= 0.3 + _EPS], g[amounts >= 0.9 - _EPS]
    if not low.size or not high.size:
        raise _Missing("no amounts <= 30% and >= 90% for iterative structured, lr 0.01")
    gl, gh = float(np.mean(low)), float(np.mean(high))
    meas = f"mean train - test gap: {_pts(gl)} at <= 30%, {_pts(gh)} at >= 90%"
    verdict, reason = _two_part(SLIGHT_GAP[0] < gl <= SLIGHT_GAP[1], abs(gh) <= GAP,
                                "not slightly overfitting at first", "train and test differ at the end")
    return Outcome(meas, verdict, reason)


@_claim("C28", "3.1.3", "Iterative structured: \"the lower the rate gets the closer the accuracy declines at a linear "
        "rate with the removal of parameters\" (lr 0.0001 closest to linear).",
        f"straight-line fit of test acc after vs amount at lr 0.0001 has R^2 >= {R2_LINEAR} with negative slope, "
        "and its R^2 is the highest of the three rates; partly if one holds")
def _c28(d: _Data) -> Outcome:
    r2 = {}
    for lr in PAPER_LRS:
        c = d.available("iterative", "structured", lr) if lr != 0.0001 else d.curve("iterative", "structured", lr)
        if c is not None:
            a, v = _acc(c)
            r2[lr] = _r2(a, v)
    r, slope = r2[0.0001]
    meas = "R^2 of a straight line: " + ", ".join(f"lr {fmt_lr(lr)} {v[0]:.2f}" for lr, v in r2.items())
    meas += f"; slope at lr 0.0001 {100 * slope:+.1f} pts per 100% pruned"
    highest = all(r >= v[0] - _EPS for lr, v in r2.items())
    verdict, reason = _two_part(r >= R2_LINEAR and slope < 0, highest,
                                "lr 0.0001 is not a linear decline", "another rate is closer to linear")
    if len(r2) == 1:
        reason = "; ".join(x for x in (reason, "other rates absent") if x)
    return Outcome(meas, verdict, reason)


@_claim("C29", "3.1.3", "Iterative structured: lr 0.0001 is \"not completely tanking the accuracy like something with "
        "a high learning rate\".",
        f"mean test acc after at lr 0.0001 > that at lr 0.8 + {100 * TIE:.0f} pt")
def _c29(d: _Data) -> Outcome:
    return _mean_above(d, "iterative", "structured", 0.0001, 0.8)


@_claim("C30", "3.2.1", "Iterative unstructured, lr 0.8: \"We start seeing much better results than any of the other "
        "examples before\" (all one-shot runs and iterative structured).",
        f"mean test acc after higher than each earlier configuration by > {100 * TIE:.0f} pt; partly if than at "
        "least half")
def _c30(d: _Data) -> Outcome:
    target = d.curve("iterative", "unstructured", 0.8)
    earlier = [c for (s, m, lr), c in d.curves.items()
               if lr in PAPER_LRS and (s == "oneshot" or (s == "iterative" and m == "structured"))]
    if not earlier:
        raise _Missing("no rows for the earlier configurations (one-shot, iterative structured)")
    beaten, best = 0, None
    for c in earlier:
        (mt, mc), _common = _common_means([target, c])
        beaten += mt > mc + TIE
        if best is None or mc - mt > best[1]:
            best = (c.label, mc - mt)
    meas = f"better than {beaten}/{len(earlier)} earlier configurations"
    verdict, reason = _count_verdict(beaten, len(earlier),
                                     f"{best[0]} is {_pts(best[1])} vs iterative unstructured lr 0.8")
    return Outcome(meas, verdict, reason)


@_claim("C31", "3.2.1", "Iterative unstructured, lr 0.8: \"The sharp drop-off ... isn't happening until around 70% "
        "of the parameters have been pruned\".",
        f"fall (first amount > {100 * FALL:.0f} pts below the unpruned accuracy) within 70% +- {100 * WINDOW:.0f}%; "
        "partly if later")
def _c31(d: _Data) -> Outcome:
    f = _fall(d.curve("iterative", "unstructured", 0.8))
    meas = f"fall at {_pa(f)}"
    if f is not None and abs(f - 0.7) <= WINDOW + _EPS:
        return Outcome(meas, CONFIRMED)
    if f is None or f > 0.7:
        return Outcome(meas, PARTLY, "the drop comes even later" if f is not None else "no drop at all")
    return Outcome(meas, NOT_CONFIRMED, f"the drop comes at {_pa(f)}")


@_claim("C32", "3.2.1", "Iterative unstructured, lr 0.8: \"at 95% of the parameters being removed, we observe a "
        "training and testing accuracy of 40%\".",
        f"train acc and test acc after at 95% each within 40% +- {100 * ABOUT:.0f} pts; partly if one")
def _c32(d: _Data) -> Outcome:
    c = d.curve("iterative", "unstructured", 0.8)
    test, train = c.value(0.95), c.value(0.95, "train_acc")
    meas = f"at 95%: train {_p(train)}, test {_p(test)}"
    verdict, reason = _two_part(abs(train - 0.4) <= ABOUT + _EPS, abs(test - 0.4) <= ABOUT + _EPS,
                                f"train {_pts(train - 0.4)} from 40%", f"test {_pts(test - 0.4)} from 40%")
    return Outcome(meas, verdict, reason)


@_claim("C33", "3.2.2", "Iterative unstructured, lr 0.01: \"The most impressive example out of all of them\".",
        f"highest mean test acc after of all schedule x method x lr configurations (tie {100 * TIE:.0f} pt)")
def _c33(d: _Data) -> Outcome:
    target = d.curve("iterative", "unstructured", 0.01)
    others = [c for (s, m, lr), c in d.curves.items() if lr in PAPER_LRS and c is not target]
    if not others:
        raise _Missing("no other configurations to compare with")
    losers = []
    for c in others:
        (mt, mc), _common = _common_means([target, c])
        if mc > mt + TIE:
            losers.append((c.label, mc - mt))
    meas = f"ahead of or tied with {len(others) - len(losers)}/{len(others)} other configurations"
    if not losers:
        return Outcome(meas, CONFIRMED)
    top = max(losers, key=lambda x: x[1])
    return Outcome(meas, NOT_CONFIRMED, f"{top[0]} is better by {100 * top[1]:.1f} pts")


@_claim("C34", "3.2.2", "Iterative unstructured, lr 0.01: \"an accuracy drop of 15% after 99% of parameters have been "
        "removed\" (read as 15 points).",
        f"unpruned accuracy - test acc after at 99% within 15 +- {100 * ABOUT:.0f} pts")
def _c34(d: _Data) -> Outcome:
    c = d.curve("iterative", "unstructured", 0.01)
    ref, v = _unpruned(c), c.value(0.99)
    drop = ref - v
    meas = f"unpruned {_p(ref)}, at 99% {_p(v)}: drop {100 * drop:.1f} pts"
    if abs(drop - 0.15) <= ABOUT + _EPS:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, "larger drop" if drop > 0.15 else "smaller drop")


@_claim("C35", "3.2.2", "Iterative unstructured, lr 0.01: \"it was able to recover from a 10% test accuracy before it "
        "was fine tuned\" (at 99%).",
        f"at 99%: test acc before <= 15% and fine-tuning gains >= {100 * RECOVER:.0f} pts (partly: >= "
        f"{50 * RECOVER:.0f} pts, or the full gain from above 15%)")
def _c35(d: _Data) -> Outcome:
    return _recovery(d, "iterative", "unstructured", 0.01)


@_claim("C36", "3.2.2", "Iterative unstructured, lr 0.01: \"The model was overfitting until it had about 80% of all "
        "parameters removed\".",
        f"the first amount from which the train - test gap stays <= {100 * GAP:.0f} pts lies within 80% +- "
        f"{100 * WINDOW:.0f}%, and the mean gap before it is > {100 * GAP:.0f} pts; partly if one holds")
def _c36(d: _Data) -> Outcome:
    amounts, g = _gaps(d.curve("iterative", "unstructured", 0.01))
    over = g > GAP
    if not over.any():
        return Outcome(f"train - test gap at most {_pts(float(g.max()))}", NOT_CONFIRMED, "never overfitting")
    last = int(np.flatnonzero(over)[-1])
    if last == len(amounts) - 1:
        return Outcome(f"gap {_pts(float(g[-1]))} at {_pa(amounts[-1])}", NOT_CONFIRMED,
                       "still overfitting at the largest amount")
    t = float(amounts[last + 1])
    before = float(np.mean(g[: last + 1]))
    meas = f"gap <= {100 * GAP:.0f} pts from {_pa(t)} on; mean gap before {_pts(before)}"
    verdict, reason = _two_part(abs(t - 0.8) <= WINDOW + _EPS, before > GAP,
                                f"overfitting ends at {_pa(t)}", "only occasional overfitting before")
    return Outcome(meas, verdict, reason)


@_claim("C37", "3.2.3", "Iterative unstructured: \"there is a sweet spot learning rate\" (.01).",
        f"mean test acc after at lr 0.01 >= that at lr 0.8 and at lr 0.0001 minus {100 * TIE:.0f} pt")
def _c37(d: _Data) -> Outcome:
    return _lr_best(d, "iterative", "unstructured")


@_claim("C38", "3.2.3", "Iterative unstructured: \".8 crashes the accuracy and .0001 crashes it less\".",
        f"mean test acc after at lr 0.0001 > that at lr 0.8 + {100 * TIE:.0f} pt")
def _c38(d: _Data) -> Outcome:
    return _mean_above(d, "iterative", "unstructured", 0.0001, 0.8)


@_claim("C39", "3.2.3", "Iterative unstructured, lr 0.0001: \"This learning rate shows us a slow decline in "
        "accuracy\".",
        f"no decrease between neighbouring amounts up to 95% above {100 * SLOW_STEP:.0f} pts, and a decline "
        f"(unpruned - last amount) of at least {100 * STEEPER:.0f} pts; partly if one holds")
def _c39(d: _Data) -> Outcome:
    c = d.curve("iterative", "unstructured", 0.0001)
    st = _steepest(c, upto=0.95)
    amounts, acc = _acc(c)
    decline = _unpruned(c) - float(acc[-1])
    meas = f"steepest step up to 95%: {_fmt_step(st)}; total decline to {_pa(amounts[-1])}: {100 * decline:.1f} pts"
    verdict, reason = _two_part(st[2] <= SLOW_STEP + _EPS, decline >= STEEPER, "one step falls sharply",
                                "no decline")
    return Outcome(meas, verdict, reason)


def evaluate_claims(rows, scope: str | None = None) -> list[dict]:
    """Check every claim on the rows of ``scope`` (default: ``preferred_scope``).

    Returns one dict per claim: id, section, claim, tolerance, measurement, verdict, reason.
    """
    data = _Data(curves_for_scope(rows, scope))
    out = []
    for claim in CLAIMS:
        try:
            res = claim.check(data)
        except _Missing as exc:
            res = Outcome("-", NOT_TESTABLE, str(exc))
        out.append({"id": claim.cid, "section": claim.section, "claim": claim.text, "tolerance": claim.tolerance,
                    "measurement": res.measurement, "verdict": res.verdict, "reason": res.reason})
    return out


# ------------------------------------------------------------------------------------- the report
def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pm(mean: float, std: float, n: int, scale: float = 100.0, digits: int = 1) -> str:
    if not math.isfinite(mean):
        return "n/a"
    s = f"{scale * mean:.{digits}f}"
    if n > 1 and math.isfinite(std):
        s += f" ± {scale * std:.{digits}f}"
    return s


def _count(mean: float, std: float, n: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    s = f"{mean:,.0f}"
    if n > 1 and math.isfinite(std) and std > 0:
        s += f" ± {std:,.0f}"
    return s


def _flops(mean: float, std: float, n: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k"), (1.0, "")):
        if abs(mean) >= div or div == 1.0:
            s = f"{mean / div:.3g}{unit}"
            if n > 1 and math.isfinite(std) and std > 0:
                s += f" ± {std / div:.2g}{unit}"
            return s
    return f"{mean:g}"


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _results_table(c: Curve) -> list[str]:
    multi = int(c.n.max()) > 1
    lines = ["| amount | remaining | params effective | FLOPs effective | test acc before (%) | "
             "test acc after (%) | train acc (%) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for i, a in enumerate(c.amounts):
        n = int(c.n[i])
        after = _pm(c.mean["test_acc_after"][i], c.std["test_acc_after"][i], n)
        if c.diverged[i]:
            after += f" (diverged {c.diverged[i]}/{n})" if multi else " (diverged)"
        seeds = f" [{n} seeds]" if multi and n != int(c.n.max()) else ""
        lines.append(
            f"| {a:g}{seeds} | {1 - a:.3g} | "
            f"{_count(c.mean['params_effective'][i], c.std['params_effective'][i], n)} | "
            f"{_flops(c.mean['flops_effective'][i], c.std['flops_effective'][i], n)} | "
            f"{_pm(c.mean['test_acc_before'][i], c.std['test_acc_before'][i], n)} | {after} | "
            f"{_pm(c.mean['train_acc'][i], c.std['train_acc'][i], n)} |")
    return lines


def _figure_stem(schedule: str, method: str, lr: float, scope: str, preferred: str | None) -> str:
    stem = f"{schedule}_{method}_lr{fmt_lr(lr)}"
    return stem if scope == preferred else f"{stem}_{scope}"


def _values(rows, key, order: tuple = ()) -> list:
    """Distinct values of a column (NaN and None dropped), those in ``order`` first, in that order."""
    found = {getattr(r, key) for r in rows if getattr(r, key) == getattr(r, key)}
    return [v for v in order if v in found] + sorted(found - set(order))


def render_report(rows, figures_dir=None, relative_to=None) -> str:
    """The report as markdown text (``write_report`` writes it)."""
    if not rows:
        raise MiniCNNError("the results table is empty; run `minicnn prune` or `minicnn sweep` first")
    preferred = preferred_scope(rows)
    curves = aggregate(rows)
    seeds = _values(rows, "seed")
    epochs = [int(e) for e in _values(rows, "epochs")]
    seconds = float(np.nansum([r.seconds for r in rows]))
    n_div = sum(r.diverged for r in rows)
    lrs = sorted({lr_key(r.lr) for r in rows}, reverse=True)
    amounts = sorted({_amount_key(r.amount) for r in rows})
    fig_dir = Path(figures_dir) if figures_dir is not None else None
    base = Path(relative_to) if relative_to is not None else Path.cwd()

    def fig_link(stem: str, title: str) -> str | None:
        if fig_dir is None or not (fig_dir / f"{stem}.png").is_file():
            return None
        rel = Path(os.path.relpath(fig_dir / f"{stem}.png", base)).as_posix()
        return f"![{title}]({rel})"

    out = [REPORT_TITLE, ""]
    out += ["Reproduction of \"The Effects of Pruning on CIFAR-10 Model\" (Parra Montenegro and Mercado Franco): "
            "one-shot and iterative pruning, L1 unstructured and L2 structured, fine-tuned at three learning "
            "rates.", ""]
    out += ["## What was run", "",
            f"- rows: {len(rows)} ({len(curves)} schedule x method x scope x lr configurations)",
            f"- schedules: {', '.join(_values(rows, 'schedule', SCHEDULES))}; "
            f"methods: {', '.join(_values(rows, 'method', METHODS))}; scopes: {', '.join(scopes_in(rows))}",
            f"- learning rates: {', '.join(fmt_lr(lr) for lr in lrs)}",
            f"- amounts: {', '.join(f'{a:g}' for a in amounts)}",
            f"- seeds: {len(seeds)} ({', '.join(str(int(s)) for s in seeds)})",
            f"- fine-tuning epochs per step: {', '.join(str(e) for e in epochs) or 'n/a'}",
            f"- total fine-tuning time: {_seconds(seconds)} ({seconds:,.0f} s)",
            f"- diverged rows (NaN/inf loss): {n_div}", ""]
    if len(seeds) > 1:
        out += ["Numbers are mean ± sample standard deviation over seeds.", ""]

    out += ["## Setup compared with the paper", "",
            "| item | paper | this run |", "|---|---|---|"]
    missing_amounts = [a for a in PAPER_AMOUNTS if _amount_key(a) not in amounts]
    out.append(f"| pruning amounts (Table 1) | {', '.join(f'{a:g}' for a in PAPER_AMOUNTS)} | "
               + ("all 12" if not missing_amounts else f"missing {', '.join(f'{a:g}' for a in missing_amounts)}")
               + " |")
    missing_lrs = [lr for lr in PAPER_LRS if lr not in lrs]
    out.append("| fine-tuning learning rates (1.3) | 0.8, 0.01, 0.0001 | "
               + ("all three" if not missing_lrs else f"missing {', '.join(fmt_lr(x) for x in missing_lrs)}") + " |")
    out.append(f"| epochs per amount / per iterative step (1.3) | {PAPER_EPOCHS} | "
               f"{', '.join(str(e) for e in epochs) or 'n/a'} |")
    out.append(f"| schedules and methods (1.3) | one-shot, iterative; L1 unstructured, L2 structured | "
               f"{', '.join(_values(rows, 'schedule', SCHEDULES))}; {', '.join(_values(rows, 'method', METHODS))} |")
    out.append(f"| pruning scope | per tensor (torch.nn.utils.prune on each module) | {', '.join(scopes_in(rows))} |")
    out.append("")
    out += ["Structured amounts are fractions of conv filters (dim-0 slices); the output layer is not "
            "structurally pruned, so \"remaining\" (1 - amount, the paper's x axis) differs from the fraction of "
            "parameters that still act (the *params effective* column).", ""]

    if fig_dir is not None:
        summaries = [("summary_schedules", "One-shot vs iterative"), ("summary_lrs", "Learning rates compared"),
                     ("summary_methods", "Structured vs unstructured"),
                     ("summary_flops", "Test accuracy vs effective training FLOPs per image")]
        links = [(t, fig_link(s, t)) for s, t in summaries]
        links = [(t, l) for t, l in links if l]
        if links:
            out += ["## Summary figures", ""]
            for title, link in links:
                out += [f"### {title}", "", link, ""]

    out += ["## Results", "",
            "Per configuration: amount pruned, nominal fraction remaining, effective parameters and forward FLOPs "
            "per image, test accuracy right after pruning and after fine-tuning, and train accuracy after "
            "fine-tuning (full training split).", ""]
    for (schedule, method, scope, lr), c in curves.items():
        title = f"{SCHEDULE_TITLES.get(schedule, schedule)} {method} pruning, lr {fmt_lr(lr)}"
        if scope != preferred or len(scopes_in(rows)) > 1:
            title += f" ({scope} scope)"
        out += [f"### {title}", ""]
        link = fig_link(_figure_stem(schedule, method, lr, scope, preferred), title)
        if link:
            out += [link, ""]
        out += _results_table(c) + [""]

    claims = evaluate_claims(rows, preferred)
    tally = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    out += ["## Claims", "",
            f"Every result the paper states, checked on the {preferred} scope rows. "
            + ", ".join(f"{n} {v}" for v, n in tally.items()) + ".", "",
            "Shared definitions: \"~10%\" means at most 15% test accuracy; the *unpruned accuracy* of a curve is "
            "the better of test accuracy before and after fine-tuning at amount 0; a curve *falls* at the first "
            "amount where its test accuracy after fine-tuning is more than 10 points below that; the *steepest "
            "step* is the largest decrease between neighbouring amounts; the *gap* is train minus test accuracy "
            "after fine-tuning; rates and schedules are compared by mean test accuracy after fine-tuning over "
            "the amounts both curves have. pts = percentage points.", "",
            "| # | § | claim | tolerance | measured | verdict |", "|---|---|---|---|---|---|"]
    for c in claims:
        verdict = c["verdict"]
        if c["reason"]:
            verdict += f" ({c['reason']})"
        out.append(f"| {c['id']} | {c['section']} | {_md(c['claim'])} | {_md(c['tolerance'])} | "
                   f"{_md(c['measurement'])} | {_md(verdict)} |")
    out.append("")
    return "\n".join(out)


def write_report(rows, out_path, figures_dir=None) -> Path:
    """Write the markdown report to ``out_path`` atomically; figure links are relative to it."""
    from minicnn.io.files import atomic_path

    out_path = Path(out_path)
    figures = Path(figures_dir).resolve() if figures_dir is not None else None
    text = render_report(rows, figures, relative_to=out_path.resolve().parent)
    umask = os.umask(0)
    os.umask(umask)
    with atomic_path(out_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o666 & ~umask)  # the temporary file is private (0600); the report is not
    return out_path
