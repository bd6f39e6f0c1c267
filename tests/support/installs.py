"""Client packages the tests need, installed exactly as locked under .data/ on first use.

npm packages: ``npm ci`` of tests/locks/node (package.json + package-lock.json, written by
scripts/lock) into .data/node, under a file lock: pytest-xdist workers that installed into one
prefix at the same time left each other's packages half-written (CI saw newman fail with
"Cannot find module 'uvm'"). Python packages that must not share the project's environment go
to their own folder under .data/py, from their own lock with hashes
(``customerio-cdp-analytics`` ships a ``customerio/__init__.py`` that replaces the Track SDK's,
so the two cannot be installed side by side). Without npm the calling test is skipped on a
developer's machine, and fails in CI (CI set).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.paths import ROOT

NODE_DIR = ROOT / ".data" / "node"
LOCKS = ROOT / "tests" / "locks"
NODE_LOCK = LOCKS / "node"


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


def _digest(*paths: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


def npm_install() -> Path:
    """The suite's npm packages, exactly as tests/locks/node locks them; node_modules."""
    modules = NODE_DIR / "node_modules"
    manifests = (NODE_LOCK / "package.json", NODE_LOCK / "package-lock.json")
    stamp = NODE_DIR / ".installed"
    with _install_lock("npm"):
        wanted = _digest(*manifests)
        if stamp.exists() and stamp.read_text() == wanted and modules.is_dir():
            return modules
        npm = shutil.which("npm")
        if npm is None:
            if os.environ.get("CI"):
                pytest.fail("npm is required in CI (Debian: apt-get install npm)")
            pytest.skip("npm is not installed; it is needed for the Node client tests")
        shutil.rmtree(NODE_DIR, ignore_errors=True)
        NODE_DIR.mkdir(parents=True)
        for manifest in manifests:
            shutil.copyfile(manifest, NODE_DIR / manifest.name)
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
            check=True,
            timeout=600,
            capture_output=True,
        )
        stamp.write_text(wanted)
    return modules


def pip_target(name: str) -> Path:
    """tests/locks/<name>.lock installed (hashes checked, nothing resolved) into its own
    folder under .data/py; that folder."""
    lock = LOCKS / f"{name}.lock"
    target = ROOT / ".data" / "py" / name
    marker = target / ".installed"
    with _install_lock(f"pip-{name}"):
        wanted = _digest(lock)
        if marker.exists() and marker.read_text() == wanted:
            return target
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--require-hashes",
                "--no-deps",
                "--target",
                str(target),
                "-r",
                str(lock),
            ],
            check=True,
            timeout=600,
            capture_output=True,
        )
        marker.write_text(wanted)
    return target
