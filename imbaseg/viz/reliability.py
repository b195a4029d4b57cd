"""The reliability diagram of one evaluation: observed foreground frequency against mean probability per
bin (15 equal-width bins, the pixels inside the FOV), with the pixel count of each bin below it.

The top panel plots, per non-empty bin, the fraction of foreground pixels against the bin's mean
probability, on the diagonal of perfect calibration; gaps to the diagonal are what ECE averages. The
bottom panel shows how many pixels fall in each bin on a log scale (segmentation is imbalanced: most
pixels sit in the first bin, and a bin with few pixels is a noisy point). With a fitted temperature the
scaled probabilities are drawn too.
"""

from __future__ import annotations

import io

import numpy as np

from imbaseg.viz.grid import _metadata

DPI = 150
BEFORE, AFTER = "#1f5fbf", "#d9541e"


def _points(counts):
    """(mean_p, freq, n) of the non-empty bins."""
    keep = counts.n > 0
    n = counts.n[keep]
    return counts.sum_p[keep] / n, counts.sum_y[keep] / n, n


def _curve(ax, counts, color: str, label: str) -> None:
    mean_p, freq, _ = _points(counts)
    ax.plot(
        mean_p,
        freq,
        "o-",
        color=color,
        lw=1.6,
        ms=5,
        label=f"{label}: ECE {counts.ece():.4f}, Brier {counts.brier():.4f}",
    )


def _bars(ax, counts, color: str, offset: float, width: float) -> None:
    k = counts.n.size
    centres = (np.arange(k) + 0.5) / k
    heights = np.where(counts.n > 0, counts.n, np.nan)
    ax.bar(centres + offset, heights, width=width, color=color, alpha=0.8)


def reliability_figure(before, after=None, title: str = "", temperature: float | None = None):
    """The figure (not saved) from ``CalibrationCounts`` before and, optionally, after temperature scaling."""
    from matplotlib.figure import Figure  # no pyplot: no global figure registry, no GUI backend

    fig = Figure(figsize=(5.6, 7.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2], "hspace": 0.08})
    top.plot([0, 1], [0, 1], "--", color="0.55", lw=1, label="perfect calibration")
    _curve(top, before, BEFORE, "model")
    k, width = before.n.size, 0.8 / before.n.size
    if after is not None:
        _curve(top, after, AFTER, f"scaled (T = {temperature:.3f})" if temperature else "scaled")
        _bars(bottom, before, BEFORE, -width / 4, width / 2)
        _bars(bottom, after, AFTER, width / 4, width / 2)
    else:
        _bars(bottom, before, BEFORE, 0.0, width)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed foreground frequency")
    fig.suptitle(title, fontsize=10, y=0.975)
    top.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), fontsize=8, frameon=False, borderaxespad=0.2)
    top.grid(alpha=0.25)
    top.set_aspect("auto")
    bottom.set_yscale("log")
    bottom.set(xlabel=f"predicted foreground probability ({k} equal-width bins)", ylabel="pixels per bin")
    bottom.set_xticks(np.linspace(0, 1, 6))
    bottom.grid(alpha=0.25, axis="y")
    fig.subplots_adjust(left=0.14, right=0.97, top=0.855, bottom=0.08)
    return fig


def save_reliability(path, before, after=None, title: str = "", temperature: float | None = None) -> None:
    """Write the diagram as a PNG, atomically."""
    from imbaseg.paths import atomic_write_bytes

    fig = reliability_figure(before, after, title, temperature)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata=_metadata("png"))
    atomic_write_bytes(path, buf.getvalue())
