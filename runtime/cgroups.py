"""cgroups: where a container's cgroup lives and what it says (memory, cpu, pids, io, OOM, freezer).

pydock uses runc's cgroupfs driver with an absolute path per container,
`<parent>/<cid>` (the container's `HostConfig.CgroupParent`, else the daemon's `--cgroup-parent`,
`/pydock` by default), fixed at create and kept in its record; runc creates it in
every hierarchy on `runc create` and removes it on `runc delete`. `remove_cgroup` clears what a
crash left behind.

`CgroupLayout` says where the hierarchies are mounted (cgroup v1, v2 or hybrid: v1 controllers
plus a cgroup2 mount at /sys/fs/cgroup/unified), parsed from /proc/self/mountinfo text, so
tests can point it at a fake tree. `CgroupReader` reads one cgroup's files: small pseudo-files,
read synchronously (call from a thread if many). It never writes; runc does (`runc update`).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from runtime.errors import InvalidParameter

DEFAULT_CGROUP_PARENT = "/pydock"
UNLIMITED_V1 = 0x7FFFFFFFFFFFF000  # memory.limit_in_bytes when unlimited (page-rounded INT64_MAX)
CLOCK_TICKS = 100  # USER_HZ: the unit of cpuacct.stat
V1_CONTROLLERS = frozenset(
    {
        *("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"),
        *("net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc"),
    }
)
_NAME = re.compile(r"^[A-Za-z0-9_.:@+-]+$")


class CgroupMode(StrEnum):
    V1 = "v1"
    HYBRID = "hybrid"  # v1 controllers, plus a cgroup2 mount without controllers
    V2 = "v2"


def container_cgroup_path(cid: str, parent: str = "", *, default_parent: str = DEFAULT_CGROUP_PARENT) -> str:
    """The absolute cgroupfs path of a container: `<parent or default_parent>/<cid>`.

    Raises InvalidParameter for a parent with `..` or odd characters.
    """
    if not _NAME.match(cid):
        raise InvalidParameter(f"invalid container ID for a cgroup: {cid}")
    return "/" + "/".join([*cgroup_parent_parts(parent or default_parent), cid])


def cgroup_parent_parts(parent: str) -> list[str]:
    """The path components of a cgroup parent; InvalidParameter for `..` or odd characters."""
    parts = [p for p in parent.split("/") if p]
    if any(p in (".", "..") or not _NAME.match(p) for p in parts):
        raise InvalidParameter(f"invalid cgroup parent: {parent}")
    return parts


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    mode: CgroupMode
    v1: dict[str, Path] = field(default_factory=dict)  # controller (or "name=systemd") → mount point
    unified: Path | None = None  # the cgroup2 mount point

    @classmethod
    def from_mountinfo(cls, text: str) -> CgroupLayout:
        v1: dict[str, Path] = {}
        unified: Path | None = None
        for line in text.splitlines():
            left, sep, right = line.partition(" - ")
            if not sep:
                continue
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            mountpoint = Path(fields[4].replace("\\040", " "))
            fstype, superopts = rfields[0], rfields[2].split(",")
            if fstype == "cgroup2":
                unified = unified or mountpoint
            elif fstype == "cgroup":
                for opt in superopts:
                    if opt in V1_CONTROLLERS or opt.startswith("name="):
                        v1.setdefault(opt, mountpoint)
        if v1:
            return cls(CgroupMode.HYBRID if unified else CgroupMode.V1, v1, unified)
        return cls(CgroupMode.V2, {}, unified)

    @classmethod
    def detect(cls, mountinfo: Path = Path("/proc/self/mountinfo")) -> CgroupLayout:
        return cls.from_mountinfo(mountinfo.read_text())

    def _join(self, mount: Path, cgroup: str) -> Path:
        return mount / cgroup.lstrip("/")

    def dir(self, controller: str, cgroup: str) -> Path | None:
        """The directory of `cgroup` for a controller (v2: the one unified directory)."""
        if self.mode is CgroupMode.V2:
            return self._join(self.unified, cgroup) if self.unified else None
        mount = self.v1.get(controller)
        return self._join(mount, cgroup) if mount else None

    def all_dirs(self, cgroup: str) -> list[Path]:
        """Every directory `cgroup` may have: one per v1 hierarchy, plus the unified one."""
        mounts = sorted(set(self.v1.values()))
        if self.unified is not None:
            mounts.append(self.unified)
        return [self._join(m, cgroup) for m in mounts]


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    value = text.strip()
    if value == "max":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _flat_keyed(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


@dataclass(frozen=True, slots=True)
class MemoryStats:
    usage: int
    max_usage: int | None  # v1 max_usage_in_bytes, v2 memory.peak (newer kernels)
    limit: int | None  # None = unlimited
    failcnt: int
    oom_kill: int  # processes the OOM killer killed in this cgroup
    under_oom: bool
    stats: dict[str, int]


@dataclass(frozen=True, slots=True)
class CpuStats:
    total_ns: int
    percpu_ns: list[int]  # empty on cgroup v2
    user_ns: int
    system_ns: int
    periods: int
    throttled_periods: int
    throttled_ns: int


@dataclass(frozen=True, slots=True)
class PidsStats:
    current: int
    limit: int | None  # None = unlimited


@dataclass(frozen=True, slots=True)
class BlkioEntry:
    major: int
    minor: int
    op: str
    value: int


@dataclass(frozen=True, slots=True)
class BlkioStats:
    service_bytes: list[BlkioEntry]
    serviced: list[BlkioEntry]


def _blkio_v1(text: str | None) -> list[BlkioEntry]:
    out: list[BlkioEntry] = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        try:
            out.append(BlkioEntry(int(major), int(minor), parts[1], int(parts[2])))
        except ValueError:
            continue
    return out


def _io_v2(text: str | None) -> BlkioStats:
    service_bytes: list[BlkioEntry] = []
    serviced: list[BlkioEntry] = []
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major_s, _, minor_s = parts[0].partition(":")
        values = dict(p.partition("=")[::2] for p in parts[1:])
        try:
            major, minor = int(major_s), int(minor_s)
            for key, op, target in (
                ("rbytes", "read", service_bytes),
                ("wbytes", "write", service_bytes),
                ("rios", "read", serviced),
                ("wios", "write", serviced),
            ):
                if key in values:
                    target.append(BlkioEntry(major, minor, op, int(values[key])))
        except ValueError:
            continue
    return BlkioStats(service_bytes, serviced)


class CgroupReader:
    """Reads one cgroup's statistics; every method returns None when the files are gone."""

    def __init__(self, layout: CgroupLayout, cgroup: str) -> None:
        self.layout = layout
        self.cgroup = cgroup
        self.v2 = layout.mode is CgroupMode.V2

    def _file(self, controller: str, name: str) -> Path | None:
        base = self.layout.dir(controller, self.cgroup)
        return base / name if base is not None else None

    def exists(self) -> bool:
        base = self.layout.dir("memory" if not self.v2 else "", self.cgroup)
        return base is not None and base.is_dir()

    def procs(self) -> list[int]:
        text = _read(self._file("pids" if not self.v2 else "", "cgroup.procs")) or ""
        return [int(p) for p in text.split() if p.isdigit()]

    def memory(self) -> MemoryStats | None:
        if self.v2:
            usage = _int(_read(self._file("", "memory.current")))
            if usage is None:
                return None
            events = _flat_keyed(_read(self._file("", "memory.events")))
            return MemoryStats(
                usage=usage,
                max_usage=_int(_read(self._file("", "memory.peak"))),
                limit=_int(_read(self._file("", "memory.max"))),
                failcnt=events.get("max", 0),
                oom_kill=events.get("oom_kill", 0),
                under_oom=False,
                stats=_flat_keyed(_read(self._file("", "memory.stat"))),
            )
        usage = _int(_read(self._file("memory", "memory.usage_in_bytes")))
        if usage is None:
            return None
        limit = _int(_read(self._file("memory", "memory.limit_in_bytes")))
        oom = _flat_keyed(_read(self._file("memory", "memory.oom_control")))
        return MemoryStats(
            usage=usage,
            max_usage=_int(_read(self._file("memory", "memory.max_usage_in_bytes"))),
            limit=None if limit is None or limit >= UNLIMITED_V1 else limit,
            failcnt=_int(_read(self._file("memory", "memory.failcnt"))) or 0,
            oom_kill=oom.get("oom_kill", 0),
            under_oom=bool(oom.get("under_oom", 0)),
            stats=_flat_keyed(_read(self._file("memory", "memory.stat"))),
        )

    def oom_kill_count(self) -> int:
        """How many processes the OOM killer has killed in this cgroup (0 when unknown)."""
        mem = self.memory()
        return mem.oom_kill if mem is not None else 0

    def cpu(self) -> CpuStats | None:
        if self.v2:
            stat = _flat_keyed(_read(self._file("", "cpu.stat")))
            if "usage_usec" not in stat:
                return None
            return CpuStats(
                total_ns=stat["usage_usec"] * 1000,
                percpu_ns=[],
                user_ns=stat.get("user_usec", 0) * 1000,
                system_ns=stat.get("system_usec", 0) * 1000,
                periods=stat.get("nr_periods", 0),
                throttled_periods=stat.get("nr_throttled", 0),
                throttled_ns=stat.get("throttled_usec", 0) * 1000,
            )
        total = _int(_read(self._file("cpuacct", "cpuacct.usage")))
        if total is None:
            return None
        percpu = [int(v) for v in (_read(self._file("cpuacct", "cpuacct.usage_percpu")) or "").split()]
        user = _int(_read(self._file("cpuacct", "cpuacct.usage_user")))
        system = _int(_read(self._file("cpuacct", "cpuacct.usage_sys")))
        if user is None or system is None:
            ticks = _flat_keyed(_read(self._file("cpuacct", "cpuacct.stat")))
            user = ticks.get("user", 0) * 1_000_000_000 // CLOCK_TICKS
            system = ticks.get("system", 0) * 1_000_000_000 // CLOCK_TICKS
        throttle = _flat_keyed(_read(self._file("cpu", "cpu.stat")))
        return CpuStats(
            total_ns=total,
            percpu_ns=percpu,
            user_ns=user,
            system_ns=system,
            periods=throttle.get("nr_periods", 0),
            throttled_periods=throttle.get("nr_throttled", 0),
            throttled_ns=throttle.get("throttled_time", 0),
        )

    def pids(self) -> PidsStats | None:
        controller = "" if self.v2 else "pids"
        current = _int(_read(self._file(controller, "pids.current")))
        if current is None:
            return None
        return PidsStats(current=current, limit=_int(_read(self._file(controller, "pids.max"))))

    def blkio(self) -> BlkioStats:
        if self.v2:
            return _io_v2(_read(self._file("", "io.stat")))
        return BlkioStats(
            service_bytes=_blkio_v1(_read(self._file("blkio", "blkio.throttle.io_service_bytes_recursive"))),
            serviced=_blkio_v1(_read(self._file("blkio", "blkio.throttle.io_serviced_recursive"))),
        )

    def freezer_state(self) -> str | None:
        """`THAWED`, `FREEZING` or `FROZEN` (v2 reports only THAWED / FROZEN); None if gone."""
        if self.v2:
            events = _flat_keyed(_read(self._file("", "cgroup.events")))
            if "frozen" in events:
                return "FROZEN" if events["frozen"] else "THAWED"
            freeze = _int(_read(self._file("", "cgroup.freeze")))
            return None if freeze is None else ("FROZEN" if freeze else "THAWED")
        text = _read(self._file("freezer", "freezer.state"))
        return text.strip() if text is not None else None


