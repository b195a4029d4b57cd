"""Compound losses: ``"dice+bce"``, ``"boundary-gaussian(sigma=4)+0.5*dou"`` or the YAML list form.

Grammar of a spec string: terms joined by ``+``; a term is ``[weight*]name[(key=value, ...)]``, e.g.
``0.5*dou`` or ``dice(batch=false, smooth=1e-6)``. Weights are plain floats (``1e-3`` works; an
exponent with a sign, ``1e+3``, too), finite and > 0. YAML form: a list of ``{name, weight, params}`` mappings
(``weight`` defaults to 1, ``params`` to ``{}``).
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

import torch
from torch import Tensor, nn

from imbaseg.errors import UserError, lookup, suggestion

_TERM = re.compile(r"^(?:(?P<weight>[^*()]+?)\s*\*\s*)?"  # optional "weight*"
                   r"(?P<name>[A-Za-z][\w\-]*)\s*(?:\((?P<args>[^()]*)\))?$")  # name, optional "(k=v, ...)"
_EXPONENT = re.compile(r"\s*(?:\d+\.?\d*|\.\d+)[eE]$")  # "1e" before a "+" that belongs to the number
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_NONE = {"none", "null", "~", ""}


def _split_terms(spec: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in spec:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            raise UserError(f"loss spec '{spec}': unbalanced ')'.")
        if ch == "+" and depth == 0 and not _EXPONENT.fullmatch(cur):
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise UserError(f"loss spec '{spec}': unbalanced '('.")
    return terms + [cur]


def _parse_args(args: str, spec: str) -> dict[str, str]:
    params = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"loss spec '{spec}': write parameters as key=value, got '{item}'.")
        params[key.strip()] = value.strip()
    return params


def parse_loss_spec(spec: str) -> list[dict[str, Any]]:
    """``"boundary-gaussian(sigma=4)+0.5*dou"`` -> ``[{name, weight, params}, ...]`` (params typed, checked).

    Unknown names and parameters raise UserError with the choices and the closest match.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"loss spec must be a non-empty string, got {spec!r}.")
    out = []
    for raw in _split_terms(spec):
        m = _TERM.match(raw.strip())
        if not m:
            raise UserError(f"loss spec '{spec}': cannot read term '{raw.strip()}'; write "
                            f"[weight*]name[(k=v, ...)], e.g. 0.5*dou or boundary-gaussian(sigma=4).")
        weight = 1.0 if m["weight"] is None else _weight(m["weight"], spec)
        params = _parse_args(m["args"] or "", spec)
        out.append(normalize_term({"name": m["name"], "weight": weight, "params": params}))
    return out


def _weight(text: Any, spec: Any) -> float:
    try:
        value = float(text.strip() if isinstance(text, str) else text)
    except (TypeError, ValueError):
        raise UserError(f"loss spec '{spec}': weight '{text}' is not a number.") from None
    if isinstance(text, bool) or value != value:
        raise UserError(f"loss spec '{spec}': weight '{text}' is not a number.")
    if not 0.0 < value < float("inf"):  # 0 trains a term for nothing; < 0 maximises it; inf gives NaN
        raise UserError(
            f"loss spec '{spec}': weight {text} must be a finite number > 0; leave out a term that should "
            "not count."
        )
    return value


def normalize_term(term: Any) -> dict[str, Any]:
    """Check one ``{name, weight, params}`` mapping; return it with the name resolved and params typed."""
    from imbaseg.losses._registry import LOSSES, coerce_params

    if isinstance(term, str):
        term = {"name": term}
    if not isinstance(term, dict):
        raise UserError(f"a loss term must be a mapping {{name, weight, params}}, got {term!r}.")
    for key in term:
        if key not in ("name", "weight", "params"):
            hint = suggestion(key, ["name", "weight", "params"])
            raise UserError(f"loss term {term!r}: unknown key '{key}'.{hint} Valid: name, weight, params.")
    if "name" not in term:
        raise UserError(f"loss term {term!r} has no 'name'.")
    name = str(term["name"]).strip()
    cls = lookup(name, LOSSES, "loss")
    params = term.get("params") or {}
    if not isinstance(params, dict):
        raise UserError(f"loss term '{name}': params must be a mapping, got {params!r}.")
    weight = _weight(term.get("weight", 1.0), name)
    return {"name": name, "weight": weight, "params": coerce_params(cls, params)}


class CompoundLoss(nn.Module):
    """Weighted sum of registry losses. ``last_terms`` holds each term's detached, unweighted value.

    Keys of ``last_terms`` are the term names (``"dice"``, ``"bce"``; a repeated name gets ``"#2"``...).
    ``distance_inputs`` is the union of the terms'; every term receives all extras.
    """

    def __init__(self, terms: list[tuple[str, float, nn.Module]]):
        super().__init__()
        if not terms:
            raise UserError("a compound loss needs at least one term.")
        keys: list[str] = []
        for name, _, _ in terms:
            n = sum(1 for k in keys if k == name or k.startswith(name + "#"))
            keys.append(name if n == 0 else f"{name}#{n + 1}")
        self.keys = keys
        self.weights = [float(w) for _, w, _ in terms]
        self.losses = nn.ModuleList([m for _, _, m in terms])
        inputs: list[str] = []
        for m in self.losses:
            inputs += [k for k in getattr(m, "distance_inputs", ()) if k not in inputs]
        self.distance_inputs: tuple[str, ...] = tuple(inputs)
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, logits: Tensor, target: Tensor, **extras: Any) -> Tensor:
        total, terms = None, {}
        for key, weight, loss in zip(self.keys, self.weights, self.losses, strict=False):
            value = loss(logits, target, **extras)
            terms[key] = value.detach()
            total = weight * value if total is None else total + weight * value
        self.last_terms = terms
        return total.to(torch.promote_types(total.dtype, torch.float32))

    @property
    def spec(self) -> list[dict[str, Any]]:
        """The YAML form ``[{name, weight, params}]`` of this compound."""
        pairs = zip(self.weights, self.losses, strict=True)
        return [{"name": m.name, "weight": w, "params": dict(m.hparams)} for w, m in pairs]

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}*{k}" for k, w in zip(self.keys, self.weights, strict=False))


def _types_of(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls.__init__)


def coerce_value(value: Any, tp: Any, key: str, owner: str) -> Any:
    """``value`` (often a CLI string) converted to ``tp`` (bool, int, float, or ``X | None``)."""
    union = isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
    args = typing.get_args(tp) if union else ()
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if args else tp
    text = value.strip().lower() if isinstance(value, str) else None
    kinds = {"bool": "a bool (true/false)", "int": "an integer", "float": "a number"}
    kind = kinds.get(base.__name__, base.__name__)
    if value is None or (optional and text in _NONE):
        if optional:
            return None
        raise UserError(f"loss '{owner}': parameter '{key}' needs {kind}, got none.")
    kind += " or none" if optional else ""
    bad = UserError(f"loss '{owner}': parameter '{key}' needs {kind}, got {value!r}.")
    if base is bool:
        if isinstance(value, bool):
            return value
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise bad
    if isinstance(value, bool):
        raise bad
    try:
        number = float(value) if text is None else float(text)
    except (TypeError, ValueError):
        raise bad from None
    if base is int:
        if not number.is_integer():
            raise bad
        return int(number)
    return number
