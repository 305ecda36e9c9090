"""The checks of the paper's Section 3: iterative pruning against one-shot, then iterative structured
(3.1) and unstructured (3.2) pruning. Each takes the curves of one scope and returns an ``Outcome``;
the claims' texts and tolerances are in ``minicnn.study.claims``."""

from __future__ import annotations

import numpy as np

from minicnn.paper import LRS, METHODS
from minicnn.study.claims.measures import (ABOUT, CONFIRMED, EPS, GAP, NOT_CONFIRMED, PARTLY, R2_LINEAR, SIMILAR,
                                           SLIGHT_GAP, SLOW_STEP, STEEPER, TIE, WINDOW, CurveSet, Outcome,
                                           amounts_note, collapse, common_means, count_verdict, dead_note,
                                           early_and_late_gap, fall, finite, fmt_step, gaps, line_fit,
                                           lr_001_is_best, near_chance, never_as_inf, pct, pts, recovers_at,
                                           steepest, two_part, unpruned)
from minicnn.study.curves import Curve, MissingRows, fmt_amount, fmt_lr


def _schedule_pairs(d: CurveSet) -> list[tuple[str, float, Curve, Curve]]:
    """(method, lr, iterative curve, one-shot curve) of every configuration run with both schedules."""
    pairs = []
    for method in METHODS:
        for lr in LRS:
            a, b = d.available("iterative", method, lr), d.available("oneshot", method, lr)
            if a is not None and b is not None:
                pairs.append((method, lr, a, b))
    if not pairs:
        raise MissingRows("no configuration run with both schedules")
    return pairs


def _mean_above(d: CurveSet, schedule: str, method: str, hi_lr: float, lo_lr: float) -> Outcome:
    """Mean test accuracy after fine-tuning at ``hi_lr`` above that at ``lo_lr`` by more than TIE."""
    a, b = d.curve(schedule, method, hi_lr), d.curve(schedule, method, lo_lr)
    (ma, mb), common = common_means([a, b])
    meas = (f"mean test acc after over {amounts_note(common)}: lr {fmt_lr(hi_lr)} {pct(ma)}, "
            f"lr {fmt_lr(lo_lr)} {pct(mb)}")
    if ma > mb + TIE:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, f"lr {fmt_lr(hi_lr)} is {pts(ma - mb)} vs lr {fmt_lr(lo_lr)}")


# ----------------------------------------------------------------------------- 3 the two schedules
def iterative_better_or_similar(d: CurveSet) -> Outcome:
    diffs = []
    for method, lr, it, os_ in _schedule_pairs(d):
        (mi, mo), _common = common_means([it, os_])
        diffs.append((f"{method} lr {fmt_lr(lr)}", mi - mo))
    ok = sum(v >= -SIMILAR - EPS for _n, v in diffs)
    meas = "iterative - one-shot: " + ", ".join(f"{n} {pts(v)}" for n, v in diffs)
    worst = min(diffs, key=lambda x: x[1])
    verdict, reason = count_verdict(ok, len(diffs), f"iterative is worse for {worst[0]}")
    return Outcome(meas, verdict, reason)


def iterative_more_accurate_and_falls_later(d: CurveSet) -> Outcome:
    pairs = _schedule_pairs(d)
    better = later = 0
    for _method, _lr, it, os_ in pairs:
        (mi, mo), _common = common_means([it, os_])
        better += mi > mo + TIE
        later += never_as_inf(fall(it)) >= never_as_inf(fall(os_))
    n = len(pairs)
    meas = f"iterative more accurate in {better}/{n} pairs, falls no earlier in {later}/{n}"
    verdict, reason = two_part(better * 2 > n, later * 2 > n, "not more accurate in most pairs",
                               "falls earlier in most pairs")
    return Outcome(meas, verdict, reason)


# ------------------------------------------------------------------------ 3.1 iterative structured
def structured_lr08_oneshot_falls_sooner_and_harder(d: CurveSet) -> Outcome:
    os_, it = d.curve("oneshot", "structured", 0.8), d.curve("iterative", "structured", 0.8)
    fo, fi = fall(os_), fall(it)
    so, si = steepest(os_), steepest(it)
    meas = (f"fall: one-shot {fmt_amount(fo)}, iterative {fmt_amount(fi)}; steepest step: one-shot "
            f"{fmt_step(so)}, iterative {fmt_step(si)}")
    sooner = never_as_inf(fo) < never_as_inf(fi)
    verdict, reason = two_part(sooner, so[2] >= si[2] + STEEPER, "one-shot does not fall sooner",
                               "one-shot is not more drastic")
    return Outcome(meas, verdict, reason)


