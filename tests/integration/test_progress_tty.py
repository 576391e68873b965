"""The docker CLI's pull and load progress bars, rendered on a real terminal (pty).

On a TTY the CLI asks for progress (`docker load` sends quiet=0) and draws one line per layer,
moving the cursor between them; it draws the bar itself from `progressDetail` when the terminal is
wider than 110 columns. The last update of each phase must show the whole size.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import termios
import time
from pathlib import Path

from tests.integration.daemon import DOCKER, Daemon
from tests.integration.registry import Registry

FULL_BAR = "[" + "=" * 50 + ">]"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run_on_tty(daemon: Daemon, *args: str, timeout_s: float = 120.0) -> tuple[int, str]:
    """Run the docker CLI on a 150x40 pseudo-terminal; its exit code and everything it drew."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is our controlling terminal and stdio
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
            os.execve(DOCKER, [DOCKER, *args], {**daemon.env(), "TERM": "xterm"})
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def layer_updates(screen: str) -> list[str]:
    """The per-layer lines the CLI drew (cursor movements stripped)."""
    return [line.strip() for line in re.split(r"[\r\n]+", ANSI.sub("", screen)) if line.strip()]


def test_pull_progress_bars_on_a_tty(fresh_daemon: Daemon, registry: Registry) -> None:
    image = f"{registry.host}/busybox:latest"
    code, screen = run_on_tty(fresh_daemon, "pull", image)
    assert code == 0, screen
    assert "\x1b[1A" in screen, "the CLI did not draw per-layer lines (no cursor movement)"
    lines = layer_updates(screen)
    assert lines[0] == "latest: Pulling from busybox"
    layer = re.compile(r"^([0-9a-f]{12}): (.*)$")
    per_layer: dict[str, list[str]] = {}
    for line in lines:
        if m := layer.match(line):
            per_layer.setdefault(m[1], []).append(m[2])
    assert per_layer, lines
    for statuses in per_layer.values():
        assert statuses[0] == "Pulling fs layer" and statuses[-1] == "Pull complete", statuses
        downloads = [s for s in statuses if s.startswith("Downloading")]
        extracts = [s for s in statuses if s.startswith("Extracting")]
        assert downloads and downloads[-1].startswith(f"Downloading {FULL_BAR}"), statuses
        assert extracts and extracts[-1].startswith(f"Extracting {FULL_BAR}"), statuses
        size = downloads[-1].split()[-1]
        assert re.fullmatch(r"([\d.]+[kMG]?B)/\1", size), downloads[-1]
    assert any(line.startswith("Digest: sha256:") for line in lines)
    assert f"Status: Downloaded newer image for {image}" in lines


def test_load_progress_bars_on_a_tty(fresh_daemon: Daemon, busybox_tar: Path) -> None:
    code, screen = run_on_tty(fresh_daemon, "load", "-i", str(busybox_tar))
    assert code == 0, screen
    lines = layer_updates(screen)
    loading = [line for line in lines if ": Loading layer " in line]
    assert loading, lines
    assert FULL_BAR in loading[-1], loading
    assert lines[-1] == "Loaded image: busybox:latest"
    # Not on a TTY, the CLI asks for quiet: the result line only.
    quiet = fresh_daemon.docker("load", "-i", str(busybox_tar)).stdout.decode()
    assert "Loading layer" not in quiet and "busybox:latest" in quiet
