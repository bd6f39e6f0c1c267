"""docs/configuration.md is what `scripts/gen-config-docs` makes from the settings'
descriptions, and names every variable cioq reads, once."""

from __future__ import annotations

import re

import pytest

from docs.gen_configuration import GROUPS, PAGE, cli_env_options, render, settings_env_names
from service.config import Workspace, setting_fields
from tests.support.paths import ROOT

VARIABLE = re.compile(r"\bCIOQ_[A-Z0-9_]*[A-Z0-9]\b")
#: Where the product and its deployment name the variables they read.
RUNTIME = ("service", "workers", "cioq", "deploy", "local.env", "docker-compose.yml", "Procfile")
#: Where the suite, the scripts and the benchmarks name variables of their own.
TOOLING = ("tests", "scripts", "bench")


#: Every setting by its flat name, whatever group holds it.
SETTINGS = {name: field for name, (_, field) in setting_fields().items()}


def _rows(page: str) -> list[str]:
    """The first cell of every table row, the variable or field it documents."""
    return re.findall(r"^\| `([^`]+)`", page, re.M)


def _named_in(*places: str) -> set[str]:
    found: set[str] = set()
    for place in places:
        path = ROOT / place
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            if "__pycache__" in file.parts or file.suffix in (".pyc", ".png", ".lock"):
                continue
            found |= set(VARIABLE.findall(file.read_text(errors="replace")))
    return found


@pytest.fixture(scope="module")
def page() -> str:
    return PAGE.read_text()


def test_the_page_is_what_the_generator_makes(page: str) -> None:
    assert page == render(), "docs/configuration.md is stale: run scripts/gen-config-docs"


def test_every_setting_has_a_description_and_one_group() -> None:
    assert [n for n, f in SETTINGS.items() if not f.description] == []
    assert [n for n, f in Workspace.model_fields.items() if not f.description] == []
    listed = sorted(n for _, _, _, names in GROUPS for n in names)
    assert listed == sorted(SETTINGS)


def test_every_setting_variable_is_documented_once(page: str) -> None:
    rows = _rows(page)
    for name, field in SETTINGS.items():
        first, *others = settings_env_names(name, field)
        assert rows.count(first) == 1, first
        for other in others:
            assert page.count(f"(or `{other}`)") == 1, other


def test_every_workspace_field_is_documented(page: str) -> None:
    section = page.split("## Workspace fields", 1)[1].split("\n## ", 1)[0]
    assert sorted(_rows(section)) == sorted(Workspace.model_fields)


def test_every_command_line_variable_is_documented(page: str) -> None:
    options = list(cli_env_options())
    assert options, "the CLI reads CIOQ_SANDBOX_PORT; the walk over its options found none"
    for _, option in options:
        assert _rows(page).count(option.envvar) == 1, option.envvar


def test_every_variable_the_product_names_is_documented(page: str) -> None:
    """A variable read outside the settings class, or a typo in a manifest, shows up here."""
    documented = set(_rows(page)) | set(re.findall(r"\(or `([A-Z_]+)`\)", page))
    assert sorted(_named_in(*RUNTIME) - documented) == []


def test_every_variable_of_the_tooling_is_documented(page: str) -> None:
    """Variables of the suite, the scripts and the benchmarks are in docs/, if not here."""
    docs = "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    assert sorted(v for v in _named_in(*TOOLING) if v not in docs) == []
