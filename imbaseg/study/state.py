"""The state of a study's cell, read from its run folder (the one place that decides it).

States:
- ``todo``: nothing to resume (no run folder, or a folder without a checkpoint);
- ``running``: a live process holds the run folder's lock;
- ``partial``: a checkpoint to resume from (``last.pt``), or trained but not yet evaluated as the
  study asks (no ``eval/<split>/per_image.csv``, or one made with other evaluation options);
- ``failed``: the trainer or the study recorded an error in ``status.json`` (NaN loss, a crash);
  it is not retried unless ``--retry-failed``;
- ``done``: training finished and ``eval/<split>/per_image.csv`` exists with the study's options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imbaseg.study.spec import Cell, Study
from imbaseg.training.run_dir import RunDir

STATES = ("todo", "running", "partial", "failed", "done")


@dataclass(frozen=True)
class CellState:
    state: str  # one of STATES
    why: str  # one line for the table
    seconds: float | None = None  # training seconds so far (status.json)
    error: str | None = None  # the recorded error of a failed cell
    trained: bool = False  # training finished (only evaluation may be missing)


def eval_options(summary: dict[str, Any]) -> dict[str, Any]:
    """The evaluation options recorded in a summary.json, in the study file's ``evaluate`` keys."""
    threshold = "auto" if summary.get("threshold_mode") == "auto" else summary.get("threshold")
    return {
        "checkpoint": (summary.get("checkpoint") or {}).get("which"),
        "threshold": threshold,
        "tta": summary.get("tta"),
        "hd_convention": summary.get("hd_convention"),
        "nsd_tau": summary.get("nsd_tau"),
        "size": (summary.get("inference") or {}).get("size"),
    }


def _same_options(wanted: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Keys whose recorded value differs from the study's (numbers compared as floats)."""
    out = []
    for k, v in wanted.items():
        g = got.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(g, (int, float)):
            if float(v) != float(g):
                out.append(k)
        elif v != g:
            out.append(k)
    return out


def _evaluation(study: Study, run: RunDir) -> tuple[bool, str]:
    """(done, why) of the cell's evaluation."""
    if not run.evaluated(study.split):
        return False, f"trained; not evaluated on {study.split}"
    from imbaseg.evaluation.report import read_summary

    try:
        summary = read_summary(run.summary_json(study.split))
    except Exception:  # an unreadable summary: evaluate again
        return False, f"trained; eval/{study.split}/summary.json unreadable, evaluates again"
    differ = _same_options(study.evaluate, eval_options(summary))
    if differ:
        return False, f"trained; evaluated with other options ({', '.join(differ)}), evaluates again"
    return True, "done"


def _holder(run: RunDir) -> dict[str, Any] | None:
    from imbaseg.locks import is_stale, read_holder

    holder = read_holder(run.lock_file)
    return holder if holder and not is_stale(holder) else None


def cell_state(study: Study, cell: Cell, lock: bool = True) -> CellState:
    """The state of ``cell`` (see the module doc); reads only small files (status.json, the lock).

    ``lock`` False leaves the lock out: for the process that holds it and decides what to do next.
    A failed cell is ``trained`` when it failed in its evaluation (status.json ``trained``).
    """
    run = RunDir(cell.run_dir)
    if not run.path.is_dir():
        return CellState("todo", "not started")
    status = run.read_status()
    seconds = status.get("seconds")
    holder = _holder(run) if lock else None
    if holder is not None:
        from imbaseg.locks import describe

        return CellState("running", f"running: {describe(holder)}", seconds)
    if status.get("state") == "failed":
        err = str(status.get("error") or "failed")
        trained = bool(status.get("trained"))
        return CellState("failed", err.splitlines()[0][:200], seconds, err, trained=trained)
    if status.get("state") == "finished":
        done, why = _evaluation(study, run)
        return CellState("done" if done else "partial", why, seconds, trained=True)
    if run.checkpoint_file("last").is_file():
        epoch, epochs = status.get("epoch"), status.get("epochs")
        where = f"epoch {epoch}/{epochs}" if epoch is not None else "a checkpoint"
        return CellState("partial", f"{where}; resumes from last.pt", seconds)
    return CellState("todo", "folder exists, no checkpoint yet", seconds)
