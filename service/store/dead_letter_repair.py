"""Repairing dead letters: edit a payload, check it as ingest checks a new call, audit, replay.

A repair is never stored as a letter: a stream entry cannot change in place, and a new
entry would lose the letter's place and age. The fixed payload goes straight to replay
(`Queue.replay`, the path of an unchanged replay): its job is queued under the letter's
marker and the letter deleted once the job is confirmed, so two repairs of one letter
that race queue one of them, and a letter purged or expired meanwhile is not queued. A fix
keeps the letter's ids and accept time (`RepairRules.kept`: Track's event ``id`` and
``timestamp``, Pipelines' ``messageId`` and ``timestamp``, an App request's envelope), so
Customer.io de-duplicates and dates it as the original. What is checked and kept is each
lane's, declared with its job kinds (`service.jobs.RepairRules`); a kind without rules
(Track v1 requests) can only be replayed as it is. App sends and broadcast triggers keep
the "may deliver twice" confirmation of every replay.

Every repair is audited with its field-level diff (``-`` dropped, ``+`` added, ``~``
changed, dotted paths). Bulk repair applies one `FieldRule` (drop or rename one field)
to every letter a `DeadLetterFilter` selects that has the field: a dry run answers the
count and one example, and the real run repairs the letters the same pass selects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from service.errors import FieldError, InvalidRequest
from service.jobs import RepairRules, dumps, job_kind, restore_job
from service.store import events
from service.store.dead_letter_admin import (
    PAGE_SIZE,
    DeadLetterAdmin,
    DeadLetterFilter,
    sends_unconfirmed,
)
from service.store.dead_letters import StoredDeadLetter
from service.store.tombstones import FORGOTTEN_RULE
from service.store.workspace_control import record_audit

#: The longest audit detail a repair writes; a longer diff is cut with a note.
MAX_AUDIT_DETAIL_CHARS = 4000
#: A repair refused as a whole (the fix breaks ingest's rules) answers this.
INVALID_FIX_STATUS = 422


class RuleAction(StrEnum):
    """What a bulk repair does to the field it names."""

    DROP = "drop"
    RENAME = "rename"


@dataclass(frozen=True, slots=True)
class FieldRule:
    """Drop or rename one field, named by its dotted path in the stored payload."""

    action: RuleAction
    path: tuple[str, ...]
    #: The new name of the field's last segment (a rename stays under the same parent).
    to: str = ""

    @classmethod
    def parse(cls, action: Any, path: Any, to: Any = None) -> FieldRule:
        """A rule from an operator's words; InvalidRequest naming ``action``/``field``/``to``."""
        if action not in tuple(RuleAction):
            names = ", ".join(RuleAction)
            raise InvalidRequest.of("action", "one_of", f"action must be one of {names}")
        if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
            raise InvalidRequest.of("field", "path", "field is a dotted path such as traits.plan")
        rule = RuleAction(action)
        if rule is RuleAction.RENAME and (not isinstance(to, str) or not to or "." in to):
            raise InvalidRequest.of("to", "required", "a rename names the field's new name (to)")
        if rule is RuleAction.DROP and to not in (None, ""):
            raise InvalidRequest.of("to", "not_allowed", "a drop takes no new name")
        return cls(rule, tuple(path.split(".")), to or "")

    @property
    def text(self) -> str:
        dotted = ".".join(self.path)
        return (
            f"drop {dotted}" if self.action is RuleAction.DROP else f"rename {dotted} to {self.to}"
        )

    def apply(self, data: Any) -> Any | None:
        """`data` with the rule applied, or None when it has no such field (or the new name)."""
        *parents, name = self.path
        out = orjson.loads(orjson.dumps(data))  # a deep copy: the letter's own stays as it is
        parent = out
        for part in parents:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or name not in parent:
            return None
        value = parent.pop(name)
        if self.action is RuleAction.RENAME:
            if self.to in parent:
                return None
            parent[self.to] = value
        return out


