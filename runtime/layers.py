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
#
# The uncompressed stream is produced as a sequence of chunks of up to CHUNK bytes (a generator
# per compression), and everything else works on whole chunks: the diff ID is hashed, the size
# capped and the disk space checked once per chunk, and file contents are written to disk from
# the chunks themselves (`_LayerStream.copy_to`), without the copies that layered file objects
# and tarfile's stream buffer make. zlib, zstd and hashlib release the GIL on such buffers.

GZIP_WBITS = 16 + zlib.MAX_WBITS
INFLATE_INPUT = 256 << 10  # compressed bytes per zlib call: bounds the unconsumed-tail copies


def detect_compression(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def _read(src: IO[bytes], n: int) -> bytes:
    data = src.read(n)
    return data if data else b""


def _plain_chunks(src: IO[bytes], head: bytes) -> Iterator[bytes]:
    if head:
        yield head
    while chunk := _read(src, CHUNK):
        yield chunk


def _gunzip_chunks(src: IO[bytes], head: bytes) -> Iterator[bytes]:
    """Multi-member gzip, streaming, each output chunk at most CHUNK bytes (a bomb inflates
    one bounded chunk at a time). Truncation is reported; zero padding after the last member
    is tolerated (as gzip(1) does)."""
    z = zlib.decompressobj(GZIP_WBITS)
    in_member = False
    view = memoryview(head)
    pending = False  # the last call filled its output: zlib may hold more without new input
    while True:
        tail = z.unconsumed_tail
        if not tail and not view and not pending:
            data = _read(src, CHUNK)
            if not data:
                if in_member:
                    raise InvalidLayer("unexpected EOF: gzip stream is truncated")
                return
            view = memoryview(data)
        if not in_member:
            if view[0] == 0 and not bytes(view).strip(b"\0"):
                view = memoryview(b"")  # zero padding
                continue
            in_member = True
        if tail:
            piece: bytes | memoryview = tail
        else:
            piece, view = view[:INFLATE_INPUT], view[INFLATE_INPUT:]
        try:
            out = z.decompress(piece, CHUNK)
        except zlib.error as exc:
            raise InvalidLayer(f"invalid gzip data: {exc}") from exc
        pending = len(out) == CHUNK
        if out:
            yield out
        if z.eof:
            view = memoryview(z.unused_data + bytes(view)) if z.unused_data else view
            z = zlib.decompressobj(GZIP_WBITS)
            in_member = pending = False


def _unzstd_chunks(src: IO[bytes], head: bytes) -> Iterator[bytes]:
    reader = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], _Prepended(head, src)), read_size=CHUNK, read_across_frames=True, closefd=False
    )
    while True:
        try:
            chunk = reader.read(CHUNK)
        except zstandard.ZstdError as exc:
            raise InvalidLayer(f"invalid zstd data: {exc}") from exc
        if not chunk:
            return
        yield chunk


class _Prepended:
    """`read()` of `head`, then of `src`."""

    def __init__(self, head: bytes, src: IO[bytes]) -> None:
        self._head = head
        self._src = src

    def read(self, n: int = -1) -> bytes:
        if self._head:
            out = self._head if n < 0 else self._head[:n]
            self._head = self._head[len(out) :]
            return out
        return _read(self._src, n)


def decompressed_chunks(src: IO[bytes]) -> tuple[Iterator[bytes], Compression]:
    """The uncompressed bytes of `src` as chunks (gzip, zstd or plain, by magic bytes)."""
    head = b""
    while len(head) < len(ZSTD_MAGIC):
        more = _read(src, CHUNK)
        if not more:
            break
        head += more
    kind = detect_compression(head)
    if kind == "gzip":
        return _gunzip_chunks(src, head), kind
    if kind == "zstd":
        return _unzstd_chunks(src, head), kind
    return _plain_chunks(src, head), kind


