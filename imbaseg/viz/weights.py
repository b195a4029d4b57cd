"""``visualize-weights``: the Boundary Gaussian weight map for several sigmas on one sample per dataset.

Layout: one row per dataset (its block): the image, its mask, then the weight map for each sigma,
so every weight map sits in the same row as the mask it comes from; one shared colorbar 0..1 on the
right; column titles "Image", "Mask", "σ = k". The weight maps are
``imbaseg.losses.boundary_gaussian_weight_map`` itself, so the figure shows exactly what the loss uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imbaseg.errors import UserError, suggestion
from imbaseg.viz.grid import DPI, Margins, font_size, line_inches, panel_grid, row_label, save_figure, show
from imbaseg.viz.labels import dataset_title

DEFAULT_SIGMAS = (1.0, 3.0, 6.0, 10.0)  # the study's figure
REAL_DATASETS = ("cvc", "isic2018", "drive")  # the study's three, in the study's order
SYNTHETIC_FALLBACK = {"cvc": "synthetic-polyp", "isic2018": "synthetic-lesion", "drive": "synthetic-vessel"}
CMAP = "inferno"  # perceptually uniform, dark background: the near-object halo stands out
MAX_PANEL_PX = 600  # panels as wide as the largest image (up to this), so masks are never shrunk by much


@dataclass
class Sample:
    """One picture: dataset name, id, image (H, W) or (H, W, 3) uint8, mask (H, W) bool."""

    dataset: str
    id: str
    image: np.ndarray
    mask: np.ndarray


def weight_map(mask: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) float32 map from the loss library: w+ on foreground, min(1, b + g(x)) on background."""
    from imbaseg.losses import boundary_gaussian_weight_map

    w = boundary_gaussian_weight_map(np.asarray(mask, dtype=bool), sigma=float(sigma))
    return w.detach().cpu().numpy().reshape(mask.shape).astype(np.float32)


def check_sigmas(sigmas) -> list[float]:
    sigmas = [float(s) for s in (sigmas or DEFAULT_SIGMAS)]
    bad = [s for s in sigmas if not np.isfinite(s) or s <= 0]
    if bad:
        raise UserError(f"--sigma values must be positive numbers, got {bad[0]:g}")
    return sigmas


