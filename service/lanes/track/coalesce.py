"""Coalescing: back-to-back identifies of one person inside a batch become one op.

Two person identifies merge when they name the same identifiers and nothing else that
mentions that person stands between them in the batch. The merged op is the earlier
op's attributes updated by the later op's (later values win, ``null`` still removes),
sent where the earlier op stood; per-person order is kept because nothing of that person
lies between the two. Only merges that leave Customer.io in the same state are made:

* both ops carry the same ``timestamp`` (or neither does), so no attribute is re-dated;
* both ops carry the same ``_update`` flag, so "update only if the person exists" keeps
  its meaning for every attribute;
* no ``cio_relationships`` and no other fields than type/action/identifiers/attributes/
  timestamp, so nothing but attributes changes hands;
* no key set by both ops holds an object (Customer.io may merge nested objects such as
  ``cio_subscription_preferences`` rather than replace them);
* the merged op stays within the per-op byte limit.

Every input op still maps to one output op (`Coalesced.origin`), so each stream entry
is resolved, and a per-item error on a merged op is charged to every entry it carries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from service.delivery.outcomes import Outcome, OutcomeClass

_MERGEABLE_FIELDS = frozenset({"type", "action", "identifiers", "attributes", "timestamp"})
_PERSON_REFS = ("identifiers", "primary", "secondary")
#: Cheap pre-filter on the stored bytes: an op without this cannot be an identify.
_IDENTIFY_MARK = b'"identify"'


@dataclass(frozen=True, slots=True)
class Coalesced:
    """The ops to send and, for each input op, the index of the output op carrying it."""

    ops: list[bytes]
    origin: tuple[int, ...]

    @property
    def saved(self) -> int:
        """How many ops fewer go upstream."""
        return len(self.origin) - len(self.ops)


def _person_key(ident: object) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(ident, dict) or not ident:
        return None
    # str(), not repr(): 42 and "42" may be one person, so each bars the other's runs.
    return tuple(sorted((str(k), str(v)) for k, v in ident.items()))


def _mentions(op: dict[str, Any]) -> set[tuple[str, str]]:
    """Every identifier pair an op names: its own, merge sides, and relationships."""
    found: set[tuple[str, str]] = set()
    refs: list[object] = [op.get(field) for field in _PERSON_REFS]
    relationships = op.get("cio_relationships")
    if isinstance(relationships, list):
        refs += [rel.get("identifiers") for rel in relationships if isinstance(rel, dict)]
    for ref in refs:
        found.update(_person_key(ref) or ())
    return found


def _mergeable(op: dict[str, Any]) -> bool:
    return (
        op.get("type") == "person"
        and op.get("action") == "identify"
        and op.keys() <= _MERGEABLE_FIELDS
        and isinstance(op.get("attributes", {}), dict)
        and _person_key(op.get("identifiers")) is not None
    )


def merge_pair(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any] | None:
    """The one identify equal to `first` then `second`, or None when that is not safe."""
    if not (_mergeable(first) and _mergeable(second)):
        return None
    if first["identifiers"] != second["identifiers"]:
        return None
    if first.get("timestamp") != second.get("timestamp"):
        return None
    a: dict[str, Any] = first.get("attributes", {})
    b: dict[str, Any] = second.get("attributes", {})
    if a.get("_update") != b.get("_update"):
        return None
    if any(isinstance(a[k], dict) or isinstance(b[k], dict) for k in a.keys() & b.keys()):
        return None
    merged = dict(first)
    if a or b:
        merged["attributes"] = {**a, **b}
    return merged


def coalesce_ops(
    ops: Sequence[dict[str, Any]], *, fits: Callable[[dict[str, Any]], bool] = lambda _: True
) -> tuple[list[dict[str, Any]], list[int]]:
    """Merge identifies within `ops`; returns (output ops, output index of each input op).

    A person's open run is its latest output identify; any op that mentions the person
    and is not merged into that run closes it. `fits` vetoes a merged op (its size).
    """
    out: list[dict[str, Any]] = []
    origin: list[int] = []
    open_run: dict[tuple[tuple[str, str], ...], int] = {}
    run_of_pair: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
    for op in ops:
        key = _person_key(op.get("identifiers")) if _mergeable(op) else None
        target = open_run.get(key) if key is not None else None
        if target is not None:
            merged = merge_pair(out[target], op)
            if merged is not None and fits(merged):
                out[target] = merged
                origin.append(target)
                continue
        for pair in _mentions(op):
            closed = run_of_pair.pop(pair, None)
            if closed is not None:
                open_run.pop(closed, None)
        out.append(op)
        origin.append(len(out) - 1)
        if key is not None:
            open_run[key] = len(out) - 1
            run_of_pair.update(dict.fromkeys(key, key))
    return out, origin


def coalesce_batch(ops: Sequence[bytes], *, max_op_bytes: int) -> Coalesced:
    """Coalesce stored op bytes; ops that are not merged keep their exact bytes."""
    identity = tuple(range(len(ops)))
    if sum(1 for op in ops if _IDENTIFY_MARK in op) < 2:
        return Coalesced(list(ops), identity)
    merged, origin = coalesce_ops(
        [orjson.loads(op) for op in ops],
        fits=lambda op: len(orjson.dumps(op)) <= max_op_bytes,
    )
    if len(merged) == len(ops):
        return Coalesced(list(ops), identity)
    first_member: dict[int, int] = {}
    members = [0] * len(merged)
    for index, target in enumerate(origin):
        first_member.setdefault(target, index)
        members[target] += 1
    out = [
        ops[first_member[target]] if members[target] == 1 else orjson.dumps(op)
        for target, op in enumerate(merged)
    ]
    return Coalesced(out, tuple(origin))


def expand_item_errors(outcome: Outcome, origin: Sequence[int]) -> Outcome:
    """Per-item errors on sent ops, re-indexed to the input ops each sent op carried."""
    if outcome.outcome_class is not OutcomeClass.PARTIAL:
        return outcome
    by_sent = {e.batch_index: e for e in outcome.item_errors}
    errors = tuple(
        replace(by_sent[sent], batch_index=index)
        for index, sent in enumerate(origin)
        if sent in by_sent
    )
    return replace(outcome, item_errors=errors)
