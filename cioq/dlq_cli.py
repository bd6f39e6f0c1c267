"""``cioq dlq list|show|replay|purge``: the operator's dead-letter tools (``edit`` and
``repair`` are in `cioq.dlq_edit_cli`).

They talk to Redis directly with the same code as the admin HTTP API
(`service.store.dead_letter_admin`), so a filter selects the same letters from either side.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console

from cioq.listing import echo_page, when
from service.config import Settings
from service.errors import CioqError, InvalidRequest
from service.jobs import job_kind
from service.lanes import registry
from service.store.connections import AsyncStore, connect_async
from service.store.dead_letter_admin import DeadLetterAdmin, DeadLetterFilter, SelectionResult
from service.store.dead_letters import LetterClass, StoredDeadLetter
from service.store.queue import Queue
from service.store.startup_checks import check_async
from service.triggers import Triggers

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="List, show, replay, purge, edit or repair dead letters (the same filters as the "
    "console and the admin API).",
)
T = TypeVar("T")

Workspace = Annotated[str, typer.Option("--workspace", "-w", help="Workspace name")]
LaneName = Annotated[
    str | None,
    typer.Option("--lane", help=f"Only this lane's jobs: {', '.join(registry.LANES)}"),
]
Reason = Annotated[str | None, typer.Option(help="Only this reason, e.g. crash_loop")]
Class = Annotated[
    str | None,
    typer.Option("--class", help=f"Only this class: {', '.join(LetterClass)}"),
]
OpType = Annotated[str | None, typer.Option("--op", help="Only this op type, e.g. identify")]
Person = Annotated[str | None, typer.Option(help="Only jobs naming this identifier value")]
Since = Annotated[str | None, typer.Option(help="Dead since: epoch ms, ISO 8601, or an age (2h)")]
Until = Annotated[str | None, typer.Option(help="Dead until: epoch ms, ISO 8601, or an age")]
ProducerName = Annotated[
    str | None, typer.Option("--producer", help="Only jobs this producer (ingest key name) sent")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would be done; change nothing")]
All = Annotated[bool, typer.Option("--all", help="Act on every letter when no filter is given")]
Ids = Annotated[list[str] | None, typer.Argument(help="Dead-letter ids (<ms>-<seq>)")]
Yes = Annotated[
    bool, typer.Option("--yes", help="Replay App API sends without asking (may deliver twice)")
]
Limit = Annotated[int, typer.Option(min=1, max=10_000)]
JsonLines = Annotated[bool, typer.Option("--json", help="One JSON object per line")]

_settings: Callable[[], Settings] | None = None


def bind(settings_loader: Callable[[], Settings]) -> typer.Typer:
    """Attach the settings loader of the main CLI (read once, when a command runs)."""
    global _settings
    _settings = settings_loader
    return app


def _run(workspace: str, work: Callable[[DeadLetterAdmin], Awaitable[T]]) -> T:
    assert _settings is not None
    return run_with_queue(
        _settings(),
        workspace,
        "cioq dlq",
        lambda client, queue: work(DeadLetterAdmin(client, queue)),
    )


def run_with_queue(
    settings: Settings,
    workspace: str,
    prefix: str,
    work: Callable[[AsyncStore, Queue], Awaitable[T]],
) -> T:
    """Run `work` on a store client and a queue whose jobs are confirmed at the durability
    level, as ingest's are (a replay or re-send queues jobs); an unknown workspace exits 2."""
    try:
        settings.workspace(workspace)
    except CioqError as exc:
        typer.echo(f"{prefix}: {exc}", err=True)
        raise typer.Exit(2) from exc

    async def main() -> T:
        client = connect_async(settings.redis)
        triggers = Triggers.for_settings(settings.redis)
        queue = Queue(client, settings.redis, settings.queue, triggers)
        try:
            queue.confirmation = (await check_async(client, settings.redis, wait_s=0)).confirmation
            return await work(client, queue)
        finally:
            triggers.close()
            await queue.aclose()
            await client.aclose()

    return run_reporting(main, prefix)


def run_reporting(main: Callable[[], Coroutine[Any, Any, T]], prefix: str) -> T:
    """Run `main`; bad input exits 2 naming the field, store trouble exits 1."""
    try:
        return asyncio.run(main())
    except InvalidRequest as exc:
        for error in exc.errors:
            typer.echo(f"{prefix}: {error.field}: {error.message}", err=True)
        raise typer.Exit(2) from exc
    except CioqError as exc:
        typer.echo(f"{prefix}: {exc}", err=True)
        raise typer.Exit(1) from exc


def _filter(
    ids: list[str] | None,
    lane: str | None,
    reason: str | None,
    outcome_class: str | None,
    op: str | None,
    person: str | None,
    since: str | None,
    until: str | None,
    producer: str | None = None,
) -> DeadLetterFilter:
    try:
        return DeadLetterFilter.parse(
            ids=tuple(ids or ()),
            lane=lane,
            reason=reason,
            outcome_class=outcome_class,
            op_type=op,
            person=person,
            since=since,
            until=until,
            time_fields=("--since", "--until"),
            producer=producer,
        )
    except InvalidRequest as exc:
        raise typer.BadParameter(exc.errors[0].message) from exc


