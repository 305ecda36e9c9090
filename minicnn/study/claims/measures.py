"""What the claim checks measure on the curves, their tolerances and their verdicts.

Conventions (all accuracies are fractions; "points" are percentage points):
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

A measurement whose rows are absent raises ``MissingRows``; the claim is then "not testable".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minicnn.paper import AMOUNTS, LRS
from minicnn.study.curves import Curve, MissingRows, amount_key, config_label, fmt_amount, fmt_lr, lr_key

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

EPS = 1e-9             # slack for comparing amounts and accuracies with the bounds above

CONFIRMED, PARTLY, NOT_CONFIRMED, NOT_TESTABLE = "confirmed", "partly", "not confirmed", "not testable"
VERDICTS = (CONFIRMED, PARTLY, NOT_CONFIRMED, NOT_TESTABLE)


@dataclass
class Outcome:
    """What a check measured, its verdict and, unless confirmed, why."""

    measurement: str
    verdict: str
    reason: str = ""


class CurveSet:
    """The curves of one scope, keyed (schedule, method, lr), as the checks look them up."""

    def __init__(self, curves: dict[tuple, Curve]):
        self.curves = curves

    def curve(self, schedule: str, method: str, lr: float) -> Curve:
        c = self.curves.get((schedule, method, lr_key(lr)))
        if c is None or not np.isfinite(c.mean["test_acc_after"]).any():
            raise MissingRows(f"no rows for {config_label(schedule, method, lr)}")
        return c

    def available(self, schedule: str, method: str, lr: float) -> Curve | None:
        try:
            return self.curve(schedule, method, lr)
        except MissingRows:
            return None


# ------------------------------------------------------------------------------------- formatting
def pct(v: float) -> str:
    """0.4567 -> '45.7%'."""
    return f"{100 * v:.1f}%" if math.isfinite(v) else "n/a"


def pts(v: float) -> str:
    """0.052 -> '+5.2 pts'."""
    return f"{100 * v:+.1f} pts" if math.isfinite(v) else "n/a"


def fmt_step(step) -> str:
    a, b, d = step
    return f"{100 * d:.1f} pts ({fmt_amount(a)}->{fmt_amount(b)})"


def amounts_note(common: list[float]) -> str:
    if len(common) == len(AMOUNTS) and all(abs(a - b) < 1e-6 for a, b in zip(common, AMOUNTS)):
        return "the 12 paper amounts"
    return f"{len(common)} common amounts"


# ----------------------------------------------------------------------------------- measurements
def finite(c: Curve, metric: str = "test_acc_after") -> tuple[np.ndarray, np.ndarray]:
    """(amounts, values) of ``metric`` where it is finite."""
    v = c.mean[metric]
    ok = np.isfinite(v)
    if not ok.any():
        raise MissingRows(f"no {metric} for {c.label}")
    return c.amounts[ok], v[ok]


def unpruned(c: Curve) -> float:
    """The better of the test accuracy before and after fine-tuning at amount 0."""
    i = c.index(0.0)
    if i is None:
        raise MissingRows(f"no rows at amount 0 (unpruned) for {c.label}")
    vals = [c.mean[m][i] for m in ("test_acc_before", "test_acc_after") if np.isfinite(c.mean[m][i])]
    if not vals:
        raise MissingRows(f"no accuracy at amount 0 for {c.label}")
    return float(max(vals))


def fall(c: Curve, drop: float = FALL) -> float | None:
    """First amount where the test accuracy after fine-tuning is > ``drop`` below the unpruned one."""
    ref = unpruned(c)
    amounts, acc = finite(c)
    for a, v in zip(amounts, acc):
        if v < ref - drop:
            return float(a)
    return None


def never_as_inf(amount: float | None) -> float:
    """An amount, or +inf for None ("never"), so that a curve that never falls counts as falling last."""
    return math.inf if amount is None else amount


def near_chance(v) -> np.ndarray | bool:
    return np.asarray(v) <= CHANCE + NEAR_CHANCE + EPS


def collapse(c: Curve) -> float | None:
    """First amount from which every larger amount has test accuracy after fine-tuning at ~10%."""
    amounts, acc = finite(c)
    near = near_chance(acc)
    if not near[-1]:
        return None
    i = len(near) - 1
    while i > 0 and near[i - 1]:
        i -= 1
    return float(amounts[i])


def steps(c: Curve, upto: float | None = None) -> list[tuple[float, float, float]]:
    """(from, to, decrease) between neighbouring amounts, decrease > 0 when accuracy falls."""
    amounts, acc = finite(c)
    if upto is not None:
        keep = amounts <= upto + EPS
        amounts, acc = amounts[keep], acc[keep]
    return [(float(amounts[i]), float(amounts[i + 1]), float(acc[i] - acc[i + 1]))
            for i in range(len(amounts) - 1)]


def steepest(c: Curve, upto: float | None = None) -> tuple[float, float, float]:
    """The largest decrease between neighbouring amounts, as (from, to, decrease)."""
    all_steps = steps(c, upto)
    if not all_steps:
        raise MissingRows(f"fewer than two amounts for {c.label}")
    return max(all_steps, key=lambda s: s[2])


def gaps(c: Curve) -> tuple[np.ndarray, np.ndarray]:
    """(amounts, train acc - test acc after fine-tuning) where both are known."""
    g = c.mean["train_acc"] - c.mean["test_acc_after"]
    ok = np.isfinite(g)
    if not ok.any():
        raise MissingRows(f"no train accuracy for {c.label}")
    return c.amounts[ok], g[ok]


def early_and_late_gap(c: Curve) -> tuple[float, float]:
    """Mean train - test gap at amounts <= 30% and at amounts >= 90%."""
    amounts, g = gaps(c)
    low, high = g[amounts <= 0.3 + EPS], g[amounts >= 0.9 - EPS]
    if not low.size or not high.size:
        raise MissingRows(f"no amounts <= 30% and >= 90% for {c.label}")
    return float(np.mean(low)), float(np.mean(high))


def common_means(curves: list[Curve], metric: str = "test_acc_after",
                 pruned_only: bool = False) -> tuple[list[float], list[float]]:
    """Mean of ``metric`` of each curve over the amounts every curve has (optionally only > 0)."""
    sets = []
    for c in curves:
        a, _v = finite(c, metric)
        sets.append({amount_key(x) for x in a})
    common = sorted(set.intersection(*sets))
    if pruned_only:
        common = [a for a in common if a > 0]
    if not common:
        raise MissingRows("no amount common to " + ", ".join(c.label for c in curves))
    means = [float(np.mean([c.value(a, metric) for a in common])) for c in curves]
    return means, common


def line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(R^2, slope) of a least-squares straight line; R^2 = 0 for a flat series."""
    if len(x) < 3:
        raise MissingRows("fewer than three amounts for a straight-line fit")
    slope, intercept = np.polyfit(x, y, 1)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot < 1e-12:
        return 0.0, float(slope)
    ss_res = float(np.sum((y - (slope * x + intercept)) ** 2))
    return 1.0 - ss_res / ss_tot, float(slope)


