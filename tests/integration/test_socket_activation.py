"""contrib/pydock.socket + pydock.service, activated the way systemd does it.

`systemd-socket-activate` (systemd's own tool) listens on the socket and, on the first
connection, execs the unit's ExecStart (`pydockd -H fd://`) with LISTEN_FDS/LISTEN_PID set. The
binary and the test isolation flags (data root, bridge, chains ...) are this run's own.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.daemon import PYDOCKD, REPO, Daemon, wait_for

ACTIVATE = shutil.which("systemd-socket-activate")


def unit_exec_start() -> list[str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((REPO / "contrib" / "pydock.service").read_text())
    return shlex.split(parser["Service"]["ExecStart"])


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")
def test_socket_unit_activates_the_service(tmp_root: Path) -> None:
    assert ACTIVATE is not None
    d = Daemon(tmp_root / "d")
    d.root.mkdir(parents=True)
    unit_args = unit_exec_start()[1:]
    assert unit_args == ["-H", "fd://"]
    isolation = d.args()[3:]  # everything after `pydockd -H unix://...`: roots, bridge, chains, pidfile
    argv = [ACTIVATE, "-l", str(d.sock), "-E", "PATH", str(PYDOCKD), *unit_args, *isolation]
    with open(d.log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for(d.sock.exists, 10, "the activation socket")
        assert (tmp_root / "d" / "pydockd.pid").exists() is False  # nothing runs before a client comes
        wait_for(d.raw_ping, 60, "pydockd activated by the first connection")
        assert int((tmp_root / "d" / "pydockd.pid").read_text()) == proc.pid  # exec'd in place: LISTEN_PID
        out = d.docker("version", "--format", "{{.Server.Version}}").stdout.decode().strip()
        assert out == "0.1.0"
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        d.cleanup_host()
