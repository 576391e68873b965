"""The netlink thread: where pyroute2's AsyncIPRoute runs, whatever loop the daemon uses.

pyroute2 0.9 hands its AF_NETLINK socket to `loop.create_datagram_endpoint`, which uvloop
refuses ("cannot open a UDP handle, invalid family 16"). pydockd runs on uvloop, so netlink
work runs on one dedicated daemon thread with a plain `asyncio.SelectorEventLoop`, and callers
await it from any loop with `on_netlink_thread(coro)`; nothing blocks the caller's loop.
Cancelling the caller cancels the coroutine on the netlink thread (its cleanup still runs).

`iproute()` opens an AsyncIPRoute on that thread, in the host namespace or, through a socket
created inside it by `netns.run_in_netns`, in another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from pyroute2 import AsyncIPRoute

from netproxy.netns import run_in_netns
from runtime.errors import SystemError_

T = TypeVar("T")

# pyroute2 logs every netlink message at DEBUG: far too much for a daemon run with --log-level debug.
logging.getLogger("pyroute2").setLevel(logging.INFO)

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _netlink_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.SelectorEventLoop()  # explicitly not the policy's loop (uvloop)
            ready = threading.Event()

            def main() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=main, name="pydock-netlink", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


async def on_netlink_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the netlink thread's loop and await its result here."""
    loop = _netlink_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def open_netlink_socket() -> socket.socket:
    """A route netlink socket in the calling thread's namespace (for `iproute(sock=...)`)."""
    # pyroute2 hands a given socket to asyncio as a datagram endpoint: it must be SOCK_DGRAM.
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)


@contextlib.asynccontextmanager
async def iproute(netns_path: str | None = None, *, sock: socket.socket | None = None) -> AsyncIterator[Any]:
    """An AsyncIPRoute in the host namespace or in `netns_path`; use on the netlink thread.

    `sock`, a netlink socket already made in that namespace, is used (and closed) instead of
    entering it.
    """
    if sock is not None:
        ipr = AsyncIPRoute(use_socket=sock)
    elif netns_path is None:
        ipr = AsyncIPRoute()
    else:
        try:
            sock = await run_in_netns(netns_path, open_netlink_socket)
        except OSError as exc:
            raise SystemError_(f"cannot enter network namespace {netns_path}: {exc}") from exc
        ipr = AsyncIPRoute(use_socket=sock)
    try:
        yield ipr
    finally:
        ipr.close()
        if sock is not None:
            # pyroute2 leaves a socket it was given open; an open socket pins the namespace.
            sock.close()
