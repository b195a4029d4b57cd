"""Panel grids laid out in inches (no tight_layout guessing) and atomic PNG + PDF output.

Every panel of a row has the row's image aspect (height / width), so images keep their shape
(CVC stays 4:3) and the figure has no empty bands. The figure size is rounded to whole pixels at
``dpi``, so the saved PNG is exactly ``figsize * dpi`` pixels.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from imbaseg.errors import UserError
from imbaseg.paths import atomic_write_bytes

DPI = 200  # the resolution for every figure


@dataclass
class Margins:
    """Inches around and between the panels."""

    left: float = 0.45  # room for the rotated row labels
    right: float = 0.1
    top: float = 0.1
    bottom: float = 0.1
    col_gap: float = 0.08
    row_gap: float = 0.08
    title: float = 0.3  # above each panel of a row that has titles (one line of 9 pt text is ~0.17 in)


def font_size(panel_w: float) -> float:
    """Points for titles: 9 pt on panels up to 2.25 in, then growing with the panel (at most 16 pt), so
    text keeps its size relative to the images when the figure is shown scaled down."""
    return float(min(16.0, max(9.0, 4.0 * panel_w)))


def line_inches(fontsize: float, lines: int = 1) -> float:
    """Height of ``lines`` lines of text at ``fontsize`` (1.25 line spacing)."""
    return lines * fontsize * 1.25 / 72


def _round_px(inches: float, dpi: int) -> float:
    return round(inches * dpi) / dpi


def panel_grid(
    aspects: list[float],
    ncols: int,
    panel_w: float,
    titles: list[float] | None = None,
    margins: Margins | None = None,
    extra_right: float = 0.0,
    extra_bottom: float = 0.0,
    dpi: int = DPI,
):
    """A figure with ``len(aspects)`` rows of ``ncols`` image panels ``panel_w`` inches wide.

    aspects: per row, image height / width. titles: per row, inches of title space above it
    (default ``margins.title`` for the first row, 0 for the others). Returns (fig, axes[row][col]).
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure registry, no GUI backend

    m = margins or Margins()
    titles = titles if titles is not None else [m.title] + [0.0] * (len(aspects) - 1)
    heights = [panel_w * a for a in aspects]
    width = _round_px(m.left + ncols * panel_w + (ncols - 1) * m.col_gap + m.right + extra_right, dpi)
    height = _round_px(
        m.top + m.bottom + extra_bottom + sum(heights) + sum(titles) + m.row_gap * (len(aspects) - 1), dpi
    )
    fig = Figure(figsize=(width, height), dpi=dpi)
    axes, y = [], height - m.top
    for h, t in zip(heights, titles, strict=True):
        y -= t + h
        row = []
        for c in range(ncols):
            x = m.left + c * (panel_w + m.col_gap)
            ax = fig.add_axes((x / width, y / height, panel_w / width, h / height))
            ax.set_axis_off()
            row.append(ax)
        axes.append(row)
        y -= m.row_gap
    return fig, axes


def show(ax, image, **kwargs):
    """imshow with no resampling blur (nearest) and the image's own aspect."""
    kwargs.setdefault("interpolation", "nearest")
    kwargs.setdefault("resample", False)
    return ax.imshow(image, aspect="equal", **kwargs)


def row_label(fig, ax, text: str, fontsize: float = 9) -> None:
    """Rotated text left of ``ax``, centred on it."""
    box = ax.get_position()
    fig.text(
        box.x0 - 0.06 / fig.get_size_inches()[0],
        (box.y0 + box.y1) / 2,
        text,
        rotation=90,
        ha="right",
        va="center",
        fontsize=fontsize,
    )


def output_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """(PNG, PDF) paths for ``out`` (a .png path, or a stem without suffix)."""
    out = Path(out)
    if out.suffix.lower() not in ("", ".png"):
        raise UserError(f"--out {out}: give a .png path (the PDF is written next to it)")
    png = out if out.suffix else out.with_suffix(".png")
    return png, png.with_suffix(".pdf")


def save_figure(fig, out: str | os.PathLike, dpi: int = DPI) -> tuple[Path, Path]:
    """Write ``fig`` as PNG (at ``dpi``) and PDF, each atomically. Returns (png, pdf)."""
    png, pdf = output_paths(out)
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, facecolor="white", metadata=_metadata(fmt))
        atomic_write_bytes(path, buf.getvalue())
    return png, pdf


def _metadata(fmt: str) -> dict:
    """No creation date, so regenerated figures differ only when their pixels do."""
    if fmt == "pdf":
        return {"CreationDate": None, "Creator": "imbaseg"}
    return {"Software": "imbaseg"}
