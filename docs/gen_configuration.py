"""Renders docs/configuration.md from the settings' own descriptions (`service/config.py`).

A setting is documented where it is declared, in its ``Field(description=...)``; this module
only lays the descriptions out, grouped by what the settings are about, so the page cannot
drift from the code. `tests/unit/project/test_configuration_docs.py` fails when the page
differs from what `render()` makes.

    scripts/gen-config-docs            rewrite docs/configuration.md
    scripts/gen-config-docs --check    exit 1 when it is stale
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import typer.main
from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo

from cioq.cli import app as cli_app
from service.config import Settings, Workspace

PAGE = Path(__file__).resolve().parent / "configuration.md"

#: (title, what the group is about, the settings' field names in the order shown).
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Environment and Redis",
        "Where the queue lives and how cioq talks to it.",
        (
            "env",
            "redis_url",
            "broker_url",
            "redis_cluster",
            "redis_ca_file",
            "redis_timeout_s",
            "redis_outage_wait_s",
            "startup_redis_wait_s",
        ),
    ),
    (
        "Durability",
        "What a 2xx from ingest promises; start-up refuses a Redis that cannot keep it.",
        ("durability", "durability_timeout_ms"),
    ),
    (
        "Workspaces and keys",
        "The default workspace and its keys, more workspaces as JSON, and the operators' keys. "
        "Each default-workspace setting has a field of the same name in `CIOQ_WORKSPACES` "
        "entries ([Workspace fields](#workspace-fields)).",
        (
            "site_id",
            "api_key",
            "region",
            "track_url",
            "environment_id",
            "ingest_keys",
            "bulk_ingest_keys",
            "cdp_api_key",
            "cdp_url",
            "app_api_key",
            "app_url",
            "app_resend_ambiguous",
            "strict_validation",
            "workspaces_json",
            "admin_keys",
        ),
    ),
    (
        "Listener",
        "The api process: address, TLS, proxies, and the limits that keep slow or bloated "
        "requests from holding it.",
        (
            "port",
            "host",
            "tls_cert",
            "tls_key",
            "trusted_proxies",
            "max_request_bytes",
            "header_timeout_s",
            "body_timeout_s",
            "max_header_count",
            "max_header_bytes",
            "idempotency_window_s",
        ),
    ),
    (
        "Backpressure",
        "Ingest answers 503 with `Retry-After` while a workspace's backlog is over either mark.",
        ("backlog_max_entries", "backlog_max_age_s", "backlog_refresh_ms", "backlog_retry_after_s"),
    ),
    (
        "Limits, stamping and packing",
        "What a call and a request to Customer.io may hold, and how the drain fills requests.",
        (
            "max_op_bytes",
            "max_batch_bytes",
            "cdp_max_call_bytes",
            "cdp_max_batch_bytes",
            "stamp_timestamps",
            "linger_ms",
            "pack_across_shards",
            "max_ops_per_read",
            "coalesce",
        ),
    ),
    (
        "Shards, drains and workers",
        "How the queue is split and how long a drain may hold a shard and a worker process.",
        (
            "shards",
            "lease_ms",
            "allow_short_lease",
            "drain_budget_s",
            "bulk_drain_budget_s",
            "sweep_interval_ms",
            "upstream_timeout_s",
            "shutdown_grace_s",
        ),
    ),
    (
        "Retries, pauses and dead letters",
        "What a failed send leads to: backoff, a paused workspace lane, or a dead letter.",
        (
            "retry_base_ms",
            "retry_cap_ms",
            "retry_max_attempts",
            "retry_max_age_s",
            "throttle_pause_ms",
            "setup_pause_ms",
            "crash_limit",
        ),
    ),
    (
        "App API lane",
        "Customer.io's published App API limits are the defaults, spent cluster-wide.",
        (
            "app_send_rps",
            "app_rps",
            "app_broadcast_interval_s",
            "app_rate_headroom",
            "app_send_wait_ms",
            "app_read_wait_ms",
            "app_outcome_ttl_s",
            "app_token_wait_max_ms",
        ),
    ),
    ("Console", "The operator console under `/console`.", ("console_secret", "console_session_s")),
    (
        "Metrics",
        "Prometheus metrics of the api and the workers.",
        (
            "worker_metrics_host",
            "worker_metrics_port",
            "metrics_redis_timeout_s",
            "drain_rate_window_s",
        ),
    ),
)

INTRO = """\
# Configuration

<!-- Generated by scripts/gen-config-docs from the descriptions in service/config.py: edit
those, then run it. tests/unit/project/test_configuration_docs.py fails when this differs. -->

