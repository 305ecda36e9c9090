"""The checks of the paper's Sections 1.2 and 2: the baseline, then one-shot pruning (structured in 2.1,
unstructured in 2.2). Each takes the curves of one scope and returns an ``Outcome``; the claims' texts
and tolerances are in ``minicnn.study.claims``."""

from __future__ import annotations

import contextlib

import numpy as np

from minicnn.paper import LRS
from minicnn.study.claims.measures import (CONFIRMED, DECENT, EPS, FALL, FAR, GAP, NO_EFFECTIVE, NOT_CONFIRMED,
                                           PARTLY, STEEPER, TIE, UNDERFIT, WINDOW, CurveSet, Outcome, common_means,
                                           count_verdict, early_and_late_gap, fall, finite, fmt_step, gaps,
                                           lr_001_is_best, near_chance, never_as_inf, pct, pts, recovers_at,
                                           steepest, steps, two_part, unpruned)
from minicnn.study.curves import MissingRows, fmt_amount, fmt_lr


# --------------------------------------------------------------------------------- 1.2 the baseline
def baseline_ran_decently(d: CurveSet) -> Outcome:
    vals = []
    for c in d.curves.values():
        i = c.index(0.0)
        if i is not None and np.isfinite(c.mean["test_acc_before"][i]):
            vals.append(float(c.mean["test_acc_before"][i]))
    if not vals:
        raise MissingRows("no rows at amount 0")
    base = float(np.mean(vals))
    meas = f"baseline test acc {pct(base)}"
    if base >= DECENT:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, f"below {pct(DECENT)}")


# ------------------------------------------------------------------------- 2.1 one-shot structured
def oneshot_structured_lr08_dips_to_chance(d: CurveSet) -> Outcome:
    c = d.curve("oneshot", "structured", 0.8)
    amounts, acc = finite(c)
    near = near_chance(acc)
    first = float(amounts[np.argmax(near)]) if near.any() else None
    before_dip = [f"{fmt_amount(a)}: {pct(v)}" for a, v in zip(amounts, acc)
                  if first is None or a <= first + EPS][-2:]
    meas = f"first amount at ~10%: {fmt_amount(first)}; " + ", ".join(before_dip)
    if first is None:
        return Outcome(meas, NOT_CONFIRMED, "never falls to ~10%")
    if 0.3 + EPS < first <= 0.5 + EPS:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, PARTLY, f"the dip to ~10% comes at {fmt_amount(first)}, not just above 30%")


def oneshot_structured_lr08_stuck_after_30(d: CurveSet) -> Outcome:
    c = d.curve("oneshot", "structured", 0.8)
    amounts, acc = finite(c)
    sel = amounts > 0.3 + EPS
    if not sel.any():
        raise MissingRows(f"no amounts above 30% for {c.label}")
    stuck = int(near_chance(acc[sel]).sum())
    before = c.mean["test_acc_before"][np.isin(c.amounts, amounts[sel])]
    meas = (f"{stuck}/{int(sel.sum())} amounts above 30% at ~10% (test acc after {pct(acc[sel].min())}"
            f"-{pct(acc[sel].max())}; mean before {pct(float(np.nanmean(before)))}, "
            f"after {pct(float(acc[sel].mean()))})")
    verdict, reason = count_verdict(stuck, int(sel.sum()), "fine-tuning lifts some of them above 15%")
    return Outcome(meas, verdict, reason)


def oneshot_structured_low_lr_drops_less_steeply(d: CurveSet) -> Outcome:
    hi = steepest(d.curve("oneshot", "structured", 0.8))
    lo = steepest(d.curve("oneshot", "structured", 0.0001))
    meas = f"steepest step: lr 0.8 {fmt_step(hi)}, lr 0.0001 {fmt_step(lo)}"
    if lo[2] <= hi[2] - STEEPER:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, "lr 0.0001 falls as steeply as lr 0.8")


def oneshot_structured_lr00001_gains_from_fine_tuning(d: CurveSet) -> Outcome:
    c = d.curve("oneshot", "structured", 0.0001)
    g = c.mean["test_acc_after"] - c.mean["test_acc_before"]
    sel = (c.amounts > 0) & np.isfinite(g)
    if not sel.any():
        raise MissingRows(f"no pruned amounts with accuracy before and after for {c.label}")
    gain = float(g[sel].mean())
    meas = f"mean gain from fine-tuning {pts(gain)} (range {pts(float(g[sel].min()))} to {pts(float(g[sel].max()))})"
    if gain >= TIE:
        return Outcome(meas, CONFIRMED)
    if gain > 0:
        return Outcome(meas, PARTLY, "the gain is below 1 point")
    return Outcome(meas, NOT_CONFIRMED, "fine-tuning at lr 0.0001 does not raise test accuracy")


