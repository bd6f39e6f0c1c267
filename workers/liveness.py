"""Liveness of the processes whose health a port cannot show: a file touched by their loop.

The sweeper touches its file after every pass; a worker's Celery consumer touches its
file from the consumer's own event-loop timer (`workers.celery_app.ConsumerHeartbeat`), so
the file goes stale when that loop stops turning, even while the metrics thread still
answers. Kubernetes runs ``python -m workers.liveness --role worker --max-age-s 60`` (or
``--role sweeper``, the default) as the exec probe; it exits 1 when the file is missing or
older than that, so a process whose loop stopped is restarted. A sweeper pass that failed
(Redis down) still counts as a turn: a restart would not bring Redis back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

Role = Literal["sweeper", "worker"]

#: How often a worker's consumer loop touches its file; probes allow several misses.
WORKER_BEAT_INTERVAL_S = 5.0


def heartbeat_path(role: Role = "sweeper") -> Path:
    return Path(tempfile.gettempdir()) / f"cioq-{role}-heartbeat"


def beat(path: Path | None = None) -> None:
    (path or heartbeat_path()).touch()


def is_alive(max_age_s: float, path: Path | None = None, *, now_s: float | None = None) -> bool:
    try:
        mtime_s = (path or heartbeat_path()).stat().st_mtime
    except FileNotFoundError:
        return False
    return (time.time() if now_s is None else now_s) - mtime_s <= max_age_s


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-age-s", type=float, required=True)
    parser.add_argument("--role", choices=["sweeper", "worker"], default="sweeper")
    args = parser.parse_args(argv)
    return 0 if is_alive(args.max_age_s, heartbeat_path(args.role)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