def dead_note(c: Curve, amount: float) -> str:
    """Why a structured model at ``amount`` can only guess: almost no effective parameters left."""
    i = c.index(amount)
    if i is None or c.method != "structured":
        return ""
    eff, total = c.mean["params_effective"][i], c.mean["params_total"][i]
    if np.isfinite(eff) and np.isfinite(total) and total > 0 and eff / total < NO_EFFECTIVE:
        return (f"at {fmt_amount(amount)} structured pruning removes every conv filter: {eff:,.0f} of "
                f"{total:,.0f} parameters stay effective, so the prediction cannot depend on the image")
    return ""


# ---------------------------------------------------------------------------------------- verdicts
def count_verdict(ok: int, total: int, reason_bad: str = "") -> tuple[str, str]:
    """All -> confirmed, at least half -> partly, fewer -> not confirmed."""
    if ok == total:
        return CONFIRMED, ""
    if ok * 2 >= total and ok > 0:
        return PARTLY, reason_bad
    return NOT_CONFIRMED, reason_bad


def two_part(a: bool, b: bool, why_a: str, why_b: str) -> tuple[str, str]:
    """Verdict of a claim made of two parts: both -> confirmed, one -> partly, none -> not."""
    reasons = "; ".join(w for ok, w in ((a, why_a), (b, why_b)) if not ok)
    if a and b:
        return CONFIRMED, ""
    if a or b:
        return PARTLY, reasons
    return NOT_CONFIRMED, reasons


# ------------------------------------------------------------------ checks shared by both sections
def lr_001_is_best(d: CurveSet, schedule: str, method: str) -> Outcome:
    """lr 0.01 has the highest mean test accuracy after fine-tuning of the paper's rates (tie TIE)."""
    curves = [d.curve(schedule, method, lr) for lr in LRS]
    means, common = common_means(curves)
    m = dict(zip(LRS, means))
    meas = (f"mean test acc after over {amounts_note(common)}: "
            + ", ".join(f"lr {fmt_lr(lr)} {pct(v)}" for lr, v in m.items()))
    others = {lr: v for lr, v in m.items() if lr != 0.01}
    best_lr = max(others, key=others.get)
    if m[0.01] >= others[best_lr] + TIE:
        return Outcome(meas, CONFIRMED)
    if m[0.01] >= others[best_lr] - TIE:
        return Outcome(meas, CONFIRMED, f"tied within {100 * TIE:.0f} point with lr {fmt_lr(best_lr)}")
    return Outcome(meas, NOT_CONFIRMED,
                   f"lr {fmt_lr(best_lr)} is better by {100 * (others[best_lr] - m[0.01]):.1f} pts")


def recovers_at(d: CurveSet, schedule: str, method: str, lr: float, amount: float = 0.99) -> Outcome:
    """Right after pruning to ``amount`` the model is at ~10%, and fine-tuning gains RECOVER or more."""
    c = d.curve(schedule, method, lr)
    before, after = c.value(amount, "test_acc_before"), c.value(amount, "test_acc_after")
    gain = after - before
    meas = f"at {fmt_amount(amount)}: before fine-tuning {pct(before)}, after {pct(after)} ({pts(gain)})"
    near = bool(near_chance(before))
    dead = dead_note(c, amount)
    if near and gain >= RECOVER:
        return Outcome(meas, CONFIRMED)
    if near and gain >= RECOVER / 2:
        return Outcome(meas, PARTLY, f"starts near 10% but fine-tuning gains only {100 * gain:.1f} pts"
                       + (f"; {dead}" if dead else ""))
    if not near and gain >= RECOVER:
        return Outcome(meas, PARTLY, f"recovers, but from {pct(before)}, not ~10%")
    reason = dead or (f"fine-tuning gains {100 * gain:.1f} pts" if near else
                      f"accuracy before fine-tuning is {pct(before)}, not ~10%, and fine-tuning gains "
                      f"{100 * gain:.1f} pts")
    return Outcome(meas, NOT_CONFIRMED, reason)