def iterative_structured_lr08_overfits(d: CurveSet) -> Outcome:
    c = d.curve("iterative", "structured", 0.8)
    amounts, g = gaps(c)
    test = np.array([c.value(a) for a in amounts])
    alive = ~near_chance(test)
    if not alive.any():
        return Outcome("test acc after at ~10% at every amount", NOT_CONFIRMED,
                       "train and test are both at chance: nothing to overfit")
    i = int(np.argmax(np.where(alive, g, -np.inf)))
    meas = f"largest train - test gap {pts(float(g[i]))} at {fmt_amount(amounts[i])}"
    if g[i] > GAP:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, f"gap never above {100 * GAP:.0f} pts")


def iterative_structured_lr08_collapses_at_half(d: CurveSet) -> Outcome:
    at = collapse(d.curve("iterative", "structured", 0.8))
    meas = f"stays at ~10% from {fmt_amount(at)}" if at is not None else "does not end at ~10%"
    if at is not None and abs(at - 0.5) <= WINDOW + EPS:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, "never converges to ~10%" if at is None else f"converges at {fmt_amount(at)}")


def iterative_structured_lr001_is_best(d: CurveSet) -> Outcome:
    return lr_001_is_best(d, "iterative", "structured")


def iterative_structured_lr001_keeps_accuracy_at_99(d: CurveSet) -> Outcome:
    c = d.curve("iterative", "structured", 0.01)
    v = c.value(0.99)
    meas = f"test acc after at 99%: {pct(v)}"
    if not near_chance(v):
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, dead_note(c, 0.99) or "at chance")


def iterative_structured_lr001_about_40_at_99(d: CurveSet) -> Outcome:
    c = d.curve("iterative", "structured", 0.01)
    v = c.value(0.99)
    meas = f"test acc after at 99%: {pct(v)}"
    if abs(v - 0.40) <= ABOUT + EPS:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, dead_note(c, 0.99) or f"{pts(v - 0.40)} from 40%")


def iterative_structured_lr001_overfitting_fades(d: CurveSet) -> Outcome:
    gl, gh = early_and_late_gap(d.curve("iterative", "structured", 0.01))
    meas = f"mean train - test gap: {pts(gl)} at <= 30%, {pts(gh)} at >= 90%"
    verdict, reason = two_part(SLIGHT_GAP[0] < gl <= SLIGHT_GAP[1], abs(gh) <= GAP,
                               "not slightly overfitting at first", "train and test differ at the end")
    return Outcome(meas, verdict, reason)


def iterative_structured_lr00001_declines_linearly(d: CurveSet) -> Outcome:
    r2 = {}
    for lr in LRS:
        c = d.available("iterative", "structured", lr) if lr != 0.0001 else d.curve("iterative", "structured", lr)
        if c is not None:
            a, v = finite(c)
            r2[lr] = line_fit(a, v)
    r, slope = r2[0.0001]
    meas = "R^2 of a straight line: " + ", ".join(f"lr {fmt_lr(lr)} {v[0]:.2f}" for lr, v in r2.items())
    meas += f"; slope at lr 0.0001 {100 * slope:+.1f} pts per 100% pruned"
    highest = all(r >= v[0] - EPS for lr, v in r2.items())
    verdict, reason = two_part(r >= R2_LINEAR and slope < 0, highest,
                               "lr 0.0001 is not a linear decline", "another rate is closer to linear")
    if len(r2) == 1:
        reason = "; ".join(x for x in (reason, "other rates absent") if x)
    return Outcome(meas, verdict, reason)


def iterative_structured_lr00001_beats_lr08(d: CurveSet) -> Outcome:
    return _mean_above(d, "iterative", "structured", 0.0001, 0.8)


# ---------------------------------------------------------------------- 3.2 iterative unstructured
def iterative_unstructured_lr08_beats_earlier_runs(d: CurveSet) -> Outcome:
    target = d.curve("iterative", "unstructured", 0.8)
    earlier = [c for (s, m, lr), c in d.curves.items()
               if lr in LRS and (s == "oneshot" or (s == "iterative" and m == "structured"))]
    if not earlier:
        raise MissingRows("no rows for the earlier configurations (one-shot, iterative structured)")
    beaten, best = 0, None
    for c in earlier:
        (mt, mc), _common = common_means([target, c])
        beaten += mt > mc + TIE
        if best is None or mc - mt > best[1]:
            best = (c.label, mc - mt)
    meas = f"better than {beaten}/{len(earlier)} earlier configurations"
    verdict, reason = count_verdict(beaten, len(earlier),
                                    f"{best[0]} is {pts(best[1])} vs iterative unstructured lr 0.8")
    return Outcome(meas, verdict, reason)