def pick_id(prepared: Path, sample_id: str | None = None) -> str:
    """``sample_id`` if the manifest has it, else the image whose foreground fraction is the median one.

    Ties (and an even count) go to the smaller fraction, then the smaller id, so the pick is stable.
    """
    from imbaseg.data.manifest import read_manifest

    df = read_manifest(prepared)
    ids = list(df["id"])
    if not ids:
        raise UserError(f"{prepared / 'manifest.csv'} lists no images; rerun imbaseg prepare")
    if sample_id is not None:
        if sample_id not in ids:
            raise UserError(
                f"image id '{sample_id}' is not in {prepared / 'manifest.csv'}."
                f"{suggestion(sample_id, ids)} Pick one of its ids."
            )
        return sample_id
    df = df.sort_values(["fg_fraction", "id"], kind="mergesort").reset_index(drop=True)
    return str(df["id"].iloc[(len(df) - 1) // 2])


def load_sample(dataset: str, prepared: Path, sample_id: str) -> Sample:
    from imbaseg.data.io import read_image, read_mask

    image = read_image(prepared / "images" / f"{sample_id}.png")
    mask = read_mask(prepared / "masks" / f"{sample_id}.png") > 127
    return Sample(dataset, sample_id, image, mask)


def choose_datasets(datasets: list[str] | None, root=None) -> list[tuple[str, Path]]:
    """(name, prepared folder) per dataset to draw.

    Named datasets must be prepared (synthetic ones prepare themselves; an unprepared real one is a
    UserError saying how to prepare it). With none named: the prepared ones among cvc, isic2018, drive,
    else the synthetic stand-ins.
    """
    from imbaseg.data.prepare import ensure_prepared
    from imbaseg.data.prepared import is_complete
    from imbaseg.data.sources import canonical_name
    from imbaseg.paths import prepared_dir

    if datasets:
        names = [canonical_name(d) for d in datasets]
        return [(n, ensure_prepared(n, root)) for n in names]
    found = [(n, prepared_dir(n, root)) for n in REAL_DATASETS if is_complete(prepared_dir(n, root))]
    if found:
        return found
    return [(s, ensure_prepared(s, root)) for s in SYNTHETIC_FALLBACK.values()]


def _panel_width(samples: list[Sample], dpi: int) -> float:
    """Inches per panel: the widest image at 1 px per pixel (capped), at least 1.6 in for the titles."""
    widest = max(s.mask.shape[1] for s in samples)
    return max(1.6, min(widest, MAX_PANEL_PX) / dpi)


def _display_image(image: np.ndarray) -> tuple[np.ndarray, dict]:
    return (image, {"cmap": "gray", "vmin": 0, "vmax": 255}) if image.ndim == 2 else (image, {})


def render_weights(samples: list[Sample], sigmas=DEFAULT_SIGMAS, dpi: int = DPI):
    """The figure (not saved). Returns (fig, maps) with maps[row][k] the array drawn for sigmas[k]."""
    sigmas = check_sigmas(sigmas)
    if not samples:
        raise UserError("no sample to draw: name at least one dataset")
    ncols = 2 + len(sigmas)
    panel_w = _panel_width(samples, dpi)
    aspects = [s.mask.shape[0] / s.mask.shape[1] for s in samples]
    fs = font_size(panel_w) + 2  # six columns make a wide figure, read scaled down: larger text
    m = Margins(left=0.15 + line_inches(fs - 1, 2), title=0.1 + line_inches(fs + 1), right=0.1)
    fig, axes = panel_grid(aspects, ncols, panel_w, margins=m, extra_right=0.5 + line_inches(fs, 3), dpi=dpi)
    maps = []
    for r, (s, row) in enumerate(zip(samples, axes, strict=True)):
        img, kw = _display_image(s.image)
        show(row[0], img, **kw)
        show(row[1], s.mask.astype(np.uint8), cmap="gray", vmin=0, vmax=1)
        row_maps = []
        for k, sigma in enumerate(sigmas):
            w = weight_map(s.mask, sigma)
            im = show(row[2 + k], w, cmap=CMAP, vmin=0.0, vmax=1.0)
            row_maps.append(w)
        maps.append(row_maps)
        frac = float(s.mask.mean())
        row_label(fig, row[0], f"{dataset_title(s.dataset)}\n{s.id}  (fg {frac:.1%})", fontsize=fs - 1)
        if r == 0:
            for ax, title in zip(
                row, ["Image", "Mask"] + [f"σ = {sigma:g}" for sigma in sigmas], strict=True
            ):
                ax.set_title(title, fontsize=fs + 1, pad=5)
    _colorbar(fig, axes, im, fs)
    return fig, maps


def _colorbar(fig, axes, mappable, fontsize: float) -> None:
    top, bottom = axes[0][-1].get_position(), axes[-1][-1].get_position()
    width_in = fig.get_size_inches()[0]
    x0 = top.x1 + 0.15 / width_in
    cax = fig.add_axes((x0, bottom.y0, 0.2 / width_in, top.y1 - bottom.y0), label="colorbar")
    cb = fig.colorbar(mappable, cax=cax, ticks=[0, 0.25, 0.5, 0.75, 1.0])
    cb.set_label("Boundary Gaussian weight", fontsize=fontsize)
    cb.ax.tick_params(labelsize=fontsize - 1)


def visualize_weights(
    sigmas=DEFAULT_SIGMAS,
    datasets: list[str] | None = None,
    ids: list[str] | None = None,
    out: str | os.PathLike | None = None,
    root=None,
    dpi: int = DPI,
) -> dict:
    """Draw and save the figure; returns {png, pdf, samples: [(dataset, id)]}.

    ids: none (median foreground fraction per dataset), one per dataset, or one for a single dataset.
    out: the PNG path (default ``Figures/boundary_weights.png`` under the project root).
    """
    from imbaseg.paths import figures_dir

    sigmas = check_sigmas(sigmas)
    chosen = choose_datasets(datasets, root)
    ids = list(ids or [])
    if ids and len(ids) != len(chosen):
        raise UserError(
            f"got {len(ids)} --id value(s) for {len(chosen)} dataset(s): give one id per dataset, "
            "in the order of --dataset"
        )
    samples = []
    for k, (name, prepared) in enumerate(chosen):
        samples.append(load_sample(name, prepared, pick_id(prepared, ids[k] if ids else None)))
    fig, _ = render_weights(samples, sigmas, dpi)
    png, pdf = save_figure(fig, out or figures_dir(root) / "boundary_weights.png", dpi)
    return {
        "png": png,
        "pdf": pdf,
        "samples": [(s.dataset, s.id) for s in samples],
        "figsize": tuple(fig.get_size_inches()),
        "dpi": dpi,
    }
