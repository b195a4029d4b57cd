"""Presentation stays in imbaseg.cli: the evaluation and figure libraries never import rich nor print.

make_figures.py is a script (``python -m imbaseg.viz.make_figures``) and may print plainly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "imbaseg"
SCRIPTS = {"make_figures.py"}
MODULES = sorted(
    p for folder in ("evaluation", "viz") for p in (PACKAGE / folder).glob("*.py") if p.name not in SCRIPTS
)


def offences(path: Path) -> list[str]:
    """rich imports, print() calls and console objects in one module, as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        found += [f"{node.lineno}: import {n}" for n in names if n == "rich" or n.startswith("rich.")]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(f"{node.lineno}: print()")
        name = node.id if isinstance(node, ast.Name) else node.arg if isinstance(node, ast.arg) else None
        if name == "console":
            found.append(f"{node.lineno}: console")
    return found


def test_the_modules_are_found():
    names = {p.name for p in MODULES}
    assert {"evaluate.py", "comparison.py", "report.py", "predict.py", "compare.py", "weights.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_rich_no_print_no_console(path):
    assert offences(path) == []


def test_the_check_catches_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from rich.table import Table\nimport rich\n\ndef f(console=None):\n    print(1)\n")
    assert offences(bad) == ["1: import rich.table", "2: import rich", "4: console", "5: print()"]
