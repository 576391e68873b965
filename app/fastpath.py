"""Answers that skip the ASGI stack: `GET`/`HEAD /_ping`.

The docker CLI sends `HEAD /_ping` before every command and docker-py pings often; routing such a
request through FastAPI costs several times what the answer itself does. The protocol class
(`app/hijack.py`) hands a ping to `ping_app`, a bare ASGI callable with the same headers and
body as the routed `/_ping` (app/routers/system.py), so keep-alive and pipelining behave as for
any request.
"""

from __future__ import annotations

import re

from starlette.types import Receive, Scope, Send

from app.middleware import API_VERSION, MIN_API_VERSION

_PING = re.compile(rb"^(?:/v(\d+)\.(\d+))?/_ping(?:\?.*)?$")
_MAX = tuple(int(x) for x in API_VERSION.split("."))
_MIN = tuple(int(x) for x in MIN_API_VERSION.split("."))

PING_HEADERS: dict[str, str] = {
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Builder-Version": "1",  # no BuildKit: clients must not try a buildkit session
    "Swarm": "inactive",
}
_HEADERS = [(k.lower().encode(), v.encode()) for k, v in PING_HEADERS.items()] + [
    (b"content-type", b"text/plain; charset=utf-8")
]
_GET_START = {"type": "http.response.start", "status": 200, "headers": [*_HEADERS, (b"content-length", b"2")]}
_HEAD_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [*_HEADERS, (b"content-length", b"0")],
}


_cache: dict[tuple[bytes, int, bool], bytes] = {}


def ping_response(method: bytes, default_headers: list[tuple[bytes, bytes]], *, keep_alive: bool) -> bytes:
    """The whole response to a ping, bytes ready for the transport (cached while uvicorn's
    default headers, which carry the Date, stay the same object)."""
    key = (method, id(default_headers), keep_alive)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    body = b"" if method == b"HEAD" else b"OK"
    head = [b"HTTP/1.1 200 OK\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [name + b": " + value + b"\r\n" for name, value in _HEADERS]
    head.append(b"content-length: 2\r\n" if body else b"content-length: 0\r\n")
    if not keep_alive:
        head.append(b"connection: close\r\n")
    response = b"".join(head) + b"\r\n" + body
    if len(_cache) > 16:
        _cache.clear()
    _cache[key] = response
    return response


def is_ping(method: bytes, url: bytes) -> bool:
    """A ping the fast path may answer (out-of-range versions go the long way to get their 400)."""
    if method not in (b"GET", b"HEAD"):
        return False
    match = _PING.match(url)
    if match is None:
        return False
    if match.group(1) is None:
        return True
    version = (int(match.group(1)), int(match.group(2)))
    return _MIN <= version <= _MAX


async def ping_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["method"] == "HEAD":
        await send(_HEAD_START)
        await send({"type": "http.response.body", "body": b""})
    else:
        await send(_GET_START)
        await send({"type": "http.response.body", "body": b"OK"})
