"""Liveness of the sweeper, which has no port: a file it touches after every pass.

Kubernetes runs ``python -m workers.liveness --max-age-s 30`` as the exec probe; it
exits 1 when the file is missing or older than that, so a sweeper whose loop stopped
turning is restarted. A pass that failed (Redis down) still counts as a turn: a restart
would not bring Redis back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def heartbeat_path() -> Path:
    return Path(tempfile.gettempdir()) / "cioq-sweeper-heartbeat"


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
    args = parser.parse_args(argv)
    return 0 if is_alive(args.max_age_s) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
