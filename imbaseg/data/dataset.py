"""``SegDataset``: the torch Dataset over the prepared format (images/, masks/, fov/, manifest.csv).

Reads nothing else: ``imbaseg prepare`` has already checked and binarised every pair.

Cache: the first dataset of a split decodes its PNGs once, at the training size, into ONE uint8
``.npy`` of shape (N, H, W, C + 1 [+ 1]): C image channels, then the mask (0/1), then the FOV (0/1)
when the dataset has one. It lives in ``cache_dir``, by default ``data/cache/<name>/`` next to
``data/prepared/<name>/`` (``paths.cache_dir_for``), never inside the prepared folder, so a prepared
dataset on a read-only share trains fine; a cache left inside it by older versions is moved out (or
deleted). It is written atomically (temp file + ``os.replace``, under a file lock so that DDP ranks
build it once), with its full size reserved first (a memory map on a full disk would die of SIGBUS;
a full disk is one ``UserError`` with the size needed), and temp files of killed builders are removed
at the next build. Its name carries a fingerprint of the manifest, the files' sizes and mtimes, the
size and the channel count; a changed file gives a new fingerprint, a rebuild and the removal of the
stale file. Every process (DataLoader
workers included) opens it with ``np.load(mmap_mode="r")``, so an epoch never decodes a PNG and the
pages are shared through the OS cache. With ``size=None`` and images of different sizes (ISIC at
native resolution, for evaluation) nothing is cached: each item is decoded on access.

Item pipeline: cached uint8 -> optional random patch -> joint augmentation -> per-image z-score
-> distance maps of the augmented mask (when a loss asks for them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from imbaseg.data.manifest import MANIFEST, read_manifest
from imbaseg.data.resize import resize_image_antialiased, resize_mask_nearest
from imbaseg.data.splits import SPLITS
from imbaseg.errors import UserError
from imbaseg.locks import waiting_lock
from imbaseg.paths import atomic_path, cache_dir_for, remove_stale_temps, reserve, safe_name, write_error

# bump when the cache layout or the decoding changes (2: the resize moved to imbaseg.data.resize, whose
# float32 antialiased bilinear differs by at most 1 grey level from torchvision's uint8 path used before)
CACHE_VERSION = 2
STD_FLOOR = 1e-6  # z-score: a constant image becomes zeros instead of NaN
FG_PATCH_P = 0.5  # default probability that a random patch is centred on a foreground pixel


def zscore(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) float -> (image - mean) / max(std, 1e-6), mean and std over all channels and pixels."""
    std = image.std(unbiased=False).clamp_min(STD_FLOOR)
    return (image - image.mean()).div_(std)


def to_channels(image: np.ndarray, in_channels: int) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) -> (H, W, in_channels): 3 replicates grey, 1 takes the luminance.

    Luminance uses ITU-R 601 weights (0.299 R + 0.587 G + 0.114 B), as Pillow's "L" conversion.
    """
    if image.ndim == 2:
        image = image[..., None]
    image = image[..., :3] if image.shape[-1] >= 3 else image[..., :1]
    if in_channels == 3:
        return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    if image.shape[-1] == 1:
        return image
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None]


def decode_item(prepared_dir: Path, item_id: str, in_channels: int, with_fov: bool, size=None) -> np.ndarray:
    """Decode one prepared pair: uint8 (H, W, C + 1 [+ 1]) = image channels, mask 0/1, FOV 0/1."""
    from imbaseg.data import io

    image = to_channels(io.read_image(prepared_dir / "images" / f"{item_id}.png"), in_channels)
    planes = [io.read_mask(prepared_dir / "masks" / f"{item_id}.png")]
    if with_fov:
        planes.append(io.read_mask(prepared_dir / "fov" / f"{item_id}.png"))
    for name, plane in zip(("mask", "fov")[: len(planes)], planes, strict=True):
        if plane.shape != image.shape[:2]:
            raise UserError(
                f"{name} of '{item_id}' in '{prepared_dir}' is {plane.shape[1]}x{plane.shape[0]} "
                f"but its image is {image.shape[1]}x{image.shape[0]}; rerun `imbaseg prepare --force`."
            )
    if size is not None:
        image = resize_image_antialiased(image, size)
        planes = [resize_mask_nearest(p, size) for p in planes]
    planes = [(p > 127).astype(np.uint8)[..., None] for p in planes]
    return np.concatenate([image, *planes], axis=-1)


def _stat_key(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path.name}:missing"
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def cache_fingerprint(prepared_dir: Path, ids: Sequence[str], split: str, size, in_channels: int,
                      with_fov: bool) -> str:
    """sha256 (16 hex) of the manifest, every file's size and mtime, the size and the channel layout."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{split}|{size}|{in_channels}|{with_fov}\n".encode())
    h.update((prepared_dir / MANIFEST).read_bytes())
    folders = ("images", "masks", "fov") if with_fov else ("images", "masks")
    for item_id in ids:
        for folder in folders:
            h.update(_stat_key(prepared_dir / folder / f"{item_id}.png").encode())
    return h.hexdigest()[:16]


