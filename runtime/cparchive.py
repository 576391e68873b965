"""Reading a container's files out: `X-Docker-Container-Path-Stat`, `GET .../archive`, export.

Paths follow dockerd's `ResolvePath`/`StatPath`: the directory part is resolved in the container
(symlinks followed in its scope, mounts stepped onto), the last component is not followed (a
symlink is archived as a symlink; its stat carries `linkTarget`, the fully resolved path), and
`/.` or a trailing `/` name the directory itself. Archive entries are named like dockerd's
`TarResourceRebase`: the requested base name, then its contents below it (`d/`, `d/a`); for
`.../d/.` that base is `.` (`./`, `./a`), which is what makes `docker cp c:/d/. out` copy the
contents.

Blocking generators (file reads in a walk): iterate them from a thread.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import stat
import tarfile
from collections.abc import Generator, Iterator
from typing import Any

from runtime.ctrpath import ContainerTree, Frame, FsMount, Resolved, Walker, container_path

CHUNK = 1 << 20

# Go os.FileMode type bits (the stat header's `mode` is a Go FileMode, not st_mode).
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20


def go_file_mode(st_mode: int) -> int:
    mode = st_mode & 0o777
    if stat.S_ISDIR(st_mode):
        mode |= GO_MODE_DIR
    elif stat.S_ISLNK(st_mode):
        mode |= GO_MODE_SYMLINK
    elif stat.S_ISBLK(st_mode):
        mode |= GO_MODE_DEVICE
    elif stat.S_ISCHR(st_mode):
        mode |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE
    elif stat.S_ISFIFO(st_mode):
        mode |= GO_MODE_NAMED_PIPE
    elif stat.S_ISSOCK(st_mode):
        mode |= GO_MODE_SOCKET
    if st_mode & stat.S_ISUID:
        mode |= GO_MODE_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_MODE_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_MODE_STICKY
    return mode


def go_time(ns: int) -> str:
    """A Go `time.Time` as JSON: RFC 3339 with trimmed nanoseconds, `Z` for UTC."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    local = dt.datetime.fromtimestamp(seconds).astimezone()
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    offset = local.strftime("%z")
    return text + ("Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}")


def _go_base(path: str) -> str:
    """Go `filepath.Base`."""
    if path == "":
        return "."
    stripped = path.rstrip("/")
    if stripped == "":
        return "/"
    return stripped.rsplit("/", 1)[-1]


def request_path(path: str) -> tuple[str, str, bool]:
    """dockerd's absPath for a requested path: (absolute path, base name, follow the last link).

    Like `archive.PreserveTrailingDotOrSeparator(filepath.Join("/", path), path)`.
    """
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    if _go_base(cleaned) != "." and _go_base(path) == ".":
        cleaned = cleaned.rstrip("/") + "/."
    elif not cleaned.endswith("/") and path.endswith("/"):
        cleaned += "/"
    follow = cleaned.endswith("/") or cleaned.endswith("/.")
    return cleaned, _go_base(cleaned), follow


def path_stat(walker: Walker, resolved: Resolved, base: str, abs_path: str) -> dict[str, Any]:
    """The `X-Docker-Container-Path-Stat` object (dockerd's `ContainerPathStat`)."""
    st = resolved.st
    assert st is not None
    link_target = ""
    if stat.S_ISLNK(st.st_mode):
        try:
            full = walker.resolve(abs_path, follow_last=True)
            link_target = container_path(full.parts)
        except OSError:
            assert resolved.name is not None
            link_target = os.readlink(resolved.name, dir_fd=resolved.parent.fd)
    return {
        "name": base,
        "size": st.st_size,
        "mode": go_file_mode(st.st_mode),
        "mtime": go_time(st.st_mtime_ns),
        "linkTarget": link_target,
    }


def stat_resource(tree: ContainerTree, path: str) -> dict[str, Any]:
    """Stat `path` in the container. Raises FileNotFoundError / NotADirectoryError when missing."""
    abs_path, base, follow = request_path(path)
    with Walker(tree) as walker:
        resolved = walker.resolve(abs_path, follow_last=follow)
        if not resolved.exists:
            raise FileNotFoundError(abs_path)
        return path_stat(walker, resolved, base, abs_path)


def archive_resource(tree: ContainerTree, path: str) -> tuple[dict[str, Any], Generator[bytes, None, None]]:
    """Stat `path` and a tar stream of it (not yet started: iterate it in a thread)."""
    abs_path, base, follow = request_path(path)
    walker = Walker(tree)
    try:
        resolved = walker.resolve(abs_path, follow_last=follow)
        if not resolved.exists:
            raise FileNotFoundError(abs_path)
        body = path_stat(walker, resolved, base, abs_path)
    except BaseException:
        walker.close()
        raise
    return body, _resource_tar(walker, resolved, base)


