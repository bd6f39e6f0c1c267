"""Dead-letter retention: letters older than ``CIOQ_DEAD_LETTER_MAX_AGE_S`` leave the queue.

The sweeper runs it (`workers.sweeper`), since it is the one process that already wakes
on a period and holds no state; any number of sweepers may run it at once. A letter's
stream id is when it died (``lua/dead_letter.lua`` adds it with ``XADD *``), so the
letters past the age are the stream's oldest ids: an ``XRANGE`` up to the cut-off finds
them without reading the rest.

Removal is by id (`LetterRemover`, ``lua/remove_letters.lua``), a page at a time, not
``XTRIM MINID``: each call's work on Redis stays bounded however many letters are due,
and the script counts only the letters it removed itself, so a purge, a replay or a
second sweeper that removed one first never makes the count wrong. A replay that read a
letter just before retention removed it still queues that letter's job once (its marker
is named after the letter, `Queue.replay`). The removed count is kept beside the stream,
in the workspace's slot, and exported by the api's metrics endpoint
(``cioq_dead_letters_expired_total``): one total per workspace, whichever sweeper removed
the letters and across their restarts.

`LetterRemover.remove` takes any predicate over the stored letter, so removing one
person's letters (forget) is the same pass with another selection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service import keys
from service.store.connections import SyncStore, load_script, store_errors
from service.store.dead_letters import DeadLetter, StoredDeadLetter

#: Letters read and removed per Redis call.
PAGE_SIZE = 500
#: Letters one retention pass reads per workspace at most (about a second's work), so a
#: first pass over a long-kept stream does not hold up the sweeper's triggers; the
#: sweeper runs the next pass at once when a pass was cut short.
PASS_MAX_LETTERS = 20 * PAGE_SIZE


def cutoff_ms(now_ms: int, max_age_s: int) -> int | None:
    """The dead time before which letters are removed (one that died exactly at it stays),
    or None when letters are kept."""
    if max_age_s <= 0:
        return None
    return now_ms - max_age_s * 1000


class LetterRemover:
    """Removes a workspace's dead letters that match a selection, counting them."""

    def __init__(self, client: SyncStore) -> None:
        self.redis = client
        self._remove = load_script(client, "remove_letters")

    def remove(
        self,
        workspace: str,
        select: Callable[[StoredDeadLetter], bool] = lambda _: True,
        *,
        before_ms: int | None = None,
        counter: str | None = None,
        max_read: int | None = None,
    ) -> int:
        """Remove the letters `select` picks (of those that died before `before_ms`, of the
        first `max_read` read when given).

        Returns how many this call removed; `counter` (a key in the workspace's slot)
        is incremented by the same number, atomically with the removal.
        """
        stream = keys.dead_letters(workspace)
        high = "+" if before_ms is None else f"({before_ms}-0"
        low = "-"
        removed = read = 0
        while True:
            count = PAGE_SIZE if max_read is None else min(PAGE_SIZE, max_read - read)
            with store_errors("dead-letter removal"):
                rows: Any = self.redis.xrange(stream, low, high, count=count)
            read += len(rows)
            picked = [
                raw_id
                for raw_id, fields in rows
                if select(StoredDeadLetter(raw_id.decode(), DeadLetter.from_fields(fields)))
            ]
            if picked:
                lua_keys = [stream] if counter is None else [stream, counter]
                with store_errors("dead-letter removal"):
                    removed += int(self._remove(keys=lua_keys, args=picked))
            if len(rows) < count or read == max_read:
                return removed
            low = f"({rows[-1][0].decode()}"

    def expire(
        self, workspace: str, *, now_ms: int, max_age_s: int, max_read: int | None = None
    ) -> int:
        """Remove the workspace's letters older than `max_age_s` (of the first `max_read`);
        returns how many."""
        cutoff = cutoff_ms(now_ms, max_age_s)
        if cutoff is None:
            return 0
        return self.remove(
            workspace,
            before_ms=cutoff,
            counter=keys.dead_letters_expired(workspace),
            max_read=max_read,
        )

    def expired_total(self, workspace: str) -> int:
        """How many of the workspace's letters retention has removed, ever."""
        with store_errors("dead-letter removal"):
            return int(self.redis.get(keys.dead_letters_expired(workspace)) or 0)
