"""contrib/ systemd units and Dockerfile.dev: they parse, agree with pydockd's flags and defaults,
and install what the Makefile says pydock needs."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from app.flags import parse_args
from runtime.config import DEFAULT_SOCKET

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((CONTRIB / name).read_text())
    return parser


def test_socket_unit_opens_pydockd_default_socket() -> None:
    sock = unit("pydock.socket")
    assert sock["Socket"]["ListenStream"] == DEFAULT_SOCKET.replace("/var/run/", "/run/")
    assert sock["Socket"]["SocketMode"] == "0660"
    assert sock["Install"]["WantedBy"] == "sockets.target"


def test_service_unit_serves_the_activated_socket(tmp_path: Path) -> None:
    service = unit("pydock.service")
    assert service["Unit"]["Requires"] == "pydock.socket"
    argv = shlex.split(service["Service"]["ExecStart"])
    assert Path(argv[0]).name == "pydockd"
    empty = tmp_path / "daemon.json"  # not this host's /etc/pydock/daemon.json
    empty.write_text("{}")
    config, _ = parse_args([*argv[1:], "--config-file", str(empty)])  # the flags are pydockd's own
    assert config.hosts == ("fd://",)
    assert service["Service"]["KillMode"] == "process"  # pydockd stops its containers itself
    assert service["Service"]["Delegate"] == "yes"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    for name in ("pydock.socket", "pydock.service"):
        text = (
            (CONTRIB / name)
            .read_text()
            .replace("/usr/local/bin/pydockd", shutil.which("true") or "/bin/true")
        )
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "pydock.socket"), str(tmp_path / "pydock.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert result.returncode == 0 and not complaints, result.stderr


def makefile_debian_packages() -> set[str]:
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^DEBIAN_PACKAGES\s*:=\s*(.*)$", text, re.MULTILINE)
    assert match, "Makefile lost DEBIAN_PACKAGES"
    return set(match[1].split())


def test_dockerfile_dev_installs_the_makefile_packages() -> None:
    text = (REPO / "Dockerfile.dev").read_text()
    assert re.search(r"^FROM debian:bookworm$", text, re.MULTILINE)
    install = text[text.index("apt-get install") : text.index("rm -rf /var/lib/apt/lists")]
    installed = {
        word.split("=")[0] for word in install.replace("\\\n", " ").split() if re.match(r"^[a-z0-9]", word)
    }
    missing = makefile_debian_packages() - installed
    assert not missing, f"Dockerfile.dev does not install {sorted(missing)}"
    # the runtime tools the tests depend on are pinned, each to an ARG with a default
    for package in ("runc", "crun", "tini", "iptables", "iproute2", "busybox-static"):
        arg = re.search(rf"\b{package}=\$\{{(\w+)\}}", install)
        assert arg, f"{package} is not pinned"
        assert re.search(rf"^ARG {arg[1]}=\S+$", text, re.MULTILINE), f"ARG {arg[1]} has no default"
    assert "COPY --from=docker-cli /usr/local/bin/docker" in text
    assert re.search(r"^RUN make install$", text, re.MULTILINE)
