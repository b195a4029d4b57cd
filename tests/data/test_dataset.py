"""SegDataset and build_loader on tiny prepared datasets written here (PNG files + manifest.csv)."""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imbaseg.data.dataset import SegDataset
from imbaseg.data.loader import build_loader
from imbaseg.errors import UserError
from imbaseg.paths import cache_dir_for

H, W = 48, 64
GEOMETRY = {"vflip_p": 1.0, "hflip_p": 1.0, "shift_scale_rotate_p": 1.0, "elastic_p": 1.0,
            "brightness_contrast_p": 0.0}


def _ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def make_prepared(root: Path, splits=("train",) * 6 + ("val",) * 2, sizes=None, fov=False, grey=False,
                  seed=0) -> Path:
    """Write a prepared dataset: noisy RGB (or grey) images, an ellipse mask per image, optional disk FOV."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks") + (("fov",) if fov else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for k, split in enumerate(splits):
        h, w = sizes[k] if sizes else (H, W)
        ry, rx = rng.uniform(0.08, 0.25) * h, rng.uniform(0.08, 0.25) * w
        mask = _ellipse(h, w, rng.uniform(ry, h - ry), rng.uniform(rx, w - rx), ry, rx)
        image = rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)
        item_id = f"img{k:02d}"
        Image.fromarray(image).save(root / "images" / f"{item_id}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{item_id}.png")
        if fov:
            disk = _ellipse(h, w, h / 2, w / 2, 0.45 * h, 0.45 * w)
            Image.fromarray(disk.astype(np.uint8) * 255).save(root / "fov" / f"{item_id}.png")
        rows.append([item_id, split, h, w, f"{mask.mean():.6f}", "test"])
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split", "height", "width", "fg_fraction", "source"])
        writer.writerows(rows)
    return root


def png(root: Path, folder: str, item_id: str) -> np.ndarray:
    return np.asarray(Image.open(root / folder / f"{item_id}.png"))


@pytest.fixture
def prepared(tmp_path):
    return make_prepared(tmp_path / "prep")


@pytest.fixture
def prepared_fov(tmp_path):
    return make_prepared(tmp_path / "prep-fov", fov=True)


# --- items -------------------------------------------------------------------------------------
def test_item_layout_and_zscore(prepared):
    ds = SegDataset(prepared, "train")
    assert len(ds) == 6 and ds.ids == [f"img{k:02d}" for k in range(6)] and not ds.has_fov
    item = ds[2]
    assert set(item) == {"image", "mask", "fov", "id", "index"}
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, H, W) and item["mask"].dtype == torch.float32
    assert torch.equal(item["fov"], torch.ones(1, H, W))
    assert item["id"] == "img02" and item["index"] == 2
    # numpy reference: z-score over all channels and pixels, population std
    x = png(prepared, "images", "img02").astype(np.float64).transpose(2, 0, 1) / 255.0
    ref = (x - x.mean()) / x.std()
    np.testing.assert_allclose(item["image"].numpy(), ref, atol=1e-5)
    assert abs(item["image"].mean().item()) < 1e-5
    assert item["image"].std(unbiased=False).item() == pytest.approx(1, abs=1e-4)
    np.testing.assert_array_equal(item["mask"][0].numpy(), png(prepared, "masks", "img02") > 127)


def test_zscore_of_a_constant_image_is_zero_not_nan():
    from imbaseg.data.dataset import zscore

    out = zscore(torch.full((3, 4, 5), 0.7))
    assert torch.equal(out, torch.zeros(3, 4, 5))


def test_zscore_holds_after_augmentation(prepared):
    ds = SegDataset(prepared, "train", augment={**GEOMETRY, "brightness_contrast_p": 1.0})
    for i in range(len(ds)):
        image = ds[i]["image"]
        assert abs(image.mean().item()) < 1e-5
        assert image.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
        assert set(ds[i]["mask"].unique().tolist()) <= {0.0, 1.0}


def test_fov_is_read_and_follows_flips(prepared_fov):
    ds = SegDataset(prepared_fov, "train")
    assert ds.has_fov
    fov = png(prepared_fov, "fov", "img00") > 127
    np.testing.assert_array_equal(ds[0]["fov"][0].numpy(), fov)
    flipped = SegDataset(prepared_fov, "train", augment={**{k: 0.0 for k in GEOMETRY}, "hflip_p": 1.0})
    item = flipped[0]
    np.testing.assert_array_equal(item["fov"][0].numpy(), fov[:, ::-1])
    np.testing.assert_array_equal(item["mask"][0].numpy(), png(prepared_fov, "masks", "img00")[:, ::-1] > 127)


def test_mask_stays_aligned_through_the_dataset(tmp_path):
    """Image painted white inside the mask, black outside: after p=1 geometry and z-score the
    positive pixels are the mask's, up to a 1-px edge band."""
    from scipy import ndimage

    root = make_prepared(tmp_path / "p", splits=("train",) * 3)
    for k in range(3):
        m = png(root, "masks", f"img{k:02d}") > 127
        Image.fromarray(np.where(m, 230, 40).astype(np.uint8)).save(root / "images" / f"img{k:02d}.png")
    ds = SegDataset(root, "train", augment=GEOMETRY, seed=4)
    for i in range(3):
        item = ds[i]
        x = item["image"][0].numpy()
        painted = x > 0.5 * (x.max() + x.min())
        m = item["mask"][0].numpy() > 0
        band = ndimage.binary_dilation(m) & ~ndimage.binary_erosion(m)
        assert m.any() and not ((painted ^ m) & ~band).any()


