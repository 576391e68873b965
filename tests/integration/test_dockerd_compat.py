"""Compatibility with a real dockerd (Debian's docker.io), when one is installed: an archive that
`docker save` wrote on pydock loads into dockerd and runs there. Skipped without dockerd (the
project never needs it to run; `make bench COMPARE=dockerd` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon


def test_saved_archive_loads_and_runs_in_dockerd(daemon: Daemon, tmp_root: Path) -> None:
    from bench.dockerd import DockerdEngine, running_dockerds

    if shutil.which("dockerd") is None or shutil.which("containerd") is None:
        pytest.skip("no dockerd installed (Debian's docker.io)")
    if running_dockerds():
        pytest.skip("another dockerd runs: a second one would share its iptables chains")
    daemon.docker("run", "--name", "savetest-c", "busybox", "sh", "-c", "echo from-pydock > /marker")
    try:
        daemon.docker("commit", "savetest-c", "savetest:v1")
        daemon.docker("tag", "busybox", "savetest:v2")
        daemon.docker("save", "-o", str(tmp_root / "saved.tar"), "savetest:v1", "savetest:v2")
    finally:
        daemon.docker("rm", "-f", "savetest-c", check=False)
        daemon.docker("rmi", "savetest:v1", "savetest:v2", check=False)
    engine = DockerdEngine(tmp_root)
    engine.start_daemon()
    try:
        env = dict(os.environ, DOCKER_HOST=engine.host, DOCKER_CONFIG=str(tmp_root / "cfg"))

        def docker(*args: str) -> str:
            return subprocess.run(["docker", *args], capture_output=True, text=True, env=env, check=True,
                                  timeout=120).stdout  # fmt: skip

        loaded = docker("load", "-i", str(tmp_root / "saved.tar"))
        assert "Loaded image: savetest:v1" in loaded and "Loaded image: savetest:v2" in loaded
        assert docker("run", "--rm", "savetest:v1", "cat", "/marker") == "from-pydock\n"
        assert docker("run", "--rm", "savetest:v2", "echo", "ok") == "ok\n"
    finally:
        engine.close()
