"""The one exception type for user mistakes, and the did-you-mean lookup used by every registry.

Imports nothing from imbaseg, so every floor of the package (losses, metrics, models) may use it.
The CLI prints a ``UserError`` as one red line and exits with code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


class UserError(ValueError):
    """A mistake the user can fix (bad name, value, path or file). Subclass of ValueError."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest valid name to ``name``, or None when nothing is close."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


def suggestion(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' or ''."""
    best = closest(name, choices)
    return f" Did you mean '{best}'?" if best else ""


def lookup(name: str, table: Mapping[str, T], kind: str) -> T:
    """``table[name]``, or a UserError listing the choices and the closest match."""
    if name in table:
        return table[name]
    choices = ", ".join(sorted(table))
    raise UserError(f"unknown {kind} '{name}'.{suggestion(name, table)} Choose one of: {choices}.")


def check_params(given: Iterable[str], allowed: Iterable[str], owner: str) -> None:
    """Raise UserError for the first parameter of ``given`` that ``owner`` does not accept."""
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            valid = ", ".join(allowed) if allowed else "none"
            raise UserError(
                f"unknown parameter '{key}' for {owner}.{suggestion(key, allowed)} Valid parameters: {valid}."
            )
