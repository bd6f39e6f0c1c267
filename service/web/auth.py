"""Who is calling: a producer's ingest key picks its workspace; admin keys are separate.

Accepted: HTTP Basic ``site_id:key`` (what Customer.io's Track SDKs send; the user part
is not trusted, only the key is), Basic ``key:`` with a blank password (what the
Pipelines SDKs send: the write key is the username), or ``Authorization: Bearer key``.
Keys are looked up by their SHA-256 digest, so the lookup time does not depend on how
much of a guess matched. Each key names its producer (`service.config.IngestKey`), so
every job records which service sent it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from pydantic import SecretStr

from service.config import KeySettings, Workspace, admin_key_entries, ingest_key_entries
from service.errors import InvalidRequest

#: Distinct Authorization headers remembered (Basic with any user name is one key).
MAX_SEEN_HEADERS = 1024


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_from_header(value: str | None) -> str | None:
    """The secret in an Authorization header, or None when there is none usable."""
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    if scheme == "bearer":
        return credentials or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, key = decoded.partition(":")
        if sep and not key:
            return user or None
        return key if sep else None
    return None


@dataclass(frozen=True, slots=True)
class Producer:
    """Who an ingest key belongs to: its workspace, the producer it names, whether bulk."""

    workspace: Workspace
    name: str
    bulk: bool


class Authenticator:
    """Maps presented keys to producers of a workspace (ingest) or to the admin role."""

    def __init__(self, workspaces: tuple[Workspace, ...], keys: KeySettings) -> None:
        self._ingest: dict[bytes, Producer] = {}
        for ws in workspaces:
            for entry in ingest_key_entries(ws):
                self._ingest[_digest(entry.key)] = Producer(ws, entry.producer, entry.bulk)
        self._admin = [(name, _digest(key)) for name, key in admin_key_entries(keys)]
        # Authorization headers already seen to carry an ingest key: a producer sends the
        # same header with every request, and decoding plus hashing it cost ~3 µs of a
        # request's ~80. Only valid keys are kept (a stranger cannot grow it), and a dict
        # keyed by str (SipHash, salted per process) leaks no timing about the key.
        self._seen: dict[str, Producer] = {}

    def producer(self, authorization: str | None) -> Producer | None:
        """The presented ingest key's producer, or None when it is no ingest key."""
        if authorization is None:
            return None
        found = self._seen.get(authorization)
        if found is not None:
            return found
        key = key_from_header(authorization)
        if key is None:
            return None
        found = self._ingest.get(_digest(key))
        if found is not None and len(self._seen) < MAX_SEEN_HEADERS:
            self._seen[authorization] = found
        return found

    def workspace(self, authorization: str | None) -> Workspace | None:
        found = self.producer(authorization)
        return None if found is None else found.workspace

    def is_bulk_key(self, authorization: str | None) -> bool:
        """Whether the presented key is one of its workspace's bulk ingest keys."""
        found = self.producer(authorization)
        return found is not None and found.bulk

    def is_admin(self, authorization: str | None) -> bool:
        key = key_from_header(authorization)
        return key is not None and self.admin_name(key) is not None

    def admin_name(self, key: str) -> str | None:
        """The name of the admin key `key`, or None; every configured key is compared."""
        digest = _digest(key)
        found = None
        for name, admin in self._admin:
            if hmac.compare_digest(admin, digest):
                found = name
        return found

    @property
    def admin_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self._admin)


def require_lane_key(
    ws: Workspace, key: SecretStr | None, *, field: str, key_name: str, calls: str
) -> None:
    """A workspace without a lane's key (its `field`) refuses the lane's calls with 403
    ``lane_disabled``, never accepting what it could not deliver."""
    if key is None:
        message = (
            f"workspace {ws.name!r} has no {key_name} "
            f"(CIOQ_{field.upper()}, or {field} in CIOQ_WORKSPACES); {calls} are refused"
        )
        raise InvalidRequest.of("authorization", "lane_disabled", message, status=403)
