"""Customer.io's checks on one Pipelines (CDP) call, as pure functions.

The rules follow the published Pipelines OpenAPI (reference `cdp-and-app-api.md` §1.2):
per-type required fields, the semantic events' required fields, and the 32 KB per-call
limit. The sandbox reads "KB" as 1000 bytes, the strictest reading, so that whatever it
accepts Customer.io accepts under either reading. The first failing rule wins.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["CALL_TYPES", "check_call"]

CALL_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})
# `/v1/batch` items may be any of these: alias is not in the batch schema's `anyOf`, but
# customerio-node's `batch()` sends it, so the sandbox takes it (reference §1.2).

#: Semantic events and the fields Customer.io requires on them (reference §1.2).
_SEMANTIC: dict[str, tuple[str, ...]] = {
    "Device Created or Updated": ("userId", "context.device.token"),
    "Device Deleted": ("userId", "context.device.token"),
    "User Deleted": ("userId",),
    "User Suppressed": ("userId",),
    "User Unsuppressed": ("userId",),
    "Relationship Deleted": ("userId", "properties.objectId"),
    "Object Deleted": ("anonymousId", "properties.objectId", "properties.objectTypeId"),
    "Report Delivery Event": ("properties.deliveryId", "properties.metric"),
}


def _get(call: dict[str, Any], dotted: str) -> Any:
    value: Any = call
    for part in dotted.split("."):
        if type(value) is not dict:
            return None
        value = value.get(part)
    return value


def _present(value: Any) -> bool:
    # An empty string is a string, as the document's ``type: string`` has it; Customer.io
    # states no refusal of one (docs/validation-rules.md).
    return value is not None


def _type_problem(call: dict[str, Any], kind: str) -> str | None:
    """The required-field rule of `kind` that `call` breaks, or None."""
    if kind == "alias":
        ok = _present(call.get("previousId")) and _present(call.get("userId"))
        return None if ok else "alias needs previousId and userId"
    if kind == "group" and not _present(call.get("groupId")):
        return "group needs groupId"
    if kind == "track":
        event = call.get("event")
        if type(event) is not str or not event:
            return "track needs event"
        needs = _SEMANTIC.get(event, ())
        for dotted in needs:
            if not _present(_get(call, dotted)):
                return f"{event!r} needs {dotted}"
        if needs:  # a semantic event names its own subject
            return None
    if _present(call.get("userId")) or _present(call.get("anonymousId")):
        return None
    traits = call.get("traits")
    if kind == "identify" and type(traits) is dict and _present(traits.get("email")):
        return None
    return "userId or anonymousId is required"


def check_call(call: Any, call_type: str | None, max_call_bytes: int) -> str | None:
    """What is wrong with `call` (sent to `/v1/<call_type>`, or a batch item when None)."""
    if type(call) is not dict:
        return "a call must be a JSON object"
    kind = call_type or call.get("type")
    if kind not in CALL_TYPES:
        return f"type must be one of {sorted(CALL_TYPES)}"
    if len(orjson.dumps(call)) > max_call_bytes:
        return f"call over {max_call_bytes} bytes"
    return _type_problem(call, kind)