class _ChunkRaw(io.RawIOBase):
    """A raw reader over a chunk iterator (for `open_decompressed`)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._off = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._off >= len(self._buf):
            self._buf = next(self._chunks, b"")
            self._off = 0
        n = min(len(buf), len(self._buf) - self._off)
        buf[:n] = self._buf[self._off : self._off + n]
        self._off += n
        return n


def open_decompressed(src: IO[bytes]) -> tuple[IO[bytes], Compression]:
    """Wrap `src` in the decompressor its magic bytes call for."""
    chunks, kind = decompressed_chunks(src)
    return cast(IO[bytes], io.BufferedReader(_ChunkRaw(chunks), CHUNK)), kind


class _LayerStream:
    """The uncompressed layer tar, hashed (diff ID), counted and capped as it is produced.

    It is the file object of tarfile's random-access mode (`"r:"`), used forward only: tarfile
    reads headers and seeks to the next one; file contents are taken directly by `copy_to`.
    A seek backwards is refused (tarfile never does one in this use).
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        max_bytes: int,
        tee: IO[bytes] | None = None,
        space_fd: int | None = None,
    ) -> None:
        self._chunks = chunks
        self._max = max_bytes
        self._tee = tee
        self._space_fd = space_fd  # a directory on the filesystem that must not fill up
        self._next_space_check = 0
        self._buf = b""
        self._off = 0
        self._eof = False
        self.pos = 0  # bytes consumed by the reader
        self.count = 0  # bytes produced (and hashed)
        self.hasher = hashlib.sha256()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()

    def _fill(self) -> bool:
        """The next chunk into the buffer (the current one is used up); False at the end."""
        if self._eof:
            return False
        try:
            chunk = next(self._chunks, b"")
        except (EOFError, OSError, zstandard.ZstdError) as exc:
            raise InvalidLayer(f"invalid compressed layer data: {exc}") from exc
        if not chunk:
            self._eof = True
            self._buf, self._off = b"", 0
            return False
        self.count += len(chunk)
        if self.count > self._max:
            raise InvalidLayer(f"layer is larger than the limit of {self._max} bytes uncompressed")
        if self._space_fd is not None and self.count >= self._next_space_check:
            headroom = _check_free_space(self._space_fd, self.count)
            # look again well before the headroom could be used up (a tee may double the writes)
            self._next_space_check = self.count + max(64 << 10, min(SPACE_CHECK_EVERY, headroom // 4))
        self.hasher.update(chunk)
        if self._tee is not None:
            self._tee.write(chunk)
        self._buf, self._off = chunk, 0
        return True

    def read(self, n: int = -1) -> bytes:
        avail = len(self._buf) - self._off
        if 0 <= n <= avail:
            out = self._buf[self._off : self._off + n]
            self._off += n
            self.pos += n
            return out
        parts = [self._buf[self._off :]] if avail else []
        got = avail
        self._off = len(self._buf)
        while (n < 0 or got < n) and self._fill():
            take = len(self._buf) if n < 0 else min(n - got, len(self._buf))
            parts.append(self._buf[:take])
            self._off = take
            got += take
        self.pos += got
        return b"".join(parts)

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or pos < self.pos:
            raise InvalidLayer("invalid tar archive: it would need to be read backwards")
        self.skip(pos - self.pos)
        return self.pos

    def skip(self, n: int) -> int:
        """Consume up to `n` bytes; how many there were."""
        done = 0
        while done < n:
            if self._off >= len(self._buf) and not self._fill():
                break
            take = min(n - done, len(self._buf) - self._off)
            self._off += take
            done += take
        self.pos += done
        return done

    def copy_to(self, fd: int, n: int) -> int:
        """Write the next `n` bytes to `fd` (straight from the chunks); how many there were."""
        done = 0
        while done < n:
            if self._off >= len(self._buf) and not self._fill():
                break
            take = min(n - done, len(self._buf) - self._off)
            _write_all(fd, memoryview(self._buf)[self._off : self._off + take])
            self._off += take
            done += take
        self.pos += done
        return done

    def drain(self) -> None:
        """Consume the rest (so that the digest covers the whole stream)."""
        self.pos += len(self._buf) - self._off
        while self._fill():
            self.pos += len(self._buf)
        self._off = len(self._buf)


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
    stream: _LayerStream  # the tar's own stream: regular files are copied from it
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

    def entry(self, member: tarfile.TarInfo) -> None:
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
            self._regular(member, dfd, base)
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

    def _regular(self, member: tarfile.TarInfo, dfd: int, base: str) -> None:
        fd = os.open(
            base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd
        )
        try:
            self.stream.seek(member.offset_data)
            if member.sparse is None:
                self._copy(fd, member, member.size)
            else:
                self._sparse(fd, member)
            self.size += member.size
            self._owner_fd(fd, member)
            os.fchmod(fd, member.mode & 0o7777)
            self._xattrs_fd(fd, member)
            os.utime(fd, ns=(_mtime_ns(member), _mtime_ns(member)))
        finally:
            os.close(fd)

    def _copy(self, fd: int, member: tarfile.TarInfo, n: int) -> None:
        if self.stream.copy_to(fd, n) != n:
            raise InvalidLayer(f"unexpected EOF in tar member {member.name!r}")

    def _sparse(self, fd: int, member: tarfile.TarInfo) -> None:
        """A sparse member (GNU or PAX): its data segments at their offsets, holes left as holes
        (writing them out as zeros would let a small layer fill the disk)."""
        segments = cast("list[tuple[int, int]]", member.sparse or [])  # typeshed says int
        for offset, length in segments:
            if offset < 0 or length < 0 or offset + length > member.size:
                raise InvalidLayer(f"invalid sparse map in tar member {member.name!r}")
            os.lseek(fd, offset, os.SEEK_SET)
            self._copy(fd, member, length)
        os.ftruncate(fd, member.size)

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


def _write_all(fd: int, data: bytes | memoryview) -> None:
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
    chunks, kind = decompressed_chunks(src)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stream = _LayerStream(chunks, max_bytes, tee, space_fd=root_fd)
    unpacker = _Unpacker(root_fd, whiteouts, stream)
    try:
        try:
            with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r:", tarinfo=_SafeTarInfo) as tf:
                for member in tf:
                    unpacker.entry(member)
            unpacker.finish()
            stream.drain()
        except tarfile.ReadError as exc:
            if stream.count > 0 or str(exc) != "empty file":
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
    return UnpackResult(stream.digest, unpacker.size, kind, stream.count)


def digest_stream(
    src: IO[bytes], *, decompress: bool = False, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[str, int]:
    """sha256 digest and length of a stream (decompressed first when asked)."""
    chunks = decompressed_chunks(src)[0] if decompress else _plain_chunks(src, b"")
    stream = _LayerStream(chunks, max_bytes)
    stream.drain()
    return stream.digest, stream.count


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
        yield from decompressed_chunks(f)[0] if decompress else _plain_chunks(f, b"")


# Public names for the container file code (`cpextract.py`), which shares these safeguards.
SafeTarInfo = _SafeTarInfo
remove_at = _remove_at
