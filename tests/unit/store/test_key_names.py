"""The Redis key names of every lane, pinned: queues in production Redis are written under them.

Track's keys name no lane (they predate lanes); a change to any name here strands the jobs,
leases, retry state and pauses already stored under the old one.
"""

from __future__ import annotations

import pytest

from service import keys
from service.jobs import Lane, Traffic, registered_lanes

#: (lane, traffic) → the hash tag of shard 7 of workspace ``acme``.
TAGS = {
    (Lane.TRACK, Traffic.LIVE): "{acme:7}",
    (Lane.TRACK, Traffic.BULK): "{acme:bulk:7}",
    (Lane.PIPELINES, Traffic.LIVE): "{acme:pipelines:7}",
    (Lane.PIPELINES, Traffic.BULK): "{acme:pipelines:bulk:7}",
    (Lane.APP, Traffic.LIVE): "{acme:app:7}",
    (Lane.APP, Traffic.BULK): "{acme:app:bulk:7}",
    (Lane.BROADCASTS, Traffic.LIVE): "{acme:broadcasts:7}",
    (Lane.BROADCASTS, Traffic.BULK): "{acme:broadcasts:bulk:7}",
}

#: Each lane's pause key in workspace ``acme``.
PAUSES = {
    Lane.TRACK: "cioq:pause:{acme}",
    Lane.PIPELINES: "cioq:pause:{acme}:pipelines",
    Lane.APP: "cioq:pause:{acme}:app",
    Lane.BROADCASTS: "cioq:pause:{acme}:broadcasts",
}


def test_every_registered_lane_has_its_names_pinned() -> None:
    """A new lane adds its rows here, so its key names are a decision, not an accident."""
    assert set(registered_lanes()) == set(PAUSES) == {lane for lane, _ in TAGS}


@pytest.mark.parametrize(("lane", "traffic"), sorted(TAGS))
def test_shard_key_names(lane: Lane, traffic: Traffic) -> None:
    tag = TAGS[(lane, traffic)]
    shard = keys.shard_keys("acme", 7, lane, traffic)
    assert shard.tag == tag
    assert (
        shard.stream,
        shard.lease,
        shard.fence,
        shard.trigger,
        shard.retry,
        shard.inflight,
        shard.request("r1"),
    ) == (
        f"cioq:q:{tag}",
        f"cioq:lease:{tag}",
        f"cioq:fence:{tag}",
        f"cioq:trig:{tag}",
        f"cioq:retry:{tag}",
        f"cioq:inflight:{tag}",
        f"cioq:req:{tag}:r1",
    )


@pytest.mark.parametrize("lane", sorted(PAUSES))
def test_pause_key_names(lane: Lane) -> None:
    assert keys.pause("acme", lane) == PAUSES[lane]


def test_track_keys_are_the_ones_written_before_lanes() -> None:
    """Literal names as a queue written before lanes holds them (no lane in any of them)."""
    shard = keys.shard_keys("default", 0, Lane.TRACK)
    assert (shard.stream, shard.lease, keys.pause("default", Lane.TRACK)) == (
        "cioq:q:{default:0}",
        "cioq:lease:{default:0}",
        "cioq:pause:{default}",
    )
