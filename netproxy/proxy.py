"""The userland proxy (docker-proxy's role) inside the daemon's event loop.

Owns: accepting on a host socket reserved by `ports.py` and relaying to a container's
ip:port. TCP bytes move with splice(2) through a pipe pair, socket -> pipe -> socket, so they
never enter Python; readiness comes from `loop.add_reader`/`add_writer`, and at most one pipe
(1 MiB) is in flight per direction, so nothing is buffered without bound. Where splice is not
available a plain relay with one bounded buffer per direction takes over. EOF on one side is
passed on as a half-close (shutdown(SHUT_WR)) while the other direction keeps flowing; a reset
on one side resets the other. UDP keeps one connected socket per client address, closed after
an idle timeout (90 s, as docker-proxy).

Each proxy owns its tasks: the accept loop and one task per connection; `close()` cancels and
awaits them all. The listening socket belongs to the port reservation and is left open. This
module knows addresses and sockets, never containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
RELAY_BUFSIZE = 256 << 10
UDP_IDLE_TIMEOUT_S = 90.0  # docker-proxy's UDPConnTrackTimeout
UDP_MAX_DATAGRAM = 65535
UDP_BATCH = 64  # datagrams handled per readiness callback, so one flood cannot starve the loop
CONNECT_TIMEOUT_S = 10.0
HAS_SPLICE = hasattr(os, "splice")
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


class ProxyMode(StrEnum):
    AUTO = "auto"  # splice where the kernel and Python offer it, else relay
    SPLICE = "splice"
    RELAY = "relay"


@dataclass(slots=True)
class ProxyStats:
    accepted: int = 0
    active: int = 0
    failed_connects: int = 0


# --- readiness ----------------------------------------------------------------------------------


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut = loop.create_future()
    loop.add_reader(fd, _wake, fut)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut = loop.create_future()
    loop.add_writer(fd, _wake, fut)
    try:
        await fut
    finally:
        loop.remove_writer(fd)


# --- TCP pumps ----------------------------------------------------------------------------------


class _SpliceUnsupported(Exception):
    pass


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # a smaller pipe still works, just with more wakeups
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


async def _splice_pump(loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket) -> None:
    """Move src -> dst through a pipe until EOF, then half-close dst."""
    src_fd, dst_fd = src.fileno(), dst.fileno()
    pipe_r, pipe_w = _pipe()
    try:
        size = fcntl.fcntl(pipe_w, 1032)  # F_GETPIPE_SZ
        pending = 0
        eof = False
        moved = 0
        while True:
            if not eof and pending < size:
                try:
                    n = os.splice(src_fd, pipe_w, size - pending, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    # No data, or the pipe is full by pages: drain first, else wait for data.
                    if pending == 0:
                        await _readable(loop, src_fd)
                        continue
                except OSError as exc:
                    if exc.errno in (errno.EINVAL, errno.ENOSYS) and moved == 0:
                        raise _SpliceUnsupported from exc
                    raise
                else:
                    if n == 0:
                        eof = True
                    pending += n
                    moved += n
            if pending:
                try:
                    pending -= os.splice(pipe_r, dst_fd, pending, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await _writable(loop, dst_fd)
            elif eof:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
    finally:
        os.close(pipe_r)
        os.close(pipe_w)


async def _relay_pump(loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket) -> None:
    """The plain asyncio relay: one bounded buffer, each write awaited before the next read."""
    buf = bytearray(RELAY_BUFSIZE)
    view = memoryview(buf)
    while True:
        n = await loop.sock_recv_into(src, buf)
        if n == 0:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            return
        await loop.sock_sendall(dst, view[:n])


async def _pump(
    loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket, mode: ProxyMode
) -> None:
    if mode is not ProxyMode.RELAY and HAS_SPLICE:
        try:
            await _splice_pump(loop, src, dst)
            return
        except _SpliceUnsupported:
            if mode is ProxyMode.SPLICE:
                raise
            log.debug("splice refused on this socket pair; relaying instead")
    await _relay_pump(loop, src, dst)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), to pass a peer's reset on."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --- TCP proxy ----------------------------------------------------------------------------------


class TcpProxy:
    """Accepts on `listener` and relays each connection to `target`."""

    def __init__(
        self,
        listener: socket.socket,
        target: tuple[str, int],
        *,
        mode: ProxyMode = ProxyMode.AUTO,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.listener = listener
        self.target = target
        self.mode = mode
        self.connect_timeout_s = connect_timeout_s
        self.stats = ProxyStats()
        self._accept_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._accept_task is None:
            self.listener.setblocking(False)
            self._accept_task = asyncio.get_running_loop().create_task(
                self._accept_loop(), name=f"proxy-accept-{self.listener.getsockname()}"
            )

    async def close(self) -> None:
        """Stop accepting and end every connection (their sockets are closed, not reset)."""
        tasks = list(self._tasks)
        if self._accept_task is not None:
            tasks.append(self._accept_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._accept_task = None

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(self.listener)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("proxy accept failed: %s", exc, extra={"target": str(self.target)})
                    await asyncio.sleep(0.1)  # let connections finish and free descriptors
                    continue
                raise
            self.stats.accepted += 1
            task = loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.stats.active += 1
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        reset = False
        try:
            client.setblocking(False)
            upstream.setblocking(False)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await loop.sock_connect(upstream, self.target)
            except (OSError, TimeoutError) as exc:
                self.stats.failed_connects += 1
                log.debug("proxy connect to %s failed: %s", self.target, exc)
                return
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(_pump(loop, client, upstream, self.mode))
                    tg.create_task(_pump(loop, upstream, client, self.mode))
            except* (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError):
                reset = True
            except* OSError as group:
                log.debug("proxy connection failed: %s", group.exceptions[0])
                reset = True
        finally:
            self.stats.active -= 1
            if reset:
                _reset(client)
                _reset(upstream)
            else:
                client.close()
                upstream.close()


# --- UDP proxy ----------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Flow:
    client: tuple[str, int]
    sock: socket.socket
    last_seen: float
    timer: asyncio.TimerHandle | None = None


class UdpProxy:
    """Relays datagrams from each client address through its own socket to `target`."""

    def __init__(
        self,
        sock: socket.socket,
        target: tuple[str, int],
        *,
        idle_timeout_s: float = UDP_IDLE_TIMEOUT_S,
    ) -> None:
        self.sock = sock
        self.target = target
        self.idle_timeout_s = idle_timeout_s
        self._flows: dict[tuple[str, int], _Flow] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def flows(self) -> int:
        return len(self._flows)

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self.sock.setblocking(False)
            self._loop.add_reader(self.sock.fileno(), self._from_clients)

    async def close(self) -> None:
        if self._loop is None:
            return
        if self.sock.fileno() != -1:
            self._loop.remove_reader(self.sock.fileno())
        for flow in list(self._flows.values()):
            self._end(flow)
        self._loop = None

    def _from_clients(self) -> None:
        assert self._loop is not None
        for _ in range(UDP_BATCH):
            try:
                data, addr = self.sock.recvfrom(UDP_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors queued on the socket
                log.debug("udp proxy recv: %s", exc)
                continue
            flow = self._flows.get(addr)
            if flow is None:
                flow = self._open(addr)
                if flow is None:
                    continue
            flow.last_seen = self._loop.time()
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError, InterruptedError):
                flow.sock.send(data)  # a full send buffer drops the datagram, as UDP may

    def _open(self, addr: tuple[str, int]) -> _Flow | None:
        assert self._loop is not None
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            s.connect(self.target)  # no I/O for UDP: fixes the peer
        except OSError as exc:
            s.close()
            log.debug("udp proxy connect to %s failed: %s", self.target, exc)
            return None
        flow = _Flow(addr, s, self._loop.time())
        self._flows[addr] = flow
        self._loop.add_reader(s.fileno(), self._from_target, flow)
        self._arm(flow, self.idle_timeout_s)
        return flow

    def _from_target(self, flow: _Flow) -> None:
        assert self._loop is not None
        for _ in range(UDP_BATCH):
            try:
                data = flow.sock.recv(UDP_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable from the container, and the like
                continue
            flow.last_seen = self._loop.time()
            with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
                self.sock.sendto(data, flow.client)

    def _arm(self, flow: _Flow, delay_s: float) -> None:
        assert self._loop is not None
        flow.timer = self._loop.call_later(delay_s, self._check_idle, flow)

    def _check_idle(self, flow: _Flow) -> None:
        if self._loop is None or self._flows.get(flow.client) is not flow:
            return
        idle = self._loop.time() - flow.last_seen
        if idle >= self.idle_timeout_s:
            self._end(flow)
        else:
            self._arm(flow, self.idle_timeout_s - idle)

    def _end(self, flow: _Flow) -> None:
        if flow.timer is not None:
            flow.timer.cancel()
        if self._loop is not None and flow.sock.fileno() != -1:
            self._loop.remove_reader(flow.sock.fileno())
        flow.sock.close()
        self._flows.pop(flow.client, None)


Proxy = TcpProxy | UdpProxy


def start_proxy(
    sock: socket.socket,
    proto: str,
    target: tuple[str, int],
    *,
    mode: ProxyMode = ProxyMode.AUTO,
) -> Proxy:
    """Start the proxy for a reserved host socket (`proto` "tcp" or "udp"); call in the loop."""
    proxy: Proxy = TcpProxy(sock, target, mode=mode) if proto == "tcp" else UdpProxy(sock, target)
    proxy.start()
    return proxy
