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
    freeze_each,
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
    assert len(calls) == 1 and calls[0]["study_file"] == path and calls[0]["allow_missing"] is False
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

    # the uninterrupted study (its short cells are never interrupted below: no need to run them here)
    out = finish(start_study(path, ref_root, "--jobs", "2", "--only", "dataset=synthetic-lesion"))
    assert "all 2 cells done" in out, out

    # 1) SIGINT while both long cells train (each frozen with SIGSTOP once past epoch 1, so that none ends
    # before the signal arrives)
    run1 = start_study(path, project, "--jobs", "2")
    past_1 = [lambda c=c: running_at_epoch(c, 1) for c in long]
    pids = freeze_each(past_1, "both long cells past epoch 1", run1)
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
    next_epoch = [lambda c=c, e=e: running_at_epoch(c, e + 1) for c, e in zip(long, saved, strict=True)]
    pids = freeze_each(next_epoch, "both resumed cells' next epoch", run2)
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
    for c, r in zip(long, ref[2:], strict=True):
        assert history(c) == history(r), c.label  # the same losses and Dice, epoch by epoch
        assert per_image(c) == per_image(r), c.label


def _log(cell) -> str:
    r = cell.run_dir
    return f"{r.parent.parent.name}_{r.parent.name}_{r.name}.log"


@pytest.mark.slow
def test_failed_cells_are_recorded_the_others_go_on_and_retry_resumes(project):
    """One cell hits NaN (lr 1e6), the other's process is killed with SIGKILL by someone else: both are
    recorded as failed, the study exits 1 with the list; a second run leaves them alone; --retry-failed
    takes over the killed cell's stale lock and resumes it from last.pt."""
    datasets = {"synthetic-polyp": {"train.epochs": 3}, "synthetic-lesion": {"optim.lr": 1.0e6}}
    path = write_study(project / "s.yaml", datasets)
    study, (killed, nan) = load(path, project)
    run = start_study(path, project, "--jobs", "2")
    pid = wait_until(lambda: running_at_epoch(killed, 1), "epoch 1", run)
    os.kill(pid, signal.SIGKILL)
    out = finish(run)
    assert run.returncode == 1, out
    assert state(study, killed) == "failed" and state(study, nan) == "failed", out
    assert "signal SIGKILL" in status(killed)["error"] and holder(killed)["pid"] == pid  # its lock is left
    assert "training loss became nan" in status(nan)["error"] and status(nan)["stage"] == "train"
    assert "failed: synthetic-lesion / dice / seed 1" in out and "2 cell(s) failed" in out
    shown = invoke("status", path, "--root", project)
    assert "training loss became nan" in shown.output and "signal SIGKILL" in shown.output

    again = invoke("run", path, "--root", project, "--no-progress", "--no-report")  # without --retry-failed
    assert again.exit_code == 1 and status(killed)["attempts"] == 1 and status(nan)["attempts"] == 1

    out = finish(start_study(path, project, "--jobs", "2", "--retry-failed"))
    assert "is stale" in out and f"pid {pid}" in out, out
    assert state(study, killed) == "done" and state(study, nan) == "failed"
    st = status(killed)
    assert st["resumes"] == 1 and st["attempts"] == 2 and len(history(killed)) == 3
    assert status(nan)["attempts"] == 2


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


# ----------------------------------------------------------------------------- small parts


@pytest.mark.parametrize(
    "text, minutes",
    [("90", 90), ("1:30", 2), ("0:30", 1), ("24:00:00", 1440), ("1-00", 1440), ("2-12:30", 3630),
     ("1-0:0:1", 1441)],
)
def test_slurm_time_formats(text, minutes):
    from imbaseg.study.slurm import parse_time

    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["0", "soon", "1:2:3:4", "-5", ""])
def test_bad_slurm_times(text):
    from imbaseg.errors import UserError
    from imbaseg.study.slurm import parse_time

    with pytest.raises(UserError, match="slurm-time"):
        parse_time(text)


def test_exit_texts():
    from imbaseg.study.runner import exit_text

    assert exit_text(-9) == "signal SIGKILL"
    assert exit_text(143) == "exit code 143 (SIGTERM)"
    assert exit_text(2) == "exit code 2" and exit_text(None) == "an unknown exit"


def test_local_executor_splits_threads_and_gpus(project, monkeypatch):
    """Each cell process gets cores // jobs threads and, with GPUs, the least used one."""
    import imbaseg.study.runner as R

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(R, "cpu_count", lambda: 8)
    started = []

    class FakePopen:
        def __init__(self, cmd, env, **kw):
            self.pid, self.cmd, self.env = 1000 + len(started), cmd, env
            started.append(self)

        def poll(self):
            return None

    monkeypatch.setattr(R.subprocess, "Popen", FakePopen)
    path = write_study(project / "s.yaml", {"synthetic-polyp": {}}, ("dice", "bce"), (1, 2))
    study, cells = load(path, project)
    ex = R.LocalExecutor(study, R.study_files(study, project), jobs=3, root=project)
    ex.launch(cells)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in started] == ["3", "5", "3"]
    assert {p.env["OMP_NUM_THREADS"] for p in started} == {"2"}  # 8 cores // 3 jobs
    assert len(ex.active()) == 4 and len(ex.running()) == 3
    assert all("--parent-pid" in p.cmd for p in started)
    assert "3 cell(s) at once, 2 GPU(s), one per cell" in ex.describe()


def test_study_display_lines_and_live_table(project):
    """Off a terminal: one line per state change; on one: a live table redrawn from on_tick."""
    from rich.console import Console

    from imbaseg.cli import render
    from imbaseg.study.runner import CellView

    path = write_study(project / "s.yaml", {"synthetic-polyp": {}}, ("dice", "bce"))
    _, cells = load(path, project)
    views = [CellView(c, "queued", "queued (todo: not started)") for c in cells]
    for live in (False, True):
        console = Console(record=True, width=200, force_terminal=live)
        old, render.console = render.console, console
        try:
            with render.StudyDisplay(live) as display:
                display.on_start(views, "local executor: 2 cell(s) at once")
                running = CellView(cells[0], "running", "running: pid 1", epoch=1, epochs=2, seconds=3.0)
                display.on_change(running)
                display.on_tick([running, views[1]])
                display.on_message("a notice", "warning")
        finally:
            render.console = old
        text = console.export_text()
        assert "local executor: 2 cell(s) at once. 2 cells: 2 queued." in text and "a notice" in text
        if live:
            assert "1/2" in text and "synthetic-polyp" in text  # the table, with the epoch column
        else:
            assert "synthetic-polyp / dice / seed 1: running epoch 1/2 - running: pid 1" in text
