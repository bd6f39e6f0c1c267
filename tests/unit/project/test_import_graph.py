"""The import graph keeps the architecture: no cycles, and the forbidden directions stay unused.

DESIGN: ``workers`` may import ``service``, never the reverse; the sandbox imports nothing of
cioq's (it is an independent referee of Customer.io's rules); the CLI, the benchmarks and the
docs generators sit on top, so nothing in the product imports them. Packages are found by
folder, so a new one is checked as soon as it exists.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support.import_graph import build, cycles, forbidden_imports, project_packages
from tests.support.paths import ROOT

_ONE_WAY = "workers may import service, never the reverse"
_REFEREE = (
    "the sandbox is an independent referee of Customer.io's rules; it imports nothing of cioq's"
)
_ON_TOP = (
    "the CLI, the benchmarks and the docs generators are entry points; the product never "
    "imports them"
)
_REGISTRY = "the engine, store and metrics reach a lane only through service.lanes.registry"

#: Each lane's package, found by folder like the packages (a new lane is checked at once).
LANE_PACKAGES = sorted(
    f"service.lanes.{init.parent.name}"
    for init in (ROOT / "service" / "lanes").glob("*/__init__.py")
)

#: (importer package, imported package) → why that import is forbidden.
FORBIDDEN = {
    ("service", "workers"): _ONE_WAY,
    ("sandbox", "service"): _REFEREE,
    ("sandbox", "workers"): _REFEREE,
    ("sandbox", "cioq"): _REFEREE,
    **{(low, top): _ON_TOP for low in ("service", "workers") for top in ("cioq", "bench", "docs")},
    **{
        (shared, lane): _REGISTRY
        for shared in ("workers", "service.store", "service.metrics")
        for lane in LANE_PACKAGES
    },
}


@pytest.fixture(scope="module")
def packages() -> list[str]:
    return project_packages(ROOT)


def test_every_project_package_is_found(packages: list[str]) -> None:
    """Discovery by folder sees the five packages the rules name (a rename would hide one)."""
    assert {"service", "workers", "cioq", "sandbox", "bench"} <= set(packages)


def test_every_lane_package_is_found() -> None:
    assert {"service.lanes.track", "service.lanes.pipelines", "service.lanes.app"} <= set(
        LANE_PACKAGES
    )


def test_no_forbidden_import(packages: list[str]) -> None:
    assert forbidden_imports(build(packages), FORBIDDEN) == []


def test_no_cycle_between_top_level_packages(packages: list[str]) -> None:
    assert cycles(build(packages), depth=1) == []


def test_no_cycle_between_service_subpackages(packages: list[str]) -> None:
    """The layers of `service` import one way: lanes on web on store, api on lanes; the
    metrics read the store, which reports what it counts through `service.store.events`."""
    assert cycles(build(packages), depth=2) == []


def test_no_module_import_cycle(packages: list[str]) -> None:
    """No two modules import each other, directly or round a loop, not even for types only."""
    assert cycles(build(packages)) == []


# The checker itself, on a synthetic project in tmp_path (names unlike any real package, so
# the real ones already in sys.modules do not shadow them).


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    _write(
        tmp_path,
        {
            "synth_core/__init__.py": "",
            "synth_core/a.py": "from synth_core import b\n",
            "synth_core/b.py": "X = 1\n",
            "synth_core/deep/__init__.py": "",
            "synth_core/deep/c.py": "import synth_core.a\n",
            "synth_jobs/__init__.py": "",
            "synth_jobs/run.py": "from synth_core.deep import c\n",
            "synth_referee/__init__.py": "",
            "synth_referee/app.py": "import json\n",
            "tests/__init__.py": "",
        },
    )
    return tmp_path


RULES = {("synth_core", "synth_jobs"): "one way", ("synth_referee", "synth_core"): "referee"}


def test_discovery_finds_packages_by_folder_and_skips_tests(synthetic: Path) -> None:
    assert project_packages(synthetic) == ["synth_core", "synth_jobs", "synth_referee"]


def test_clean_synthetic_project_passes(synthetic: Path) -> None:
    graph = build(project_packages(synthetic))
    assert cycles(graph) == []
    assert cycles(graph, depth=1) == []
    assert forbidden_imports(graph, RULES) == []


def test_a_module_cycle_is_found_even_through_type_checking_only(synthetic: Path) -> None:
    _write(
        synthetic,
        {
            "synth_core/b.py": """\
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from synth_core.deep.c import thing
            """
        },
    )
    found = cycles(build(project_packages(synthetic)))
    assert found == [["synth_core.a", "synth_core.b", "synth_core.deep.c"]]


def test_a_package_cycle_is_found_without_a_module_cycle(synthetic: Path) -> None:
    """core.b → jobs.x and jobs.run → core.deep.c: no module loop, but the packages loop."""
    _write(synthetic, {"synth_core/b.py": "import synth_jobs.x\n", "synth_jobs/x.py": ""})
    graph = build(project_packages(synthetic))
    assert cycles(graph) == []
    assert cycles(graph, depth=1) == [["synth_core", "synth_jobs"]]
    assert forbidden_imports(graph, RULES) == [
        "synth_core.b imports synth_jobs.x (line [1]): one way"
    ]


def test_an_import_of_a_forbidden_package_itself_is_found(synthetic: Path) -> None:
    _write(synthetic, {"synth_referee/app.py": "import json\n\nimport synth_core\n"})
    assert forbidden_imports(build(project_packages(synthetic)), RULES) == [
        "synth_referee.app imports synth_core (line [3]): referee"
    ]