def structured_without_filters_is_at_chance(d: CurveSet) -> Outcome:
    hits = []
    for (_schedule, method, _lr), c in d.curves.items():
        if method != "structured":
            continue
        frac = c.mean["params_effective"] / c.mean["params_total"]
        for i in np.flatnonzero(np.isfinite(frac) & (frac < NO_EFFECTIVE)):
            if np.isfinite(c.mean["test_acc_after"][i]):
                hits.append((c, float(c.amounts[i]), float(c.mean["test_acc_after"][i])))
    if not hits:
        raise MissingRows("no structured rows with every conv filter removed")
    ok = sum(bool(near_chance(v)) for _c, _a, v in hits)
    top = max(hits, key=lambda h: h[2])
    meas = f"{ok}/{len(hits)} such rows at ~10% (highest: {pct(top[2])}, {top[0].label} at {fmt_amount(top[1])})"
    verdict, reason = count_verdict(ok, len(hits), "some models without any filter score above 15%")
    return Outcome(meas, verdict, reason)


def oneshot_structured_lr001_is_best(d: CurveSet) -> Outcome:
    return lr_001_is_best(d, "oneshot", "structured")


def oneshot_structured_lr001_recovers_at_99(d: CurveSet) -> Outcome:
    return recovers_at(d, "oneshot", "structured", 0.01)


def oneshot_structured_lr001_does_not_overfit(d: CurveSet) -> Outcome:
    amounts, g = gaps(d.curve("oneshot", "structured", 0.01))
    worst = int(np.argmax(np.abs(g)))
    meas = (f"train - test gap {pts(float(g.min()))} to {pts(float(g.max()))} "
            f"(largest |gap| at {fmt_amount(amounts[worst])})")
    if np.all(np.abs(g) <= GAP + EPS):
        return Outcome(meas, CONFIRMED)
    high = amounts >= 0.5 - EPS
    if high.any() and np.all(np.abs(g[high]) <= GAP + EPS):
        return Outcome(meas, PARTLY, "similar only from 50% pruned on")
    return Outcome(meas, NOT_CONFIRMED, f"gap of {pts(float(g[worst]))} at {fmt_amount(amounts[worst])}")


def oneshot_structured_lr00001_neither_over_nor_underfits(d: CurveSet) -> Outcome:
    c = d.curve("oneshot", "structured", 0.0001)
    _amounts, g = gaps(c)
    over_ok = bool(np.all(g <= GAP + EPS))
    meas = f"largest train - test gap {pts(float(g.max()))}"
    ref = d.available("oneshot", "structured", 0.01)
    if ref is None:
        return Outcome(meas + "; underfitting not testable (no rows for lr 0.01)",
                       PARTLY if over_ok else NOT_CONFIRMED,
                       "" if over_ok else "overfits")
    (t_lo, t_ref), _common = common_means([c, ref], "train_acc")
    under_ok = t_lo >= t_ref - UNDERFIT
    meas += f"; mean train acc {pct(t_lo)} vs {pct(t_ref)} at lr 0.01"
    verdict, reason = two_part(over_ok, under_ok, "overfits", "underfits relative to lr 0.01")
    return Outcome(meas, verdict, reason)


def oneshot_structured_lr00001_between_the_others(d: CurveSet) -> Outcome:
    curves = [d.curve("oneshot", "structured", lr) for lr in LRS]
    (m8, m01, m0001), _common = common_means(curves)
    meas = f"mean test acc after: lr 0.8 {pct(m8)}, lr 0.01 {pct(m01)}, lr 0.0001 {pct(m0001)}"
    verdict, reason = two_part(m0001 < m01 - TIE, m0001 >= m8 - TIE,
                               "lr 0.0001 is not below lr 0.01", "lr 0.0001 is the worst")
    return Outcome(meas, verdict, reason)


# ----------------------------------------------------------------------- 2.2 one-shot unstructured
def oneshot_unstructured_falls_later_than_structured(d: CurveSet) -> Outcome:
    fu = fall(d.curve("oneshot", "unstructured", 0.8))
    fs = fall(d.curve("oneshot", "structured", 0.8))
    meas = f"fall at: structured {fmt_amount(fs)}, unstructured {fmt_amount(fu)}"
    if fs is None and fu is None:
        return Outcome(meas, NOT_CONFIRMED, "neither curve falls 10 pts below its unpruned accuracy")
    u, s = never_as_inf(fu), never_as_inf(fs)
    if u - s >= 0.2 - EPS:
        return Outcome(meas, CONFIRMED)
    if u > s:
        return Outcome(meas, PARTLY, "later, but by less than 20% of the parameters")
    return Outcome(meas, NOT_CONFIRMED, "unstructured falls no later than structured")


