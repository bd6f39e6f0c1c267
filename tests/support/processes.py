"""Real processes for end-to-end tests: redis-server and the `cioq` commands.

Everything binds to 127.0.0.1 on free ports, logs to files under the test's tmp dir,
and is stopped (SIGKILL as a last resort) when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import httpx
import redis

T = TypeVar("T")


# Ports come from below the kernel's ephemeral range (32768-60999 here): a port the kernel
# chose (bind to 0) could be handed to another test's outgoing connection before the server we
# start binds it, and a redis-server that loses that race exits and is waited for in vain.
# Each xdist worker takes its own slice, so two workers never pick the same port either;
# a cluster node's bus port (port + CLUSTER_BUS_OFFSET) lands above every slice and below
# the ephemeral range.
PORT_FLOOR = 10000
PORT_CEILING = 20000
CLUSTER_BUS_OFFSET = 10000
_SLICES = 16
_next_port: list[int] = []


def free_port(*, also_free: int | None = None) -> int:
    """A port nobody listens on, in this worker's slice; with `also_free`, port + `also_free`
    is free too (a cluster node's bus port)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % _SLICES if worker.isdigit() else 0
    size = (PORT_CEILING - PORT_FLOOR) // _SLICES
    first = PORT_FLOOR + index * size
    if not _next_port:
        # Start where an earlier run in the same second is unlikely to have left off.
        _next_port.append(first + (os.getpid() * 7) % size)
    for _ in range(size):
        port = _next_port[0]
        _next_port[0] = first + (port + 1 - first) % size
        if _bindable(port) and (also_free is None or _bindable(port + also_free)):
            return port
    raise RuntimeError(f"no free port in {first}..{first + size}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(
    check: Callable[[], T | Literal[False] | None],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    what: str = "",
) -> T:
    """Poll `check` until it returns something truthy (which it returns); fail after `timeout_s`.

    ``lambda: ready() and value`` types as ``value``: a falsy check is polled again.
    """
    deadline = time.monotonic() + timeout_s
    last = check()
    while not last:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what or check}")
        time.sleep(interval_s)
        last = check()
    return last


class Proc:
    """A child process with its log file; `stop` escalates SIGTERM → SIGKILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._terminated = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def exited(self) -> bool:
        return not self.alive()

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker and its prefork children."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def terminate(self) -> None:
        """SIGTERM without waiting: `stop` then waits, so several processes stop at once."""
        if self.alive() and not self._terminated:
            self.popen.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout_s: float = 15) -> int | None:
        if self.alive():
            self.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.dump_stacks()
                self.kill()
        self._log.close()
        return self.popen.returncode

    def dump_stacks(self, timeout_s: float = 5) -> None:
        """SIGABRT the process group: each Python process of ours (`cioq_proc` enables
        faulthandler) writes every thread's stack to the log before it dies, so a process
        that would not stop leaves where it hung."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class RedisServer:
    """A redis-server of the test's own, optionally with AOF, restartable from its data dir."""

    def __init__(
        self,
        data_dir: Path,
        *,
        appendonly: bool = False,
        fsync: str = "everysec",
        exe: str | None = None,
        extra: Sequence[str] = (),
        port: int | None = None,
    ):
        self.port = port or free_port()
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.fsync = fsync
        self.exe = exe or shutil.which("redis-server")
        self.extra = list(extra)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.proc: Proc | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.exe is None:
            raise RuntimeError("redis-server is not installed (scripts/test installs it)")
        argv = [
            self.exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.fsync,
            "--maxmemory-policy",
            "noeviction",
            *self.extra,
        ]
        self.proc = Proc(f"redis-{self.port}", argv, dict(os.environ), self.data_dir)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        proc = self.proc

        def ping() -> bool:
            if proc.exited():
                tail = proc.log()[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} exited:\n{tail}")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_until(ping, timeout_s=20, what="redis-server to answer PING")
        except BaseException:
            proc.kill()  # a server that never answered is not left running past the test
            raise
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


def cioq_proc(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    env = {**env, "PYTHONFAULTHANDLER": "1"}  # a stack per thread on SIGABRT (`dump_stacks`)
    return Proc(name, [sys.executable, "-m", "cioq", *args], env, log_dir)


def wait_http(url: str, *, timeout_s: float = 30, verify: bool | str = True) -> None:
    context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify

    def up() -> bool:
        try:
            return httpx.get(url, timeout=1, verify=context).status_code < 500
        except httpx.HTTPError:
            return False

    wait_until(up, timeout_s=timeout_s, interval_s=0.1, what=url)


def own_redis_url(server: RedisServer) -> str:
    """`server`'s URL, its data flushed: the body of a module's ``redis_url`` override
    (with the ``own_redis`` fixture of tests/conftest.py)."""
    with server.client() as client:
        client.flushall()
    return server.url
