"""Request hygiene: size limits on request lines, headers and bodies; timeouts for slow clients.

The API is root on the host, but a client that can reach the socket may still be buggy or
hostile, and one connection must not be able to pin memory or a file descriptor forever:

- `LimitedProtocol` (uvicorn's protocol class, on top of `HijackProtocol`) bounds the request
  target and the header block (414 / 431 with a Docker-style `{"message"}`), gives a request at
  most `header_timeout_s` from the connection (or the previous response) to finish its headers,
  however slowly it trickles them, and closes a connection whose body stalls: a bounded JSON body
  must arrive within `body_timeout_s`; a streamed upload (`load`, `import`, `cp`) may take as long
  as it needs but may not go silent for `upload_idle_timeout_s`. Time spent with reading paused by
  our own flow control (the app is busy) never counts against the client. Once a request is being
  answered nothing here interrupts it: event, log, stats and wait streams and hijacked attach or
  exec sessions live as long as they need; idle keep-alive connections are uvicorn's
  `timeout_keep_alive`. A request answered before its body was read (refused, too large, failed)
  ends its connection with a linger, as Go's server does, so the client reads the answer.
- `BodyLimitMiddleware` (ASGI) refuses a non-upload body over `MAX_JSON_BODY` with 413, from its
  `Content-Length` before reading or while a chunked body streams in.

This module owns no route logic; which paths are streamed uploads is `is_streamed_upload`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.hijack import HijackProtocol

log = logging.getLogger("pydock.api")

MAX_URL_BYTES = 64 * 1024  # `docker save a b c ...` puts every name in the query string
MAX_HEADER_BYTES = 256 * 1024  # names + values; X-Registry-Auth carries a base64 JSON blob
MAX_HEADERS = 100
MAX_JSON_BODY = 4 * 1024 * 1024  # container create with a big Env still fits many times over
HEADER_TIMEOUT_S = 60.0
BODY_TIMEOUT_S = 60.0
UPLOAD_IDLE_TIMEOUT_S = 300.0
LINGER_S = 2.0  # after answering a request whose body is still coming: see `_linger`

_VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
# Request bodies that are data, not parameters: their size is bounded by the disk checks of the
# service that stores them, not here.
_UPLOADS = (
    ("POST", re.compile(r"^/images/load$")),
    ("POST", re.compile(r"^/images/create$")),  # import with fromSrc=-
    ("PUT", re.compile(r"^/containers/[^/]+/archive$")),
    ("POST", re.compile(r"^/build$")),
)


def is_streamed_upload(method: str, path: str) -> bool:
    """Whether `method path` (with or without a `/vX.Y` prefix) streams its body to a service."""
    bare = _VERSION_PREFIX.sub("", path, count=1)
    return any(method == m and pattern.match(bare) for m, pattern in _UPLOADS)


def _error_bytes(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"message": message}, separators=(",", ":")).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing a request that was already answered."""


