"""The study report's figures, one panel per reported dataset, for the report's first metric.

- ``ranks_blob``: x = loss (best first), y = rank; a disc per (loss, rank) whose area is the fraction of
  the bootstrap samples giving that rank, the full-data rank marked with a black cross and the samples'
  2.5-97.5 percentile range of ranks with a black line; the panel title gives the median Kendall's tau.
- ``significance``: the L x L map of the one-sided, Holm-adjusted tests: a dark cell where the row's loss
  is better than the column's at adjusted p < 0.05, with the adjusted p in each cell.
- ``distributions``: per-image values (the seed average) of each loss, box + points, and a dashed line
  at the reference loss's median.

Every loss keeps one colour in all figures (``loss_colors``, by its position in the study file).
PNG at 200 dpi and PDF, returned as bytes (``report_figures``); ``imbaseg.study.report`` writes them.
"""

from __future__ import annotations

import io
import math
import textwrap

import numpy as np

from imbaseg.metrics.stats import higher_is_better
from imbaseg.viz.grid import DPI

FONT = 8  # points: tick labels and titles at a paper's column width
MAX_DISC = 260.0  # points^2: the disc of a rank taken in every bootstrap sample
MIN_WIDTH = 5.0  # inches: room for the title and the legend when one dataset is reported
EM = 0.55  # average character width of the default font (DejaVu Sans), in em: for wrapping the titles


def loss_colors(losses) -> dict[str, tuple]:
    """One RGBA colour per loss in study order: matplotlib's tab10, then tab20's light halves."""
    from matplotlib import colormaps

    tab10, tab20 = colormaps["tab10"].colors, colormaps["tab20"].colors
    palette = list(tab10) + [tab20[2 * k + 1] for k in range(10)]
    return {loss: tuple(palette[k % len(palette)]) + (1.0,) for k, loss in enumerate(losses)}


def _figure(n_panels: int, panel_w: float, panel_h: float):
    """A constrained-layout figure with ``n_panels`` axes, at most 3 per row."""
    from matplotlib.figure import Figure

    ncols = min(3, n_panels)
    nrows = math.ceil(n_panels / ncols)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(max(MIN_WIDTH, ncols * panel_w), nrows * panel_h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure text with (the legend's columns)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def _suptitle(fig, text: str) -> None:
    """The figure's title, wrapped to the figure's width."""
    chars = max(20, int(fig.get_figwidth() * 72 / (EM * (FONT + 1))) - 4)
    fig.suptitle("\n".join(textwrap.wrap(text, chars)), fontsize=FONT + 1)


def _legend(fig, handles, handlelength: float = 2.0, **kwargs) -> None:
    """A legend under the panels, in as many columns as fit the figure's width (measured, not guessed)."""
    renderer = fig.canvas.get_renderer()
    for ncol in range(len(handles), 0, -1):
        legend = fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=ncol,
            fontsize=FONT,
            frameon=False,
            handlelength=handlelength,
            handletextpad=0.8,
            columnspacing=2.0,
            **kwargs,
        )
        if ncol == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width - 0.1 * DPI:
            return
        legend.remove()


def _panel_width(n_losses: int) -> float:
    return max(2.6, 0.42 * n_losses + 1.3)


def _by_rank(rank: np.ndarray) -> list[int]:
    """Indices best first; ties keep the study order."""
    return sorted(range(len(rank)), key=lambda k: (rank[k], k))


def _loss_ticks(ax, labels: list[str], axis: str = "x") -> None:
    if axis == "x":
        ax.set_xticks(
            range(len(labels)), labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=FONT
        )
    else:
        ax.set_yticks(range(len(labels)), labels, fontsize=FONT)


def _title(d, detail: str = "") -> str:
    """The dataset's title, and ``detail`` on a second line (one line of a 3-panel row is too short)."""
    from imbaseg.viz.labels import dataset_title

    return dataset_title(d.name) + (f"\n{detail}" if detail else "")


def _to_bytes(fig) -> tuple[bytes, bytes]:
    from imbaseg.viz.grid import _metadata  # no creation date: regenerated figures differ only in pixels

    out = []
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI, facecolor="white", metadata=_metadata(fmt))
        out.append(buf.getvalue())
    return out[0], out[1]


# ----------------------------------------------------------------------------- ranks_blob


