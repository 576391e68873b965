"""`HostConfig` and `Resources`: the host-side half of a container's configuration, as wire models.

Field names, types and nullability follow the Engine API (v1.41 swagger plus what the CLI 28
sends). The same model is the create request's `HostConfig`, what inspect returns, and (its
`Resources` part) the body of `POST /containers/{id}/update`. Go `omitempty` fields use
`omit_empty` so inspect matches dockerd byte for byte where clients care.

Checks with Docker's messages live in `app/models/validation.py`, not here: parsing accepts
anything shaped right, so a request fails with Docker's wording rather than pydantic's.
"""

from __future__ import annotations

from pydantic import Field

from app.models.wire import WireModel, omit_empty, omit_none

# Docker's defaults for HostConfig.MaskedPaths / ReadonlyPaths (moby oci.DefaultSpec); the daemon
# fills them in at create for unprivileged containers, so inspect shows them.
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
DEFAULT_SHM_SIZE = 64 * 1024 * 1024


class RestartPolicy(WireModel):
    Name: str = ""  # "", "no", "always", "unless-stopped", "on-failure"
    MaximumRetryCount: int = 0


class LogConfig(WireModel):
    Type: str = ""
    Config: dict[str, str] | None = None


class PortBinding(WireModel):
    HostIp: str = ""
    HostPort: str = ""


class WeightDevice(WireModel):
    Path: str = ""
    Weight: int = 0


class ThrottleDevice(WireModel):
    Path: str = ""
    Rate: int = 0


class DeviceMapping(WireModel):
    PathOnHost: str = ""
    PathInContainer: str = ""
    CgroupPermissions: str = ""


class DeviceRequest(WireModel):
    Driver: str = ""
    Count: int = 0
    DeviceIDs: list[str] | None = None
    Capabilities: list[list[str]] | None = None
    Options: dict[str, str] | None = None


class Ulimit(WireModel):
    Name: str = ""
    Soft: int = 0
    Hard: int = 0


class MountDriver(WireModel):
    Name: str = omit_empty("")
    Options: dict[str, str] | None = omit_empty(None)


class BindOptions(WireModel):
    Propagation: str = omit_empty("")
    NonRecursive: bool = omit_empty(False)
    CreateMountpoint: bool = omit_empty(False)
    ReadOnlyNonRecursive: bool = omit_empty(False)
    ReadOnlyForceRecursive: bool = omit_empty(False)


class VolumeOptions(WireModel):
    NoCopy: bool = omit_empty(False)
    Labels: dict[str, str] | None = omit_empty(None)
    Subpath: str = omit_empty("")
    DriverConfig: MountDriver | None = omit_none(None)


class TmpfsOptions(WireModel):
    SizeBytes: int = omit_empty(0)
    Mode: int = omit_empty(0)  # file mode bits, e.g. 0o1777 (sent as decimal)
    Options: list[list[str]] | None = omit_empty(None)


# Aliases: a field named like its type would shadow the type inside the class body.
_BindOptions = BindOptions
_VolumeOptions = VolumeOptions
_TmpfsOptions = TmpfsOptions


class Mount(WireModel):
    """One `--mount` entry (HostConfig.Mounts)."""

    Type: str = omit_empty("")  # "bind", "volume", "tmpfs" (npipe, cluster, image: refused)
    Source: str = omit_empty("")
    Target: str = omit_empty("")
    ReadOnly: bool = omit_empty(False)
    Consistency: str = omit_empty("")
    BindOptions: _BindOptions | None = omit_none(None)
    VolumeOptions: _VolumeOptions | None = omit_none(None)
    TmpfsOptions: _TmpfsOptions | None = omit_none(None)


class Resources(WireModel):
    """The resource limits: embedded in HostConfig, and the body of `docker update`."""

    CpuShares: int = 0
    Memory: int = 0
    NanoCpus: int = 0
    CgroupParent: str = ""
    BlkioWeight: int = 0
    BlkioWeightDevice: list[WeightDevice] | None = None
    BlkioDeviceReadBps: list[ThrottleDevice] | None = None
    BlkioDeviceWriteBps: list[ThrottleDevice] | None = None
    BlkioDeviceReadIOps: list[ThrottleDevice] | None = None
    BlkioDeviceWriteIOps: list[ThrottleDevice] | None = None
    CpuPeriod: int = 0
    CpuQuota: int = 0
    CpuRealtimePeriod: int = 0
    CpuRealtimeRuntime: int = 0
    CpusetCpus: str = ""
    CpusetMems: str = ""
    Devices: list[DeviceMapping] | None = None
    DeviceCgroupRules: list[str] | None = None
    DeviceRequests: list[DeviceRequest] | None = None
    KernelMemory: int = omit_empty(0)
    KernelMemoryTCP: int = omit_empty(0)
    MemoryReservation: int = 0
    MemorySwap: int = 0
    MemorySwappiness: int | None = None
    OomKillDisable: bool | None = None
    PidsLimit: int | None = None
    Ulimits: list[Ulimit] | None = None
    CpuCount: int = 0
    CpuPercent: int = 0
    IOMaximumIOps: int = 0
    IOMaximumBandwidth: int = 0


_LogConfig = LogConfig
_RestartPolicy = RestartPolicy


class HostConfig(Resources):
    """`HostConfig` of the create body and of inspect."""

    Binds: list[str] | None = None
    ContainerIDFile: str = ""
    LogConfig: _LogConfig = Field(default_factory=_LogConfig)
    NetworkMode: str = ""
    PortBindings: dict[str, list[PortBinding] | None] | None = None
    RestartPolicy: _RestartPolicy = Field(default_factory=_RestartPolicy)
    AutoRemove: bool = False
    VolumeDriver: str = ""
    VolumesFrom: list[str] | None = None
    ConsoleSize: list[int] | None = None  # [height, width]
    Annotations: dict[str, str] | None = omit_empty(None)
    Mounts: list[Mount] | None = omit_empty(None)
    CapAdd: list[str] | None = None
    CapDrop: list[str] | None = None
    CgroupnsMode: str = ""
    Dns: list[str] | None = None
    DnsOptions: list[str] | None = None
    DnsSearch: list[str] | None = None
    ExtraHosts: list[str] | None = None
    GroupAdd: list[str] | None = None
    IpcMode: str = ""
    Cgroup: str = ""
    Links: list[str] | None = None
    OomScoreAdj: int = 0
    PidMode: str = ""
    Privileged: bool = False
    PublishAllPorts: bool = False
    ReadonlyRootfs: bool = False
    SecurityOpt: list[str] | None = None
    StorageOpt: dict[str, str] | None = omit_empty(None)
    Tmpfs: dict[str, str] | None = omit_empty(None)
    UTSMode: str = ""
    UsernsMode: str = ""
    ShmSize: int = 0
    Sysctls: dict[str, str] | None = omit_empty(None)
    Runtime: str = omit_empty("")
    Isolation: str = ""
    Init: bool | None = omit_none(None)
    MaskedPaths: list[str] | None = None
    ReadonlyPaths: list[str] | None = None


class ContainerUpdate(Resources):
    """Body of `POST /containers/{id}/update`: resources plus the restart policy."""

    RestartPolicy: _RestartPolicy | None = None


class ContainerUpdateResponse(WireModel):
    Warnings: list[str] = Field(default_factory=list)
