"""``cioq api | worker | sweeper | sandbox``: every process of the stack, one command.

Settings are read here, once, at start-up; a bad setting stops the process with a
clear message before anything listens or connects.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
from typing import Annotated

import typer

from service.config import Settings, Workspace, load_settings
from service.errors import ConfigError
from service.triggers import WorkerQueues

# Help is plain text: module docstrings use reStructuredText markup that a terminal shows raw.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    help="Every process of the cioq stack (api, worker, sweeper, sandbox) and the operator's "
    "tools (status, pause, resume, dlq). Settings come from CIOQ_* variables, read once at "
    "start; a bad setting stops the command with a clear message.",
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"cioq: configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _check_redis(settings: Settings) -> None:
    """Refuse to run against a Redis that cannot keep the configured durability."""
    from service.errors import StoreUnavailable
    from service.store.connections import connect_sync
    from service.store.startup_checks import check_sync

    client = connect_sync(settings.redis)
    try:
        check_sync(client, settings.redis)
    except (ConfigError, StoreUnavailable) as exc:
        typer.echo(f"cioq: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        client.close()


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address [CIOQ_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [PORT]")] = None,
    log_level: str = "info",
) -> None:
    """Serve the ingest API (TLS when CIOQ_TLS_CERT and CIOQ_TLS_KEY are set)."""
    import uvicorn

    from service.api.app import create_app
    from service.api.listener import uvicorn_config
    from service.metrics.activity import TALLY

    settings = _settings()
    _logging(log_level)
    TALLY.configure(settings.redis)
    config = uvicorn_config(
        create_app(settings),
        settings.listener,
        host=host or settings.listener.host,
        port=port or settings.listener.port,
        ssl_certfile=str(settings.listener.tls_cert) if settings.listener.tls_cert else None,
        ssl_keyfile=str(settings.listener.tls_key) if settings.listener.tls_key else None,
        log_level=log_level,
        # X-Forwarded-Proto/For only from CIOQ_TRUSTED_PROXIES (uvicorn would otherwise
        # trust 127.0.0.1 by default, or FORWARDED_ALLOW_IPS).
        proxy_headers=bool(settings.listener.trusted_proxies),
        forwarded_allow_ips=list(settings.listener.trusted_proxies),
    )
    uvicorn.Server(config).run()


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Processes (prefork) or threads")] = 2,
    pool: Annotated[str, typer.Option(help="prefork, solo or threads")] = "prefork",
    log_level: str = "info",
    queues: Annotated[
        WorkerQueues, typer.Option(help="all (live first), or live / bulk for split pools")
    ] = WorkerQueues.ALL,
) -> None:
    """Run a Celery worker that drains shards when triggered."""
    from service.metrics.export import use_multiprocess
    from workers.metrics_server import multiprocess_dir, serve_metrics

    # Before any metric is used: prefork children then write values the main process sums.
    metrics_dir = multiprocess_dir(os.getpid())
    use_multiprocess(metrics_dir)
    from service.metrics.activity import TALLY
    from workers.celery_app import create_celery, worker_argv

    settings = _settings()
    _logging(log_level)
    _check_redis(settings)
    TALLY.configure(settings.redis)  # prefork children inherit it and flush on their own
    celery = create_celery(settings)
    metrics = settings.metrics
    serve_metrics("worker", metrics.worker_metrics_host, metrics.worker_metrics_port)
    try:
        celery.worker_main(
            worker_argv(concurrency=concurrency, pool=pool, loglevel=log_level, queues=queues)
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command()
def sweeper(log_level: str = "info") -> None:
    """Re-send drain triggers for shards with backlog and no drain, and poll the activity
    logs of workspaces with an App API key for late failures (docs/late-failures.md)."""
    from service.store.connections import connect_sync
    from service.triggers import Triggers
    from workers.late_polls import LatePolls
    from workers.metrics_server import serve_metrics
    from workers.sweeper import Sweeper

    settings = _settings()
    _logging(log_level)
    metrics = settings.metrics
    serve_metrics("sweeper", metrics.sweeper_metrics_host, metrics.sweeper_metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    triggers = Triggers.for_settings(settings.redis)
    logging.getLogger("cioq.sweeper").info(
        "sweeping %d workspace(s) x %d shards every %d ms",
        len(settings.workspaces),
        settings.queue.shards,
        settings.drain.sweep_interval_ms,
    )
    late = LatePolls(settings, connect_sync(settings.redis))
    polling = late.start(stop)
    try:
        Sweeper(settings, connect_sync(settings.redis), triggers).run(stop)
    finally:
        if polling is not None:
            polling.join(timeout=5)  # a walk cut short records nothing: safe to leave
        late.close()
        triggers.close()


@app.command()
def sandbox(
    host: str = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="CIOQ_SANDBOX_PORT", help="The sandbox's port")
    ] = 8001,
    site_id: Annotated[list[str] | None, typer.Option(help="Accepted site id (repeatable)")] = None,
    api_key: Annotated[list[str] | None, typer.Option(help="Its API key (repeatable)")] = None,
    write_key: Annotated[
        list[str] | None, typer.Option(help="Accepted Pipelines write key (repeatable)")
    ] = None,
    app_key: Annotated[
        list[str] | None, typer.Option(help="Accepted App API key (repeatable)")
    ] = None,
    app_send_rps: Annotated[int, typer.Option(help="App API sends per second before 429")] = 100,
    app_rps: Annotated[int, typer.Option(help="Other App API calls per second before 429")] = 10,
    app_broadcast_interval_s: Annotated[
        float, typer.Option(help="Seconds between two triggers of one broadcast before 429")
    ] = 10.0,
    record: str = "full",
    late_failure_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of accepted identifies and events that fail afterwards, in the "
            "activity log (GET /v1/activities)",
        ),
    ] = 0.0,
    late_failure_min_delay_s: Annotated[
        float, typer.Option(min=0.0, help="Shortest delay before a failure appears")
    ] = 0.5,
    late_failure_max_delay_s: Annotated[
        float, typer.Option(min=0.0, help="Longest delay before a failure appears")
    ] = 5.0,
) -> None:
    """Serve a sandbox Customer.io that validates and records what it receives.

    Without --site-id/--api-key (--write-key, --app-key) it accepts the Track credentials
    (Pipelines write keys, App API keys) of every configured workspace.
    """
    try:
        from sandbox import SandboxConfig, serve
        from sandbox.activities import LateFailureConfig
    except ModuleNotFoundError as exc:
        # The production image leaves the fake Customer.io out on purpose.
        typer.echo(
            "cioq: the sandbox is not installed here (a development tool: the production "
            "image leaves it out; docker-compose builds the Dockerfile's dev target)",
            err=True,
        )
        raise typer.Exit(2) from exc

    loaded: list[Settings] = []

    def workspaces() -> tuple[Workspace, ...]:
        if not loaded:
            loaded.append(_settings())
        return loaded[0].workspaces

    if site_id or api_key:
        if len(site_id or []) != len(api_key or []):
            raise typer.BadParameter("give one --api-key per --site-id")
        credentials = dict(zip(site_id or [], api_key or [], strict=True))
    else:
        credentials = {ws.site_id: ws.api_key.get_secret_value() for ws in workspaces()}
    write_keys = frozenset(write_key or ()) or frozenset(
        ws.cdp_api_key.get_secret_value() for ws in workspaces() if ws.cdp_api_key
    )
    app_keys = frozenset(app_key or ()) or frozenset(
        ws.app_api_key.get_secret_value() for ws in workspaces() if ws.app_api_key
    )
    try:
        late = LateFailureConfig.from_json(
            {
                "rate": late_failure_rate,
                "min_delay_s": late_failure_min_delay_s,
                "max_delay_s": late_failure_max_delay_s,
            }
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _logging("info")
    config = SandboxConfig(
        credentials=credentials,
        cdp_write_keys=write_keys,
        app_api_keys=app_keys,
        app_send_rps=app_send_rps,
        app_rps=app_rps,
        app_broadcast_interval_s=app_broadcast_interval_s,
        record=record,  # type: ignore[arg-type]
        late_failures=late,
    )
    serve(config, host=host, port=port)


from cioq import (  # noqa: E402  (need _settings, defined above)
    dlq_cli,
    dlq_edit_cli,
    forget_cli,
    late_cli,
    status_cli,
)

dlq_app = dlq_cli.bind(_settings)
dlq_edit_cli.register(dlq_app)
app.add_typer(dlq_app, name="dlq", help="List, show, replay, purge or repair dead letters.")
status_cli.register(app, _settings)
forget_cli.register(app, _settings)
late_cli.register(app, _settings)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