def build_cache(path: Path, prepared_dir: Path, ids: Sequence[str], shape: tuple[int, ...], in_channels: int,
                with_fov: bool, size) -> None:
    """Decode every item of ``ids`` into a uint8 .npy of ``shape`` at ``path``, written atomically.

    The file's full size is reserved before the first write: a full disk fails here, as a
    ``UserError`` naming the size needed, and never as a SIGBUS in the middle of the memory map.
    """
    with atomic_path(path, need=int(np.prod(shape))) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        with open(tmp, "rb+") as f:
            reserve(f.fileno(), os.fstat(f.fileno()).st_size)
        for i, item_id in enumerate(ids):
            item = decode_item(prepared_dir, item_id, in_channels, with_fov, size)
            if item.shape != shape[1:]:
                raise UserError(
                    f"image '{item_id}' in '{prepared_dir}' is {item.shape[1]}x{item.shape[0]}, not the "
                    f"{shape[2]}x{shape[1]} of the manifest; rerun `imbaseg prepare --force`."
                )
            arr[i] = item
        arr.flush()
        del arr


def _move_old_cache(prepared_dir: Path, folder: Path) -> None:
    """Move the caches that older versions kept in ``<prepared_dir>/cache/`` to ``folder`` (a rename; a
    file on another file system is dropped and rebuilt), then delete that folder. Nothing happens on a
    read-only share: the old folder is simply not used any more."""
    old = prepared_dir / "cache"
    if not old.is_dir() or old.resolve() == folder.resolve():
        return
    for f in old.glob("*.npy"):
        if not (folder / f.name).exists():
            with contextlib.suppress(OSError):
                os.replace(f, folder / f.name)
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale(path: Path) -> None:
    """Delete older caches of the same split/size/channels (their fingerprint differs)."""
    prefix = path.name.rsplit("_", 1)[0] + "_"
    for old in path.parent.glob(prefix + "*.npy"):
        if old != path and len(old.name) == len(path.name):
            old.unlink(missing_ok=True)


def random_patch(item: np.ndarray, patch: tuple[int, int], mask_channel: int, rng: np.random.Generator,
                 fg_p: float) -> np.ndarray:
    """A (ph, pw, K) window of the (H, W, K) ``item``.

    With probability ``fg_p`` the window contains a foreground pixel chosen uniformly among the
    mask's foreground pixels (at a uniform position inside the window); otherwise, or when the mask
    is empty, the window is uniform over the image. Foreground-biased patches matter for thin
    structures: a uniform 96x96 DRIVE patch often holds a few vessel pixels or lies outside the FOV.
    """
    (h, w), (ph, pw) = item.shape[:2], patch
    if ph > h or pw > w:
        raise UserError(f"patch_size {ph}x{pw} is larger than an image of {h}x{w}; choose a smaller patch.")
    if rng.random() < fg_p:
        ys, xs = np.nonzero(item[..., mask_channel])
        if len(ys):
            k = rng.integers(len(ys))
            top = rng.integers(max(0, ys[k] - ph + 1), min(ys[k], h - ph) + 1)
            left = rng.integers(max(0, xs[k] - pw + 1), min(xs[k], w - pw) + 1)
            return item[top:top + ph, left:left + pw]
    top, left = rng.integers(h - ph + 1), rng.integers(w - pw + 1)
    return item[top:top + ph, left:left + pw]


