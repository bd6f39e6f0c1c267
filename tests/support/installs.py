"""Client packages the tests need, installed pinned under .data/ on first use.

npm packages go to .data/node. Python packages that must not share the project's
environment go to their own folder under .data/py (``customerio-cdp-analytics`` ships a
``customerio/__init__.py`` that replaces the Track SDK's, so the two cannot be installed
side by side). Without npm the calling test is skipped on a developer's machine, and
fails in CI (CI set).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / ".data" / "node"


def npm_install(*packages: str) -> Path:
    """Install `packages` (``name@version``) into .data/node unless present; its node_modules."""
    modules = NODE_DIR / "node_modules"
    missing = [p for p in packages if not _installed(modules, p)]
    if missing:
        npm = shutil.which("npm")
        if npm is None:
            if os.environ.get("CI"):
                pytest.fail(f"npm is required in CI to install {missing}")
            pytest.skip(f"npm is not installed; it is needed to install {missing}")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", *missing],
            check=True,
            timeout=600,
            capture_output=True,
        )
    return modules


def _installed(modules: Path, spec: str) -> bool:
    name, _, version = spec.rpartition("@")
    manifest = modules / name / "package.json"
    return manifest.exists() and f'"version": "{version}"' in manifest.read_text()


def pip_target(name: str, version: str) -> Path:
    """``name==version`` installed into its own folder under .data/py; that folder."""
    target = ROOT / ".data" / "py" / f"{name}-{version}"
    marker = target / ".installed"
    if not marker.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                str(target),
                f"{name}=={version}",
            ],
            check=True,
            timeout=600,
            capture_output=True,
        )
        marker.touch()
    return target