def changes(before: Any, after: Any) -> list[str]:
    """What a repair changed, one line per leaf by dotted path: ``-`` gone, ``+`` new,
    ``~`` changed."""
    old, new = _flatten(before), _flatten(after)
    out: list[str] = []
    for path in sorted(old.keys() | new.keys()):
        if path not in new:
            out.append(f"-{path}: {_text(old[path])}")
        elif path not in old:
            out.append(f"+{path}: {_text(new[path])}")
        elif old[path] != new[path]:
            out.append(f"~{path}: {_text(old[path])} -> {_text(new[path])}")
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    # An object's leaves stand for it, so emptying one reads as its fields dropped.
    if isinstance(value, dict) and (value or prefix):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix or "payload": value}


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _rules(stored: StoredDeadLetter) -> RepairRules:
    rules = job_kind(stored.letter.kind).repair
    if rules is None:
        raise InvalidRequest.of(
            "id",
            "repair_unsupported",
            f"a {stored.letter.kind} letter cannot be edited; replay or purge it",
            status=INVALID_FIX_STATUS,
        )
    return rules


def fixed_payload(stored: StoredDeadLetter, payload: Any, *, strict: bool) -> bytes:
    """The bytes a repair of `stored` queues; InvalidRequest (422) naming every broken rule.

    The fix is checked as ingest checks a new call of the letter's kind, after the
    letter's kept fields (ids, accept time) are put back where the fix left them out.
    """
    rules = _rules(stored)
    if not isinstance(payload, dict):
        raise InvalidRequest.of(
            "payload", "type", "the payload must be a JSON object", status=INVALID_FIX_STATUS
        )
    original = orjson.loads(stored.letter.payload)
    fixed = dict(payload)
    errors: list[FieldError] = []
    for name in rules.kept:
        if name not in original:
            continue
        if name not in fixed:
            fixed[name] = original[name]
        elif fixed[name] != original[name]:
            message = f"a repair keeps the letter's {name} ({_text(original[name])})"
            errors.append(FieldError(name, "kept", message))
    prepared = rules.prepare(fixed, strict)
    errors += rules.check(prepared, strict)
    if errors:
        raise InvalidRequest(errors, status=INVALID_FIX_STATUS)
    return dumps(prepared)


@dataclass(slots=True)
class Repaired:
    """One letter repaired and replayed."""

    id: str
    changes: list[str]


@dataclass(slots=True)
class BulkOutcome:
    """What a bulk repair selected and, unless it was a dry run, repaired."""

    rule: str
    dry_run: bool
    #: Letters the filter selected.
    matched: int = 0
    #: Of those, letters that have the field and whose fix passes ingest's rules.
    fixable: int = 0
    #: Letters repaired and replayed (0 on a dry run).
    repaired: int = 0
    #: Letters that have the field but whose fix still breaks a rule (left as they are).
    invalid: int = 0
    ids: list[str] = field(default_factory=list)
    #: How many fixable letters are App sends or broadcast triggers.
    sends: int = 0
    #: The first fixable letter: id, payload before and after, changes.
    example: dict[str, Any] | None = None
    #: The first letter whose fix is refused: id and the broken rules.
    first_invalid: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "dry_run": self.dry_run,
            "matched": self.matched,
            "fixable": self.fixable,
            "repaired": self.repaired,
            "invalid": self.invalid,
            "ids": self.ids,
            "example": self.example,
            "first_invalid": self.first_invalid,
        }


