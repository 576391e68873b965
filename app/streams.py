"""Response streams of the Engine API: stdio frames, JSON-line streams, chunked JSON.

- Multiplexed stdio (attach, logs, exec without a TTY): an 8-byte header
  `[stream, 0, 0, 0, size(4, big-endian)]` before each payload; stream 0 stdin, 1 stdout,
  2 stderr, 3 a daemon error.
- JSON message streams (pull, push, load, import): one object per line, `\\r\\n`-terminated as
  dockerd writes them; an error after the 200 goes in-band as
  `{"errorDetail":{"message":m},"error":m}`.
- JSON-line streams (events, stats, wait): `\\n`-terminated, headers flushed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from runtime.aiters import closing
from runtime.errors import PydockError

log = logging.getLogger("pydock.api")

STDIN, STDOUT, STDERR, SYSERR = 0, 1, 2, 3
_HEADER = struct.Struct(">BxxxI")
MAX_FRAME = 1 << 20


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed-stream frame (large payloads split so frames stay bounded)."""
    if len(data) <= MAX_FRAME:
        return _HEADER.pack(stream, len(data)) + data
    return b"".join(
        _HEADER.pack(stream, len(chunk)) + chunk
        for chunk in (data[i : i + MAX_FRAME] for i in range(0, len(data), MAX_FRAME))
    )


def parse_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split complete frames off `buf`; return them and the incomplete rest (for clients/tests)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while len(buf) - pos >= _HEADER.size:
        stream, size = _HEADER.unpack_from(buf, pos)
        if len(buf) - pos - _HEADER.size < size:
            break
        start = pos + _HEADER.size
        out.append((stream, buf[start : start + size]))
        pos = start + size
    return out, buf[pos:]


COALESCE = 1 << 16


def log_renderer(
    *, tty: bool, timestamps: bool = False, details: bool = False
) -> Callable[[list[tuple[bytes, bytes, bytes]]], bytes]:
    """Turn decoded log records `(stream, payload, stamp)` into what a logs/attach client reads:
    raw bytes for a TTY container, else 8-byte frames, consecutive records of one stream merged
    into frames of up to 64 KiB (clients demultiplex any frame size; fewer frames are cheaper)."""

    def render(records: list[tuple[bytes, bytes, bytes]]) -> bytes:
        out = bytearray()
        current = -1
        pending = bytearray()
        for stream, payload, stamp in records:
            if details:
                payload = b" " + payload
            if timestamps:
                payload = stamp + b" " + payload
            if tty:
                out += payload
                continue
            number = STDOUT if stream == b"stdout" else STDERR
            if number != current or len(pending) >= COALESCE:
                if pending:
                    out += _HEADER.pack(current, len(pending)) + pending
                    pending.clear()
                current = number
            pending += payload
        if pending:
            out += _HEADER.pack(current, len(pending)) + pending
        return bytes(out)

    return render


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # integers past 64 bits and other types orjson refuses
        return json.dumps(obj, separators=(",", ":")).encode()


def error_message(message: str) -> dict[str, Any]:
    return {"errorDetail": {"message": message}, "error": message}


async def _json_messages(source: AsyncIterator[Mapping[str, Any]], terminator: bytes) -> AsyncIterator[bytes]:
    try:
        async with closing(source):
            async for obj in source:
                yield dumps(obj) + terminator
    except PydockError as exc:
        yield dumps(error_message(str(exc))) + terminator
    except Exception as exc:  # an unexpected failure mid-stream still ends the stream cleanly
        log.exception("stream failed")
        yield dumps(error_message(f"{type(exc).__name__}: {exc}")) + terminator


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that always closes its body iterator when the response ends.

    Starlette stops iterating when the client goes away but leaves the async generator
    suspended at its `yield`: its `finally` (releasing a container's files, an event
    subscription, a log reader) would then wait for the garbage collector. Closing it here
    runs that cleanup at once, however the response ended.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await asyncio.shield(aclose())


def json_message_stream(source: AsyncIterator[Mapping[str, Any]]) -> StreamingResponse:
    """A progress stream (pull, push, load, import): `\\r\\n` lines, errors in-band."""
    return ClosingStreamingResponse(_json_messages(source, b"\r\n"), media_type="application/json")


def json_lines(
    source: AsyncIterator[Mapping[str, Any]], media_type: str | None = "application/json"
) -> StreamingResponse:
    """A `\\n`-terminated JSON-lines stream (events, stats, wait); headers go out at once."""
    return ClosingStreamingResponse(_json_messages(source, b"\n"), media_type=media_type)
