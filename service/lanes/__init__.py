"""Lanes: one upstream API family each (Track, Pipelines, App API), sharing store and drain engine.

`Lane` names them; `service.lanes.registry` says what differs per lane.
"""

from __future__ import annotations

from enum import StrEnum


class Lane(StrEnum):
    TRACK = "track"
    PIPELINES = "pipelines"
    APP = "app"
    #: App API broadcast triggers: their own streams, because a broadcast's triggers leave
    #: 10 s apart and must not hold back the sends queued behind them in a shared shard.
    BROADCASTS = "broadcasts"


#: Lanes whose jobs go out one request each: nothing to wait for before draining them.
UNBATCHED = frozenset({Lane.APP, Lane.BROADCASTS})