class LetterRepair:
    """Repairs a workspace's dead letters and replays them (module docstring)."""

    def __init__(self, dlq: DeadLetterAdmin) -> None:
        self.dlq = dlq

    async def repair(
        self,
        workspace: str,
        letter_id: str,
        payload: Any,
        *,
        strict: bool,
        who: str,
        may_deliver_twice: bool = False,
    ) -> Repaired:
        """Check `payload` as a new call, replay it as the letter's job, audit the diff."""
        stored = await self.dlq.get(workspace, letter_id)
        if stored is None:
            raise InvalidRequest.of("id", "unknown", "no such dead letter", status=404)
        fixed = fixed_payload(stored, payload, strict=strict)
        if job_kind(stored.letter.kind).at_most_once and not may_deliver_twice:
            raise sends_unconfirmed(1)
        diff = changes(orjson.loads(stored.letter.payload), orjson.loads(fixed))
        done = await self.dlq.queue.replay(
            workspace, [(stored.id, restore_job(stored.letter.kind, fixed))]
        )
        if done.dropped:
            raise InvalidRequest.of(
                "id",
                FORGOTTEN_RULE,
                "the letter names a forgotten person: it was deleted, not replayed",
                status=409,
            )
        if not done:
            raise InvalidRequest.of(
                "id", "gone", "the letter was replayed, purged or expired meanwhile", status=409
            )
        events.dead_letters_handled(workspace, "repaired", 1)
        detail = _detail(f"letter {stored.id}", diff)
        await record_audit(self.dlq.redis, who, "repair", workspace, str(stored.lane), detail)
        return Repaired(stored.id, diff)

    async def bulk(
        self,
        workspace: str,
        flt: DeadLetterFilter,
        rule: FieldRule,
        *,
        strict: bool,
        who: str,
        dry_run: bool,
        may_deliver_twice: bool = False,
    ) -> BulkOutcome:
        """Apply `rule` to every selected letter that has the field, then replay those.

        Raises InvalidRequest (409) when App sends are among them and `may_deliver_twice`
        is False.
        """
        outcome = BulkOutcome(rule.text, dry_run)
        fixes: list[tuple[StoredDeadLetter, bytes]] = []
        async for stored in self.dlq.scan(workspace, flt):
            outcome.matched += 1
            if job_kind(stored.letter.kind).repair is None:
                continue
            before = orjson.loads(stored.letter.payload)
            after = rule.apply(before)
            if after is None:
                continue
            try:
                fixed = fixed_payload(stored, after, strict=strict)
            except InvalidRequest as exc:
                outcome.invalid += 1
                if outcome.first_invalid is None:
                    errors = [e.as_dict() for e in exc.errors]
                    outcome.first_invalid = {"id": stored.id, "errors": errors}
                continue
            outcome.fixable += 1
            outcome.ids.append(stored.id)
            outcome.sends += job_kind(stored.letter.kind).at_most_once
            if outcome.example is None:
                fixed_data = orjson.loads(fixed)
                outcome.example = {
                    "id": stored.id,
                    "before": before,
                    "after": fixed_data,
                    "changes": changes(before, fixed_data),
                }
            fixes.append((stored, fixed))
        if dry_run or not fixes:
            return outcome
        if outcome.sends and not may_deliver_twice:
            raise sends_unconfirmed(outcome.sends)
        for start in range(0, len(fixes), PAGE_SIZE):
            chunk = fixes[start : start + PAGE_SIZE]
            jobs = [(s.id, restore_job(s.letter.kind, fixed)) for s, fixed in chunk]
            outcome.repaired += len(await self.dlq.queue.replay(workspace, jobs))
        events.dead_letters_handled(workspace, "repaired", outcome.repaired)
        selection = ", ".join(f"{k}={v}" for k, v in _filter_text(flt).items()) or "every letter"
        detail = _detail(
            f"{rule.text} on {outcome.repaired} of {outcome.fixable} letters ({selection})",
            outcome.example["changes"] if outcome.example else [],
            example_of=outcome.example["id"] if outcome.example else None,
        )
        await record_audit(self.dlq.redis, who, "repair", workspace, "", detail)
        return outcome


def _filter_text(flt: DeadLetterFilter) -> dict[str, str]:
    found = {
        "ids": ",".join(flt.ids),
        "lane": str(flt.lane or ""),
        "reason": flt.reason or "",
        "class": flt.outcome_class or "",
        "op_type": flt.op_type or "",
        "person": flt.person or "",
        "since_ms": "" if flt.since_ms is None else str(flt.since_ms),
        "until_ms": "" if flt.until_ms is None else str(flt.until_ms),
    }
    return {k: v for k, v in found.items() if v}


def _detail(head: str, diff: list[str], *, example_of: str | None = None) -> str:
    lead = f"{head}; e.g. letter {example_of}" if example_of else head
    text = f"{lead}: {'; '.join(diff) if diff else 'no change'}"
    if len(text) <= MAX_AUDIT_DETAIL_CHARS:
        return text
    return text[: MAX_AUDIT_DETAIL_CHARS - 20] + " … (diff cut)"
