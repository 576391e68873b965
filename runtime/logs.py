"""The json-file log driver: Docker's on-disk format, rotation, and reading back.

Each record is one line: `{"log":"hello\\n","stream":"stdout","time":"2026-11-28T19:32:53.204463039Z"}`.
Output is split at newlines; a line longer than 16 KiB is written in parts (only the last part ends
with "\\n"), as dockerd does. Bytes that are not UTF-8 survive the round trip (they are stored as
lone-surrogate escapes and restored on read).

`LogWriter` is owned by one container's supervisor and writes from the event loop (page-cache
writes without fsync do not block). `read_logs` serves `docker logs` (tail, since/until,
follow): followers are woken by the writer, not by polling, and end when the writer closes.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


_parsed_second: tuple[str, int] = ("", 0)


def parse_time(text: str) -> int:
    """RFC 3339 UTC (any fraction length) → ns since the epoch; the date part is cached per second."""
    global _parsed_second
    main, _, frac = text.rstrip("Z").partition(".")
    cached_text, cached_seconds = _parsed_second
    if main == cached_text:
        seconds = cached_seconds
    else:
        seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
        _parsed_second = (main, seconds)
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


def encode_record(data: bytes, stream: str, now_ns: int) -> bytes:
    text = data.decode("utf-8", "surrogateescape")
    return (
        b'{"log":'
        + json.dumps(text).encode()
        + b',"stream":"'
        + stream.encode()
        + b'","time":"'
        + format_time(now_ns).encode()
        + b'"}\n'
    )


@dataclass(slots=True, frozen=True)
class LogRecord:
    stream: str
    data: bytes
    time_ns: int
    time_text: str


_TAIL = re.compile(rb'","stream":"(stdout|stderr)","time":"([^"]+)"(?:,"attrs":\{[^}]*\})?\}$')


def decode_record(line: bytes) -> LogRecord | None:
    """Parse one log line; None for a line that is not a record (e.g. torn by a crash)."""
    line = line.rstrip(b"\n")
    match = _TAIL.search(line)
    if match is None or not line.startswith(b'{"log":"'):
        return None
    body = line[8 : match.start()]
    if b"\\" in body:
        try:
            text: str = json.loads(b'"' + body + b'"')
        except ValueError:
            return None
        data = text.encode("utf-8", "surrogateescape")
    else:
        data = body
    stamp = match.group(2).decode()
    try:
        when = parse_time(stamp)
    except ValueError:
        return None
    return LogRecord(match.group(1).decode(), data, when, stamp)


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
                out.append(encode_record(bytes(buf[start : start + MAX_LINE]), stream, when))
                start += MAX_LINE
            out.append(encode_record(bytes(buf[start:line_end]), stream, when))
            start = line_end
        while len(buf) - start >= MAX_LINE:
            out.append(encode_record(bytes(buf[start : start + MAX_LINE]), stream, when))
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


def log_files(path: Path) -> list[Path]:
    """The current log file and its rotated predecessors, oldest first."""
    rotated: list[tuple[int, Path]] = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    return [p for _, p in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


def _tail_lines(files: list[Path], count: int) -> list[bytes]:
    """The last `count` record lines across `files` (oldest first), reading from the end."""
    lines: list[bytes] = []
    for path in reversed(files):
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            pos = f.tell()
            rest = b""
            while pos > 0 and len(lines) < count:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step) + rest
                parts = block.split(b"\n")
                rest = parts[0]
                for part in reversed(parts[1:]):
                    if part:
                        lines.append(part)
                        if len(lines) >= count:
                            break
            if rest and len(lines) < count and pos == 0:
                lines.append(rest)
        if len(lines) >= count:
            break
    return list(reversed(lines[:count]))


@dataclass(slots=True)
class LogQuery:
    stdout: bool = True
    stderr: bool = True
    since_ns: int | None = None
    until_ns: int | None = None
    tail: int | None = None  # None = all
    follow: bool = False


def _wanted(record: LogRecord, query: LogQuery) -> bool:
    if record.stream == STDOUT and not query.stdout:
        return False
    if record.stream == STDERR and not query.stderr:
        return False
    if query.since_ns is not None and record.time_ns < query.since_ns:
        return False
    return not (query.until_ns is not None and record.time_ns > query.until_ns)


async def read_logs(
    path: Path, query: LogQuery, writer: LogWriter | None = None
) -> AsyncIterator[list[LogRecord]]:
    """Batches of records matching `query`; with `follow`, live ones until the writer closes.

    Blocking file reads run in a thread in big blocks; cancellation ends the stream.
    """
    if query.tail is not None:
        files = log_files(path)
        lines = await asyncio.to_thread(_tail_lines, files, query.tail) if query.tail > 0 else []
        batch = [r for r in map(decode_record, lines) if r is not None and _wanted(r, query)]
        if batch:
            yield batch
        if not query.follow or writer is None or writer.closed:
            return
        f = await asyncio.to_thread(_open_at_end, path)
        generation = writer.generation
    else:
        files = log_files(path)
        for old in files[:-1]:
            async for batch in _read_whole(old, query):
                yield batch
        opened = await asyncio.to_thread(_open_or_none, path)
        if opened is None:
            return
        f = opened
        generation = writer.generation if writer else 0
    try:
        pending = b""
        while True:
            seen = writer.seq if writer is not None else 0
            block = await asyncio.to_thread(f.read, 1 << 20)
            if block:
                pending += block
                cut = pending.rfind(b"\n")
                if cut >= 0:
                    complete, pending = pending[: cut + 1], pending[cut + 1 :]
                    batch = [
                        r
                        for r in map(decode_record, complete.split(b"\n")[:-1])
                        if r is not None and _wanted(r, query)
                    ]
                    if batch:
                        yield batch
                continue
            if not query.follow or writer is None or writer.closed:
                return
            if query.until_ns is not None and time.time_ns() > query.until_ns:
                return
            if writer.generation != generation:
                # Rotated: the open file is complete; continue with the new one.
                f.close()
                reopened = await asyncio.to_thread(_open_or_none, path)
                if reopened is None:
                    return
                f = reopened
                generation = writer.generation
                continue
            await writer.wait_changed(seen)
    finally:
        f.close()


async def _read_whole(path: Path, query: LogQuery) -> AsyncIterator[list[LogRecord]]:
    f = await asyncio.to_thread(_open_or_none, path)
    if f is None:
        return
    try:
        pending = b""
        while block := await asyncio.to_thread(f.read, 1 << 20):
            pending += block
            cut = pending.rfind(b"\n")
            if cut < 0:
                continue
            complete, pending = pending[: cut + 1], pending[cut + 1 :]
            batch = [
                r
                for r in map(decode_record, complete.split(b"\n")[:-1])
                if r is not None and _wanted(r, query)
            ]
            if batch:
                yield batch
    finally:
        f.close()


def _open_or_none(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _open_at_end(path: Path) -> BinaryIO:
    f = open(path, "ab+")  # noqa: SIM115 - the reader closes it; creates a missing file
    f.seek(0, os.SEEK_END)
    return f
