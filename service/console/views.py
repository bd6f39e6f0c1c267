"""How the console shows numbers, times and states: one formatting for pages and refreshes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.console.overview import PAUSE_LABELS, LaneOverview


def age(seconds: float) -> str:
    """``—`` for nothing waiting, else the two largest units: ``45s``, ``3m 05s``, ``2h 10m``."""
    if seconds <= 0:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86_400}d {s % 86_400 // 3600:02d}h"


def when(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def rate(per_min: float) -> str:
    return f"{per_min:,.0f}"


def counts(by: dict[str, int] | dict[str, float]) -> str:
    """One ``name count`` per line (cells show line breaks), ``—`` for none."""
    return "\n".join(f"{name or '—'} {n:,.0f}" for name, n in by.items() if n >= 0.5) or "—"


def state(row: LaneOverview) -> str:
    if not row.paused:
        return "delivering"
    label = PAUSE_LABELS.get(row.paused, "paused")
    left = age(row.pause_remaining_s)
    if row.pause_reason:
        return f"{label} by {row.pause_by}: {row.pause_reason} ({left} left)"
    return f"{label} ({left} left)"


def cells(row: LaneOverview) -> dict[str, str]:
    """The text of each refreshed cell of an overview row."""
    return {
        "waiting": f"{row.waiting:,}",
        "oldest": age(row.oldest_age_s),
        "accepted": rate(row.accepted_per_min),
        "delivered": rate(row.delivered_per_min),
        "dead_rate": rate(row.dead_lettered_per_min),
        "upstream": counts(row.upstream_per_min),
        "state": state(row),
        "dead": f"{row.dead_letters:,}",
        "by_class": counts(row.dead_by_class),
        "late": f"{row.late_failures:,}",
    }


def overview_rows(rows: list[LaneOverview]) -> list[dict[str, Any]]:
    return [
        {
            "key": f"{row.workspace}/{row.lane}",
            "workspace": row.workspace,
            "lane": row.lane,
            "paused": bool(row.paused),
            "cells": cells(row),
        }
        for row in rows
    ]
