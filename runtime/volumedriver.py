"""The `local` volume driver: a directory per volume, optionally a mount(2) on first use.

Layout, as dockerd's: `<data-root>/volumes/<name>/_data` holds the data and `meta.json` beside it
holds what `docker volume inspect` shows (created time, labels, driver options), written
atomically (`runtime/store.py`). A volume created with options (`-o type=tmpfs -o device=tmpfs
-o o=size=64m`, `type=none o=bind device=/path`, `type=nfs ...`) is mounted on `_data` when its
first user mounts it and unmounted when its last user goes, like moby's `volume/local`.

Blocking functions (directory creation, mount(2), removal, sizes): async callers use
`asyncio.to_thread`. No index, references or events here: that is `runtime/volumes.py`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import rootfs as mounting
from runtime import store
from runtime.errors import InvalidParameter, SystemError_

DATA_DIR = "_data"
META_FILE = "meta.json"
VALID_OPTS = ("type", "o", "device", "size")
# moby `mandatoryOpts`: an option that needs others beside it.
MANDATORY_OPTS = {"device": ("type",), "type": ("device",), "o": ("device", "type")}

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
PROPAGATION_FLAGS = MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED

# moby/sys/mount `flags`: option → (clear instead of set, flag).
_FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "suid": (True, MS_NOSUID),
    "nosuid": (False, MS_NOSUID),
    "dev": (True, MS_NODEV),
    "nodev": (False, MS_NODEV),
    "exec": (True, MS_NOEXEC),
    "noexec": (False, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS),
    "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC),
    "remount": (False, MS_REMOUNT),
    "mand": (False, MS_MANDLOCK),
    "nomand": (True, MS_MANDLOCK),
    "atime": (True, MS_NOATIME),
    "noatime": (False, MS_NOATIME),
    "diratime": (True, MS_NODIRATIME),
    "nodiratime": (False, MS_NODIRATIME),
    "bind": (False, MS_BIND),
    "rbind": (False, MS_BIND | MS_REC),
    "unbindable": (False, MS_UNBINDABLE),
    "runbindable": (False, MS_UNBINDABLE | MS_REC),
    "private": (False, MS_PRIVATE),
    "rprivate": (False, MS_PRIVATE | MS_REC),
    "shared": (False, MS_SHARED),
    "rshared": (False, MS_SHARED | MS_REC),
    "slave": (False, MS_SLAVE),
    "rslave": (False, MS_SLAVE | MS_REC),
    "relatime": (False, MS_RELATIME),
    "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME),
    "nostrictatime": (True, MS_STRICTATIME),
}


def check_options(opts: dict[str, str]) -> None:
    """moby `validateOpts` (+ `setOpts`' size check): known keys, required companions."""
    for key in opts:
        if key not in VALID_OPTS:
            raise InvalidParameter(f'invalid option: "{key}"')
    for key, required in MANDATORY_OPTS.items():
        if key in opts:
            for other in required:
                if other not in opts:
                    raise InvalidParameter(f'missing required option: "{other}"')
    if "size" in opts:
        # A size is an XFS project quota in dockerd; the data root here has no quota control.
        raise InvalidParameter("quota size requested but no quota support")


def parse_mount_options(options: str) -> tuple[int, str]:
    """moby/sys/mount `parseOptions`: mount(2) flags, and the rest as the data string."""
    flags = 0
    data: list[str] = []
    for option in options.split(","):
        if not option:
            continue
        known = _FLAGS.get(option)
        if known is None:
            data.append(option)
            continue
        clear, flag = known
        if clear:
            flags &= ~flag
        else:
            flags |= flag
    return flags, ",".join(data)


@dataclass(slots=True)
class LocalVolume:
    """One volume of the local driver, as kept in memory and in `meta.json`."""

    name: str
    root: Path  # <volumes>/<name>
    created_at: str  # RFC 3339, seconds, as `docker volume inspect` shows it
    labels: dict[str, str] | None = None
    options: dict[str, str] | None = None
    mounted: bool = False  # an options volume whose mount is active
    users: set[str] = field(default_factory=set)  # mount references (container IDs)

    @property
    def data_path(self) -> Path:
        return self.root / DATA_DIR

    @property
    def needs_mount(self) -> bool:
        opts = self.options or {}
        return bool(opts.get("device") or opts.get("type"))

    def meta(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "Driver": "local",
            "CreatedAt": self.created_at,
            "Labels": self.labels,
            "Options": self.options,
        }

    # --- blocking operations --------------------------------------------------------------------

    def create_blocking(self) -> None:
        """Make `<name>/_data` and `meta.json`; the directory appears whole (tmp + rename)."""
        tmp = self.root.with_name(f"{store.TMP_PREFIX}{self.name}")
        if tmp.exists():
            store.remove_tree(tmp)
        tmp.mkdir(mode=0o701)
        try:
            (tmp / DATA_DIR).mkdir(mode=0o755)
            os.chmod(tmp / DATA_DIR, 0o755)  # no umask
            store.write_json(tmp / META_FILE, self.meta())
            os.rename(tmp, self.root)
        except BaseException:
            store.remove_tree(tmp)
            raise
        store.fsync_dir(self.root.parent)

    def remove_blocking(self) -> None:
        self.unmount_blocking()
        store.remove_tree(self.root)

    def mount_blocking(self) -> None:
        """Mount the volume's device on `_data` (options volumes only; idempotent)."""
        if not self.needs_mount or self.mounted:
            return
        opts = self.options or {}
        device = opts.get("device", "")
        if not device:
            raise SystemError_("missing device in volume options")
        fstype = opts.get("type", "")
        flags, data = parse_mount_options(opts.get("o", ""))
        target = self.data_path
        target.mkdir(exist_ok=True)
        plain = flags & ~(PROPAGATION_FLAGS | MS_REC) | (flags & MS_REC if flags & MS_BIND else 0)
        try:
            mounting.mount(device, target, fstype, plain, data or None)
            if flags & PROPAGATION_FLAGS:
                mounting.mount("", target, "", flags & (PROPAGATION_FLAGS | MS_REC), None)
            if flags & MS_BIND and flags & MS_RDONLY:
                # A bind mount ignores MS_RDONLY on the first call (moby/sys/mount remounts too).
                mounting.mount("", target, "", plain | MS_REMOUNT, None)
        except OSError as exc:
            with contextlib.suppress(OSError):
                mounting.unmount(target)
            raise SystemError_(
                f"error while mounting volume '{target}': failed to mount local volume: "
                f"mount {device}:{target}, flags: {hex(flags)}, data: {data}: {os.strerror(exc.errno or 0)}"
            ) from exc
        self.mounted = True

    def unmount_blocking(self) -> None:
        if not self.needs_mount and not mounting.is_mountpoint(self.data_path):
            return
        try:
            mounting.unmount(self.data_path)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise SystemError_(f"error while unmounting volume path '{self.data_path}': {exc}") from exc
        self.mounted = False


def created_at_now() -> str:
    """dockerd's `CreatedAt`: RFC 3339 in local time, seconds, `Z` for UTC."""
    import datetime as dt

    now = dt.datetime.now().astimezone().replace(microsecond=0)
    text = now.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def load_blocking(volumes_dir: Path) -> list[LocalVolume]:
    """Every volume under `volumes_dir` (a broken `meta.json` is rebuilt from the directory)."""
    out: list[LocalVolume] = []
    if not volumes_dir.is_dir():
        return out
    for entry in sorted(volumes_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            meta = store.read_json(entry / META_FILE)
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (OSError, ValueError):
            meta = {}
        try:
            ctime = os.stat(entry / DATA_DIR).st_ctime
        except OSError:
            ctime = 0.0
        vol = LocalVolume(
            name=entry.name,
            root=entry,
            created_at=str(meta.get("CreatedAt") or _format_time(ctime)),
            labels=_str_map(meta.get("Labels")),
            options=_str_map(meta.get("Options")),
        )
        (entry / DATA_DIR).mkdir(exist_ok=True)
        # An options volume still mounted from before (a crash, or containers that kept
        # running): keep the mount, its users re-register when they start again.
        vol.mounted = vol.needs_mount and mounting.is_mountpoint(vol.data_path)
        out.append(vol)
    return out


def _format_time(ts: float) -> str:
    import datetime as dt

    text = dt.datetime.fromtimestamp(ts).astimezone().replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _str_map(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}


def disk_usage(path: Path) -> int:
    """Bytes used under `path` (blocks, hardlinks once, never following symlinks or mounts)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    try:
        root_dev = os.lstat(path).st_dev
    except OSError:
        return 0
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != root_dev:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512 if st.st_blocks else st.st_size
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    return total