Every process reads its settings once, at start-up, from environment variables
(`service/config.py`, `load_settings()`); an empty value counts as unset, and a value that
breaks a rule stops the process with `configuration error` naming the setting. The
Kubernetes overlays set them in `deploy/k8s/base/config.env` and each overlay's
`secrets.env`; the local stack in `local.env`.
"""


def settings_env_names(name: str, field: FieldInfo) -> tuple[str, ...]:
    """The variables a setting is read from, the first being the one to use."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(c for c in alias.choices if isinstance(c, str) and c.isupper())
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return (f"{prefix}{name}".upper(),)


def cli_env_options() -> Iterator[tuple[str, Any]]:
    """Every ``(command path, option)`` of the `cioq` CLI that reads an environment variable."""

    # Typer vendors its own click, so commands and options are walked by their attributes.
    def walk(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        for param in command.params:
            if getattr(param, "envvar", None):
                yield path, param
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, f"{path} {name}")

    yield from walk(typer.main.get_command(cli_app), "cioq")


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        return " or ".join(_type(a) for a in args if a is not NoneType)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is tuple:
        return f"list of {_type(args[0])}s"
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        SecretStr: "secret",
        Path: "path",
    }
    return names[annotation]


def _bounds(field: FieldInfo) -> str:
    rules = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            rules.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            rules.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            rules.append(f"≤ {item.le}")
    return f" ({', '.join(rules)})" if rules else ""


def _value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return ",".join(_value(v) for v in value)
    return str(value)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default is None:
        return "unset"
    shown = _value(field.default)
    return f"`{shown}`" if shown else "none"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _description(owner: str, name: str, field: FieldInfo) -> str:
    if not field.description:
        raise ValueError(f"{owner}.{name} has no description: give it Field(description=...)")
    return _cell(field.description)


def _settings_rows(names: Iterable[str]) -> Iterator[str]:
    for name in names:
        field = Settings.model_fields[name]
        first, *others = settings_env_names(name, field)
        variable = f"`{first}`" + "".join(f" (or `{o}`)" for o in others)
        kind = _type(field.annotation) + _bounds(field)
        description = _description("Settings", name, field)
        yield f"| {variable} | {kind} | {_default(field)} | {description} |"


def _check_groups() -> None:
    listed = [name for _, _, names in GROUPS for name in names]
    twice = sorted({n for n in listed if listed.count(n) > 1})
    missing = sorted(set(Settings.model_fields) - set(listed))
    unknown = sorted(set(listed) - set(Settings.model_fields))
    if twice or missing or unknown:
        raise ValueError(
            f"GROUPS in {__name__} must list every setting once: in no group {missing}, "
            f"twice {twice}, not a setting {unknown}"
        )


def _workspace_rows(model: type[BaseModel]) -> Iterator[str]:
    for name, field in model.model_fields.items():
        kind = _type(field.annotation)
        if name in ("ingest_keys", "bulk_ingest_keys"):
            kind += " (a JSON list or one comma-separated string)"
        default = "`default`" if name == "name" else _default(field)
        setting = Settings.model_fields.get(name)
        from_default = f"`{settings_env_names(name, setting)[0]}`" if setting else "—"
        description = _description(model.__name__, name, field)
        yield f"| `{name}` | {_cell(kind)} | {default} | {from_default} | {description} |"


def _cli_rows() -> Iterator[str]:
    for path, param in cli_env_options():
        if not param.help:
            raise ValueError(f"{path} --{param.name} reads {param.envvar} but has no help")
        yield f"| `{param.envvar}` | `{path} --{param.name}` | `{param.default}` | {param.help} |"


def render() -> str:
    """The whole of docs/configuration.md."""
    _check_groups()
    lines = [INTRO, "## Contents", ""]
    anchors = [title for title, _, _ in GROUPS] + ["Workspace fields", "Command-line options"]
    lines += [f"- [{t}](#{t.lower().replace(' ', '-').replace(',', '')})" for t in anchors]
    for title, about, names in GROUPS:
        lines += ["", f"## {title}", "", about, ""]
        lines += ["| variable | type | default | description |", "|---|---|---|---|"]
        lines += _settings_rows(names)
    lines += [
        "",
        "## Workspace fields",
        "",
        "Each entry of `CIOQ_WORKSPACES` is one Customer.io workspace. An entry named "
        "`default` replaces the workspace the `CIOQ_*` settings above describe; names and "
        "ingest keys must be unique across workspaces.",
        "",
        "| field | type | default | default workspace's variable | description |",
        "|---|---|---|---|---|",
        *_workspace_rows(Workspace),
        "",
        "## Command-line options",
        "",
        "Options of the `cioq` command that also read a variable.",
        "",
        "| variable | option | default | description |",
        "|---|---|---|---|",
        *_cli_rows(),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if PAGE.read_text() != text:
            sys.stderr.write(f"{PAGE} is stale: run scripts/gen-config-docs\n")
            return 1
        return 0
    if argv:
        sys.stderr.write("usage: scripts/gen-config-docs [--check]\n")
        return 2
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
