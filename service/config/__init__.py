"""Settings: every knob cioq has, read once at process start.

One `Settings` class reads the environment (prefix ``CIOQ_``), in groups by the code
that reads them (`RedisSettings`, `DrainSettings`, `RetrySettings`...); each consumer is
handed its group only. The variables stay flat: a setting is read from ``CIOQ_<FIELD>``
whichever group holds it. Nothing reads the environment at import time: entry points call
`load_settings()` and pass the result down, and tests build their own `Settings(...)`
with the same flat names (``Settings(shards=4)``).

A *workspace* is one Customer.io account (site id + Track API key + region). The
default workspace comes from ``CIOQ_SITE_ID``/``CIOQ_API_KEY``/``CIOQ_REGION``/
``CIOQ_TRACK_URL``/``CIOQ_INGEST_KEYS``; more can be given as JSON in
``CIOQ_WORKSPACES`` (inline or ``@/path/to/file.json``). A producer's ingest key
decides its workspace, so no producer can make cioq send with another's credentials.

The modules: `values` (list types, development values), `workspace` (`Workspace`), the
groups by reader (`store`: Redis and the queue; `ingest`: the api process; `delivery`: the
drain, retries, App lane, metrics), `settings` (`Settings` and its flat environment) and
`loading` (`load_settings`, production's refusals). Import from this package.
"""

from service.config.delivery import AppLaneSettings, DrainSettings, MetricsSettings, RetrySettings
from service.config.ingest import (
    BacklogSettings,
    ConsoleSettings,
    KeySettings,
    LimitSettings,
    ListenerSettings,
    admin_key_entries,
)
from service.config.loading import check_keys, load_settings
from service.config.named_keys import IngestKey, ingest_key_entries, named_key, producer_names
from service.config.settings import Settings, group_fields, setting_fields, setting_groups
from service.config.store import QueueSettings, RedisSettings
from service.config.values import PLACEHOLDER
from service.config.workspace import DEFAULT_WORKSPACE_FIELDS, Workspace, find_workspace

__all__ = [
    "DEFAULT_WORKSPACE_FIELDS",
    "PLACEHOLDER",
    "AppLaneSettings",
    "BacklogSettings",
    "ConsoleSettings",
    "DrainSettings",
    "IngestKey",
    "KeySettings",
    "LimitSettings",
    "ListenerSettings",
    "MetricsSettings",
    "QueueSettings",
    "RedisSettings",
    "RetrySettings",
    "Settings",
    "Workspace",
    "admin_key_entries",
    "check_keys",
    "find_workspace",
    "group_fields",
    "ingest_key_entries",
    "load_settings",
    "named_key",
    "producer_names",
    "setting_fields",
    "setting_groups",
]
