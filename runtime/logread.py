"""Reading json-file logs back: `docker logs` (tail, since/until, follow) and `attach?logs=1`.

Reading is built for throughput: files are read in 1 MiB blocks, and each block is decoded *and
rendered* (framed for the client, timestamps added, consecutive records of one stream merged into
one frame) in a worker thread, so the event loop only moves large buffers. Records are decoded
without a JSON parser unless they contain escapes; timestamps are compared as strings (pydock
writes them with a fixed 9-digit fraction, so they sort as text) and never parsed.

Followers are woken by the container's `LogWriter`, not by polling, and end when it closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runtime.aiters import closing
from runtime.logs import LogWriter, format_time

BLOCK = 1 << 20
_HEAD = b'{"log":"'
_STREAM = b'","stream":"'
_TIME = b'","time":"'

_ESCAPE = re.compile(rb'\\(["\\/bfnrt])')
_UNESCAPED = {
    b'"': b'"',
    b"\\": b"\\",
    b"/": b"/",
    b"b": b"\b",
    b"f": b"\f",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
}


def _unescape(match: re.Match[bytes]) -> bytes:
    return _UNESCAPED[match.group(1)]


# (stream b"stdout" | b"stderr", payload, RFC 3339 stamp)
Record = tuple[bytes, bytes, bytes]
Renderer = Callable[[list[Record]], bytes]


@dataclass(slots=True)
class LogQuery:
    stdout: bool = True
    stderr: bool = True
    since_ns: int | None = None
    until_ns: int | None = None
    tail: int | None = None  # None = all
    follow: bool = False

    def bounds(self) -> tuple[bytes | None, bytes | None]:
        since = format_time(self.since_ns).encode() if self.since_ns is not None else None
        until = format_time(self.until_ns).encode() if self.until_ns is not None else None
        return since, until


def decode_line(line: bytes) -> Record | None:
    """One json-file line → (stream, payload, stamp); None for a torn or foreign line."""
    if not line.startswith(_HEAD):
        return None
    cut = line.rfind(_STREAM)
    if cut < 0:
        return None
    stream = line[cut + 12 : cut + 18]
    if line[cut + 18 : cut + 28] != _TIME:
        return None
    end = line.find(b'"', cut + 28)
    if end < 0:
        return None
    body = line[8:cut]
    if b"\\" in body:
        if body.endswith(b"\\n") and b"\\" not in body[:-2]:
            body = body[:-2] + b"\n"  # the common case: one line of plain text
        elif b"\\u" not in body:
            body = _ESCAPE.sub(_unescape, body)
        else:
            try:
                text: str = json.loads(b'"' + body + b'"')
            except ValueError:
                return None
            body = text.encode("utf-8", "surrogateescape")
    return stream, body, line[cut + 28 : end]


def decode_lines(lines: Iterable[bytes], query: LogQuery) -> list[Record]:
    want_out, want_err = query.stdout, query.stderr
    since, until = query.bounds()
    out: list[Record] = []
    for line in lines:
        record = decode_line(line)
        if record is None:
            continue
        stream, _, stamp = record
        if stream == b"stdout":
            if not want_out:
                continue
        elif not want_err:
            continue
        if since is not None and stamp < since:
            continue
        if until is not None and stamp > until:
            continue
        out.append(record)
    return out


def log_files(path: Path) -> list[Path]:
    """The current log file and its rotated predecessors, oldest first."""
    rotated: list[tuple[int, Path]] = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    return [p for _, p in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


def tail_lines(files: list[Path], count: int) -> list[bytes]:
    """The last `count` record lines across `files` (oldest first), reading from the end."""
    lines: list[bytes] = []
    for path in reversed(files):
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            pos = f.tell()
            rest = b""
            while pos > 0 and len(lines) < count:
                step = min(BLOCK, pos)
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


def _render_block(block: bytes, query: LogQuery, render: Renderer) -> bytes:
    return render(decode_lines(block.split(b"\n"), query))


def _open_or_none(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _open_at_end(path: Path) -> BinaryIO:
    f = open(path, "ab+")  # noqa: SIM115 - the reader closes it; creates a missing file
    f.seek(0, os.SEEK_END)
    return f


async def _stream_file(
    f: BinaryIO, query: LogQuery, render: Renderer, writer: LogWriter | None, path: Path
) -> AsyncIterator[bytes]:
    """Rendered chunks of `f` from its current position; with a live writer, follow it."""
    pending = b""
    generation = writer.generation if writer is not None else 0
    try:
        while True:
            seen = writer.seq if writer is not None else 0
            block = await asyncio.to_thread(f.read, BLOCK)
            if block:
                pending += block
                cut = pending.rfind(b"\n")
                if cut >= 0:
                    complete, pending = pending[:cut], pending[cut + 1 :]
                    rendered = await asyncio.to_thread(_render_block, complete, query, render)
                    if rendered:
                        yield rendered
                continue
            if not query.follow or writer is None or writer.closed:
                return
            if query.until_ns is not None and time.time_ns() > query.until_ns:
                return
            if writer.generation != generation:
                # Rotated: what is open is complete. Files rotated after it (newest is `.1`) come
                # next, oldest first, then the current file. More rotations than `max_file` keeps
                # while we read lose the ones in between, as with dockerd.
                f.close()
                skipped = min(writer.generation - generation, writer.max_file) - 1
                generation = writer.generation
                for index in range(skipped, 0, -1):
                    rotated = await asyncio.to_thread(_open_or_none, path.with_name(f"{path.name}.{index}"))
                    if rotated is not None:
                        async with closing(_stream_file(rotated, query, render, None, path)) as rest:
                            async for chunk in rest:
                                yield chunk
                reopened = await asyncio.to_thread(_open_or_none, path)
                if reopened is None:
                    return
                f = reopened
                continue
            await writer.wait_changed(seen)
    finally:
        f.close()


async def read_logs(
    path: Path, query: LogQuery, writer: LogWriter | None, render: Renderer
) -> AsyncIterator[bytes]:
    """The log as rendered chunks (`render` turns decoded records into the client's bytes; it
    runs in a worker thread). With `query.follow` and a live `writer`, goes on until it closes.
    Cancellation ends the stream."""
    if query.tail is not None:
        files = await asyncio.to_thread(log_files, path)
        if query.tail > 0:
            lines = await asyncio.to_thread(tail_lines, files, query.tail)
            rendered = await asyncio.to_thread(_render_block, b"\n".join(lines), query, render)
            if rendered:
                yield rendered
        if not query.follow or writer is None or writer.closed:
            return
        f = await asyncio.to_thread(_open_at_end, path)
        async with closing(_stream_file(f, query, render, writer, path)) as live:
            async for chunk in live:
                yield chunk
        return
    files = await asyncio.to_thread(log_files, path)
    for old in files[:-1]:
        rotated = await asyncio.to_thread(_open_or_none, old)
        if rotated is not None:
            async with closing(_stream_file(rotated, query, render, None, old)) as chunks:
                async for chunk in chunks:
                    yield chunk
    current = await asyncio.to_thread(_open_or_none, path)
    if current is None:
        return
    async with closing(_stream_file(current, query, render, writer, path)) as chunks:
        async for chunk in chunks:
            yield chunk
