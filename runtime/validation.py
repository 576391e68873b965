"""Docker's create-time checks on Config and HostConfig, and the defaults dockerd fills in.

`check_create` raises `InvalidParameter` (HTTP 400) with dockerd's exact wording (moby
`verifyContainerSettings`, `verifyPlatformContainerResources`, `ValidateMountConfig`,
`ValidateRestartPolicy`, ...) and returns the warnings dockerd would put in `Warnings`.
`adapt_host_config` applies dockerd's create-time defaults (MemorySwap = 2 * Memory, ShmSize
64 MiB, IpcMode private, default masked paths, ...), so inspect shows what dockerd shows.

Pure except `check_create`'s optional bind-source existence check (a `stat` per `--mount`).
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from app.models.containers import ContainerConfig, HealthConfig
from app.models.hostconfig import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    DEFAULT_SHM_SIZE,
    HostConfig,
    Mount,
    Resources,
    RestartPolicy,
)
from runtime import caps as capabilities
from runtime.errors import InvalidParameter
from runtime.signals import parse_signal
from runtime.specmounts import PROPAGATIONS, merge_tmpfs_options, tmpfs_data

MIN_MEMORY = 6 * 1024 * 1024  # 6 MiB, dockerd's linuxMinMemory
MIN_DURATION_NS = 1_000_000  # 1 ms, container.MinimumDuration
RESTART_POLICIES = ("", "no", "always", "unless-stopped", "on-failure")


@dataclass(frozen=True, slots=True)
class CreateLimits:
    """Host facts the resource checks need."""

    ncpu: int = 1
    cpus: frozenset[int] | None = None  # online CPUs for --cpuset-cpus; None = don't check
    mems: frozenset[int] | None = None  # memory nodes for --cpuset-mems
    cgroup_v2: bool = False
    swap_limit: bool = True


def check_restart_policy(policy: RestartPolicy) -> None:
    name, count = policy.Name, policy.MaximumRetryCount
    if name in ("always", "unless-stopped", "no"):
        if count < 0:
            raise InvalidParameter(
                "invalid restart policy: maximum retry count can only be used with 'on-failure' "
                "and cannot be negative"
            )
        if count:
            raise InvalidParameter(
                "invalid restart policy: maximum retry count can only be used with 'on-failure'"
            )
    elif name == "on-failure":
        if count < 0:
            raise InvalidParameter("invalid restart policy: maximum retry count cannot be negative")
    elif name != "":
        raise InvalidParameter(
            f"invalid restart policy: unknown policy '{name}'; "
            "use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
        )


def check_healthcheck(health: HealthConfig | None) -> None:
    if health is None:
        return
    for name, value in (("Interval", health.Interval), ("Timeout", health.Timeout)):
        if value and value < MIN_DURATION_NS:
            raise InvalidParameter(f"{name} in Healthcheck cannot be less than 1ms")
    if health.Retries < 0:
        raise InvalidParameter("Retries in Healthcheck cannot be negative")
    for name, value in (("StartPeriod", health.StartPeriod), ("StartInterval", health.StartInterval)):
        if value and value < MIN_DURATION_NS:
            raise InvalidParameter(f"{name} in Healthcheck cannot be less than 1ms")


def check_config(config: ContainerConfig) -> ContainerConfig:
    """Checks on Config; returns it with WorkingDir cleaned as dockerd stores it."""
    if config.WorkingDir:
        if not config.WorkingDir.startswith("/"):
            raise InvalidParameter(
                f"the working directory '{config.WorkingDir}' is invalid, it needs to be an absolute path"
            )
        config = config.model_copy(update={"WorkingDir": posixpath.normpath(config.WorkingDir)})
    if config.StopSignal:
        parse_signal(config.StopSignal)
    for env in config.Env or []:
        if not env.partition("=")[0]:
            raise InvalidParameter(f"invalid environment variable: {env}")
    check_healthcheck(config.Healthcheck)
    return config


def check_port_spec(port: str) -> None:
    """A PortBindings key (`80/tcp`): one port, no range; `invalid port specification: "abc"`."""
    number = port.partition("/")[0]
    if number and (not number.isdigit() or int(number) > 65535):
        raise InvalidParameter(f'invalid port specification: "{number}"')


def check_host_port(host_port: str) -> None:
    """A binding's HostPort: empty (ephemeral), a port, or a range `8000-8010`."""
    number = host_port.partition("/")[0]
    if not number:
        return
    low, sep, high = number.partition("-")
    ok = (
        low.isdigit()
        and int(low) <= 65535
        and (not sep or (high.isdigit() and int(low) <= int(high) <= 65535))
    )
    if not ok:
        raise InvalidParameter(f'invalid port specification: "{host_port}"')


