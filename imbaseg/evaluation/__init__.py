"""Evaluation: inference (whole image, sliding windows, flip TTA), ``evaluate_run`` and ``predict``.

- ``imbaseg.evaluation.inference``: ``plan_for(cfg)``, ``Predictor(model, plan).probs(image)``,
  ``sliding_window``.
- ``imbaseg.evaluation.evaluate``: ``evaluate_run(run_dir, split="test", ...)`` writes
  ``RUN_DIR/eval/<split>/``;
  ``evaluate_runs([...], out=...)`` adds the comparison table.
- ``imbaseg.evaluation.predict``: ``predict(run_dir, inputs, out_dir, ...)`` for new images without masks.
"""

from imbaseg.evaluation.evaluate import compare_summaries, evaluate_run, evaluate_runs
from imbaseg.evaluation.inference import InferencePlan, Predictor, plan_for, sliding_window

__all__ = [
    "InferencePlan",
    "Predictor",
    "compare_summaries",
    "evaluate_run",
    "evaluate_runs",
    "plan_for",
    "sliding_window",
]
