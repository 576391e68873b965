"""Leak accounting: many container lifecycles leave the host and the daemon as they were."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from runtime.cgroups import CgroupLayout
from tests.integration.daemon import Daemon, wait_for

CYCLES = 200


@dataclass(frozen=True)
class Snapshot:
    mounts: int
    cgroups: int
    exec_entries: int
    container_dirs: int
    fds: int
    tasks: int
    rss_kib: int


def _cgroup_dirs(daemon: Daemon, cids: set[str]) -> int:
    """The test's containers' cgroups under the daemon's parent, in every hierarchy."""
    count = 0
    for parent in CgroupLayout.detect().all_dirs(daemon.cgroup_parent):
        if parent.is_dir():
            count += sum(1 for entry in parent.iterdir() if entry.name in cids)
    return count


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def snapshot(daemon: Daemon, api: httpx.Client, cids: set[str]) -> Snapshot:
    mounts = sum(1 for line in Path("/proc/self/mountinfo").read_text().splitlines()
                 if str(daemon.root) in line.split()[4])  # fmt: skip
    exec_entries = sum(len(files) + len(dirs) for _, dirs, files in os.walk(daemon.exec_root / "containers"))
    info = api.get("/v1.41/info").json()
    return Snapshot(
        mounts=mounts,
        cgroups=_cgroup_dirs(daemon, cids),
        exec_entries=exec_entries,
        container_dirs=len(list((daemon.data_root / "containers").iterdir())),
        fds=len(os.listdir(f"/proc/{daemon.pid}/fd")),
        tasks=int(info["NGoroutines"]),
        rss_kib=_rss_kib(daemon.pid),
    )


def pending_deletions(daemon: Daemon) -> list[str]:
    dirs = (daemon.data_root / "containers", daemon.exec_root / "containers")
    return [str(p) for d in dirs if d.is_dir() for p in d.iterdir() if p.name.endswith(".removing")]


def no_deletions_pending(daemon: Daemon) -> bool:
    pending = pending_deletions(daemon)
    if pending:
        print("pending deletions:", pending[:5])
    return not pending


def cycle(daemon: Daemon, api: httpx.Client, cids: set[str], *, with_output: bool) -> None:
    cmd = ["sh", "-c", "echo hello; sleep 30"] if with_output else ["sleep", "30"]
    r = api.post("/v1.41/containers/create", json={"Image": "busybox", "Cmd": cmd})
    assert r.status_code == 201, r.text
    cid = r.json()["Id"]
    cids.add(cid)
    assert api.post(f"/v1.41/containers/{cid}/start").status_code == 204
    assert _cgroup_dirs(daemon, {cid}) >= 1  # the accounting sees a running container's cgroup
    assert api.post(f"/v1.41/containers/{cid}/stop", params={"t": 0}).status_code == 204
    assert api.delete(f"/v1.41/containers/{cid}").status_code == 204


def test_lifecycle_cycles_leak_nothing(daemon: Daemon) -> None:
    cids: set[str] = set()
    with daemon.http(timeout=60) as api:
        for _ in range(3):  # warm-up: first-use caches, lazily created dirs
            cycle(daemon, api, cids, with_output=True)
        # Removed containers' files are deleted in the background (also those of earlier tests):
        # compare settled states.
        wait_for(lambda: no_deletions_pending(daemon), 60, "background deletions to finish")
        before = snapshot(daemon, api, cids)
        for i in range(CYCLES):
            cycle(daemon, api, cids, with_output=i % 2 == 0)
        wait_for(lambda: no_deletions_pending(daemon), 60, "background deletions to finish")
        after = snapshot(daemon, api, cids)
    print(f"\nleak accounting after {CYCLES} cycles: before={before} after={after}")
    assert after.mounts == before.mounts
    assert after.cgroups == before.cgroups == 0
    assert after.exec_entries == before.exec_entries
    assert after.container_dirs == before.container_dirs
    assert after.fds <= before.fds
    assert after.tasks <= before.tasks
    # Python's allocator keeps some arenas: allow a little, not per-container growth.
    assert after.rss_kib - before.rss_kib < 8 * 1024
