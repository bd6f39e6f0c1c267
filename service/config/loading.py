"""`load_settings()`: the environment read once at start-up, and what production refuses."""

from __future__ import annotations

from service.config.ingest import admin_key_entries
from service.config.named_keys import ingest_key_entries
from service.config.settings import Settings
from service.config.values import (
    DEV_ADMIN_KEY,
    DEV_API_KEY,
    DEV_APP_API_KEY,
    DEV_CDP_API_KEY,
    DEV_INGEST_KEY,
    DEV_SITE_ID,
    PLACEHOLDER,
)
from service.errors import ConfigError


def check_keys(settings: Settings) -> None:
    """Refuse admin keys that are also ingest keys, and dev, empty or placeholder secrets in
    production."""
    ingest = {entry.key for ws in settings.workspaces for entry in ingest_key_entries(ws)}
    admin = {key for _, key in admin_key_entries(settings.keys)}
    if ingest & admin:
        raise ConfigError("CIOQ_ADMIN_KEYS must not share a key with any workspace's ingest keys")
    if settings.redis.env != "production":
        return
    problems: list[str] = []
    if not admin or admin & {"", DEV_ADMIN_KEY}:
        problems.append("CIOQ_ADMIN_KEYS is empty or holds the development key")
    for ws in settings.workspaces:
        keys = {entry.key for entry in ingest_key_entries(ws) if not entry.bulk}
        if not keys or keys & {"", DEV_INGEST_KEY}:
            problems.append(f"workspace {ws.name!r}: ingest keys are empty or the development key")
        if ws.api_key.get_secret_value() in ("", DEV_API_KEY):
            problems.append(f"workspace {ws.name!r}: API key is empty or the development key")
        if ws.cdp_api_key is not None and ws.cdp_api_key.get_secret_value() == DEV_CDP_API_KEY:
            problems.append(f"workspace {ws.name!r}: Pipelines key is the development key")
        if ws.app_api_key is not None and ws.app_api_key.get_secret_value() == DEV_APP_API_KEY:
            problems.append(f"workspace {ws.name!r}: App API key is the development key")
        if ws.site_id in ("", DEV_SITE_ID):
            problems.append(f"workspace {ws.name!r}: site id is empty or the development one")
    problems.extend(
        f"{name} still holds the {PLACEHOLDER} placeholder" for name in _placeholders(settings)
    )
    if problems:
        raise ConfigError("CIOQ_ENV=production refuses: " + "; ".join(problems))


def _placeholders(settings: Settings) -> list[str]:
    """The settings whose value still holds the example Secrets' placeholder."""
    values: dict[str, str] = {
        "CIOQ_REDIS_URL": settings.redis.redis_url,
        "CIOQ_BROKER_URL": settings.redis.broker_url or "",
        "CIOQ_ADMIN_KEYS": ",".join(k.get_secret_value() for k in settings.keys.admin_keys),
    }
    for ws in settings.workspaces:
        where = "" if ws.name == "default" else f" (workspace {ws.name})"
        values[f"CIOQ_SITE_ID{where}"] = ws.site_id
        values[f"CIOQ_API_KEY{where}"] = ws.api_key.get_secret_value()
        values[f"CIOQ_INGEST_KEYS{where}"] = ",".join(k.get_secret_value() for k in ws.ingest_keys)
    return [name for name, value in values.items() if PLACEHOLDER in value]


def load_settings() -> Settings:
    """Read the environment once; raises ConfigError with every problem found."""
    try:
        settings = Settings()
        _ = settings.workspaces
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    check_keys(settings)
    return settings
