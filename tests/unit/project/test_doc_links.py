"""Every relative link of the README and docs/ leads to a file of the repository, and every
``#anchor`` to a heading of its page, as GitHub renders them; every repository path the
pages name in code spans exists; the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
#: A code span that names a file or folder under one of the repository's top-level folders,
#: optionally followed by ``::test`` or ``:line``. A span with a placeholder (``<lane>``,
#: ``*``, ``{…}``) or a space (a command line) names no one path and is not checked.
_REPO_PATH = re.compile(
    r"((?:\.ci|bench|cioq|deploy|docs|sandbox|scripts|service|tests|workers)(?:/[\w.\-]+)*/?)"
    r"(?:::\w+|:\d+)?"
)


def _prose(text: str) -> str:
    """The page without code blocks and code spans, where a bracket is no link."""
    return _CODE.sub("", _FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped,
    spaces to hyphens, a repeat suffixed ``-1``, ``-2``…"""
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: and the like: not a file of the repository
        path_part, _, anchor = target.partition("#")
        where = (page.parent / path_part).resolve() if path_part else page
        if root not in where.parents and where != root:
            broken.append(f"{target}: outside the repository")
        elif not where.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (where.suffix != ".md" or anchor not in anchors(where.read_text())):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def missing_paths(page: Path, root: Path = ROOT) -> list[str]:
    """The repository paths named in the page's code spans that do not exist."""
    spans = _CODE.findall(_FENCE.sub("", page.read_text()))
    named = [m.group(1) for span in spans if (m := _REPO_PATH.fullmatch(span.strip("`")))]
    return [path for path in named if not (root / path).exists()]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_backticked_repository_path_exists(page: Path) -> None:
    """A file moved or renamed without the docs leaves its old path here."""
    assert missing_paths(page) == []


def test_the_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= README_MAX_LINES


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme] == []


def test_the_checker_sees_github_anchors_and_broken_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Scaling (Kubernetes + KEDA)\n\n## Opt-in `strict_validation`\n\n"
        "## Opt-in `strict_validation`\n```\n# not a heading\n[no](link.md)\n```\n"
    )
    assert anchors(page.read_text()) == {
        "scaling-kubernetes--keda",
        "opt-in-strict_validation",
        "opt-in-strict_validation-1",
    }
    assert broken_links(page, root=tmp_path) == []
    (tmp_path / "other.md").write_text("# Other\n")
    page.write_text(
        "[a](other.md#other) [b](other.md#nope) [c](missing.md) [d](#scaling-kubernetes--keda)"
        " [e](../outside.md) [f](https://example.com/x.md) `[g](code.md)`\n"
        "# Scaling (Kubernetes + KEDA)\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "other.md#nope: no heading with that anchor",
        "missing.md: no such file",
        "../outside.md: outside the repository",
    ]


def test_the_path_checker_sees_paths_in_code_spans_only(tmp_path: Path) -> None:
    (tmp_path / "service" / "store").mkdir(parents=True)
    (tmp_path / "service" / "store" / "queue.py").write_text("")
    page = tmp_path / "page.md"
    page.write_text(
        "`service/store/queue.py` `service/store/queue.py:60` `service/store/` `service`\n"
        "`service/gone.py` `tests/unit/test_x.py::test_y` `workers/drain/send.py`\n"
        "`service/lanes/<lane>/client.py` `scripts/test -k packing` `lanes/track`\n"
        "service/prose.py is no code span\n```\n`service/in_a_fence.py`\n```\n"
    )
    assert missing_paths(page, root=tmp_path) == [
        "service/gone.py",
        "tests/unit/test_x.py",
        "workers/drain/send.py",
    ]
