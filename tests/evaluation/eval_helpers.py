"""Helpers of the evaluation tests: a tiny prepared dataset with a field of view, tiny configs and runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# (split, height, width, number of discs): native sizes differ from the 32x32 training size on purpose
SPECS = [
    ("train", 40, 52, 2),
    ("train", 36, 44, 1),
    ("train", 48, 40, 2),
    ("train", 44, 44, 1),
    ("train", 40, 40, 2),
    ("train", 38, 50, 1),
    ("val", 42, 46, 2),
    ("val", 36, 52, 1),
    ("val", 46, 38, 1),
    ("test", 40, 52, 2),
    ("test", 44, 36, 1),
    ("test", 38, 42, 0),
]  # the last test image has no foreground
DATASET = "tiny-fov"


def read_rows(path: Path) -> list[dict]:
    """A CSV file's rows as dicts of text (per_image.csv, comparison.csv, manifest.csv)."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def native_mask(root: Path, sub: str, item_id: str) -> np.ndarray:
    """The prepared (native-size) mask or FOV ``sub`` of ``item_id`` in the tiny dataset, as bool."""
    from imbaseg.data.io import read_mask

    return read_mask(root / "data" / "prepared" / DATASET / sub / f"{item_id}.png") > 127


def sample(k: int, h: int, w: int, discs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bright discs on a noisy background (RGB uint8), their mask, and an elliptic field of view."""
    rng = np.random.default_rng(100 + k)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), bool)
    for _ in range(discs):
        cy, cx, r = rng.uniform(0.3 * h, 0.7 * h), rng.uniform(0.3 * w, 0.7 * w), rng.uniform(4, 7)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    fov = ((yy - (h - 1) / 2) / (0.48 * h)) ** 2 + ((xx - (w - 1) / 2) / (0.48 * w)) ** 2 <= 1
    base = rng.normal(70, 18, (h, w, 3)) + mask[..., None] * np.array([110, 70, 40])
    return np.clip(base, 0, 255).astype(np.uint8), mask, fov


def make_prepared(root: Path, name: str = DATASET, specs=SPECS, with_fov: bool = True) -> Path:
    from imbaseg.data.prepared import PreparedWriter
    from imbaseg.paths import prepared_dir

    target = prepared_dir(name, root)
    with PreparedWriter(target, with_fov=with_fov) as w:
        rows = []
        for k, (split, h, wd, discs) in enumerate(specs):
            image, mask, fov = sample(k, h, wd, discs)
            rows.append(w.write_sample(f"img{k:02d}", image, mask, fov if with_fov else None, split=split))
        w.commit(rows, {"name": name})
    return target


def tiny_config(root: Path, **data):
    from imbaseg.config import from_dict

    return from_dict(
        {
            "name": "tiny",
            "data": {"dataset": DATASET, "root": str(root), "size": [32, 32], **data},
            "model": {"base_channels": 4},
            "loss": {"name": "bce"},
            "train": {"device": "cpu"},
        }
    )


def save_run(run_dir: Path, cfg, model, epoch: int = 7, which=("best", "last")) -> Path:
    from imbaseg.config import save_config
    from imbaseg.training.run_dir import save_checkpoint

    save_config(cfg, run_dir / "config.yaml")
    for w in which:
        save_checkpoint(
            {"model": model.state_dict(), "config": cfg.to_dict(), "epoch": epoch},
            run_dir / "checkpoints" / f"{w}.pt",
        )
    return run_dir


def fit_tiny(cfg, steps: int = 40, seed: int = 0) -> torch.nn.Module:
    """A base-4 U-Net fitted for ``steps`` Adam steps on the train split at 32x32 (~1 s on one thread)."""
    from imbaseg.data.dataset import SegDataset
    from imbaseg.paths import prepared_dir
    from imbaseg.training.run_dir import build_model

    torch.manual_seed(seed)
    ds = SegDataset(prepared_dir(cfg.data.dataset, cfg.data.root), "train", size=(32, 32), cache=False)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    y = torch.stack([ds[i]["mask"] for i in range(len(ds))])
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        opt.step()
    return model.eval()
