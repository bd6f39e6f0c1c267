"""`Settings`: the groups together, each read from flat ``CIOQ_<FIELD>`` variables."""

from __future__ import annotations

from functools import cache, cached_property
from typing import Any

from pydantic import AliasChoices, BaseModel, Field, create_model, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.config.delivery import AppLaneSettings, DrainSettings, MetricsSettings, RetrySettings
from service.config.ingest import (
    BacklogSettings,
    ConsoleSettings,
    KeySettings,
    LimitSettings,
    ListenerSettings,
)
from service.config.named_keys import ingest_key_entries
from service.config.store import QueueSettings, RedisSettings
from service.config.workspace import (
    DEFAULT_WORKSPACE_FIELDS,
    DEV_WORKSPACE,
    Workspace,
    find_workspace,
    load_workspaces,
)
from service.errors import ConfigError


class Settings(BaseSettings):
    """Every setting of cioq, in groups by the code that reads them; each consumer is
    handed its group. Each field's description is its documentation: `scripts/gen-config-docs`
    renders the groups, in this order, into docs/configuration.md (a group field's `title`
    and `description` head its section).

    The environment stays flat: every setting is read from ``CIOQ_<FIELD>``, whatever group
    holds it, and ``Settings(shards=4, lease_ms=...)`` takes the same flat names."""

    model_config = SettingsConfigDict(
        env_prefix="CIOQ_",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    redis: RedisSettings = Field(
        default_factory=RedisSettings,
        title="Environment and Redis",
        description="Where the queue lives, how cioq talks to it, and what a 2xx from ingest "
        "promises; start-up refuses a Redis that cannot keep it.",
    )
    default_workspace: Workspace = Field(
        default_factory=lambda: Workspace.model_validate(DEV_WORKSPACE),
        title="Default workspace",
        description="The workspace named `default`: each field of a `CIOQ_WORKSPACES` entry "
        "([Workspace fields](#workspace-fields)) but its name is read from `CIOQ_<FIELD>`.",
    )
    keys: KeySettings = Field(
        default_factory=KeySettings,
        title="More workspaces and admin keys",
        description="Workspaces beyond the default one, and the keys of the admin API and "
        "the console.",
    )
    listener: ListenerSettings = Field(
        default_factory=ListenerSettings,
        title="Listener",
        description="The api process: address, TLS, proxies, and the limits that keep slow "
        "or bloated requests from holding it.",
    )
    backlog: BacklogSettings = Field(
        default_factory=BacklogSettings,
        title="Backpressure",
        description="Ingest answers 503 with `Retry-After` while a workspace's backlog is "
        "over either mark.",
    )
    limits: LimitSettings = Field(
        default_factory=LimitSettings,
        title="Limits, stamping and packing",
        description="What a call and a request to Customer.io may hold, and what ingest adds.",
    )
    queue: QueueSettings = Field(
        default_factory=QueueSettings,
        title="Shards and markers",
        description="How the queue is split, how long a request lingers for more, and how "
        "long idempotency markers last.",
    )
    drain: DrainSettings = Field(
        default_factory=DrainSettings,
        title="Drains and workers",
        description="How long a drain may hold a shard and a worker process, and how long "
        "one request to Customer.io may take.",
    )
    retry: RetrySettings = Field(
        default_factory=RetrySettings,
        title="Retries, pauses and dead letters",
        description="What a failed send leads to: backoff, a paused workspace lane, or a "
        "dead letter.",
    )
    app: AppLaneSettings = Field(
        default_factory=AppLaneSettings,
        title="App API lane",
        description="Customer.io's published App API limits are the defaults, spent cluster-wide.",
    )
    console: ConsoleSettings = Field(
        default_factory=ConsoleSettings,
        title="Console",
        description="The operator console under `/console`.",
    )
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings,
        title="Metrics",
        description="Prometheus metrics of the workers, the sweeper and the queue gauges.",
    )

    def __init__(self, **values: Any) -> None:
        # Typed as flat keywords: ``Settings(shards=4)`` names a setting, not a group.
        super().__init__(**values)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # pydantic-settings would read a group from CIOQ_<GROUP>__<FIELD>; the flat source
        # reads every field of every group from CIOQ_<FIELD>, as before the groups.
        return init_settings, EnvSettingsSource(_flat_settings_class())

    @model_validator(mode="before")
    @classmethod
    def _group_flat_names(cls, data: object) -> object:
        """Moves each flat value (from the environment or ``Settings(shards=4)``) into its
        group; a flat value wins over the same field given inside a group."""
        if not isinstance(data, dict):
            return data
        grouped: dict[str, object] = {}
        flat: dict[str, dict[str, object]] = {}
        for key, value in data.items():
            group = _GROUP_OF.get(key)
            if group is None:
                grouped[key] = value
            else:
                flat.setdefault(group, {})[key] = value
        for group, values in flat.items():
            given = grouped.get(group)
            base = dict(given) if isinstance(given, (dict, BaseModel)) else {}
            if group == "default_workspace" and given is None:
                base = dict(DEV_WORKSPACE)
            grouped[group] = {**base, **values}
        return grouped

    @model_validator(mode="after")
    def _check_lease(self) -> Settings:
        if self.drain.lease_ms < self.min_lease_ms and not self.drain.allow_short_lease:
            # A drain renews once a third of its lease has passed, so a step may start
            # with two thirds left; a lease shorter than that makes lease loss routine.
            # (Lease loss never sends twice: every drain write is fenced; it only costs.)
            raise ValueError(
                f"CIOQ_LEASE_MS={self.drain.lease_ms} is shorter than one send step can take "
                f"(rate wait + connect + read = {self.send_step_max_ms} ms, which must fit "
                f"in two thirds of the lease): set it to at least {self.min_lease_ms}"
            )
        return self

    @property
    def send_step_max_ms(self) -> int:
        """The longest one send can hold a drain: the App rate wait, then one request's
        connect and read timeouts (`service.delivery.upstream`)."""
        timeout_s = self.drain.upstream_timeout_s
        request_s = min(timeout_s, 10.0) + timeout_s
        return self.app.app_token_wait_max_ms + int(request_s * 1000)

    @property
    def min_lease_ms(self) -> int:
        return (3 * self.send_step_max_ms + 1) // 2

    @cached_property
    def workspaces(self) -> tuple[Workspace, ...]:
        """The default workspace first, then those of ``CIOQ_WORKSPACES``."""
        extra = load_workspaces(self.keys.workspaces_json)
        found = (
            extra if any(w.name == "default" for w in extra) else (self.default_workspace, *extra)
        )
        names = [w.name for w in found]
        if len(names) != len(set(names)):
            raise ConfigError(f"workspace names must be unique, got {names}")
        keys = [entry.key for w in found for entry in ingest_key_entries(w)]
        if len(keys) != len(set(keys)):
            raise ConfigError("an ingest key may belong to one workspace only")
        return found

    def workspace(self, name: str) -> Workspace:
        """The workspace called `name`; ConfigError if there is none."""
        return find_workspace(self.workspaces, name)


