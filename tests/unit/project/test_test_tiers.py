"""The suite's tiers (tests/support/tiers.py): every module sits in a tier folder, and every
e2e module starts real processes (a module that does not belongs in a faster tier). The
converse, that no unit or integration test starts one, is enforced while they run."""

from __future__ import annotations

import re

from tests.support.paths import ROOT
from tests.support.tiers import TIERS

TESTS = ROOT / "tests"
#: What an e2e module uses to start processes: stacks, servers, clusters, browsers, CLIs.
STARTS_PROCESSES = re.compile(
    r"make_stack|stack_with|\bStack\(|RedisServer|Cluster\(|primary_with_replica|subprocess"
    r"|multiprocessing|chromium\(|cioq_proc|\bProc\(|BenchStack|from bench\.|npm_install"
    r"|fairness\.start|\brender\("
)


def modules(folder: str) -> list[str]:
    return sorted(str(p.relative_to(TESTS)) for p in (TESTS / folder).rglob("test_*.py"))


def test_every_test_module_is_in_a_tier_folder() -> None:
    loose = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("test_*.py")
        if p.relative_to(TESTS).parts[0] not in TIERS
    ]
    assert loose == []
    assert all(modules(tier) for tier in TIERS)


def test_every_e2e_module_starts_processes() -> None:
    idle = [m for m in modules("e2e") if not STARTS_PROCESSES.search((TESTS / m).read_text())]
    assert idle == [], "these start no process: move them to tests/integration or tests/unit"


def test_every_tier_folder_is_a_package() -> None:
    """Test modules share names across tiers; packages keep their import names apart."""
    missing = [
        str(d.relative_to(TESTS))
        for tier in TIERS
        for d in [TESTS / tier, *(TESTS / tier).rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and not (d / "__init__.py").exists()
    ]
    assert missing == []