def _blob_panel(ax, rep, d, metric: str, colors) -> None:
    rk = d.ranking[metric]
    freq, ranks = rk.stability.freq, rk.stability.ranks
    order = _by_rank(rk.rank)
    n = len(d.losses)
    for j, k in enumerate(order):
        present = np.flatnonzero(freq[k])
        ax.scatter(
            np.full(present.size, j),
            present + 1,
            s=MAX_DISC * freq[k][present],
            color=colors[d.losses[k]],
            alpha=0.85,
            linewidths=0,
            zorder=2,
        )
        low, high = np.percentile(ranks[:, k], [2.5, 97.5])
        ax.plot([j, j], [low, high], color="black", linewidth=0.8, zorder=3)
        ax.scatter([j], [rk.rank[k]], marker="x", s=22, color="black", linewidths=1.0, zorder=4)
    _loss_ticks(ax, [rep.labels[d.losses[k]] for k in order])
    ax.set_yticks(range(1, n + 1))
    ax.set_ylim(n + 0.6, 0.4)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("Rank", fontsize=FONT)
    ax.tick_params(axis="y", labelsize=FONT)
    ax.grid(axis="y", color="0.9", linewidth=0.6, zorder=0)
    tau = rk.stability.median_tau
    ax.set_title(
        _title(d, f"median Kendall's τ = {tau:.2f}" if np.isfinite(tau) else "Kendall's τ undefined"),
        fontsize=FONT + 1,
    )


def _blob_legend(fig) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            linestyle="",
            marker="o",
            markersize=math.sqrt(MAX_DISC * f),
            color="0.55",
            label=f"{f:.0%}" + (" of samples" if f == 0.1 else ""),
        )
        for f in (0.1, 0.5, 1.0)
    ]
    handles += [
        Line2D([], [], linestyle="", marker="x", color="black", label="rank on all images"),
        Line2D([], [], color="black", linewidth=0.8, label="95% of bootstrap ranks"),
    ]
    _legend(fig, handles, handlelength=2.8, borderaxespad=0.2)


def ranks_blob(rep, metric: str, colors):
    from imbaseg.viz.labels import metric_title

    n = max(len(d.losses) for d in rep.reported)
    fig, axes = _figure(len(rep.reported), _panel_width(n), 0.32 * n + 2.1)
    for ax, d in zip(axes, rep.reported, strict=True):
        _blob_panel(ax, rep, d, metric, colors)
    _blob_legend(fig)
    _suptitle(
        fig,
        f"Rank stability of {metric_title(metric)}: aggregate-then-rank over {rep.n_rank_boot:,} "
        "bootstrap samples of the test images",
    )
    return fig


# ----------------------------------------------------------------------------- significance


def _p_text(p: float) -> str:
    return "<.001" if p < 0.001 else f"{p:.3f}".lstrip("0") if p < 1 else "1"


def _significance_panel(ax, rep, d, metric: str, colors) -> None:
    from matplotlib.colors import ListedColormap

    rk = d.ranking[metric]
    order = _by_rank(rk.rank)
    p = rk.significance.p_holm[np.ix_(order, order)]
    n = len(order)
    better = np.where(np.isnan(p), np.nan, (p < 0.05).astype(float))
    ax.imshow(better, cmap=ListedColormap(["#e8e8e8", "#2c5d8f"]), vmin=0, vmax=1, aspect="equal")
    if n <= 10:
        for a in range(n):
            for b in range(n):
                if a != b:
                    ax.text(
                        b,
                        a,
                        _p_text(p[a, b]),
                        ha="center",
                        va="center",
                        fontsize=FONT - 2.5,
                        color="white" if p[a, b] < 0.05 else "0.25",
                    )
    labels = [rep.labels[d.losses[k]] for k in order]
    _loss_ticks(ax, labels, "x")
    _loss_ticks(ax, labels, "y")
    for tick, k in zip(ax.get_yticklabels(), order, strict=True):
        tick.set_color(_darker(colors[d.losses[k]]))
    for tick, k in zip(ax.get_xticklabels(), order, strict=True):
        tick.set_color(_darker(colors[d.losses[k]]))
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.2)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=0)
    ax.set_title(_title(d, f"{d.n_images} images"), fontsize=FONT + 1)


