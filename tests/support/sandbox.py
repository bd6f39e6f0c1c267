"""Names and builders shared by the sandbox's own tests (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

SITE, KEY = "dev-site", "dev-api-key"
OTHER_SITE, OTHER_KEY = "other-site", "other-key"


def event(i: int, **attributes: Any) -> dict[str, Any]:
    """A valid person event op for person ``p<i>``, carrying ``i`` in its attributes."""
    return {
        "type": "person",
        "action": "event",
        "identifiers": {"id": f"p{i}"},
        "name": "seen",
        "attributes": {"i": i, **attributes},
    }
