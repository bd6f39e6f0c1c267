"""The ports tests start servers on: never one the kernel may hand to an outgoing
connection meanwhile, never one another xdist worker may pick (`free_port`)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import tests.support.processes as processes
from tests.support.processes import CLUSTER_BUS_OFFSET, PORT_CEILING, PORT_FLOOR, free_port


def _ephemeral_floor() -> int:
    found = Path("/proc/sys/net/ipv4/ip_local_port_range")
    return int(found.read_text().split()[0]) if found.exists() else 32768


def test_ports_and_bus_ports_lie_below_the_ephemeral_range() -> None:
    assert PORT_CEILING <= PORT_FLOOR + CLUSTER_BUS_OFFSET  # bus ports above every slice
    assert _ephemeral_floor() >= PORT_CEILING + CLUSTER_BUS_OFFSET


def test_successive_ports_differ_and_skip_one_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    monkeypatch.setattr(processes, "_next_port", [])
    first = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", first + 1))
        held.listen()
        second = free_port()
    assert second != first and second != first + 1
    assert min(first, second) >= PORT_FLOOR and max(first, second) < PORT_CEILING


def test_workers_take_disjoint_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    picked: dict[str, set[int]] = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setattr(processes, "_next_port", [])
        picked[worker] = {free_port() for _ in range(20)}
    assert not picked["gw0"] & picked["gw1"]
    assert len(picked["gw0"]) == 20
