"""Late failures: calls the sandbox accepts with 200 and then fails, as Customer.io does.

Customer.io answers a Track or Pipelines call 200 when it accepts it and processes it
afterwards; an identify whose email belongs to another profile, an attribute it refuses or
an event it cannot apply then fails, and shows only in the workspace's activity log
(``failed_attribute_change``, ``failed_event``...). The sandbox draws such failures for a
configurable share of the identifies and events it accepts (`LateFailureConfig`), each
appearing after a random delay, and serves the App API's ``GET /v1/activities`` and
``GET /v1/customers/{id}/activities`` over them.

The shapes follow Customer.io's App API reference (``listActivities``): ``{"activities":
[...], "next": "..."}``, each activity ``{id, customer_id, customer_identifiers, data,
timestamp, type, name}``; ``start`` takes a ``next``; ``limit`` is 1..100 (default 10).
What the reference leaves open, the sandbox decides, and says so: the newest activity comes
first; ``next`` is ``""`` after the last page; Customer.io's reason is
``data.reason`` and an event's id ``data.event_id``. An activity is logged when its delay
has passed, so the log only ever grows at its newest end.
"""

from __future__ import annotations

import base64
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from ulid import ULID

__all__ = ["Activities", "LateFailureConfig"]

#: What Customer.io writes to the activity log for each failure the sandbox draws.
EMAIL_TAKEN = "The identifier is already associated with a different profile"
ATTRIBUTE_REFUSED = "The attribute value was refused"
EVENT_FAILED = "The event could not be applied to the profile"
MAX_LIMIT = 100
DEFAULT_LIMIT = 10


@dataclass(frozen=True)
class LateFailureConfig:
    """How late failures are drawn, as posted to ``/_sandbox/late_failures``."""

    #: Share of accepted identifies and events that fail afterwards (0..1).
    rate: float = 0.0
    #: Each failure appears in the activity log after a delay drawn in this range.
    min_delay_s: float = 0.5
    max_delay_s: float = 5.0
    seed: int | None = None
    #: Activity reads an App API key may make before each later one answers 429 with no
    #: ``Retry-After``, as Customer.io's daily quota does; None: no quota.
    daily_read_quota: int | None = None
    #: Per App API key, the site ids and write keys whose calls its log shows; a key not
    #: named here sees every call.
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: object) -> LateFailureConfig:
        if type(doc) is not dict:
            raise ValueError("late failures must be a JSON object")
        unknown = doc.keys() - cls.__dataclass_fields__.keys()
        if unknown:
            raise ValueError(f"unknown late failure settings: {sorted(unknown)}")
        rate = doc.get("rate", 0.0)
        if type(rate) not in (int, float) or not 0 <= rate <= 1:
            raise ValueError("rate must be a number between 0 and 1")
        low, high = doc.get("min_delay_s", 0.5), doc.get("max_delay_s", 5.0)
        if any(type(v) not in (int, float) or v < 0 for v in (low, high)) or low > high:
            raise ValueError("min_delay_s and max_delay_s must be numbers, 0 ≤ min ≤ max")
        seed, quota = doc.get("seed"), doc.get("daily_read_quota")
        if seed is not None and type(seed) is not int:
            raise ValueError("seed must be an integer or null")
        if quota is not None and (type(quota) is not int or quota < 0):
            raise ValueError("daily_read_quota must be an integer ≥ 0 or null")
        sources = doc.get("sources", {})
        if type(sources) is not dict or not all(
            type(v) is list and all(type(s) is str for s in v) for v in sources.values()
        ):
            raise ValueError("sources must map App API keys to lists of site ids or write keys")
        return cls(
            float(rate),
            float(low),
            float(high),
            seed,
            quota,
            {k: tuple(v) for k, v in sources.items()},
        )

    def to_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["sources"] = {k: list(v) for k, v in self.sources.items()}
        return out


@dataclass(frozen=True)
class _Call:
    """What an accepted call asked of one person, as far as a failure needs it."""

    action: str  # "identify" or "event"
    identifiers: dict[str, str]
    name: str
    attributes: dict[str, Any]
    event_id: str | None


