"""``imbaseg prepare``: raw layout -> checked, split, resized ``data/prepared/<name>/``.

One pass reads every pair (threads; Pillow and numpy release the GIL), checks it, writes it into the
writer's temp folder and keeps a small grey thumbnail (``splits.thumbnail``) for the near-duplicate
check of the CVC splits. Problems (unreadable file,
missing mask, size mismatch, non-binary mask, mask without image) stop the prepare with their list
unless ``skip_bad``; empty masks are only reported. Splits are assigned afterwards, over the pairs
that passed. Nothing here prints: the CLI renders ``PrepareResult`` and ``imbalance_table``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imbaseg import __version__
from imbaseg.data import prepared as store
from imbaseg.data import splits as sp
from imbaseg.data import synthetic
from imbaseg.data.io import (
    ImageTooLarge,
    UnreadableImage,
    binarize,
    header_size,
    mask_problem,
    pixel_limit,
    read_image,
    read_mask,
)
from imbaseg.data.resize import resize_image_antialiased, resize_mask_nearest
from imbaseg.data.sources import DATASETS, DatasetSource, Layout, Pair, get_source
from imbaseg.errors import UserError, check_params
from imbaseg.locks import waiting_lock
from imbaseg.paths import atomic_write_text, dataset_key, prepared_dir, raw_dir, safe_name

COMMON_OPTIONS = ("max_side", "workers", "out_name", "progress", "max_pixels")
SHOWN_PROBLEMS = 5  # problems quoted in the error line; the full list goes to <name>.problems.txt


@dataclass
class PrepareResult:
    path: Path
    up_to_date: bool = False  # True: nothing was done
    counts: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) left out by skip_bad
    empty: list[str] = field(default_factory=list)  # ids whose mask is empty (kept)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Done:
    row: dict
    official: str | None
    thumb: np.ndarray | None
    fg_in_fov: float | None = None


# --- geometry ------------------------------------------------------------------------------------


def target_shape(hw: tuple[int, int], size=None, max_side: int | None = None) -> tuple[int, int]:
    """Output (H, W): ``size`` if given, else ``hw`` shrunk so the longest side <= ``max_side``."""
    if size is not None:
        return int(size[0]), int(size[1])
    h, w = hw
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        return max(1, round(h * s)), max(1, round(w * s))
    return h, w


# --- one pair ------------------------------------------------------------------------------------


class _Problem(Exception):
    def __init__(self, path, reason):
        super().__init__(reason)
        self.path, self.reason = str(path), reason


def _read(fn, path, **kw):
    try:
        return fn(path, **kw)
    except ImageTooLarge as e:
        raise _Problem(path, f"too large: {e.reason} (raise it with --max-pixels N)") from e
    except UnreadableImage as e:
        raise _Problem(path, f"unreadable: {e.reason}") from e


def _read_pair(pair: Pair, shape_of: Callable, limit: int | None = None) -> tuple:
    """(image, mask bool, fov bool or None) at the output size; ``_Problem`` for a bad pair.

    ``limit``: the largest image in pixels (``io.pixel_limit``); a larger file is a bad pair.
    """
    if pair.mask is None:
        raise _Problem(pair.image, "missing mask")
    if pair.needs_fov and pair.fov is None:
        raise _Problem(pair.image, "missing field-of-view mask")
    hw = header_size(pair.image)
    out = shape_of(hw) if hw else None
    draft = out if out and out[0] < hw[0] else None
    img = _read(read_image, pair.image, draft=draft, max_pixels=limit)
    hw = hw or img.shape[:2]
    raw = _read(read_mask, pair.mask, max_pixels=limit)
    if raw.shape != tuple(hw):
        raise _Problem(pair.mask, f"size mismatch: image {hw[0]}x{hw[1]}, mask {raw.shape[0]}x{raw.shape[1]}")
    reason = mask_problem(raw)
    if reason:
        raise _Problem(pair.mask, reason)
    fov = None
    if pair.fov is not None:
        fov_raw = _read(read_mask, pair.fov, max_pixels=limit)
        if fov_raw.shape != tuple(hw):
            raise _Problem(
                pair.fov,
                f"size mismatch: image {hw[0]}x{hw[1]}, field of view {fov_raw.shape[0]}x{fov_raw.shape[1]}",
            )
        fov = binarize(fov_raw)
    out = shape_of(hw)
    img, mask = resize_image_antialiased(img, out), resize_mask_nearest(binarize(raw), out)
    return img, mask, (resize_mask_nearest(fov, out) if fov is not None else None)


def _process(pair: Pair, writer: store.PreparedWriter, layout_root: Path, shape_of: Callable,
             limit: int | None = None):
    """Check and write one pair: a ``_Done``, or (file, reason) for a bad pair."""
    try:
        img, mask, fov = _read_pair(pair, shape_of, limit)
    except _Problem as p:
        return (p.path, p.reason)
    try:
        source = str(pair.image.relative_to(layout_root))
    except ValueError:
        source = str(pair.image)
    row = writer.write_sample(safe_name(pair.id), img, mask, fov, source=source)
    fg_in_fov = float(mask[fov].mean()) if fov is not None and fov.any() else None
    return _Done(row, pair.split, sp.thumbnail(img), fg_in_fov)


# --- splits --------------------------------------------------------------------------------------


def assign_splits(
    rule: str, done: list[_Done], seed: int, options: dict, report: dict | None = None
) -> dict[str, str]:
    """id -> split for the pairs that passed, following the dataset's rule (see README "Splits").

    cvc also fills ``report`` (when given) with what ``prepare.json`` records under "split": the rule,
    the near-duplicate measure and threshold, groups, target and final counts, and the closest pair of
    frames in different splits (``splits.cross_split_report``).
    """
    ids = sorted((d.row["id"] for d in done), key=sp.natural_key)
    if not ids:
        return {}
    if rule == "cvc":
        return _cvc_split(ids, done, seed, options, report if report is not None else {})
    official = {d.row["id"]: d.official for d in done}
    if rule == "drive":
        k = int(options.get("val_count") or 4)  # the study held out 4 of the 20 training images
        train = [i for i in ids if official[i] == "train"]
        test = [i for i in ids if official[i] == "test"]
        if not test:  # no test annotations: carve val and test out of training
            return (
                sp.random_split(train, (len(train) - 2 * k, k, k), seed)
                if len(train) > 2 * k
                else sp.random_split(train, sp.split_counts(len(train), sp.DEFAULT_FRACTIONS), seed)
            )
        return {**sp.hold_out(train, k, seed), **{i: "test" for i in test}}
    if rule == "official":
        return _official_split(ids, official, seed)
    fractions = _fractions(options)
    return sp.random_split(ids, sp.split_counts(len(ids), fractions), seed)


def sequence_threshold(options: dict) -> float:
    """The near-duplicate threshold of a cvc prepare: ``sequence_threshold`` or splits.NEAR_DUPLICATE."""
    value = options.get("sequence_threshold")
    value = sp.NEAR_DUPLICATE if value is None else value
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 < value <= 1:  # also NaN
        raise UserError(
            f"--sequence-threshold {options.get('sequence_threshold')} is out of range: give a similarity "
            f"in (0, 1] (default {sp.NEAR_DUPLICATE})."
        )
    return value


def split_fingerprint(rule: str, options: dict) -> dict:
    """Extra prepare options naming the split method, so a folder split by an older method is rebuilt."""
    if rule != "cvc" or not options.get("split_by_sequence"):
        return {}
    return {"split_method": "near-duplicate groups v1", "sequence_threshold": sequence_threshold(options)}


def _cvc_split(ids: list[str], done: list[_Done], seed: int, options: dict, report: dict) -> dict[str, str]:
    threshold, target = sequence_threshold(options), sp.cvc_counts(len(ids))
    by_sequence = bool(options.get("split_by_sequence"))
    thumbs = {d.row["id"]: d.thumb for d in done}
    if not by_sequence:
        split = sp.random_split(ids, target, seed)
        if any(t is None for t in thumbs.values()):
            return split  # nothing to measure the leak with (assign_splits called without thumbnails)
    sim = sp.similarity_matrix([thumbs[i] for i in ids])
    groups = sp.near_duplicate_groups(sim, threshold)
    labels = sp.group_split(groups, target, seed) if by_sequence else [split[i] for i in ids]
    counts = [labels.count(s) for s in sp.SPLITS]
    sizes = np.bincount(groups)
    report.update(
        rule="whole near-duplicate groups (--split-by-sequence)" if by_sequence else "seeded random",
        near_duplicate={"measure": sp.MEASURE, "threshold": threshold},
        groups=len(sizes),
        largest_group=int(sizes.max()),
        target=dict(zip(sp.SPLITS, target, strict=True)),
        counts=dict(zip(sp.SPLITS, counts, strict=True)),
        **sp.cross_split_report(sim, ids, labels, threshold),
    )
    if by_sequence and report["cross_split_near_duplicate_pairs"]:
        raise RuntimeError(f"near-duplicates across splits after grouping: {report}")  # a bug
    empty = [s for s, c, t in zip(sp.SPLITS, counts, target, strict=True) if t and not c]
    if by_sequence and empty:
        big = int(np.argmax(sizes))
        members = [i for i, g in zip(ids, groups, strict=True) if g == big]
        raise UserError(
            f"cannot split {len(ids)} frames by sequence: the {'/'.join(empty)} split(s) would be empty, "
            f"because {sizes.max()} frames ({members[0]} ... {members[-1]}) form one near-duplicate group "
            f"(chains of similarity > {threshold}). Raise --sequence-threshold or prepare without "
            "--split-by-sequence."
        )
    return dict(zip(ids, labels, strict=True))


def split_notes(report: dict) -> list[str]:
    """One line for ``PrepareResult.notes`` from ``assign_splits``' report (none for other rules)."""
    if not report:
        return []
    counts = "/".join(str(v) for v in report["counts"].values())
    target = "/".join(str(v) for v in report["target"].values())
    thr = report["near_duplicate"]["threshold"]
    close = report["closest_cross_split_pair"]
    closest = (
        f"; closest frames in different splits: {close['ids'][0]} ({close['splits'][0]}) and "
        f"{close['ids'][1]} ({close['splits'][1]}), similarity {close['similarity']:.2f}"
        if close
        else ""
    )
    if report["rule"].startswith("whole"):
        head = (
            f"split by sequence: {report['groups']} near-duplicate groups "
            f"(largest {report['largest_group']}), no pair across splits above similarity {thr}; "
            f"{counts} frames (target {target})"
        )
    else:
        pairs = report["cross_split_near_duplicate_pairs"]
        head = f"random split: {pairs} near-duplicate pair(s) (similarity > {thr}) lie across splits"
        if pairs:
            head += "; --split-by-sequence keeps them in one split"
    return [head + closest]