def iterative_unstructured_lr08_falls_at_70(d: CurveSet) -> Outcome:
    f = fall(d.curve("iterative", "unstructured", 0.8))
    meas = f"fall at {fmt_amount(f)}"
    if f is not None and abs(f - 0.7) <= WINDOW + EPS:
        return Outcome(meas, CONFIRMED)
    if f is None or f > 0.7:
        return Outcome(meas, PARTLY, "the drop comes even later" if f is not None else "no drop at all")
    return Outcome(meas, NOT_CONFIRMED, f"the drop comes at {fmt_amount(f)}")


def iterative_unstructured_lr08_about_40_at_95(d: CurveSet) -> Outcome:
    c = d.curve("iterative", "unstructured", 0.8)
    test, train = c.value(0.95), c.value(0.95, "train_acc")
    meas = f"at 95%: train {pct(train)}, test {pct(test)}"
    verdict, reason = two_part(abs(train - 0.4) <= ABOUT + EPS, abs(test - 0.4) <= ABOUT + EPS,
                               f"train {pts(train - 0.4)} from 40%", f"test {pts(test - 0.4)} from 40%")
    return Outcome(meas, verdict, reason)


def iterative_unstructured_lr001_is_best_of_all(d: CurveSet) -> Outcome:
    target = d.curve("iterative", "unstructured", 0.01)
    others = [c for (s, m, lr), c in d.curves.items() if lr in LRS and c is not target]
    if not others:
        raise MissingRows("no other configurations to compare with")
    losers = []
    for c in others:
        (mt, mc), _common = common_means([target, c])
        if mc > mt + TIE:
            losers.append((c.label, mc - mt))
    meas = f"ahead of or tied with {len(others) - len(losers)}/{len(others)} other configurations"
    if not losers:
        return Outcome(meas, CONFIRMED)
    top = max(losers, key=lambda x: x[1])
    return Outcome(meas, NOT_CONFIRMED, f"{top[0]} is better by {100 * top[1]:.1f} pts")


def iterative_unstructured_lr001_drops_15_at_99(d: CurveSet) -> Outcome:
    c = d.curve("iterative", "unstructured", 0.01)
    ref, v = unpruned(c), c.value(0.99)
    drop = ref - v
    meas = f"unpruned {pct(ref)}, at 99% {pct(v)}: drop {100 * drop:.1f} pts"
    if abs(drop - 0.15) <= ABOUT + EPS:
        return Outcome(meas, CONFIRMED)
    return Outcome(meas, NOT_CONFIRMED, "larger drop" if drop > 0.15 else "smaller drop")


def iterative_unstructured_lr001_recovers_at_99(d: CurveSet) -> Outcome:
    return recovers_at(d, "iterative", "unstructured", 0.01)


def iterative_unstructured_lr001_overfits_until_80(d: CurveSet) -> Outcome:
    amounts, g = gaps(d.curve("iterative", "unstructured", 0.01))
    over = g > GAP
    if not over.any():
        return Outcome(f"train - test gap at most {pts(float(g.max()))}", NOT_CONFIRMED, "never overfitting")
    last = int(np.flatnonzero(over)[-1])
    if last == len(amounts) - 1:
        return Outcome(f"gap {pts(float(g[-1]))} at {fmt_amount(amounts[-1])}", NOT_CONFIRMED,
                       "still overfitting at the largest amount")
    t = float(amounts[last + 1])
    before = float(np.mean(g[: last + 1]))
    meas = f"gap <= {100 * GAP:.0f} pts from {fmt_amount(t)} on; mean gap before {pts(before)}"
    verdict, reason = two_part(abs(t - 0.8) <= WINDOW + EPS, before > GAP,
                               f"overfitting ends at {fmt_amount(t)}", "only occasional overfitting before")
    return Outcome(meas, verdict, reason)


def iterative_unstructured_lr001_is_best(d: CurveSet) -> Outcome:
    return lr_001_is_best(d, "iterative", "unstructured")


def iterative_unstructured_lr00001_beats_lr08(d: CurveSet) -> Outcome:
    return _mean_above(d, "iterative", "unstructured", 0.0001, 0.8)


def iterative_unstructured_lr00001_declines_slowly(d: CurveSet) -> Outcome:
    c = d.curve("iterative", "unstructured", 0.0001)
    st = steepest(c, upto=0.95)
    amounts, acc = finite(c)
    decline = unpruned(c) - float(acc[-1])
    meas = (f"steepest step up to 95%: {fmt_step(st)}; total decline to {fmt_amount(amounts[-1])}: "
            f"{100 * decline:.1f} pts")
    verdict, reason = two_part(st[2] <= SLOW_STEP + EPS, decline >= STEEPER, "one step falls sharply",
                               "no decline")
    return Outcome(meas, verdict, reason)
