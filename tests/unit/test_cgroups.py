"""cgroup layout detection and readers against fake cgroup trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.cgroups import (
    CgroupLayout,
    CgroupMode,
    CgroupReader,
    container_cgroup_path,
    remove_cgroup,
    remove_cgroup_async,
    system_cpu_usage_ns,
)
from runtime.errors import InvalidParameter

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_COMOUNTED = "30 23 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
V2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"


def test_layout_detection() -> None:
    hybrid = CgroupLayout.from_mountinfo(HYBRID)
    assert hybrid.mode is CgroupMode.HYBRID
    assert hybrid.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert hybrid.v1["name=systemd"] == Path("/sys/fs/cgroup/systemd")
    assert hybrid.unified == Path("/sys/fs/cgroup/unified")
    assert hybrid.dir("pids", "/pydock/c1") == Path("/sys/fs/cgroup/pids/pydock/c1")
    assert Path("/sys/fs/cgroup/unified/pydock/c1") in hybrid.all_dirs("/pydock/c1")

    v1 = CgroupLayout.from_mountinfo(V1_COMOUNTED)
    assert v1.mode is CgroupMode.V1
    assert v1.v1["cpu"] == v1.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert v1.all_dirs("/x") == [Path("/sys/fs/cgroup/cpu,cpuacct/x")]

    v2 = CgroupLayout.from_mountinfo(V2)
    assert v2.mode is CgroupMode.V2 and v2.unified == Path("/sys/fs/cgroup")
    assert v2.dir("memory", "/pydock/c1") == Path("/sys/fs/cgroup/pydock/c1")


def test_container_cgroup_path() -> None:
    assert container_cgroup_path("abc") == "/pydock/abc"
    assert container_cgroup_path("abc", "my/parent/") == "/my/parent/abc"
    assert container_cgroup_path("abc", default_parent="/pydock-test") == "/pydock-test/abc"
    for bad in ("../escape", "a/../../b", "a b"):
        with pytest.raises(InvalidParameter):
            container_cgroup_path("abc", bad)


def write(base: Path, files: dict[str, str]) -> None:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text)


def fake_v1(tmp_path: Path, cgroup: str) -> CgroupLayout:
    layout = CgroupLayout(
        CgroupMode.V1,
        {c: tmp_path / c for c in ("memory", "cpu", "cpuacct", "pids", "blkio", "freezer")},
        None,
    )
    rel = cgroup.lstrip("/")
    write(
        tmp_path / "memory" / rel,
        {
            "memory.usage_in_bytes": "1048576\n",
            "memory.max_usage_in_bytes": "2097152\n",
            "memory.limit_in_bytes": "16777216\n",
            "memory.failcnt": "7\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
            "memory.stat": "cache 4096\nrss 8192\ntotal_inactive_file 100\n",
            "cgroup.procs": "",
        },
    )
    write(
        tmp_path / "cpuacct" / rel,
        {
            "cpuacct.usage": "5000000000\n",
            "cpuacct.usage_percpu": "3000000000 2000000000 \n",
            "cpuacct.stat": "user 300\nsystem 100\n",
        },
    )
    write(tmp_path / "cpu" / rel, {"cpu.stat": "nr_periods 10\nnr_throttled 2\nthrottled_time 5000\n"})
    write(
        tmp_path / "pids" / rel, {"pids.current": "3\n", "pids.max": "max\n", "cgroup.procs": "10\n11\n12\n"}
    )
    write(
        tmp_path / "blkio" / rel,
        {
            "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 8192\nTotal 12288\n",
            "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
        },
    )
    write(tmp_path / "freezer" / rel, {"freezer.state": "FROZEN\n"})
    return layout


def test_v1_reader(tmp_path: Path) -> None:
    reader = CgroupReader(fake_v1(tmp_path, "/pydock/c1"), "/pydock/c1")
    assert reader.exists()
    mem = reader.memory()
    assert mem is not None
    assert (mem.usage, mem.max_usage, mem.limit, mem.failcnt, mem.oom_kill) == (
        1048576,
        2097152,
        16777216,
        7,
        1,
    )
    assert mem.stats["total_inactive_file"] == 100 and not mem.under_oom
    assert reader.oom_kill_count() == 1
    cpu = reader.cpu()
    assert cpu is not None
    assert cpu.total_ns == 5_000_000_000 and cpu.percpu_ns == [3_000_000_000, 2_000_000_000]
    assert (cpu.user_ns, cpu.system_ns) == (3_000_000_000, 1_000_000_000)  # USER_HZ ticks → ns
    assert (cpu.periods, cpu.throttled_periods, cpu.throttled_ns) == (10, 2, 5000)
    pids = reader.pids()
    assert pids is not None and pids.current == 3 and pids.limit is None
    assert reader.procs() == [10, 11, 12]
    io = reader.blkio()
    assert [(e.major, e.minor, e.op, e.value) for e in io.service_bytes] == [
        (8, 0, "Read", 4096),
        (8, 0, "Write", 8192),
    ]
    assert len(io.serviced) == 2
    assert reader.freezer_state() == "FROZEN"


def test_v1_unlimited_memory_and_missing_cgroup(tmp_path: Path) -> None:
    layout = fake_v1(tmp_path, "/c")
    (tmp_path / "memory" / "c" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    mem = CgroupReader(layout, "/c").memory()
    assert mem is not None and mem.limit is None
    gone = CgroupReader(layout, "/nope")
    assert not gone.exists()
    assert gone.memory() is None and gone.cpu() is None and gone.pids() is None
    assert gone.freezer_state() is None and gone.oom_kill_count() == 0 and gone.procs() == []


def test_v2_reader(tmp_path: Path) -> None:
    layout = CgroupLayout(CgroupMode.V2, {}, tmp_path)
    write(
        tmp_path / "pydock" / "c2",
        {
            "memory.current": "4096\n",
            "memory.max": "max\n",
            "memory.peak": "8192\n",
            "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 2\n",
            "memory.stat": "anon 100\nfile 200\ninactive_file 50\n",
            "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\nnr_throttled 1\n"
            "throttled_usec 20\n",
            "pids.current": "2\n",
            "pids.max": "64\n",
            "io.stat": "8:0 rbytes=4096 wbytes=1024 rios=4 wios=1 dbytes=0 dios=0\n",
            "cgroup.events": "populated 1\nfrozen 0\n",
        },
    )
    reader = CgroupReader(layout, "/pydock/c2")
    mem = reader.memory()
    assert mem is not None
    assert (mem.usage, mem.limit, mem.max_usage, mem.failcnt, mem.oom_kill) == (4096, None, 8192, 4, 2)
    cpu = reader.cpu()
    assert cpu is not None and (cpu.total_ns, cpu.user_ns, cpu.system_ns) == (1_500_000, 1_000_000, 500_000)
    assert cpu.percpu_ns == [] and cpu.throttled_ns == 20_000
    pids = reader.pids()
    assert pids is not None and (pids.current, pids.limit) == (2, 64)
    io = reader.blkio()
    assert [(e.op, e.value) for e in io.service_bytes] == [("read", 4096), ("write", 1024)]
    assert [(e.op, e.value) for e in io.serviced] == [("read", 4), ("write", 1)]
    assert reader.freezer_state() == "THAWED"


def test_remove_cgroup_depth_first(tmp_path: Path) -> None:
    layout = CgroupLayout(
        CgroupMode.HYBRID, {"memory": tmp_path / "memory", "pids": tmp_path / "pids"}, tmp_path / "u"
    )
    for base in ("memory", "pids", "u"):
        (tmp_path / base / "pydock" / "c" / "child" / "grandchild").mkdir(parents=True)
    assert remove_cgroup(layout, "/pydock/c") == []
    for base in ("memory", "pids", "u"):
        assert not (tmp_path / base / "pydock" / "c").exists()
        assert (tmp_path / base / "pydock").exists()
    assert remove_cgroup(layout, "/pydock/c") == []  # already gone: fine
    with pytest.raises(InvalidParameter):
        remove_cgroup(layout, "/")


async def test_remove_cgroup_async_reports_leftovers(tmp_path: Path) -> None:
    layout = CgroupLayout(CgroupMode.V2, {}, tmp_path)
    busy = tmp_path / "pydock" / "c"
    busy.mkdir(parents=True)
    (busy / "a-file").write_text("x")  # a plain directory with a file: rmdir fails like EBUSY
    left = await remove_cgroup_async(layout, "/pydock/c", timeout_s=0.05)
    assert left == [busy]


def test_system_cpu_usage() -> None:
    stat = "cpu  100 0 50 1000 10 0 5 0 0 0\ncpu0 50 0 25 500 5 0 2 0 0 0\n"
    assert system_cpu_usage_ns(stat) == (100 + 50 + 1000 + 10 + 5) * 10_000_000
