"""Network namespaces: run a short function inside one, and make or remove named ones.

`run_in_netns` is how the rest of netproxy reaches into a container's network namespace: a
dedicated, short-lived thread calls setns(2) for itself only (a network namespace switch is
per thread), runs a small blocking function (create and bind a socket, open a netlink
socket), switches back and ends. A socket keeps the namespace it was created in, so the event
loop can then serve it from the daemon's own namespace. The thread is never a pool thread: if
switching back ever failed, the thread ends and its namespace with it, and no other work runs
in the wrong namespace.

Named namespaces (`/run/netns/NAME`, bind mounts of a namespace file, as `ip netns add`
makes) are for tests and for pydock creating a container's namespace before `runc create`.
This module knows nothing of containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from runtime.errors import SystemError_

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
NETNS_RUN_DIR = Path("/run/netns")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns_fd(fd: int) -> None:
    """setns(2) into the network namespace `fd` for the calling thread only."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def _in_netns(path: str, fn: Callable[[], T]) -> T:
    """Body of the helper thread: enter `path`, run `fn`, come back (or die trying)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns_fd(target)
        finally:
            os.close(target)
        try:
            return fn()
        finally:
            # If this fails the thread is already in the wrong namespace; it ends right after
            # and takes nothing else there (it is never reused).
            setns_fd(own)
    finally:
        os.close(own)


async def run_in_netns(path: str | Path, fn: Callable[[], T], *, timeout_s: float = 10.0) -> T:
    """Run the blocking `fn` in a fresh thread that sits in the network namespace `path`.

    Raises what `fn` raises, or `OSError` when the namespace cannot be entered. `fn` must be
    short (socket creation, bind): cancelling the caller does not stop the thread, it only
    stops waiting for it.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, exc: BaseException | None) -> None:
        if fut.cancelled():
            close = getattr(result, "close", None)
            if exc is None and callable(close):
                # Nobody waits any more: do not leak the socket the thread made.
                with contextlib.suppress(Exception):
                    close()
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)  # type: ignore[arg-type]  # T when exc is None

    def body() -> None:
        try:
            result = _in_netns(str(path), fn)
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, result, None)

    thread = threading.Thread(target=body, name="pydock-netns", daemon=True)
    thread.start()
    async with asyncio.timeout(timeout_s):
        return await fut


# --- named namespaces ---------------------------------------------------------------------------


def _create_named(path: Path, inside: Callable[[], T]) -> T:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The mount point: an empty file the namespace is bind-mounted on.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)

    def make() -> T:
        # unshare(CLONE_NEWNET) in this thread only, then pin the new namespace on `path`.
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        _check(
            _libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none", MS_BIND, None),
            "mount",
        )
        return inside()

    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            results.append(make())
        except BaseException as exc:
            errors.append(exc)
        # The thread ends here: its unshared namespace stays alive only through the bind mount.

    thread = threading.Thread(target=body, name="pydock-netns-create", daemon=True)
    thread.start()
    thread.join()
    if errors:
        with contextlib.suppress(OSError):
            _remove_named(path)
        raise errors[0]
    return results[0]


def _remove_named(path: Path) -> None:
    ret = _libc.umount2(str(path).encode(), MNT_DETACH)
    if ret != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone already
            raise OSError(err, f"umount {path}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def create_named_netns(name: str, *, run_dir: Path = NETNS_RUN_DIR) -> Path:
    """Create a named network namespace at `run_dir/name` (as `ip netns add`); return its path.

    Raises `SystemError_` when it exists already or cannot be made.
    """
    path, _ = await create_named_netns_with(name, lambda: None, run_dir=run_dir)
    return path


async def create_named_netns_with(
    name: str, inside: Callable[[], T], *, run_dir: Path = NETNS_RUN_DIR
) -> tuple[Path, T]:
    """`create_named_netns`, also running the short blocking `inside` in the new namespace
    (to make a socket there without entering it again); returns the path and its result."""
    path = run_dir / name
    try:
        result = await asyncio.to_thread(_create_named, path, inside)
    except OSError as exc:
        raise SystemError_(f"failed to create network namespace {name}: {exc}") from exc
    return path, result


async def remove_named_netns(path: Path) -> None:
    """Unmount and remove a named namespace file; a missing one counts as removed."""
    try:
        await asyncio.to_thread(_remove_named, path)
    except OSError as exc:
        raise SystemError_(f"failed to remove network namespace {path}: {exc}") from exc


def netns_inode(path: str | Path) -> int:
    """The namespace's inode number: a stable key for 'the same namespace' across paths."""
    return Path(path).stat().st_ino
