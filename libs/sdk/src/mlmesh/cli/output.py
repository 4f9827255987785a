"""CLI output conventions: human tables by default, `--json` for scripts, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table

console = Console()
# soft_wrap: an error stays one line whatever the terminal width, so scripts can grep it.
err_console = Console(stderr=True, soft_wrap=True)


class CliError(Exception):
    """A failure to report as one line plus a hint, with a non-zero exit."""

    def __init__(self, message: str, hint: str = "", exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


def print_error(message: str, hint: str = "") -> None:
    # Plain text (no markup) so paths and brackets in messages print as they are.
    err_console.print(f"error: {message}", style="bold red", markup=False, highlight=False)
    if hint:
        err_console.print(f"hint: {hint}", style="dim", markup=False, highlight=False)


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
