"""The image's install, run: deploy/Dockerfile's production steps in a clean venv.

No container builder works here (no Docker engine; buildah/podman could not pull the base
image: the registry does not resolve from this sandbox), so this test does what the
Dockerfile does, step by step as written: it copies what the ``runtime`` stage COPYs into
an empty directory, makes a fresh venv (the base image's interpreter is the same minor
Python), and runs each ``pip install`` of the RUN steps with the Dockerfile's ENV. An
instruction it does not know fails the test, so the file cannot drift from it. Then the
installed ``cioq`` runs from outside the repository: ``--help``, no sandbox, exactly the
locked packages, and a first event accepted by the installed api.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.dockerfile import stages
from tests.support.paths import ROOT
from tests.support.processes import Proc, free_port, wait_until

SITE, INGEST_KEY = "image-site", "image-ingest-key"


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def _clean_env() -> dict[str, str]:
    """The caller's environment without anything that would import the repository's code."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("CIOQ_")
    }


#: One worker builds the image venv once for every test of the module.
pytestmark = pytest.mark.xdist_group("image")


# Session scope: xdist's loadgroup runs the group's tests on one worker but may put another
# module's test between them, which would tear a module fixture down and build it again.
@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The venv holding what the production image holds, built as the Dockerfile builds it."""
    tmp = tmp_path_factory.mktemp("image")
    app, venv = tmp / "app", tmp / "venv"
    app.mkdir()
    env = _clean_env()
    started_s = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    for step in stages()["runtime"]:
        instruction, _, rest = step.partition(" ")
        if instruction in ("FROM", "ARG", "LABEL", "WORKDIR", "USER", "EXPOSE", "CMD"):
            continue  # image metadata: nothing to install
        if instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
        elif instruction == "COPY":
            *sources, dest = rest.split()
            for source in sources:
                target = app / dest / Path(source).name if dest.endswith("/") else app / dest
                if (ROOT / source).is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
                    shutil.copytree(ROOT / source, target, ignore=ignore)
                else:
                    shutil.copyfile(ROOT / source, target)
        elif instruction == "RUN":
            for command in (c.strip() for c in rest.split("&&")):
                if command.startswith("useradd "):
                    continue  # the image's user; processes here run as the test's user
                argv = shlex.split(command)
                assert argv[:2] == ["pip", "install"], f"unknown RUN command: {command}"
                result = _run([str(venv / "bin" / "python"), "-m", *argv], app, env)
                assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        else:
            pytest.fail(f"deploy/Dockerfile has an instruction this test does not run: {step}")
    print(f"image install steps took {time.monotonic() - started_s:.0f} s")
    yield venv


def test_cioq_help_runs_from_the_installed_image(image: Path, tmp_path: Path) -> None:
    result = _run([str(image / "bin" / "cioq"), "--help"], tmp_path, _clean_env())
    assert result.returncode == 0, result.stderr
    for command in ("api", "worker", "sweeper"):
        assert command in result.stdout


def test_the_image_has_no_sandbox(image: Path, tmp_path: Path) -> None:
    python = str(image / "bin" / "python")
    found = _run([python, "-c", "import sandbox"], tmp_path, _clean_env())
    assert found.returncode != 0
    assert "ModuleNotFoundError" in found.stderr
    refused = _run([str(image / "bin" / "cioq"), "sandbox"], tmp_path, _clean_env())
    assert refused.returncode == 2
    assert "the sandbox is not installed here" in refused.stderr


def test_the_image_holds_exactly_the_locked_packages(image: Path, tmp_path: Path) -> None:
    listed = _run(
        [str(image / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        tmp_path,
        _clean_env(),
    )
    installed = {canonicalize_name(line.split("==")[0]) for line in listed.stdout.splitlines()}
    pins = [
        Requirement(line.rstrip(" \\"))
        for lock in ("requirements.lock", "requirements-build.lock")
        for line in (ROOT / lock).read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    ]
    # Pins whose marker excludes this interpreter (Windows, older Pythons) are not installed.
    locked = {
        canonicalize_name(pin.name) for pin in pins if pin.marker is None or pin.marker.evaluate()
    }
    assert installed - locked == {"cioq", "pip"}
    assert locked <= installed


def test_the_installed_api_accepts_a_first_event(
    image: Path, tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    env = {
        **_clean_env(),
        "CIOQ_REDIS_URL": redis_url,
        "CIOQ_SITE_ID": SITE,
        "CIOQ_API_KEY": "image-api-key",
        "CIOQ_INGEST_KEYS": INGEST_KEY,
        "PORT": str(port),
    }
    api = Proc("image-api", [str(image / "bin" / "cioq"), "api"], env, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout_s=30, what=f"the installed api ({api.log_path})")
        answer = httpx.post(
            f"{base}/api/v1/customers/42/events",
            json={"name": "signed_up"},
            auth=(SITE, INGEST_KEY),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        client = redis.Redis.from_url(redis_url)
        streams = list(client.scan_iter("cioq:q:*"))
        assert sum(client.xlen(s) for s in streams if client.type(s) == b"stream") == 1
        client.close()
    finally:
        api.stop()
