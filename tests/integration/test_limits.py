"""Resource limits through the docker CLI: visible in inspect, applied to the container's cgroup,
enforced (an OOM kill with `OOMKilled` and 137, a fork bomb stopped at the pids limit), changed
live by `docker update` (CLI and docker-py) with dockerd's checks and messages."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.cgroups import CgroupLayout, container_cgroup_path, remove_cgroup
from tests.integration.daemon import Daemon, wait_for

MiB = 1024 * 1024


def uniq(prefix: str = "lim") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def run(daemon: Daemon, names: list[str], *args: str, detach: bool = True, check: bool = True) -> str:
    name = uniq()
    names.append(name)
    daemon.docker("run", *(["-d"] if detach else []), "--name", name, *args, check=check)
    return name


def inspect(daemon: Daemon, name: str) -> dict[str, Any]:
    return json.loads(daemon.docker("inspect", name).stdout)[0]  # type: ignore[no-any-return]


def cgroup_file(daemon: Daemon, name: str, controller: str, filename: str) -> str:
    """A file of the container's cgroup, read on the host (v1 controller dirs or the v2 dir)."""
    layout = CgroupLayout.detect()
    cid = inspect(daemon, name)["Id"]
    directory = layout.dir(controller, container_cgroup_path(cid, default_parent=daemon.cgroup_parent))
    assert directory is not None
    return (directory / filename).read_text().strip()