def test_grey_and_luminance_channels(tmp_path):
    grey_root = make_prepared(tmp_path / "grey", grey=True, splits=("train",) * 2)
    item = SegDataset(grey_root, "train", in_channels=3)[0]
    assert item["image"].shape == (3, H, W)
    assert torch.equal(item["image"][0], item["image"][1]) and torch.equal(item["image"][0], item["image"][2])
    rgb_root = make_prepared(tmp_path / "rgb", splits=("train",) * 2)
    ds = SegDataset(rgb_root, "train", in_channels=1)
    assert ds[1]["image"].shape == (1, H, W)
    # Pillow's "L" conversion is the independent reference (integer ITU-R 601: rounding may differ by 1)
    ref = np.asarray(Image.open(rgb_root / "images" / "img01.png").convert("L")).astype(int)
    assert np.abs(ds.raw(1)["image"][..., 0].astype(int) - ref).max() <= 1
    with pytest.raises(UserError, match="in_channels"):
        SegDataset(rgb_root, "train", in_channels=2)


def test_resize_at_load(prepared_fov):
    ds = SegDataset(prepared_fov, "train", size=(24, 32))
    item = ds[1]
    assert item["image"].shape == (3, 24, 32) and item["mask"].shape == (1, 24, 32)
    assert item["fov"].shape == (1, 24, 32)
    # nearest at pixel centres, halving: output pixel i samples input pixel floor((i + 0.5) * 2) = 2i + 1
    np.testing.assert_array_equal(ds.raw(1)["mask"], png(prepared_fov, "masks", "img01")[1::2, 1::2] > 127)
    np.testing.assert_array_equal(ds.raw(1)["fov"], png(prepared_fov, "fov", "img01")[1::2, 1::2] > 127)
    # the image is antialiased like Pillow's bilinear resize (independent implementation)
    ref = np.asarray(Image.open(prepared_fov / "images" / "img01.png").resize((32, 24), Image.BILINEAR))
    assert np.abs(ds.raw(1)["image"].astype(int) - ref.astype(int)).max() <= 2


# --- cache --------------------------------------------------------------------------------------
def _forbid_decoding(monkeypatch):
    from imbaseg.data import io

    def boom(*args, **kwargs):
        raise AssertionError("decoded a PNG although the cache is up to date")

    monkeypatch.setattr(io, "read_image", boom)
    monkeypatch.setattr(io, "read_mask", boom)
    monkeypatch.setattr(io, "read_array", boom)


