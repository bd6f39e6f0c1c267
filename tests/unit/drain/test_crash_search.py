"""The crash search: a job that kills its worker is found in about log2(batch) crashes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.delivery.crash_search import InflightNote, next_send
from service.stream_ids import id_key

IDS = [f"100-{i}".encode() for i in range(8)]


@pytest.mark.parametrize(
    ("note", "ids", "planned", "expected"),
    [
        # nothing died: send what the packer planned, forget old suspicion
        (InflightNote(), IDS, 8, InflightNote(IDS[0], 8)),
        (InflightNote(b"99-0", 5, 0, b"99-4"), IDS, 8, InflightNote(IDS[0], 8)),
        # the last send from this head died: halve it, remember what died
        (InflightNote(IDS[0], 8), IDS, 8, InflightNote(IDS[0], 4, 0, IDS[7])),
        (InflightNote(IDS[0], 3), IDS, 8, InflightNote(IDS[0], 1, 0, IDS[2])),
        # the packer's plan still bounds the send
        (InflightNote(IDS[0], 8), IDS, 2, InflightNote(IDS[0], 2, 0, IDS[7])),
        # the head died alone: count it, send it alone again
        (InflightNote(IDS[0], 1, 1, IDS[0]), IDS, 8, InflightNote(IDS[0], 1, 2, IDS[0])),
        # a half went through: half of what is left of the suspect range goes next
        (InflightNote(IDS[0], 4, 0, IDS[7]), IDS[4:], 4, InflightNote(IDS[4], 2, 0, IDS[7])),
        (InflightNote(IDS[4], 2, 0, IDS[7]), IDS[6:], 2, InflightNote(IDS[6], 1, 0, IDS[7])),
    ],
)
def test_next_send(
    note: InflightNote, ids: list[bytes], planned: int, expected: InflightNote
) -> None:
    assert next_send(note, ids, planned, crash_limit=3) == expected


def test_a_head_that_died_alone_crash_limit_times_is_quarantined() -> None:
    assert next_send(InflightNote(IDS[0], 1, 2, IDS[0]), IDS, 8, crash_limit=3) is None


def test_stream_ids_compare_by_number_not_text() -> None:
    assert id_key(b"99-10") < id_key(b"100-2") and id_key(b"100-9") < id_key(b"100-10")


def _search(n: int, killer: int, crash_limit: int) -> tuple[int, int]:
    """Drive next_send against a worker that dies whenever `killer` is in the send."""
    ids = [f"1-{i}".encode() for i in range(n)]
    note, head, crashes = InflightNote(), 0, 0
    while True:
        planned = n - head
        decided = next_send(note, ids[head:], planned, crash_limit=crash_limit)
        if decided is None:
            return crashes, head
        note = decided
        if head <= killer < head + note.count:
            crashes += 1
            continue
        head += note.count


@given(st.integers(1, 4000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_killer_is_quarantined_within_log2_crashes(case: tuple[int, int]) -> None:
    n, killer = case
    crashes, quarantined = _search(n, killer, crash_limit=3)
    assert quarantined == killer
    assert crashes <= math.ceil(math.log2(n)) + 3


def test_one_infrastructure_crash_costs_one_halved_send() -> None:
    """A crash that was not the batch's fault: half goes next, then full batches again."""
    died = next_send(InflightNote(IDS[0], 8), IDS, 8, crash_limit=3)
    assert died == InflightNote(IDS[0], 4, 0, IDS[7])
    after = next_send(died, IDS[4:], 4, crash_limit=3)
    assert after is not None and after.count == 2
    beyond = next_send(InflightNote(IDS[7], 1, 0, IDS[7]), [b"101-0", b"101-1"], 2, crash_limit=3)
    assert beyond == InflightNote(b"101-0", 2)