@app.command("list")
def list_(
    workspace: Workspace = "default",
    lane: LaneName = None,
    reason: Reason = None,
    outcome_class: Class = None,
    op: OpType = None,
    person: Person = None,
    since: Since = None,
    until: Until = None,
    producer: ProducerName = None,
    limit: Limit = 50,
    as_json: JsonLines = False,
) -> None:
    """List dead letters, oldest first."""
    flt = _filter(None, lane, reason, outcome_class, op, person, since, until, producer)
    page = _run(workspace, lambda dlq: dlq.page(workspace, flt, limit=limit))
    columns = ("id", "dead at (UTC)", "producer", "lane", "person", "op", "reason", "class")
    echo_page(
        page.letters,
        bool(page.next_after),
        as_json=as_json,
        title=f"dead letters of {workspace!r}",
        columns=(*columns, "status", "message"),
        row=_letter_row,
        noun="letters",
    )


def _letter_row(stored: StoredDeadLetter) -> tuple[str, ...]:
    letter = stored.letter
    return (
        stored.id,
        when(letter.dead_ms),
        letter.producer,
        str(stored.lane),
        stored.person,
        stored.op_type,
        letter.reason,
        letter.outcome_class,
        "" if letter.status is None else str(letter.status),
        letter.message[:120],
    )


@app.command()
def show(letter_id: str, workspace: Workspace = "default") -> None:
    """Show one dead letter in full: payload, reason, every attempt."""
    stored = _run(workspace, lambda dlq: dlq.get(workspace, letter_id))
    if stored is None:
        typer.echo(f"cioq dlq: no dead letter {letter_id} in {workspace!r}", err=True)
        raise typer.Exit(1)
    Console().print_json(orjson.dumps(stored.as_dict()).decode())


Action = Callable[[DeadLetterAdmin, str, DeadLetterFilter, bool], Awaitable[SelectionResult]]


async def _count_sends(dlq: DeadLetterAdmin, ws: str, flt: DeadLetterFilter) -> int:
    """How many selected letters are App API sends or triggers (kind ``app``)."""
    count, after = 0, None
    while True:
        page = await dlq.page(ws, flt, limit=1000, after=after)
        count += sum(job_kind(stored.letter.kind).at_most_once for stored in page.letters)
        if not page.next_after:
            return count
        after = page.next_after


def _confirm_sends(workspace: str, flt: DeadLetterFilter) -> None:
    """Replaying an App API send may deliver it twice: the operator says yes first."""
    sends = _run(workspace, lambda dlq: _count_sends(dlq, workspace, flt))
    if sends and not typer.confirm(
        f"{sends} of the selected letters are App API sends or broadcast triggers. Customer.io "
        "may already have sent them (check its message log): replaying may deliver them "
        "twice. Replay?"
    ):
        raise typer.Exit(1)


def _selection_command(verb: str, past: str, action: Action, doc: str) -> Callable[..., None]:
    """A command acting on the letters its ids or filters select (replay, purge)."""

    def command(
        ids: Ids = None,
        workspace: Workspace = "default",
        lane: LaneName = None,
        reason: Reason = None,
        outcome_class: Class = None,
        op: OpType = None,
        person: Person = None,
        since: Since = None,
        until: Until = None,
        producer: ProducerName = None,
        every: All = False,
        dry_run: DryRun = False,
        yes: Yes = False,
    ) -> None:
        flt = _filter(ids, lane, reason, outcome_class, op, person, since, until, producer)
        if flt.is_empty and not every:
            raise typer.BadParameter(f"name ids or a filter, or pass --all to {verb} every letter")
        if verb == "replay" and not dry_run and not yes:
            _confirm_sends(workspace, flt)
        outcome = _run(workspace, lambda dlq: action(dlq, workspace, flt, dry_run))
        if dry_run:
            typer.echo(f"{outcome.matched} matched; dry run, would {verb} them:")
            for letter_id in outcome.ids[:50]:
                typer.echo(f"  {letter_id}")
        else:
            dropped = f", {outcome.dropped} of forgotten people deleted unsent" * bool(
                outcome.dropped
            )
            typer.echo(f"{outcome.matched} matched, {outcome.done} {past}{dropped}")

    command.__doc__ = doc
    return command


async def _replay(
    dlq: DeadLetterAdmin, ws: str, flt: DeadLetterFilter, dry: bool
) -> SelectionResult:
    # The command asked "may deliver twice" first (or the operator passed --yes).
    return await dlq.replay(ws, flt, dry_run=dry, may_deliver_twice=True, who=_who())


async def _purge(
    dlq: DeadLetterAdmin, ws: str, flt: DeadLetterFilter, dry: bool
) -> SelectionResult:
    return await dlq.purge(ws, flt, dry_run=dry, who=_who())


def _who() -> str:
    """The audit's name for the operator at this terminal."""
    return f"cli:{getpass.getuser()}"


app.command("replay")(
    _selection_command(
        "replay",
        "replayed",
        _replay,
        "Queue matching letters again, unchanged (same event ids), and remove them.",
    )
)
app.command("purge")(
    _selection_command("purge", "purged", _purge, "Delete matching letters for good.")
)
