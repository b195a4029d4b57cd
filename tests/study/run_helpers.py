"""Helpers of the study-run tests: tiny prepared projects, study files, study runs as real processes, and
reading back what the cells left in their run folders."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# every cell: an 8-channel U-Net on the 32x32 tiny sets, 16 training images in batches of 4, bit-exact
BASE_SET = {
    "data.size": [32, 32],
    "data.num_workers": 0,
    "model.base_channels": 8,
    "train.epochs": 2,
    "train.batch_size": 4,
    "train.device": "cpu",
    "train.deterministic": True,
    "train.early_stopping": 0,
}
TIMEOUT = 600
STARTED: list[subprocess.Popen] = []  # every study process a test started (``reap`` ends those left running)


def prepare_tiny(root: Path, datasets=("synthetic-polyp", "synthetic-lesion")) -> Path:
    """``root/data/prepared/<dataset>``: 24 images of 32x32 (16 train, 4 val, 4 test) per dataset."""
    from imbaseg.data.prepare import prepare_dataset

    for d in datasets:
        prepare_dataset(d, root=root, n=24, size=(32, 32), seed=3)
    return root


def copy_project(src: Path, dst: Path) -> Path:
    """A second project with the same prepared data (a study's run folders are the same in both)."""
    shutil.copytree(src / "data", dst / "data")
    return dst


def write_study(path: Path, datasets: dict, losses=("dice",), seeds=(1,), name: str = "t", **top) -> Path:
    """A study file: ``datasets`` maps a dataset to its own ``set`` (every cell starts from synthetic.yaml
    with ``BASE_SET`` first)."""
    data = {
        "name": name,
        "datasets": {d: {"config": "synthetic.yaml", "set": dict(s or {})} for d, s in datasets.items()},
        "losses": list(losses),
        "seeds": list(seeds),
        "metrics": ["dice", "hd95"],
        "set": {**BASE_SET, **top.pop("set", {})},
        **top,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load(path: Path, root: Path):
    """(study, its cells under ``root``)."""
    from imbaseg.study.spec import cells, load_study

    study = load_study(path)
    return study, cells(study, root)


def study_cmd(path: Path, root: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "imbaseg",
        "study",
        "run",
        str(path),
        "--root",
        str(root),
        "--no-report",
        "--no-progress",
        *args,
    ]


def start_study(path: Path, root: Path, *args: str, out: Path | None = None) -> subprocess.Popen:
    """``imbaseg study run`` as a real process (its output in ``out``, default root/run-<n>.out)."""
    out = out or root / f"run-{len(list(root.glob('run-*.out')))}.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        study_cmd(path, root, *args), stdout=open(out, "w"), stderr=subprocess.STDOUT, cwd=root, env=env
    )
    proc.out = out
    STARTED.append(proc)
    return proc


def reap() -> None:
    """End the study processes a failed test left running (by their pid; their cells stop with them)."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> str:
    """Wait for ``proc``; its output."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"timed out; output:\n{proc.out.read_text()}") from None
    return proc.out.read_text()


def wait_until(pred, what: str, proc: subprocess.Popen | None = None, timeout: float = TIMEOUT, every=0.02):
    """Poll ``pred()`` until it returns something truthy (returned); fail when ``proc`` ends first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.out.read_text()
            raise AssertionError(f"the study ended (rc {proc.returncode}) before {what}:\n{out}")
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def freeze_each(preds, what: str, proc: subprocess.Popen, timeout: float = TIMEOUT) -> list[int]:
    """Poll every ``preds[i]()`` (each returns a pid or None) together and SIGSTOP each process the moment
    its predicate holds, so that no cell runs on to its end while another one is still awaited; the pids."""
    pids: list[int | None] = [None] * len(preds)

    def step():
        for i, pred in enumerate(preds):
            if pids[i] is None and (pid := pred()):
                stop(pid)
                pids[i] = pid
        return all(pids)

    wait_until(step, what, proc, timeout)
    return [int(p) for p in pids]


def status(cell) -> dict:
    from imbaseg.training.run_dir import RunDir

    return RunDir(cell.run_dir).read_status()


def holder(cell) -> dict | None:
    from imbaseg.locks import read_holder
    from imbaseg.training.run_dir import RunDir

    return read_holder(RunDir(cell.run_dir).lock_file) or None


def running_at_epoch(cell, epoch: int) -> int | None:
    """The pid of the process training ``cell`` once status.json says ``epoch`` epochs are done."""
    st, h = status(cell), holder(cell)
    if h and st.get("state") == "running" and (st.get("epoch") or 0) >= epoch:
        return h["pid"]
    return None


def state(study, cell) -> str:
    from imbaseg.study.state import cell_state

    return cell_state(study, cell).state


def history(cell) -> list[dict]:
    """history.csv without the timing column (seconds differ between runs)."""
    with open(Path(cell.run_dir) / "history.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def per_image(cell, split: str = "test") -> str:
    return (Path(cell.run_dir) / "eval" / split / "per_image.csv").read_text()


def trainings(cell) -> int:
    """How many times a trainer started on the cell (train.log's start line, a resume included)."""
    log = Path(cell.run_dir) / "train.log"
    return sum(" dataset=" in line for line in log.read_text().splitlines()) if log.is_file() else 0


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and mtime."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def gone(pid: int) -> bool:
    from imbaseg.paths import pid_alive

    return not pid_alive(pid)


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def cont(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def fake_done(study, cell, dice: float = 0.5) -> None:
    """A cell that looks trained and evaluated with the study's options (no training): status finished,
    summary.json recording the options, a per_image.csv."""
    from imbaseg.training.run_dir import RunDir

    ev, rd = study.evaluate, RunDir(cell.run_dir)
    rd.eval_dir(study.split).mkdir(parents=True, exist_ok=True)
    summary = {
        "checkpoint": {"which": ev["checkpoint"]},
        "threshold": ev["threshold"],
        "threshold_mode": "fixed",
        "tta": ev["tta"],
        "hd_convention": ev["hd_convention"],
        "nsd_tau": ev["nsd_tau"],
        "inference": {"size": ev["size"]},
        "metrics": {"dice": {"mean": dice}},
    }
    rd.summary_json(study.split).write_text(json.dumps(summary))
    rd.per_image_csv(study.split).write_text("id,dice\na,0.5\n")
    rd.write_status(state="finished", epoch=2, epochs=2, seconds=3.0)
