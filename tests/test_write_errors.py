"""Full disks, read-only folders and temp files of killed processes, on real small tmpfs disks.

Every writer (atomic files, staged folders, prepare, the loader cache, training, figures) must stop with
one line naming the path (and, for a full disk, the space needed), keep what was there before, and leave
no temp file behind; temp files of dead processes go at the next start. The evaluation side (evaluate,
predict) is in tests/evaluation/test_eval_write_errors.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tmpfs_helpers import Disks, dead_pid, fill, temp_leftovers
from typer.testing import CliRunner

from imbaseg.errors import UserError
from imbaseg.paths import atomic_write_bytes, atomic_write_text, staged_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def disks():
    d = Disks()
    yield d
    d.unmount_all()


def _cli(*args):
    from imbaseg.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line(result) -> str:
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert "Traceback" not in text and text.startswith("error:"), text
    return text


# ----------------------------------------------------------------------------- paths


def test_atomic_write_on_a_full_disk_keeps_the_old_file(disks, tmp_path):
    d = disks.mount(tmp_path / "d", "256k")
    atomic_write_text(d / "f.bin", "old")
    full = r"no space left on the device holding .*f\.bin \(needs about 1\.0 MB, 2\d\d\.\d kB free\)"
    with pytest.raises(UserError, match=full):
        atomic_write_bytes(d / "f.bin", b"x" * 1_000_000)
    assert (d / "f.bin").read_text() == "old" and temp_leftovers(d) == []


def test_read_only_folders_are_one_line(disks, tmp_path):
    from imbaseg.paths import new_run_dir, staged_files

    d = disks.mount(tmp_path / "ro", "64k")
    (d / "sub").mkdir()
    disks.readonly(d)
    for attempt in (
        lambda: atomic_write_text(d / "x.txt", "x"),
        lambda: atomic_write_text(d / "new" / "x.txt", "x"),
        lambda: staged_dir(d / "folder").__enter__(),
        lambda: staged_files(d / "sub").__enter__(),
        lambda: new_run_dir("ds", "bce", "n", root=d),
    ):
        with pytest.raises(UserError, match="read-only file system"):
            attempt()


def test_staged_files_move_all_or_nothing(disks, tmp_path):
    from imbaseg.paths import staged_files

    d = disks.mount(tmp_path / "d", "512k")
    (d / "mine.txt").write_text("the user's own file")
    with staged_files(d) as stage:
        (stage / "a.bin").write_bytes(b"a" * 1000)
        (stage / "b.bin").write_bytes(b"b" * 1000)
    assert sorted(p.name for p in d.iterdir()) == ["a.bin", "b.bin", "mine.txt"]
    with pytest.raises(UserError, match="no space left"), staged_files(d) as stage:
        (stage / "c.bin").write_bytes(b"c" * 1000)
        (stage / "d.bin").write_bytes(b"d" * 2_000_000)  # the disk fills on the second file
    assert sorted(p.name for p in d.iterdir()) == ["a.bin", "b.bin", "mine.txt"]  # no c.bin, no staging
    assert (d / "a.bin").read_bytes() == b"a" * 1000


def test_stale_temps_of_dead_processes_are_removed_at_the_next_write(tmp_path):
    from imbaseg.paths import remove_stale_temps

    dead = dead_pid()
    stale = tmp_path / f".x.txt.{dead}.tmp"
    live = tmp_path / f".x.txt.{os.getppid()}.tmp"  # a live process's write in progress stays
    other = tmp_path / f".y.txt.{dead}.tmp"
    folder = tmp_path / f".run.tmp-{dead}-0123abcd"
    for f in (stale, live, other):
        f.write_bytes(b"partial")
    folder.mkdir()
    atomic_write_text(tmp_path / "x.txt", "new")
    assert not stale.exists() and live.exists() and other.exists()  # only x.txt's own dead temps
    removed = remove_stale_temps(tmp_path)
    assert set(removed) == {other, folder} and not folder.exists()
    user = tmp_path / ".notes.txt"  # a user's hidden file never matches
    user.write_text("keep")
    remove_stale_temps(tmp_path)
    assert user.exists()


# ----------------------------------------------------------------------------- prepare


def test_prepare_on_a_full_disk_and_on_a_read_only_folder(disks, tmp_path):
    data = disks.mount(tmp_path / "data", "300k")
    res = _cli("prepare", "synthetic-polyp", "--root", tmp_path, "--n", 40, "--size", 64, 64, "--workers", 1)
    text = _one_line(res)
    assert "no space left on the device holding" in text and "data/prepared/synthetic-polyp" in text
    assert "needs about" in text
    assert not (data / "prepared" / "synthetic-polyp").exists() and temp_leftovers(data) == []
    disks.readonly(data)
    text = _one_line(_cli("prepare", "synthetic-polyp", "--root", tmp_path, "--n", 4, "--size", 32, 32))
    assert "read-only file system" in text


def test_killed_prepare_leaves_nothing_after_the_next_prepare(tmp_path):
    from imbaseg.data.prepare import prepare_dataset

    prepared = tmp_path / "data" / "prepared"
    dead = dead_pid()
    (prepared / f".synthetic-polyp.tmp-{dead}-0123abcd" / "images").mkdir(parents=True)
    (prepared / f".synthetic-polyp.old-{dead}-0123abcd").mkdir()
    (prepared / f".synthetic-polyp.problems.txt.{dead}.tmp").write_text("partial")
    prepare_dataset("synthetic-polyp", root=tmp_path, n=4, size=(32, 32))
    assert sorted(p.name for p in prepared.iterdir()) == ["synthetic-polyp"]


# ----------------------------------------------------------------------------- the loader cache


def test_loader_cache_on_a_full_disk_is_one_line_not_sigbus(disks, tmp_path, tiny_root):
    """The memory-mapped cache reserves its space first: without that, writing the map on a full tmpfs
    kills the process with SIGBUS (exit -7) instead of raising."""
    cache = disks.mount(tmp_path / "cache", "1m")
    prepared = tiny_root / "data" / "prepared" / "synthetic-polyp"
    script = textwrap.dedent(f"""
        from imbaseg.data.dataset import SegDataset
        from imbaseg.errors import UserError
        try:
            SegDataset({str(prepared)!r}, "train", size=(256, 256), cache_dir={str(cache)!r})
        except UserError as exc:
            print("USERERROR", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    n = sum(1 for line in (prepared / "manifest.csv").read_text().splitlines() if ",train," in line)
    need = n * 256 * 256 * (3 + 1)  # images x H x W x (RGB + mask) bytes, e.g. 17 -> 4,456,448
    assert "USERERROR no space left on the device holding" in out.stdout, out.stdout + out.stderr
    assert f"(needs about {need / 1e6:.1f} MB, 1.0 MB free)" in out.stdout
    assert not list(cache.iterdir()) or [p.name for p in cache.iterdir()] == [".train.lock"]


def test_cache_moves_out_of_the_prepared_folder_and_stale_temps_go(tmp_path, tiny_root, monkeypatch):
    from imbaseg.data import dataset as ds_mod
    from imbaseg.data.dataset import SegDataset
    from imbaseg.paths import cache_dir

    prepared = tmp_path / "data" / "prepared" / "synthetic-polyp"
    shutil.copytree(tiny_root / "data" / "prepared" / "synthetic-polyp", prepared)
    old = SegDataset(prepared, "train", cache_dir=prepared / "cache").cache_path  # what older versions did
    expected = np.load(old)
    new_dir = cache_dir("synthetic-polyp", tmp_path)
    new_dir.mkdir(parents=True)
    stale = new_dir / f".{old.name}.{dead_pid()}.tmp"
    stale.write_bytes(b"\0" * 1000)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the moved cache must be used as it is, not rebuilt")

    monkeypatch.setattr(ds_mod, "decode_item", no_decoding)
    ds = SegDataset(prepared, "train")
    assert ds.cache_path == new_dir / old.name and not (prepared / "cache").exists()
    np.testing.assert_array_equal(np.load(ds.cache_path), expected)
    monkeypatch.undo()
    SegDataset(prepared, "val")  # a build in that folder removes a dead builder's temp file
    assert not stale.exists() and temp_leftovers(new_dir) == []


def test_prepared_dataset_on_a_read_only_share_trains(disks, tmp_path, tiny_root):
    from imbaseg.config import from_dict
    from imbaseg.paths import cache_dir
    from imbaseg.training.trainer import train

    share = disks.mount(tmp_path / "proj" / "data" / "prepared", "4m")
    shutil.copytree(tiny_root / "data" / "prepared" / "synthetic-polyp", share / "synthetic-polyp")
    disks.readonly(share)
    cfg = from_dict(_tiny(tmp_path / "proj", "ro", epochs=1))
    result = train(cfg)
    assert len(result.history) == 1 and (result.run_dir / "checkpoints" / "last.pt").is_file()
    assert len(list(cache_dir("synthetic-polyp", tmp_path / "proj").glob("*.npy"))) == 2  # train, val


# ----------------------------------------------------------------------------- training


def _tiny(root: Path, name: str, epochs: int = 2) -> dict:
    return {
        "name": name,
        "data": {"dataset": "synthetic-polyp", "root": str(root), "size": [32, 32]},
        "model": {"base_channels": 4},
        "loss": {"name": "bce"},
        "optim": {"name": "adamw", "lr": 3e-3},
        "train": {"epochs": epochs, "batch_size": 4, "device": "cpu", "log_interval": 2,
                  "max_train_batches": 2},
    }


class _FillAfterFirstEpoch:
    """A TrainerCallbacks stand-in that fills the run's disk once epoch 1 is saved, leaving 64 kB: room
    for status.json and train.log, not for a checkpoint (~0.4 MB)."""

    def __init__(self, folder: Path):
        self.folder, self.epochs = folder, 0

    def on_epoch_end(self, report):
        self.epochs += 1
        if self.epochs == 1:
            fill(self.folder, leave=65536)


def test_a_full_disk_mid_training_stops_with_one_line(disks, tmp_path, tiny_root, capfd):
    from imbaseg.config import from_dict
    from imbaseg.training.run_dir import RunDir, load_checkpoint
    from imbaseg.training.trainer import train

    proj = tmp_path / "proj"
    runs = disks.mount(proj / "runs", "8m")
    (proj / "data").symlink_to(tiny_root / "data")
    cfg = from_dict(_tiny(proj, "full"))
    with pytest.raises(UserError, match=r"no space left on the device holding .*checkpoints/last\.pt "
                                        r"\(needs about"):
        train(cfg, callbacks=_FillAfterFirstEpoch(runs))
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    run = RunDir(runs / "synthetic-polyp" / "bce" / "full")
    assert load_checkpoint(run.checkpoint_file("last"))["epoch"] == 1  # the previous state, intact
    assert load_checkpoint(run.checkpoint_file("best"))["epoch"] == 1
    assert temp_leftovers(run.path) == []
    status = run.read_status()
    assert status["state"] == "failed" and "no space left" in status["error"]

    # after freeing space (and a kill that left a temp file), --resume finishes the run
    (runs / "filler").unlink()
    stale = run.checkpoints_dir / f".last.pt.{dead_pid()}.tmp"
    stale.write_bytes(b"partial")
    result = train(cfg, resume=run.path)
    assert [r["epoch"] for r in result.history] == [1, 2] and not stale.exists()

    disks.readonly(runs)  # a read-only run folder: one line at the start
    with pytest.raises(UserError, match="read-only file system"):
        train(cfg, resume=run.path)


def test_a_full_disk_before_the_first_epoch_leaves_no_run_folder(disks, tmp_path, tiny_root):
    from imbaseg.config import from_dict
    from imbaseg.training.trainer import train

    proj = tmp_path / "proj"
    runs = disks.mount(proj / "runs", "256k")
    (proj / "data").symlink_to(tiny_root / "data")
    (runs / "synthetic-polyp" / "bce").mkdir(parents=True)
    fill(runs)
    with pytest.raises(UserError, match="no space left on the device holding .*synthetic-polyp/bce/first"):
        train(from_dict(_tiny(proj, "first")))
    assert not list(runs.rglob("first*")) and temp_leftovers(runs) == []


# ----------------------------------------------------------------------------- figures


def test_a_figure_on_a_full_disk_is_one_line(disks, tmp_path, tiny_root):
    from imbaseg.viz.weights import visualize_weights

    figs = disks.mount(tmp_path / "Figures", "16k")  # smaller than the PNG
    with pytest.raises(UserError, match="no space left on the device holding .*weights.png"):
        visualize_weights([2.0], ["synthetic-polyp"], None, figs / "weights.png", tiny_root)
    assert list(figs.iterdir()) == []
