"""One process started inside a running container (`docker exec`, health probes): spawn, stdio, exit.

A starter puts the process into the container: `runc exec --detach --pid-file`
(`runtime_starter`) or pydock's exec helper (`runtime/fastexec.py`); either way, once it returns
the process is pydockd's own child (pydockd is child subreaper): a pidfd tells when it exits and
`waitid(P_PIDFD)` reaps it with its real status (as the supervisor does for inits,
`runtime.exitstatus`). Its stdio are plain pipes (created here, the far ends handed to the
starter, which passes them on), or with a TTY the pty master the starter gets back.

Output goes to one `Sink` (the exec start's hijacked connection, a health probe's buffer) or is
read and dropped when nobody listens, so the process never blocks on a full pipe. Back-pressure:
while the sink is congested the pipes are not read. Once the process exited, whatever it left in
the pipes is read at once (it is all there: writes to a pipe complete before the writer exits),
every fd is closed and the sink ends. A background child that still holds the pipes loses its
later output, as the session is over.

This module knows nothing of exec records or HTTP; `runtime/execs.py` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from runtime import exitstatus, procs
from runtime.console import receive_console_master
from runtime.oci import OciRuntime, Stdio
from runtime.ocispec import Process
from runtime.pipes import OutputPipes, PipeEnd
from runtime.stdio import Sink

Starter = Callable[[Stdio], Awaitable[tuple[int, int | None]]]

log = logging.getLogger("pydock.exec")

READ_CHUNK = 1 << 16
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031
STREAM_STDOUT, STREAM_STDERR = 1, 2


@dataclass(frozen=True, slots=True)
class ExecStreams:
    """Which stdio an exec process gets. Without `stdout`/`stderr` it writes to /dev/null."""

    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    merged: bool = False  # stdout and stderr share one pipe, so their order is kept (health probes)


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


class ExecProcess:
    """A process in a container, from `spawn` to its reaped exit; see the module docstring."""

    def __init__(
        self,
        streams: ExecStreams,
        sink: Sink | None = None,
        *,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.streams = streams
        self._on_exit_cb = on_exit
        self.pid = 0
        self.exit_code: int | None = None
        self._sink = sink
        self._pipes = OutputPipes(
            self._deliver,
            congested=lambda: self._sink is not None and self._sink.congested,
            drain=self._drain_sink,
        )
        self._stdin_fd: int | None = None
        self._master: int | None = None
        self._pidfd: int | None = None
        self._size: tuple[int, int] | None = None
        self._done: asyncio.Future[int] | None = None

    # --- start ------------------------------------------------------------------------------------

    async def spawn(self, start: Starter) -> int:
        """Start the process with `start` (the OCI runtime's exec or pydock's exec helper: it gets
        the stdio to hand on, returns the pid and, with a TTY, the pty master); returns the host
        pid. Raises what `start` raises; nothing is left open then."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        s = self.streams
        theirs: list[int] = []
        stdio = Stdio()
        pid = 0
        try:
            if not s.tty:
                stdin_fd = stdout_fd = stderr_fd = None
                if s.stdin:
                    r, w = _pipe()
                    theirs.append(r)
                    self._stdin_fd, stdin_fd = w, r
                if s.stdout or s.merged:
                    r, w = _pipe()
                    theirs.append(w)
                    self._pipes.add(PipeEnd(r, STREAM_STDOUT))
                    stdout_fd = w
                    if s.merged:
                        stderr_fd = w
                if s.stderr and not s.merged:
                    r, w = _pipe()
                    theirs.append(w)
                    self._pipes.add(PipeEnd(r, STREAM_STDERR, "stderr"))
                    stderr_fd = w
                stdio = Stdio(stdin_fd, stdout_fd, stderr_fd)
            pid, master = await start(stdio)
            # Our child now (subreaper), a zombie at worst: the pid cannot be reused before we reap.
            self._pidfd = os.pidfd_open(pid)
            self.pid = pid
            if master is not None:
                self._master = master
                os.set_blocking(master, False)
                self._pipes.add(PipeEnd(master, STREAM_STDOUT))
                if self._size is not None:
                    self.resize(*self._size)
        except BaseException:
            if self._pidfd is None and pid:
                with contextlib.suppress(ProcessLookupError):
                    self._pidfd = os.pidfd_open(pid)
            if self._pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                procs.reap_later(self._pidfd)
                self._pidfd = None
            self._close_all()
            if not self._done.done():
                self._done.cancel()
            raise
        finally:
            for fd in theirs:
                _close(fd)
        for end in self._pipes.ends:
            os.set_blocking(end.fd, False)
        self._pipes.start()
        if self._stdin_fd is not None:
            os.set_blocking(self._stdin_fd, False)
        loop.add_reader(self._pidfd, self._on_exit)
        return pid

    # --- output -----------------------------------------------------------------------------------

    def _deliver(self, end: PipeEnd, data: bytes) -> None:
        if self._sink is not None:
            try:
                self._sink.send(end.stream, data)
            except Exception:  # a broken client must not break the process's output
                log.exception("exec sink failed")
                self._sink = None

    async def _drain_sink(self) -> None:
        if self._sink is not None:
            await self._sink.drain()

    # --- exit -------------------------------------------------------------------------------------

    def _on_exit(self) -> None:
        pidfd = self._pidfd
        if pidfd is None:
            return
        asyncio.get_running_loop().remove_reader(pidfd)
        learned = exitstatus.collect(pidfd, self.pid)
        # None: not our child and reaped by its parent first (no subreaper): the status is lost.
        self.exit_code = learned[0] if learned is not None else 255
        _close(pidfd)
        self._pidfd = None
        self._pipes.drain_all()
        self._close_all()
        if self._on_exit_cb is not None:
            try:
                self._on_exit_cb(self.exit_code)
            except Exception:
                log.exception("exec exit callback failed")
        if self._sink is not None:
            with contextlib.suppress(Exception):
                self._sink.end()
        if self._done is not None and not self._done.done():
            self._done.set_result(self.exit_code)

    async def wait(self) -> int:
        """The exit code, once the process exited and its output went to the sink."""
        assert self._done is not None, "spawn() first"
        return await asyncio.shield(self._done)

    @property
    def running(self) -> bool:
        return self._pidfd is not None

    # --- input and control ------------------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        """Write to the process's stdin (the pty with a TTY), waiting while its pipe is full."""
        fd = self._stdin_fd if not self.streams.tty else self._master
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view and fd is not None and self.exit_code is None:
            try:
                view = view[os.write(fd, view[:READ_CHUNK]) :]
            except BlockingIOError:
                writable: asyncio.Future[None] = loop.create_future()
                loop.add_writer(fd, _resolve, writable)
                try:
                    await writable
                finally:
                    loop.remove_writer(fd)
            except OSError:  # the process closed its stdin: it does not want the rest
                self.close_stdin()
                return
            fd = self._stdin_fd if not self.streams.tty else self._master

    def close_stdin(self) -> None:
        """EOF on a pipe stdin (a TTY has no EOF to give: the caller ends its session instead)."""
        fd, self._stdin_fd = self._stdin_fd, None
        _close(fd)

    def signal(self, signum: int) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signum)

    def resize(self, height: int, width: int) -> None:
        """Set the pty size now, or once the pty master arrives."""
        self._size = (height, width)
        if self._master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def detach_sink(self) -> None:
        """The listener went away: read and drop the output from now on."""
        self._sink = None
        self._pipes.kick()

    def close(self) -> None:
        """Abandon the process (daemon shutdown): stop watching it and close our fds."""
        if self._pidfd is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            _close(self._pidfd)
            self._pidfd = None
        self._close_all()
        if self._done is not None and not self._done.done():
            self._done.cancel()

    def _close_all(self) -> None:
        self._pipes.close()
        self._master = None  # it was one of the pipe ends
        self.close_stdin()


def runtime_starter(
    runtime: OciRuntime, cid: str, process: Process, *, pid_file: Path, console_socket: Path | None
) -> Starter:
    """Start through `<runtime> exec --detach` (the pty master, if any, over a console socket)."""

    async def start(stdio: Stdio) -> tuple[int, int | None]:
        console = receive_console_master(console_socket) if process.terminal and console_socket else None
        try:
            pid = await runtime.exec(
                cid,
                process,
                pid_file=pid_file,
                console_socket=console_socket if console else None,
                stdio=stdio,
            )
        except BaseException:
            if console is not None:
                console.cancel()
            raise
        finally:
            await asyncio.to_thread(_unlink, pid_file)
        if console is None:
            return pid, None
        try:
            return pid, await console
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # our child: its pid stays ours until reaped
            raise

    return start


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
