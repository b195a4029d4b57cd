"""history.csv and history.png of a run, rewritten (atomically) after every epoch."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from imbaseg.paths import atomic_write_bytes, atomic_write_text

BASE_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_dice", "seconds"]


def history_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The fixed columns, then any per-term columns (``train_<term>``) in first-seen order."""
    extra: list[str] = []
    for row in rows:
        extra += [k for k in row if k not in BASE_COLUMNS and k not in extra]
    return BASE_COLUMNS + extra


def write_history(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    cols = history_columns(rows)
    lines = [",".join(cols)]
    for row in rows:
        lines.append(
            ",".join(
                "" if row.get(c) is None else repr(row[c]) if isinstance(row.get(c), float) else str(row[c])
                for c in cols
            )
        )
    atomic_write_text(run_dir / "history.csv", "\n".join(lines) + "\n")
    plot_history(run_dir / "history.png", rows)


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
