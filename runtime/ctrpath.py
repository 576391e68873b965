"""A container's filesystem as the container sees it: its root plus its volume and bind mounts.

`ContainerTree` describes it (the mounted rootfs on the host, the mount table); `Walker` resolves
container paths inside it one component at a time from directory fds, the way
`openat2(RESOLVE_IN_ROOT)` would, and steps onto a mount's source where the container would see
that mount. Symlinks are read, never followed by the kernel: an absolute target restarts at the
container's root, `..` stops at it, every open carries `O_NOFOLLOW`, so neither a symlink in the
image nor one swapped in by a running container while we walk can lead outside the container.

Blocking (file system calls): run it in a thread. Used by `cparchive.py` (stat, tar out, export)
and `cpextract.py` (tar in).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_SYMLINKS = 40
O_DIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class FsMount:
    """A volume or bind mount: where the container sees it, and the host path behind it."""

    destination: tuple[str, ...]  # container path components
    source: str  # host path (a daemon-owned volume dir, or the bind source the user chose)
    writable: bool
    kind: str = "volume"  # "volume" or "bind"


@dataclass(frozen=True, slots=True)
class ContainerTree:
    root: Path  # the container's rootfs, mounted on the host
    mounts: tuple[FsMount, ...] = ()
    root_writable: bool = True

    def mount_at(self, parts: tuple[str, ...]) -> FsMount | None:
        found = None
        for m in self.mounts:
            if m.destination == parts:
                found = m  # the last one wins, as a later mount hides an earlier one
        return found

    def child_mounts(self, parts: tuple[str, ...]) -> list[str]:
        """Names of mount destinations directly below `parts` (they exist as the container sees it)."""
        return sorted(
            {m.destination[-1] for m in self.mounts if m.destination[:-1] == parts and m.destination}
        )


def split_path(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def container_path(parts: Sequence[str]) -> str:
    return "/" + "/".join(parts)


@dataclass(slots=True)
class Frame:
    """An open directory of the tree: its fd (O_PATH), container path, and writability."""

    fd: int
    parts: tuple[str, ...]
    writable: bool
    mount: FsMount | None = None  # the mount this directory lies in (None: the rootfs)


@dataclass(slots=True)
class Resolved:
    """Where a path ended: the directory holding the last component, and that component.

    `name` is None when the path named a directory frame itself (the root, or a path ending in
    `..`); `st` is the last component's lstat (or the mount source's stat), None if it is missing.
    """

    parent: Frame
    name: str | None
    st: os.stat_result | None
    mount: FsMount | None = None  # the last component is this mount's destination

    @property
    def parts(self) -> tuple[str, ...]:
        return self.parent.parts + ((self.name,) if self.name is not None else ())

    @property
    def exists(self) -> bool:
        return self.st is not None

    @property
    def writable(self) -> bool:
        return self.mount.writable if self.mount is not None else self.parent.writable


class Walker:
    """Resolves container paths in a `ContainerTree`; owns the fds it opens (close it)."""

    def __init__(self, tree: ContainerTree) -> None:
        self.tree = tree
        self._owned: list[int] = []
        root_fd = os.open(tree.root, O_DIR_PATH)
        self._owned.append(root_fd)
        self.root = Frame(root_fd, (), tree.root_writable)

    def close(self) -> None:
        for fd in self._owned:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._owned.clear()

    def __del__(self) -> None:
        self.close()  # a tar stream that was never started still gives its fds back

    def __enter__(self) -> Walker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _keep(self, fd: int) -> int:
        self._owned.append(fd)
        if len(self._owned) > 4096:
            raise OSError(errno.EMFILE, "too many directories open while walking")
        return fd

    # --- one step -------------------------------------------------------------------------------

    def lstat_child(self, frame: Frame, name: str) -> tuple[os.stat_result, FsMount | None]:
        """lstat of `name` in `frame`, or the stat of the mount source mounted there."""
        mount = self.tree.mount_at((*frame.parts, name))
        if mount is not None:
            return os.stat(mount.source), mount
        return os.stat(name, dir_fd=frame.fd, follow_symlinks=False), None

    def open_child_dir(self, frame: Frame, name: str) -> Frame:
        """The directory `name` of `frame` (a mount's source where one is mounted); never a symlink."""
        parts = (*frame.parts, name)
        mount = self.tree.mount_at(parts)
        if mount is not None:
            fd = self._keep(os.open(mount.source, O_DIR_PATH))
            return Frame(fd, parts, mount.writable, mount)
        fd = self._keep(os.open(name, O_DIR_PATH | os.O_NOFOLLOW, dir_fd=frame.fd))
        return Frame(fd, parts, frame.writable, frame.mount)

    def list_dir(self, frame: Frame) -> list[str]:
        """Entries of a directory as the container sees them (mount points included)."""
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=frame.fd)
        try:
            names = set(os.listdir(fd))
        finally:
            os.close(fd)
        names.update(self.tree.child_mounts(frame.parts))
        return sorted(names)

    # --- whole paths ----------------------------------------------------------------------------

    def resolve(self, path: str, *, follow_last: bool, start: Frame | None = None) -> Resolved:
        """Resolve `path` (absolute in the container, or relative to `start`).

        A missing last component is not an error (`Resolved.st` is None); a missing directory
        on the way raises FileNotFoundError, a file on the way NotADirectoryError, a symlink
        loop OSError(ELOOP).
        """
        stack: list[Frame] = [self.root] if start is None else self._stack_to(start)
        todo = split_path(path)
        links = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            cur = stack[-1]
            last = not todo
            try:
                st, mount = self.lstat_child(cur, part)
            except FileNotFoundError:
                if last:
                    return Resolved(cur, part, None)
                raise
            if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(part, dir_fd=cur.fd)
                if target.startswith("/"):
                    del stack[1:]
                todo = split_path(target) + todo
                continue
            if last:
                return Resolved(cur, part, st, mount)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            stack.append(self.open_child_dir(cur, part))
        top = stack[-1]
        return Resolved(top, None, os.stat(".", dir_fd=top.fd))

    def _stack_to(self, frame: Frame) -> list[Frame]:
        """Frames from the root down to `frame` (so `..` from a start frame works)."""
        stack = [self.root]
        for part in frame.parts:
            stack.append(self.open_child_dir(stack[-1], part))
        return stack

    def open_dir(self, resolved: Resolved) -> Frame:
        """The directory a resolution ended on, as a frame."""
        if resolved.name is None:
            return resolved.parent
        return self.open_child_dir(resolved.parent, resolved.name)

    def open_file(self, resolved: Resolved, flags: int = os.O_RDONLY) -> int:
        """An fd for the last component (a mount's source file where one is mounted)."""
        assert resolved.name is not None
        if resolved.mount is not None:
            return os.open(resolved.mount.source, flags | os.O_CLOEXEC)
        return os.open(resolved.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=resolved.parent.fd)

    def walk(self, frame: Frame) -> Iterator[tuple[Frame, str, os.stat_result, FsMount | None]]:
        """Depth-first, sorted: (directory, name, lstat, mount) for everything below `frame`."""
        for name in self.list_dir(frame):
            try:
                st, mount = self.lstat_child(frame, name)
            except FileNotFoundError:
                continue  # removed while we walk
            yield frame, name, st, mount
            if stat.S_ISDIR(st.st_mode):
                try:
                    child = self.open_child_dir(frame, name)
                except (FileNotFoundError, NotADirectoryError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno not in (
                        errno.ENOENT,
                        errno.ENOTDIR,
                        errno.ELOOP,
                    ):
                        raise
                    continue  # replaced while we walk
                yield from self.walk(child)
                self.release(child)

    def release(self, frame: Frame) -> None:
        if frame.fd in self._owned and frame is not self.root:
            self._owned.remove(frame.fd)
            os.close(frame.fd)
