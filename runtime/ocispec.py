"""The OCI runtime spec (`config.json`, runtime-spec 1.0.2) as typed models.

Only the parts pydock writes or reads: process, root, mounts, hooks-free linux section
(namespaces, devices, resources, seccomp, sysctl, masked/readonly paths). Python names are
snake_case; `to_json()` writes the spec's camelCase keys and leaves unset (None) fields out, as
runc's own `runc spec` output does. The exceptions to plain camelCase (`disableOOMKiller`,
`kernelTCP`, `...IOPSDevice`) carry explicit aliases.

Types only: building a spec from a container's configuration is `runtime/spec.py`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

OCI_VERSION = "1.0.2"


class OciModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class User(OciModel):
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list[int] | None = None


class Box(OciModel):
    height: int
    width: int


class Capabilities(OciModel):
    bounding: list[str] | None = None
    effective: list[str] | None = None
    inheritable: list[str] | None = None
    permitted: list[str] | None = None
    ambient: list[str] | None = None


class Rlimit(OciModel):
    type: str
    hard: int
    soft: int


class Process(OciModel):
    terminal: bool = False
    console_size: Box | None = None
    user: User = Field(default_factory=User)
    args: list[str] = Field(default_factory=list)
    env: list[str] = Field(default_factory=list)
    cwd: str = "/"
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] | None = None
    no_new_privileges: bool | None = None
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    selinux_label: str | None = None


class Root(OciModel):
    path: str
    readonly: bool = False


class Mount(OciModel):
    destination: str
    type: str | None = None
    source: str | None = None
    options: list[str] | None = None


class Namespace(OciModel):
    type: str  # pid network mount ipc uts user cgroup
    path: str | None = None


class Device(OciModel):
    type: str  # c b u p
    path: str
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class DeviceCgroup(OciModel):
    allow: bool
    type: str | None = None  # a c b; None = all
    major: int | None = None  # None = wildcard
    minor: int | None = None
    access: str | None = None


class Memory(OciModel):
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = Field(default=None, alias="kernelTCP")
    swappiness: int | None = None
    disable_oom_killer: bool | None = Field(default=None, alias="disableOOMKiller")
    use_hierarchy: bool | None = None


class Cpu(OciModel):
    shares: int | None = None
    quota: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None


class Pids(OciModel):
    limit: int


class WeightDevice(OciModel):
    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None


class ThrottleDevice(OciModel):
    major: int
    minor: int
    rate: int


class BlockIO(OciModel):
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: list[WeightDevice] | None = None
    throttle_read_bps_device: list[ThrottleDevice] | None = None
    throttle_write_bps_device: list[ThrottleDevice] | None = None
    throttle_read_iops_device: list[ThrottleDevice] | None = Field(
        default=None, alias="throttleReadIOPSDevice"
    )
    throttle_write_iops_device: list[ThrottleDevice] | None = Field(
        default=None, alias="throttleWriteIOPSDevice"
    )


class Resources(OciModel):
    devices: list[DeviceCgroup] | None = None
    memory: Memory | None = None
    cpu: Cpu | None = None
    pids: Pids | None = None
    block_io: BlockIO | None = Field(default=None, alias="blockIO")
    unified: dict[str, str] | None = None


class SeccompArg(OciModel):
    index: int
    value: int
    value_two: int | None = None
    op: str


class SeccompSyscall(OciModel):
    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[SeccompArg] | None = None


class Seccomp(OciModel):
    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] | None = None
    flags: list[str] | None = None
    syscalls: list[SeccompSyscall] | None = None


class Linux(OciModel):
    namespaces: list[Namespace] = Field(default_factory=list)
    devices: list[Device] | None = None
    cgroups_path: str | None = None
    resources: Resources | None = None
    rootfs_propagation: str | None = None
    seccomp: Seccomp | None = None
    sysctl: dict[str, str] | None = None
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    mount_label: str | None = None


class Spec(OciModel):
    oci_version: str = OCI_VERSION
    process: Process = Field(default_factory=Process)
    root: Root
    hostname: str | None = None
    mounts: list[Mount] = Field(default_factory=list)
    annotations: dict[str, str] | None = None
    linux: Linux = Field(default_factory=Linux)


class State(OciModel):
    """`runc state` output."""

    oci_version: str = ""
    id: str
    status: str  # creating created running paused stopped
    pid: int = 0
    bundle: str = ""
    rootfs: str = ""
    created: str = ""
    owner: str = ""
    annotations: dict[str, str] | None = None
