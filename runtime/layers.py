"""Layer tars: unpacking into a directory, diff/chain IDs, and producing layer tars from an
overlayfs upper dir.

Unpacking never writes outside its target. Every path is walked component by component from a
directory fd with `O_NOFOLLOW` (the real filesystem state is checked, not the names): `..` past
the root, absolute names, hardlinks to outside, and writing through a symlink that leads out are
refused with `InvalidLayer`. Whiteouts are converted to overlayfs' format (a 0/0 character
device, `trusted.overlay.opaque=y`) because each layer is a separate overlay lower dir; the
`apply` mode deletes instead (a flattened rootfs).

Everything here blocks: async callers use `asyncio.to_thread`. No registry, store or HTTP here.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import logging
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, Literal, cast

import zstandard

from runtime.errors import InvalidParameter

log = logging.getLogger("pydock.layers")

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
CHUNK = 1 << 20
MAX_HEADER_BYTES = 1 << 20  # a PAX/GNU long-name header larger than this is hostile
DEFAULT_MAX_BYTES = 1 << 40  # decompressed size cap (a gzip bomb stops here)
MAX_SYMLINK_HOPS = 40
# While unpacking, the data root's filesystem keeps this much free (the smaller of the two), so
# that a decompression bomb or an oversized layer fails cleanly before the disk is full.
MIN_FREE_BYTES = 1 << 30
MIN_FREE_FRACTION = 0.05
SPACE_CHECK_EVERY = 8 << 20

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

Compression = Literal["gzip", "zstd", "none"]
WhiteoutMode = Literal["overlay", "apply"]


class InvalidLayer(InvalidParameter):
    """A layer tar that is malformed or tries to escape its target."""


# --- digests ----------------------------------------------------------------------------------


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Chain IDs as Docker computes them: C0 = D0, Cn = sha256(Cn-1 + " " + Dn)."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256_digest(f"{out[-1]} {diff_id}".encode()))
    return out


# --- readers ----------------------------------------------------------------------------------


def detect_compression(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


class _Peekable(io.RawIOBase):
    """A raw reader with a few bytes of look-ahead (to sniff the compression magic)."""

    def __init__(self, src: IO[bytes]) -> None:
        self._src = src
        self._head = b""

    def peek(self, n: int) -> bytes:
        while len(self._head) < n:
            more = self._src.read(n - len(self._head))
            if not more:
                break
            self._head += more
        return self._head[:n]

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._src.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class _GzipReader(io.RawIOBase):
    """Multi-member gzip decoding that reports truncation clearly (zlib, streaming)."""

    def __init__(self, src: IO[bytes]) -> None:
        self._src = src
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._done = False
        self._started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            if self._z.unconsumed_tail:
                data = self._z.unconsumed_tail
            else:
                data = self._src.read(CHUNK)
                if not data:
                    if not self._z.eof and self._started:
                        raise InvalidLayer("unexpected EOF: gzip stream is truncated")
                    self._done = True
                    break
            self._started = True
            try:
                self._pending = self._z.decompress(data, CHUNK)
            except zlib.error as exc:
                raise InvalidLayer(f"invalid gzip data: {exc}") from exc
            if self._z.eof:
                rest = self._z.unused_data
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._started = False
                # Trailing zero padding after the last member is tolerated (as gzip(1) does).
                if rest.strip(b"\0"):
                    self._started = True
                    self._pending += self._z.decompress(rest, CHUNK)
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _CappedHashingReader(io.RawIOBase):
    """Counts and hashes what passes through; refuses to go past `max_bytes`; may tee."""

    def __init__(
        self, src: IO[bytes], max_bytes: int, tee: IO[bytes] | None = None, space_fd: int | None = None
    ) -> None:
        self._src = src
        self._max = max_bytes
        self._tee = tee
        self._space_fd = space_fd  # a directory on the filesystem that must not fill up
        self._next_space_check = 0
        self.hasher = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            data = self._src.read(len(buf))
        except (EOFError, OSError, zstandard.ZstdError) as exc:
            raise InvalidLayer(f"invalid compressed layer data: {exc}") from exc
        if data is None:
            return 0
        self.count += len(data)
        if self.count > self._max:
            raise InvalidLayer(f"layer is larger than the limit of {self._max} bytes uncompressed")
        if self._space_fd is not None and self.count >= self._next_space_check:
            headroom = _check_free_space(self._space_fd, self.count)
            # look again well before the headroom could be used up (a tee may double the writes)
            self._next_space_check = self.count + max(64 << 10, min(SPACE_CHECK_EVERY, headroom // 4))
        self.hasher.update(data)
        if self._tee is not None:
            self._tee.write(data)
        buf[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


def open_decompressed(src: IO[bytes]) -> tuple[IO[bytes], Compression]:
    """Wrap `src` in the decompressor its magic bytes call for."""
    peek = _Peekable(src)
    kind = detect_compression(peek.peek(4))
    raw: io.RawIOBase
    if kind == "gzip":
        raw = _GzipReader(cast(IO[bytes], peek))
    elif kind == "zstd":
        raw = cast(
            io.RawIOBase, zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], peek), read_size=CHUNK)
        )
    else:
        raw = peek
    return cast(IO[bytes], io.BufferedReader(raw, CHUNK)), kind


_META_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


def _check_free_space(fd: int, unpacked: int) -> int:
    """Raise InvalidLayer when the filesystem of `fd` is down to its reserve; else the headroom."""
    vfs = os.fstatvfs(fd)
    free = vfs.f_bavail * vfs.f_frsize
    reserve = min(MIN_FREE_BYTES, int(vfs.f_blocks * vfs.f_frsize * MIN_FREE_FRACTION))
    if free < reserve:
        raise InvalidLayer(
            f"not enough disk space to unpack the layer: {free} bytes left after {unpacked} bytes "
            "uncompressed (a decompression bomb, or a layer too large for this disk)"
        )
    return free - reserve


class _SafeTarInfo(tarfile.TarInfo):
    """Refuses meta headers (PAX, GNU long names) too large to be honest before reading them."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _META_TYPES and self.size > MAX_HEADER_BYTES:
            raise InvalidLayer(f"tar header of {self.size} bytes is too large")
        return super()._proc_member(tarfile_)  # type: ignore[misc, no-any-return]


