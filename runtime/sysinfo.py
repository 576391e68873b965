"""Facts about the host for `/info` and `/version`: kernel, OS, CPUs, memory, cgroups.

Read once at startup (they do not change while the daemon runs), except the few live values
(`ipv4_forwarding`) that `/info` reads on demand.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def _read(path: str | Path, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in _read("/etc/os-release").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value.strip().strip('"')
    return out


def _mem_total() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def cgroup_version(root: Path = Path("/sys/fs/cgroup")) -> str:
    """ "2" on a unified host, "1" on legacy and hybrid hosts (controllers on v1 mounts)."""
    return "2" if (root / "cgroup.controllers").exists() else "1"


def is_hybrid_cgroup(root: Path = Path("/sys/fs/cgroup")) -> bool:
    return cgroup_version(root) == "1" and (root / "unified" / "cgroup.controllers").exists()


@dataclass(frozen=True, slots=True)
class HostInfo:
    kernel_version: str
    operating_system: str
    os_version: str
    architecture: str  # uname -m, as /info shows it
    goarch: str  # Go's name, as /version shows it
    ncpu: int
    mem_total: int
    cgroup_version: str
    cgroup_hybrid: bool
    hostname: str

    @classmethod
    def probe(cls) -> HostInfo:
        rel = _os_release()
        machine = platform.machine()
        try:
            ncpu = len(os.sched_getaffinity(0))
        except OSError:
            ncpu = os.cpu_count() or 1
        return cls(
            kernel_version=os.uname().release,
            operating_system=rel.get("PRETTY_NAME", "Linux"),
            os_version=rel.get("VERSION_ID", ""),
            architecture=machine,
            goarch=GOARCH.get(machine, machine),
            ncpu=ncpu,
            mem_total=_mem_total(),
            cgroup_version=cgroup_version(),
            cgroup_hybrid=is_hybrid_cgroup(),
            hostname=platform.node(),
        )


def ipv4_forwarding() -> bool:
    return _read("/proc/sys/net/ipv4/ip_forward") == "1"


def bridge_nf_iptables() -> bool:
    return _read("/proc/sys/net/bridge/bridge-nf-call-iptables") == "1"
