"""Shared CLI plumbing: the consoles, the --debug switch, and turning UserError into one red line.

Nothing here imports torch: ``imbaseg --help`` must answer at once.
"""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console

from imbaseg.errors import UserError

console = Console()
err_console = Console(stderr=True)
STATE = {"debug": False}
EXIT_USER_ERROR = 2


def fail(message: str) -> typer.Exit:
    """Print ``message`` as one red line on stderr and return the exit to raise (code 2)."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False, markup=True)
    return typer.Exit(EXIT_USER_ERROR)


def user_errors(fn):
    """Wrap a command: a UserError becomes one red line and exit code 2 (a traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if STATE["debug"]:
                raise
            raise fail(_escape(str(exc))) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(" ".join(text.split()))


def not_available(command: str, issue: str) -> typer.Exit:
    """For a command whose implementation has not landed: say so plainly, exit 2."""
    return fail(f"'imbaseg {command}' is not available yet in this version ({issue}); nothing was done.")


def is_interactive() -> bool:
    return sys.stdout.isatty()
