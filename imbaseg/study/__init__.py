"""The loss study: a dataset x loss x seed grid of ordinary runs (``spec``), run by an executor and
reported through the same comparison layer as ``imbaseg evaluate``. Sits above ``evaluation``."""
