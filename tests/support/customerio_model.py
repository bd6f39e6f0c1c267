"""A model of how Customer.io applies identifies, for proving coalescing changes nothing."""

from __future__ import annotations

import copy
from typing import Any

PEOPLE = ["1", "2"]


class Model:
    """People by identifier pair: attributes (value, timestamp), flags, and what events saw."""

    def __init__(self) -> None:
        self.people: dict[tuple[str, str], dict[str, Any]] = {}
        self.seen: list[tuple[str, Any]] = []

    def _person(self, ident: dict[str, Any], create: bool = True) -> dict[str, Any] | None:
        key = next(iter(ident.items()))
        if key not in self.people and create:
            self.people[key] = {"attrs": {}, "stamps": {}, "suppressed": False}
        return self.people.get(key)

    def apply(self, op: dict[str, Any]) -> None:
        action = op["action"]
        if action == "merge":
            primary = self._person(op["primary"])
            secondary = self.people.pop(next(iter(op["secondary"].items())), None)
            assert primary is not None
            if secondary is not None:
                primary["attrs"] = {**secondary["attrs"], **primary["attrs"]}
            return
        if op["type"] == "object":
            for rel in op.get("cio_relationships", []):
                self._person(rel["identifiers"])
            return
        ident = op["identifiers"]
        if action == "identify":
            attrs = dict(op.get("attributes", {}))
            only_update = attrs.pop("_update", False)
            person = self._person(ident, create=not only_update)
            if person is None:
                return
            stamp = op.get("timestamp")
            for k, v in attrs.items():
                old = person["stamps"].get(k)
                if stamp is not None and old is not None and stamp < old:
                    continue  # an older update loses to a newer one
                person["stamps"][k] = stamp
                if v is None or v == "":
                    person["attrs"].pop(k, None)
                elif isinstance(v, dict) and isinstance(person["attrs"].get(k), dict):
                    person["attrs"][k] = {**person["attrs"][k], **v}
                else:
                    person["attrs"][k] = v
        elif action == "delete":
            self.people.pop(next(iter(ident.items())), None)
        elif action == "event":
            person = self._person(ident)
            assert person is not None
            # Campaigns read attributes when the event arrives.
            self.seen.append((op["name"], copy.deepcopy(person["attrs"])))
        elif action in ("suppress", "unsuppress"):
            person = self._person(ident)
            assert person is not None
            person["suppressed"] = action == "suppress"

    def state(self) -> Any:
        return {k: (p["attrs"], p["suppressed"]) for k, p in self.people.items()}, self.seen


def replay(ops: list[dict[str, Any]]) -> Any:
    model = Model()
    for op in ops:
        model.apply(op)
    return model.state()
