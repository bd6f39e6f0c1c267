"""Client packages the tests need, installed pinned under .data/ on first use.

npm packages go to .data/node, all of the suite's at once and under a file lock:
pytest-xdist workers that ran ``npm install`` into one prefix at the same time left
each other's packages half-written (CI saw newman fail with "Cannot find module
'uvm'"). Python packages that must not share the project's
environment go to their own folder under .data/py (``customerio-cdp-analytics`` ships a
``customerio/__init__.py`` that replaces the Track SDK's, so the two cannot be installed
side by side). Without npm the calling test is skipped on a developer's machine, and
fails in CI (CI set).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / ".data" / "node"


#: Every npm package the suite uses, pinned; installed together so no install prunes another.
NODE_PACKAGES = (
    "newman@6.2.2",
    "customerio-node@5.2.0",
    "@customerio/cdp-analytics-node@0.5.9",
)


@contextmanager
def _install_lock(name: str) -> Iterator[None]:
    """Hold an exclusive lock across processes (the xdist workers) while installing."""
    lock_path = ROOT / ".data" / f".{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def npm_install() -> Path:
    """The suite's npm packages (NODE_PACKAGES), installed into .data/node when missing.

    Returns the node_modules folder.
    """
    modules = NODE_DIR / "node_modules"
    with _install_lock("npm"):
        missing = [p for p in NODE_PACKAGES if not _installed(modules, p)]
        if missing:
            npm = shutil.which("npm")
            if npm is None:
                if os.environ.get("CI"):
                    pytest.fail(f"npm is required in CI to install {missing}")
                pytest.skip(f"npm is not installed; it is needed to install {missing}")
            NODE_DIR.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    npm,
                    "install",
                    "--prefix",
                    str(NODE_DIR),
                    "--no-audit",
                    "--no-fund",
                    *NODE_PACKAGES,
                ],
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
    with _install_lock(f"pip-{name}"):
        if marker.exists():
            return target
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
