"""imbaseg study run --executor slurm on a real single-node Slurm (scripts/slurm/start.sh; .ci/run starts it
and exports SLURM_CONF). Skipped, with the reason, where no Slurm answers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest
from run_helpers import (
    cont,
    copy_project,
    finish,
    history,
    holder,
    load,
    per_image,
    prepare_tiny,
    reap,
    running_at_epoch,
    start_study,
    state,
    status,
    stop,
    trainings,
    wait_until,
    write_study,
)

SLURM_ARGS = ("--executor", "slurm", "--slurm-cpus-per-cell", "1", "--slurm-mem", "1G", "--slurm-time", "15")


def _slurm_problem() -> str | None:
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is not set (start a test Slurm with `make slurm-start`; .ci/run does)"
    if shutil.which("sinfo") is None:
        return "no sinfo on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo does not answer: {exc}"
    if out.returncode != 0 or not re.search(r"idle|mixed|allocated", out.stdout):
        return f"sinfo does not show a usable node: {(out.stdout + out.stderr).strip()[:200]}"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install 'imbaseg[slurm]')"
    return None


PROBLEM = _slurm_problem()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(PROBLEM is not None, reason=f"no test Slurm: {PROBLEM}")]


NAME = f"slurmtest{os.getpid()}"  # the jobs' name is imbaseg-<study name>: what teardown cancels


@pytest.fixture(autouse=True)
def _reap():
    yield
    reap()
    subprocess.run(["scancel", f"--name=imbaseg-{NAME}"], timeout=30)


@pytest.fixture(scope="module")
def data_template(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("slurm-data"))


@pytest.fixture
def project(data_template, tmp_path):
    return copy_project(data_template, tmp_path / "project")


def test_four_cells_through_one_slurm_job_array(project):
    """The 4 cells go to Slurm as one job array; Ctrl-C on the study stops only the following (exit 0), the
    jobs finish on their own, and the same command then finds every cell done."""
    path = write_study(project / "s.yaml", {"synthetic-polyp": {}, "synthetic-lesion": {}}, ("dice", "bce"),
                       name=NAME, set={"train.epochs": 1})
    study, cells = load(path, project)
    run = start_study(path, project, *SLURM_ARGS)
    wait_until(lambda: any(holder(c) for c in cells), "a cell's job to start", run)
    os.kill(run.pid, signal.SIGINT)
    out = finish(run)
    assert run.returncode == 0, out
    assert "no longer following the cells" in out and "go on as Slurm jobs" in out
    wait_until(lambda: all(state(study, c) == "done" for c in cells), "the jobs to finish on their own",
               timeout=900, every=1)
    out = finish(start_study(path, project, *SLURM_ARGS))
    assert "4 cells: 4 done" in out and "all 4 cells done" in out, out
    jobs = [status(c)["slurm_job"] for c in cells]
    arrays = {j.split("_")[0] for j in jobs}
    assert len(arrays) == 1 and sorted(j.split("_")[1] for j in jobs) == ["0", "1", "2", "3"], jobs
    for c in cells:
        assert trainings(c) == 1 and status(c)["attempts"] == 1
    assert any((project / "studies" / NAME / "slurm").rglob("*_log.out"))


def test_usr2_requeues_the_job_and_the_cell_resumes_from_last_pt(project, tmp_path):
    """scancel --signal=USR2 (what Slurm sends before a time limit, and what preemption looks like to
    submitit): the cell saves last.pt, the job is requeued, the requeued job resumes; the result equals an
    uninterrupted run of the same cell."""
    path = write_study(project / "s.yaml", {"synthetic-polyp": {}}, name=NAME, set={"train.epochs": 4})
    ref_root = copy_project(project, tmp_path / "reference")
    study, (cell,) = load(path, project)
    _, (ref,) = load(path, ref_root)
    finish(start_study(path, ref_root, "--jobs", "2"))  # one CPU thread, as the Slurm cell has
    assert state(study, ref) == "done"

    run = start_study(path, project, *SLURM_ARGS)
    pid = wait_until(lambda: running_at_epoch(cell, 1), "epoch 1 in the Slurm job", run)
    job = holder(cell)["job"]
    stop(pid)  # freeze the cell so that it cannot finish before the signal
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    cont(pid)
    # Slurm holds a requeued job for 120 s (BeginTime); release it at once, as an administrator could
    wait_until(lambda: _requeued(job), "the job to be requeued", run, timeout=120, every=0.5)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=30)
    out = finish(run)
    assert "all 1 cells done" in out, out
    st = status(cell)
    assert st["slurm_restart_count"] == 1 and st["resumes"] == 1 and st["attempts"] == 2, st
    assert trainings(cell) == 2
    logs = "".join(p.read_text() for p in (project / "studies" / NAME / "slurm").rglob("*_log.*"))
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs and "resuming from" in logs
    assert history(cell) == history(ref)
    assert per_image(cell) == per_image(ref)


def _requeued(job: str) -> bool:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    return "Restarts=1" in out and "JobState=PENDING" in out

