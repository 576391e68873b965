"""The mount list of an OCI spec, as dockerd builds it (moby `WithMounts` + `oci.DefaultSpec`).

Default mounts come first (/proc, /dev, /dev/pts, /sys, /sys/fs/cgroup, /dev/mqueue, /dev/shm),
minus any a user mount replaces; then the container's own mounts sorted by path depth (so a
parent is mounted before its children): binds and volumes (already resolved to host paths by
the caller), tmpfs mounts from `HostConfig.Tmpfs` and `--mount type=tmpfs`, /etc/resolv.conf,
/etc/hostname, /etc/hosts, a shared /dev/shm, and `/sbin/docker-init`. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.models.hostconfig import DEFAULT_SHM_SIZE, HostConfig, TmpfsOptions
from runtime.errors import InvalidParameter
from runtime.ocispec import Mount

INIT_PATH_IN_CONTAINER = "/sbin/docker-init"
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")

# Flags of mount(8) that tmpfs options may carry; a later one of a pair overrides an earlier one.
_FLAG_KEYS: dict[str, str] = {}
for _a, _b in (
    ("ro", "rw"),
    ("suid", "nosuid"),
    ("dev", "nodev"),
    ("exec", "noexec"),
    ("sync", "async"),
    ("mand", "nomand"),
    ("atime", "noatime"),
    ("diratime", "nodiratime"),
    ("relatime", "norelatime"),
    ("strictatime", "nostrictatime"),
):
    _FLAG_KEYS[_a] = _FLAG_KEYS[_b] = _a
for _single in ("dirsync", "remount", "bind", "rbind"):
    _FLAG_KEYS[_single] = _single
for _prop in (*PROPAGATIONS, "unbindable", "runbindable"):
    _FLAG_KEYS[_prop] = "propagation"
_TMPFS_DATA = {"size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"}


@dataclass(frozen=True, slots=True)
class BindMount:
    """A bind or volume mount, already resolved to a host path by the caller."""

    destination: str
    source: str
    readonly: bool = False
    propagation: str = ""  # "" means Docker's default, rprivate
    non_recursive: bool = False


def merge_tmpfs_options(options: Iterable[str]) -> list[str]:
    """Deduplicate tmpfs options, the last one winning (moby `mount.MergeTmpfsOptions`)."""
    seen: set[str] = set()
    out: list[str] = []
    for option in reversed(list(options)):
        if option in ("defaults", ""):
            continue
        key = _FLAG_KEYS.get(option)
        if key is None:
            name, sep, _ = option.partition("=")
            if not sep or name not in _TMPFS_DATA:
                raise InvalidParameter(f'Invalid tmpfs option ["{option}"]')
            key = "=" + name
        if key in seen:
            continue
        seen.add(key)
        out.insert(0, option)
    return out


def tmpfs_data(opts: TmpfsOptions | None, readonly: bool) -> list[str]:
    """`--mount type=tmpfs` options as mount data (moby `ConvertTmpfsOptions`)."""
    out = ["ro"] if readonly else []
    if opts is not None and opts.Mode:
        out.append(f"mode={opts.Mode:o}")
    if opts is not None and opts.SizeBytes:
        size, suffix = opts.SizeBytes, ""
        for unit, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % divisor == 0:
                size, suffix = size // divisor, unit
                break
        out.append(f"size={size}{suffix}")
    for pair in opts.Options if opts is not None and opts.Options else []:
        out.append("=".join(pair) if len(pair) > 1 else pair[0])
    return out


def _tmpfs(destination: str, data: Sequence[str]) -> Mount:
    options = merge_tmpfs_options(["noexec", "nosuid", "nodev", "rprivate", *data])
    return Mount(destination=destination, type="tmpfs", source="tmpfs", options=options)


def _bind(m: BindMount) -> Mount:
    options = ["bind" if m.non_recursive else "rbind"]
    if m.readonly:
        options.append("ro")
    if m.propagation and m.propagation not in PROPAGATIONS:
        raise InvalidParameter(f"invalid propagation mode: {m.propagation}")
    options.append(m.propagation or "rprivate")
    return Mount(destination=m.destination, type="bind", source=m.source, options=options)


def default_mounts(shm_size: int, *, privileged: bool) -> list[Mount]:
    shm = shm_size or DEFAULT_SHM_SIZE
    ro = [] if privileged else ["ro"]
    return [
        Mount(destination="/proc", type="proc", source="proc", options=["nosuid", "noexec", "nodev"]),
        Mount(
            destination="/dev",
            type="tmpfs",
            source="tmpfs",
            options=["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        Mount(
            destination="/dev/pts",
            type="devpts",
            source="devpts",
            options=["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        Mount(destination="/sys", type="sysfs", source="sysfs", options=["nosuid", "noexec", "nodev", *ro]),
        Mount(
            destination="/sys/fs/cgroup",
            type="cgroup",
            source="cgroup",
            options=["nosuid", "noexec", "nodev", "relatime", *ro],
        ),
        Mount(
            destination="/dev/mqueue", type="mqueue", source="mqueue", options=["nosuid", "noexec", "nodev"]
        ),
        Mount(
            destination="/dev/shm",
            type="tmpfs",
            source="shm",
            options=["nosuid", "noexec", "nodev", "mode=1777", f"size={shm}"],
        ),
    ]


def _depth(mount: Mount) -> int:
    return len([p for p in mount.destination.split("/") if p])


@dataclass(frozen=True, slots=True)
class MountPlan:
    """What `build_mounts` needs beyond the HostConfig."""

    binds: Sequence[BindMount] = ()
    resolv_conf_path: Path | None = None
    hostname_path: Path | None = None
    hosts_path: Path | None = None
    shm_path: Path | None = None  # bound at /dev/shm instead of a private tmpfs
    init_path: Path | None = None


def build_mounts(hc: HostConfig, plan: MountPlan) -> tuple[list[Mount], str | None]:
    """The spec's `mounts` and the `rootfsPropagation` they need (None: runc's default)."""
    user: list[Mount] = [_bind(b) for b in plan.binds]
    for destination, data in sorted((hc.Tmpfs or {}).items()):
        user.append(_tmpfs(destination, [o for o in data.split(",") if o]))
    for wire in hc.Mounts or []:
        if wire.Type == "tmpfs":
            user.append(_tmpfs(wire.Target, tmpfs_data(wire.TmpfsOptions, wire.ReadOnly)))
    taken = {m.destination for m in user}
    net_files = (
        ("/etc/resolv.conf", plan.resolv_conf_path),
        ("/etc/hostname", plan.hostname_path),
        ("/etc/hosts", plan.hosts_path),
    )
    for destination, source in net_files:
        if source is not None and destination not in taken:
            options = ["rbind", "ro", "rprivate"] if hc.ReadonlyRootfs else ["rbind", "rprivate"]
            user.append(Mount(destination=destination, type="bind", source=str(source), options=options))
    ipc = hc.IpcMode
    if "/dev/shm" not in taken:
        if ipc == "host":
            user.append(
                Mount(destination="/dev/shm", type="bind", source="/dev/shm", options=["rbind", "rprivate"])
            )
        elif plan.shm_path is not None:
            user.append(
                Mount(
                    destination="/dev/shm",
                    type="bind",
                    source=str(plan.shm_path),
                    options=["rbind", "rprivate"],
                )
            )
    if plan.init_path is not None:
        user.append(
            Mount(
                destination=INIT_PATH_IN_CONTAINER,
                type="bind",
                source=str(plan.init_path),
                options=["bind", "ro"],
            )
        )
    user.sort(key=_depth)  # stable: equal depths keep their order

    destinations = {m.destination for m in user}
    mount_dev = "/dev" in destinations
    defaults: list[Mount] = []
    for m in default_mounts(hc.ShmSize, privileged=hc.Privileged):
        if m.destination in destinations or (mount_dev and m.destination.startswith("/dev/")):
            continue
        if m.destination == "/dev/shm" and (ipc in ("none", "host") or plan.shm_path is not None):
            continue
        if hc.ReadonlyRootfs and m.destination not in (
            "/proc",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/dev",
        ):
            options = m.options or []
            if "ro" not in options:
                m = m.model_copy(update={"options": [*options, "ro"]})
        defaults.append(m)

    propagation: str | None = None
    for b in plan.binds:
        if b.propagation in ("shared", "rshared"):
            propagation = "shared"
        elif b.propagation in ("slave", "rslave") and propagation is None:
            propagation = "rslave"
    return defaults + user, propagation