def _pair(value, name: str) -> tuple[int, int] | None:
    """None or (H, W) of positive ints from an int or a pair; UserError otherwise."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be two positive integers (height, width), got {value!r}.") from None
    if h < 1 or w < 1 or len(tuple(value)) != 2:
        raise UserError(f"{name} must be two positive integers (height, width), got {value!r}.")
    return h, w


class SegDataset(torch.utils.data.Dataset):
    """One split of a prepared dataset.

    Items: ``image`` float32 (C, H, W), z-scored per image; ``mask`` float32 (1, H, W) in {0, 1};
    ``fov`` float32 (1, H, W) in {0, 1} (ones when the dataset has no FOV); ``id`` str; ``index`` int
    (position in ``ids``); one tensor per ``distance_keys`` entry, computed by
    ``imbaseg.losses.distance_maps`` on the augmented (and cropped) mask: float32 (1, H, W) maps, and
    int64 (1, 3) for ``boundary_counts`` (the losses ask for what they need via ``distance_inputs``).

    size: (H, W) to resize to at cache time, None for the native size. augment: None (off), an
    ``AugmentConfig``, a dict of its keys, or a callable ``(image, mask, fov, seed=) -> (image, mask, fov)``.
    patch_size: (h, w) random crop per item (``patch_fg_p`` of them contain foreground); the caller
    passes None for validation and test. patches_per_image: length multiplier when cropping, so that
    an epoch of a 16-image dataset can hold 16 * k patches. seed: seeds the per-item random draws in
    the main process; DataLoader workers are reseeded by ``imbaseg.data.loader`` (see ``reseed``).
    cache: False decodes every item on access (benchmarks, debugging).
    """

    def __init__(self, prepared_dir, split: str, size=None, augment=None, patch_size=None, distance_keys=(),
                 cache_dir=None, in_channels: int = 3, seed: int = 0, *, patch_fg_p: float = FG_PATCH_P,
                 patches_per_image: int = 1, cache: bool = True):
        self.prepared_dir = Path(prepared_dir)
        self.split = split
        rows = self._split_rows(split)
        self.ids = [r["id"] for r in rows]
        if in_channels not in (1, 3):
            raise UserError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels!r}.")
        self.in_channels = in_channels
        self.size = _pair(size, "size")
        self.patch_size = _pair(patch_size, "patch_size")
        if not 0.0 <= float(patch_fg_p) <= 1.0:
            raise UserError(f"patch_fg_p is a probability and must lie in [0, 1], got {patch_fg_p}.")
        if int(patches_per_image) < 1:
            raise UserError(f"patches_per_image must be >= 1, got {patches_per_image}.")
        self.patch_fg_p, self.patches_per_image = float(patch_fg_p), int(patches_per_image)
        self.has_fov = self._find_fov()
        self.augment = _make_augment(augment)
        self.distance_keys = _check_distance_keys(distance_keys)
        self.seed = int(seed)
        self._gen = torch.Generator().manual_seed(self.seed)
        self._shape = self._item_shape(rows)
        self._check_patch()
        self.cache_path = self._prepare_cache(cache_dir) if cache and self._shape else None
        self._arr = None

    # --- construction -------------------------------------------------------------------------
    def _split_rows(self, split: str) -> list[dict]:
        """The manifest rows of ``split`` (``read_manifest``'s checked, typed values), in file order."""
        df = read_manifest(self.prepared_dir)
        chosen = df[df["split"] == split]
        if not len(chosen):
            from imbaseg.errors import suggestion

            splits = [s for s in SPLITS if s in set(df["split"])]
            raise UserError(
                f"split '{split}' is not in '{self.prepared_dir / MANIFEST}'."
                f"{suggestion(split, splits)} "
                f"Available splits: {', '.join(splits) or 'none (empty manifest)'}."
            )
        return chosen.to_dict("records")

    def _find_fov(self) -> bool:
        folder = self.prepared_dir / "fov"
        if not folder.is_dir() or not any(folder.iterdir()):
            return False
        missing = [i for i in self.ids if not (folder / f"{i}.png").is_file()]
        if missing:
            raise UserError(
                f"'{folder}' lacks the FOV of {len(missing)} image(s) (e.g. {missing[0]}.png); "
                "rerun `imbaseg prepare --force`."
            )
        return True

    @property
    def channels(self) -> int:
        """Planes per cached item: image channels, mask, FOV (if any)."""
        return self.in_channels + 1 + int(self.has_fov)

    def _item_shape(self, rows) -> tuple[int, int, int] | None:
        """(H, W, planes) shared by every item, or None when native sizes differ."""
        if self.size is not None:
            return (*self.size, self.channels)
        sizes = {(int(r["height"]), int(r["width"])) for r in rows}
        return (*sizes.pop(), self.channels) if len(sizes) == 1 else None

    def _check_patch(self) -> None:
        if self.patch_size is None or self._shape is None:
            return
        if self.patch_size[0] > self._shape[0] or self.patch_size[1] > self._shape[1]:
            raise UserError(
                f"patch_size {self.patch_size[0]}x{self.patch_size[1]} is larger than the images "
                f"({self._shape[0]}x{self._shape[1]}); choose a smaller patch or a larger size."
            )

    def _prepare_cache(self, cache_dir) -> Path:
        """Path of the up-to-date cache, built (once, under a lock) when missing or stale."""
        folder = Path(cache_dir) if cache_dir is not None else cache_dir_for(self.prepared_dir)
        h, w, k = self._shape
        fp = cache_fingerprint(self.prepared_dir, self.ids, self.split, (h, w), self.in_channels,
                               self.has_fov)
        fov = "fov" if self.has_fov else "nofov"
        path = folder / f"{safe_name(self.split)}_{h}x{w}_c{self.in_channels}_{fov}_{fp}.npy"
        if not folder.is_dir():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a read-only project: one line, never a traceback
                raise write_error(folder, e) from e
        _move_old_cache(self.prepared_dir, folder)
        if path.is_file():
            return path
        with waiting_lock(folder / f".{safe_name(self.split)}.lock"):
            if not path.is_file():  # another process may have built it while we waited
                remove_stale_temps(folder)  # e.g. .train_...npy.<pid>.tmp of a killed build
                build_cache(path, self.prepared_dir, self.ids, (len(self.ids), h, w, k), self.in_channels,
                            self.has_fov, self.size)
                _remove_stale(path)
        return path

    # --- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids) * (self.patches_per_image if self.patch_size else 1)

    def reseed(self, seed: int) -> None:
        """Restart the per-item random draws from ``seed`` (called in each DataLoader worker)."""
        self._gen.manual_seed(int(seed) % 2**63)

    def array(self, i: int) -> np.ndarray:
        """uint8 (H, W, planes) of image ``i``: a read-only view of the cache, or a fresh decode."""
        if self.cache_path is None:
            return decode_item(self.prepared_dir, self.ids[i], self.in_channels, self.has_fov, self.size)
        if self._arr is None:
            self._arr = np.load(self.cache_path, mmap_mode="r")
        return self._arr[i]

    def raw(self, i: int) -> dict[str, np.ndarray]:
        """Image ``i`` at the dataset size, unaugmented: image uint8 (H, W, C), mask and fov bool (H, W)."""
        a, c = self.array(i), self.in_channels
        fov = a[..., c + 1] > 0 if self.has_fov else np.ones(a.shape[:2], bool)
        return {"image": np.array(a[..., :c]), "mask": a[..., c] > 0, "fov": fov}

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        i = (index % len(self)) % len(self.ids)
        item = self.array(i)
        needs_rng = self.patch_size is not None or self.augment is not None
        seed = int(torch.randint(0, 2**62, (1,), generator=self._gen)) if needs_rng else None
        if self.patch_size is not None:
            rng = np.random.default_rng(seed)
            item = random_patch(item, self.patch_size, self.in_channels, rng, self.patch_fg_p)
        item = torch.from_numpy(np.array(item)).permute(2, 0, 1)  # a writable copy of the read-only map
        c = self.in_channels
        image, mask = item[:c].float().div_(255.0), item[c:c + 1]
        fov = item[c + 1:c + 2] if self.has_fov else None
        if self.augment is not None:
            image, mask, fov = self.augment(image, mask, fov, seed=seed)
        out = {
            "image": zscore(image),
            "mask": mask.float(),
            "fov": fov.float() if fov is not None else torch.ones(mask.shape, dtype=torch.float32),
            "id": self.ids[i],
            "index": i,
        }
        if self.distance_keys:
            out.update(_distance_tensors(mask[0].numpy() > 0, self.distance_keys))
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_arr"] = None  # never pickle the memory map (it would copy the data); reopen per process
        state["_gen"] = self._gen.get_state()
        return state

    def __setstate__(self, state):
        gen_state = state.pop("_gen")
        self.__dict__.update(state)
        self._gen = torch.Generator()
        self._gen.set_state(gen_state)

    def __repr__(self) -> str:
        size = f"{self._shape[0]}x{self._shape[1]}" if self._shape else "native"
        return (f"SegDataset('{self.prepared_dir}', split='{self.split}', n={len(self.ids)}, size={size}, "
                f"channels={self.in_channels}, fov={self.has_fov}, cached={self.cache_path is not None})")


def _make_augment(augment):
    """None, or a callable (image, mask, fov, seed=) from a config, a dict or a callable."""
    if augment is None or augment is False:
        return None
    if callable(augment):
        return augment
    from imbaseg.data.transforms import AugmentConfig, build_augment

    if augment is True:
        augment = AugmentConfig()
    if not isinstance(augment, (AugmentConfig, Mapping)):
        raise UserError(f"augment must be a mapping of augmentation options or None, got {augment!r}.")
    built = build_augment(augment)
    return built if built.cfg.enabled else None


def _check_distance_keys(keys) -> tuple[str, ...]:
    """The requested distance-map keys as a tuple, checked by the losses' own function."""
    if isinstance(keys, str):
        keys = (keys,)
    keys = tuple(keys or ())
    clash = [k for k in keys if k in ("image", "mask", "fov", "id", "index")]
    if clash:
        raise UserError(f"distance key '{clash[0]}' clashes with an item field; rename it.")
    if keys:
        _distance_tensors(np.zeros((4, 4), dtype=bool), keys)  # unknown keys fail now, not in a worker
    return keys


def _distance_tensors(mask: np.ndarray, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """{key: (1, ...)} from ``imbaseg.losses.distance_maps`` on a bool (H, W) mask, in its dtypes."""
    from imbaseg.losses import distance_maps

    maps = distance_maps(mask, keys)  # float32 maps, int64 counts
    return {k: torch.from_numpy(np.ascontiguousarray(maps[k]))[None] for k in keys}
