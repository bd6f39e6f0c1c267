"""docs/operations.md's metrics table names every metric cioq's code defines, so an
operator building a dashboard finds each one (the App lane's were missing once)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY

# Imported for what they define: every lane (and its metrics) and cioq's own metrics.
import service.lanes.registry
import service.metrics.app_lane
import service.metrics.definitions  # noqa: F401

PAGE = Path(__file__).resolve().parents[3] / "docs" / "operations.md"
#: A family's name without the suffix a counter's or histogram's samples add.
SUFFIX = re.compile(r"_(total|created|bucket|count|sum)$")


def test_every_defined_metric_has_a_row() -> None:
    defined = {m.name for m in REGISTRY.collect() if m.name.startswith("cioq_")}
    rows = [line for line in PAGE.read_text().splitlines() if line.startswith("| `cioq_")]
    documented = {SUFFIX.sub("", name) for row in rows for name in re.findall(r"`(cioq_\w+)", row)}
    assert defined, "no metric found: the imports above no longer define them"
    assert sorted(defined - documented) == []
