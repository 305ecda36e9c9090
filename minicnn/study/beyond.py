"""The report's "Beyond the paper" section: what the rows outside the paper's grid (criteria random and
gradmag, schedules agp and lth) answer, each answer with its numbers and its tolerance, or "not testable"
and why when the rows it needs are missing (as the claims do).

Questions (``beyond_answers``): B1 does magnitude beat random, by how much at each sparsity; B2 does
gradmag beat magnitude; B3 do AGP and LTH beat iterative at equal epochs spent; B4 which layer is most
sensitive (a sensitivity table); B5 how far masks agree between criteria and between seeds (step
checkpoints). Only renders and compares: the numbers come from ``minicnn.study.curves``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from minicnn.study.curves import (STUDY_FIGURES, Curve, aggregate, fmt_amount, fmt_lr,
                                  has_beyond_rows)

__all__ = ["TOLERANCE_PTS", "EPOCH_TOLERANCE", "beyond_answers", "beyond_section", "has_beyond_rows", "md_cell"]

#: A difference of mean test accuracy after fine-tuning within max(this, std A + std B) points is a tie.
TOLERANCE_PTS = 1.0
#: Two rows spent "equal epochs" when their mean epochs_spent differ by at most this.
EPOCH_TOLERANCE = 0.5

_TOLERANCE_TEXT = (f"A beats B at an amount when its mean test accuracy after fine-tuning is higher by more than "
                   f"max({TOLERANCE_PTS:g} pt, std A + std B over seeds); within that it is a tie. Amount 0 "
                   f"(nothing pruned) is left out. Overall: yes when A wins at least half the compared points and "
                   f"loses none, never worse when it wins fewer and loses none; no when it loses at least half and "
                   f"wins none, never better when it loses fewer and wins none; tie when every point ties; else "
                   f"mixed.")


def beyond_section(rows, figures=None, sweep_dirs=None, sensitivity=None, agreement=None) -> list[str]:
    """Markdown lines of the section; ``figures`` has ``link(stem, title)`` (the report's figure links)."""
    answers = beyond_answers(rows, sweep_dirs, sensitivity, agreement)
    out = ["## Beyond the paper", "",
           "Rows outside the paper's grid (criteria other than magnitude, schedules agp and lth) answer the "
           "questions below. The paper's claims above read only the paper's rows (magnitude, one-shot and "
           "iterative).", "", _TOLERANCE_TEXT, "",
           "| # | question | tolerance | answer |", "|---|---|---|---|"]
    for a in answers:
        out.append(f"| {a['id']} | {md_cell(a['question'])} | {md_cell(a['tolerance'])} | {md_cell(a['answer'])} |")
    out.append("")
    for stem, title in STUDY_FIGURES:
        link = figures.link(stem, title) if figures is not None else None
        if link:
            out += [f"### {title}", "", link, ""]
    for a in answers:
        if a["table"]:
            out += [f"### {a['id']}: {a['question']}", ""] + a["table"] + [""]
    return out


def beyond_answers(rows, sweep_dirs=None, sensitivity=None, agreement=None) -> list[dict]:
    """One dict per question: id, question, tolerance, answer (text), verdict, table (markdown lines).
    ``sweep_dirs``: the study folder or folders the rows come from (their sensitivity/ and runs/);
    ``agreement``: mask agreement rows (``minicnn.study.agreement``) instead of those of their runs."""
    curves = aggregate(rows)
    return [_criterion_answer("B1", curves, "magnitude", "random"),
            _criterion_answer("B2", curves, "gradmag", "magnitude"),
            _schedule_answer(curves),
            _sensitivity_answer(sweep_dirs, sensitivity),
            _agreement_answer(sweep_dirs, agreement)]


def _answer(id_, question, tolerance, verdict, answer, table=()) -> dict:
    return {"id": id_, "question": question, "tolerance": tolerance, "verdict": verdict, "answer": answer,
            "table": list(table)}


# ------------------------------------------------------------------------------------- criteria
def _compare(a: Curve, b: Curve, amounts) -> list[tuple]:
    """(amount, mean a, mean b, difference, tolerance, outcome) in points at ``amounts``; outcome +1/0/-1."""
    points = []
    for amount in amounts:
        i, j = a.index(amount), b.index(amount)
        ma, mb = a.mean["test_acc_after"][i] * 100, b.mean["test_acc_after"][j] * 100
        if not (math.isfinite(ma) and math.isfinite(mb)):
            continue
        sa, sb = (np.nan_to_num(c.std["test_acc_after"][k]) * 100 for c, k in ((a, i), (b, j)))
        tol = max(TOLERANCE_PTS, sa + sb)
        diff = ma - mb
        points.append((amount, ma, mb, diff, tol, 1 if diff > tol else -1 if diff < -tol else 0))
    return points


def _verdict(outcomes: list[int]) -> str:
    """The overall answer from the points' outcomes (+1 A better, 0 tie, -1 A worse): see _TOLERANCE_TEXT."""
    wins, losses, n = outcomes.count(1), outcomes.count(-1), len(outcomes)
    if not wins and not losses:
        return "tie"
    if not losses:
        return "yes" if wins * 2 >= n else "never worse"
    if not wins:
        return "no" if losses * 2 >= n else "never better"
    return "mixed"


def _criterion_answer(id_, curves: dict, first: str, second: str) -> dict:
    question = f"Does {first} beat {second}, and by how much at each sparsity?"
    tolerance = f"max({TOLERANCE_PTS:g} pt, std sum) per amount"
    pairs = [(key, c, curves[key[:4] + (second,)]) for key, c in curves.items()
             if key[4] == first and key[:4] + (second,) in curves]
    if not pairs:
        missing = [n for n in (first, second) if not any(k[4] == n for k in curves)]
        why = (f"no rows with criterion {', '.join(missing)}" if missing
               else f"no configuration has both {first} and {second} rows")
        return _answer(id_, question, tolerance, "not testable", f"not testable: {why}")
    table = [f"| configuration | amount | {first} (%) | {second} (%) | difference (pts) | tolerance (pts) | "
             f"{first} better? |", "|---|---:|---:|---:|---:|---:|---|"]
    points = []
    for (schedule, method, scope, lr, _c), a, b in pairs:
        config = f"{schedule} {method}, {scope} scope, lr {fmt_lr(lr)}"
        common = [x for x in a.amounts if x > 0 and b.index(x) is not None]
        for amount, ma, mb, diff, tol, outcome in _compare(a, b, common):
            points.append((config, amount, diff, outcome))
            table.append(f"| {config} | {amount:g} | {ma:.1f} | {mb:.1f} | {diff:+.1f} | {tol:.1f} | "
                         f"{('yes', 'tie', 'no')[1 - outcome]} |")
    if not points:
        return _answer(id_, question, tolerance, "not testable",
                       f"not testable: {first} and {second} share no pruned amount with accuracies")
    outcomes = [p[3] for p in points]
    best = max(points, key=lambda p: p[2])
    verdict = _verdict(outcomes)
    answer = (f"{verdict}: {first} better at {outcomes.count(1)} of {len(points)} (configuration, amount) points, "
              f"tie at {outcomes.count(0)}, worse at {outcomes.count(-1)}; mean difference "
              f"{np.mean([p[2] for p in points]):+.1f} pts, largest {best[2]:+.1f} pts ({best[0]} at "
              f"{fmt_amount(best[1])}); per amount: " + _per_amount(points))
    return _answer(id_, question, tolerance, verdict, answer, table)


def _per_amount(points) -> str:
    """'10%: +0.3, 50%: +4.1, ...': mean difference over configurations at each amount."""
    amounts = sorted({p[1] for p in points})
    return ", ".join(f"{fmt_amount(x)}: {np.mean([p[2] for p in points if p[1] == x]):+.1f}" for x in amounts)


# ------------------------------------------------------------------------------------ schedules
def _schedule_answer(curves: dict) -> dict:
    question = "Do AGP and LTH beat iterative at equal epochs spent?"
    tolerance = (f"same amount and mean epochs_spent within {EPOCH_TOLERANCE:g}; accuracy within "
                 f"max({TOLERANCE_PTS:g} pt, std sum) is a tie")
    present = {k[0] for k in curves}
    others = [s for s in ("agp", "lth") if s in present]
    if not others:
        return _answer("B3", question, tolerance, "not testable", "not testable: no agp or lth rows")
    if "iterative" not in present:
        return _answer("B3", question, tolerance, "not testable",
                       f"not testable: no iterative rows to compare {' and '.join(others)} with")
    table = ["| schedule vs iterative | configuration | amount | epochs spent | schedule (%) | iterative (%) | "
             "difference (pts) | verdict |", "|---|---|---:|---:|---:|---:|---:|---|"]
    answers, verdicts = [], []
    for schedule in others:
        compared, unmatched = [], []
        for key, c in curves.items():
            ref = curves.get(("iterative",) + key[1:])
            if key[0] != schedule or ref is None:
                continue
            for amount in (x for x in c.amounts if x > 0 and ref.index(x) is not None):
                ea, eb = c.value(amount, "epochs_spent"), ref.value(amount, "epochs_spent")
                if ea < 0 or eb < 0:
                    unmatched.append(f"epochs_spent not recorded at {fmt_amount(amount)}")
                elif abs(ea - eb) > EPOCH_TOLERANCE:
                    unmatched.append(f"{fmt_amount(amount)}: {schedule} {ea:g} vs iterative {eb:g} epochs")
                else:
                    for point in _compare(c, ref, [amount]):
                        compared.append(point)
                        config = f"{key[1]}, {key[2]} scope, lr {fmt_lr(key[3])}, {key[4]}"
                        table.append(f"| {schedule} | {config} | {amount:g} | {ea:g} | {point[1]:.1f} | "
                                     f"{point[2]:.1f} | {point[3]:+.1f} | {('better', 'tie', 'worse')[1 - point[5]]} |")
        if compared:
            outcomes = [p[5] for p in compared]
            verdicts.append(_verdict(outcomes))
            answers.append(f"{schedule}: {verdicts[-1]}, better at {outcomes.count(1)} of {len(compared)} "
                           f"equal-epoch points, worse at {outcomes.count(-1)}, mean difference "
                           f"{np.mean([p[3] for p in compared]):+.1f} pts")
        else:
            why = "; ".join(unmatched[:3]) + (" ..." if len(unmatched) > 3 else "") if unmatched \
                else "no configuration shares an amount with iterative"
            answers.append(f"{schedule}: not comparable ({why})")
    verdict = verdicts[0] if len(set(verdicts)) == 1 and len(verdicts) == len(others) else (
        "mixed" if verdicts else "not comparable")
    return _answer("B3", question, tolerance, verdict, "; ".join(answers), table if len(table) > 2 else ())


# ---------------------------------------------------------------------------------- sensitivity
def _sensitivity_rows(sweep_dirs, sensitivity):
    """(rows, source) of the given table, else of the first folder's sensitivity/sensitivity.csv."""
    from minicnn.study.agreement import as_folders

    if sensitivity is not None and not isinstance(sensitivity, (str, Path)):
        return list(sensitivity), "the given table"
    candidates = [Path(sensitivity)] if sensitivity is not None else [
        f / "sensitivity" / "sensitivity.csv" for f in as_folders(sweep_dirs)]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return None, "no sensitivity table (run `minicnn sensitivity CKPT --out OUT/sensitivity`)"
    from minicnn.study.sensitivity import load_sensitivity

    return load_sensitivity(path), str(path)


def _sensitivity_answer(sweep_dirs, sensitivity) -> dict:
    from minicnn.study.sensitivity import most_sensitive

    question = "Which layer is most sensitive?"
    tolerance = (f"largest accuracy drop (no fine-tuning) at the amount below 1 where the layers differ most; "
                 f"the runner-up within {TOLERANCE_PTS:g} pt is a tie")
    rows, source = _sensitivity_rows(sweep_dirs, sensitivity)
    if not rows:
        why = source if rows is None else "the sensitivity table is empty"
        return _answer("B4", question, tolerance, "not measured", f"not measured: {why}")
    answers = []
    for method, criterion in dict.fromkeys((r.method, r.criterion) for r in rows):
        group = [r for r in rows if (r.method, r.criterion) == (method, criterion)]
        top, amount = most_sensitive(group)
        if top is None:
            answers.append(f"{method} {criterion}: no amount below 1 measured for every layer")
            continue
        others = sorted((r for r in group if r.amount == amount and r.layer != top.layer),
                        key=lambda r: -r.acc_drop)
        text = f"{method} {criterion}: {top.layer} (drop {100 * top.acc_drop:.1f} pts at {fmt_amount(amount)}"
        if others:
            gap = 100 * (top.acc_drop - others[0].acc_drop)
            text += f"; next {others[0].layer} {100 * others[0].acc_drop:.1f} pts" + (
                ", a tie" if gap <= TOLERANCE_PTS else "")
        answers.append(text + ")")
    return _answer("B4", question, tolerance, "measured", "; ".join(answers) + f" [from {source}]")


# ------------------------------------------------------------------------------------ agreement
def _agreement_answer(sweep_dirs, agreement=None) -> dict:
    from minicnn.study.agreement import agreement_table, as_folders, mask_agreement

    question = "How far do masks agree between criteria and between seeds?"
    tolerance = "Jaccard overlap of kept weights over all prunable weights; mean over pairs"
    rows = list(agreement) if agreement is not None else mask_agreement(
        [f for f in as_folders(sweep_dirs) if f.is_dir()])
    if not rows:
        return _answer("B5", question, tolerance, "not measured",
                       "not measured: no comparable step checkpoints (OUT/runs/*/steps/*.h5) beside the table")
    parts = []
    for kind in ("criteria", "seeds"):
        sel = [r for r in rows if r.kind == kind and r.amount > 0]
        if sel:
            low = min(sel, key=lambda r: r.jaccard)
            parts.append(f"{kind}: mean Jaccard {np.mean([r.jaccard for r in sel]):.3f} over {len(sel)} "
                         f"(pair, amount) rows, lowest {low.jaccard:.3f} ({low.first} vs {low.second}, "
                         f"{low.schedule} {low.method} at {fmt_amount(low.amount)})")
    return _answer("B5", question, tolerance, "measured", "; ".join(parts) or "only amount 0 measured",
                   agreement_table(rows))


def md_cell(text) -> str:
    """``text`` as one markdown table cell (pipes escaped, on one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")
