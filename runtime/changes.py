"""`docker diff`: a container's changes, read from its overlay upper dir against the image layers.

Kinds as dockerd's: 0 modified, 1 added, 2 deleted. An overlay whiteout (0/0 character device)
is a deletion; an opaque directory that hides a lower one is reported deleted and its contents
added (moby `overlayDeletedFile`); a directory present below is reported modified only when its
own mode or owner changed, and the parent of anything added or deleted is reported modified
(moby `changes`). What dockerd keeps in its "-init" layer (the mount points of /etc/hosts,
/etc/hostname, /etc/resolv.conf, /proc, /sys, /dev, ...) never shows up, as with dockerd.

Every directory is opened from its parent's fd with `O_NOFOLLOW` (a running container changes its
upper dir while we read it). Blocking: run it in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.layers import OPAQUE_XATTR

MODIFIED, ADDED, DELETED = 0, 1, 2

# dockerd's init layer (daemon/initlayer): these never appear as changes.
INIT_PATHS = frozenset(
    {
        "/dev/pts",
        "/dev/shm",
        "/dev/console",
        "/proc",
        "/sys",
        "/.dockerenv",
        "/etc/resolv.conf",
        "/etc/hosts",
        "/etc/hostname",
        "/etc/mtab",
    }
)
INIT_PARENTS = frozenset({"/dev", "/etc"})  # created for the above when the image lacks them

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MISSING, _HIDDEN = "missing", "hidden"


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def _in_layer(layer_fd: int, parts: Sequence[str]) -> os.stat_result | str:
    """A path in one lower layer: its stat, `_HIDDEN` (a whiteout or opaque dir ends the search)
    or `_MISSING` (look in the layers below)."""
    fds: list[int] = []
    try:
        cur = layer_fd
        opaque = False
        for i, comp in enumerate(parts):
            try:
                st = os.stat(comp, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                return _HIDDEN if opaque else _MISSING
            if _is_whiteout(st):
                return _HIDDEN
            if i == len(parts) - 1:
                return st
            if not stat.S_ISDIR(st.st_mode):
                return _HIDDEN  # a file or symlink here hides any directory below
            cur = os.open(comp, _DIR_FLAGS, dir_fd=cur)
            fds.append(cur)
            opaque = opaque or _is_opaque(cur)
        return _MISSING
    except OSError:
        return _MISSING
    finally:
        for fd in fds:
            os.close(fd)


class _Diff:
    def __init__(self, lower_fds: list[int]) -> None:
        self.lowers = lower_fds
        self.changes: dict[str, int] = {}

    def lower(self, parts: Sequence[str]) -> os.stat_result | None:
        for fd in self.lowers:
            found = _in_layer(fd, parts)
            if found == _HIDDEN:
                return None
            if isinstance(found, os.stat_result):
                return found
        return None

    def record(self, path: str, kind: int) -> None:
        self.changes.setdefault(path, kind)
        if kind in (ADDED, DELETED):
            parent = path.rsplit("/", 1)[0] or "/"
            if parent != "/":
                self.changes.setdefault(parent, MODIFIED)

    def walk(self, dfd: int, parts: tuple[str, ...], hidden_below: bool) -> bool:
        """Record the changes below; True when anything was recorded."""
        recorded = False
        with os.scandir(dfd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            child = (*parts, entry.name)
            path = "/" + "/".join(child)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if path in INIT_PATHS:
                continue
            if _is_whiteout(st):
                if not hidden_below and self.lower(child) is not None:
                    self.record(path, DELETED)
                    recorded = True
                continue
            below = None if hidden_below else self.lower(child)
            if not stat.S_ISDIR(st.st_mode):
                self.record(path, MODIFIED if below is not None else ADDED)
                recorded = True
                continue
            try:
                fd = os.open(entry.name, _DIR_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # replaced while we read
                raise
            try:
                opaque = _is_opaque(fd)
                kind: int | None
                if below is None:
                    kind = ADDED
                elif opaque and stat.S_ISDIR(below.st_mode):
                    kind = DELETED
                elif (
                    not stat.S_ISDIR(below.st_mode)
                    or stat.S_IMODE(below.st_mode) != stat.S_IMODE(st.st_mode)
                    or (below.st_uid, below.st_gid) != (st.st_uid, st.st_gid)
                ):
                    kind = MODIFIED
                else:
                    kind = None
                if kind is not None and not (kind == ADDED and path in INIT_PARENTS):
                    self.record(path, kind)
                    recorded = True
                inner = self.walk(fd, child, hidden_below or opaque or below is None)
                if inner and kind == ADDED and path in INIT_PARENTS:
                    self.changes[path] = ADDED  # its children made it "modified" meanwhile
                recorded = recorded or inner
            finally:
                os.close(fd)
        return recorded


def container_changes(upper: Path, lowers: Sequence[Path]) -> list[dict[str, Any]]:
    """The change list of `GET /containers/{id}/changes`, sorted by path."""
    try:
        upper_fd = os.open(upper, _DIR_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        return []
    lower_fds: list[int] = []
    try:
        for layer in lowers:
            with contextlib.suppress(OSError):
                lower_fds.append(os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        diff = _Diff(lower_fds)
        diff.walk(upper_fd, (), False)
    finally:
        os.close(upper_fd)
        for fd in lower_fds:
            os.close(fd)
    return [{"Path": path, "Kind": kind} for path, kind in sorted(diff.changes.items())]