def check_extra_host(entry: str) -> None:
    """`name:ip` or `name=ip` (ip may be `host-gateway`), as `--add-host` takes them."""
    sep = "=" if "=" in entry else ":"
    name, found, ip = entry.partition(sep)
    if not found or not name:
        raise InvalidParameter(f'bad format for add-host: "{entry}"')
    ip = ip.strip("[]")
    if ip == "host-gateway":
        return
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidParameter(f'invalid IP address in add-host: "{ip}"') from None


def _mount_error(m: Mount, detail: str) -> InvalidParameter:
    return InvalidParameter(f'invalid mount config for type "{m.Type}": {detail}')


def check_mount(m: Mount, *, source_exists: Callable[[str], bool] | None = None) -> None:
    """One `--mount` entry (moby `linuxParser.ValidateMountConfig`)."""
    if not m.Target:
        raise _mount_error(m, "field Target must not be empty")
    if posixpath.normpath(m.Target.replace("\\", "/")) == "/":
        raise _mount_error(m, "invalid specification: destination can't be '/'")
    if not m.Target.startswith("/"):
        raise _mount_error(m, f"invalid mount path: '{m.Target}' mount path must be absolute")
    if m.Type == "bind":
        if not m.Source:
            raise _mount_error(m, "field Source must not be empty")
        propagation = m.BindOptions.Propagation if m.BindOptions is not None else ""
        if propagation and propagation not in PROPAGATIONS:
            raise _mount_error(m, f"invalid propagation mode: {propagation}")
        if m.VolumeOptions is not None:
            raise _mount_error(m, "field VolumeOptions must not be specified")
        if not m.Source.startswith("/"):
            raise _mount_error(m, f"invalid mount path: '{m.Source}' mount path must be absolute")
        create = m.BindOptions is not None and m.BindOptions.CreateMountpoint
        if source_exists is not None and not create and not source_exists(m.Source):
            raise _mount_error(m, f"bind source path does not exist: {m.Source}")
    elif m.Type == "volume":
        if m.BindOptions is not None:
            raise _mount_error(m, "field BindOptions must not be specified")
        if not m.Source and m.ReadOnly:
            raise _mount_error(m, "must not set ReadOnly mode when using anonymous volumes")
    elif m.Type == "tmpfs":
        if m.BindOptions is not None:
            raise _mount_error(m, "field BindOptions must not be specified")
        if m.Source:
            raise _mount_error(m, "field Source must not be specified")
        try:
            merge_tmpfs_options(tmpfs_data(m.TmpfsOptions, m.ReadOnly))
        except InvalidParameter as exc:
            raise _mount_error(m, str(exc)) from exc
    else:
        raise _mount_error(m, "mount type unknown")