def test_limits_in_inspect_and_in_the_cgroup(daemon: Daemon, names: list[str]) -> None:
    name = run(daemon, names, "-m", "48m", "--memory-swap", "96m", "--cpus", "0.5", "--cpu-shares", "256",
               "--cpuset-cpus", "0", "--pids-limit", "42", "--ulimit", "nofile=1024:2048",
               "--shm-size", "16m", "busybox", "sleep", "1000")  # fmt: skip
    hc = inspect(daemon, name)["HostConfig"]
    assert (hc["Memory"], hc["MemorySwap"], hc["NanoCpus"], hc["CpuShares"]) == (
        48 * MiB,
        96 * MiB,
        500_000_000,
        256,
    )
    assert (hc["CpusetCpus"], hc["PidsLimit"], hc["ShmSize"]) == ("0", 42, 16 * MiB)
    assert hc["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    if CgroupLayout.detect().mode.value != "v2":
        assert cgroup_file(daemon, name, "memory", "memory.limit_in_bytes") == str(48 * MiB)
        assert cgroup_file(daemon, name, "memory", "memory.memsw.limit_in_bytes") == str(96 * MiB)
        assert cgroup_file(daemon, name, "cpu", "cpu.cfs_quota_us") == "50000"
        assert cgroup_file(daemon, name, "cpu", "cpu.shares") == "256"
    else:  # pragma: no cover - this CI host is v1/hybrid
        assert cgroup_file(daemon, name, "", "memory.max") == str(48 * MiB)
        assert cgroup_file(daemon, name, "", "cpu.max") == "50000 100000"
    assert cgroup_file(daemon, name, "cpuset", "cpuset.cpus") == "0"
    assert cgroup_file(daemon, name, "pids", "pids.max") == "42"
    out = daemon.docker(
        "exec", name, "sh", "-c", "ulimit -n; ulimit -Hn; df -k /dev/shm | tail -1"
    ).stdout.decode()
    soft, hard, shm = out.splitlines()
    assert (soft, hard) == ("1024", "2048")
    assert shm.split()[1] == str(16 * 1024)


def test_memory_hog_is_oom_killed(daemon: Daemon, names: list[str]) -> None:
    name = uniq()
    names.append(name)
    since = str(time.time())
    r = daemon.docker("run", "--name", name, "-m", "16m", "--memory-swap", "16m", "busybox",
                      "sh", "-c", "tail /dev/zero", check=False)  # fmt: skip
    assert r.returncode == 137
    state = inspect(daemon, name)["State"]
    assert (state["OOMKilled"], state["ExitCode"], state["Status"]) == (True, 137, "exited")
    window = ["--since", since, "--until", str(time.time() + 0.1), "--filter", f"container={name}"]
    actions = daemon.docker("events", *window, "--format", "{{.Action}}").stdout.decode().split()
    assert "oom" in actions and actions.index("oom") < actions.index("die")


def test_fork_bomb_stops_at_the_pids_limit(daemon: Daemon, names: list[str]) -> None:
    # The inner shell forks until the kernel refuses (ash then gives up); the outer one survives.
    bomb = "sh -c 'for i in $(seq 200); do sleep 1000 & done'; echo forked; sleep 1000"
    name = run(daemon, names, "--pids-limit", "20", "busybox", "sh", "-c", bomb)
    wait_for(lambda: b"forked" in daemon.docker("logs", name).stdout, 30, "the bomb to stop forking")
    assert b"can't fork" in daemon.docker("logs", name).stderr
    assert 19 <= int(cgroup_file(daemon, name, "pids", "pids.current")) <= 20
    assert cgroup_file(daemon, name, "pids", "pids.max") == "20"
    assert inspect(daemon, name)["State"]["Running"] is True  # the container itself is fine


def test_device_mapping(daemon: Daemon, names: list[str]) -> None:
    if not Path("/dev/loop0").exists():
        pytest.skip("no /dev/loop0 on this host")
    out = daemon.docker("run", "--rm", "--device", "/dev/loop0:/dev/xdisk:r", "busybox", "sh", "-c",
                        "ls -l /dev/xdisk; head -c 0 /dev/xdisk && echo readable; "
                        "echo x 2>/dev/null > /dev/xdisk || echo not-writable").stdout.decode()  # fmt: skip
    assert out.startswith("b") and "readable" in out and "not-writable" in out
    out = daemon.docker("run", "--rm", "busybox", "ls", "/dev").stdout.decode().split()
    assert "loop0" not in out and "xdisk" not in out
    r = daemon.docker("run", "--rm", "--device", "/dev/nonexistent-dev", "busybox", "true", check=False)
    assert r.returncode != 0
    assert b'error gathering device information while adding custom device "/dev/nonexistent-dev"' in r.stderr


def in_cgroup(pid: int, cgroup: str) -> bool:
    """Whether a process is in `cgroup` in every hierarchy mounted here (`/proc/PID/cgroup`).
    Paths there are absolute from the root of this cgroup namespace, which is the daemon's root
    only when the daemon does not itself run in a container: compare the ends."""
    layout = CgroupLayout.detect()
    checked = 0
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        mounted = layout.unified is not None if not controllers else controllers.split(",")[0] in layout.v1
        if mounted:
            checked += 1
            if not path.endswith(cgroup):
                return False
    return checked > 0


def test_cgroup_parent_of_the_daemon_and_of_a_container(daemon: Daemon, names: list[str]) -> None:
    default = inspect(daemon, run(daemon, names, "busybox", "sleep", "1000"))
    assert default["HostConfig"]["CgroupParent"] == ""  # the daemon's --cgroup-parent, not shown
    pid = default["State"]["Pid"]
    assert in_cgroup(pid, f"{daemon.cgroup_parent}/{default['Id']}"), Path(f"/proc/{pid}/cgroup").read_text()
    own_parent = f"{daemon.cgroup_parent}-own"
    own = inspect(daemon, run(daemon, names, "--cgroup-parent", own_parent, "busybox", "sleep", "1000"))
    assert own["HostConfig"]["CgroupParent"] == own_parent
    pid = own["State"]["Pid"]
    assert in_cgroup(pid, f"{own_parent}/{own['Id']}"), Path(f"/proc/{pid}/cgroup").read_text()
    daemon.docker("rm", "-f", names.pop())
    layout = CgroupLayout.detect()
    assert not any(d.exists() for d in layout.all_dirs(f"{own_parent}/{own['Id']}"))
    assert remove_cgroup(layout, own_parent) == []
    r = daemon.docker("create", "--cgroup-parent", "/x/../y", "busybox", check=False)
    assert r.returncode != 0 and b"invalid cgroup parent: /x/../y" in r.stderr


def test_update_live_and_persisted(daemon: Daemon, names: list[str]) -> None:
    name = run(daemon, names, "-m", "32m", "busybox", "sleep", "1000")
    r = daemon.docker("update", "-m", "128m", name, check=False)
    assert r.returncode == 1
    assert (b"Cannot update container " + inspect(daemon, name)["Id"].encode()
            + b": Memory limit should be smaller than already set memoryswap limit") in r.stderr  # fmt: skip
    out = daemon.docker("update", "-m", "128m", "--memory-swap", "256m", "--cpus", "0.25", "--cpu-shares",
                        "512", "--pids-limit", "33", "--restart", "on-failure:2", name).stdout  # fmt: skip
    assert out.strip() == name.encode()
    hc = inspect(daemon, name)["HostConfig"]
    assert (hc["Memory"], hc["MemorySwap"], hc["NanoCpus"], hc["CpuShares"], hc["PidsLimit"]) == (
        128 * MiB, 256 * MiB, 250_000_000, 512, 33,
    )  # fmt: skip
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert cgroup_file(daemon, name, "pids", "pids.max") == "33"
    if CgroupLayout.detect().mode.value != "v2":
        assert cgroup_file(daemon, name, "memory", "memory.limit_in_bytes") == str(128 * MiB)
        assert cgroup_file(daemon, name, "cpu", "cpu.cfs_quota_us") == "25000"
    # a stopped container keeps the new values for its next start
    daemon.docker("kill", name)
    daemon.docker("update", "--pids-limit", "44", name)
    daemon.docker("start", name)
    assert cgroup_file(daemon, name, "pids", "pids.max") == "44"
    r = daemon.docker("update", "--cpus", "999", name, check=False)
    assert b"Range of CPUs is from 0.01 to" in r.stderr


def test_update_through_docker_py(daemon: Daemon, names: list[str]) -> None:
    name = run(daemon, names, "busybox", "sleep", "1000")
    client = daemon.client()
    try:
        c = client.containers.get(name)
        result = c.update(mem_limit="64m", memswap_limit="128m", cpu_shares=300, cpu_quota=20000)
        assert result == {"Warnings": []}
        c.reload()
        hc = c.attrs["HostConfig"]
        assert (hc["Memory"], hc["MemorySwap"], hc["CpuShares"], hc["CpuQuota"]) == (
            64 * MiB,
            128 * MiB,
            300,
            20000,
        )
        assert cgroup_file(daemon, name, "cpu", "cpu.shares") == "300"
    finally:
        client.close()
