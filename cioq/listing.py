"""How the operator CLIs list records (``cioq dlq list``, ``cioq late list``): one JSON object
a line, or a table, in the same words."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table


class Listed(Protocol):
    """A record a list command shows."""

    def as_dict(self) -> dict[str, Any]: ...


L = TypeVar("L", bound=Listed)


def echo_page(
    records: Sequence[L],
    more: bool,
    *,
    as_json: bool,
    title: str,
    columns: Sequence[str],
    row: Callable[[L], Sequence[str]],
    noun: str,
) -> None:
    """A page of records: one JSON object a line, or a table that says when `more` follow."""
    if as_json:
        for record in records:
            typer.echo(orjson.dumps(record.as_dict()).decode())
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(*row(record))
    console = Console()
    console.print(table)
    if more:
        console.print(f"more {noun} follow; {len(records)} shown (raise --limit)")


def when(ms: int) -> str:
    """A time in epoch ms as the tables show it (UTC, to the second)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
