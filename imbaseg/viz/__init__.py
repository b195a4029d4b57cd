"""Figures: ``visualize_weights`` (weights.py), ``compare`` (compare.py), ``make_figures`` (make_figures.py).

Shared pieces: ``colors`` (TP/FP/FN/TN error maps), ``labels`` (readable loss and dataset names) and
``grid`` (panel layout in inches, atomic PNG + PDF). Everything draws on ``matplotlib.figure.Figure``
objects (no pyplot state) and returns them, so tests can read back what was drawn.
Import the submodules directly; this package imports nothing heavy.
"""
