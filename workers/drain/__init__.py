"""The drain: deliver the heads of a workspace's shards, one request at a time.

`engine.Drainer` runs one drain (what a Celery trigger asks for): it leases the shard it
was triggered for, `heads.HeldShards` adds the heads of other shards of the workspace
when that shard alone would send a small request, and `send.Delivery` sends each
unit and resolves its ops under each shard's own lease. `blocked` holds the policies for
an outcome that stops delivery (throttle, setup, transient); `report.DrainReport` says
what a drain did and when it goes on.
"""

from workers.drain.engine import Drainer
from workers.drain.report import MAX_COUNTDOWN_S, DrainReport
from workers.drain.settings import DrainerSettings
from workers.drain.stop import StopReason

__all__ = ["MAX_COUNTDOWN_S", "DrainReport", "Drainer", "DrainerSettings", "StopReason"]
