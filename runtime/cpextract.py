"""Writing a tar into a container (`PUT /containers/{id}/archive`, `docker cp` into a container).

The destination directory is resolved in the container (its last component followed too, as
dockerd's `GetResourcePath`); every entry below it is walked from directory fds (`ctrpath`),
stepping onto volume and bind mounts where the container would see them. Existing symlinks in
the container are followed in the container's scope; nothing is ever written through a symlink
by a path the kernel resolves, so the host outside the container's root is never touched.

Refused with `HostileArchive` (400) before anything of that entry is written: absolute names,
`..` that leaves the destination, writing through a symlink the same archive created, hardlinks
whose target lies outside the destination or behind a symlink, device nodes. Also refused:
writes into a read-only volume (`mounted volume is marked read-only`) or, outside volumes, into
a `--read-only` rootfs (`container rootfs is marked read-only`).

Blocking: run it in a thread; the tar comes from a blocking reader.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tarfile
from dataclasses import dataclass, field
from typing import IO

from runtime import layers
from runtime.ctrpath import ContainerTree, Frame, Walker, container_path, split_path
from runtime.errors import (
    HostileArchive,
    InvalidParameter,
    NotADirectoryTarget,
    RootfsReadOnly,
    VolumeReadOnly,
)

CHUNK = 1 << 20
MAX_CACHED_DIRS = 256


def _entry_parts(name: str, what: str) -> list[str]:
    if name.startswith("/"):
        raise HostileArchive(f"refusing to extract {what} {name!r}: absolute path")
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if "\0" in comp:
            raise HostileArchive(f"refusing to extract {what} {name!r}: invalid name")
        if comp == "..":
            if not parts:
                raise HostileArchive(
                    f"refusing to extract {what} {name!r}: it leaves the destination directory"
                )
            parts.pop()
            continue
        parts.append(comp)
    return parts


def check_writable(frame_writable: bool, in_mount: bool) -> None:
    if frame_writable:
        return
    if in_mount:
        raise VolumeReadOnly()
    raise RootfsReadOnly()


@dataclass(slots=True)
class _Extractor:
    walker: Walker
    dest: Frame
    no_overwrite_dir_non_dir: bool
    owner: tuple[int, int] | None  # chown everything to this (copyUIDGID), else the tar's ids
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    _dirs: dict[tuple[str, ...], Frame] = field(default_factory=dict)
    _links: set[tuple[str, ...]] = field(default_factory=set)  # container paths of symlinks we made
    _deferred: list[tuple[tuple[str, ...], tarfile.TarInfo]] = field(default_factory=list)

    # --- directories --------------------------------------------------------------------------

    def _forget_below(self, rel: tuple[str, ...]) -> None:
        for key in [k for k in self._dirs if k[: len(rel)] == rel]:
            self.walker.release(self._dirs.pop(key))

    def _dir(self, rel: tuple[str, ...], *, create: bool, entry: str) -> Frame:
        """The directory dest/rel, created if missing (when `create`), symlinks followed in-root."""
        if not rel:
            return self.dest
        cached = self._dirs.get(rel)
        if cached is not None:
            return cached
        if len(self._dirs) > MAX_CACHED_DIRS:
            self._forget_below(())
        parent = self._dir(rel[:-1], create=create, entry=entry)
        name = rel[-1]
        try:
            st, _mount = self.walker.lstat_child(parent, name)
        except FileNotFoundError:
            if not create:
                raise
            check_writable(parent.writable, parent.mount is not None)
            os.mkdir(name, 0o755, dir_fd=parent.fd)
            frame = self.walker.open_child_dir(parent, name)
            self._own_dir(frame, 0o755)
        else:
            if stat.S_ISDIR(st.st_mode):
                frame = self.walker.open_child_dir(parent, name)
            elif stat.S_ISLNK(st.st_mode):
                where = (*parent.parts, name)
                if where in self._links:
                    raise HostileArchive(
                        f"refusing to extract {entry!r}: it would be written through symlink "
                        f"{container_path(where)!r}, which this archive created"
                    )
                resolved = self.walker.resolve(container_path(where), follow_last=True)
                if resolved.st is None or not stat.S_ISDIR(resolved.st.st_mode):
                    raise InvalidParameter(
                        f"cannot extract {entry!r}: {container_path(where)} is not a directory"
                    )
                frame = self.walker.open_dir(resolved)
            else:
                raise InvalidParameter(
                    f"cannot extract {entry!r}: {container_path((*parent.parts, name))} is not a directory"
                )
        self._dirs[rel] = frame
        return frame

    def _own_dir(self, frame: Frame, mode: int) -> None:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=frame.fd)
        try:
            if self.owner is not None:
                self._fchown(fd, *self.owner)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    # --- entries ------------------------------------------------------------------------------

    def entry(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _entry_parts(member.name, "entry")
        if not parts:
            if member.isdir():
                self._deferred.append(((), member))
            return
        if member.ischr() or member.isblk():
            raise HostileArchive(
                f"refusing to extract {member.name!r}: device files cannot be copied into a container"
            )
        rel = tuple(parts)
        parent = self._dir(rel[:-1], create=True, entry=member.name)
        name = rel[-1]
        where = (*parent.parts, name)
        mount = self.walker.tree.mount_at(where)
        if mount is not None:
            check_writable(mount.writable, True)
        else:
            check_writable(parent.writable, parent.mount is not None)
        try:
            st, _ = self.walker.lstat_child(parent, name)
        except FileNotFoundError:
            existing = None
        else:
            existing = st
        if existing is not None:
            is_dir = stat.S_ISDIR(existing.st_mode)
            if self.no_overwrite_dir_non_dir and is_dir and not member.isdir():
                raise InvalidParameter(
                    f'cannot overwrite directory "{container_path(where)}" with non-directory "{member.name}"'
                )
            if self.no_overwrite_dir_non_dir and not is_dir and member.isdir():
                raise InvalidParameter(
                    f'cannot overwrite non-directory "{container_path(where)}" with directory "{member.name}"'
                )
            if not (is_dir and member.isdir()):
                if mount is not None or any(
                    m.destination[: len(where)] == where for m in self.walker.tree.mounts
                ):
                    raise InvalidParameter(
                        f"cannot replace {container_path(where)}: a volume is mounted there"
                    )
                self._forget_below(rel)
                self._links.discard(where)
                layers.remove_at(parent.fd, name)
                existing = None
        if member.isdir():
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=parent.fd)
            self._deferred.append((rel, member))
        elif member.isreg():
            self._regular(tf, member, parent, name)
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=parent.fd)
            self._links.add(where)
            uid, gid = self._ids(member)
            self._lchown(parent, name, uid, gid)
            ns = _mtime_ns(member)
            os.utime(name, ns=(ns, ns), dir_fd=parent.fd, follow_symlinks=False)
        elif member.islnk():
            self._hardlink(member, parent, name)
        elif member.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent.fd)
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.fd)
            try:
                self._metadata(fd, member)
            finally:
                os.close(fd)
        # other types (sockets do not exist in tars; GNU extensions tarfile already folded) are skipped

    def _ids(self, member: tarfile.TarInfo) -> tuple[int, int]:
        return self.owner if self.owner is not None else (member.uid, member.gid)

    def _fchown(self, fd: int, uid: int, gid: int) -> None:
        if self.is_root:
            os.fchown(fd, uid, gid)

    def _lchown(self, parent: Frame, name: str, uid: int, gid: int) -> None:
        if self.is_root:
            os.chown(name, uid, gid, dir_fd=parent.fd, follow_symlinks=False)

    def _metadata(self, fd: int, member: tarfile.TarInfo) -> None:
        self._fchown(fd, *self._ids(member))
        os.fchmod(fd, member.mode & 0o7777)
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            try:
                os.setxattr(fd, key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape"))
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
                    raise
        ns = _mtime_ns(member)
        os.utime(fd, ns=(ns, ns))

    def _regular(self, tf: tarfile.TarFile, member: tarfile.TarInfo, parent: Frame, name: str) -> None:
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent.fd
        )
        try:
            src = tf.extractfile(member)
            remaining = member.size
            while src is not None and remaining > 0:
                chunk = src.read(min(CHUNK, remaining))
                if not chunk:
                    raise InvalidParameter(f"unexpected EOF in tar entry {member.name!r}")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                remaining -= len(chunk)
            self._metadata(fd, member)
        finally:
            os.close(fd)

    def _hardlink(self, member: tarfile.TarInfo, parent: Frame, name: str) -> None:
        if member.linkname.startswith("/"):
            raise HostileArchive(f"refusing hardlink {member.name!r} -> {member.linkname!r}: absolute target")
        target = _entry_parts(member.linkname, f"hardlink {member.name!r} ->")
        if not target:
            raise HostileArchive(f"refusing hardlink {member.name!r} -> {member.linkname!r}: no target")
        frame = self.dest
        for comp in target[:-1]:
            try:
                st, _ = self.walker.lstat_child(frame, comp)
            except FileNotFoundError:
                raise InvalidParameter(
                    f"hardlink {member.name!r} -> {member.linkname!r}: target does not exist"
                ) from None
            if not stat.S_ISDIR(st.st_mode):
                raise HostileArchive(
                    f"refusing hardlink {member.name!r} -> {member.linkname!r}: "
                    "its target path goes through a symlink"
                )
            frame = self.walker.open_child_dir(frame, comp)
        try:
            st, mount = self.walker.lstat_child(frame, target[-1])
        except FileNotFoundError:
            raise InvalidParameter(
                f"hardlink {member.name!r} -> {member.linkname!r}: target does not exist"
            ) from None
        if stat.S_ISDIR(st.st_mode) or mount is not None:
            raise HostileArchive(
                f"refusing hardlink {member.name!r} -> {member.linkname!r}: target is a directory"
            )
        os.link(target[-1], name, src_dir_fd=frame.fd, dst_dir_fd=parent.fd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory metadata last: adding children changes a directory's mtime."""
        for rel, member in reversed(self._deferred):
            try:
                frame = self._dir(rel, create=False, entry=member.name)
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=frame.fd)
            except (OSError, InvalidParameter):
                continue  # replaced or removed by a later entry
            try:
                if frame.writable:
                    self._metadata(fd, member)
            finally:
                os.close(fd)


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return int(float(member.mtime) * 1_000_000_000)


