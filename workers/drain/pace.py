"""How often a running drain renews its leases and looks for another worker's pause."""

from __future__ import annotations

from collections.abc import Callable

#: How often a running drain of an unbatched (App API) lane looks for another worker's
#: pause; batching lanes look before every send.
PAUSE_CHECK_S = 0.1


class Pace:
    """When a drain last renewed its leases and looked for a pause.

    Lone App API sends make every round trip count: leases are renewed once a third of
    their time has passed (every write is fenced anyway), and there another worker's pause
    is looked for at most every PAUSE_CHECK_S (a few sends more at worst, each answered 429
    again and so resent; the cluster-wide rate buckets keep them rare).
    """

    def __init__(self, clock: Callable[[], float], lease_s: float) -> None:
        self.clock = clock
        self.lease_s = lease_s
        self.renewed_s = clock()
        self.paused_checked_s = float("-inf")

    def pause_check_due(self) -> bool:
        now_s = self.clock()
        if now_s - self.paused_checked_s < PAUSE_CHECK_S:
            return False
        self.paused_checked_s = now_s
        return True

    def renew_due(self) -> bool:
        now_s = self.clock()
        if now_s - self.renewed_s < self.lease_s / 3:
            return False
        self.renewed_s = now_s
        return True
