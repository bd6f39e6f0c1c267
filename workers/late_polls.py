"""Runs the pollers of late failures (`service.lanes.app.late_poll`) in the sweeper process.

The sweeper already runs one or two per cluster and holds no long work; the pollers get a
thread of their own there, because a walk through a burst of failures spends seconds on its
share of the read budget and must not hold up the sweeps. Every sweeper runs a poller per
workspace with an App API key, and the lease lets one of them walk at a time: the others
check the lease each interval and take over when the holder's lease runs out.
"""

from __future__ import annotations

import logging
import threading

from service.config import Settings
from service.lanes.registry import late_pollers
from service.store.connections import SyncStore

log = logging.getLogger("cioq.late")


class LatePolls:
    """One poller per workspace with an App API key, walked every poll interval."""

    def __init__(self, settings: Settings, client: SyncStore) -> None:
        self.interval_s = settings.app.late_poll_interval_s
        self.pollers = late_pollers(settings, client)

    def poll_once(self) -> int:
        """One walk of every poller this process may run; returns the failures recorded."""
        recorded = 0
        for poller in self.pollers:
            try:
                report = poller.poll()
            except Exception:  # each workspace and pass is independent: keep polling
                log.warning("%s: late-failure poll failed", poller.workspace.name, exc_info=True)
                continue
            if report.recorded:
                log.info("%s: %d late failure(s) found", poller.workspace.name, report.recorded)
            recorded += report.recorded
        return recorded

    def run(self, stop: threading.Event) -> None:
        """Poll every interval, the first one interval after the start, until `stop`."""
        while not stop.wait(self.interval_s):
            self.poll_once()

    def start(self, stop: threading.Event) -> threading.Thread | None:
        """`run` in a daemon thread, or None when no workspace has an App API key."""
        if not self.pollers:
            return None
        thread = threading.Thread(target=self.run, args=(stop,), name="cioq-late", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Release each lease this process holds (a restart takes over at once), then close."""
        for poller in self.pollers:
            try:
                poller.release_lease()
            except Exception:  # the lease then runs out on its own
                log.warning("%s: could not release the late-poll lease", poller.workspace.name)
            poller.close()
