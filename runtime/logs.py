"""The json-file log driver: Docker's on-disk format, rotation, and reading back.

Each record is one line: `{"log":"hello\\n","stream":"stdout","time":"2026-11-28T19:32:53.204463039Z"}`.
Output is split at newlines; a line longer than 16 KiB is written in parts (only the last part ends
with "\\n"), as dockerd does. Bytes that are not UTF-8 survive the round trip (they are stored as
lone-surrogate escapes and restored on read).

`LogWriter` is owned by one container's supervisor and writes from the event loop (page-cache
writes without fsync do not block). Reading back is `runtime/logread.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger("pydock.logs")

MAX_LINE = 16 * 1024
STDOUT, STDERR = "stdout", "stderr"
_SIZE = re.compile(r"^(\d+)([kmg]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """Docker's `max-size` values: 100, 10k, 10m, 1g."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"invalid size: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


class _Clock:
    """RFC 3339 timestamps with nanoseconds, formatting the date part once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def stamp(self, now_ns: int) -> str:
        second, nanos = divmod(now_ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{nanos:09d}Z"


_clock = _Clock()


def format_time(now_ns: int) -> str:
    return _clock.stamp(now_ns)


# Bytes that need no JSON escaping (printable ASCII but `"` and `\\`).
_PLAIN = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def _tail(stream: str, stamp: bytes) -> bytes:
    return b'","stream":"' + stream.encode() + b'","time":"' + stamp + b'"}\n'


def _encode(data: bytes, tail: bytes) -> bytes:
    """One record; `tail` is `_tail(stream, stamp)` (shared by the records of one write)."""
    body = data[:-1] if data.endswith(b"\n") else data
    if _PLAIN.fullmatch(body):  # the common case: plain text, maybe a final newline
        return b'{"log":"' + body + (b"\\n" if body is not data else b"") + tail
    text = json.dumps(data.decode("utf-8", "surrogateescape"))
    return b'{"log":' + text.encode()[:-1] + tail


def encode_record(data: bytes, stream: str, now_ns: int) -> bytes:
    return _encode(data, _tail(stream, format_time(now_ns).encode()))


class LogWriter:
    """Appends records to `<cid>-json.log`, rotating at `max_size` into `.1` … `.<max_file-1>`."""

    def __init__(self, path: Path, *, max_size: int | None = None, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        self._partial: dict[str, bytearray] = {STDOUT: bytearray(), STDERR: bytearray()}
        self._waiters: set[asyncio.Future[None]] = set()
        self.seq = 0  # bumps on every append, rotation and close
        self.generation = 0  # bumps on each rotation so followers reopen
        self.dropped = 0  # bytes the disk refused
        self._last_drop_report = -1e9
        self.closed = False

    def write(self, stream: str, data: bytes, now_ns: int | None = None) -> None:
        """Split `data` into lines and append them; an unterminated tail waits for more."""
        if self.closed or not data:
            return
        when = now_ns if now_ns is not None else time.time_ns()
        tail = _tail(stream, format_time(when).encode())
        buf = self._partial[stream]
        buf += data
        out: list[bytes] = []
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line_end = end + 1
            while line_end - start > MAX_LINE:
                out.append(_encode(bytes(buf[start : start + MAX_LINE]), tail))
                start += MAX_LINE
            out.append(_encode(bytes(buf[start:line_end]), tail))
            start = line_end
        while len(buf) - start >= MAX_LINE:
            out.append(_encode(bytes(buf[start : start + MAX_LINE]), tail))
            start += MAX_LINE
        del buf[:start]
        if out:
            self._append_records(out)

    def flush_partial(self) -> None:
        """Write unterminated output as a final partial record (the stream ended)."""
        for stream, buf in self._partial.items():
            if buf:
                self._append_records([encode_record(bytes(buf), stream, time.time_ns())])
                buf.clear()

    def _append_records(self, records: list[bytes]) -> None:
        """Append whole records; with `max_size`, rotate between records, never inside one."""
        if self.max_size is None:
            self._append(b"".join(records))
            return
        group: list[bytes] = []
        size = self._size
        for record in records:
            if size + len(record) > self.max_size and size > 0:
                if group:
                    self._append(b"".join(group))
                    group = []
                self._rotate()
                size = 0
            group.append(record)
            size += len(record)
        if group:
            self._append(b"".join(group))

    def _append(self, blob: bytes) -> None:
        view = memoryview(blob)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            # A full disk: the container's output still reaches attached clients; the log
            # loses these records (as dockerd's json-file driver does) and says so, once a minute.
            self.dropped += len(view)
            now = time.monotonic()
            if now - self._last_drop_report > 60:
                self._last_drop_report = now
                log.error("log write failed, output dropped: %s", exc, extra={"log": str(self.path)})
        self._size += len(blob) - len(view)
        self.notify()

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.max_file > 1:
            for index in range(self.max_file - 1, 0, -1):
                src = self.path if index == 1 else self.path.with_name(f"{self.path.name}.{index - 1}")
                with contextlib.suppress(FileNotFoundError):
                    os.replace(src, self.path.with_name(f"{self.path.name}.{index}"))
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        else:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o640)
        self._size = 0
        self.generation += 1

    async def wait_changed(self, seen_seq: int) -> None:
        """Return once anything happened after `seen_seq` (a value of `self.seq`)."""
        if self.seq != seen_seq or self.closed:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)

    def notify(self) -> None:
        self.seq += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def close(self) -> None:
        if not self.closed:
            self.flush_partial()
            self.closed = True
            os.close(self._fd)
            self.notify()