def oneshot_unstructured_is_less_aggressive(d: CurveSet) -> Outcome:
    us, ss, effs = [], [], []
    for lr in LRS:
        cu, cs = d.available("oneshot", "unstructured", lr), d.available("oneshot", "structured", lr)
        if cu is None or cs is None:
            continue
        (mu, ms), _common = common_means([cu, cs], "test_acc_before", pruned_only=True)
        us.append(mu)
        ss.append(ms)
        with contextlib.suppress(MissingRows):  # the effective fraction is context only; older tables may lack it
            (eu, es), _common = common_means([cu, cs], "remaining_effective", pruned_only=True)
            effs.append((eu, es))
    if not us:
        raise MissingRows("no rows for one-shot structured and unstructured at the same learning rate")
    mu, ms = float(np.mean(us)), float(np.mean(ss))
    meas = f"mean test acc before fine-tuning: unstructured {pct(mu)}, structured {pct(ms)}"
    if effs:
        eu, es = float(np.mean([e[0] for e in effs])), float(np.mean([e[1] for e in effs]))
        meas += f"; mean effective parameters left {pct(eu)} vs {pct(es)}"
    if mu >= ms + FAR:
        return Outcome(meas, CONFIRMED)
    if mu > ms:
        return Outcome(meas, PARTLY, f"less aggressive by only {100 * (mu - ms):.1f} pts")
    return Outcome(meas, NOT_CONFIRMED, "unstructured pruning costs as much accuracy as structured")


def oneshot_unstructured_lr001_is_best(d: CurveSet) -> Outcome:
    return lr_001_is_best(d, "oneshot", "unstructured")


def oneshot_unstructured_lr001_drops_least(d: CurveSet) -> Outcome:
    curves = [d.curve("oneshot", "unstructured", lr) for lr in LRS]
    means, _common = common_means(curves, pruned_only=True)
    drops = {lr: unpruned(c) - m for lr, c, m in zip(LRS, curves, means)}
    meas = "mean drop over pruned amounts: " + ", ".join(f"lr {fmt_lr(lr)} {100 * v:.1f} pts"
                                                          for lr, v in drops.items())
    smallest = drops[0.01] <= min(drops[0.8], drops[0.0001]) + TIE
    small = drops[0.01] <= FALL
    verdict, reason = two_part(smallest, small, "another learning rate drops less",
                               f"the drop exceeds {100 * FALL:.0f} pts")
    return Outcome(meas, verdict, reason)


def oneshot_unstructured_lr001_train_and_test_converge(d: CurveSet) -> Outcome:
    gl, gh = early_and_late_gap(d.curve("oneshot", "unstructured", 0.01))
    meas = f"mean train - test gap: {pts(gl)} at <= 30%, {pts(gh)} at >= 90%"
    if abs(gh) > GAP:
        return Outcome(meas, NOT_CONFIRMED, "train and test still differ at high pruning")
    if abs(gh) > abs(gl) + EPS:
        return Outcome(meas, NOT_CONFIRMED, "the gap grows with pruning")
    if abs(gl) <= GAP:
        return Outcome(meas, PARTLY, "similar at every amount: nothing to converge from")
    return Outcome(meas, CONFIRMED)


def oneshot_unstructured_lr00001_falls_at_half(d: CurveSet) -> Outcome:
    f = fall(d.curve("oneshot", "unstructured", 0.0001))
    others = []
    for lr in (0.8, 0.01):
        c = d.available("oneshot", "unstructured", lr)
        if c is not None:
            with contextlib.suppress(MissingRows):
                others.append(f"lr {fmt_lr(lr)} {fmt_amount(fall(c))}")
    meas = f"fall at {fmt_amount(f)}" + (f" (other rates: {', '.join(others)})" if others else "")
    if f is not None and abs(f - 0.5) <= WINDOW + EPS:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, "no fall" if f is None else f"the fall is at {fmt_amount(f)}")


def oneshot_unstructured_high_lr_sharp_low_lr_gradual(d: CurveSet) -> Outcome:
    hi, lo = d.curve("oneshot", "unstructured", 0.8), d.curve("oneshot", "unstructured", 0.0001)
    sh, sl = steepest(hi), steepest(lo)
    nh = sum(s[2] >= STEEPER for s in steps(hi))
    nl = sum(s[2] >= STEEPER for s in steps(lo))
    meas = (f"steepest step: lr 0.8 {fmt_step(sh)}, lr 0.0001 {fmt_step(sl)}; declining steps: "
            f"lr 0.8 {nh}, lr 0.0001 {nl}")
    verdict, reason = two_part(sh[2] >= sl[2] + STEEPER, nl >= nh, "lr 0.8 is not sharper",
                               "lr 0.0001 declines over fewer steps")
    return Outcome(meas, verdict, reason)
