"""Values the groups share: comma-separated lists, and the development and placeholder
values that production refuses.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, SecretStr
from pydantic_settings import NoDecode

#: Values that only make sense on a developer's machine; production refuses them.
DEV_SITE_ID = "dev-site"
DEV_API_KEY = "dev-api-key"
DEV_CDP_API_KEY = "dev-cdp-key"
DEV_APP_API_KEY = "dev-app-key"
DEV_INGEST_KEY = "dev-ingest-key"
DEV_ADMIN_KEY = "dev-admin-key"
#: Marks a value in the shipped example Secrets (deploy/k8s/overlays/*/secrets.env.example)
#: that must be replaced; production refuses any secret that still contains it.
PLACEHOLDER = "CHANGE_ME"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


#: Keys in one variable or JSON string, comma-separated (`a,b`), or a list.
CsvSecrets = Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(_split_csv)]
#: Addresses or networks, comma-separated, or a list.
CsvStrings = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_csv)]
