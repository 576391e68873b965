"""Daemon-side memory: PSS of a daemon's process tree, without the containers' own processes.

PSS (proportional set size, from /proc/PID/smaps_rollup) splits each shared page among the
processes mapping it, so summing it over dockerd + containerd + N shims counts the shim binary's
text once in total, not N times. Container processes live in their own PID namespace; a process
whose PID namespace differs from the daemon's is the container's and does not count (nor do its
descendants).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def _children() -> dict[int, list[int]]:
    """ppid -> child PIDs, for every process on the host."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_tree(root: int, extra_roots: Iterable[int] = ()) -> list[int]:
    """`root` and its descendants (plus `extra_roots` and theirs) in root's PID namespace."""
    ns = pid_ns(root)
    tree = _children()
    seen: list[int] = []
    todo = [root, *extra_roots]
    while todo:
        pid = todo.pop()
        if pid in seen or pid_ns(pid) != ns:
            continue
        seen.append(pid)
        todo.extend(tree.get(pid, []))
    return seen


def pids_with_arg(arg: str) -> list[int]:
    """Processes whose command line contains `arg` as one argument (e.g. a socket address)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and arg in cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


def pss_bytes(pids: Iterable[int]) -> int:
    """Sum of PSS over `pids` (processes that exited meanwhile count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of `pids` (their own, not their reaped children's)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total
