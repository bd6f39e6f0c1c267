"""Finding a job that kills its worker, in about log2(batch) crashes.

Before each send the drain notes in Redis what it is about to send (`InflightNote`).
If the next holder of the shard finds the note still naming the same head, that send
died without an outcome (worker killed, OOM, hard timeout). The next send is then
halved, and the range that died stays *suspect*: after a successful half, only half of
what is left of the suspect range goes out. A job that died alone `crash_limit` times
is quarantined. One infrastructure crash costs a single halved send, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.stream_ids import id_key


@dataclass(frozen=True, slots=True)
class InflightNote:
    """What the shard's holder sent last, and what is known about earlier deaths."""

    head: bytes | None = None
    count: int = 0
    lone_crashes: int = 0
    suspect_last: bytes | None = None
    #: The answer to the send of `head` that the api sent and left to a drain to settle
    #: (``answered.lua``): the job is settled by it, never sent again.
    answer: bytes | None = None


def next_send(
    note: InflightNote, ids: Sequence[bytes], planned: int, *, crash_limit: int
) -> InflightNote | None:
    """The note for the next send from `ids[0]` of at most `planned` ops.

    None means `ids[0]` has died alone `crash_limit` times: quarantine it.
    """
    head = ids[0]
    if note.head == head:
        lone = note.lone_crashes + (1 if note.count <= 1 else 0)
        if lone >= crash_limit:
            return None
        died = ids[min(note.count, len(ids)) - 1]
        return InflightNote(head, max(1, min(planned, note.count // 2)), lone, died)
    if note.suspect_last is not None and id_key(head) <= id_key(note.suspect_last):
        limit = id_key(note.suspect_last)
        window = sum(1 for i in ids if id_key(i) <= limit)
        return InflightNote(head, max(1, min(planned, window // 2)), 0, note.suspect_last)
    return InflightNote(head, planned, 0, None)
