"""Figures beyond the paper's, drawn by ``plots.figures.make_figures`` when a table has rows outside the
paper's grid (another criterion, schedule agp or lth). Names and headings: ``curves.STUDY_FIGURES``.

- ``accuracy_vs_compression``: test accuracy after fine-tuning against the compression ratio (total /
  nonzero parameters) on a log2 axis from 1x to 128x; one line per (criterion, schedule), the random
  criterion's on the same axes, mean +- std bands over seeds; one panel per (method, scope, lr).
- ``accuracy_vs_speedup``: the same against the theoretical speedup (dense / effective forward FLOPs).
- ``schedules_equal_compute``: test accuracy after fine-tuning against the fine-tuning epochs spent to
  reach each row (``epochs_spent``); one line per (schedule, criterion), one panel per (method, scope, lr).

A figure whose rows are missing (no finite ratio; fewer than two schedules with epochs_spent recorded) is
skipped. Files are written as PNG and SVG, each atomically (``plots.figures.save_figure``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minicnn.study.curves import SCHEDULE_TITLES, aggregate, fmt_lr
from plots.figures import _CHANCE, _empty_panel, _line, _seed_note, house_style, new_figure, save_figure

_CRITERION_COLOR = {"magnitude": "C0", "random": "C7", "gradmag": "C2"}
_SCHEDULE_LINE = {"oneshot": {"ls": "-", "marker": "o"}, "iterative": {"ls": "--", "marker": "s"},
                  "agp": {"ls": ":", "marker": "^"}, "lth": {"ls": "-.", "marker": "D"}}
_MAX_RATIO = 128


def make_study_figures(rows, out_dir) -> list[Path]:
    """Draw the figures the rows allow into ``out_dir``; return the paths written."""
    out_dir = Path(out_dir)
    curves = aggregate(rows)
    written: list[Path] = []
    builders = (("accuracy_vs_compression", lambda: _ratio_figure(
                    curves, "compression_ratio", "Compression ratio (total / nonzero parameters)",
                    "Test accuracy vs compression ratio")),
                ("accuracy_vs_speedup", lambda: _ratio_figure(
                    curves, "theoretical_speedup", "Theoretical speedup (dense / effective FLOPs)",
                    "Test accuracy vs theoretical speedup")),
                ("schedules_equal_compute", lambda: _compute_figure(curves)))
    with house_style():
        for stem, build in builders:
            fig = build()
            if fig is not None:
                written += save_figure(fig, out_dir, stem)
    return written


def _panels(curves: dict) -> dict[tuple, list]:
    """{(method, scope, lr): [curve, ...]} in the curves' order."""
    panels: dict[tuple, list] = {}
    for (_schedule, method, scope, lr, _criterion), curve in curves.items():
        panels.setdefault((method, scope, lr), []).append(curve)
    return panels


def _style(curve) -> dict:
    return {"color": _CRITERION_COLOR.get(curve.criterion), **_SCHEDULE_LINE.get(curve.schedule, {})}


def _label(curve, with_criterion: bool = True) -> str:
    schedule = SCHEDULE_TITLES.get(curve.schedule, curve.schedule)
    return f"{curve.criterion}, {schedule}" if with_criterion else schedule


def _grid_of(panels: dict, title: str, draw, xlabel: str):
    """One panel per key of ``panels``; draw(ax, curves) -> [(handle, label)]; None when nothing is drawn."""
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig = new_figure(max(5.6, 3.8 * cols + 0.6), 3.2 * nrows + 0.9)
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True).ravel()
    legend: dict[str, object] = {}
    for ax, ((method, scope, lr), group) in zip(axes, panels.items()):
        handles = draw(ax, group)
        for h, lab in handles:
            legend.setdefault(lab, h)
        if not handles:
            _empty_panel(ax)
        ax.set_title(f"{method}, {scope} scope, lr {fmt_lr(lr)}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Test acc. after fine-tuning (%)")
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if not legend:
        return None
    fig.suptitle(f"{title} ({_seed_note([c for g in panels.values() for c in g])})")
    fig.legend(list(legend.values()), list(legend.keys()), loc="outside lower center",
               ncol=min(len(legend), 2 * cols))
    return fig


def _ratio_figure(curves: dict, metric: str, xlabel: str, title: str):
    def draw(ax, group):
        handles = []
        for curve in group:
            x = curve.mean[metric].astype(np.float64)
            x = np.where(np.isfinite(x) & (x >= 1) & (x <= _MAX_RATIO), x, np.nan)
            line = _line(ax, x, curve, "test_acc_after", _label(curve), **_style(curve))
            if line is not None:
                handles.append((line, _label(curve)))
        if handles:
            ax.set_xscale("log", base=2)
            ax.set_xlim(1, _MAX_RATIO)
            ticks = [2 ** k for k in range(8)]
            ax.set_xticks(ticks, [f"{t}×" for t in ticks])
            ax.set_ylim(0, 100)
            ax.axhline(_CHANCE, color="0.5", lw=0.8, ls="-.", zorder=0)
        return handles

    return _grid_of(_panels(curves), title, draw, xlabel)


def _compute_figure(curves: dict):
    recorded = {k: c for k, c in curves.items()
                if np.nanmax(np.where(np.isfinite(c.mean["epochs_spent"]), c.mean["epochs_spent"], -1)) > 0}
    if len({k[0] for k in recorded}) < 2:
        return None
    several_criteria = len({k[4] for k in recorded}) > 1

    def draw(ax, group):
        handles = []
        for curve in group:
            x = curve.mean["epochs_spent"].astype(np.float64)
            x = np.where(np.isfinite(x) & (x >= 0), x, np.nan)
            label = _label(curve, several_criteria)
            line = _line(ax, x, curve, "test_acc_after", label, **_style(curve))
            if line is not None:
                handles.append((line, label))
        if handles:
            ax.set_ylim(0, 100)
            ax.axhline(_CHANCE, color="0.5", lw=0.8, ls="-.", zorder=0)
        return handles

    return _grid_of(_panels(recorded), "Schedules at equal compute", draw,
                    "Fine-tuning epochs spent")
