"""Figures of a pruning sweep (the only part of the project that imports matplotlib).

``plots.figures.make_figures(rows, out_dir)`` draws the paper's Figures 2-13 and summary figures from a
results table; matplotlib is imported inside the functions, so importing this package is cheap.
"""

from plots.figures import make_figures

__all__ = ["make_figures"]
