"""A container's root filesystem and its generated /etc files.

The rootfs is an overlayfs mount: the image's unpacked layers as lower dirs (short symlinks, so
the option string stays small), and a per-container upper/work dir under the data root (the
container's changes survive restarts of the container and of the daemon). It is mounted at start
and unmounted when the container stops. Mounting uses mount(2) directly (no `mount` process).

Also here: the /etc/hostname, /etc/hosts and /etc/resolv.conf files pydock bind-mounts into the
container, written the way dockerd writes them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from runtime import store

MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str, target: Path, fstype: str, flags: int = 0, data: str | None = None) -> None:
    if (
        _libc.mount(
            source.encode(), str(target).encode(), fstype.encode(), flags, data.encode() if data else None
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def unmount(target: Path, *, lazy: bool = False) -> bool:
    """Unmount `target`; False when nothing was mounted there."""
    if _libc.umount2(str(target).encode(), MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return False
        if err == errno.EBUSY and not lazy:
            return unmount(target, lazy=True)
        raise OSError(err, f"umount {target}: {os.strerror(err)}")
    return True


def is_mountpoint(path: Path) -> bool:
    target = str(path)
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == target for line in f)
    except OSError:
        return False


class RootFs:
    """The overlay root of one container: `upper/`+`work/` in the data dir, mounted at `target`."""

    def __init__(self, data_dir: Path, target: Path) -> None:
        self.upper = data_dir / "rw" / "upper"
        self.work = data_dir / "rw" / "work"
        self.empty_lower = data_dir / "rw" / "empty"
        self.target = target

    def create(self) -> None:
        for d in (self.upper, self.work, self.empty_lower):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.upper, 0o755)

    def mount(self, lower_dirs: Sequence[Path]) -> None:
        """Mount the overlay (idempotent: a mounted target is left as it is)."""
        self.target.mkdir(parents=True, exist_ok=True)
        if is_mountpoint(self.target):
            return
        lowers = [str(p) for p in lower_dirs] or [str(self.empty_lower)]  # an image may have no layer
        options = f"lowerdir={':'.join(lowers)},upperdir={self.upper},workdir={self.work}"
        mount("overlay", self.target, "overlay", 0, options)

    def unmount(self) -> None:
        unmount(self.target)
        with contextlib.suppress(OSError):
            self.target.rmdir()


# --- /etc files -------------------------------------------------------------------------------

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def hosts_content(entries: Sequence[tuple[str, str]], extra_hosts: Sequence[str]) -> str:
    """/etc/hosts: Docker's header, `--add-host` entries, then the container's own addresses."""
    lines = [HOSTS_HEADER]
    for item in extra_hosts:
        name, sep, address = item.partition(":")
        if not sep:
            continue
        if address == "host-gateway":
            continue  # resolved by the caller into a concrete address
        lines.append(f"{address}\t{name}\n")
    for address, names in entries:
        lines.append(f"{address}\t{names}\n")
    return "".join(lines)


def host_resolv_conf(path: Path = Path("/etc/resolv.conf")) -> tuple[list[str], list[str], list[str]]:
    """The host's nameservers (loopback ones removed, as dockerd does), search domains, options."""
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    try:
        text = path.read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            with contextlib.suppress(ValueError):
                if not ipaddress.ip_address(words[1].split("%")[0]).is_loopback:
                    nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = words[1:]
        elif words[0] == "options":
            options.extend(words[1:])
    return nameservers, search, options


DEFAULT_NAMESERVERS = ["8.8.8.8", "8.8.4.4"]


def resolv_conf_content(nameservers: Sequence[str], search: Sequence[str], options: Sequence[str]) -> str:
    lines = [f"nameserver {ns}\n" for ns in nameservers]
    if search:
        lines.append("search " + " ".join(search) + "\n")
    if options:
        lines.append("options " + " ".join(options) + "\n")
    return "".join(lines)


def write_file(path: Path, content: str) -> None:
    store.write_atomic(path, content.encode(), durable=False)
