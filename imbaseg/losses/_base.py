"""The base class of every registered loss: input checks, autocast off, float32 math, the metadata.

A loss is a thin ``nn.Module`` that stores its parameters and calls functions of ``_functional``.
``forward(logits, target, **extras)`` casts to float32 (float64 stays float64 for gradcheck), turns
autocast off for its own body (so reductions and the pooling/shift stencils never run in fp16/bf16),
and returns a scalar. Unknown extras are ignored, so one batch dict can feed any loss.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from imbaseg.losses._functional import prepare


class BinaryLoss(nn.Module):
    """Base class: subclasses set the class metadata and implement ``compute(z, y, yb, extras)``."""

    name: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # On the class: the distance maps (DISTANCE_KEYS) it accepts as extras. On an instance: the precomputed
    # inputs it asks the data loader for (keys of distance_maps): the class's, or, where the target-only
    # terms depend on the loss's parameters, those terms themselves (boundary-gaussian: gauss(sigma=S)).
    distance_inputs: ClassVar[tuple[str, ...]] = ()
    differentiable: ClassVar[bool] = True  # False: gradcheck is not meaningful (none so far)

    def __init__(self) -> None:
        super().__init__()
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, logits: Tensor, target: Tensor, **extras: Any) -> Tensor:
        z, y, yb = prepare(logits, target)
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.compute(z, y, yb, extras)

    def compute(self, z: Tensor, y: Tensor, yb: Tensor, extras: dict) -> Tensor:
        raise NotImplementedError

    @classmethod
    def param_names(cls) -> dict[str, str]:
        """Public parameter name -> constructor argument (``lambda`` -> ``lambda_``)."""
        sig = inspect.signature(cls.__init__)
        return {p.rstrip("_"): p for p in sig.parameters if p != "self"}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Public parameter name -> default value."""
        sig = inspect.signature(cls.__init__)
        return {p.rstrip("_"): v.default for p, v in sig.parameters.items() if p != "self"}

    @property
    def hparams(self) -> dict[str, Any]:
        """The current parameters under their public names (what a config would store)."""
        return {pub: getattr(self, arg) for pub, arg in self.param_names().items()}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
