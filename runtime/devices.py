"""Device nodes and device cgroup rules: `--device`, `--device-cgroup-rule`, `--privileged`.

`parse_cgroup_rule` and the defaults are pure. `lookup_devices` and `host_devices` stat the
host's /dev (blocking, but only a handful of `stat` calls): the caller resolves devices before
building the spec and passes the resulting `DeviceNode`s in `SpecInputs`.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.models.hostconfig import DeviceMapping
from runtime.errors import InvalidParameter
from runtime.ocispec import DeviceCgroup


@dataclass(frozen=True, slots=True)
class DeviceNode:
    """A device to create in the container's /dev and to allow in its device cgroup."""

    path: str  # inside the container
    type: str  # "c" or "b"
    major: int
    minor: int
    file_mode: int
    uid: int
    gid: int
    permissions: str = "rwm"


# Docker's default device cgroup (deny all, then the usual character devices; runc creates the
# nodes null zero full random urandom tty itself, /dev/ptmx and /dev/pts come from devpts).
DEFAULT_DEVICE_RULES: tuple[DeviceCgroup, ...] = (
    DeviceCgroup(allow=False, access="rwm"),
    DeviceCgroup(allow=True, type="c", access="m"),  # mknod of any char device
    DeviceCgroup(allow=True, type="b", access="m"),  # mknod of any block device
    DeviceCgroup(allow=True, type="c", major=1, minor=3, access="rwm"),  # /dev/null
    DeviceCgroup(allow=True, type="c", major=1, minor=5, access="rwm"),  # /dev/zero
    DeviceCgroup(allow=True, type="c", major=1, minor=7, access="rwm"),  # /dev/full
    DeviceCgroup(allow=True, type="c", major=1, minor=8, access="rwm"),  # /dev/random
    DeviceCgroup(allow=True, type="c", major=1, minor=9, access="rwm"),  # /dev/urandom
    DeviceCgroup(allow=True, type="c", major=5, minor=0, access="rwm"),  # /dev/tty
    DeviceCgroup(allow=True, type="c", major=5, minor=1, access="rwm"),  # /dev/console
    DeviceCgroup(allow=True, type="c", major=5, minor=2, access="rwm"),  # /dev/ptmx
    DeviceCgroup(allow=True, type="c", major=136, access="rwm"),  # /dev/pts/*
)

_RULE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")
_PERMS = re.compile(r"^[rwm]{1,3}$")


def parse_cgroup_rule(rule: str) -> DeviceCgroup:
    """`"c 1:3 rwm"` → an allow rule; `*` is a wildcard. Raises InvalidParameter like moby."""
    m = _RULE.match(rule.strip())
    if m is None:
        raise InvalidParameter(f"invalid device cgroup format '{rule}'")
    kind, major, minor, access = m.groups()
    return DeviceCgroup(
        allow=True,
        type=kind,
        major=None if major == "*" else int(major),
        minor=None if minor == "*" else int(minor),
        access=access,
    )


def _node(host_path: Path, container_path: str, permissions: str) -> DeviceNode | None:
    st = host_path.stat()
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return DeviceNode(
        path=container_path,
        type=kind,
        major=os.major(st.st_rdev),
        minor=os.minor(st.st_rdev),
        file_mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        permissions=permissions,
    )


def lookup_devices(mappings: Iterable[DeviceMapping]) -> list[DeviceNode]:
    """Stat each `--device` host path (a directory maps every device below it).

    Raises InvalidParameter with Docker's wording when a path is missing or not a device.
    """
    out: list[DeviceNode] = []
    for mapping in mappings:
        host = Path(mapping.PathOnHost)
        inside = mapping.PathInContainer or mapping.PathOnHost
        perms = mapping.CgroupPermissions or "rwm"
        if not _PERMS.match(perms):
            raise InvalidParameter(f"invalid device mode: {perms}")
        try:
            node = _node(host, inside, perms)
            if node is not None:
                out.append(node)
                continue
            if host.is_dir():
                for dirpath, _dirs, files in os.walk(host):
                    for name in sorted(files):
                        sub = Path(dirpath) / name
                        rel = sub.relative_to(host)
                        found = _node(sub, str(Path(inside) / rel), perms)
                        if found is not None:
                            out.append(found)
                continue
        except OSError as exc:
            raise InvalidParameter(
                f"error gathering device information while adding custom device "
                f'"{mapping.PathOnHost}": {exc.strerror or exc}'
            ) from exc
        raise InvalidParameter(
            f'error gathering device information while adding custom device "{mapping.PathOnHost}": '
            "not a device node"
        )
    return out


_PRIVILEGED_SKIP = ("/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/fd", "/dev/.lxc", "/dev/.udev")


def host_devices(dev: Path = Path("/dev")) -> list[DeviceNode]:
    """Every device node of the host, as `--privileged` exposes them (moby `HostDevices`)."""
    out: list[DeviceNode] = []
    for dirpath, dirs, files in os.walk(dev):
        if dirpath.startswith(_PRIVILEGED_SKIP):
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not str(Path(dirpath) / d).startswith(_PRIVILEGED_SKIP)]
        for name in sorted(files):
            path = Path(dirpath) / name
            if path == dev / "console":
                continue  # runc provides the container's own console
            try:
                if path.is_symlink():
                    continue
                node = _node(path, str(path), "rwm")
            except OSError:
                continue
            if node is not None:
                out.append(node)
    return out


def block_device_numbers(paths: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(major, minor) of the block devices named by `--blkio-weight-device` and the
    `--device-*-bps/iops` limits. Raises InvalidParameter with dockerd's wording."""
    out: dict[str, tuple[int, int]] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InvalidParameter(f"stat {path}: {exc.strerror or exc}") from exc
        if not stat.S_ISBLK(st.st_mode):
            raise InvalidParameter(f"{path} is not a block device")
        out[path] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return out
