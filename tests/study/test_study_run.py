"""imbaseg study plan / run / status and the local executor, for real: tiny cells (8-channel U-Nets, 32x32,
16 training images) trained by real cell processes; kills are real signals to real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from run_helpers import (
    cont,
    copy_project,
    fake_done,
    finish,
    gone,
    history,
    holder,
    load,
    mtimes,
    per_image,
    prepare_tiny,
    reap,
    running_at_epoch,
    start_study,
    state,
    status,
    stop,
    trainings,
    tree,
    wait_until,
    write_study,
)
from typer.testing import CliRunner

from imbaseg.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _reap():
    yield
    reap()


@pytest.fixture(scope="module")
def data_template(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("study-data"))


@pytest.fixture
def project(data_template, tmp_path):
    """A fresh project root holding the tiny prepared synthetic-polyp and synthetic-lesion."""
    return copy_project(data_template, tmp_path / "project")


def invoke(*args: str):
    return runner.invoke(app, ["study", *map(str, args)], env={"COLUMNS": "250"})


# ----------------------------------------------------------------------------- plan and status (no training)


def test_plan_shows_every_state_and_writes_nothing(project):
    path = write_study(project / "s.yaml", {"synthetic-polyp": {}, "synthetic-lesion": {}}, ("dice", "bce"))
    study, cells = load(path, project)
    fake_done(study, cells[0])
    from imbaseg.training.run_dir import RunDir

    partial = RunDir(cells[1].run_dir)
    partial.checkpoints_dir.mkdir(parents=True)
    partial.checkpoint_file("last").write_bytes(b"")
    partial.write_status(state="interrupted", epoch=1, epochs=2)
    RunDir(cells[2].run_dir).path.mkdir(parents=True)
    RunDir(cells[2].run_dir).write_status(state="failed", error="NonFiniteLoss: training loss became nan")
    before = tree(project)
    result = invoke("plan", path, "--root", project)
    assert result.exit_code == 0, result.output
    assert tree(project) == before  # nothing written, nothing touched
    out = result.output
    for words in (
        "done",
        "partial",
        "epoch 1/2; resumes from last.pt",
        "failed",
        "training loss became nan",
        "todo",
        "not started",
    ):
        assert words in out, (words, out)
    assert "4 cells: 1 done, 1 partial, 1 todo, 1 failed" in out
    assert "would run 2 of them" in out


def test_plan_only_selects_and_bad_only_is_one_line(project):
    path = write_study(
        project / "s.yaml", {"synthetic-polyp": {}, "synthetic-lesion": {}}, ("dice", "bce"), (1, 2)
    )
    result = invoke("plan", path, "--root", project, "--only", "dataset=synthetic-lesion", "--only", "seed=2")
    assert result.exit_code == 0, result.output
    assert "2 cells: 2 todo" in result.output
    assert "synthetic-polyp" not in result.output
    bad = invoke("plan", path, "--root", project, "--only", "los=dice")
    assert bad.exit_code == 2 and "Did you mean 'loss'" in bad.output


def test_status_shows_dice_seconds_and_errors(project):
    path = write_study(project / "s.yaml", {"synthetic-polyp": {}}, ("dice", "bce"))
    study, cells = load(path, project)
    fake_done(study, cells[0], dice=0.8125)
    from imbaseg.training.run_dir import RunDir

    RunDir(cells[1].run_dir).path.mkdir(parents=True)
    error = "RuntimeError: out of memory\nmore"
    RunDir(cells[1].run_dir).write_status(state="failed", error=error, seconds=7)
    result = invoke("status", path, "--root", project)
    assert result.exit_code == 0, result.output
    assert "0.8125" in result.output and "RuntimeError: out of memory" in result.output
    assert "failed: synthetic-polyp / bce / seed 1" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--executor", "slrum"], "Did you mean 'slurm'"),
        (["--slurm-mem", "1G"], "--slurm-mem needs --executor slurm"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--executor", "slurm", "--slurm-time", "soon"], "bad --slurm-time 'soon'"),
    ],
)
def test_run_refuses_bad_flags_in_one_line(project, args, message):
    path = write_study(project / "s.yaml", {"synthetic-polyp": {}})
    result = invoke("run", path, "--root", project, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (project / "runs").exists()


def test_slurm_without_submitit_says_how_to_install(project, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    path = write_study(project / "s.yaml", {"synthetic-polyp": {}})
    result = invoke("run", path, "--root", project, "--executor", "slurm")
    assert result.exit_code == 2
    assert "pip install 'imbaseg[slurm]'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_done_study_starts_nothing_then_reports(project, monkeypatch):
    import imbaseg.cli.study_cmds as cmds

    path = write_study(project / "s.yaml", {"synthetic-polyp": {}}, ("dice", "bce"))
    study, cells = load(path, project)
    for c in cells:
        fake_done(study, c)
    calls = []
    monkeypatch.setattr(cmds, "report", lambda **kw: calls.append(kw))
    result = invoke("run", path, "--root", project, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "2 cells: 2 done" in result.output and "all 2 cells done" in result.output
    assert not (project / "studies" / "t" / "logs").exists()  # no cell process was started
    import imbaseg.study.runner as R

    if R.report_available():
        assert calls and calls[0]["study_file"] == path and calls[0]["allow_missing"] is False
    monkeypatch.setattr(R, "report_available", lambda: False)
    result = invoke("run", path, "--root", project, "--no-progress")
    assert "not available in this version" in result.output
    last = json.loads((project / "studies" / "t" / "last_run.json").read_text())
    assert last["executor"] == "local" and [c["state"] for c in last["cells"]] == ["done", "done"]


def test_a_cell_held_by_a_live_process_is_busy_and_untouched(project):
    from imbaseg.locks import process_start
    from imbaseg.study.cell import EXIT_BUSY, run_cell

    path = write_study(project / "s.yaml", {"synthetic-polyp": {}})
    study, (cell,) = load(path, project)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        import socket

        cell.run_dir.mkdir(parents=True)
        lock = {
            "host": socket.gethostname(),
            "pid": sleeper.pid,
            "pid_start": process_start(sleeper.pid),
            "job": None,
            "started": "now",
            "token": "x",
            "what": "test",
        }
        (cell.run_dir / ".lock").write_text(json.dumps(lock))
        outcome = run_cell(study, cell)
        assert outcome.outcome == "busy" and outcome.exit_code == EXIT_BUSY
        assert sorted(p.name for p in cell.run_dir.iterdir()) == [".lock"]
        assert state(study, cell) == "running"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cell_command_runs_torchrun_for_several_processes(tmp_path):
    from imbaseg.study.cell import cell_command

    one = cell_command(tmp_path / "s.yaml", "abc", tmp_path, parent_pid=7)
    assert one[1:] == [
        "-m",
        "imbaseg",
        "study",
        "run-cell",
        str(tmp_path / "s.yaml"),
        "--cell",
        "abc",
        "--root",
        str(tmp_path),
        "--parent-pid",
        "7",
    ]
    two = cell_command(tmp_path / "s.yaml", "abc", nproc=2, retry_failed=True)
    assert two[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert two[-1] == "--retry-failed"


# ----------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_killed_study_resumes_to_the_results_of_an_uninterrupted_one(project, tmp_path):
    """SIGINT, then SIGKILL, in the middle: the rerun runs only the unfinished cells, resumes the partial ones
    from last.pt, leaves finished cells' files untouched, and ends bit-identical to an uninterrupted study."""
    datasets = {"synthetic-polyp": {"train.epochs": 1}, "synthetic-lesion": {"train.epochs": 4}}
    path = write_study(project / "s.yaml", datasets, ("dice",), (1, 2))
    ref_root = copy_project(project, tmp_path / "reference")
    study, cells = load(path, project)
    _, ref = load(path, ref_root)
    short, long = cells[:2], cells[2:]

    out = finish(start_study(path, ref_root, "--jobs", "2"))  # the uninterrupted study
    assert "all 4 cells done" in out, out

    # 1) SIGINT while both long cells train (each frozen with SIGSTOP once past epoch 1, so that none ends
    # before the signal arrives)
    run1 = start_study(path, project, "--jobs", "2")
    pids = [wait_until(lambda c=c: running_at_epoch(c, 1), "a long cell past epoch 1", run1) for c in long]
    for pid in pids:
        stop(pid)
    os.kill(run1.pid, signal.SIGINT)
    for pid in pids:
        cont(pid)
    out = finish(run1)
    assert run1.returncode == 130, out
    assert "stopped by SIGINT" in out
    assert [state(study, c) for c in cells] == ["done", "done", "partial", "partial"], out
    assert all(holder(c) is None for c in cells)
    assert all(status(c)["signal"] == "SIGINT" for c in long)
    done_files = {str(c.run_dir): mtimes(c.run_dir) for c in short}
    saved = [status(c)["epoch"] for c in long]

    # 2) SIGKILL of the study itself: its cells notice (parent-death signal), save and stop
    run2 = start_study(path, project, "--jobs", "2")
    pids = [
        wait_until(lambda c=c, e=e: running_at_epoch(c, e + 1), "a resumed cell's next epoch", run2)
        for c, e in zip(long, saved, strict=True)
    ]
    for pid in pids:
        stop(pid)
    os.kill(run2.pid, signal.SIGKILL)
    for pid in pids:
        cont(pid)
    finish(run2)
    assert run2.returncode == -signal.SIGKILL
    for pid in pids:
        wait_until(lambda p=pid: gone(p), "the orphaned cell to save and exit", timeout=120)
    assert all(status(c)["signal"] == "SIGTERM" and state(study, c) == "partial" for c in long)

    # 3) the same command again finishes the study
    out = finish(start_study(path, project, "--jobs", "2"))
    assert "all 4 cells done" in out, out
    assert {str(c.run_dir): mtimes(c.run_dir) for c in short} == done_files  # untouched
    for c in short:  # never started again: one training, one cell process
        assert trainings(c) == 1 and status(c)["attempts"] == 1
    for c in long:
        assert trainings(c) == 3 and status(c)["resumes"] == 2 and status(c)["attempts"] == 3
        assert "resuming from" in (project / "studies" / "t" / "logs").joinpath(_log(c)).read_text()
    for c, r in zip(cells, ref, strict=True):
        assert history(c) == history(r), c.label  # the same losses and Dice, epoch by epoch
        assert per_image(c) == per_image(r), c.label