def extract(
    tree: ContainerTree,
    path: str,
    src: IO[bytes],
    *,
    no_overwrite_dir_non_dir: bool = False,
    owner: tuple[int, int] | None = None,
) -> None:
    """Extract the tar (plain or compressed) read from `src` into directory `path` of the container.

    Raises FileNotFoundError (the destination does not exist), NotADirectoryTarget,
    VolumeReadOnly / RootfsReadOnly, HostileArchive, InvalidParameter (a malformed tar).
    """
    with Walker(tree) as walker:
        resolved = walker.resolve("/" + "/".join(split_path(path)), follow_last=True)
        if resolved.st is None:
            raise FileNotFoundError(path)
        if not stat.S_ISDIR(resolved.st.st_mode):
            raise NotADirectoryTarget()
        dest = walker.open_dir(resolved)
        check_writable(dest.writable, dest.mount is not None)
        extractor = _Extractor(walker, dest, no_overwrite_dir_non_dir, owner)
        stream, _kind = layers.open_decompressed(src)
        reader = io.BufferedReader(_Raw(stream), CHUNK)
        try:
            with tarfile.open(fileobj=reader, mode="r|", tarinfo=layers.SafeTarInfo) as tf:
                for member in tf:
                    extractor.entry(tf, member)
            extractor.finish()
        except tarfile.ReadError as exc:
            if str(exc) != "empty file":
                raise InvalidParameter(f"invalid tar archive: {exc}") from exc
        except tarfile.TarError as exc:
            raise InvalidParameter(f"invalid tar archive: {exc}") from exc
        except (EOFError, UnicodeError) as exc:
            raise InvalidParameter(f"invalid tar archive: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                extractor._forget_below(())


class _Raw(io.RawIOBase):
    def __init__(self, src: IO[bytes]) -> None:
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._src.read(len(buf))
        n = len(data)
        buf[:n] = data
        return n
