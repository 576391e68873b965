"""`docker stats`: samples of a container's cgroup and network, in dockerd's JSON shape.

A `Sample` is read synchronously (small pseudo-files: the container's cgroup through
`CgroupReader`, /proc/stat for `system_cpu_usage`, /proc/<pid>/net/dev for the interfaces of the
container's network namespace; run it in a thread). `stats_body` turns a sample and the previous
one into moby's `StatsJSON` (api/types/stats.go, Go `omitempty` rules included: an unset memory
field vanishes, a nil list is `null`), with cgroup v1 and v2 flavours: v1 has `percpu_usage`,
`max_usage`, `failcnt` and the `total_*` memory keys; v2 has memory.stat's own keys.

How the CLI reads it (docker/cli stats_helpers.go): CPU % from the deltas of
`cpu_usage.total_usage` and `system_cpu_usage` times `online_cpus`; memory as `usage` minus
`total_inactive_file` (v1) or `inactive_file` (v2) over `limit`; net I/O from `networks`; block
I/O from `io_service_bytes_recursive` by `op`; PIDs from `pids_stats.current`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.cgroups import (
    BlkioEntry,
    BlkioStats,
    CgroupLayout,
    CgroupMode,
    CgroupReader,
    CpuStats,
    MemoryStats,
    PidsStats,
    online_cpus,
    system_cpu_usage_ns,
)
from runtime.launch import cgroups_path
from runtime.records import ZERO_TIME, now_rfc3339

if TYPE_CHECKING:
    from runtime.supervisor import Supervisor

PRIME_INTERVAL_S = 1.0  # dockerd 20.10 answers `stream=0` after about a second (two samples)
STREAM_INTERVAL_S = 1.0

NET_FIELDS = (
    "rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "tx_bytes", "tx_packets", "tx_errors", "tx_dropped",
)  # fmt: skip
_BLKIO_KEYS = (
    "io_service_bytes_recursive", "io_serviced_recursive", "io_queue_recursive",
    "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
    "io_time_recursive", "sectors_recursive",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sample:
    read: str
    v2: bool
    cpu: CpuStats | None
    system_cpu_ns: int
    online_cpus: int
    memory: MemoryStats | None
    pids: PidsStats | None
    blkio: BlkioStats
    networks: dict[str, dict[str, int]] | None = field(default=None)


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/<pid>/net/dev → {interface: {rx_bytes, ...}}, without `lo` (dockerd lists only the
    interfaces it made)."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        name = name.strip()
        values = rest.split()
        if not sep or name == "lo" or len(values) < 16:
            continue
        try:
            nums = [int(v) for v in values]
        except ValueError:
            continue
        rx_bytes, rx_packets, rx_errs, rx_drop = nums[0:4]
        tx_bytes, tx_packets, tx_errs, tx_drop = nums[8:12]
        out[name] = dict(
            zip(
                NET_FIELDS,
                (rx_bytes, rx_packets, rx_errs, rx_drop, tx_bytes, tx_packets, tx_errs, tx_drop),
                strict=True,
            )
        )
    return out


def _netns_inode(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def read_networks(pid: int) -> dict[str, dict[str, int]] | None:
    """The interfaces of `pid`'s network namespace; None for the host's own namespace (no
    interfaces of the container's) or when the process is gone."""
    if pid <= 0:
        return None
    inode = _netns_inode(pid)
    if inode is None or inode == _netns_inode("self"):
        return None
    try:
        text = Path(f"/proc/{pid}/net/dev").read_text()
    except OSError:
        return None
    return parse_net_dev(text) or None


def take_sample(layout: CgroupLayout, cgroup: str, pid: int) -> Sample:
    """Read one sample (blocking: a few dozen small reads; call through a thread)."""
    reader = CgroupReader(layout, cgroup)
    try:
        proc_stat = Path("/proc/stat").read_text()
    except OSError:
        proc_stat = ""
    return Sample(
        read=now_rfc3339(),
        v2=layout.mode is CgroupMode.V2,
        cpu=reader.cpu(),
        system_cpu_ns=system_cpu_usage_ns(proc_stat),
        online_cpus=online_cpus(),
        memory=reader.memory(),
        pids=reader.pids(),
        blkio=reader.blkio(),
        networks=read_networks(pid),
    )


def _cpu_body(sample: Sample | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}
    throttling = {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
    body: dict[str, Any] = {"cpu_usage": usage}
    if sample is not None and sample.cpu is not None:
        cpu = sample.cpu
        usage = {"total_usage": cpu.total_ns}  # in moby's field order
        if cpu.percpu_ns:
            usage["percpu_usage"] = list(cpu.percpu_ns)
        usage["usage_in_kernelmode"] = cpu.system_ns
        usage["usage_in_usermode"] = cpu.user_ns
        body["cpu_usage"] = usage
        throttling = {
            "periods": cpu.periods,
            "throttled_periods": cpu.throttled_periods,
            "throttled_time": cpu.throttled_ns,
        }
        if sample.system_cpu_ns:
            body["system_cpu_usage"] = sample.system_cpu_ns
        if sample.online_cpus:
            body["online_cpus"] = sample.online_cpus
    body["throttling_data"] = throttling
    return body


def _blkio_entries(entries: list[BlkioEntry]) -> list[dict[str, Any]] | None:
    if not entries:
        return None
    return [{"major": e.major, "minor": e.minor, "op": e.op, "value": e.value} for e in entries]


def _memory_body(memory: MemoryStats | None, *, v2: bool, machine_memory: int) -> dict[str, Any]:
    if memory is None:
        return {}
    body: dict[str, Any] = {}
    if memory.usage:
        body["usage"] = memory.usage
    if memory.max_usage and not v2:
        body["max_usage"] = memory.max_usage
    if memory.stats:
        body["stats"] = dict(memory.stats)
    if memory.failcnt and not v2:
        body["failcnt"] = memory.failcnt
    limit = memory.limit if memory.limit is not None else machine_memory
    if machine_memory and limit > machine_memory:
        limit = machine_memory  # unlimited: dockerd shows the host's memory
    if limit:
        body["limit"] = limit
    return body


def stats_body(
    sample: Sample | None,
    previous: Sample | None,
    *,
    name: str,
    cid: str,
    machine_memory: int,
) -> dict[str, Any]:
    """moby's StatsJSON for one sample; `sample=None` is the all-zero answer for a container that
    is not running (dockerd sends it with only `name` and `id`)."""
    pids: dict[str, Any] = {}
    blkio: dict[str, Any] = {key: None for key in _BLKIO_KEYS}
    memory: dict[str, Any] = {}
    if sample is not None:
        if sample.pids is not None:
            if sample.pids.current:
                pids["current"] = sample.pids.current
            if sample.pids.limit:
                pids["limit"] = sample.pids.limit
        blkio["io_service_bytes_recursive"] = _blkio_entries(sample.blkio.service_bytes)
        blkio["io_serviced_recursive"] = _blkio_entries(sample.blkio.serviced)
        memory = _memory_body(sample.memory, v2=sample.v2, machine_memory=machine_memory)
    body: dict[str, Any] = {
        "read": sample.read if sample is not None else ZERO_TIME,
        "preread": previous.read if previous is not None else ZERO_TIME,
        "pids_stats": pids,
        "blkio_stats": blkio,
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu_body(sample),
        "precpu_stats": _cpu_body(previous),
        "memory_stats": memory,
        "name": "/" + name,
        "id": cid,
    }
    if sample is not None and sample.networks:
        body["networks"] = {k: dict(v) for k, v in sample.networks.items()}
    return body


def machine_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemTotal in bytes (what dockerd reports as the limit of an unlimited container)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


_MACHINE_MEMORY: list[int] = []


def cached_machine_memory() -> int:
    if not _MACHINE_MEMORY:
        _MACHINE_MEMORY.append(machine_memory())
    return _MACHINE_MEMORY[0]


async def collect(
    sup: Supervisor,
    layout: CgroupLayout,
    *,
    stream: bool,
    one_shot: bool = False,
    exists: Callable[[], bool] = lambda: True,
    prime_s: float = PRIME_INTERVAL_S,
    interval_s: float = STREAM_INTERVAL_S,
) -> AsyncIterator[dict[str, Any]]:
    """The bodies of `GET /containers/{id}/stats`, as dockerd sends them:

    - `stream=0`: one body. A running container is sampled twice `prime_s` apart so that
      `precpu_stats` is filled (the CLI computes CPU % from the difference); `one-shot=1` skips
      the second sample. A stopped container gives the all-zero body at once.
    - `stream=1`: a body every `interval_s`, the first with zero `precpu_stats`; zeros while the
      container is not running; the stream ends when the container is removed.
    """
    c = sup.container
    memory = cached_machine_memory()

    async def sample() -> Sample | None:
        if not c.state.running or c.state.pid <= 0:
            return None
        return await asyncio.to_thread(take_sample, layout, cgroups_path(c), c.state.pid)

    def body(current: Sample | None, previous: Sample | None) -> dict[str, Any]:
        return stats_body(current, previous, name=c.name, cid=c.cid, machine_memory=memory)

    if not stream:
        first = await sample()
        if first is None or one_shot:
            yield body(first, None)
            return
        await asyncio.sleep(prime_s)
        second = await sample()
        yield body(second, first if second is not None else None)
        return
    previous: Sample | None = None
    while exists():
        current = await sample()
        yield body(current, previous)
        previous = current
        await asyncio.sleep(interval_s)