# --- unpacking --------------------------------------------------------------------------------


@dataclass(slots=True)
class UnpackResult:
    diff_id: str  # sha256 of the uncompressed tar stream
    size: int  # bytes of file content written (Docker's layer size)
    compression: Compression
    tar_bytes: int  # length of the uncompressed stream


def _clean_parts(name: str, what: str) -> list[str]:
    """Split a tar member name into components; refuse absolute names and `..` escapes."""
    if name.startswith("/"):
        raise InvalidLayer(f"refusing to unpack {what} {name!r}: absolute path")
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise InvalidLayer(f"refusing to unpack {what} {name!r}: path escapes the layer")
            parts.pop()
            continue
        if "\0" in comp:
            raise InvalidLayer(f"invalid tar member name {name!r}")
        parts.append(comp)
    return parts


@dataclass(slots=True)
class _Unpacker:
    root_fd: int
    whiteouts: WhiteoutMode
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    _dir_fds: dict[tuple[str, ...], int] = field(default_factory=dict)
    _deferred_dirs: list[tuple[tuple[str, ...], tarfile.TarInfo]] = field(default_factory=list)
    _seen: set[tuple[str, ...]] = field(default_factory=set)
    size: int = 0

    def close(self) -> None:
        for fd in self._dir_fds.values():
            os.close(fd)
        self._dir_fds.clear()

    def _open_dir(self, parts: tuple[str, ...]) -> int:
        """fd of root/parts, each component opened with O_NOFOLLOW (must all be real dirs)."""
        if not parts:
            return self.root_fd
        cached = self._dir_fds.get(parts)
        if cached is not None:
            return cached
        parent = self._open_dir(parts[:-1])
        try:
            fd = os.open(
                parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
            )
        except OSError as exc:
            raise InvalidLayer(f"cannot open directory {'/'.join(parts)!r}: {exc.strerror}") from exc
        self._dir_fds[parts] = fd
        return fd

    def resolve_parent(self, parts: list[str], *, create: bool, what: str) -> tuple[str, ...]:
        """Resolve the directories leading to the last component on the real filesystem.

        Missing directories are created (when `create`); a symlink on the way is followed only
        when it stays inside the layer, otherwise the entry is refused.
        """
        queue = list(parts[:-1])
        stack: list[str] = []
        hops = 0
        while queue:
            comp = queue.pop(0)
            if comp in ("", "."):
                continue
            if comp == "..":
                if not stack:
                    raise InvalidLayer(f"refusing to unpack {what}: path escapes the layer")
                stack.pop()
                continue
            dfd = self._open_dir(tuple(stack))
            try:
                st = os.lstat(comp, dir_fd=dfd)
            except FileNotFoundError:
                if not create:
                    raise InvalidLayer(f"refusing to unpack {what}: {comp!r} does not exist") from None
                os.mkdir(comp, 0o755, dir_fd=dfd)
                stack.append(comp)
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(comp)
            elif stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise InvalidLayer(f"refusing to unpack {what}: too many levels of symbolic links")
                target = os.readlink(comp, dir_fd=dfd)
                if target.startswith("/"):
                    raise InvalidLayer(
                        f"refusing to unpack {what}: it would be written through symlink "
                        f"{'/'.join([*stack, comp])!r} -> {target!r}, which points outside the layer"
                    )
                depth = len(stack)
                for tcomp in target.split("/"):
                    if tcomp == "..":
                        depth -= 1
                    elif tcomp not in ("", "."):
                        depth += 1
                    if depth < 0:
                        raise InvalidLayer(
                            f"refusing to unpack {what}: it would be written through symlink "
                            f"{'/'.join([*stack, comp])!r} -> {target!r}, which points outside the layer"
                        )
                queue = target.split("/") + queue
            else:
                raise InvalidLayer(
                    f"refusing to unpack {what}: {'/'.join([*stack, comp])!r} is not a directory"
                )
        return tuple(stack)

    def _remove(self, parent: tuple[str, ...], name: str) -> None:
        """Remove whatever is at parent/name (a directory recursively), never following symlinks."""
        gone = (*parent, name)
        for key in [k for k in self._dir_fds if k[: len(gone)] == gone]:
            os.close(self._dir_fds.pop(key))
        _remove_at(self._open_dir(parent), name)

    def entry(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if len(self._dir_fds) > 256:  # bound the fd cache; no fd is held across entries
            self.close()
        parts = _clean_parts(member.name, "entry")
        if not parts:
            if member.isdir():
                self._deferred_dirs.append(((), member))
            return
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts)
            return
        parent = self.resolve_parent(parts, create=True, what=repr(member.name))
        dfd = self._open_dir(parent)
        key = (*parent, base)
        try:
            st: os.stat_result | None = os.lstat(base, dir_fd=dfd)
        except FileNotFoundError:
            st = None
        if st is not None and not (member.isdir() and stat.S_ISDIR(st.st_mode)):
            self._remove(parent, base)
        self._seen.add(key)
        if member.isdir():
            if st is None or not stat.S_ISDIR(st.st_mode):
                os.mkdir(base, 0o700, dir_fd=dfd)
            self._deferred_dirs.append((key, member))
        elif member.isreg():
            self._regular(tf, member, dfd, base)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=dfd)
            self._owner(dfd, base, member, follow=False)
            self._times(dfd, base, member)
        elif member.islnk():
            self._hardlink(member, dfd, base)
        elif member.isfifo():
            os.mknod(base, stat.S_IFIFO | (member.mode & 0o7777), dir_fd=dfd)
            self._finish_node(dfd, base, member)
        elif member.ischr() or member.isblk():
            if not self.is_root:
                log.debug("skipping device %s: not root", member.name)
                return
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            try:
                os.mknod(
                    base,
                    kind | (member.mode & 0o7777),
                    os.makedev(member.devmajor, member.devminor),
                    dir_fd=dfd,
                )
            except PermissionError:
                log.debug("skipping device %s: not permitted", member.name)
                return
            self._finish_node(dfd, base, member)
        else:
            log.debug("skipping tar member %s of type %r", member.name, member.type)

    def _regular(self, tf: tarfile.TarFile, member: tarfile.TarInfo, dfd: int, base: str) -> None:
        fd = os.open(
            base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd
        )
        try:
            src = tf.extractfile(member)
            if src is not None:
                remaining = member.size
                while remaining > 0:
                    chunk = src.read(min(CHUNK, remaining))
                    if not chunk:
                        raise InvalidLayer(f"unexpected EOF in tar member {member.name!r}")
                    _write_all(fd, chunk)
                    remaining -= len(chunk)
            self.size += member.size
            self._owner_fd(fd, member)
            os.fchmod(fd, member.mode & 0o7777)
            self._xattrs_fd(fd, member)
            os.utime(fd, ns=(_mtime_ns(member), _mtime_ns(member)))
        finally:
            os.close(fd)

    def _hardlink(self, member: tarfile.TarInfo, dfd: int, base: str) -> None:
        target = member.linkname.lstrip("/")  # link targets are relative to the layer root
        tparts = _clean_parts(target, "hardlink target")
        if not tparts:
            raise InvalidLayer(f"invalid hardlink {member.name!r} -> {member.linkname!r}")
        tparent = self.resolve_parent(tparts, create=False, what=f"hardlink {member.name!r}")
        if any(p != q for p, q in zip(tparent, tparts[:-1], strict=False)) or len(tparent) != len(tparts) - 1:
            raise InvalidLayer(
                f"refusing hardlink {member.name!r} -> {member.linkname!r}: "
                "its target path goes through a symlink"
            )
        tfd = self._open_dir(tparent)
        try:
            st = os.lstat(tparts[-1], dir_fd=tfd)
        except FileNotFoundError:
            raise InvalidLayer(
                f"hardlink {member.name!r} -> {member.linkname!r}: target does not exist"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise InvalidLayer(f"hardlink {member.name!r} -> {member.linkname!r}: target is a directory")
        os.link(tparts[-1], base, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)

    def _whiteout(self, parts: list[str]) -> None:
        base = parts[-1]
        parent = self.resolve_parent(parts, create=True, what=repr("/".join(parts)))
        dfd = self._open_dir(parent)
        if base == WHITEOUT_OPAQUE:
            if self.whiteouts == "overlay":
                try:
                    os.setxattr(dfd, OPAQUE_XATTR, b"y")
                except OSError as exc:
                    raise InvalidLayer(
                        f"cannot mark {'/'.join(parent) or '/'!r} opaque: {exc.strerror}"
                    ) from exc
            else:
                for child in os.listdir(dfd):
                    if (*parent, child) not in self._seen:
                        self._remove(parent, child)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing to apply
        name = base[len(WHITEOUT_PREFIX) :]
        if not name or name in (".", ".."):
            raise InvalidLayer(f"invalid whiteout {'/'.join(parts)!r}")
        self._remove(parent, name)
        if self.whiteouts == "overlay":
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dfd)
            self._seen.add((*parent, name))

    def _finish_node(self, dfd: int, base: str, member: tarfile.TarInfo) -> None:
        self._owner(dfd, base, member, follow=False)
        os.chmod(base, member.mode & 0o7777, dir_fd=dfd)  # not a symlink: created just now
        self._times(dfd, base, member)

    def _owner(self, dfd: int, base: str, member: tarfile.TarInfo, *, follow: bool) -> None:
        if self.is_root:
            os.chown(base, member.uid, member.gid, dir_fd=dfd, follow_symlinks=follow)

    def _owner_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        if self.is_root:
            os.fchown(fd, member.uid, member.gid)

    def _times(self, dfd: int, base: str, member: tarfile.TarInfo) -> None:
        ns = _mtime_ns(member)
        os.utime(base, ns=(ns, ns), dir_fd=dfd, follow_symlinks=False)

    def _xattrs_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr.") :]
            try:
                os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
                    raise
                log.debug("xattr %s on %s not applied: %s", name, member.name, exc.strerror)

    def finish(self) -> None:
        """Directory metadata last: adding children changes a directory's mtime."""
        for parts, member in reversed(self._deferred_dirs):
            try:
                fd = os.dup(self._open_dir(parts))
            except (InvalidLayer, OSError):
                continue  # replaced or removed by a later entry: nothing to finish
            try:
                self._owner_fd(fd, member)
                os.fchmod(fd, member.mode & 0o7777)
                self._xattrs_fd(fd, member)
                os.utime(fd, ns=(_mtime_ns(member), _mtime_ns(member)))
            finally:
                os.close(fd)


