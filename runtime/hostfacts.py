"""Facts about the host that shape every container's OCI spec, probed once at startup.

`build_spec` takes them as an input so it stays pure (golden tests pass fixed facts). What
matters: the CPU architecture and kernel version (seccomp), which capabilities the daemon itself
holds (a container cannot get more: `--privileged` is clamped to them), the highest
RLIMIT_NOFILE the daemon may hand out, and the cgroup flavour (v2 lacks swappiness and kmem).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from runtime.caps import CAPABILITIES, names_from_mask

DOCKER_NOFILE = 1048576  # what dockerd's containers get (LimitNOFILE=infinity under systemd)


@dataclass(frozen=True, slots=True)
class HostFacts:
    machine: str = "x86_64"  # uname -m
    kernel: tuple[int, int] = (6, 1)
    last_cap: int = len(CAPABILITIES) - 1  # /proc/sys/kernel/cap_last_cap
    bounding_caps: frozenset[str] | None = None  # the daemon's CapBnd; None = everything
    nofile_max: int = DOCKER_NOFILE  # highest RLIMIT_NOFILE a container may start with
    cgroup_v2: bool = False
    swap_limit: bool = True  # memory.memsw.* (v1) / memory.swap.max (v2) exist

    @classmethod
    def probe(cls, cgroup_root: Path = Path("/sys/fs/cgroup")) -> HostFacts:
        """Read the facts of the running host (a few small /proc and /sys reads)."""
        uname = os.uname()
        parts = uname.release.split(".")
        try:
            kernel = (int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0))
        except (IndexError, ValueError):
            kernel = (0, 0)
        try:
            last_cap = min(int(Path("/proc/sys/kernel/cap_last_cap").read_text()), len(CAPABILITIES) - 1)
        except (OSError, ValueError):
            last_cap = len(CAPABILITIES) - 1
        bounding: frozenset[str] | None = None
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("CapBnd:"):
                    bounding = frozenset(names_from_mask(int(line.split()[1], 16)))
        except (OSError, ValueError):
            bounding = None
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        can_raise = bounding is None or "CAP_SYS_RESOURCE" in bounding
        nofile = DOCKER_NOFILE if can_raise or hard == resource.RLIM_INFINITY else min(DOCKER_NOFILE, hard)
        v2 = (cgroup_root / "cgroup.controllers").exists()
        swap = (
            (cgroup_root / "memory.swap.max").exists() or any(cgroup_root.glob("*/memory.swap.max"))
            if v2
            else (cgroup_root / "memory" / "memory.memsw.limit_in_bytes").exists()
        )
        return cls(
            machine=uname.machine,
            kernel=kernel,
            last_cap=last_cap,
            bounding_caps=bounding,
            nofile_max=nofile,
            cgroup_v2=v2,
            swap_limit=swap,
        )
