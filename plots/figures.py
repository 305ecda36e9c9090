"""The paper's figures from a results table, plus summary figures. The only matplotlib importer.

``make_figures(rows, out_dir)`` writes, for every configuration present in the rows:

- ``<schedule>_<method>_lr<lr>.png`` / ``.svg`` (the paper's Figures 2-13): test accuracy after
  fine-tuning, test accuracy right after pruning (before fine-tuning) and train accuracy after
  fine-tuning, in %, against the fraction of parameters remaining (1 - amount), with the x axis running
  from 1.0 down to 0.0 as in the paper. With several seeds each line is the mean and the band is
  +- one standard deviation; amounts where a run diverged (NaN/inf loss) carry a red cross. Rows of
  a second pruning scope get a ``_<scope>`` suffix (``global`` when the layerwise rows exist).
- ``summary_schedules``: one-shot vs iterative, test accuracy after fine-tuning; a grid of method
  (rows) x learning rate (columns).
- ``summary_lrs``: the learning rates compared; a grid of schedule (rows) x method (columns).
- ``summary_methods``: structured vs unstructured; a grid of schedule (rows) x learning rate (columns).
- ``summary_flops``: test accuracy after fine-tuning against effective training FLOPs per image (log
  scale); one panel per learning rate.

A configuration of another criterion gets ``_<criterion>`` after the lr in its name. The summaries read
the paper's rows (magnitude, one-shot and iterative), layerwise when present (the paper's setting).
A table with rows beyond the paper's adds the figures of ``plots.study_figures``. Configurations, panels and
figures without data are skipped, so a partial sweep plots what it has. Every file is written to a
temporary name in the output folder and renamed into place. matplotlib is imported inside the
functions (Agg canvas, no pyplot), so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from minicnn.paper import LRS, METHODS, SCHEDULES
from minicnn.study.curves import (SCHEDULE_TITLES, SUMMARY_FIGURES, Curve, aggregate, curves_for_scope, figure_stem,
                                  figure_title, fmt_lr, has_beyond_rows, preferred_scope)

FORMATS = ("png", "svg")
_CHANCE = 10.0

_ACC_LINES = (
    ("test_acc_after", "Test accuracy after fine-tuning", {"color": "C0", "ls": "-", "marker": "o"}),
    ("test_acc_before", "Test accuracy before fine-tuning", {"color": "C1", "ls": "--", "marker": "s"}),
    ("train_acc", "Train accuracy (after fine-tuning)", {"color": "C2", "ls": ":", "marker": "^"}),
)
_SCHEDULE_STYLE = {"oneshot": {"color": "C0", "marker": "o"}, "iterative": {"color": "C3", "marker": "s"}}
_METHOD_STYLE = {"structured": {"color": "C4", "marker": "D"}, "unstructured": {"color": "C2", "marker": "o"}}
_LR_STYLE = {0.8: {"color": "C3", "marker": "^"}, 0.01: {"color": "C0", "marker": "o"},
             0.0001: {"color": "C1", "marker": "s"}}


def make_figures(rows: list, out_dir) -> list[Path]:
    """Draw every figure the rows allow into ``out_dir`` (PNG and SVG); return the paths written."""
    out_dir = Path(out_dir)
    if not rows:
        return []
    preferred = preferred_scope(rows)
    written: list[Path] = []
    with house_style():
        for (schedule, method, scope, lr, criterion), curve in aggregate(rows).items():
            if not _has(curve):
                continue
            title = figure_title(schedule, method, lr, None if scope == preferred else scope, criterion)
            written += save_figure(_config_figure(curve, title), out_dir,
                                   figure_stem(schedule, method, lr, scope, preferred, criterion))
        curves = curves_for_scope(rows, preferred)
        for name, _heading in SUMMARY_FIGURES:
            fig = _SUMMARY_BUILDERS[name](curves)
            if fig is not None:
                written += save_figure(fig, out_dir, name)
        if has_beyond_rows(rows):
            from plots.study_figures import make_study_figures

            written += make_study_figures(rows, out_dir)
    return written


# ------------------------------------------------------------------------------------ plumbing
@contextlib.contextmanager
def house_style():
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "minicnn", "font.size": 9, "axes.grid": True,
                                "grid.alpha": 0.3, "legend.fontsize": 8, "axes.titlesize": 10}):
        yield


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    from minicnn.io.files import atomic_path

    paths = []
    for ext in FORMATS:
        path = out_dir / f"{stem}.{ext}"
        meta = {"Date": None} if ext == "svg" else {}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, metadata=meta)
        paths.append(path)
        # the layout is solved; keep it for the next format instead of solving it again (the slow part)
        fig.set_layout_engine("none")
    return paths


def _has(curve: Curve | None, metric: str = "test_acc_after") -> bool:
    return curve is not None and bool(np.isfinite(curve.mean[metric]).any())


def _lrs(curves: dict) -> list[float]:
    """Learning rates present: the paper's first (0.8, 0.01, 0.0001), then any other, high to low."""
    present = {lr for (_s, _m, lr) in curves}
    return [lr for lr in LRS if lr in present] + sorted(present - set(LRS), reverse=True)