def _remove_at(dfd: int, name: str) -> None:
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            for child in os.listdir(fd):
                _remove_at(fd, child)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return int(float(member.mtime) * 1_000_000_000)


def unpack(
    src: IO[bytes],
    target: Path,
    *,
    whiteouts: WhiteoutMode = "overlay",
    max_bytes: int = DEFAULT_MAX_BYTES,
    tee: IO[bytes] | None = None,
) -> UnpackResult:
    """Unpack a (gzip/zstd/plain) layer tar into the existing directory `target`.

    Returns the diff ID (sha256 of the uncompressed stream, read to its end) and the content size.
    `tee` receives the uncompressed bytes (e.g. to keep an imported tarball as a blob).
    Raises InvalidLayer for malformed or hostile input; the caller removes the half-made target.
    """
    decompressed, kind = open_decompressed(src)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    counted = _CappedHashingReader(decompressed, max_bytes, tee, space_fd=root_fd)
    reader = io.BufferedReader(counted, CHUNK)
    unpacker = _Unpacker(root_fd, whiteouts)
    try:
        try:
            with tarfile.open(fileobj=reader, mode="r|", tarinfo=_SafeTarInfo) as tf:
                for member in tf:
                    unpacker.entry(tf, member)
            unpacker.finish()
            while reader.read(CHUNK):
                pass
        except tarfile.ReadError as exc:
            if counted.count > 0 or str(exc) != "empty file":
                raise InvalidLayer(f"invalid tar archive: {exc}") from exc
        except tarfile.TarError as exc:
            raise InvalidLayer(f"invalid tar archive: {exc}") from exc
        except (EOFError, zstandard.ZstdError) as exc:
            raise InvalidLayer(f"invalid compressed layer data: {exc}") from exc
        except UnicodeError as exc:
            raise InvalidLayer(f"invalid tar member name: {exc}") from exc
    finally:
        unpacker.close()
        os.close(root_fd)
    return UnpackResult(counted.digest, unpacker.size, kind, counted.count)