def _object(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else {}


def _v2(op: Any) -> _Call | None:
    if type(op) is not dict or op.get("type") != "person":
        return None
    action, ident = op.get("action"), op.get("identifiers")
    if action not in ("identify", "event") or type(ident) is not dict:
        return None
    attributes = _object(op.get("attributes"))
    event_id = op.get("id") if type(op.get("id")) is str else None
    identifiers = {str(k): str(v) for k, v in ident.items()}
    return _Call(action, identifiers, str(op.get("name") or ""), attributes, event_id)


def _v1(record: Any) -> _Call | None:
    parts = str(record.get("path", "")).strip("/").split("/")
    body = _object(record.get("body"))
    if len(parts) < 4 or parts[:3] != ["api", "v1", "customers"]:
        return None
    ident = {"id": parts[3]}
    if len(parts) == 4 and record.get("method") == "PUT":
        return _Call("identify", ident, "", body, None)
    if len(parts) == 5 and parts[4] == "events" and record.get("method") == "POST":
        event_id = body.get("id") if type(body.get("id")) is str else None
        data = _object(body.get("data"))
        return _Call("event", ident, str(body.get("name") or ""), data, event_id)
    return None


def _cdp(call: Any) -> _Call | None:
    if type(call) is not dict or call.get("type") not in ("identify", "track"):
        return None
    ident = {"id": str(call["userId"])} if call.get("userId") not in (None, "") else {}
    traits = _object(call.get("traits"))
    if "email" in traits and not ident:
        ident = {"email": str(traits["email"])}
    if not ident:
        return None
    if call["type"] == "identify":
        return _Call("identify", ident, "", traits, None)
    props = _object(call.get("properties"))
    message_id = call.get("messageId") if type(call.get("messageId")) is str else None
    return _Call("event", ident, str(call.get("event") or ""), props, message_id)


_READERS = {"v2": _v2, "v1": _v1, "cdp": _cdp}


def _failure(call: _Call) -> tuple[str, str, dict[str, Any]]:
    """The activity's type, name and data for a failed `call`."""
    if call.action == "event":
        data: dict[str, Any] = {"reason": EVENT_FAILED}
        if call.event_id:
            data["event_id"] = call.event_id
        return "failed_event", call.name, data
    email = call.attributes.get("email") or call.identifiers.get("email")
    if email is not None:
        change = {"email": {"from": "", "to": str(email)}, "reason": EMAIL_TAKEN}
        return "failed_attribute_change", "email", change
    name = next(iter(call.attributes), "")
    value = "" if not name else str(call.attributes[name])
    data = {"reason": ATTRIBUTE_REFUSED, **({name: {"from": "", "to": value}} if name else {})}
    return "failed_attribute_change", name, data


class Activities:
    """The workspace activity log's failures: drawn when calls are accepted, logged when
    their delay has passed; `SandboxState.reset` replaces it."""

    def __init__(self, config: LateFailureConfig | None = None) -> None:
        self.set(config or LateFailureConfig())
        self._pending: list[tuple[float, int, str, dict[str, Any]]] = []
        self._log: list[tuple[str, dict[str, Any]]] = []  # (source, activity), oldest first
        self._drawn = 0
        self._reads: dict[str, int] = {}

    def set(self, config: LateFailureConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._reads = {}

    def observe(self, kind: str, source: str | None, ops: list[tuple[int, Any]], at: float) -> None:
        """Draw the late failures of the `ops` of one accepted request."""
        reader = _READERS.get(kind)
        if reader is None or self.config.rate <= 0:
            return
        for _, op in ops:
            call = reader(op)
            if call is None or self._rng.random() >= self.config.rate:
                continue
            delay_s = self._rng.uniform(self.config.min_delay_s, self.config.max_delay_s)
            kind_of, name, data = _failure(call)
            activity = {
                "customer_id": call.identifiers.get("id"),
                "customer_identifiers": {
                    "id": call.identifiers.get("id"),
                    "email": call.identifiers.get("email"),
                    "cio_id": call.identifiers.get("cio_id", ""),
                },
                "data": data,
                "type": kind_of,
                "name": name,
            }
            self._drawn += 1
            heapq.heappush(self._pending, (at + delay_s, self._drawn, source or "", activity))

    def _promote(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            visible_at, _, source, activity = heapq.heappop(self._pending)
            activity["id"] = str(ULID.from_timestamp(visible_at))
            activity["timestamp"] = int(visible_at)
            self._log.append((source, activity))

    def over_quota(self, key: str) -> bool:
        """Count one activity read by `key`; True once it is past the daily quota."""
        quota = self.config.daily_read_quota
        self._reads[key] = self._reads.get(key, 0) + 1
        return quota is not None and self._reads[key] > quota

    def page(
        self, key: str, query: dict[str, str], now: float, person: dict[str, str] | None
    ) -> Any:
        """One page of the log `key` sees, newest first: ``{"activities", "next"}``.

        Raises ValueError for a `limit` or `start` Customer.io would refuse."""
        self._promote(now)
        limit = _limit(query.get("limit"))
        before = _cursor(query.get("start")) if query.get("start") else len(self._log)
        sources = self.config.sources.get(key)
        wanted_type, wanted_name = query.get("type"), query.get("name")
        found: list[dict[str, Any]] = []
        position = min(before, len(self._log))
        while position > 0 and len(found) < limit:
            position -= 1
            source, activity = self._log[position]
            if sources is not None and source not in sources:
                continue
            if wanted_type and activity["type"] != wanted_type:
                continue
            if wanted_name and activity["name"] != wanted_name:
                continue
            if person is not None and not _names(activity, person):
                continue
            found.append(activity)
        more = position > 0 and len(found) == limit
        return {"activities": found, "next": _token(position) if more else ""}

    def stats(self) -> dict[str, int]:
        return {"drawn": self._drawn, "logged": len(self._log), "pending": len(self._pending)}


def _names(activity: dict[str, Any], person: dict[str, str]) -> bool:
    ((id_type, value),) = person.items()
    return bool(activity["customer_identifiers"].get(id_type) == value)


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _token(position: int) -> str:
    return base64.urlsafe_b64encode(f"a{position}".encode()).decode().rstrip("=")


def _cursor(token: str | None) -> int:
    try:
        text = base64.urlsafe_b64decode((token or "") + "=" * (-len(token or "") % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("start is not a token this API returned") from None
    if not (text.startswith("a") and text[1:].isdigit()):
        raise ValueError("start is not a token this API returned")
    return int(text[1:])
