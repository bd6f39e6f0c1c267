"""deploy/Dockerfile read as steps and stages (no container builder runs here)."""

from __future__ import annotations

import re

from tests.support.paths import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def dockerfile_steps() -> list[str]:
    """Each instruction on one line (continuations joined), comments left out."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def stages() -> dict[str, list[str]]:
    """Each stage's steps (its FROM first), by the stage's name, in file order."""
    found: dict[str, list[str]] = {}
    for step in dockerfile_steps():
        if step.startswith("FROM "):
            words = step.split()
            name = words[3] if len(words) > 3 and words[2].upper() == "AS" else words[1]
            found[name] = []
        found[list(found)[-1]].append(step)
    return found


def pip_installs(step: str) -> list[str]:
    """The ``pip install`` commands of one RUN step."""
    return [f"pip install{part}".split("&&")[0].strip() for part in step.split("pip install")[1:]]
