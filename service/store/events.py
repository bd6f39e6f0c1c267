"""What the store reports as it goes: jobs accepted, jobs dead-lettered, letters handled.

The store sits below `service.metrics` (whose gauges and overview read it), so it calls
no metric itself: whoever counts subscribes here (`service.metrics.definitions` does
when it is imported), and a process that counts nothing pays one empty loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from service.jobs import Job, Lane


class StoreListener(Protocol):
    def jobs_accepted(self, workspace: str, jobs: Sequence[Job], producer: str) -> None:
        """Jobs of one request stored, sent by `producer`."""

    def dead_lettered(self, workspace: str, letters: Iterable[tuple[str, Lane, str]]) -> None:
        """Jobs dead-lettered, as (reason, lane, producer) triples."""

    def dead_letters_handled(self, workspace: str, action: str, count: int) -> None: ...


_LISTENERS: list[StoreListener] = []


def listen(listener: StoreListener) -> None:
    _LISTENERS.append(listener)


def jobs_accepted(workspace: str, jobs: Sequence[Job], producer: str = "") -> None:
    for listener in _LISTENERS:
        listener.jobs_accepted(workspace, jobs, producer)


def dead_lettered(workspace: str, letters: Sequence[tuple[str, Lane, str]]) -> None:
    for listener in _LISTENERS:
        listener.dead_lettered(workspace, letters)


def dead_letters_handled(workspace: str, action: str, count: int) -> None:
    for listener in _LISTENERS:
        listener.dead_letters_handled(workspace, action, count)
