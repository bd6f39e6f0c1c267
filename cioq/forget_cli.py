"""``cioq forget WORKSPACE PERSON...``: remove one person from cioq, then tombstone them.

The same forget as the admin API and the console (`service.store.forget`), straight on
Redis; the audit names the person by digest, as ``cli:<login name>``.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Annotated

import orjson
import typer

from cioq.dlq_cli import run_reporting
from service.config import Settings
from service.errors import CioqError
from service.store.connections import connect_async
from service.store.forget import ForgetResult, Forgetting
from service.store.queue import Queue
from service.store.startup_checks import check_async

_loader: Callable[[], Settings] | None = None


def register(app: typer.Typer, load_settings: Callable[[], Settings]) -> None:
    """Add the command to the main CLI; settings are read when it runs."""
    global _loader
    _loader = load_settings
    app.command()(forget)


def forget(
    workspace: Annotated[str, typer.Argument(help="Workspace name")],
    person: Annotated[
        list[str],
        typer.Argument(
            help="The person's identifiers: id:42, email:a@example.com, cio_id:... (a bare "
            "value with @ is an email, else an id); give every one you know"
        ),
    ],
    all_shards: Annotated[
        bool,
        typer.Option(
            "--all-shards",
            help="Read every shard of every lane, not only those the person's routes map to "
            "(finds jobs that name them under another person's route, e.g. a merge)",
        ),
    ] = False,
    delete_upstream: Annotated[
        bool,
        typer.Option(
            "--delete-upstream",
            help="Then queue their delete to Customer.io through the normal lanes (Track "
            "DELETE /api/v1/customers/{id}), after the removal: nothing older overtakes it",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The result as JSON")] = False,
) -> None:
    """Forget a person: their pending jobs (every lane, live and bulk), dead letters, App
    outcomes and stored answers leave cioq; a tombstone keeps replays from sending them."""
    assert _loader is not None
    settings = _loader()
    try:
        settings.workspace(workspace)
    except CioqError as exc:
        typer.echo(f"cioq forget: {exc}", err=True)
        raise typer.Exit(2) from exc

    async def main() -> ForgetResult:
        client = connect_async(settings.redis)
        # No triggers of its own (Celery's import alone costs the command about half a
        # second): a drain refused while forget held its shard is re-triggered by the
        # sweeper, which wakes every CIOQ_SWEEP_INTERVAL_MS for shards with work and no drain.
        queue = Queue(client, settings.redis, settings.queue, None)
        forgetting = Forgetting(
            client, settings.queue, lease_ms=settings.drain.lease_ms, enqueue=queue.enqueue
        )
        try:
            if delete_upstream:
                # Confirmed at the durability level, as ingest's writes are.
                checked = await check_async(client, settings.redis, wait_s=0)
                queue.confirmation = checked.confirmation
            return await forgetting.forget(
                workspace,
                person,
                who=f"cli:{getpass.getuser()}",
                all_shards=all_shards,
                delete_upstream=delete_upstream,
            )
        finally:
            await queue.aclose()
            await client.aclose()

    result = run_reporting(main, "cioq forget")
    if as_json:
        typer.echo(orjson.dumps(result.as_dict()).decode())
        return
    typer.echo(f"forgot {result.digest} in {workspace!r} ({result.took_ms} ms):")
    for name, count in result.removed.items():
        typer.echo(f"  {name.replace('_', ' ')}: {count}")
    if result.upstream_deletes:
        typer.echo(f"  queued {result.upstream_deletes} delete(s) to Customer.io")
    if result.mentions_kept:
        typer.echo(f"  kept {result.mentions_kept} entries that only mention an identifier")
