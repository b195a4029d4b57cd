"""imbaseg prepare on the real layouts in ../shared/data, the corrupt cases, re-runs and interruptions."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from imbaseg.data import prepared as store
from imbaseg.data import synthetic
from imbaseg.data.io import read_image, read_mask
from imbaseg.data.manifest import COLUMNS, read_manifest
from imbaseg.data.prepare import (
    assign_splits,
    ensure_prepared,
    imbalance_table,
    prepare,
    prepare_dataset,
    target_shape,
)
from imbaseg.errors import UserError


def _binary(folder, ids):
    return all(set(np.unique(read_mask(folder / f"{i}.png"))) <= {0, 255} for i in ids)


@pytest.fixture(scope="module")
def drive(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("drive-root")
    return prepare("drive", root=root, source=shared_data / "DRIVE")


def test_drive_counts_fractions_and_fov(drive):
    df = read_manifest(drive.path)
    assert list(df.columns) == list(COLUMNS)
    assert drive.counts == {"train": 16, "val": 4, "test": 20}  # official 20/20, 4 training images held out
    assert set(df[df.split == "test"]["id"]) == {f"{i:02d}_test" for i in range(1, 21)}
    assert df["fg_fraction"].between(0.06, 0.12).all()  # vessels: 6-12% of the whole image
    assert set(df["height"]) == {584} and set(df["width"]) == {565}
    in_fov = []
    for i in df["id"]:
        fov, mask = (
            read_mask(drive.path / "fov" / f"{i}.png") > 0,
            read_mask(drive.path / "masks" / f"{i}.png") > 0,
        )
        assert 0.6 < fov.mean() < 0.75  # the circular field of view is kept
        in_fov.append(mask[fov].mean())
    assert 0.085 <= min(in_fov) and max(in_fov) <= 0.17  # "9-17%" inside the FOV: 31_training has 8.74%
    assert _binary(drive.path / "masks", df["id"])
    assert store.read_info(drive.path)["has_fov"] is True
    assert read_image(drive.path / "images" / "21_training.png").shape == (584, 565, 3)


def _done(ids, official):
    return [SimpleNamespace(row={"id": i}, official=official, thumb=None) for i in ids]


def test_split_rules_are_seeded():
    drive = _done([f"{i}_training" for i in range(21, 41)], "train") + _done(
        [f"{i:02d}_test" for i in range(1, 21)], "test"
    )
    a, b, c = (assign_splits("drive", drive, seed, {}) for seed in (42, 42, 7))
    assert a == b and a != c  # the seed picks the 4 held-out training images
    assert [list(a.values()).count(s) for s in ("train", "val", "test")] == [16, 4, 20]
    assert all(a[f"{i:02d}_test"] == "test" for i in range(1, 21))
    cvc = _done([str(i) for i in range(1, 613)], None)
    split = assign_splits("cvc", cvc, 42, {})
    assert [list(split.values()).count(s) for s in ("train", "val", "test")] == [392, 98, 122]
    folder = assign_splits(
        "random", _done([f"x{i}" for i in range(40)], None), 1, {"val_fraction": 0.25, "test_fraction": 0.25}
    )
    assert [list(folder.values()).count(s) for s in ("train", "val", "test")] == [20, 10, 10]
    with pytest.raises(UserError, match="val_fraction"):
        assign_splits("random", folder and _done(["a"], None), 1, {"val_fraction": 0.6, "test_fraction": 0.5})


def test_rerun_is_a_noop(drive, shared_data):
    root = drive.path.parents[2]
    before = (drive.path / "manifest.csv").stat().st_mtime_ns
    again = prepare("drive", root=root, source=shared_data / "DRIVE")
    assert again.up_to_date and (drive.path / "manifest.csv").stat().st_mtime_ns == before
    assert again.counts == drive.counts


def test_force_rebuilds_and_changed_inputs_need_force(cvc_copy, tmp_path):
    first = prepare("cvc", root=tmp_path, source=cvc_copy)
    before = (first.path / "manifest.csv").stat().st_mtime_ns
    assert prepare("cvc", root=tmp_path, source=cvc_copy).up_to_date
    forced = prepare("cvc", root=tmp_path, source=cvc_copy, force=True)
    assert not forced.up_to_date and (first.path / "manifest.csv").stat().st_mtime_ns != before
    os.utime(cvc_copy / "Original" / "1.tif", ns=(1, 1))  # a raw file replaced since
    with pytest.raises(UserError, match="other input files; add --force"):
        prepare("cvc", root=tmp_path, source=cvc_copy)


def test_drive_without_test_annotations(shared_data, tmp_path):
    src = tmp_path / "DRIVE"
    (src / "test").mkdir(parents=True)
    (src / "training").symlink_to(shared_data / "DRIVE" / "training")
    for sub in ("images", "mask"):
        (src / "test" / sub).symlink_to(shared_data / "DRIVE" / "test" / sub)
    res = prepare("drive", root=tmp_path, source=src, size=(64, 64))
    assert res.counts == {"train": 12, "val": 4, "test": 4}  # 20 training images: 4 val, 4 test held out
    assert any("1st_manual" in n for n in res.notes)


def test_cvc_tiff_sample(shared_data, tmp_path):
    res = prepare("cvc", root=tmp_path, source=shared_data / "samples" / "CVC-ClinicDB")
    df = read_manifest(res.path)
    assert res.counts == {"train": 13, "val": 3, "test": 4}  # 392/98/122 proportions of 20
    assert set(df["height"]) == {288} and set(df["width"]) == {384}
    assert _binary(res.path / "masks", df["id"])
    assert not (res.path / "fov").exists()
    # masks thresholded > 127: the fraction matches the raw TIFF's
    raw = read_mask(shared_data / "samples" / "CVC-ClinicDB" / "Ground Truth" / "1.tif")
    assert df.set_index("id").loc["1", "fg_fraction"] == pytest.approx((raw > 127).mean(), abs=1e-6)
    assert read_image(res.path / "images" / "1.png").shape == (288, 384, 3)
    assert df.set_index("id").loc["1", "source"] == "Original/1.tif"


def test_cvc_size_and_split_by_sequence(shared_data, tmp_path):
    res = prepare(
        "cvc",
        root=tmp_path,
        source=shared_data / "samples" / "CVC-ClinicDB",
        size=(144, 192),
        split_by_sequence=True,
    )
    df = read_manifest(res.path)
    assert set(df["height"]) == {144} and set(df["width"]) == {192}
    assert _binary(res.path / "masks", df["id"])
    # the 20 sample frames are 35 ids apart: all different, so groups are single frames and counts exact
    assert res.counts == {"train": 13, "val": 3, "test": 4}


def test_isic2018_sample_seeded_split(shared_data, tmp_path):
    res = prepare("isic", root=tmp_path, source=shared_data / "samples" / "ISIC2018")
    assert res.path.name == "isic2018"
    df = read_manifest(res.path)
    # only the Training folders exist: val and test are carved out of them, 70/15/15 -> 14/3/3
    assert res.counts == {"train": 14, "val": 3, "test": 3}
    assert set(df["height"]) == {512} and _binary(res.path / "masks", df["id"])
    assert df["id"].str.match(r"ISIC_\d{7}$").all()


def test_isic2018_official_splits_kept(shared_data, tmp_path):
    src = tmp_path / "isic"
    sample = shared_data / "samples" / "ISIC2018"
    for split, take in (("Training", slice(0, 12)), ("Validation", slice(12, 15)), ("Test", slice(15, 20))):
        inp, gt = src / f"ISIC2018_Task1-2_{split}_Input", src / f"ISIC2018_Task1_{split}_GroundTruth"
        inp.mkdir(parents=True)
        gt.mkdir()
        for img in sorted((sample / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))[take]:
            (inp / img.name).symlink_to(img)
            m = f"{img.stem}_segmentation.png"
            (gt / m).symlink_to(sample / "ISIC2018_Task1_Training_GroundTruth" / m)
    (src / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("not an image")
    res = prepare("isic2018", root=tmp_path, source=src, size=(64, 64))
    assert res.counts == {"train": 12, "val": 3, "test": 5}


def test_isic2017_fullres_via_folder_resized(shared_data, tmp_path):
    base = shared_data / "samples" / "ISIC2017-fullres"
    res = prepare("folder", root=tmp_path, images=base / "images", masks=base / "masks", out_name="isic2017")
    assert res.path.name == "isic2017"
    df = read_manifest(res.path).set_index("id")
    assert len(df) == 4 and _binary(res.path / "masks", df.index)
    # 1936x2592 -> longest side 1024: 1936 * 1024 / 2592 = 764.9 -> 765; 768x1024 stays
    assert (df.loc["ISIC_0014610", "height"], df.loc["ISIC_0014610", "width"]) == (765, 1024)
    assert (df.loc["ISIC_0009995", "height"], df.loc["ISIC_0009995", "width"]) == (768, 1024)
    big = read_mask(base / "masks" / "ISIC_0014610_segmentation.png") > 127
    assert df.loc["ISIC_0014610", "fg_fraction"] == pytest.approx(big.mean(), abs=0.01)
    small = prepare("folder", root=tmp_path, images=base / "images", masks=base / "masks", max_side=256)
    assert read_manifest(small.path)[["height", "width"]].max().max() == 256


def test_target_shape_table():
    assert target_shape((1936, 2592), None, 1024) == (765, 1024)
    assert target_shape((300, 200), None, 1024) == (300, 200)
    assert target_shape((300, 200), (64, 32), 1024) == (64, 32)
    assert target_shape((4439, 6688), None, None) == (4439, 6688)


# --- corrupt cases ------------------------------------------------------------------------------


@pytest.fixture
def cvc_copy(shared_data, tmp_path):
    """A CVC layout with 6 of the sample pairs, safe to damage."""
    src = shared_data / "samples" / "CVC-ClinicDB"
    dst = tmp_path / "CVC-ClinicDB"
    for sub in ("Original", "Ground Truth"):
        (dst / sub).mkdir(parents=True)
        for n in ("1", "35", "70", "105", "140", "175"):
            shutil.copy(src / sub / f"{n}.tif", dst / sub / f"{n}.tif")
    return dst


def _fails(tmp_path, source, *names, **kw):
    with pytest.raises(UserError) as err:
        prepare("cvc", root=tmp_path, source=source, **kw)
    for name in names:
        assert name in str(err.value)
    assert not (tmp_path / "data" / "prepared" / "cvc").exists()
    assert not list((tmp_path / "data" / "prepared").glob(".cvc.tmp-*"))
    return str(err.value)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_truncated_file(cvc_copy, tmp_path):
    f = cvc_copy / "Original" / "35.tif"
    f.write_bytes(f.read_bytes()[:5000])
    msg = _fails(tmp_path, cvc_copy, "35.tif", "unreadable", "--skip-bad")
    listing = tmp_path / "data" / "prepared" / "cvc.problems.txt"
    assert "35.tif" in listing.read_text() and msg.startswith("1 bad file(s)")
    f.unlink()
    (cvc_copy / "Ground Truth" / "35.tif").unlink()
    res = prepare("cvc", root=tmp_path, source=cvc_copy)
    assert sum(res.counts.values()) == 5 and not listing.exists()  # the stale list goes with success


def test_damaged_prepared_folder_is_rebuilt(cvc_copy, tmp_path):
    res = prepare("cvc", root=tmp_path, source=cvc_copy)
    (res.path / "images" / "1.png").unlink()
    assert not store.is_complete(res.path)
    again = prepare("cvc", root=tmp_path, source=cvc_copy)  # no --force needed to repair our own output
    assert not again.up_to_date and store.is_complete(res.path)


def test_missing_mask_size_mismatch_nonbinary_and_skip_bad(cvc_copy, tmp_path):
    (cvc_copy / "Ground Truth" / "70.tif").unlink()
    Image.fromarray(np.zeros((100, 120), np.uint8)).save(cvc_copy / "Ground Truth" / "105.tif")
    Image.fromarray(np.tile(np.arange(384, dtype=np.uint8)[None] // 2 + 30, (288, 1))).save(
        cvc_copy / "Ground Truth" / "140.tif"
    )
    msg = _fails(
        tmp_path,
        cvc_copy,
        "70.tif",
        "missing mask",
        "105.tif",
        "size mismatch: image 288x384, mask 100x120",
        "140.tif",
        "non-binary",
    )
    assert msg.startswith("3 bad file(s)")
    res = prepare("cvc", root=tmp_path, source=cvc_copy, skip_bad=True)
    assert sum(res.counts.values()) == 3 and len(res.skipped) == 3
    assert {os.path.basename(f) for f, _ in res.skipped} == {"70.tif", "105.tif", "140.tif"}
    assert sorted(read_manifest(res.path)["id"]) == ["1", "175", "35"]
    assert len(store.read_info(res.path)["skipped"]) == 3


def test_orphan_mask_and_empty_mask_reported(cvc_copy, tmp_path):
    shutil.copy(cvc_copy / "Ground Truth" / "1.tif", cvc_copy / "Ground Truth" / "999.tif")
    _fails(tmp_path, cvc_copy, "999.tif", "mask without an image")
    (cvc_copy / "Ground Truth" / "999.tif").unlink()
    Image.fromarray(np.zeros((288, 384), np.uint8)).save(cvc_copy / "Ground Truth" / "35.tif")
    res = prepare("cvc", root=tmp_path, source=cvc_copy)
    assert res.empty == ["35"] and sum(res.counts.values()) == 6  # an empty mask is kept, and reported
    assert imbalance_table(res.path)[-1]["empty"] == 1


def test_unknown_layout(tmp_path):
    (tmp_path / "stuff" / "pictures").mkdir(parents=True)
    (tmp_path / "stuff" / "readme.txt").write_text("x")
    for name, expected in (
        ("cvc", "Original/N.tif"),
        ("drive", "training/images"),
        ("isic2018", "Training_Input"),
    ):
        with pytest.raises(UserError, match="no .* layout in .*stuff.*found: pictures/, readme.txt") as err:
            prepare(name, root=tmp_path, source=tmp_path / "stuff")
        assert expected in str(err.value)


def test_missing_raw_and_bad_options(tmp_path):
    with pytest.raises(UserError, match=r"imbaseg download drive --from PATH"):
        prepare("drive", root=tmp_path)
    with pytest.raises(UserError, match="Did you mean 'drive'"):
        prepare("driv", root=tmp_path)
    with pytest.raises(UserError, match="unknown parameter 'split_by_sequence'"):
        prepare("drive", root=tmp_path, split_by_sequence=True)
    with pytest.raises(UserError, match="--size"):
        prepare("cvc", root=tmp_path, size=(0, 5))
    with pytest.raises(UserError, match="--images"):
        prepare("folder", root=tmp_path)


def test_interrupted_prepare_leaves_nothing_complete(cvc_copy, tmp_path, monkeypatch):
    real = store.PreparedWriter.write_sample
    calls = []

    def flaky(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(store.PreparedWriter, "write_sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare("cvc", root=tmp_path, source=cvc_copy, workers=1)
    prepared = tmp_path / "data" / "prepared"
    assert not (prepared / "cvc").exists() and not list(prepared.glob(".cvc*"))
    monkeypatch.setattr(store.PreparedWriter, "write_sample", real)
    good = prepare("cvc", root=tmp_path, source=cvc_copy)
    before = sorted(p.name for p in (good.path / "images").iterdir())
    calls.clear()
    monkeypatch.setattr(store.PreparedWriter, "write_sample", flaky)
    with pytest.raises(KeyboardInterrupt):  # an interrupted --force keeps the previous complete version
        prepare("cvc", root=tmp_path, source=cvc_copy, force=True, workers=1)
    assert store.is_complete(good.path) and sorted(p.name for p in (good.path / "images").iterdir()) == before


def test_killed_prepare_temp_is_cleaned_and_never_complete(tmp_path):
    target = tmp_path / "data" / "prepared" / "synthetic-polyp"
    dead = target.parent / ".synthetic-polyp.tmp-999999-abcd"  # a pid that does not exist
    (dead / "images").mkdir(parents=True)
    assert not store.is_complete(dead) and not target.exists()
    prepare_dataset("synthetic-polyp", root=tmp_path, n=4, size=(32, 32))
    assert not dead.exists() and store.is_complete(target)


def test_ensure_prepared(tmp_path, shared_data, monkeypatch):
    monkeypatch.setitem(synthetic.DEFAULT_N, "synthetic-lesion", 10)  # the default 200 takes seconds
    d = ensure_prepared("synthetic-lesion", root=tmp_path)  # prepared on first use
    assert store.is_complete(d) and len(read_manifest(d)) == 10
    assert ensure_prepared("synthetic-lesion", root=tmp_path) == d
    with pytest.raises(UserError, match=r"imbaseg download drive --from PATH && imbaseg prepare drive"):
        ensure_prepared("drive", root=tmp_path)
    with pytest.raises(UserError, match=r"imbaseg download isic2018 && imbaseg prepare isic2018"):
        ensure_prepared("isic", root=tmp_path)
    with pytest.raises(UserError, match="Did you mean 'cvc'"):
        ensure_prepared("cvd", root=tmp_path)
    prepare("cvc", root=tmp_path, source=shared_data / "samples" / "CVC-ClinicDB")
    assert ensure_prepared("cvc-clinicdb", root=tmp_path).name == "cvc"
    (tmp_path / "data" / "prepared" / "cvc" / "masks" / "1.png").unlink()
    with pytest.raises(UserError, match="incomplete .*masks.*1.png.*--force"):
        ensure_prepared("cvc", root=tmp_path)


def test_manifest_errors(tmp_path):
    with pytest.raises(UserError, match="not prepared"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("id,split\n1,train\n")
    with pytest.raises(UserError, match="lacks the column"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("id,split,height,width,fg_fraction,source\n007,tarin,1,1,0.5,x\n")
    with pytest.raises(UserError, match="unknown split 'tarin'"):
        read_manifest(tmp_path)


FIRST_USE = """
import sys, time
from imbaseg.data import prepare, synthetic
synthetic.DEFAULT_N["synthetic-lesion"] = 40
real = prepare.prepare_dataset
def counted(*a, **k):
    print("PREPARED", flush=True)
    time.sleep(0.5)  # widen the race: without the lock the other process would start its own prepare
    return real(*a, **k)
prepare.prepare_dataset = counted
while time.time() < float(sys.argv[2]):
    time.sleep(0.01)
print(prepare.ensure_prepared("synthetic-lesion", root=sys.argv[1]))
"""


def test_synthetic_first_use_is_prepared_once_by_two_processes(tmp_path):
    """Two processes ask for an unprepared synthetic set at the same instant: one prepares, the other
    waits on the lock and uses the result (torchrun ranks, two trainings)."""
    import subprocess
    import sys
    import time

    start = str(time.time() + 2.5)  # both have imported by then
    procs = [
        subprocess.Popen([sys.executable, "-c", FIRST_USE, str(tmp_path), start], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    target = tmp_path / "data" / "prepared" / "synthetic-lesion"
    assert sum(out.count("PREPARED") for out, _ in outs) == 1
    assert [out.split()[-1] for out, _ in outs] == [str(target)] * 2
    assert store.is_complete(target) and len(read_manifest(target)) == 40
