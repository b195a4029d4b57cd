"""Readable loss labels: the study's names, every registry name, compounds, and file-name forms."""

from __future__ import annotations

import pytest

from imbaseg.losses import list_losses
from imbaseg.viz.labels import compact, dataset_title, loss_label


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("dynamit-batch", "Dynamit Batch-Wise Loss"),
        ("boundary-gaussian", "Boundary Gaussian Loss"),
        ("dou", "Boundary DoU Loss"),
        ("boundary-dou", "Boundary Gaussian + DoU Loss"),
        ("dice", "Dice Loss"),
        ("dice+bce", "Dice + BCE Loss"),
        ("boundary-gaussian(sigma=4)+0.5*dou", "Boundary Gaussian (σ=4) + 0.5 × Boundary DoU Loss"),
        ("my-new-ce", "My New CE Loss"),  # not in the table: its words, acronyms kept
        (
            [{"name": "dice", "weight": 1.0}, {"name": "focal", "weight": 2, "params": {"gamma": 3}}],
            "Dice + 2 × Focal (γ=3) Loss",
        ),
        (
            {"name": "boundary-gaussian", "params": {"sigma": 4.0}, "terms": None},
            "Boundary Gaussian (σ=4) Loss",
        ),
    ],
)
def test_loss_label(spec, expected):
    assert loss_label(spec) == expected


def test_every_registered_loss_gets_a_distinct_label():
    names = [row["name"] for row in list_losses()]
    labels = [loss_label(n) for n in names]
    assert len(set(labels)) == len(labels)
    assert all(
        lab.endswith(" Loss") and "-" not in lab.replace("Batch-Wise", "").replace("Image-Wise", "")
        for lab in labels
    )


def test_compact_and_dataset_titles():
    assert compact("Dynamit Batch-Wise Loss") == "DynamitBatchWise"
    assert compact("Boundary DoU Loss") == "BoundaryDoU"
    assert compact("Lovász Hinge Loss") == "LovaszHinge"
    assert dataset_title("cvc") == "CVC-ClinicDB" and dataset_title("mystery") == "mystery"
