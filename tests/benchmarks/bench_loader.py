"""Training-loader throughput on the CVC-ClinicDB sample at 288x384: the cached loader against
decoding the original TIFFs for every item.

Both sides run the same DataLoader (``build_loader``: same batch size, workers and seed) and the
same per-item work after decoding: resize to 288x384, the study's augmentation (p=0.15 each),
per-image z-score. The only difference is where the pixels come from:

- ``cached``: ``SegDataset`` over the prepared folder; the uint8 memory map built once.
- ``png``: ``SegDataset(cache=False)``: the prepared PNGs decoded for every item.
- ``tiff``: the original ``Original/N.tif`` and ``Ground Truth/N.tif`` read with tifffile each time.

Run: ``python tests/benchmarks/bench_loader.py [--quick] [--workers 0,2] [--data PATH]``.
Prints images/s per row and the ratio to the TIFF row with the same workers and augmentation.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
CVC = REPO / ".." / "shared" / "data" / "samples" / "CVC-ClinicDB"
SIZE = (288, 384)


class TiffDataset(torch.utils.data.Dataset):
    """The no-cache reference: tifffile read + resize + augmentation + z-score for every item."""

    def __init__(self, cvc_root: Path, ids: list[str], augment):
        self.root, self.ids, self.augment = Path(cvc_root), list(ids), augment
        self._gen = torch.Generator().manual_seed(0)

    def reseed(self, seed: int) -> None:
        self._gen.manual_seed(int(seed) % 2**63)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        import tifffile

        from imbaseg.data.dataset import zscore
        from imbaseg.data.resize import resize_image_antialiased, resize_mask_nearest

        image = tifffile.imread(self.root / "Original" / f"{self.ids[i]}.tif")
        mask = tifffile.imread(self.root / "Ground Truth" / f"{self.ids[i]}.tif")
        mask = mask[..., 0] if mask.ndim == 3 else mask
        image = resize_image_antialiased(image, SIZE)
        mask = (resize_mask_nearest(mask, SIZE) > 127).astype(np.uint8)
        image = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0)
        mask = torch.from_numpy(mask)[None]
        if self.augment is not None:
            seed = int(torch.randint(0, 2**62, (1,), generator=self._gen))
            image, mask, _ = self.augment(image, mask, None, seed=seed)
        return {"image": zscore(image), "mask": mask.float(), "fov": torch.ones(mask.shape),
                "id": self.ids[i], "index": i}


def prepare_cvc(cvc: Path, tmp: Path) -> Path:
    """The prepared CVC sample: through ``prepare_dataset`` when it works, else written here."""
    try:
        from imbaseg.data.prepare import prepare_dataset

        return Path(prepare_dataset("cvc", root=tmp, source=cvc))
    except Exception as e:  # the benchmark must run even if prepare changes; say so
        print(f"prepare_dataset failed ({type(e).__name__}: {e}); writing the prepared format directly")
    import csv

    import tifffile
    from PIL import Image

    out = tmp / "cvc-direct"
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    rows = []
    for path in sorted((cvc / "Original").glob("*.tif")):
        image = tifffile.imread(path)
        mask = tifffile.imread(cvc / "Ground Truth" / path.name)
        mask = (mask[..., 0] if mask.ndim == 3 else mask) > 127
        Image.fromarray(image).save(out / "images" / f"{path.stem}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{path.stem}.png")
        rows.append([path.stem, "train", *image.shape[:2], f"{mask.mean():.6f}", path.name])
    with open(out / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "split", "height", "width", "fg_fraction", "source"], *rows])
    return out


def images_per_second(dataset, workers: int, batch_size: int, epochs: int) -> float:
    """Items/s over ``epochs`` epochs after one warm-up epoch (worker start, imports, page cache)."""
    from imbaseg.data.loader import build_loader

    loader = build_loader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, seed=0,
                          pin_memory=False)
    for _ in loader:
        pass
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += batch["image"].shape[0]
    rate = n / (time.perf_counter() - start)
    del loader  # stops persistent workers before the next row starts its own
    return rate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs (a smoke run)")
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data", type=Path, default=CVC, help="CVC folder (Original/, Ground Truth/)")
    args = parser.parse_args(argv)
    if not (args.data / "Original").is_dir():
        print(f"skipped: CVC-ClinicDB sample not found at {args.data.resolve()}")
        return
    torch.set_num_threads(1)  # per-item work is single-threaded in workers; keep the main process alike
    from imbaseg.data.dataset import SegDataset
    from imbaseg.data.splits import natural_key
    from imbaseg.data.transforms import build_augment

    tmp = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        prepared = prepare_cvc(args.data, tmp)
        ids = sorted((p.stem for p in (args.data / "Original").glob("*.tif")), key=natural_key)
        split = "train"  # every image in one split (the manifest reader accepts train/val/test only)
        _write_single_split(prepared, ids, split)
        start = time.perf_counter()
        cache = SegDataset(prepared, split, size=SIZE).cache_path
        print(f"CVC sample: {len(ids)} images at {SIZE[0]}x{SIZE[1]}; cache built in "
              f"{time.perf_counter() - start:.2f} s ({cache.stat().st_size / 1e6:.1f} MB)")
        epochs = 3 if args.quick else 15
        print(f"{epochs} timed epochs of {len(ids)} images, batch {args.batch_size}; 2-core CPU, shared\n")
        print(f"{'augment':<8} {'workers':>7} {'source':<7} {'images/s':>9} {'x tiff':>7}")
        for aug_name, cfg in (("study", {}), ("none", None)):
            for workers in (int(w) for w in args.workers.split(",")):
                rows = {
                    "cached": SegDataset(prepared, split, size=SIZE, augment=cfg),
                    "png": SegDataset(prepared, split, size=SIZE, augment=cfg, cache=False),
                    "tiff": TiffDataset(args.data, ids, None if cfg is None else build_augment(cfg)),
                }
                rates = {k: images_per_second(ds, workers, args.batch_size, epochs) for k, ds in rows.items()}
                for k, rate in rates.items():
                    print(f"{aug_name:<8} {workers:>7} {k:<7} {rate:>9.1f} {rate / rates['tiff']:>7.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_single_split(prepared: Path, ids: list[str], split: str) -> None:
    """Rewrite the manifest of the (temporary) prepared copy so that one split holds all images."""
    import csv

    with open(prepared / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["split"] = split
    with open(prepared / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
