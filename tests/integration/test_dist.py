"""`make dist` → one executable file that the system's Python runs: start it, ping it, run a container.

Uses `$PYDOCK_DIST` when it names a prebuilt file, else builds one with `make dist DIST=...` into a
temp dir. Its compiled modules are unpacked into a temp `SHIV_ROOT`, removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.daemon import REPO, Daemon

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


@pytest.fixture(scope="module")
def dist_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prebuilt = os.environ.get("PYDOCK_DIST")
    if prebuilt:
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("dist") / "pydockd"
    result = subprocess.run(
        ["make", "-s", "dist", f"DIST={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"make dist failed:\n{result.stdout}\n{result.stderr}"
    return out


@dataclass
class DistDaemon(Daemon):
    """A test daemon started from the single-file build by the system's python3."""

    dist: Path = Path("dist/pydockd")

    def args(self) -> list[str]:
        return [SYSTEM_PYTHON, str(self.dist), *super().args()[1:]]


@pytest.fixture
def shiv_root(tmp_root: Path) -> Iterator[Path]:
    root = tmp_root / "shiv"
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_dist_is_one_executable_zipapp(dist_file: Path, shiv_root: Path) -> None:
    assert dist_file.is_file() and os.access(dist_file, os.X_OK)
    assert dist_file.read_bytes()[:2] == b"#!"
    env = {**os.environ, "SHIV_ROOT": str(shiv_root)}
    out = subprocess.run(
        [SYSTEM_PYTHON, str(dist_file), "--version"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("pydock version ")
    # the compiled modules were unpacked once, under SHIV_ROOT, not into the zip's directory
    assert list(shiv_root.glob("pydockd_*/site-packages/uvloop"))


def test_dist_daemon_serves_the_api(
    dist_file: Path, shiv_root: Path, tmp_root: Path, busybox_tar: Path
) -> None:
    d = DistDaemon(tmp_root / "d", env_extra={"SHIV_ROOT": str(shiv_root)}, dist=dist_file)
    try:
        d.start(timeout_s=60)
        assert d.raw_ping()
        cmdline = Path(f"/proc/{d.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[:2] == [SYSTEM_PYTHON.encode(), str(dist_file).encode()]
        assert d.json("GET", "/version")["ApiVersion"] == "1.41"
        d.docker("load", "-q", "-i", str(busybox_tar))
        out = d.docker("run", "--rm", "busybox", "echo", "from the zipapp").stdout
        assert out == b"from the zipapp\n"
    finally:
        d.close()  # stops it by PID; removes its bridge and chains (kept at shutdown, as dockerd does)


def other_python() -> str | None:
    """A CPython other than the one the build is for, if this host has one (pyenv, deadsnakes)."""
    candidates = [shutil.which(name) for name in ("python3.13", "python3.12", "python3.10")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.*/bin/python3"))
    built_for = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for path in filter(None, candidates):
        probe = [path, "-c", "import sys; print(sys.version_info[:2])"]
        out = subprocess.run(probe, capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout != built_for:
            return path
    return None


def test_dist_refuses_another_python_plainly(dist_file: Path, shiv_root: Path) -> None:
    python = other_python()
    if python is None:
        pytest.skip("no other CPython on this host")
    env = {**os.environ, "SHIV_ROOT": str(shiv_root)}
    out = subprocess.run(
        [python, str(dist_file), "--version"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 1
    assert out.stderr.startswith("pydockd"), out.stderr  # one line that says why, no traceback
    assert "Traceback" not in out.stderr
