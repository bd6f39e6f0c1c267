"""Redis stream entry ids (``<ms>-<seq>``): the one place they are taken apart.

An id's milliseconds are the time Redis stored the entry, which cioq reads as a job's
accept time (its age, a backlog's oldest head, an audit entry's time).
"""

from __future__ import annotations


def id_key(entry_id: bytes) -> tuple[int, int]:
    """A stream id as a sortable (ms, seq) pair."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def id_ms(entry_id: bytes | str) -> int:
    """The milliseconds part of a stream id."""
    # Not through id_key: the drain asks it of every entry it sends, and the sequence
    # number it would parse too is thrown away.
    raw = entry_id.encode() if isinstance(entry_id, str) else entry_id
    return int(raw.partition(b"-")[0])


def next_id(entry_id: bytes) -> bytes:
    """The smallest stream id greater than `entry_id`, for ``XTRIM MINID``."""
    ms, seq = id_key(entry_id)
    return f"{ms}-{seq + 1}".encode()
