"""The chaos reconciler finds what it must: losses, reordering, duplicates and their causes."""

from __future__ import annotations

import orjson

from bench.chaos_producer import Ledger
from bench.chaos_report import Arrival, FaultEvent, dead_letter_ids, reconcile


def ledger(*ids: tuple[str, int], retried: tuple[tuple[str, int], ...] = ()) -> Ledger:
    book = Ledger()
    for op_id in ids:
        book.accepted[op_id] = 100.0
    book.retried.update(retried)
    return book


def arrivals(*items: tuple[str, int, float]) -> list[Arrival]:
    return [Arrival((person, seq), at_s) for person, seq, at_s in items]


def test_clean_run_reports_nothing_wrong() -> None:
    book = ledger(("a", 0), ("a", 1), ("b", 0))
    report = reconcile(
        3, book, arrivals(("a", 0, 101), ("b", 0, 101), ("a", 1, 102)), {}, [], lease_s=3
    )
    assert (report.lost, report.order_violations, report.duplicates) == ([], [], 0)
    assert report.delivered == 3 and report.ok
    assert report.latency_p50_ms == 1000.0


def test_missing_op_is_lost_unless_dead_lettered() -> None:
    book = ledger(("a", 0), ("a", 1), ("a", 2))
    book.poison[("a", 2)] = "207"
    report = reconcile(3, book, arrivals(("a", 0, 101)), {("a", 2): "invalid"}, [], lease_s=3)
    assert report.lost == [("a", 1)] and not report.ok
    assert report.dead_lettered == {"invalid": 1}
    assert report.poison_dead_lettered == 1 and report.healthy_dead_lettered == 0


def test_first_arrival_out_of_order_is_a_violation_but_a_repeat_is_not() -> None:
    book = ledger(("a", 0), ("a", 1), ("a", 2))
    redelivered = arrivals(("a", 0, 101), ("a", 1, 102), ("a", 0, 103), ("a", 2, 104))
    assert reconcile(3, book, redelivered, {}, [], lease_s=3).order_violations == []
    swapped = arrivals(("a", 1, 101), ("a", 0, 102), ("a", 2, 103))
    report = reconcile(3, book, swapped, {}, [], lease_s=3)
    assert report.order_violations == ["a: #0 first arrived after #1"]


def test_duplicates_are_attributed_to_the_fault_that_explains_them() -> None:
    book = ledger(("a", 0), ("b", 0), ("c", 0), ("d", 0), retried=(("d", 0),))
    events = [
        FaultEvent("sandbox_timeout", 200, 203),
        FaultEvent("kill_worker", 300, 301),
    ]
    seen = arrivals(
        ("a", 0, 201),
        ("a", 0, 205),  # first copy during the timeout window
        ("b", 0, 299),
        ("b", 0, 303),  # re-sent after the killed worker's lease expired
        ("c", 0, 500),
        ("c", 0, 501),  # no fault explains it
        ("d", 0, 600),
        ("d", 0, 601),  # the producer retried it
    )
    report = reconcile(4, book, seen, {}, events, lease_s=3)
    assert report.duplicates == 4
    assert report.duplicate_causes == {
        "upstream_timeout": 1,
        "worker_sigkill": 1,
        "unattributed": 1,
        "producer_retry": 1,
    }


def test_dead_letter_ids_read_v2_payloads_only() -> None:
    op = {"identifiers": {"id": "a"}, "attributes": {"seq": 4}}
    entries = [
        (b"1-0", {b"kind": b"v2", b"payload": orjson.dumps(op), b"reason": b"invalid"}),
        (b"2-0", {b"kind": b"v1", b"payload": b"{}", b"reason": b"invalid"}),
    ]
    assert dead_letter_ids(entries) == {("a", 4): "invalid"}