def _present(curves: dict, position: int, order: tuple) -> list[str]:
    found = {k[position] for k in curves}
    return [x for x in order if x in found] + sorted(found - set(order))


def _line(ax, x, curve: Curve, metric: str, label: str, mark_diverged: bool = True, **style):
    """Mean line (+- std band with several seeds) of ``metric`` in %; returns the line or None."""
    mean, std = curve.mean[metric] * 100.0, curve.std[metric] * 100.0
    ok = np.isfinite(mean) & np.isfinite(x)
    if not ok.any():
        return None
    (line,) = ax.plot(x[ok], mean[ok], label=label, lw=1.5, ms=4, **style)
    if int(curve.n.max()) > 1:
        s = np.where(np.isfinite(std), std, 0.0)
        ax.fill_between(x[ok], (mean - s)[ok], (mean + s)[ok], color=line.get_color(), alpha=0.18, lw=0)
    if mark_diverged:
        _mark_diverged(ax, x, mean, curve)
    return line


def _mark_diverged(ax, x, mean_pct, curve: Curve, label: str | None = None):
    bad = (curve.diverged > 0) & np.isfinite(x)
    if not bad.any():
        return None
    y = np.where(np.isfinite(mean_pct), mean_pct, _CHANCE)[bad]
    return ax.scatter(x[bad], y, marker="x", s=60, color="red", zorder=5, linewidths=1.8, label=label)


def _remaining_axis(ax, label: bool = True):
    ax.set_xlim(1.02, -0.02)  # the paper's orientation: 1.0 (dense) on the left, 0.0 on the right
    ax.set_ylim(0, 100)
    ax.axhline(_CHANCE, color="0.5", lw=0.8, ls="-.", zorder=0)
    if label:
        ax.set_xlabel("Fraction of parameters remaining")


def _empty_panel(ax, text: str = "no data"):
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5")
    ax.set_axis_off()  # not set_xticks([]): the axes are shared, that would blank every panel


def _seed_note(curves) -> str:
    n = max((int(c.n.max()) for c in curves if c is not None), default=1)
    return f"mean ± std over {n} seeds" if n > 1 else "one seed"


