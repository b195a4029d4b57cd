"""Evaluation: inference, one run's evaluation, comparing runs, and ``predict``.

- ``imbaseg.evaluation.inference``: ``plan_for(cfg)``, ``Predictor(model, plan).probs(image)``,
  ``sliding_window``.
- ``imbaseg.evaluation.evaluate``: ``evaluate_run(run_dir, split="test", ...)`` writes
  ``RUN_DIR/eval/<split>/``; ``evaluate_runs([...], out=...)`` evaluates several and compares them.
- ``imbaseg.evaluation.threshold``: ``parse_threshold`` and the Dice-optimal threshold search.
- ``imbaseg.evaluation.calibrate``: temperature scaling (fit on val, ``eval/temperature.json``).
- ``imbaseg.evaluation.report``: the writer and the reader of ``per_image.csv`` and ``summary.json``.
- ``imbaseg.evaluation.comparison``: comparing evaluated runs (labels, statistics, comparison.csv/.md).
- ``imbaseg.evaluation.predict``: ``predict(run_dir, inputs, out_dir, ...)`` for new images without masks.

Nothing in this package prints: it reports progress through callbacks and returns its results.
"""

from imbaseg.evaluation.evaluate import evaluate_run, evaluate_runs
from imbaseg.evaluation.inference import InferencePlan, Predictor, plan_for, sliding_window

__all__ = [
    "InferencePlan",
    "Predictor",
    "evaluate_run",
    "evaluate_runs",
    "plan_for",
    "sliding_window",
]