def check_resources(r: Resources, limits: CreateLimits, *, update: bool = False) -> list[str]:
    """moby `verifyPlatformContainerResources`: errors raise, discarded settings warn."""
    warnings: list[str] = []
    if r.Memory != 0 and r.Memory < MIN_MEMORY:
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    if r.Memory > 0 and r.MemorySwap not in (0, -1) and not limits.swap_limit:
        warnings.append(
            "Your kernel does not support swap limit capabilities or the cgroup is not mounted. "
            "Memory limited without swap."
        )
    if r.Memory > 0 and r.MemorySwap > 0 and r.MemorySwap < r.Memory:
        raise InvalidParameter("Minimum memoryswap limit should be larger than memory limit, see usage")
    if r.Memory == 0 and r.MemorySwap > 0 and not update:
        raise InvalidParameter(
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        )
    swappiness = r.MemorySwappiness
    if swappiness is not None and swappiness != -1:
        if limits.cgroup_v2:
            warnings.append(
                "Your kernel does not support memory swappiness capabilities or the cgroup is not mounted. "
                "Memory swappiness discarded."
            )
        elif swappiness < 0 or swappiness > 100:
            raise InvalidParameter(f"Invalid value: {swappiness}, valid memory swappiness range is 0-100")
    if r.MemoryReservation > 0 and r.MemoryReservation < MIN_MEMORY:
        raise InvalidParameter("Minimum memory reservation allowed is 6MB")
    if r.Memory > 0 and r.MemoryReservation > 0 and r.Memory < r.MemoryReservation:
        raise InvalidParameter(
            "Minimum memory limit can not be less than memory reservation limit, see usage"
        )
    if r.KernelMemory > 0:
        if limits.cgroup_v2:
            warnings.append(
                "Your kernel does not support kernel memory limit capabilities or the cgroup is not mounted. "
                "Limitation discarded."
            )
        elif r.KernelMemory < MIN_MEMORY:
            raise InvalidParameter("Minimum kernel memory limit allowed is 6MB")
    if r.OomKillDisable and r.Memory == 0:
        warnings.append(
            "OOM killer is disabled for the container, but no memory limit is set, "
            "this can result in the system running out of resources."
        )
    if r.NanoCpus > 0 and r.CpuPeriod > 0:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if r.NanoCpus > 0 and r.CpuQuota > 0:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if r.NanoCpus < 0 or r.NanoCpus > limits.ncpu * 1_000_000_000:
        raise InvalidParameter(
            f"Range of CPUs is from 0.01 to {limits.ncpu}.00, as there are only {limits.ncpu} CPUs available"
        )
    if r.CpuPeriod != 0 and (r.CpuPeriod < 1000 or r.CpuPeriod > 1_000_000):
        raise InvalidParameter(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
        )
    if r.CpuQuota > 0 and r.CpuQuota < 1000:
        raise InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if r.CpuPercent > 0:
        warnings.append("linux does not support CPU percent. Percent discarded.")
    _check_cpuset(r.CpusetCpus, limits.cpus, "cpus", "CPUs")
    _check_cpuset(r.CpusetMems, limits.mems, "mems", "memory nodes")
    if r.BlkioWeight > 0 and (r.BlkioWeight < 10 or r.BlkioWeight > 1000):
        raise InvalidParameter("Range of blkio weight is from 10 to 1000")
    if r.IOMaximumBandwidth != 0 or r.IOMaximumIOps != 0:
        raise InvalidParameter(
            "Invalid QoS settings: linux does not support Maximum IO Bandwidth or Maximum IO IOps"
        )
    return warnings


def parse_cpuset(value: str) -> set[int]:
    """`0-2,4` → {0, 1, 2, 4}; ValueError when malformed."""
    out: set[int] = set()
    for part in value.split(","):
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"invalid format: {value}")
        start, end = int(low), int(high) if sep else int(low)
        if end < start:
            raise ValueError(f"invalid range format: {part}")
        out.update(range(start, end + 1))
    return out


def _check_cpuset(value: str, available: frozenset[int] | None, what: str, plural: str) -> None:
    if not value:
        return
    try:
        wanted = parse_cpuset(value)
    except ValueError as exc:
        raise InvalidParameter(f"Invalid value {value} for cpuset {what}: {exc}") from exc
    if available is not None and not wanted <= available:
        shown = ",".join(str(c) for c in sorted(available))
        raise InvalidParameter(
            f"Requested {plural} are not available - requested {value}, available: {shown}"
        )


def _check_mode(value: str, kind: str, extra: Collection[str]) -> None:
    if value in ("", "host", *extra) or (value.startswith("container:") and len(value) > len("container:")):
        return
    raise InvalidParameter(f"invalid {kind} mode: {value}")


