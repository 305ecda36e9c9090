"""Markdown report of a pruning sweep: what ran, the setup beside the paper's, the summary figures, one
results table per configuration, and every claim of the paper with its verdict.

This module only renders: the numbers come from the curves (``minicnn.study.curves``, the same ones the
figures plot) and the verdicts from ``minicnn.study.claims``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from minicnn.errors import MiniCNNError
from minicnn.paper import ALL_SCHEDULES, AMOUNTS, FINE_TUNE_EPOCHS, LRS, METHODS, SCHEDULES
from minicnn.study.beyond import beyond_section, md_cell
from minicnn.study.claims import VERDICTS, evaluate_claims
from minicnn.study.curves import (CRITERIA_ORDER, SUMMARY_FIGURES, Curve, aggregate, amount_key, figure_stem,
                                  figure_title, fmt_lr, has_beyond_rows, lr_key, preferred_scope, scopes_in)

_CLAIM_DEFINITIONS = (
    "Shared definitions: \"~10%\" means at most 15% test accuracy; the *unpruned accuracy* of a curve is the better "
    "of test accuracy before and after fine-tuning at amount 0; a curve *falls* at the first amount where its test "
    "accuracy after fine-tuning is more than 10 points below that; the *steepest step* is the largest decrease "
    "between neighbouring amounts; the *gap* is train minus test accuracy after fine-tuning; rates and schedules "
    "are compared by mean test accuracy after fine-tuning over the amounts both curves have. pts = percentage "
    "points.")

#: The first line of every report (`minicnn report` replaces only files that start with it).
#: The mask agreement table, kept beside the report (``write_report``).
AGREEMENT_CSV = "mask_agreement.csv"
REPORT_TITLE = "# Pruning a small CIFAR-10 CNN: results and the paper's claims"


def render_report(rows, figures_dir=None, relative_to=None, sweep_dirs=None, sensitivity=None,
                  agreement=None) -> str:
    """The report as markdown text (``write_report`` writes it).

    A table with rows beyond the paper's grid (another criterion, schedule agp or lth) gets a "Beyond the
    paper" section (``minicnn.study.beyond``); ``sweep_dirs`` (the study folder or folders the rows come
    from, for the mask agreement of their step checkpoints and a sensitivity/sensitivity.csv) and
    ``sensitivity`` (a sensitivity CSV or its rows) and ``agreement`` (mask agreement rows, else those
    computed from the folders' step checkpoints) feed it."""
    if not rows:
        raise MiniCNNError("the results table is empty; run `minicnn prune` or `minicnn sweep` first")
    figures = _FigureLinks(figures_dir, relative_to)
    curves = aggregate(rows)
    out = [REPORT_TITLE, "",
           "Reproduction of \"The Effects of Pruning on CIFAR-10 Model\" (Parra Montenegro and Mercado Franco): "
           "one-shot and iterative pruning, L1 unstructured and L2 structured, fine-tuned at three learning "
           "rates.", ""]
    out += _what_was_run(rows, len(curves))
    out += _setup_beside_the_paper(rows)
    out += _summary_figures(figures)
    out += _results(rows, curves, figures)
    out += _claims(rows)
    if has_beyond_rows(rows):
        out += beyond_section(rows, figures, sweep_dirs, sensitivity, agreement)
    return "\n".join(out)


def write_report(rows, out_path, figures_dir=None, sweep_dirs=None, sensitivity=None) -> Path:
    """Write the markdown report to ``out_path`` atomically; figure links are relative to it. With rows
    beyond the paper, the mask agreement of the ``sweep_dirs``' step checkpoints is kept beside it in
    ``AGREEMENT_CSV`` and read from there where the checkpoints are not (a checkout of committed results)."""
    from minicnn.io.files import atomic_path

    out_path = Path(out_path)
    figures = Path(figures_dir).resolve() if figures_dir is not None else None
    agreement = _agreement(sweep_dirs, out_path.parent / AGREEMENT_CSV) if has_beyond_rows(rows) else None
    text = render_report(rows, figures, relative_to=out_path.resolve().parent, sweep_dirs=sweep_dirs,
                         sensitivity=sensitivity, agreement=agreement)
    with atomic_path(out_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out_path


def _agreement(sweep_dirs, saved: Path) -> list:
    """Mask agreement rows of the folders' step checkpoints, stored in ``saved`` and read back (so that the
    report renders the same from the file alone); the rows ``saved`` holds when there are no checkpoints."""
    from minicnn.study.agreement import as_folders, load_agreement, mask_agreement, save_agreement

    rows = mask_agreement([f for f in as_folders(sweep_dirs) if f.is_dir()])
    if rows:
        save_agreement(rows, saved)
    return load_agreement(saved) if saved.is_file() else []


# ---------------------------------------------------------------------------------------- sections
def _what_was_run(rows, n_configs: int) -> list[str]:
    seeds = _values(rows, "seed")
    seconds = float(np.nansum([r.seconds for r in rows]))
    axes = "schedule x method x scope x lr" + (" x criterion" if has_beyond_rows(rows) else "")
    out = ["## What was run", "",
           f"- rows: {len(rows)} ({n_configs} {axes} configurations)",
           f"- schedules: {', '.join(_values(rows, 'schedule', ALL_SCHEDULES))}; "
           f"methods: {', '.join(_values(rows, 'method', METHODS))}; scopes: {', '.join(scopes_in(rows))}",
           *([f"- criteria: {', '.join(_values(rows, 'criterion', CRITERIA_ORDER))}"] if has_beyond_rows(rows) else []),
           f"- learning rates: {', '.join(fmt_lr(lr) for lr in _lrs(rows))}",
           f"- amounts: {', '.join(f'{a:g}' for a in _amounts(rows))}",
           f"- seeds: {len(seeds)} ({', '.join(str(int(s)) for s in seeds)})",
           f"- fine-tuning epochs per step: {_epochs(rows)}",
           f"- total fine-tuning time: {_duration(seconds)} ({seconds:,.0f} s)",
           f"- diverged rows (NaN/inf loss): {sum(r.diverged for r in rows)}", ""]
    if len(seeds) > 1:
        out += ["Numbers are mean ± sample standard deviation over seeds.", ""]
    return out


def _setup_beside_the_paper(rows) -> list[str]:
    amounts, lrs = _amounts(rows), _lrs(rows)
    missing_amounts = [a for a in AMOUNTS if amount_key(a) not in amounts]
    missing_lrs = [lr for lr in LRS if lr not in lrs]
    ran = f"{', '.join(_values(rows, 'schedule', ALL_SCHEDULES))}; {', '.join(_values(rows, 'method', METHODS))}"
    return [
        "## Setup compared with the paper", "",
        "| item | paper | this run |", "|---|---|---|",
        f"| pruning amounts (Table 1) | {', '.join(f'{a:g}' for a in AMOUNTS)} | "
        + ("all 12" if not missing_amounts else f"missing {', '.join(f'{a:g}' for a in missing_amounts)}") + " |",
        f"| fine-tuning learning rates (1.3) | {', '.join(fmt_lr(lr) for lr in LRS)} | "
        + ("all three" if not missing_lrs else f"missing {', '.join(fmt_lr(x) for x in missing_lrs)}") + " |",
        f"| epochs per amount / per iterative step (1.3) | {FINE_TUNE_EPOCHS} | {_epochs(rows)} |",
        f"| schedules and methods (1.3) | one-shot, iterative; L1 unstructured, L2 structured | {ran} |",
        f"| pruning scope | per tensor (torch.nn.utils.prune on each module) | {', '.join(scopes_in(rows))} |",
        "",
        "Structured amounts are fractions of conv filters (dim-0 slices); the output layer is not structurally "
        "pruned, so \"remaining\" (1 - amount, the paper's x axis) differs from the fraction of parameters that "
        "still act (the *params effective* column).", ""]


def _summary_figures(figures: "_FigureLinks") -> list[str]:
    links = [(title, figures.link(stem, title)) for stem, title in SUMMARY_FIGURES]
    links = [(title, link) for title, link in links if link]
    if not links:
        return []
    out = ["## Summary figures", ""]
    for title, link in links:
        out += [f"### {title}", "", link, ""]
    return out


def _results(rows, curves: dict[tuple, Curve], figures: "_FigureLinks") -> list[str]:
    preferred = preferred_scope(rows)
    several_scopes = len(scopes_in(rows)) > 1
    out = ["## Results", "",
           "Per configuration: amount pruned, nominal fraction remaining, effective parameters and forward FLOPs "
           "per image, test accuracy right after pruning and after fine-tuning, and train accuracy after "
           "fine-tuning (full training split).", ""]
    for (schedule, method, scope, lr, criterion), c in curves.items():
        title = figure_title(schedule, method, lr, scope if scope != preferred or several_scopes else None,
                             criterion)
        out += [f"### {title}", ""]
        link = figures.link(figure_stem(schedule, method, lr, scope, preferred, criterion), title)
        if link:
            out += [link, ""]
        out += _results_table(c) + [""]
    return out


def _claims(rows) -> list[str]:
    preferred = preferred_scope(rows)
    claims = evaluate_claims(rows, preferred)
    tally = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    out = ["## Claims", "",
           f"Every result the paper states, checked on the {preferred} scope rows. "
           + ", ".join(f"{n} {v}" for v, n in tally.items()) + ".", "",
           _CLAIM_DEFINITIONS, "",
           "| # | § | claim | tolerance | measured | verdict |", "|---|---|---|---|---|---|"]
    for c in claims:
        verdict = c["verdict"] + (f" ({c['reason']})" if c["reason"] else "")
        out.append(f"| {c['id']} | {c['section']} | {md_cell(c['claim'])} | {md_cell(c['tolerance'])} | "
                   f"{md_cell(c['measurement'])} | {md_cell(verdict)} |")
    out.append("")
    return out


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


# ------------------------------------------------------------------------------------------ pieces
class _FigureLinks:
    """Markdown image links to the figures that exist in ``figures_dir``, relative to ``relative_to``."""

    def __init__(self, figures_dir, relative_to):
        self.dir = Path(figures_dir) if figures_dir is not None else None
        self.base = Path(relative_to) if relative_to is not None else Path.cwd()

    def link(self, stem: str, title: str) -> str | None:
        if self.dir is None or not (self.dir / f"{stem}.png").is_file():
            return None
        rel = Path(os.path.relpath(self.dir / f"{stem}.png", self.base)).as_posix()
        return f"![{title}]({rel})"


def _values(rows, key, order: tuple = ()) -> list:
    """Distinct values of a column (NaN and None dropped), those in ``order`` first, in that order."""
    found = {getattr(r, key) for r in rows if getattr(r, key) == getattr(r, key)}
    return [v for v in order if v in found] + sorted(found - set(order))


def _lrs(rows) -> list[float]:
    return sorted({lr_key(r.lr) for r in rows}, reverse=True)


def _amounts(rows) -> list[float]:
    return sorted({amount_key(r.amount) for r in rows})


def _epochs(rows) -> str:
    return ", ".join(str(int(e)) for e in _values(rows, "epochs")) or "n/a"


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


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
