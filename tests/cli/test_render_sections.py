"""The evaluation summary's lesion, object-size and calibration lines on the terminal (cli/render.py)."""

from __future__ import annotations

from imbaseg.cli import render


def _lesion(classes):
    return {
        "rule": "any overlapping pixel",
        "targets": 57,
        "detected": 32,
        "fp": 1752,
        "predicted": 4476,
        "recall": 0.5614,
        "precision": 0.6086,
        "f1": 0.5840,
        "by_area": {"classes": classes},
    }


def test_lesion_line_names_the_area_classes_pixel_ranges():
    classes = [
        {"class": "small", "min_area": 0.0, "max_area": 38.0, "targets": 21, "detected": 3, "recall": 3 / 21},
        {
            "class": "medium",
            "min_area": 38.0,
            "max_area": 23790.67,
            "targets": 17,
            "detected": 10,
            "recall": 10 / 17,
        },
        {
            "class": "large",
            "min_area": 23790.67,
            "max_area": None,
            "targets": 19,
            "detected": 19,
            "recall": 1.0,
        },
    ]
    with render.console.capture() as cap:
        render._evaluation_sections({"lesion": _lesion(classes)})
    text = " ".join(cap.get().split())
    assert "32/57 detected, 1752 false positive(s) of 4476 predicted" in text
    assert "small (<= 38 px) 0.143 (3/21)" in text
    assert "medium (38-23791 px) 0.588 (10/17)" in text
    assert "large (> 23791 px) 1.000 (19/19)" in text


def test_an_area_class_without_targets_says_n_a():
    classes = [
        {"class": "small", "min_area": 0.0, "max_area": 5.0, "targets": 0, "detected": 0, "recall": None}
    ]
    with render.console.capture() as cap:
        render._evaluation_sections({"lesion": _lesion(classes)})
    assert "small (<= 5 px) n/a (0/0)" in " ".join(cap.get().split())
