"""A workspace: one Customer.io account (site id, keys, region), the default one's
development values, and the ``CIOQ_WORKSPACES`` list.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, Field, SecretStr, field_validator

from service.config.values import DEV_API_KEY, DEV_INGEST_KEY, DEV_SITE_ID, CsvSecrets
from service.errors import ConfigError
from service.jobs import Lane, lanes_serving

REGION_TRACK_URLS: dict[str, str] = {
    "us": "https://track.customer.io",
    "eu": "https://track-eu.customer.io",
}
REGION_CDP_URLS: dict[str, str] = {
    "us": "https://cdp.customer.io",
    "eu": "https://cdp-eu.customer.io",
}
REGION_APP_URLS: dict[str, str] = {
    "us": "https://api.customer.io",
    "eu": "https://api-eu.customer.io",
}


_WORKSPACE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class Workspace(BaseModel):
    """One Customer.io workspace and the keys its producers authenticate with."""

    model_config = {"frozen": True}

    name: str = Field(
        default="default",
        description="The workspace's name in cioq: Redis keys, metric labels, the CLI, the "
        "console and the admin API use it. Matches `[a-z0-9][a-z0-9_-]{0,39}`; the default "
        "workspace is `default`.",
    )
    site_id: str = Field(
        description="Customer.io site id: the user name of the Track API's Basic auth."
    )
    api_key: SecretStr = Field(
        description="Track API key (secret): the password of the Track API's Basic auth."
    )
    region: Literal["us", "eu"] = Field(
        default="us",
        description="Customer.io's data center: `us` sends to `https://track.customer.io`, "
        "`https://cdp.customer.io` and `https://api.customer.io`; `eu` to their `-eu` hosts.",
    )
    track_url: str | None = Field(
        default=None,
        description="Overrides the region's Track API base URL (e.g. the sandbox); `http://` "
        "or `https://`.",
    )
    ingest_keys: CsvSecrets = Field(
        default=(),
        description="Keys the workspace's producers send (Basic `site_id:key`, Basic `key:` "
        "or `Bearer key`); the key picks the workspace, so each belongs to one workspace only. "
        "`name:key` names the producer (the service) that sends with it, in metrics, dead "
        "letters and `cioq status`; a bare key is named by its fingerprint (`key-` and 8 hex).",
    )
    bulk_ingest_keys: CsvSecrets = Field(
        default=(),
        description="Ingest keys whose requests are bulk traffic whatever `X-Cioq-Traffic` "
        "says (docs/live-and-bulk.md); `name:key` as for `ingest_keys`.",
    )
    environment_id: int | None = Field(
        default=None,
        description="Customer.io's id of the workspace, echoed as `environment_id` by "
        "`GET /api/v1/accounts/region` (`null` when unset).",
    )
    cdp_api_key: SecretStr | None = Field(
        default=None,
        description="Pipelines (CDP) write key (secret). Without one the workspace refuses "
        "Pipelines calls with 403 (`rule: lane_disabled`): cioq accepts nothing it cannot "
        "deliver.",
    )
    cdp_url: str | None = Field(
        default=None,
        description="Overrides the region's Pipelines host (`us`: `https://cdp.customer.io`, "
        "`eu`: `https://cdp-eu.customer.io`).",
    )
    app_api_key: SecretStr | None = Field(
        default=None,
        description="App API key (secret, sent as `Bearer`). Without one the workspace refuses "
        "App API sends, broadcast triggers and reads with 403.",
    )
    app_url: str | None = Field(
        default=None,
        description="Overrides the region's App API host (`us`: `https://api.customer.io`, "
        "`eu`: `https://api-eu.customer.io`).",
    )
    app_resend_ambiguous: bool = Field(
        default=False,
        description="Resend App sends whose outcome is unknown (read timeout, reset, "
        "500/502/504): MAY DELIVER TWICE. Off, such sends are dead-lettered as `ambiguous` "
        "for an operator (docs/app.md).",
    )
    strict_validation: bool = Field(
        default=False,
        description="cioq's checks beyond Customer.io's (docs/validation-rules.md, \"Opt-in "
        'strictness"): refuse at ingest what Customer.io would silently drop or has no stated '
        "rule for. Off, a conforming call Customer.io takes is taken here too.",
    )

    forget_suppress: bool = Field(
        default=False,
        description="Ingest refuses (409, rule `forgotten_person`) a call naming a person "
        "forgotten within `CIOQ_FORGET_TOMBSTONE_TTL_S`, and counts it (docs/data-retention.md).",
    )
    forget_on_delete: bool = Field(
        default=False,
        description="A delete a producer sends (Track delete, Pipelines `User Deleted`) also "
        "removes that person's older pending jobs and dead letters, as `cioq forget` does, "
        "without a tombstone. Off: what was accepted before the delete is delivered.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _WORKSPACE_NAME.match(value):
            raise ValueError("workspace name must match [a-z0-9][a-z0-9_-]{0,39}")
        return value

    @field_validator("track_url", "cdp_url", "app_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("track_url, cdp_url and app_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("cdp_api_key", "app_api_key")
    @classmethod
    def _blank_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @property
    def base_url(self) -> str:
        """Where this workspace's Track API calls go: the override, else the region's host."""
        return self.track_url or REGION_TRACK_URLS[self.region]

    @property
    def lanes(self) -> tuple[Lane, ...]:
        """The registered lanes this workspace delivers (Track always, others with their keys)."""
        return lanes_serving(self)

    @property
    def cdp_base_url(self) -> str:
        """Where this workspace's Pipelines calls go: the override, else the region's host."""
        return self.cdp_url or REGION_CDP_URLS[self.region]

    @property
    def app_base_url(self) -> str:
        """Where this workspace's App API calls go: the override, else the region's host."""
        return self.app_url or REGION_APP_URLS[self.region]


#: What the default workspace holds where no variable says otherwise: development values,
#: which production refuses (`check_keys`). A `CIOQ_WORKSPACES` entry has no such defaults.
DEV_WORKSPACE: dict[str, object] = {
    "name": "default",
    "site_id": DEV_SITE_ID,
    "api_key": SecretStr(DEV_API_KEY),
    "ingest_keys": (SecretStr(DEV_INGEST_KEY),),
}

#: The default workspace's fields that a variable sets: every field of a `CIOQ_WORKSPACES`
#: entry but its name (``CIOQ_SITE_ID`` sets ``site_id``...).
DEFAULT_WORKSPACE_FIELDS: tuple[str, ...] = tuple(n for n in Workspace.model_fields if n != "name")


def find_workspace(workspaces: tuple[Workspace, ...], name: str) -> Workspace:
    """The workspace called `name`; ConfigError if there is none."""
    for ws in workspaces:
        if ws.name == name:
            return ws
    raise ConfigError(f"unknown workspace {name!r}")


def load_workspaces(raw: str | None) -> tuple[Workspace, ...]:
    """The workspaces of ``CIOQ_WORKSPACES``: JSON inline or ``@/path``, a list of them or
    an object of them by name."""
    if not raw:
        return ()
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"CIOQ_WORKSPACES is not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        data = [{"name": name, **spec} for name, spec in data.items()]
    if not isinstance(data, list):
        raise ConfigError("CIOQ_WORKSPACES must be a JSON list or object of workspaces")
    return tuple(Workspace.model_validate(item) for item in data)