def _fractions(options: dict) -> tuple[float, float, float]:
    val = float(options.get("val_fraction", sp.DEFAULT_FRACTIONS[1]) or 0)
    test = float(options.get("test_fraction", sp.DEFAULT_FRACTIONS[2]) or 0)
    if val < 0 or test < 0 or val + test >= 1:
        raise UserError(f"val_fraction {val} and test_fraction {test} must be >= 0 and sum to less than 1.")
    return (1 - val - test, val, test)


def _official_split(ids, official, seed) -> dict[str, str]:
    """Keep official splits; carve the missing val/test out of train (70/15/15 proportions)."""
    out = {i: official[i] or "train" for i in ids}
    present = set(out.values())
    train = [i for i in ids if out[i] == "train"]
    missing = [s for s in sp.SPLITS[1:] if s not in present]
    if missing and train:
        parts = dict(zip(sp.SPLITS, sp.DEFAULT_FRACTIONS, strict=True))
        names = ("train", *missing)
        counts = sp.split_counts(len(train), [parts[n] for n in names])
        out.update(sp.random_split(train, counts, seed, names=names))
    return out


# --- the whole dataset ---------------------------------------------------------------------------


def run_ordered(fn: Callable, items, workers: int, progress: Callable | None = None):
    """Yield ``fn(item)`` in order from a thread pool; an error or Ctrl-C cancels the queued items at once."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for k, fut in enumerate(futures):
                yield fut.result()
                if progress:
                    progress(k + 1, len(items))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


# options that are numbers, and their key in config.FLAG_NUMBERS (the one table of ranges)
# (--n is checked by the synthetic writer, which knows why: one image per split)
_NUMERIC_OPTIONS = {
    "workers": "prepare --workers",
    "max_side": "prepare --max-side",
    "max_pixels": "--max-pixels",
}


def _check_options(src: DatasetSource, options: dict, seed) -> dict:
    from imbaseg.config import check_number

    check_params(options, COMMON_OPTIONS + src.options, f"prepare {src.name}")
    check_number("prepare --seed", seed)
    for key, flag in _NUMERIC_OPTIONS.items():
        if options.get(key) is not None:
            check_number(flag, options[key])
    return {k: v for k, v in options.items() if v is not None and k != "progress"}


def _raw_source(src: DatasetSource, root, source) -> Path | None:
    if source is not None:
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(f"--source '{path}' does not exist.")
        return path
    if src.kind == "folder":
        return None
    path = raw_dir(src.name, root)
    if not path.exists():
        hint = (
            f"imbaseg download {src.name}"
            if src.kind == "download"
            else f"imbaseg download {src.name} --from PATH"
        )
        raise UserError(f"no raw {src.name} data in '{path}'. Run: {hint} (or pass --source PATH).")
    return path


def _find_layout(src: DatasetSource, path: Path | None, options: dict) -> Layout:
    layout = src.find(path, **{k: options[k] for k in ("images", "masks") if k in options})
    if not layout.pairs:
        raise UserError(f"no image/mask pairs found for {src.name} in '{layout.root}'.")
    seen: dict[str, Path] = {}
    for p in layout.pairs:  # ids become file names: two stems that sanitise alike would collide
        other = seen.setdefault(safe_name(p.id), p.image)
        if other != p.image:
            raise UserError(
                f"'{other}' and '{p.image}' would both be saved as '{safe_name(p.id)}'; rename one."
            )
    return layout


def _up_to_date(target: Path, fp: str, force: bool, options: dict) -> bool:
    """True when ``target`` is complete with fingerprint ``fp``; UserError when it holds something else."""
    if force or not (target.exists() or target.is_symlink()):
        return False
    info = store.read_info(target) or {}
    if not info:
        raise UserError(f"'{target}' exists but is not a prepared dataset; move it away or add --force.")
    if not store.is_complete(target):
        return False  # a damaged prepared folder is ours to rebuild
    if info.get("fingerprint") == fp:
        return True
    if info.get("format_version") != store.FORMAT_VERSION:
        raise UserError(
            f"'{target}' was prepared by another imbaseg version (format {info.get('format_version')}, "
            f"this one writes format {store.FORMAT_VERSION}); add --force to rebuild it."
        )
    old = info.get("options", {})
    changed = sorted(k for k in set(old) | set(options) if old.get(k) != options.get(k))
    what = f"other options ({', '.join(changed)})" if changed else "other input files"
    raise UserError(f"'{target}' was prepared from {what}; add --force to rebuild it.")


def _report_problems(name: str, target: Path, problems: list[tuple[str, str]]) -> UserError:
    listing = target.parent / f"{target.name}.problems.txt"
    atomic_write_text(listing, "".join(f"{f}\t{r}\n" for f, r in problems))
    shown = "; ".join(f"{f}: {r}" for f, r in problems[:SHOWN_PROBLEMS])
    more = f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return UserError(
        f"{len(problems)} bad file(s) in {name}: {shown}{more} (full list: {listing}). "
        "Fix or remove them, or rerun with --skip-bad to leave them out."
    )


def prepare(
    name: str,
    root=None,
    source=None,
    force: bool = False,
    skip_bad: bool = False,
    size=None,
    seed: int = 42,
    **options,
) -> PrepareResult:
    """Prepare dataset ``name`` into ``data/prepared/<name>`` and say what happened.

    ``size`` (H, W) resizes everything; otherwise images longer than ``max_side`` (default from the
    registry: 1024) are shrunk keeping the aspect ratio. ``progress(done, total)`` is called per pair.
    """
    src = get_source(name)
    progress = options.get("progress")
    options = _check_options(src, options, seed)
    size = _check_size(size)
    target = prepared_dir(safe_name(options.pop("out_name", None) or src.name), root)
    if src.kind == "synthetic":
        return _prepare_synthetic(src.name, target, force, size, seed, options, progress)
    path = _raw_source(src, root, source)
    layout = _find_layout(src, path, options)
    max_side = options.get("max_side", src.max_side) or None
    used = {"size": list(size) if size else None, "max_side": max_side, "seed": seed, "skip_bad": skip_bad}
    extra = {k: v for k, v in options.items() if k not in ("workers", "max_side")}
    used.update({k: str(v) if isinstance(v, Path) else v for k, v in extra.items()})
    used.update(split_fingerprint(src.split_rule, options))
    files = [f for p in layout.pairs for f in (p.image, p.mask, p.fov) if f is not None] + layout.orphans
    fp = store.fingerprint(
        {"dataset": src.name, "options": used, "files": store.files_fingerprint(files, layout.root)}
    )
    if _up_to_date(target, fp, force, used):
        info = store.read_info(target)
        return PrepareResult(target, True, info.get("counts", {}), notes=["already up to date"])
    return _write_real(src, layout, target, fp, used, size, max_side, seed, skip_bad, options, progress)


def _check_size(size):
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 8 or max(size) > 16384:
        raise UserError(f"--size {size} is invalid: give H W, each between 8 and 16384.")
    return size


def _write_real(
    src, layout, target, fp, used, size, max_side, seed, skip_bad, options, progress
) -> PrepareResult:
    def shape_of(hw):
        return target_shape(hw, size, max_side)

    with_fov = any(p.needs_fov or p.fov is not None for p in layout.pairs)
    workers = int(options.get("workers") or min(4, os.cpu_count() or 1))
    done, problems = [], [(str(m), "mask without an image") for m in layout.orphans]
    limit = pixel_limit(options.get("max_pixels"))
    with store.PreparedWriter(target, with_fov=with_fov, expected=len(layout.pairs)) as writer:
        for out in run_ordered(
            lambda p: _process(p, writer, layout.root, shape_of, limit), layout.pairs, workers, progress
        ):
            (done if isinstance(out, _Done) else problems).append(out)
        if problems and not skip_bad:
            raise _report_problems(src.name, target, problems)
        if not done:
            raise UserError(f"no usable pairs left in {src.name} after skipping {len(problems)} bad file(s).")
        split_report: dict = {}
        splits = assign_splits(src.split_rule, done, seed, options, split_report)
        rows = [{**d.row, "split": splits[d.row["id"]]} for d in done]
        info = _info(src.name, used, seed, fp, layout, problems, done, rows)
        if split_report:
            info["split"] = split_report
        writer.commit(rows, info)
    # the problem list of an earlier failed run is out of date now
    (target.parent / f"{target.name}.problems.txt").unlink(missing_ok=True)
    return PrepareResult(
        target,
        False,
        info_counts(rows),
        problems,
        [d.row["id"] for d in done if d.row["fg_fraction"] == 0],
        list(layout.notes) + split_notes(split_report),
    )


def info_counts(rows) -> dict:
    return {s: sum(r["split"] == s for r in rows) for s in sp.SPLITS}


def _info(name, used, seed, fp, layout, problems, done, rows) -> dict:
    fov = [d.fg_in_fov for d in done if d.fg_in_fov is not None]
    return {
        "dataset": name,
        "imbaseg_version": __version__,
        "options": used,
        "seed": seed,
        "fingerprint": fp,
        "source": str(layout.root),
        "skipped": [{"file": f, "reason": r} for f, r in problems],
        "empty_masks": [r["id"] for r in rows if r["fg_fraction"] == 0],
        "notes": layout.notes,
        "fg_in_fov_mean": float(np.mean(fov)) if fov else None,
    }


# --- synthetic -----------------------------------------------------------------------------------


def _prepare_synthetic(name, target, force, size, seed, options, progress) -> PrepareResult:
    n = int(synthetic.DEFAULT_N[name] if options.get("n") is None else options["n"])
    if n < 3:
        raise UserError(f"n={n} is too small for {name}: use at least 3 (one image per split).")
    hw = synthetic.check_size(size)
    used = {"n": n, "size": list(hw), "seed": seed, "generator_version": synthetic.GENERATOR_VERSION}
    fp = store.fingerprint({"dataset": name, "options": used})
    if _up_to_date(target, fp, force, used):
        return PrepareResult(
            target, True, store.read_info(target).get("counts", {}), notes=["already up to date"]
        )
    counts = sp.split_counts(n, sp.DEFAULT_FRACTIONS)
    split_of = [s for s, c in zip(sp.SPLITS, counts, strict=True) for _ in range(c)]
    width = max(4, len(str(n - 1)))

    def one(i):
        img, mask, fov = synthetic.sample(name, i, seed, hw)
        row = writer.write_sample(
            f"{i:0{width}d}", img, mask, fov, split_of[i], f"{name}:seed={seed}:index={i}"
        )
        return row

    with store.PreparedWriter(target, with_fov=name == "synthetic-vessel", expected=n) as writer:
        workers = int(options.get("workers") or min(4, os.cpu_count() or 1))
        rows = list(run_ordered(one, range(n), workers, progress))
        info = {
            "dataset": name,
            "imbaseg_version": __version__,
            "options": used,
            "seed": seed,
            "fingerprint": fp,
            "source": "generated",
            "skipped": [],
            "empty_masks": [],
            "notes": [],
        }
        writer.commit(rows, info)
    return PrepareResult(target, False, info_counts(rows))


# --- the API the trainer uses -------------------------------------------------------------------


def prepare_dataset(
    name: str,
    root=None,
    source=None,
    force: bool = False,
    skip_bad: bool = False,
    size=None,
    seed: int = 42,
    **options,
) -> Path:
    """Prepare ``name`` (see ``prepare``) and return its folder; does nothing when up to date."""
    return prepare(name, root, source, force, skip_bad, size, seed, **options).path


def ensure_prepared(name: str, root=None) -> Path:
    """The complete prepared folder of ``name``; UserError saying what to run when there is none.

    Reads only, except for the synthetic sets, which prepare themselves (defaults) on first use.
    That first use is safe for several processes at once (torchrun ranks, two trainings): one
    prepares under ``data/prepared/.<name>.prepare.lock`` while the others wait, then use its result.
    """
    key = dataset_key(name)
    target = prepared_dir(safe_name(key), root)
    if store.is_complete(target):
        return target
    src = get_source(key)  # unknown and unprepared -> did-you-mean error
    if src.kind == "synthetic":
        return _prepare_synthetic_once(src.name, target, root)
    why = store.problem(target)
    if target.exists():
        raise UserError(
            f"prepared dataset '{target}' is incomplete ({why}). Run: imbaseg prepare {src.name} --force"
        )
    steps = _how_to_prepare(src, root)
    raise UserError(f"dataset '{src.name}' is not prepared ({target} is missing). Run: {steps}")


def _prepare_synthetic_once(name: str, target: Path, root) -> Path:
    with waiting_lock(target.parent / f".{target.name}.prepare.lock"):
        if store.is_complete(target):  # another process prepared it while we waited
            return target
        return prepare_dataset(name, root)


def _how_to_prepare(src: DatasetSource, root) -> str:
    if src.kind == "registration" and raw_dir(src.name, root).exists():
        return f"imbaseg prepare {src.name}"
    return {
        "download": f"imbaseg download {src.name} && imbaseg prepare {src.name}",
        "registration": f"imbaseg download {src.name} --from PATH && imbaseg prepare {src.name}",
        "folder": "imbaseg prepare folder --images DIR --masks DIR",
    }[src.kind]


def imbalance_table(prepared: str | os.PathLike) -> list[dict]:
    """Per split and overall: images, mean/min/max foreground % (whole image), empty masks."""
    from imbaseg.data.manifest import read_manifest

    df = read_manifest(prepared)
    rows = []
    for split in (*sp.SPLITS, "all"):
        part = df if split == "all" else df[df["split"] == split]
        if len(part) == 0:
            continue
        fg = part["fg_fraction"].astype(float) * 100
        rows.append(
            {
                "split": split,
                "images": int(len(part)),
                "fg_mean": float(fg.mean()),
                "fg_min": float(fg.min()),
                "fg_max": float(fg.max()),
                "empty": int((fg == 0).sum()),
            }
        )
    return rows


__all__ = [
    "DATASETS",
    "PrepareResult",
    "prepare",
    "prepare_dataset",
    "ensure_prepared",
    "imbalance_table",
    "assign_splits",
    "target_shape",
]