def _log(cell) -> str:
    r = cell.run_dir
    return f"{r.parent.parent.name}_{r.parent.name}_{r.name}.log"


@pytest.mark.slow
def test_a_nan_cell_is_recorded_as_failed_and_the_others_finish(project):
    datasets = {"synthetic-polyp": {}, "synthetic-lesion": {"optim.lr": 1.0e6}}
    path = write_study(project / "s.yaml", datasets)
    study, (good, bad) = load(path, project)
    result = invoke("run", path, "--root", project, "--jobs", "2", "--no-progress", "--no-report")
    assert result.exit_code == 1, result.output
    assert state(study, good) == "done" and state(study, bad) == "failed"
    st = status(bad)
    assert "training loss became nan" in st["error"] and st["stage"] == "train"
    assert "failed: synthetic-lesion / dice / seed 1" in result.output
    assert "1 cell(s) failed" in result.output and "--retry-failed" in result.output
    shown = invoke("status", path, "--root", project)
    assert "training loss became nan" in shown.output and "failed" in shown.output
    # run again without --retry-failed: the failed cell is left alone (no new attempt), still exit 1
    again = invoke("run", path, "--root", project, "--no-progress", "--no-report")
    assert again.exit_code == 1 and status(bad)["attempts"] == 1


@pytest.mark.slow
def test_a_killed_cell_is_recorded_and_its_stale_lock_taken_over_on_retry(project):
    path = write_study(project / "s.yaml", {"synthetic-polyp": {}}, set={"train.epochs": 3})
    study, (cell,) = load(path, project)
    run = start_study(path, project)
    pid = wait_until(lambda: running_at_epoch(cell, 1), "epoch 1", run)
    os.kill(pid, signal.SIGKILL)  # the cell process dies; the study goes on and records it
    out = finish(run)
    assert run.returncode == 1, out
    assert "signal SIGKILL" in out and state(study, cell) == "failed"
    assert "signal SIGKILL" in status(cell)["error"]
    assert holder(cell)["pid"] == pid  # left behind by the killed process
    out = finish(start_study(path, project, "--retry-failed"))
    assert "all 1 cells done" in out, out
    assert "is stale" in out and f"pid {pid}" in out
    st = status(cell)
    assert st["resumes"] == 1 and st["attempts"] == 2 and len(history(cell)) == 3


@pytest.mark.slow
def test_two_study_runs_at_once_run_every_cell_exactly_once(project):
    path = write_study(
        project / "s.yaml",
        {"synthetic-polyp": {}, "synthetic-lesion": {}},
        ("dice", "bce"),
        set={"train.epochs": 1},
    )
    study, cells = load(path, project)
    a, b = start_study(path, project), start_study(path, project)
    out_a, out_b = finish(a), finish(b)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    for c in cells:
        assert state(study, c) == "done"
        assert trainings(c) == 1 and status(c)["attempts"] == 1, c.label


@pytest.mark.slow
def test_a_cell_under_torchrun(project):
    from imbaseg.study.cell import cell_command

    path = write_study(project / "s.yaml", {"synthetic-polyp": {}}, set={"train.epochs": 1})
    study, (cell,) = load(path, project)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        cell_command(path, cell.key, project, nproc=2), env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert state(study, cell) == "done"
    assert json.loads((cell.run_dir / "env.json").read_text())["world_size"] == 2
    assert holder(cell) is None
