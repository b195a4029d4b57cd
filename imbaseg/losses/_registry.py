"""The loss registry (a plain dict) and the factory functions ``get_loss`` / ``list_losses``."""

from __future__ import annotations

from typing import Any

from torch import nn

from imbaseg.errors import UserError, check_params, lookup
from imbaseg.losses.balanced import BoundaryGaussianLoss, DynamitBatchLoss, DynamitImageLoss
from imbaseg.losses.compound import CompoundLoss, _types_of, coerce_value, normalize_term, parse_loss_spec
from imbaseg.losses.distribution import BCELoss, FocalLoss
from imbaseg.losses.hybrid import BoundaryDoULoss, ComboLoss, UnifiedFocalLoss, UnifiedFocalSymmetricLoss
from imbaseg.losses.region import DiceLoss, DoULoss, FocalTverskyLoss, IoULoss, LovaszHingeLoss, TverskyLoss
from imbaseg.losses.surface import BoundaryLoss, HausdorffDTLoss
from imbaseg.losses.topology import ClDiceLoss

_STUDY = (BCELoss, DynamitBatchLoss, DynamitImageLoss, BoundaryGaussianLoss, DoULoss, BoundaryDoULoss)
_CLASSIC = (DiceLoss, IoULoss, TverskyLoss, FocalTverskyLoss, FocalLoss, ComboLoss, UnifiedFocalLoss,
            UnifiedFocalSymmetricLoss, ClDiceLoss, BoundaryLoss, HausdorffDTLoss, LovaszHingeLoss)


def _by_name(classes) -> dict[str, type[nn.Module]]:
    """``{cls.name: cls}``: each loss's name is written once, on its class; a clash is a bug."""
    out: dict[str, type[nn.Module]] = {}
    for cls in classes:
        if not cls.name or cls.name in out:
            raise RuntimeError(f"loss class {cls.__name__} has an empty or duplicate name {cls.name!r}")
        out[cls.name] = cls
    return out


# the study's losses first, then the classic ones (the order of `imbaseg train --list-losses`)
LOSSES: dict[str, type[nn.Module]] = _by_name(_STUDY + _CLASSIC)


def _public(key: str) -> str:
    return str(key).strip().replace("-", "_").rstrip("_")


def coerce_params(cls, params: dict[str, Any]) -> dict[str, Any]:
    """Check the keys of ``params`` against ``cls``'s parameters and convert the values to their types."""
    names = cls.param_names()
    given = {_public(k): v for k, v in params.items()}
    check_params(given, list(names), f"loss '{cls.name}'")
    hints = _types_of(cls)
    defaults = cls.defaults()
    return {k: coerce_value(v, hints.get(names[k], type(defaults[k])), k, cls.name) for k, v in given.items()}


def _make(name: str, params: dict[str, Any]) -> nn.Module:
    cls = lookup(name, LOSSES, "loss")
    names = cls.param_names()
    return cls(**{names[k]: v for k, v in coerce_params(cls, params).items()})


def get_loss(spec, **params) -> nn.Module:
    """A loss module from a registry name, a compound spec string, or the YAML list of terms.

    - ``get_loss("boundary-dou", sigma=3)``: one registered loss; params may be strings (CLI).
    - ``get_loss("boundary-gaussian(sigma=4)+0.5*dou")`` or ``get_loss([{"name": "dice"}, {"name": "bce",
      "weight": 0.5, "params": {}}])``: a ``CompoundLoss``. A single term of weight 1 gives the plain
      module. ``**params`` only go with a single loss; compound terms carry theirs in parentheses.
    Unknown names or parameters raise ``imbaseg.errors.UserError`` (a ValueError) with the closest match.
    """
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        terms = parse_loss_spec(spec)
    elif isinstance(spec, dict):
        terms = [normalize_term(spec)]
    elif isinstance(spec, (list, tuple)):
        terms = [normalize_term(t) for t in spec]
    else:
        raise UserError(f"a loss is a name, a spec string or a list of {{name, weight, params}}; "
                        f"got {spec!r}.")
    if not terms:
        raise UserError("the loss term list is empty; give at least one {name, weight, params}.")
    if len(terms) == 1 and terms[0]["weight"] == 1.0:
        return _make(terms[0]["name"], {**terms[0]["params"], **params})
    if params:
        first = next(iter(params))
        raise UserError(f"loss parameter '{first}' given for the compound loss {spec!r}: put parameters in "
                        f"parentheses after the term, e.g. boundary-gaussian(sigma=4)+0.5*dou.")
    return CompoundLoss([(t["name"], t["weight"], _make(t["name"], t["params"])) for t in terms])


build_loss = get_loss  # the same factory under the name the YAML config code may prefer


def list_losses() -> list[dict[str, Any]]:
    """One dict per registered loss: ``name, params`` (defaults), ``reference, formula, summary``."""
    return [{"name": name, "params": cls.defaults(), "reference": cls.reference, "formula": cls.formula,
             "summary": cls.summary} for name, cls in LOSSES.items()]
