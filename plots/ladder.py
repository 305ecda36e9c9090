"""The kernel ladder's figure (minicnn/ladder): training images/s per rung on a log axis, PyTorch's
figure on the same batch as a horizontal line. PNG and SVG, each written to a temporary name and
renamed into place; matplotlib is imported inside the function (Agg canvas, no pyplot)."""

from __future__ import annotations

from pathlib import Path

from plots.figures import house_style, new_figure, save_figure


def ladder_figure(labels: list[str], rates: list[float], out_dir, torch_rate: float | None = None,
                  title: str = "", stem: str = "ladder") -> list[Path]:
    """Bars of ``rates`` (images/s, one per rung, named by ``labels``) on a log axis, each with its value;
    ``torch_rate`` (images/s) as a dashed line. Writes ``<stem>.png`` and ``<stem>.svg`` into ``out_dir``
    and returns their paths."""
    with house_style():
        fig = new_figure(7.5, 4.2)
        ax = fig.add_subplot()
        ax.bar(range(len(rates)), rates, color="C0", zorder=2)
        for i, rate in enumerate(rates):
            ax.annotate(f"{rate:,.0f}", (i, rate), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7)
        if torch_rate:
            ax.axhline(torch_rate, color="C3", ls="--", zorder=3, label=f"PyTorch, same batch: {torch_rate:,.0f}")
            ax.legend(loc="upper left")
        ax.set_yscale("log")
        ax.set_ylim(min(rates + [torch_rate or rates[0]]) / 2, max(rates + [torch_rate or 0]) * 3)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        ax.set_ylabel("training images/s (log scale)")
        ax.set_title(title)
        return save_figure(fig, Path(out_dir), stem)