# ------------------------------------------------------------------------- per-configuration
def _config_figure(curve: Curve, title: str):
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    x = curve.remaining
    for metric, label, style in _ACC_LINES:
        _line(ax, x, curve, metric, label, mark_diverged=False, **style)
    _mark_diverged(ax, x, curve.mean["test_acc_after"] * 100.0, curve, label="diverged run")
    _remaining_axis(ax)
    ax.set_ylabel("Accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="best", title=_seed_note([curve]), title_fontsize=8)
    return fig


# ------------------------------------------------------------------------------------ summaries
def _grid(row_keys, col_keys, title: str, draw, row_name, col_name, width=3.4, height=2.8):
    """A grid of panels; draw(ax, row, col) -> list of (handle, label) or [] when it has no data."""
    if not row_keys or not col_keys:
        return None
    fig = new_figure(width * len(col_keys) + 0.6, height * len(row_keys) + 0.9)
    axes = fig.subplots(len(row_keys), len(col_keys), squeeze=False, sharex=True, sharey=True)
    legend: dict[str, object] = {}
    drawn = False
    for i, r in enumerate(row_keys):
        for j, c in enumerate(col_keys):
            ax = axes[i][j]
            handles = draw(ax, r, c)
            if handles:
                drawn = True
                for h, lab in handles:
                    legend.setdefault(lab, h)
            else:
                _empty_panel(ax)
            ax.set_title(f"{row_name(r)}, {col_name(c)}")
            if i == len(row_keys) - 1:
                ax.set_xlabel("Fraction of parameters remaining")
            if j == 0:
                ax.set_ylabel("Test acc. after fine-tuning (%)")
    if not drawn:
        return None
    fig.suptitle(title)
    fig.legend(list(legend.values()), list(legend.keys()), loc="outside lower center", ncol=min(len(legend), 5))
    return fig


def _panel(curves: dict, keys_and_styles) -> callable:
    def draw(ax, r, c):
        handles = []
        for key_fn, label, style in keys_and_styles:
            curve = curves.get(key_fn(r, c))
            if not _has(curve):
                continue
            line = _line(ax, curve.remaining, curve, "test_acc_after", label, **style)
            if line is not None:
                handles.append((line, label))
        if handles:
            _remaining_axis(ax, label=False)
        return handles
    return draw


def _summary_schedules(curves: dict):
    schedules = _present(curves, 0, SCHEDULES)
    specs = [(lambda r, c, s=s: (s, r, c), SCHEDULE_TITLES.get(s, s), _SCHEDULE_STYLE.get(s, {}))
             for s in schedules]
    return _grid(_present(curves, 1, METHODS), _lrs(curves),
                 f"One-shot vs iterative pruning ({_seed_note(curves.values())})", _panel(curves, specs),
                 lambda m: m.capitalize(), lambda lr: f"lr {fmt_lr(lr)}")


def _summary_lrs(curves: dict):
    specs = [(lambda r, c, lr=lr: (r, c, lr), f"lr {fmt_lr(lr)}", _LR_STYLE.get(lr, {})) for lr in _lrs(curves)]
    return _grid(_present(curves, 0, SCHEDULES), _present(curves, 1, METHODS),
                 f"Fine-tuning learning rates compared ({_seed_note(curves.values())})", _panel(curves, specs),
                 lambda s: SCHEDULE_TITLES.get(s, s), lambda m: m)


def _summary_methods(curves: dict):
    specs = [(lambda r, c, m=m: (r, m, c), m.capitalize(), _METHOD_STYLE.get(m, {}))
             for m in _present(curves, 1, METHODS)]
    return _grid(_present(curves, 0, SCHEDULES), _lrs(curves),
                 f"Structured vs unstructured pruning ({_seed_note(curves.values())})", _panel(curves, specs),
                 lambda s: SCHEDULE_TITLES.get(s, s), lambda lr: f"lr {fmt_lr(lr)}")


def _summary_flops(curves: dict):
    lrs = _lrs(curves)
    if not lrs:
        return None
    fig = new_figure(3.6 * len(lrs) + 0.6, 3.4)
    axes = fig.subplots(1, len(lrs), squeeze=False, sharey=True)[0]
    legend: dict[str, object] = {}
    for ax, lr in zip(axes, lrs):
        drawn = False
        for schedule in _present(curves, 0, SCHEDULES):
            for method in _present(curves, 1, METHODS):
                curve = curves.get((schedule, method, lr))
                if not _has(curve):
                    continue
                x = curve.mean["training_flops_effective"].astype(np.float64)
                x = np.where(np.isfinite(x) & (x > 0), x, np.nan)
                label = f"{SCHEDULE_TITLES.get(schedule, schedule)} {method}"
                style = {"color": _METHOD_STYLE.get(method, {}).get("color"),
                         "marker": _SCHEDULE_STYLE.get(schedule, {}).get("marker", "o"),
                         "ls": "-" if schedule == "oneshot" else "--"}
                line = _line(ax, x, curve, "test_acc_after", label, **style)
                if line is not None:
                    drawn = True
                    legend.setdefault(label, line)
        if drawn:
            ax.set_xscale("log")
            ax.set_ylim(0, 100)
            ax.axhline(_CHANCE, color="0.5", lw=0.8, ls="-.", zorder=0)
            ax.set_xlabel("Effective training FLOPs per image")
        else:
            _empty_panel(ax)
        ax.set_title(f"lr {fmt_lr(lr)}")
    if not legend:
        return None
    axes[0].set_ylabel("Test acc. after fine-tuning (%)")
    fig.suptitle(f"Accuracy vs effective training cost ({_seed_note(curves.values())})")
    fig.legend(list(legend.values()), list(legend.keys()), loc="outside lower center", ncol=min(len(legend), 4))
    return fig


_SUMMARY_BUILDERS = {"summary_schedules": _summary_schedules, "summary_lrs": _summary_lrs,
                     "summary_methods": _summary_methods, "summary_flops": _summary_flops}
