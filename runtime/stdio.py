"""A container's stdio: FIFOs (or a pty master), the log, and the attached clients.

Without a TTY, stdout and stderr are FIFOs in the container's exec-root dir. The container gets
them opened read-write, so it holds a reader itself: while pydockd is away its writes fill the
pipe buffer (raised to 1 MiB) and then block, never EPIPE, and the restarted daemon reopens the
FIFOs and drains them (issue 7). stdin is a FIFO too; a `StdinOnce` container gets it read-only so
closing our end delivers EOF, any other gets it read-write so it never sees EOF while the daemon is
away. With a TTY, the pty master comes from runc's console socket.

`StdioHub` moves bytes from the container to the log writer and to attached sinks (callbacks on
the event loop, no task per stream), and from attach clients to the container's stdin, buffering
stdin that arrives before the process starts. Back-pressure: when an attached client cannot keep
up, reading from the container pauses until it drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import stat
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from runtime.logs import STDERR, STDOUT, LogWriter
from runtime.pipes import OutputPipes, PipeEnd

log = logging.getLogger("pydock.stdio")

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
READ_CHUNK = 1 << 16
STDIN_HIGH_WATER = 1 << 20

# Stream numbers of the multiplexed attach protocol.
STREAM_STDOUT, STREAM_STDERR = 1, 2


@dataclass(slots=True)
class ContainerFds:
    """The fds handed to the OCI runtime for the container's stdin/stdout/stderr (None = /dev/null)."""

    stdin: int | None
    stdout: int | None
    stderr: int | None

    def close(self) -> None:
        for fd in {self.stdin, self.stdout, self.stderr}:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


class Sink:
    """An attached client's output side. Implementations write to a hijacked connection."""

    def send(self, stream: int, data: bytes) -> None:
        raise NotImplementedError

    @property
    def congested(self) -> bool:
        return False

    async def drain(self) -> None:
        return None

    def end(self) -> None:
        """The container's output ended (it exited): flush and finish the session."""