class LimitedProtocol(HijackProtocol):
    """`HijackProtocol` with bounded request heads and timeouts for clients that stall."""

    max_url_bytes = MAX_URL_BYTES
    max_header_bytes = MAX_HEADER_BYTES
    max_headers = MAX_HEADERS
    max_upgrade_body = MAX_JSON_BODY
    header_timeout_s = HEADER_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S
    upload_idle_timeout_s = UPLOAD_IDLE_TIMEOUT_S
    linger_s = LINGER_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rejected = False
        self._url_bytes = 0
        self._header_bytes = 0
        self._in_headers = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_deadline = 0.0
        self._body_is_upload = False
        self._lingering = False

    # --- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()  # a client that connects and says nothing is not kept

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected or self._lingering:
            return  # the rest of an answered request's body: dropped
        if self._body_timer is not None and self._body_is_upload:
            self._body_deadline = self.loop.time() + self.upload_idle_timeout_s
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if self._rejected:
            return  # the request was already answered (414/431/413) and the connection closed
        super().send_400_response(msg)

    def _reject(self, status: int, reason: str, message: str) -> None:
        """Answer a request the app never sees, and close the connection."""
        self._rejected = True
        self._cancel_timers()
        log.warning("request refused: %s", message, extra={"status": status})
        if not self.transport.is_closing():
            self.transport.write(_error_bytes(status, reason, message))
            self._linger()
        raise _Rejected(message)

    def _linger(self) -> None:
        """End a connection whose request was answered while its body still comes in (refused,
        too large, a failed `cp` into a read-only rootfs), as Go's server does: close our side
        after the answer, read and drop what the client still sends, and close fully once it
        closes too or after `linger_s`. A plain close would make the client's next write fail
        (EPIPE) before it reads the answer: the docker CLI then reports "broken pipe" instead of
        the message."""
        self._lingering = True
        self._cancel_timers()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.loop.call_later(self.linger_s, self.transport.close)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._lingering or self._rejected:
            return None  # the client is done too: close now
        return super().eof_received()

    # --- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0
        self._header_bytes = 0
        self._in_headers = True
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.max_url_bytes:
            self._reject(
                414, "Request-URI Too Long", f"request URI too long: limit is {self.max_url_bytes} bytes"
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self.max_header_bytes or len(self.headers) >= self.max_headers:
            self._reject(
                431,
                "Request Header Fields Too Large",
                f"request header fields too large: limits are {self.max_headers} headers "
                f"and {self.max_header_bytes} bytes",
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_header_timer()
        upgrade = self.parser.should_upgrade() and self._get_upgrade() == b"tcp"
        if upgrade:
            for name, value in self.headers:
                if name == b"content-length" and value.isdigit() and int(value) > self.max_upgrade_body:
                    self._reject(
                        413,
                        "Request Entity Too Large",
                        f"request body too large: limit is {self.max_upgrade_body} bytes",
                    )
        super().on_headers_complete()
        if self._fast_ping is not None:
            return  # answered at message end, no body to wait for (app/fastpath.py)
        method = self.parser.get_method().decode("ascii", "replace")
        self._body_is_upload = is_streamed_upload(method, self.scope.get("path", ""))
        timeout = self.upload_idle_timeout_s if self._body_is_upload else self.body_timeout_s
        self._body_deadline = self.loop.time() + timeout
        self._body_timer = self.loop.call_at(self._body_deadline, self._on_body_timer)

    def on_response_complete(self) -> None:
        unread_body = self.cycle is not None and self.cycle.more_body and not self.pipeline
        super().on_response_complete()
        if self.transport.is_closing() or self._raw:
            return
        if unread_body:
            # answered before its body was read: the rest would only be parsed to be thrown away
            self._linger()
            return
        if self.cycle is None or self.cycle.response_complete:
            self._arm_header_timer()  # idle until the next request, then its headers: bounded

    # --- timers -------------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._on_header_timer)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_header_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _on_header_timer(self) -> None:
        self._header_timer = None
        if self._raw or self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy and not self._in_headers:
            return  # a request is being answered; the timer is armed again when it completes
        log.info("closing a connection that sent no complete request headers in time")
        self.transport.close()

    def _on_body_timer(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_complete or self.transport.is_closing():
            return  # the body is complete (or no longer wanted): nothing to time
        if self._raw and self._channel is not None and self._channel.accepted:
            return
        now = self.loop.time()
        if self.flow.read_paused or self._raw_paused:
            self._body_deadline = max(self._body_deadline, now + 1.0)  # our back-pressure, not theirs
        if self._body_deadline > now:
            self._body_timer = self.loop.call_at(self._body_deadline, self._on_body_timer)
            return
        log.info("closing a connection whose request body stalled")
        self.transport.close()


class BodyLimitMiddleware:
    """413 for a request body over `max_body` bytes, except streamed uploads."""

    def __init__(self, app: ASGIApp, *, max_body: int = MAX_JSON_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_streamed_upload(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await self._too_large(send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # an HTTPException passes FastAPI's body parsing unchanged; app/errors.py
                    # answers it in Docker's format
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body too large: limit is {self.max_body} bytes"

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"message": self._message()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body) + 1).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body + b"\n"})
