"""The report's figures: written as PNG (200 dpi) and PDF, one colour per loss shared by every figure,
readable loss labels, and no text of a figure overlapping another (tick labels, titles, legend), checked
on the drawn figure's text extents."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import DATASETS, LOSSES


@pytest.fixture(scope="module")
def report_with_figures(fake_project, tmp_path_factory):
    from imbaseg.study.report import write_report

    return write_report(fake_project["study"], metrics=["dice", "hd95"], boot=200, root=fake_project["root"])


def test_files_are_png_at_200_dpi_and_pdf(report_with_figures):
    from PIL import Image

    for name in ("ranks_blob", "significance", "distributions"):
        png, pdf = (report_with_figures.out_dir / f"{name}.{ext}" for ext in ("png", "pdf"))
        assert report_with_figures.files[png.name] == png and report_with_figures.files[pdf.name] == pdf
        with Image.open(png) as im:
            assert im.format == "PNG" and round(im.info["dpi"][0]) == 200
            assert im.width > 1000 and im.height > 400
        assert pdf.read_bytes()[:5] == b"%PDF-"


def _figures(rep, metric=None):
    from imbaseg.study import figures as F

    colors = F.loss_colors(rep.study.losses)
    names = ("ranks_blob", "significance", "distributions")
    return colors, {name: getattr(F, name)(rep, metric or rep.metrics[0], colors) for name in names}


def test_one_colour_per_loss_in_every_figure(report_with_figures):
    from matplotlib.colors import to_rgb

    rep = report_with_figures.report
    colors, figs = _figures(rep)
    assert len({c[:3] for c in colors.values()}) == len(LOSSES)
    for d, ax in zip(rep.reported, figs["ranks_blob"].axes, strict=False):
        order = sorted(range(len(d.losses)), key=lambda k: (d.ranking["dice"].rank[k], k))
        discs = [c for c in ax.collections if len(c.get_offsets()) and c.get_sizes().max() > 30]
        assert [tuple(c.get_facecolor()[0][:3]) for c in discs] == [colors[d.losses[k]][:3] for k in order]
    for d, ax in zip(rep.reported, figs["distributions"].axes, strict=False):
        boxes = [p for p in ax.patches]
        assert [to_rgb(b.get_facecolor()) for b in boxes] == [colors[loss][:3] for loss in d.losses]
        dots = [c for c in ax.collections]
        assert [tuple(c.get_facecolor()[0][:3]) for c in dots] == [colors[loss][:3] for loss in d.losses]


def _texts(fig) -> list:
    """(text, corners (4, 2) in pixels) of every visible, non-empty text of the drawn figure. A text rotated
    by an angle that is not a multiple of 90 degrees (the 40-degree tick labels, rotation_mode 'anchor') gets
    its real rotated rectangle: its unrotated box turned about its anchor, not the larger axis-aligned box."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)  # a Figure made without pyplot has no drawing canvas of its own
    canvas.draw()
    renderer = canvas.get_renderer()
    out = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip():
            continue
        angle = t.get_rotation()
        if angle % 90 == 0:
            b = t.get_window_extent(renderer)
            out.append((t, np.array([[b.x0, b.y0], [b.x1, b.y0], [b.x1, b.y1], [b.x0, b.y1]])))
            continue
        assert t.get_rotation_mode() == "anchor"
        t.set_rotation(0)
        b = t.get_window_extent(renderer)
        t.set_rotation(angle)
        anchor = t.get_transform().transform(t.get_position())
        corners = np.array([[b.x0, b.y0], [b.x1, b.y0], [b.x1, b.y1], [b.x0, b.y1]]) - anchor
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        out.append((t, corners @ np.array([[c, s], [-s, c]]) + anchor))
    return out


def _overlaps(p: np.ndarray, q: np.ndarray, tol: float = 1.0) -> bool:
    """Separating-axis test of two convex quadrilaterals (corners in order); touching within tol is fine."""
    for poly in (p, q):
        for k in range(4):
            edge = poly[(k + 1) % 4] - poly[k]
            axis = np.array([-edge[1], edge[0]]) / np.hypot(*edge)
            a, b = p @ axis, q @ axis
            if a.max() <= b.min() + tol or b.max() <= a.min() + tol:
                return False
    return True


@pytest.mark.parametrize("name", ["ranks_blob", "significance", "distributions"])
def test_no_text_overlaps_another(report_with_figures, name):
    """Tick labels, titles, the suptitle and the legend texts: no two overlap, and all stay inside the figure
    (the p-values inside the significance cells are checked against the cells' neighbours only)."""
    rep = report_with_figures.report
    fig = _figures(rep)[1][name]
    texts = _texts(fig)
    labels = {rep.labels[loss] for loss in LOSSES}
    assert labels <= {t.get_text() for t, _ in texts}  # the readable labels, not the spec strings
    width, height = fig.bbox.width, fig.bbox.height
    for t, box in texts:
        assert box.min() >= -1 and box[:, 0].max() <= width + 1 and box[:, 1].max() <= height + 1, (
            t.get_text()
        )
    for (t1, b1), (t2, b2) in itertools.combinations(texts, 2):
        assert not _overlaps(b1, b2), (t1.get_text(), t2.get_text())


def test_loss_colors_are_by_study_order():
    from imbaseg.study.figures import loss_colors

    a = loss_colors(["x", "y", "z"])
    b = loss_colors(["x", "y", "z", "w"])
    assert all(a[k] == b[k] for k in a)  # a loss keeps its colour whatever follows it
    assert len(set(loss_colors([str(i) for i in range(20)]).values())) == 20


def test_a_dataset_without_tests_still_draws(tmp_path):
    """A dataset whose reference was dropped has no reference line, and a one-loss dataset draws too."""
    from report_helpers import fake_study, write_study

    from imbaseg.study.report import write_report
    from imbaseg.study.spec import load_study

    study = load_study(write_study(tmp_path / "s.yaml", DATASETS, ("bce", "dice"), (1,), metrics=["hd95"]))
    fake_study(study, tmp_path, n=14, skip={("synthetic-vessel", "bce", 1)})
    res = write_report(study, root=tmp_path, boot=50, allow_missing=True)
    assert (res.out_dir / "distributions.png").stat().st_size > 0
    titles = {t.get_text().split("\n")[-1] for t, _ in _texts(_figures(res.report)[1]["ranks_blob"])}
    assert "Kendall's τ undefined" in titles
    assert np.isnan(res.report.datasets[1].ranking["hd95"].stability.median_tau)
