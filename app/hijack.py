"""Docker's connection hijack: `Upgrade: tcp` → `101 UPGRADED` → a raw bidirectional stream.

`docker run`, `docker attach` and `docker exec` send `POST .../attach` or `POST /exec/{id}/start`
with `Connection: Upgrade` and `Upgrade: tcp`, then expect `HTTP/1.1 101 UPGRADED` and raw bytes
both ways on the same connection, with the client's stdin EOF arriving as a half-close. uvicorn
only knows websocket upgrades, so `HijackProtocol` extends its httptools protocol:

- a request carrying `Upgrade: tcp` gets a `HijackChannel` in `scope["extensions"]["pydock.hijack"]`;
  the route validates the request as usual (and may answer a normal error response), then calls
  `await channel.accept()`, which writes the 101 and hands the transport to the channel;
- llhttp treats everything after an upgrade request's headers as the new protocol, including a
  body (exec start sends `{"Detach":false,"Tty":false}`); the protocol cuts the declared body
  (Content-Length or chunked) off the raw bytes and gives it to the app as the request body;
- raw bytes that arrive before `accept()` (stdin sent before `start`) are buffered, flow
  controlled, and so is the EOF (`eof_received` keeps the transport open for writing);
- once hijacked the HTTP cycle is marked complete so uvicorn writes nothing more; the route's
  return value is `HijackedResponse`, which sends nothing.

This module owns no container logic: attach and exec use the channel through its small API.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httptools
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.fastpath import is_ping, ping_app, ping_response

EXTENSION = "pydock.hijack"
READ_HIGH_WATER = 1 << 20
MAX_UPGRADE_BODY = 1 << 20  # the JSON of an exec start; the body is buffered whole
MAX_CHUNK_LINE = 4096  # a chunk-size or trailer line (RFC 9112 puts no limit; we must)
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"


class _ChunkedDecoder:
    """Just enough of RFC 9112 chunked decoding for a request body cut from a raw stream."""

    def __init__(self, max_body: int = MAX_UPGRADE_BODY) -> None:
        self._max_body = max_body
        self._buf = bytearray()
        self._remaining = -1  # bytes left in the current chunk; -1 = reading a size line
        self._trailer = False
        self.body = bytearray()
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Consume `data`; return what follows the body once it is complete."""
        self._buf += data
        while not self.done:
            if self._trailer:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    self._check_line()
                    return b""
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                if not line:
                    self.done = True
                continue
            if self._remaining < 0:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    self._check_line()
                    return b""
                size_text = bytes(self._buf[:end]).split(b";", 1)[0].strip(b" \t")
                del self._buf[: end + 2]
                if not _CHUNK_SIZE.fullmatch(size_text):  # int() would take "0x1", "-1", "1_0"
                    raise ValueError("invalid chunk size")
                size = int(size_text, 16)
                if len(self.body) + size > self._max_body:
                    raise ValueError("request body too large")
                if size == 0:
                    self._trailer = True
                    continue
                self._remaining = size
            if len(self._buf) < self._remaining + 2:
                return b""
            if self._buf[self._remaining : self._remaining + 2] != b"\r\n":
                raise ValueError("chunk data not followed by CRLF")
            self.body += self._buf[: self._remaining]
            del self._buf[: self._remaining + 2]
            self._remaining = -1
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def _check_line(self) -> None:
        if len(self._buf) > MAX_CHUNK_LINE:
            raise ValueError("chunk line too long")


class HijackChannel:
    """The raw byte stream of one hijacked connection, as seen by a route handler."""

    def __init__(self, protocol: HijackProtocol) -> None:
        self._protocol = protocol
        self._buffer = bytearray()
        self._eof = False
        self._lost = False
        self._readable = asyncio.Event()
        self._closed = asyncio.Event()
        self.accepted = False

    # --- fed by the protocol ------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._buffer += data
        self._readable.set()
        if len(self._buffer) > READ_HIGH_WATER:
            self._protocol.pause_raw_reading()

    def _feed_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def _connection_lost(self) -> None:
        self._lost = True
        self._eof = True
        self._readable.set()
        self._closed.set()

    # --- used by routes -----------------------------------------------------------------------

    async def accept(self, content_type: str = RAW_STREAM, headers: dict[str, str] | None = None) -> None:
        """Answer `101 UPGRADED` and take the connection over from HTTP."""
        if self.accepted:
            return
        self.accepted = True
        lines = [
            b"HTTP/1.1 101 UPGRADED\r\n",
            b"Content-Type: " + content_type.encode() + b"\r\n",
            b"Connection: Upgrade\r\n",
            b"Upgrade: tcp\r\n",
        ]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}\r\n".encode())
        lines.append(b"\r\n")
        self._protocol.take_over()
        self.write(b"".join(lines))
        await self.drain()

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buffer

    @property
    def is_closed(self) -> bool:
        return self._lost or self._protocol.transport.is_closing()

    async def read(self, limit: int = 65536) -> bytes:
        """Next bytes from the client; b"" once it half-closed or went away."""
        while not self._buffer:
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        if len(self._buffer) < READ_HIGH_WATER // 2:
            self._protocol.resume_raw_reading()
        return data

    def write(self, data: bytes) -> None:
        if data and not self.is_closed:
            self._protocol.transport.write(data)

    async def drain(self) -> None:
        if not self.is_closed:
            await self._protocol.flow.drain()

    def close_write(self) -> None:
        """Half-close our side (the client sees EOF but may still send)."""
        transport = self._protocol.transport
        if not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def close(self) -> None:
        transport = self._protocol.transport
        if not transport.is_closing():
            transport.close()

    async def wait_closed(self) -> None:
        """Returns when the client connection is gone (not merely half-closed)."""
        await self._closed.wait()