def oom_kill_count(cgroup: str, layout: CgroupLayout | None = None) -> int:
    """OOM kills recorded in a container's cgroup (read it before the cgroup is removed)."""
    return CgroupReader(layout or CgroupLayout.detect(), cgroup).oom_kill_count()


def system_cpu_usage_ns(proc_stat: str) -> int:
    """Host CPU time in ns from /proc/stat's `cpu` line, as `system_cpu_usage` in stats."""
    for line in proc_stat.splitlines():
        if line.startswith("cpu "):
            ticks = sum(int(v) for v in line.split()[1:8])
            return ticks * 1_000_000_000 // CLOCK_TICKS
    return 0


def _rmdir_tree(path: Path) -> list[Path]:
    """Remove a cgroup directory and its child cgroups, deepest first; returns what remained."""
    if not path.is_dir():
        return []
    left: list[Path] = []
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            left += _rmdir_tree(child)
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        left.append(path)
    return left


def remove_cgroup(layout: CgroupLayout, cgroup: str) -> list[Path]:
    """rmdir `cgroup` in every hierarchy; returns the directories still there (busy)."""
    if cgroup.strip("/") == "":
        raise InvalidParameter("refusing to remove the root cgroup")
    left: list[Path] = []
    for directory in layout.all_dirs(cgroup):
        left += _rmdir_tree(directory)
    return left


async def remove_cgroup_async(layout: CgroupLayout, cgroup: str, *, timeout_s: float = 5.0) -> list[Path]:
    """`remove_cgroup`, retried until `timeout_s`: the kernel frees a cgroup shortly after its
    last process is reaped. Returns what is still there at the deadline. Cancellation stops
    the retries; nothing is left half-done (each rmdir is atomic)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.005
    while True:
        left = await asyncio.to_thread(remove_cgroup, layout, cgroup)
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


def online_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1