def digest_stream(
    src: IO[bytes], *, decompress: bool = False, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[str, int]:
    """sha256 digest and length of a stream (decompressed first when asked)."""
    stream: IO[bytes] = open_decompressed(src)[0] if decompress else src
    counted = _CappedHashingReader(stream, max_bytes)
    counted.drain()
    return counted.digest, counted.count


# --- producing layer tars ---------------------------------------------------------------------


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _info_for(path: Path, arcname: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = st.st_mtime_ns // 1_000_000_000
    info.uname = info.gname = ""
    return info


def _read_xattrs(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if name.startswith("trusted.overlay.") or not name.startswith(("security.", "user.", "trusted.")):
            continue
        if name == "security.selinux":
            continue
        with contextlib.suppress(OSError):
            out["SCHILY.xattr." + name] = os.getxattr(path, name, follow_symlinks=False).decode(
                "utf-8", "surrogateescape"
            )
    return out


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def tar_directory_diff(upper_dir: Path, *, overlay_whiteouts: bool = True) -> Iterator[bytes]:
    """Stream a Docker layer tar of `upper_dir` (sorted, PAX, deterministic for the same tree).

    With `overlay_whiteouts`, overlayfs markers become Docker's: a 0/0 character device becomes
    an empty `.wh.<name>`, a directory with `trusted.overlay.opaque=y` gets `.wh..wh..opq`.
    Hardlinks inside the tree are kept as hardlinks. Blocking: iterate it in a thread.
    """
    seen_inodes: dict[tuple[int, int], str] = {}

    def walk(directory: Path, prefix: str) -> Iterator[bytes]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = Path(entry.path)
            arcname = prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            if overlay_whiteouts and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                info = _info_for(path, f"{prefix}{WHITEOUT_PREFIX}{entry.name}", st)
                info.type, info.mode, info.size = tarfile.REGTYPE, 0o644, 0
                yield _header(info)
                continue
            info = _info_for(path, arcname, st)
            info.pax_headers = _read_xattrs(path)
            if stat.S_ISDIR(st.st_mode):
                info.type, info.name = tarfile.DIRTYPE, arcname + "/"
                yield _header(info)
                if overlay_whiteouts and _is_opaque(path):
                    opq = _info_for(path, f"{arcname}/{WHITEOUT_OPAQUE}", st)
                    opq.type, opq.mode, opq.size = tarfile.REGTYPE, 0o644, 0
                    yield _header(opq)
                yield from walk(path, arcname + "/")
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, str(path.readlink())
                yield _header(info)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen_inodes:
                    info.type, info.linkname = tarfile.LNKTYPE, seen_inodes[key]
                    yield _header(info)
                    continue
                if st.st_nlink > 1:
                    seen_inodes[key] = arcname
                info.type, info.size = tarfile.REGTYPE, st.st_size
                yield _header(info)
                yield from _file_chunks(path, st.st_size)
                yield _pad(st.st_size)
            elif stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
                yield _header(info)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                yield _header(info)
            # sockets are not archived (as Docker)

    yield from walk(upper_dir, "")
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _file_chunks(path: Path, size: int) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        remaining = size
        while remaining > 0:
            chunk = os.read(fd, min(CHUNK, remaining))
            if not chunk:  # the file shrank while we read it: pad so the tar stays well-formed
                yield b"\0" * remaining
                return
            remaining -= len(chunk)
            yield chunk
    finally:
        os.close(fd)


def gzip_stream(chunks: Iterator[bytes], out: BinaryIO, *, level: int = 6) -> tuple[str, int]:
    """Gzip `chunks` into `out` deterministically (mtime 0); return (digest, size) of the gzip."""
    hashing = _HashingWriter(out)
    with gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=level, mtime=0, filename="") as gz:
        for chunk in chunks:
            gz.write(chunk)
    return hashing.digest, hashing.count


class _HashingWriter(io.RawIOBase):
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._hasher = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._out.write(data)
        self._hasher.update(data)
        self.count += len(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest()


def read_file_chunks(path: Path, *, decompress: bool = False) -> Iterator[bytes]:
    """The bytes of a stored blob, decompressed when asked (for `docker save`)."""
    with open(path, "rb") as f:
        stream: IO[bytes] = open_decompressed(f)[0] if decompress else f
        while chunk := stream.read(CHUNK):
            yield chunk


# Public names for the container file code (`cpextract.py`), which shares these safeguards.
SafeTarInfo = _SafeTarInfo
remove_at = _remove_at