async def pump_input(
    channel: HijackChannel, write: Callable[[bytes], Awaitable[None]], *, detach_keys: bytes = b""
) -> str:
    """Client bytes → `write` until the client half-closes ("eof") or, when `detach_keys` is set
    (a TTY session), types that sequence ("detach": the bytes before it are delivered, the
    sequence itself is not; bytes of a partial match are held back until it breaks)."""
    matched = 0
    while True:
        data = await channel.read()
        if not data:
            return "eof"
        if detach_keys:
            out = bytearray()
            for byte in data:
                if byte == detach_keys[matched]:
                    matched += 1
                    if matched == len(detach_keys):
                        if out:
                            await write(bytes(out))
                        return "detach"
                    continue
                if matched:
                    out += detach_keys[:matched]
                    matched = 0
                out.append(byte)
            data = bytes(out)
        if data:
            await write(data)


class HijackedResponse(Response):
    """What a route returns after `accept()`: the connection is no longer HTTP, send nothing."""

    def __init__(self) -> None:
        super().__init__(status_code=101)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


def hijack_channel(request: Request) -> HijackChannel | None:
    """The channel of a request that asked for `Upgrade: tcp`, or None."""
    extensions: dict[str, Any] = request.scope.get("extensions") or {}
    channel = extensions.get(EXTENSION)
    return channel if isinstance(channel, HijackChannel) else None


class HijackProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus Docker's `Upgrade: tcp` hijack."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._channel: HijackChannel | None = None
        self._raw = False
        self._body_length = 0
        self._body_chunked: _ChunkedDecoder | None = None
        self._body = bytearray()
        self._raw_paused = False
        self._fast_ping: bytes | None = None

    # --- request parsing ----------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        if is_ping(method, self.url):
            if (self.cycle is None or self.cycle.response_complete) and not self.pipeline:
                # Answered in on_message_complete, without an ASGI cycle (app/fastpath.py).
                self._fast_ping = method
                return
            routed, self.app = self.app, ping_app  # behind a pipelined request: keep the order
            try:
                super().on_headers_complete()
            finally:
                self.app = routed
            return
        channel: HijackChannel | None = None
        if self.parser.should_upgrade() and self._get_upgrade() == b"tcp":
            channel = HijackChannel(self)
            scope = cast(dict[str, Any], self.scope)
            scope.setdefault("extensions", {})[EXTENSION] = channel
            self._body_length = 0
            self._body_chunked = None
            for name, value in self.headers:
                if name == b"content-length":
                    self._body_length = int(value) if value.isdigit() else 0
                elif name == b"transfer-encoding" and value.lower() == b"chunked":
                    self._body_chunked = _ChunkedDecoder()
        self._channel = channel
        super().on_headers_complete()
        if channel is not None:
            # After this request the connection is raw bytes, never another HTTP request.
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        if self._fast_ping is not None:
            method, self._fast_ping = self._fast_ping, None
            keep_alive = self.parser.should_keep_alive()
            self.transport.write(
                ping_response(method, self.server_state.default_headers, keep_alive=keep_alive)
            )
            if not keep_alive:
                self.transport.close()
                return
            self.on_response_complete()
            return
        if self._channel is not None and (self._body_length > 0 or self._body_chunked is not None):
            return  # the body is still inside the raw bytes; see _feed_raw
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self._raw:
            self._feed_raw(data)
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade as exc:
            if self._channel is None:
                self.send_400_response("Unsupported upgrade request.")
                return
            self._raw = True
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self._feed_raw(data[offset:])

    def _feed_raw(self, data: bytes) -> None:
        assert self._channel is not None
        if self._body_chunked is not None:
            try:
                rest = self._body_chunked.feed(data)
            except ValueError as exc:
                self.send_400_response(f"Invalid chunked request body: {exc}.")
                return
            if self._body_chunked.done:
                self._finish_body(bytes(self._body_chunked.body))
                self._body_chunked = None
                data = rest
            else:
                return
        elif self._body_length > 0:
            take = data[: self._body_length]
            self._body += take
            self._body_length -= len(take)
            data = data[len(take) :]
            if self._body_length > 0:
                return
            self._finish_body(bytes(self._body))
            self._body.clear()
        if data:
            self._channel._feed(data)

    def _finish_body(self, body: bytes) -> None:
        cycle = self.cycle
        cycle.body += body
        cycle.more_body = False
        cycle.message_event.set()

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._raw and self._channel is not None:
            self._channel._feed_eof()
            return True  # keep the transport open for writing: a half-close is not goodbye
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._channel is not None:
            self._channel._connection_lost()
        super().connection_lost(exc)

    # --- used by the channel ------------------------------------------------------------------

    def take_over(self) -> None:
        """Mark the HTTP cycle finished so uvicorn sends nothing more on this connection."""
        cycle = self.cycle
        cycle.response_started = True
        cycle.response_complete = True
        cycle.keep_alive = False
        self._unset_keepalive_if_required()

    def pause_raw_reading(self) -> None:
        if not self._raw_paused:
            self._raw_paused = True
            self.transport.pause_reading()

    def resume_raw_reading(self) -> None:
        if self._raw_paused:
            self._raw_paused = False
            self.transport.resume_reading()
