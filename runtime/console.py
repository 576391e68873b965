"""The pty master of a TTY container: runc's `--console-socket` handshake, received asynchronously.

runc connects to a UNIX socket we listen on and sends one message whose payload is the pty name
and whose SCM_RIGHTS ancillary data is the master fd. The socket must listen before runc starts,
so `ConsoleSocket` binds in its constructor and `receive_console_master` binds before returning.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
from pathlib import Path

from runtime.errors import OciRuntimeError


class ConsoleSocket:
    """A UNIX socket runc connects to (`--console-socket`) to hand over the pty master.

    Bound and listening from construction on, so it is ready before runc starts. runc sends one
    message whose payload is the pty name and whose SCM_RIGHTS ancillary data is the master fd.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._sock.bind(str(path))
            self._sock.listen(1)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise
        self._closed = False

    async def receive(self, *, timeout_s: float = 30.0) -> int:
        """Wait for runc to connect and return the pty master fd (close-on-exec, caller owns it)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            conn, _ = await loop.sock_accept(self._sock)
            with conn:
                conn.setblocking(False)
                while True:
                    try:
                        _data, ancdata, _flags, _addr = conn.recvmsg(
                            4096, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC
                        )
                        break
                    except BlockingIOError:
                        ready = loop.create_future()
                        loop.add_reader(conn.fileno(), ready.set_result, None)
                        try:
                            await ready
                        finally:
                            loop.remove_reader(conn.fileno())
        fds: list[int] = []
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
                fds.extend(arr)
        if not fds:
            raise OciRuntimeError("create", "console socket: no pty master received")
        for extra in fds[1:]:
            os.close(extra)
        return fds[0]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def receive_console_master(socket_path: Path, *, timeout_s: float = 30.0) -> asyncio.Task[int]:
    """Listen at `socket_path` now; the returned task completes with the pty master fd.

    Call it before `create(..., console_socket=socket_path)`, then await the task. Cancelling
    the task (e.g. because create failed) closes and removes the socket.
    """
    listener = ConsoleSocket(socket_path)

    async def receive() -> int:
        return await listener.receive(timeout_s=timeout_s)

    task = asyncio.get_running_loop().create_task(receive(), name=f"console-socket {socket_path.name}")
    task.add_done_callback(lambda _task: listener.close())
    return task