def _mkfifo(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.mkfifo(path, 0o600)


def _set_pipe_size(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


def _is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(path.lstat().st_mode)
    except FileNotFoundError:
        return False


@dataclass(slots=True)
class StdioHub:
    """Fan-out of one container's output, fan-in of its stdin. Owned by the container's supervisor."""

    directory: Path
    tty: bool
    open_stdin: bool
    stdin_once: bool
    log_writer: LogWriter | None = None
    sinks: set[Sink] = field(default_factory=set)
    on_output_eof: Callable[[], None] | None = None
    _pipes: OutputPipes | None = None
    _stdin_fd: int | None = None
    _stdin_buffer: bytearray = field(default_factory=bytearray)
    _stdin_eof_pending: bool = False
    _stdin_writable: asyncio.Event = field(default_factory=asyncio.Event)
    _tty_master: int | None = None
    _pending_size: tuple[int, int] | None = None

    @property
    def stdin_path(self) -> Path:
        return self.directory / "stdin.fifo"

    @property
    def stdout_path(self) -> Path:
        return self.directory / "stdout.fifo"

    @property
    def stderr_path(self) -> Path:
        return self.directory / "stderr.fifo"

    # --- setting up for a start -----------------------------------------------------------------

    def prepare(self) -> ContainerFds:
        """Create fresh FIFOs and open our ends; returns the container's ends (caller closes them
        once the runtime has started the container). Blocking but quick (no fsync)."""
        self.close_readers()
        container = ContainerFds(None, None, None)
        try:
            if self.open_stdin and not self.tty:
                _mkfifo(self.stdin_path)
                ours = os.open(self.stdin_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                _set_pipe_size(ours)
                mode = os.O_RDONLY if self.stdin_once else os.O_RDWR
                container.stdin = os.open(self.stdin_path, mode | os.O_CLOEXEC)
                self._set_stdin(ours)
            if not self.tty:
                for path, name, number in (
                    (self.stdout_path, STDOUT, STREAM_STDOUT),
                    (self.stderr_path, STDERR, STREAM_STDERR),
                ):
                    _mkfifo(path)
                    # The container's end first: opening read-write never blocks and makes it a
                    # reader too, so its writes never hit EPIPE while the daemon is away.
                    theirs = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                    _set_pipe_size(theirs)
                    ours = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                    if name == STDOUT:
                        container.stdout = theirs
                    else:
                        container.stderr = theirs
                    self.pipes.add(PipeEnd(ours, number, name))
        except BaseException:
            container.close()
            self.close_readers()
            raise
        return container

    def reopen(self) -> None:
        """After a daemon restart: reopen our ends of FIFOs the running container still holds."""
        self.close_readers()
        if not self.tty:
            for path, name, number in (
                (self.stdout_path, STDOUT, STREAM_STDOUT),
                (self.stderr_path, STDERR, STREAM_STDERR),
            ):
                if _is_fifo(path):
                    ours = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                    self.pipes.add(PipeEnd(ours, number, name))
            if self.open_stdin and _is_fifo(self.stdin_path):
                with contextlib.suppress(OSError):
                    self._set_stdin(os.open(self.stdin_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))

    def set_tty_master(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._tty_master = fd
        self.pipes.add(PipeEnd(fd, STREAM_STDOUT, STDOUT))
        if self.open_stdin:
            self._set_stdin(os.dup(fd))
        if self._pending_size is not None:
            self.resize(*self._pending_size)

    def _set_stdin(self, fd: int) -> None:
        self._stdin_fd = fd
        self._stdin_writable.set()
        if self._stdin_buffer:
            self._flush_stdin()
        if self._stdin_eof_pending and not self._stdin_buffer:
            self._close_stdin_fd()

    # --- output ---------------------------------------------------------------------------------

    @property
    def pipes(self) -> OutputPipes:
        if self._pipes is None:
            self._pipes = OutputPipes(
                self._dispatch,
                congested=lambda: any(sink.congested for sink in self.sinks),
                drain=self._drain_sinks,
                on_all_eof=self._on_all_eof,
            )
        return self._pipes

    def start_reading(self) -> None:
        self.pipes.start()

    def _dispatch(self, end: PipeEnd, data: bytes) -> None:
        if self.log_writer is not None:
            self.log_writer.write(end.name, data)
        for sink in list(self.sinks):
            try:
                sink.send(end.stream, data)
            except Exception:  # a broken client must not break the container's output
                log.exception("attach sink failed")
                self.sinks.discard(sink)

    async def _drain_sinks(self) -> None:
        await asyncio.gather(*(sink.drain() for sink in list(self.sinks)), return_exceptions=True)

    def _on_all_eof(self) -> None:
        if self.on_output_eof is not None:
            self.on_output_eof()

    def drain_output(self) -> None:
        """Read everything the container left in its pipes (after it exited), ignoring congestion."""
        self.pipes.drain_all()

    @property
    def output_done(self) -> bool:
        return self.pipes.all_eof

    def finish(self) -> None:
        """The container stopped: flush the log, end every attach session, close our fds."""
        self.drain_output()
        if self.log_writer is not None:
            self.log_writer.flush_partial()
        for sink in list(self.sinks):
            with contextlib.suppress(Exception):
                sink.end()
        self.sinks.clear()
        self.close_readers()
        self._close_stdin_fd()
        self._stdin_buffer.clear()
        self._stdin_eof_pending = False

    def close_readers(self) -> None:
        if self._pipes is not None:
            self._pipes.close()
        self._tty_master = None

    # --- attach ---------------------------------------------------------------------------------

    def attach(self, sink: Sink) -> Callable[[], None]:
        self.sinks.add(sink)

        def detach() -> None:
            self.sinks.discard(sink)

        return detach

    # --- stdin ----------------------------------------------------------------------------------

    def write_stdin(self, data: bytes) -> None:
        """Queue bytes for the container's stdin (buffered until it starts)."""
        if not self.open_stdin or self._stdin_eof_pending:
            return
        self._stdin_buffer += data
        if self._stdin_fd is not None:
            self._flush_stdin()

    async def stdin_drained(self) -> None:
        """Wait until the stdin buffer is below its high-water mark (attach flow control)."""
        while len(self._stdin_buffer) > STDIN_HIGH_WATER and self._stdin_fd is not None:
            self._stdin_writable.clear()
            await self._stdin_writable.wait()

    def _flush_stdin(self) -> None:
        fd = self._stdin_fd
        if fd is None:
            return
        loop = asyncio.get_running_loop()
        while self._stdin_buffer:
            try:
                written = os.write(fd, self._stdin_buffer[:READ_CHUNK])
            except BlockingIOError:
                loop.add_writer(fd, self._on_stdin_writable)
                return
            except OSError:  # the container closed its stdin: drop what it will never read
                self._stdin_buffer.clear()
                self._close_stdin_fd()
                return
            del self._stdin_buffer[:written]
        self._stdin_writable.set()
        if self._stdin_eof_pending:
            self._close_stdin_fd()

    def _on_stdin_writable(self) -> None:
        if self._stdin_fd is not None:
            asyncio.get_running_loop().remove_writer(self._stdin_fd)
        self._flush_stdin()

    def close_stdin(self) -> None:
        """The attached client's stdin ended: deliver EOF after the buffered bytes."""
        self._stdin_eof_pending = True
        if self._stdin_fd is not None and not self._stdin_buffer:
            self._close_stdin_fd()

    def _close_stdin_fd(self) -> None:
        fd, self._stdin_fd = self._stdin_fd, None
        self._stdin_writable.set()
        if fd is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_writer(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- tty ------------------------------------------------------------------------------------

    def resize(self, height: int, width: int) -> None:
        self._pending_size = (height, width)
        if self._tty_master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._tty_master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


AsyncCallback = Callable[[], Awaitable[None]]
