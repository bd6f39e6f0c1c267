"""``cioq late list|show|resend``: calls Customer.io accepted and failed afterwards.

They read Redis with the same code as the admin API and the console
(`service.store.late_failures`), with the dead-letter CLI's filters (workspace, lane,
producer, type, since, until), so every surface shows the same records.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console

from cioq.dlq_cli import (
    JsonLines,
    LaneName,
    Limit,
    ProducerName,
    Since,
    Until,
    Workspace,
    run_with_queue,
)
from cioq.listing import echo_page, when
from service.config import Settings
from service.errors import InvalidRequest
from service.store.late_failures import FAILURE_TYPES, LateFailure, LateFailures, LateFilter

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="List, show or re-send late failures: calls Customer.io answered 200 and then failed "
    "(docs/late-failures.md).",
)
T = TypeVar("T")

TypeName = Annotated[
    str | None, typer.Option("--type", help=f"Only this activity type: {', '.join(FAILURE_TYPES)}")
]

_settings: Callable[[], Settings] | None = None


def register(parent: typer.Typer, settings_loader: Callable[[], Settings]) -> None:
    """Add ``cioq late`` to the main CLI (settings read once, when a command runs)."""
    global _settings
    _settings = settings_loader
    parent.add_typer(app, name="late", help="List, show or re-send late failures.")


def _run(workspace: str, work: Callable[[LateFailures, Settings], Awaitable[T]]) -> T:
    assert _settings is not None
    settings = _settings()
    return run_with_queue(
        settings,
        workspace,
        "cioq late",
        lambda client, queue: work(LateFailures(client, queue), settings),
    )


@app.command("list")
def list_(
    workspace: Workspace = "default",
    lane: LaneName = None,
    producer: ProducerName = None,
    type_: TypeName = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    as_json: JsonLines = False,
) -> None:
    """List late failures, newest first (times are when each failure appeared in the log).

    --lane unlinked (or --producer unlinked) lists those cioq could not tie to a job."""
    try:
        flt = LateFilter.parse(
            lane=lane,
            producer=producer,
            type=type_,
            since=since,
            until=until,
            time_fields=("--since", "--until"),
        )
    except InvalidRequest as exc:
        raise typer.BadParameter(exc.errors[0].message) from exc
    page = _run(workspace, lambda late, _: late.page(workspace, flt, limit=limit))
    columns = ("id", "failed at (UTC)", "producer", "lane", "person", "type", "name", "job")
    echo_page(
        page.failures,
        bool(page.next_after),
        as_json=as_json,
        title=f"late failures of {workspace!r}",
        columns=(*columns, "reason", "re-sent"),
        row=_failure_row,
        noun="late failures",
    )


def _failure_row(failure: LateFailure) -> tuple[str, ...]:
    row = failure.as_dict(payload=False)
    return (
        failure.id,
        when(failure.failed_ms),
        failure.producer,
        failure.lane,
        str(row["person"]),
        failure.type,
        str(row["name"]),
        str(row["job_id"] or "unlinked"),
        str(row["reason"])[:120],
        "yes" if failure.resent else "",
    )


@app.command()
def show(record_id: str, workspace: Workspace = "default") -> None:
    """Show one late failure in full: the activity, the linked job and its payload."""
    failure = _run(workspace, lambda late, _: late.get(workspace, record_id))
    if failure is None:
        typer.echo(f"cioq late: no late failure {record_id} in {workspace!r}", err=True)
        raise typer.Exit(1)
    Console().print_json(orjson.dumps(failure.as_dict()).decode())


@app.command()
def resend(
    record_id: str,
    workspace: Workspace = "default",
    payload: Annotated[
        Path | None,
        typer.Option(
            "--payload",
            help="The corrected call as JSON ('-' reads stdin); without it the job's payload "
            "is sent again as it was",
        ),
    ] = None,
    who: Annotated[str, typer.Option(help="Who re-sends, for the audit")] = "cli",
) -> None:
    """Send a linked failure's (corrected) call again through the normal lanes, once, audited."""
    fixed: Any = None
    if payload is not None:
        text = sys.stdin.read() if str(payload) == "-" else payload.read_text()
        try:
            fixed = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise typer.BadParameter(f"--payload is not JSON: {exc}") from exc

    async def work(late: LateFailures, settings: Settings) -> Any:
        strict = settings.workspace(workspace).strict_validation
        return await late.resend(workspace, record_id, fixed, strict=strict, who=who)

    done = _run(workspace, work)
    typer.echo(f"re-sent late failure {done.id} (job {done.job_id})")
    for line in done.changes:
        typer.echo(f"  {line}")