def check_host_config(
    hc: HostConfig, limits: CreateLimits, *, source_exists: Callable[[str], bool] | None = None
) -> list[str]:
    """moby `validateHostConfig` + `verifyPlatformContainerSettings`; returns warnings."""
    if hc.AutoRemove and hc.RestartPolicy.Name not in ("", "no"):
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    for m in hc.Mounts or []:
        check_mount(m, source_exists=source_exists)
    for entry in hc.ExtraHosts or []:
        check_extra_host(entry)
    for port, bindings in (hc.PortBindings or {}).items():
        check_port_spec(port)
        for binding in bindings or []:
            check_host_port(binding.HostPort)
    check_restart_policy(hc.RestartPolicy)
    for field_name, value in (("CapAdd", hc.CapAdd), ("CapDrop", hc.CapDrop)):
        try:
            capabilities.normalize(value or ())
        except InvalidParameter as exc:
            raise InvalidParameter(f"invalid {field_name}: {exc}") from exc
    if hc.Isolation not in ("", "default"):
        raise InvalidParameter(f"invalid isolation '{hc.Isolation}' on linux")
    if any(k == "" for k in hc.Annotations or {}):
        raise InvalidParameter("invalid Annotations: the empty string is not permitted as an annotation key")
    warnings = check_resources(hc, limits)
    _check_mode(hc.IpcMode, "IPC", ("private", "shareable", "none"))
    _check_mode(hc.PidMode, "PID", ())
    if hc.ShmSize < 0:
        raise InvalidParameter("SHM size can not be less than 0")
    if hc.UTSMode not in ("", "host"):
        raise InvalidParameter(f"invalid UTS mode: {hc.UTSMode}")
    if hc.OomScoreAdj < -1000 or hc.OomScoreAdj > 1000:
        raise InvalidParameter(f"Invalid value {hc.OomScoreAdj}, range for oom score adj is [-1000, 1000]")
    if hc.NetworkMode == "host" and hc.PortBindings:
        warnings.append("Published ports are discarded when using host network mode")
    for dest in hc.Tmpfs or {}:
        if posixpath.normpath(dest) == "/":
            raise InvalidParameter("invalid specification: destination can't be '/'")
        if not dest.startswith("/"):
            raise InvalidParameter(f"invalid mount path: '{dest}' mount path must be absolute")
    if hc.CgroupnsMode not in ("", "host", "private"):
        raise InvalidParameter(f"invalid cgroup namespace mode: {hc.CgroupnsMode}")
    return warnings


def check_create(
    config: ContainerConfig,
    hc: HostConfig,
    limits: CreateLimits,
    *,
    check_bind_sources: bool = True,
) -> tuple[ContainerConfig, list[str]]:
    """All create-time checks; returns the cleaned Config and dockerd's warnings."""
    config = check_config(config)
    exists = (lambda p: Path(p).exists()) if check_bind_sources else None
    return config, check_host_config(hc, limits, source_exists=exists)


def adapt_host_config(
    hc: HostConfig, *, cgroup_v2: bool = False, default_runtime: str = "runc"
) -> HostConfig:
    """dockerd's create-time defaults (moby `adaptContainerSettings` and friends)."""
    out = hc.model_copy(deep=True)
    if out.Memory > 0 and out.MemorySwap == 0:
        out.MemorySwap = out.Memory * 2
    if out.MemorySwappiness == -1:
        out.MemorySwappiness = None
    if out.ShmSize == 0:
        out.ShmSize = DEFAULT_SHM_SIZE
    if not out.IpcMode:
        out.IpcMode = "private"
    if not out.CgroupnsMode:
        out.CgroupnsMode = "private" if cgroup_v2 else "host"
    if out.OomKillDisable is None:
        out.OomKillDisable = False
    if out.PidsLimit is not None and out.PidsLimit <= 0:
        out.PidsLimit = None
    if not out.NetworkMode:
        out.NetworkMode = "default"
    if not out.Runtime:
        out.Runtime = default_runtime
    if out.MaskedPaths is None and not out.Privileged:
        out.MaskedPaths = list(DEFAULT_MASKED_PATHS)
    if out.ReadonlyPaths is None and not out.Privileged:
        out.ReadonlyPaths = list(DEFAULT_READONLY_PATHS)
    return out