def test_cache_is_built_once_and_memory_mapped(prepared_fov, monkeypatch):
    first = SegDataset(prepared_fov, "train", size=(24, 32))
    assert first.cache_path.parent == cache_dir_for(prepared_fov) == prepared_fov.parent / "cache/prep-fov"
    assert not (prepared_fov / "cache").exists()  # the prepared folder is only read
    arr = np.load(first.cache_path, mmap_mode="r")
    assert arr.shape == (6, 24, 32, 3 + 1 + 1) and arr.dtype == np.uint8  # RGB, mask, fov
    assert set(np.unique(arr[..., 3])) <= {0, 1}
    expected = [first[i] for i in range(len(first))]
    _forbid_decoding(monkeypatch)
    second = SegDataset(prepared_fov, "train", size=(24, 32))
    assert second.cache_path == first.cache_path
    assert isinstance(second.array(0), np.memmap)
    for i, ref in enumerate(expected):
        got = second[i]
        assert torch.equal(got["image"], ref["image"]) and torch.equal(got["fov"], ref["fov"])


def test_cache_per_split_size_and_channels(prepared, tmp_path):
    paths = {
        SegDataset(prepared, "train", cache_dir=tmp_path / "c").cache_path,
        SegDataset(prepared, "val", cache_dir=tmp_path / "c").cache_path,
        SegDataset(prepared, "train", size=(24, 32), cache_dir=tmp_path / "c").cache_path,
        SegDataset(prepared, "train", in_channels=1, cache_dir=tmp_path / "c").cache_path,
    }
    assert len(paths) == 4 and all(p.parent == tmp_path / "c" and p.is_file() for p in paths)
    assert not (prepared / "cache").exists()
    assert np.load(SegDataset(prepared, "val", cache_dir=tmp_path / "c").cache_path).shape == (2, H, W, 4)


