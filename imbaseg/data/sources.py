"""The dataset registry: name -> layout reader, official archives, split rule and how to get the data.

``DATASETS`` is a plain dict of ``DatasetSource``; ``get_source(name)`` resolves aliases and suggests
the closest name. Layout readers (``find_*``) walk a folder (symlinks followed, 3 levels deep) and
return a ``Layout``: the image/mask/fov pairs with their official split, orphan masks and notes.
They only list files; prepare.py reads and checks them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imbaseg.data.io import is_image_file
from imbaseg.data.splits import natural_key
from imbaseg.errors import UserError, lookup
from imbaseg.paths import DATASET_ALIASES

MAX_DEPTH = 3  # how deep a layout may sit under the given folder (archives add a level or two)
ISIC_OFFICIAL_URL = "https://isic-challenge-data.s3.amazonaws.com/2018/"
ISIC_URL_ENV = "IMBASEG_ISIC_URL"


@dataclass(frozen=True)
class Pair:
    """One sample as found on disk; ``mask`` None means missing; ``split`` is the official one or None."""

    id: str
    image: Path
    mask: Path | None
    fov: Path | None = None
    split: str | None = None
    needs_fov: bool = False


@dataclass
class Layout:
    root: Path
    pairs: list[Pair]
    orphans: list[Path] = field(default_factory=list)  # masks with no image
    notes: list[str] = field(default_factory=list)  # things left out on purpose, said once


@dataclass(frozen=True)
class Archive:
    """One published archive: file name, the folder it unpacks to, image count and suffix inside."""

    file: str
    folder: str
    count: int
    suffix: str
    split: str


@dataclass(frozen=True)
class DatasetSource:
    name: str
    title: str
    kind: str  # "download" (public URLs), "registration", "folder" (user data) or "synthetic"
    homepage: str = ""
    how_to_get: str = ""
    find: Callable[..., Layout] | None = None
    split_rule: str = "random"  # see prepare.assign_splits
    archives: tuple[Archive, ...] = ()
    max_side: int | None = 1024  # longest side after prepare; larger images are downscaled
    options: tuple[str, ...] = ()  # extra prepare options this dataset accepts


# --- helpers -------------------------------------------------------------------------------------


def _walk_dirs(root: Path, max_depth: int = MAX_DEPTH):
    """Yield ``root`` and its sub-folders up to ``max_depth`` levels, symlinks followed, hidden skipped."""
    frontier = [root]
    for _depth in range(max_depth + 1):
        nxt = []
        for d in sorted(frontier):
            yield d
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            nxt += [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith((".", "__MACOSX"))]
        frontier = nxt


def _children(d: Path) -> dict[str, Path]:
    """Lower-cased child name -> path."""
    try:
        return {e.name.lower(): Path(e.path) for e in os.scandir(d)}
    except OSError:
        return {}


def _images_in(d: Path) -> list[Path]:
    try:
        files = [Path(e.path) for e in os.scandir(d) if e.is_file() and is_image_file(e.name)]
    except OSError:
        return []
    return sorted(files, key=lambda p: natural_key(p.name))


def _by_stem(files: list[Path], where: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise UserError(
                f"two files share the name '{f.stem}' in '{where}': '{out[f.stem].name}' and '{f.name}'; "
                "keep one of them."
            )
        out[f.stem] = f
    return out


def _describe(root: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in _children(root).values())
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"found: {shown}" if names else "the folder is empty"


def unknown_layout(dataset: str, root: Path, expected: str) -> UserError:
    return UserError(f"no {dataset} layout in '{root}': expected {expected}; {_describe(root)}.")


def _match(images: list[Path], masks: list[Path], where: Path, suffixes=("",)) -> tuple[dict, list[Path]]:
    """Image stem -> mask path (a mask named stem + one of ``suffixes``), and the unmatched masks."""
    by_stem = _by_stem(masks, where)
    found, used = {}, set()
    for img in images:
        for suf in suffixes:
            m = by_stem.get(img.stem + suf)
            if m is not None:
                found[img.stem] = m
                used.add(m)
                break
    return found, [m for m in masks if m not in used]


# --- CVC-ClinicDB -------------------------------------------------------------------------------

_GT_NAMES = ("ground truth", "groundtruth", "ground_truth", "ground-truth", "gt", "masks")


def _cvc_candidates(root: Path) -> list[tuple[Path, Path]]:
    out = []
    for d in _walk_dirs(root):
        kids = _children(d)
        gt = next((kids[n] for n in _GT_NAMES if n in kids and kids[n].is_dir()), None)
        orig = kids.get("original")
        if gt is not None and orig is not None and orig.is_dir() and _images_in(orig):
            out.append((orig, gt))
    return out


def find_cvc(root: Path, **_options) -> Layout:
    """``Original/N.tif`` + ``Ground Truth/N.tif`` (or the PNG variant); TIFF preferred when both exist."""
    candidates = _cvc_candidates(root)
    if not candidates:
        raise unknown_layout(
            "CVC-ClinicDB", root, "'Original/N.tif' and 'Ground Truth/N.tif' (or .png) up to 3 folders deep"
        )

    def rank(c):
        tif = any(p.suffix.lower() in (".tif", ".tiff") for p in _images_in(c[0]))
        return (not tif, len(c[0].parts))

    orig, gt = sorted(candidates, key=rank)[0]
    images, masks = _images_in(orig), _images_in(gt)
    _by_stem(images, orig)
    found, orphans = _match(images, masks, gt, ("", "_mask", "_gt"))
    pairs = [Pair(p.stem, p, found.get(p.stem)) for p in images]
    notes = [f"read {orig.parent} (TIFF preferred over PNG)"] if len(candidates) > 1 else []
    return Layout(orig.parent, pairs, orphans, notes)


# --- DRIVE --------------------------------------------------------------------------------------

_DRIVE_SPLITS = {"training": "train", "test": "test"}


def _drive_pairs(split_dir: Path, split: str) -> tuple[list[Pair], list[str]]:
    kids = _children(split_dir)
    manual, fov_dir = kids.get("1st_manual"), kids.get("mask")
    images = _images_in(kids["images"])
    manuals = _images_in(manual) if manual else []
    fovs = _images_in(fov_dir) if fov_dir else []
    by_number = {p.name.split("_")[0]: p for p in manuals if p.stem.endswith("_manual1")}
    fov_by_stem = {p.stem[: -len("_mask")]: p for p in fovs if p.stem.endswith("_mask")}
    notes = []
    if manual is None:
        notes.append(
            f"'{split_dir}' has no 1st_manual/ folder (the grand-challenge release withholds the test "
            "annotations): its images are left out"
        )
        return [], notes
    pairs = [
        Pair(p.stem, p, by_number.get(p.stem.split("_")[0]), fov_by_stem.get(p.stem), split, needs_fov=True)
        for p in images
    ]
    return pairs, notes


def find_drive(root: Path, **_options) -> Layout:
    """``training|test/images/NN_*.tif``, ``1st_manual/NN_manual1.gif`` and ``mask/NN_*_mask.gif`` (FOV)."""
    for d in _walk_dirs(root):
        kids = _children(d)
        splits = [s for s in _DRIVE_SPLITS if s in kids and (kids[s] / "images").is_dir()]
        if splits:
            pairs, notes = [], []
            for s in splits:
                p, n = _drive_pairs(kids[s], _DRIVE_SPLITS[s])
                pairs += p
                notes += n
            return Layout(d, pairs, [], notes)
    raise unknown_layout(
        "DRIVE", root, "'training/images/*.tif', 'training/1st_manual/*_manual1.gif' and 'training/mask/'"
    )


# --- ISIC 2018 Task 1 ---------------------------------------------------------------------------

_ISIC_SPLITS = {"training": "train", "validation": "val", "test": "test"}
_ISIC_INPUT = re.compile(r"^isic2018_task1-2_(training|validation|test)_input$")
_ISIC_GT = re.compile(r"^isic2018_task1_(training|validation|test)_groundtruth$")

ISIC_ARCHIVES = tuple(
    Archive(f"{folder}.zip", folder, count, suffix, split)
    for folder, count, suffix, split in (
        ("ISIC2018_Task1-2_Training_Input", 2594, ".jpg", "train"),
        ("ISIC2018_Task1_Training_GroundTruth", 2594, ".png", "train"),
        ("ISIC2018_Task1-2_Validation_Input", 100, ".jpg", "val"),
        ("ISIC2018_Task1_Validation_GroundTruth", 100, ".png", "val"),
        ("ISIC2018_Task1-2_Test_Input", 1000, ".jpg", "test"),
        ("ISIC2018_Task1_Test_GroundTruth", 1000, ".png", "test"),
    )
)


def _isic_folders(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    inputs, gts = {}, {}
    for d in _walk_dirs(root):
        name = d.name.lower()
        for pattern, table in ((_ISIC_INPUT, inputs), (_ISIC_GT, gts)):
            m = pattern.match(name)
            if m and m.group(1) not in table:
                table[m.group(1)] = d
    return inputs, gts


def find_isic2018(root: Path, **_options) -> Layout:
    """``ISIC2018_Task1-2_<Split>_Input/*.jpg`` + ``ISIC2018_Task1_<Split>_GroundTruth/*_segmentation.png``.

    An Input folder without its GroundTruth folder is left out with a note.
    """
    inputs, gts = _isic_folders(root)
    if not inputs:
        raise unknown_layout(
            "ISIC 2018", root, "'ISIC2018_Task1-2_Training_Input/' and 'ISIC2018_Task1_Training_GroundTruth/'"
        )
    pairs, orphans, notes = [], [], []
    for key in ("training", "validation", "test"):
        if key not in inputs:
            continue
        if key not in gts:
            notes.append(f"'{inputs[key].name}' has no ground-truth folder: its images are left out")
            continue
        images = [p for p in _images_in(inputs[key]) if not p.stem.endswith("_superpixels")]
        _by_stem(images, inputs[key])
        masks = [p for p in _images_in(gts[key]) if p.stem.endswith("_segmentation")]
        found, extra = _match(images, masks, gts[key], ("_segmentation",))
        pairs += [Pair(p.stem, p, found.get(p.stem), split=_ISIC_SPLITS[key]) for p in images]
        orphans += extra
    root_dir = Path(os.path.commonpath([str(p.parent) for p in inputs.values()]))
    return Layout(root_dir, pairs, orphans, notes)


# --- folder: the user's own images and masks -----------------------------------------------------

MASK_SUFFIXES = ("", "_segmentation", "_mask", "_masks", "-mask", "_gt", "_label", "_seg", "_manual1")
_MASK_DIRS = ("masks", "mask", "labels", "label", "gt", "ground truth", "groundtruth", "annotations")


def find_folder(
    root: Path | None = None, images: str | Path | None = None, masks: str | Path | None = None, **_options
) -> Layout:
    """``--images DIR --masks DIR`` (default ``<source>/images`` and ``<source>/masks``), matched by stem.

    A mask matches an image when its stem is the image stem plus one of MASK_SUFFIXES.
    """
    if images is None or masks is None:
        if root is None:
            raise UserError(
                "prepare folder needs --images DIR and --masks DIR (or --source with images/ and masks/)."
            )
        kids = _children(Path(root))
        images = images or kids.get("images")
        masks = masks or next((kids[n] for n in _MASK_DIRS if n in kids), None)
        if images is None or masks is None:
            raise unknown_layout(
                "folder", Path(root), "'images/' and 'masks/' (or pass --images and --masks)"
            )
    images, masks = Path(images), Path(masks)
    for what, d in (("--images", images), ("--masks", masks)):
        if not d.is_dir():
            raise UserError(f"{what} folder '{d}' does not exist.")
    image_files, mask_files = _images_in(images), _images_in(masks)
    if not image_files:
        raise UserError(
            f"no image files in '{images}' (looked for {', '.join(('png', 'jpg', 'tif', 'gif', 'bmp'))})."
        )
    _by_stem(image_files, images)
    found, orphans = _match(image_files, mask_files, masks, MASK_SUFFIXES)
    pairs = [Pair(p.stem, p, found.get(p.stem)) for p in image_files]
    return Layout(images.parent, pairs, orphans, [])


# --- the registry --------------------------------------------------------------------------------

_CVC_HOW = (
    "CVC-ClinicDB is handed out by its authors on request (Bernal et al., 2015). Get it from "
    "https://polyp.grand-challenge.org/CVCClinicDB/ (follow the download link there), then run:\n"
    "  imbaseg download cvc --from PATH/TO/CVC-ClinicDB   (the folder, or the .zip/.rar you got)\n"
    "  imbaseg prepare cvc"
)
_DRIVE_HOW = (
    "DRIVE needs a free registration at https://drive.grand-challenge.org/ (Staal et al., 2004). "
    "Download DRIVE.zip (training/ and test/ folders), then run:\n"
    "  imbaseg download drive --from PATH/TO/DRIVE   (the folder or the .zip)\n"
    "  imbaseg prepare drive\n"
    "The grand-challenge release withholds the test annotations (test/1st_manual); without them the test "
    "images are left out and the 20 training images are split instead."
)
_ISIC_HOW = (
    "ISIC 2018 Task 1 (Codella et al., 2019; Tschandl et al., 2018) is public: `imbaseg download isic2018` "
    f"fetches its six archives (about 13 GB) from {ISIC_OFFICIAL_URL} (override with ${ISIC_URL_ENV}). "
    "Archives you already have: imbaseg download isic2018 --from PATH (a .zip, or a folder of them)."
)

DATASETS: dict[str, DatasetSource] = {
    "cvc": DatasetSource(
        "cvc",
        "CVC-ClinicDB (612 colonoscopy frames, polyps)",
        "registration",
        "https://polyp.grand-challenge.org/CVCClinicDB/",
        _CVC_HOW,
        find_cvc,
        "cvc",
        options=("split_by_sequence", "sequence_threshold"),
    ),
    "drive": DatasetSource(
        "drive",
        "DRIVE (40 retinal images, vessels, field of view)",
        "registration",
        "https://drive.grand-challenge.org/",
        _DRIVE_HOW,
        find_drive,
        "drive",
        options=("val_count",),
    ),
    "isic2018": DatasetSource(
        "isic2018",
        "ISIC 2018 Task 1 (skin lesions, 2594/100/1000)",
        "download",
        "https://challenge.isic-archive.com/data/#2018",
        _ISIC_HOW,
        find_isic2018,
        "official",
        archives=ISIC_ARCHIVES,
    ),
    "folder": DatasetSource(
        "folder",
        "your own images/ and masks/ folders, matched by file stem",
        "folder",
        how_to_get="Nothing to download: imbaseg prepare folder --images DIR --masks DIR [--name NAME]",
        find=find_folder,
        split_rule="random",
        options=("images", "masks", "val_fraction", "test_fraction"),
    ),
    "synthetic-polyp": DatasetSource(
        "synthetic-polyp",
        "procedural sharp-edged blobs, 3-15% foreground",
        "synthetic",
        how_to_get="Generated locally: imbaseg prepare synthetic-polyp",
        max_side=None,
        options=("n",),
    ),
    "synthetic-vessel": DatasetSource(
        "synthetic-vessel",
        "procedural thin branching vessels in a circular field of view",
        "synthetic",
        how_to_get="Generated locally: imbaseg prepare synthetic-vessel",
        max_side=None,
        options=("n",),
    ),
    "synthetic-lesion": DatasetSource(
        "synthetic-lesion",
        "procedural diffuse low-contrast lesions, 10-30% foreground",
        "synthetic",
        how_to_get="Generated locally: imbaseg prepare synthetic-lesion",
        max_side=None,
        options=("n",),
    ),
}

ALIASES = DATASET_ALIASES  # the one alias table lives in imbaseg.paths (config's presets use it too)


def dataset_names() -> list[str]:
    return list(DATASETS)


def canonical_name(name: str) -> str:
    """The registry name for ``name`` or an alias of it; UserError with did-you-mean otherwise."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    return lookup(key, DATASETS, "dataset").name if key not in DATASETS else key


def get_source(name: str) -> DatasetSource:
    return DATASETS[canonical_name(name)]