def _darker(color, factor: float = 0.75) -> tuple:
    """The loss colour darkened, so that light colours stay readable as text."""
    r, g, b, *_ = color
    return (r * factor, g * factor, b * factor, 1.0)


def significance(rep, metric: str, colors):
    from matplotlib.patches import Patch

    from imbaseg.viz.labels import metric_title

    n = max(len(d.losses) for d in rep.reported)
    side = max(2.6, 0.36 * n + 1.9)
    fig, axes = _figure(len(rep.reported), side, side + 0.6)  # + the two-line titles above the square maps
    for ax, d in zip(axes, rep.reported, strict=True):
        _significance_panel(ax, rep, d, metric, colors)
    handles = [
        Patch(color="#2c5d8f", label="row loss better than column loss at Holm-adjusted p < 0.05"),
        Patch(color="#e8e8e8", label="not significant"),
    ]
    _legend(fig, handles)
    _suptitle(
        fig,
        f"{metric_title(metric)}: one-sided Wilcoxon signed-rank tests of every pair, "
        "Holm-adjusted over all pairs (adjusted p in the cells)",
    )
    return fig


# ----------------------------------------------------------------------------- distributions


def _distribution_panel(ax, rep, d, metric: str, colors) -> None:
    from imbaseg.study.tables import unit
    from imbaseg.viz.labels import metric_title

    x = d.array(metric).mean(axis=1)  # (L, n): the seed-averaged per-image values
    n = len(d.losses)
    box = ax.boxplot(
        list(x),
        positions=range(n),
        widths=0.55,
        showfliers=False,
        patch_artist=True,
        medianprops={"color": "black", "linewidth": 1.0},
        whiskerprops={"linewidth": 0.8},
        capprops={"linewidth": 0.8},
        boxprops={"linewidth": 0.8},
    )
    jitter = np.random.default_rng(0)
    for k, loss in enumerate(d.losses):
        box["boxes"][k].set_facecolor(colors[loss][:3] + (0.3,))
        dx = jitter.uniform(-0.17, 0.17, x.shape[1])
        ax.scatter(k + dx, x[k], s=6, color=colors[loss], alpha=0.75, linewidths=0, zorder=3)
    if d.reference is not None:
        ax.axhline(float(np.median(x[d.reference])), color="0.3", linestyle="--", linewidth=0.8, zorder=1)
    _loss_ticks(ax, [rep.labels[loss] for loss in d.losses])
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel(f"{metric_title(metric)}{unit(metric)} per image", fontsize=FONT)
    ax.tick_params(axis="y", labelsize=FONT)
    ax.grid(axis="y", color="0.92", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    seeds = f"mean of {d.n_seeds} seeds" if d.n_seeds > 1 else "1 seed"
    ax.set_title(_title(d, f"{d.n_images} images, {seeds}"), fontsize=FONT + 1)


def distributions(rep, metric: str, colors):
    from matplotlib.lines import Line2D

    from imbaseg.viz.labels import metric_title

    n = max(len(d.losses) for d in rep.reported)
    fig, axes = _figure(len(rep.reported), _panel_width(n), 3.4)
    for ax, d in zip(axes, rep.reported, strict=True):
        _distribution_panel(ax, rep, d, metric, colors)
    ref = rep.labels[rep.study.reference]
    line = Line2D([], [], color="0.3", linestyle="--", linewidth=0.8, label=f"median of the reference, {ref}")
    _legend(fig, [line])
    direction = "higher" if higher_is_better(metric) else "lower"
    _suptitle(
        fig,
        f"{metric_title(metric)} per test image ({direction} is better): box = quartiles and median, "
        "whiskers = 1.5 IQR, dots = images",
    )
    return fig


# ----------------------------------------------------------------------------- all three


def report_figures(rep, progress=None, metric: str | None = None) -> dict[str, bytes]:
    """The three figures of the report's first metric (or ``metric``) as {file name: bytes}, PNG + PDF."""
    metric = metric or rep.metrics[0]
    colors = loss_colors(rep.study.losses)
    out = {}
    makers = (("ranks_blob", ranks_blob), ("significance", significance), ("distributions", distributions))
    for j, (name, make) in enumerate(makers):
        png, pdf = _to_bytes(make(rep, metric, colors))
        out[f"{name}.png"], out[f"{name}.pdf"] = png, pdf
        if progress:
            progress("figures", j + 1, len(makers))
    return out
