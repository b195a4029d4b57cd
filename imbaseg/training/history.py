"""history.csv and history.png of a run, rewritten (atomically) after every epoch, and the epoch line.

No torch here: ``imbaseg.cli.render`` formats the terminal's epoch lines with ``epoch_line`` too.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imbaseg.training.run_dir import RunDir

from imbaseg.paths import atomic_write_bytes, atomic_write_text

BASE_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_dice", "seconds"]


def history_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The fixed columns, then any per-term columns (``train_<term>``) in first-seen order."""
    extra: list[str] = []
    for row in rows:
        extra += [k for k in row if k not in BASE_COLUMNS and k not in extra]
    return BASE_COLUMNS + extra


def epoch_line(report: dict[str, Any], epochs: int) -> str:
    """``epoch   3/40  lr 1.00e-01  train_loss 0.4123  val_loss ...  12.3 img/s  4.2s  *best*``.

    ``report``: a history row plus ``images_per_s`` and ``best`` (what ``TrainerCallbacks.on_epoch_end``
    receives). The line of train.log and of the terminal.
    """
    r = report
    line = (
        f"epoch {r['epoch']:>3}/{epochs}  lr {r['lr']:.2e}  train_loss {r['train_loss']:.4f}"
        f"  val_loss {r['val_loss']:.4f}  val_dice {r['val_dice']:.4f}  {r['images_per_s']:.1f} img/s"
        f"  {r['seconds']:.1f}s"
    )
    return line + ("  *best*" if r.get("best") else "")


def write_history(folder: RunDir, rows: list[dict[str, Any]]) -> None:
    """Rewrite the run folder's history.csv and history.png from ``rows`` (one dict per epoch)."""
    cols = history_columns(rows)
    lines = [",".join(cols)]
    for row in rows:
        lines.append(
            ",".join(
                "" if row.get(c) is None else repr(row[c]) if isinstance(row.get(c), float) else str(row[c])
                for c in cols
            )
        )
    atomic_write_text(folder.history_csv, "\n".join(lines) + "\n")
    plot_history(folder.history_png, rows)


def read_history(folder: RunDir) -> list[dict[str, str]]:
    """The rows of the run folder's history.csv as written by ``write_history`` (values as text)."""
    import csv

    with open(folder.history_csv, newline="") as f:
        return list(csv.DictReader(f))


def plot_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Loss (train and val) and validation Dice against the epoch."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    ax1.plot(epochs, [r["train_loss"] for r in rows], label="train", marker="o", ms=3)
    ax1.plot(epochs, [r["val_loss"] for r in rows], label="val", marker="o", ms=3)
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax1.legend(frameon=False)
    ax2.plot(epochs, [r["val_dice"] for r in rows], color="tab:green", marker="o", ms=3)
    ax2.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
