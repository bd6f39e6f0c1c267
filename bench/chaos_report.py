"""Reconcile a chaos run: what the producer got acknowledged against what came out.

An accepted op must end up delivered (the sandbox recorded it) or dead-lettered (it is in
the workspace's dead-letter stream); anything else is *lost*. Per person, the first
arrival of each op must follow the acknowledged order; a later repeat of an op is a
*duplicate* (at-least-once delivery), counted with the fault that explains it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.chaos_producer import Ledger, OpId


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One injected fault, from `start_s` to `end_s` (wall clock)."""

    kind: str
    start_s: float
    end_s: float


@dataclass
class Arrival:
    """An op as the sandbox recorded it, and when (the sandbox's wall clock)."""

    op_id: OpId
    at_s: float


@dataclass
class ChaosReport:
    planned: int
    accepted: int = 0
    delivered: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    lost: list[OpId] = field(default_factory=list)
    duplicates: int = 0
    duplicate_causes: dict[str, int] = field(default_factory=dict)
    order_violations: list[str] = field(default_factory=list)
    unacknowledged_delivered: int = 0
    poison: int = 0
    poison_dead_lettered: int = 0
    poison_delivered: int = 0
    healthy_dead_lettered: int = 0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    producer_statuses: dict[int, int] = field(default_factory=dict)
    producer_transport_errors: int = 0
    rejected: list[str] = field(default_factory=list)
    run_s: float = 0.0
    settle_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.order_violations and not self.rejected

    def render(self) -> str:
        dead = ", ".join(f"{k}={v}" for k, v in sorted(self.dead_lettered.items())) or "none"
        causes = ", ".join(f"{k}={v}" for k, v in sorted(self.duplicate_causes.items()))
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        lines = [
            "chaos report",
            f"  planned ops             {self.planned}",
            f"  accepted (2xx)          {self.accepted}",
            f"  delivered               {self.delivered}",
            f"  dead-lettered           {sum(self.dead_lettered.values())} ({dead})",
            f"    poison ops            {self.poison} sent, {self.poison_dead_lettered} in DLQ, "
            f"{self.poison_delivered} delivered",
            f"    healthy ops in DLQ    {self.healthy_dead_lettered}",
            f"  lost                    {len(self.lost)}",
            f"  duplicates              {self.duplicates} ({causes or 'none'})",
            f"  delivered, never acked  {self.unacknowledged_delivered}",
            f"  order violations        {len(self.order_violations)}",
            f"  end-to-end latency      p50 {self.latency_p50_ms:.0f} ms, "
            f"p99 {self.latency_p99_ms:.0f} ms",
            f"  faults injected         {faults}",
            f"  producer answers        {dict(sorted(self.producer_statuses.items()))}, "
            f"transport errors {self.producer_transport_errors}",
            f"  run / settle            {self.run_s:.1f} s / {self.settle_s:.1f} s",
        ]
        lines += [f"  LOST {p}#{s}" for p, s in self.lost[:10]]
        lines += [f"  ORDER {v}" for v in self.order_violations[:10]]
        lines += [f"  REJECTED {r}" for r in self.rejected[:10]]
        lines.append(f"  verdict                 {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def op_id_of(op: dict[str, Any]) -> OpId | None:
    """(person, seq) of a chaos op or Pipelines call; None for anything else."""
    try:
        if "userId" in op:
            bag = op["traits"] if op.get("type") == "identify" else op["properties"]
            return str(op["userId"]), int(bag["seq"])
        return str(op["identifiers"]["id"]), int(op["attributes"]["seq"])
    except (KeyError, TypeError, ValueError):
        return None


def dead_letter_ids(entries: Any) -> dict[OpId, str]:
    """(person, seq) → reason of every chaos op or call in a dead-letter stream."""
    found: dict[OpId, str] = {}
    for _, fields in entries:
        if fields.get(b"kind") not in (b"v2", b"cdp"):
            continue
        op_id = op_id_of(orjson.loads(fields[b"payload"]))
        if op_id is not None:
            found.setdefault(op_id, fields.get(b"reason", b"?").decode())
    return found


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cause(
    op_id: OpId,
    first: float,
    repeat: float,
    ledger: Ledger,
    events: list[FaultEvent],
    lease_s: float,
) -> str:
    if op_id in ledger.retried:
        return "producer_retry"
    for event in events:
        if event.kind == "sandbox_timeout" and event.start_s - 1 <= first <= event.end_s + 5:
            return "upstream_timeout"
    for event in events:
        if event.kind == "kill_worker" and event.start_s <= repeat <= event.end_s + lease_s + 10:
            return "worker_sigkill"
    for event in events:
        if event.kind == "kill_redis" and event.start_s - 5 <= first <= event.end_s + 5:
            return "redis_sigkill"
    return "unattributed"


def reconcile(
    planned: int,
    ledger: Ledger,
    arrivals: list[Arrival],
    dead: dict[OpId, str],
    events: list[FaultEvent],
    *,
    lease_s: float,
) -> ChaosReport:
    """The report for one run; `arrivals` in the order the sandbox recorded them."""
    report = ChaosReport(planned=planned, accepted=len(ledger.accepted))
    first_at: dict[OpId, float] = {}
    copies: Counter[OpId] = Counter()
    last_seq: dict[str, int] = defaultdict(lambda: -1)
    for arrival in arrivals:
        op_id = arrival.op_id
        copies[op_id] += 1
        if copies[op_id] > 1:
            cause = _cause(op_id, first_at[op_id], arrival.at_s, ledger, events, lease_s)
            report.duplicate_causes[cause] = report.duplicate_causes.get(cause, 0) + 1
            report.duplicates += 1
            continue
        first_at[op_id] = arrival.at_s
        person, seq = op_id
        if seq < last_seq[person]:
            report.order_violations.append(
                f"{person}: #{seq} first arrived after #{last_seq[person]}"
            )
        last_seq[person] = max(last_seq[person], seq)
    accepted = set(ledger.accepted)
    delivered = set(first_at)
    report.delivered = len(delivered & accepted)
    report.unacknowledged_delivered = len(delivered - accepted)
    report.dead_lettered = dict(
        Counter(reason for op_id, reason in dead.items() if op_id in accepted)
    )
    report.lost = sorted(accepted - delivered - set(dead))
    poison = set(ledger.poison) & accepted
    report.poison = len(poison)
    report.poison_dead_lettered = len(poison & set(dead))
    report.poison_delivered = len(poison & delivered)
    report.healthy_dead_lettered = len((set(dead) & accepted) - poison)
    latencies = [(first_at[i] - ledger.accepted[i]) * 1000 for i in delivered & accepted]
    report.latency_p50_ms = _percentile(latencies, 0.50)
    report.latency_p99_ms = _percentile(latencies, 0.99)
    report.faults = dict(Counter(e.kind for e in events))
    report.producer_statuses = dict(ledger.statuses)
    report.producer_transport_errors = ledger.transport_errors
    report.rejected = list(ledger.rejected)
    return report
