"""`linux.resources` of an OCI spec from Docker's `Resources` (memory, cpu, pids, blkio, devices).

The conversions follow dockerd (moby `getMemoryResources`, `getCPUResources`, `getPidsLimit`,
`WithDevices`, and `toContainerdResources` for `docker update`). Pure: block device numbers
for the blkio limits come in resolved (`block_devices`, path → (major, minor)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.models.hostconfig import Resources as WireResources
from app.models.hostconfig import ThrottleDevice as WireThrottle
from runtime.devices import DEFAULT_DEVICE_RULES, DeviceNode, parse_cgroup_rule
from runtime.errors import InvalidParameter
from runtime.ocispec import BlockIO, Cpu, DeviceCgroup, Memory, Pids, Resources, ThrottleDevice, WeightDevice

CFS_PERIOD_US = 100_000  # 100 ms, the period --cpus uses


def memory(r: WireResources, *, cgroup_v2: bool, swap_limit: bool) -> Memory | None:
    mem = Memory(
        limit=r.Memory if r.Memory > 0 else None,
        reservation=r.MemoryReservation if r.MemoryReservation > 0 else None,
        # -1 (unlimited) and 0 leave swap alone: a fresh cgroup has no swap limit.
        swap=r.MemorySwap if r.MemorySwap > 0 and swap_limit else None,
        swappiness=(
            r.MemorySwappiness
            if r.MemorySwappiness is not None and r.MemorySwappiness >= 0 and not cgroup_v2
            else None
        ),
        kernel=r.KernelMemory if r.KernelMemory and not cgroup_v2 else None,
        kernel_tcp=r.KernelMemoryTCP if r.KernelMemoryTCP and not cgroup_v2 else None,
        disable_oom_killer=True if r.OomKillDisable else None,
    )
    return mem if mem.model_dump(exclude_none=True) else None


def cpu(r: WireResources) -> Cpu | None:
    if r.CpuShares < 0:
        raise InvalidParameter("shares: invalid argument")
    period: int | None = None
    quota: int | None = None
    if r.NanoCpus > 0:
        period = CFS_PERIOD_US
        quota = r.NanoCpus * CFS_PERIOD_US // 1_000_000_000
    if r.CpuPeriod:
        period = r.CpuPeriod
    if r.CpuQuota:
        quota = r.CpuQuota
    c = Cpu(
        shares=r.CpuShares or None,
        quota=quota,
        period=period,
        realtime_runtime=r.CpuRealtimeRuntime or None,
        realtime_period=r.CpuRealtimePeriod or None,
        cpus=r.CpusetCpus or None,
        mems=r.CpusetMems or None,
    )
    return c if c.model_dump(exclude_none=True) else None


def pids(r: WireResources) -> Pids | None:
    if r.PidsLimit is None:
        return None
    # 0 and negative mean "unlimited"; runc needs -1 to lift an existing limit.
    return Pids(limit=r.PidsLimit if r.PidsLimit > 0 else -1)


def _numbers(path: str, block_devices: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    try:
        return block_devices[path]
    except KeyError:
        raise InvalidParameter(f"stat {path}: no such file or directory") from None


def _throttles(
    devs: Sequence[WireThrottle] | None, block_devices: Mapping[str, tuple[int, int]]
) -> list[ThrottleDevice] | None:
    if not devs:
        return None
    out = []
    for d in devs:
        major, minor = _numbers(d.Path, block_devices)
        out.append(ThrottleDevice(major=major, minor=minor, rate=d.Rate))
    return out


def block_io(r: WireResources, block_devices: Mapping[str, tuple[int, int]]) -> BlockIO | None:
    weights = None
    if r.BlkioWeightDevice:
        weights = []
        for w in r.BlkioWeightDevice:
            major, minor = _numbers(w.Path, block_devices)
            weights.append(WeightDevice(major=major, minor=minor, weight=w.Weight))
    b = BlockIO(
        weight=r.BlkioWeight or None,
        weight_device=weights,
        throttle_read_bps_device=_throttles(r.BlkioDeviceReadBps, block_devices),
        throttle_write_bps_device=_throttles(r.BlkioDeviceWriteBps, block_devices),
        throttle_read_iops_device=_throttles(r.BlkioDeviceReadIOps, block_devices),
        throttle_write_iops_device=_throttles(r.BlkioDeviceWriteIOps, block_devices),
    )
    return b if b.model_dump(exclude_none=True) else None


def block_device_paths(r: WireResources) -> list[str]:
    """The host paths whose device numbers `block_io` needs (the caller stats them)."""
    groups = (
        r.BlkioWeightDevice,
        r.BlkioDeviceReadBps,
        r.BlkioDeviceWriteBps,
        r.BlkioDeviceReadIOps,
        r.BlkioDeviceWriteIOps,
    )
    return sorted({d.Path for group in groups for d in group or []})


def device_rules(r: WireResources, devices: Sequence[DeviceNode], *, privileged: bool) -> list[DeviceCgroup]:
    if privileged:
        return [DeviceCgroup(allow=True, access="rwm")]
    rules = list(DEFAULT_DEVICE_RULES)
    rules += [
        DeviceCgroup(allow=True, type=d.type, major=d.major, minor=d.minor, access=d.permissions)
        for d in devices
    ]
    rules += [parse_cgroup_rule(rule) for rule in r.DeviceCgroupRules or []]
    return rules


def build_resources(
    r: WireResources,
    *,
    devices: Sequence[DeviceNode] = (),
    privileged: bool = False,
    block_devices: Mapping[str, tuple[int, int]] | None = None,
    cgroup_v2: bool = False,
    swap_limit: bool = True,
) -> Resources:
    """`linux.resources` for a container being created."""
    if r.DeviceRequests:
        caps = [c for req in r.DeviceRequests for c in req.Capabilities or []]
        driver = r.DeviceRequests[0].Driver
        raise InvalidParameter(f'could not select device driver "{driver}" with capabilities: {caps}')
    return Resources(
        devices=device_rules(r, devices, privileged=privileged),
        memory=memory(r, cgroup_v2=cgroup_v2, swap_limit=swap_limit),
        cpu=cpu(r),
        pids=pids(r),
        block_io=block_io(r, block_devices or {}),
    )


def update_resources(r: WireResources, *, cgroup_v2: bool = False, swap_limit: bool = True) -> Resources:
    """The resources JSON for `runc update` from a `docker update` body (zero = unchanged)."""
    return Resources(
        memory=memory(r, cgroup_v2=cgroup_v2, swap_limit=swap_limit),
        cpu=cpu(r),
        pids=pids(r),
        block_io=BlockIO(weight=r.BlkioWeight) if r.BlkioWeight else None,
    )
