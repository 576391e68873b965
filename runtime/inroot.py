"""Opening a path inside a container root as the container would see it, never escaping it.

Symlinks are resolved as if `root` were `/`: an absolute target restarts at `root`, `..` stops
at `root`. Every step is an `openat` with `O_NOFOLLOW` relative to the directory fd of the step
before, so a symlink swapped in while we walk cannot point us at the host (the same guarantee
as `openat2(RESOLVE_IN_ROOT)`, which Python does not expose). Blocking file I/O: call it from a
thread when in async code.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_SYMLINKS = 40


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def open_in_root(root: Path | str, path: str, flags: int = os.O_RDONLY) -> int:
    """An fd for `path` resolved inside `root`; raises OSError (ENOENT, ELOOP, ...) like open.

    `flags` must not contain O_CREAT: only existing files are opened. The caller closes the fd.
    """
    if flags & os.O_CREAT:
        raise ValueError("open_in_root does not create files")
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    stack: list[int] = [root_fd]  # directory fds from root to the current directory
    try:
        todo = _split(path)
        links = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            cur = stack[-1]
            st = os.stat(part, dir_fd=cur, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(part, dir_fd=cur)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo = _split(target) + todo
                continue
            if todo:
                if not stat.S_ISDIR(st.st_mode):
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
                fd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
                stack.append(fd)
                continue
            return os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
        # The path named a directory (or the root itself).
        return os.open(".", flags | os.O_CLOEXEC, dir_fd=stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


def read_in_root(root: Path | str, path: str, limit: int = 16 * 1024 * 1024) -> bytes:
    """The contents of a regular file inside `root` (at most `limit` bytes)."""
    fd = open_in_root(root, path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(65536, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
