"""Reading a process's output fds (pipes, FIFOs, a pty master) on the event loop, with back-pressure.

Used by a container's stdio (`runtime/stdio.py`) and by exec processes (`runtime/execproc.py`):
loop callbacks, no task per stream. While the consumer is congested (a slow attached client),
reading stops; it resumes once the consumer drained, so nothing is buffered without bound. When
the process is gone, `drain_all` reads what it left in the pipes, ignoring congestion.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("pydock.pipes")

READ_CHUNK = 1 << 16


@dataclass(slots=True)
class PipeEnd:
    """Our read end of one output stream."""

    fd: int
    stream: int  # the attach protocol's stream number: 1 stdout, 2 stderr
    name: str = "stdout"  # the log's stream name
    paused: bool = False
    eof: bool = False


class OutputPipes:
    def __init__(
        self,
        deliver: Callable[[PipeEnd, bytes], None],
        *,
        congested: Callable[[], bool],
        drain: Callable[[], Awaitable[None]],
        on_all_eof: Callable[[], None] | None = None,
    ) -> None:
        self._deliver = deliver
        self._congested = congested
        self._drain = drain
        self.on_all_eof = on_all_eof
        self.ends: list[PipeEnd] = []
        self._resume: asyncio.Task[None] | None = None
        self._started = False

    def add(self, end: PipeEnd) -> None:
        self.ends.append(end)
        if self._started and not end.eof:
            asyncio.get_running_loop().add_reader(end.fd, self._on_readable, end)

    def start(self) -> None:
        self._started = True
        loop = asyncio.get_running_loop()
        for end in self.ends:
            if not end.eof and not end.paused:
                loop.add_reader(end.fd, self._on_readable, end)

    @property
    def all_eof(self) -> bool:
        return all(end.eof for end in self.ends)

    def _on_readable(self, end: PipeEnd) -> None:
        self._read_some(end, limit=4)
        if not end.eof and self._congested():
            self._pause()

    def _read_some(self, end: PipeEnd, limit: int) -> int:
        """Read up to `limit` chunks; returns bytes read. Marks EOF and unregisters at the end."""
        total = 0
        for _ in range(limit):
            try:
                data = os.read(end.fd, READ_CHUNK)
            except BlockingIOError:
                return total
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: every pty slave is closed
                    log.warning("output read failed: %s", exc)
                data = b""
            if not data:
                self._mark_eof(end)
                return total
            total += len(data)
            self._deliver(end, data)
        return total

    def _mark_eof(self, end: PipeEnd) -> None:
        if end.eof:
            return
        end.eof = True
        if not end.paused:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(end.fd)
        if self.all_eof and self.on_all_eof is not None:
            self.on_all_eof()

    def _pause(self) -> None:
        loop = asyncio.get_running_loop()
        for end in self.ends:
            if not end.eof and not end.paused:
                end.paused = True
                loop.remove_reader(end.fd)
        if self._resume is None:
            self._resume = asyncio.create_task(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        try:
            with contextlib.suppress(Exception):  # a failing consumer must not stop the reading
                await self._drain()
        finally:
            self._resume = None
            if self._started:
                loop = asyncio.get_running_loop()
                for end in self.ends:
                    if end.paused:
                        end.paused = False
                        if not end.eof:
                            loop.add_reader(end.fd, self._on_readable, end)

    def kick(self) -> None:
        """Stop waiting for the consumer to drain (it went away): read on at once."""
        if self._resume is not None:
            self._resume.cancel()

    def drain_all(self) -> None:
        """Read everything left in the pipes now (the writer is gone), ignoring congestion."""
        for end in self.ends:
            while not end.eof and self._read_some(end, limit=64):
                pass

    def close(self) -> None:
        """Stop reading and close every read end."""
        self._started = False
        loop = asyncio.get_running_loop()
        for end in self.ends:
            if not end.eof and not end.paused:
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_reader(end.fd)
            with contextlib.suppress(OSError):
                os.close(end.fd)
        self.ends.clear()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
