"""The sensitivity figure (``minicnn sensitivity``): test accuracy without fine-tuning against the amount
one layer alone is pruned, one curve per layer, the unpruned model's accuracy as a dashed line. PNG and
SVG, each written to a temporary name and renamed into place (``save_figure``)."""

from __future__ import annotations

from pathlib import Path

from plots.figures import house_style, new_figure, save_figure


def sensitivity_figure(rows: list, unpruned_acc: float, out_dir, title: str = "",
                       stem: str = "sensitivity") -> list[Path]:
    """``rows``: objects with ``layer``, ``amount`` and ``test_acc`` (a fraction), as
    ``minicnn.study.sensitivity.SensitivityRow``. Writes ``<stem>.png`` and ``<stem>.svg`` into
    ``out_dir`` and returns their paths."""
    layers = list(dict.fromkeys(r.layer for r in rows))
    with house_style():
        fig = new_figure(5.5, 3.8)
        ax = fig.add_subplot()
        for i, name in enumerate(layers):
            mine = sorted((r for r in rows if r.layer == name), key=lambda r: r.amount)
            ax.plot([r.amount for r in mine], [100 * r.test_acc for r in mine], marker="o", ms=3,
                    color=f"C{i % 10}", label=name)
        ax.axhline(100 * unpruned_acc, color="0.3", ls="--", lw=1, label=f"unpruned: {unpruned_acc:.1%}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 100)
        ax.set_xlabel("fraction of the layer pruned (that layer alone)")
        ax.set_ylabel("test accuracy without fine-tuning (%)")
        ax.set_title(title)
        ax.legend(loc="lower left")
        return save_figure(fig, Path(out_dir), stem)