def _resource_tar(walker: Walker, resolved: Resolved, base: str) -> Generator[bytes, None, None]:
    try:
        writer = TarWriter()
        st = resolved.st
        assert st is not None
        if stat.S_ISDIR(st.st_mode):
            frame = walker.open_dir(resolved)
            yield from writer.directory(frame, base if base.endswith("/") else base + "/", st)
            prefix = base + "/"  # "./" for `dir/.`, "//" for `/`, as dockerd's rebased names
            yield from writer.tree(walker, frame, prefix)
        else:
            assert resolved.name is not None
            yield from writer.entry(walker, resolved.parent, resolved.name, st, resolved.mount, base)
        yield writer.end()
    finally:
        walker.close()


def export_rootfs(tree: ContainerTree) -> Generator[bytes, None, None]:
    """`docker export`: the container's root filesystem (no volumes), entries without a prefix."""
    walker = Walker(ContainerTree(tree.root, (), tree.root_writable))
    try:
        writer = TarWriter()
        yield from writer.tree(walker, walker.root, "")
        yield writer.end()
    finally:
        walker.close()


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _xattrs(fd: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(fd)
    except OSError:
        return out
    for name in names:
        if name.startswith("trusted.overlay.") or name == "security.selinux":
            continue
        if not name.startswith(("security.", "user.", "trusted.")):
            continue
        try:
            out["SCHILY.xattr." + name] = os.getxattr(fd, name).decode("utf-8", "surrogateescape")
        except OSError:
            continue
    return out


class TarWriter:
    """Tar entries for files reached through a `Walker` (PAX headers, hardlinks kept)."""

    def __init__(self) -> None:
        self._links: dict[tuple[int, int], str] = {}

    @staticmethod
    def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.mtime = st.st_mtime_ns // 1_000_000_000
        info.uname = info.gname = ""
        return info

    @staticmethod
    def _header(info: tarfile.TarInfo) -> bytes:
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    def end(self) -> bytes:
        return b"\0" * (2 * tarfile.BLOCKSIZE)

    def directory(self, frame: Frame, name: str, st: os.stat_result) -> Iterator[bytes]:
        info = self._info(name, st)
        info.type = tarfile.DIRTYPE
        try:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=frame.fd)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                info.pax_headers = _xattrs(fd)
            finally:
                os.close(fd)
        yield self._header(info)

    def tree(self, walker: Walker, top: Frame, prefix: str) -> Iterator[bytes]:
        depth = len(top.parts)
        for frame, name, st, mount in walker.walk(top):
            rel = "/".join((*frame.parts[depth:], name))
            if stat.S_ISDIR(st.st_mode):
                child = walker.open_child_dir(frame, name)
                try:
                    yield from self.directory(child, prefix + rel + "/", st)
                finally:
                    walker.release(child)
            else:
                yield from self.entry(walker, frame, name, st, mount, prefix + rel)

    def entry(
        self, walker: Walker, frame: Frame, name: str, st: os.stat_result, mount: FsMount | None, arcname: str
    ) -> Iterator[bytes]:
        info = self._info(arcname, st)
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=frame.fd)
            yield self._header(info)
        elif stat.S_ISREG(mode):
            yield from self._regular(walker, frame, name, mount, info)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
            yield self._header(info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            yield self._header(info)
        # sockets are not archived (as dockerd)

    def _regular(
        self, walker: Walker, frame: Frame, name: str, mount: FsMount | None, info: tarfile.TarInfo
    ) -> Iterator[bytes]:
        if mount is not None:
            fd = os.open(mount.source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        else:
            try:
                fd = os.open(
                    name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=frame.fd
                )
            except OSError:
                return  # replaced by a symlink or removed while we walk: leave it out
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._links:
                info.type, info.linkname = tarfile.LNKTYPE, self._links[key]
                yield self._header(info)
                return
            if st.st_nlink > 1:
                self._links[key] = info.name
            info.type, info.size = tarfile.REGTYPE, st.st_size
            info.pax_headers = _xattrs(fd)
            yield self._header(info)
            remaining = st.st_size
            while remaining > 0:
                chunk = os.read(fd, min(CHUNK, remaining))
                if not chunk:  # it shrank while we read: pad so the tar stays well-formed
                    yield b"\0" * remaining
                    break
                remaining -= len(chunk)
                yield chunk
            yield _pad(st.st_size)
        finally:
            os.close(fd)