def test_cache_is_rebuilt_when_a_file_changes(prepared):
    old = SegDataset(prepared, "train")
    old_path = old.cache_path
    new_image = np.zeros((H, W, 3), np.uint8)
    new_image[:, : W // 2] = 200
    Image.fromarray(new_image).save(prepared / "images" / "img03.png")
    st = os.stat(prepared / "images" / "img03.png")
    os.utime(prepared / "images" / "img03.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    new = SegDataset(prepared, "train")
    assert new.cache_path != old_path and not old_path.exists()
    np.testing.assert_array_equal(new.raw(3)["image"], new_image)
    # the other split's cache is untouched by this rebuild
    val = SegDataset(prepared, "val")
    assert val.cache_path.exists() and new.cache_path.exists()


def test_unreadable_png_leaves_no_cache_behind(prepared):
    path = prepared / "images" / "img04.png"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match="img04.png"):
        SegDataset(prepared, "train")
    cache = cache_dir_for(prepared)
    assert not list(cache.glob("*.npy")) and not list(cache.glob(".*.tmp"))
    assert len(SegDataset(prepared, "val")) == 2  # the other split is fine


def test_different_sizes_with_native_size(tmp_path, monkeypatch):
    sizes = [(48, 64), (40, 56), (64, 48), (48, 64)]
    root = make_prepared(tmp_path / "var", splits=("test",) * 4, sizes=sizes)
    ds = SegDataset(root, "test")
    assert ds.cache_path is None  # sizes differ: decoded per item
    for i, (h, w) in enumerate(sizes):
        item = ds[i]
        assert item["image"].shape == (3, h, w) and item["mask"].shape == (1, h, w)
        np.testing.assert_array_equal(item["mask"][0].numpy(), png(root, "masks", f"img{i:02d}") > 127)
    resized = SegDataset(root, "test", size=(32, 32))
    assert resized.cache_path is not None and resized[2]["image"].shape == (3, 32, 32)


def test_pickled_dataset_leaves_the_memory_map_behind(prepared):
    ds = SegDataset(prepared, "train", augment={}, seed=3)
    ds[0]  # opens the memory map
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # 6 images x 48x64x4 bytes = 73 kB would be there if the map were copied
    copy = pickle.loads(blob)
    a, b = ds[1], copy[1]
    assert torch.equal(a["image"], b["image"])  # same generator state travelled along


# --- patches --------------------------------------------------------------------------------------
def test_patches_have_the_right_size(prepared_fov):
    ds = SegDataset(prepared_fov, "train", patch_size=(16, 24), patches_per_image=3)
    assert len(ds) == 18
    for i in (0, 7, 17):
        item = ds[i]
        assert item["image"].shape == (3, 16, 24)
        assert item["mask"].shape == item["fov"].shape == (1, 16, 24)
        assert item["index"] == i % 6
    with pytest.raises(UserError, match="larger than the images"):
        SegDataset(prepared_fov, "train", patch_size=(64, 64))
    with pytest.raises(UserError, match="patch_size"):
        SegDataset(prepared_fov, "train", patch_size=(16, 0))


def test_patch_matches_the_source_window(prepared):
    """Each patch is a window of the cached image: find it by exhaustive search in the mask+image."""
    ds = SegDataset(prepared, "train", patch_size=(12, 12), patch_fg_p=0.5)
    item = ds[4]
    full = ds.raw(4)
    img = full["image"].astype(np.float64).transpose(2, 0, 1) / 255.0
    hits = []
    for top in range(H - 11):
        for left in range(W - 11):
            win = img[:, top:top + 12, left:left + 12]
            ref = (win - win.mean()) / win.std()
            if np.allclose(ref, item["image"].numpy(), atol=1e-4):
                hits.append((top, left))
    assert len(hits) == 1
    top, left = hits[0]
    np.testing.assert_array_equal(item["mask"][0].numpy(), full["mask"][top:top + 12, left:left + 12])


def test_foreground_bias(tmp_path):
    """Masks are ellipses of 8-25% of each side: a uniform 8x8 patch misses them often,
    a fully biased one never does."""
    root = make_prepared(tmp_path / "p", splits=("train",) * 6, seed=1)
    biased = SegDataset(root, "train", patch_size=(8, 8), patch_fg_p=1.0, patches_per_image=20, seed=0)
    assert all(biased[i]["mask"].sum() > 0 for i in range(len(biased)))
    uniform = SegDataset(root, "train", patch_size=(8, 8), patch_fg_p=0.0, patches_per_image=20, seed=0)
    hit_rate = np.mean([uniform[i]["mask"].sum().item() > 0 for i in range(len(uniform))])
    assert hit_rate < 0.6
    with pytest.raises(UserError, match="patch_fg_p"):
        SegDataset(root, "train", patch_size=(8, 8), patch_fg_p=1.5)


# --- errors ---------------------------------------------------------------------------------------
def test_bad_split_lists_the_available_ones(prepared):
    with pytest.raises(UserError) as err:
        SegDataset(prepared, "trian")
    for words in ("'trian'", "train, val", "Did you mean 'train'"):
        assert words in str(err.value)


def test_bad_augment_key_and_missing_manifest(prepared, tmp_path):
    with pytest.raises(UserError, match="Did you mean 'elastic_p'"):
        SegDataset(prepared, "train", augment={"elastik_p": 0.5})
    with pytest.raises(UserError, match="imbaseg prepare"):
        SegDataset(tmp_path / "nothing-here", "train")
    with pytest.raises(UserError, match="size"):
        SegDataset(prepared, "train", size=(32,))


def test_missing_fov_file_is_reported(prepared_fov):
    (prepared_fov / "fov" / "img04.png").unlink()
    with pytest.raises(UserError, match="img04.png"):
        SegDataset(prepared_fov, "train")


# --- distance maps ----------------------------------------------------------------------------------
def test_distance_maps_are_the_losses_maps_of_the_augmented_mask(prepared):
    from imbaseg.losses import DISTANCE_KEYS, distance_maps

    ds = SegDataset(prepared, "train", augment=GEOMETRY, patch_size=(32, 40), distance_keys=DISTANCE_KEYS,
                    seed=2)
    for i in range(3):
        item = ds[i]
        ref = distance_maps(item["mask"][0].numpy() > 0, DISTANCE_KEYS)
        for key in DISTANCE_KEYS:
            assert item[key].shape == (1, 32, 40) and item[key].dtype == torch.float32
            np.testing.assert_array_equal(item[key][0].numpy(), ref[key])
        # and not the maps of the unaugmented mask
        plain = distance_maps(png(prepared, "masks", ds.ids[i])[:32, :40] > 127, DISTANCE_KEYS)
        assert not np.array_equal(plain["sdf"], item["sdf"][0].numpy())


def test_distance_maps_through_the_loader(prepared):
    ds = SegDataset(prepared, "train", augment=GEOMETRY, distance_keys=("dist_fg",))
    batch = next(iter(build_loader(ds, batch_size=4, shuffle=True, num_workers=0, seed=0)))
    assert batch["dist_fg"].shape == (4, 1, H, W)
    assert torch.equal(batch["dist_fg"][batch["mask"] > 0], torch.zeros(int(batch["mask"].sum())))  # 0 on fg


def test_unknown_distance_key(prepared):
    with pytest.raises(UserError, match="Did you mean 'sdf'"):
        SegDataset(prepared, "train", distance_keys=("sdff",))
    with pytest.raises(UserError, match="clashes"):
        SegDataset(prepared, "train", distance_keys=("mask",))


# --- loader -------------------------------------------------------------------------------------------
def _first_batch(ds, seed, workers=0):
    loader = build_loader(ds, batch_size=3, shuffle=True, num_workers=workers, seed=seed)
    return next(iter(loader))


def test_loader_is_deterministic_for_a_seed(prepared):
    ds = SegDataset(prepared, "train", augment=GEOMETRY, patch_size=(24, 24))
    a, b = _first_batch(ds, 7), _first_batch(ds, 7)
    assert a["id"] == b["id"] and torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    c = _first_batch(ds, 8)
    assert not torch.equal(a["image"], c["image"])
    loader = build_loader(ds, batch_size=6, shuffle=True, num_workers=0, seed=7)
    epoch1, epoch2 = next(iter(loader)), next(iter(loader))
    assert not torch.equal(epoch1["image"], epoch2["image"])  # a new epoch draws new augmentations


def test_loader_with_two_workers(prepared):
    ds = SegDataset(prepared, "train", augment=GEOMETRY)
    loader = build_loader(ds, batch_size=2, shuffle=True, num_workers=2, seed=5)
    assert loader.persistent_workers and loader.pin_memory == torch.cuda.is_available()
    batches = list(loader)
    ids = [i for b in batches for i in b["id"]]
    assert sorted(ids) == ds.ids
    assert batches[0]["image"].shape == (2, 3, H, W) and batches[0]["index"].dtype == torch.int64
    again = list(build_loader(ds, batch_size=2, shuffle=True, num_workers=2, seed=5))
    for x, y in zip(batches, again, strict=True):
        assert x["id"] == y["id"] and torch.equal(x["image"], y["image"])
    # workers draw different augmentations from each other (reseeded from their own torch seed)
    flat = torch.cat([b["image"] for b in batches])
    assert len({tuple(flat[i].flatten()[:50].tolist()) for i in range(len(flat))}) == len(flat)


def test_loader_options():
    ds = list(range(10))
    loader = build_loader(ds, batch_size=4, shuffle=False, num_workers=0, seed=0, drop_last=True,
                          pin_memory=False)
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert not loader.persistent_workers and loader.prefetch_factor is None
    with pytest.raises(UserError, match="batch_size"):
        build_loader(ds, batch_size=0, shuffle=False, num_workers=0, seed=0)


def test_distributed_sampler(prepared, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ds = SegDataset(prepared, "train")
        loader = build_loader(ds, batch_size=6, shuffle=True, num_workers=0, seed=3, distributed=True)
        assert isinstance(loader.sampler, torch.utils.data.distributed.DistributedSampler)
        orders = []
        for epoch in (0, 1, 0):
            loader.sampler.set_epoch(epoch)
            orders.append(next(iter(loader))["id"])
        assert orders[0] == orders[2] and orders[0] != orders[1] and sorted(orders[0]) == ds.ids
    finally:
        dist.destroy_process_group()