def setting_groups() -> dict[str, type[BaseModel]]:
    """Each group of `Settings` by its attribute name, in the order the docs show them."""
    groups: dict[str, type[BaseModel]] = {}
    for name, field in Settings.model_fields.items():
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            raise TypeError(f"Settings.{name} is no group: every setting belongs to one")
        groups[name] = field.annotation
    return groups


def group_fields(group: str) -> dict[str, FieldInfo]:
    """The settings of one group, each read from ``CIOQ_<FIELD>`` (or its aliases)."""
    fields = setting_groups()[group].model_fields
    if group == "default_workspace":
        return {name: fields[name] for name in DEFAULT_WORKSPACE_FIELDS}
    return dict(fields)


def setting_fields() -> dict[str, tuple[str, FieldInfo]]:
    """Every setting by its flat name (``CIOQ_<NAME>``), with the group that holds it."""
    return {
        name: (group, field)
        for group in setting_groups()
        for name, field in group_fields(group).items()
    }


def _groups_by_name() -> dict[str, str]:
    """The group of each name a flat value may come under: field names and their aliases."""
    found: dict[str, str] = {}
    for name, (group, field) in setting_fields().items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else ()
        for key in (name, *(c for c in choices if isinstance(c, str))):
            found[key] = group
    return found


_GROUP_OF = _groups_by_name()


@cache
def _flat_settings_class() -> type[BaseSettings]:
    """Every setting as one flat field, for pydantic-settings' environment source only: it
    finds and decodes each variable exactly as it did for the flat settings class."""
    fields: dict[str, Any] = {
        name: (field.annotation, field) for name, (_, field) in setting_fields().items()
    }

    class FlatBase(BaseSettings):
        model_config = Settings.model_config

    flat: type[BaseSettings] = create_model("FlatSettings", __base__=FlatBase, **fields)
    return flat
