"""What a person sees from pydockd itself: `--help`, and a plain word when the chosen runtime
cannot work on this host (the README's "Switching OCI runtimes")."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runtime.sysinfo import is_hybrid_cgroup
from tests.integration.daemon import PYDOCKD, Daemon, running_daemon


def test_pydockd_help_reads_like_dockerd() -> None:
    out = subprocess.run(
        [str(PYDOCKD), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "Usage:  pydockd [OPTIONS]"
    assert "  -H, --host list" in out and "      --data-root string" in out
    version = subprocess.run(
        [str(PYDOCKD), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert version.stdout.startswith("pydock version ")


@pytest.mark.skipif(not is_hybrid_cgroup(), reason="crun works on this (non-hybrid) cgroup host")
def test_crun_on_a_hybrid_host_is_reported(tmp_root: Path, busybox_tar: Path) -> None:
    with running_daemon("--default-runtime", "crun", root=tmp_root / "d") as d:
        d.docker("load", "-q", "-i", str(busybox_tar))
        assert "the default runtime cannot run containers on this host: crun:" in d.log_tail(200)
        info = d.docker("info", "--format", "{{json .Warnings}}").stdout.decode()
        assert "crun does not support hybrid cgroup hosts" in info
        run = d.docker("run", "--rm", "busybox", "true", check=False)
        assert run.returncode != 0
        assert "cgroups in hybrid mode not supported" in run.stderr.decode(), run.stderr
        # runc, chosen per container, still works on the same daemon
        assert d.docker("run", "--rm", "--runtime", "runc", "busybox", "echo", "ok").stdout == b"ok\n"


def test_daemon_log_lines_are_readable(daemon: Daemon) -> None:
    daemon.docker("run", "--rm", "busybox", "true")
    lines = [line for line in daemon.log_tail(400).splitlines() if "level=info" in line]
    assert any('msg="container exited"' in line and "exit_code=0" in line for line in lines), lines[-10:]
    for line in lines:
        assert line.startswith("time=") and " msg=" in line, line
        assert "httpcore" not in line, line  # transport internals never reach the log
