"""``cioq status``, ``cioq pause`` and ``cioq resume``: the console's overview and lane actions.

They read and write Redis with the same code as the console (`service.console.overview`,
`service.store.workspace_control`), so both show the same numbers and audit the same way;
the CLI audits as ``cli:<login name>``.
"""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from cioq.dlq_cli import run_reporting
from service.config import Settings
from service.console import views
from service.console.overview import LaneOverview, Overview, ProducerOverview
from service.errors import CioqError
from service.metrics.queue_state import QueueStateCollector
from service.store.connections import connect_async, connect_sync
from service.store.dead_letter_admin import DeadLetterAdmin
from service.store.queue import Queue
from service.store.workspace_control import WorkspaceControl, parse_duration_ms
from service.triggers import Triggers

T = TypeVar("T")
Lane = Annotated[str, typer.Option(help="Lane of the workspace (today: track)")]
Reason = Annotated[str, typer.Option(help="Why; shown on the overview and kept in the audit")]


def _who() -> str:
    return f"cli:{getpass.getuser()}"


_loader: Callable[[], Settings] | None = None


def register(app: typer.Typer, load_settings: Callable[[], Settings]) -> None:
    """Add the commands to the main CLI; settings are read when a command runs."""
    global _loader
    _loader = load_settings
    for command in (status, pause, resume):
        app.command()(command)


def _run(work: Callable[[Settings, WorkspaceControl, Overview], Awaitable[T]]) -> T:
    assert _loader is not None
    settings = _loader()

    async def main() -> T:
        client = connect_async(settings.redis)
        sync_client = connect_sync(settings.redis)
        triggers = Triggers.for_settings(settings.redis)
        try:
            control = WorkspaceControl(client, settings.queue, triggers)
            dlq = DeadLetterAdmin(client, Queue(client, settings.redis, settings.queue, None))
            state = QueueStateCollector(
                settings.queue, settings.metrics, settings.workspaces, sync_client
            )
            overview = Overview(settings.workspaces, state, client, dlq, control)
            return await work(settings, control, overview)
        finally:
            triggers.close()
            sync_client.close()
            await client.aclose()

    return run_reporting(main, "cioq")


def _workspace_of(settings: Settings, name: str) -> str:
    try:
        return settings.workspace(name).name
    except CioqError as exc:
        typer.echo(f"cioq: {exc}", err=True)
        raise typer.Exit(2) from exc


def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per lane")] = False,
    by_producer: Annotated[
        bool,
        typer.Option(
            "--by-producer", help="One row per producer (ingest key name) instead of per lane"
        ),
    ] = False,
) -> None:
    """Show each workspace lane: backlog, oldest job, rates, pause, dead letters."""
    if by_producer:
        _producers(as_json)
        return

    async def work(_: Settings, __: WorkspaceControl, overview: Overview) -> list[LaneOverview]:
        return await overview.read()

    rows = _run(work)
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row.as_dict()).decode())
        return
    table = Table(title="cioq status")
    columns = (
        ("waiting", "waiting", "right"),
        ("oldest", "oldest", "right"),
        ("accepted", "accepted/min", "right"),
        ("delivered", "delivered/min", "right"),
        ("dead_rate", "dead/min", "right"),
        ("upstream", "upstream/min", "left"),
        ("state", "state", "left"),
        ("dead", "dead letters", "right"),
        ("by_class", "by class", "left"),
    )
    table.add_column("workspace")
    table.add_column("lane")
    for _, heading, justify in columns:
        table.add_column(heading, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in rows:
        cells = views.cells(row)
        table.add_row(
            row.workspace,
            row.lane,
            *(cells[name] for name, _, _ in columns),
            style="yellow" if row.paused else None,
        )
    Console().print(table)


def _producers(as_json: bool) -> None:
    """Each producer's accepted, delivered and dead-lettered jobs per minute, its letters and
    its late failures (docs/late-failures.md)."""

    async def work(_: Settings, __: WorkspaceControl, overview: Overview) -> list[ProducerOverview]:
        return await overview.producers()

    rows = _run(work)
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row.as_dict()).decode())
        return
    table = Table(title="cioq status by producer")
    for heading in ("workspace", "producer"):
        table.add_column(heading)
    for heading in ("accepted/min", "delivered/min", "dead/min", "dead letters", "late failures"):
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(
            row.workspace,
            row.producer,
            f"{row.accepted_per_min:.1f}",
            f"{row.delivered_per_min:.1f}",
            f"{row.dead_lettered_per_min:.1f}",
            str(row.dead_letters),
            str(row.late_failures),
        )
    Console().print(table)


def pause(
    workspace: Annotated[str, typer.Argument(help="Workspace name")],
    reason: Reason,
    lane: Lane = "track",
    for_: Annotated[str, typer.Option("--for", help="How long: 30m, 4h, 2d (at most 7d)")] = "1h",
) -> None:
    """Stop delivery of a workspace's lane by hand; jobs keep queueing."""

    async def work(settings: Settings, control: WorkspaceControl, _: Overview) -> None:
        await control.pause(
            _workspace_of(settings, workspace),
            lane,
            reason=reason,
            who=_who(),
            duration_ms=parse_duration_ms(for_, field_name="--for"),
        )

    _run(work)
    typer.echo(f"paused {workspace}/{lane} for {for_}")


def resume(
    workspace: Annotated[str, typer.Argument(help="Workspace name")],
    reason: Reason,
    lane: Lane = "track",
) -> None:
    """Lift a lane's pause (manual, 429 or credentials) and wake its drains."""

    async def work(settings: Settings, control: WorkspaceControl, _: Overview) -> str:
        return await control.resume(
            _workspace_of(settings, workspace), lane, reason=reason, who=_who()
        )

    lifted = _run(work)
    typer.echo(f"resumed {workspace}/{lane} (lifted: {lifted})")
