"""API version prefixes: `/vX.Y/...` is stripped into `scope["state"]["api_version"]`.

Unprefixed paths are served too (at the highest version). Versions outside the served range get
dockerd's 400 answers, word for word (the CLI prints them).
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

API_VERSION = "1.41"
MIN_API_VERSION = "1.24"

_VERSION = re.compile(r"^/v(\d+)\.(\d+)(/.*)?$")
_RAW_VERSION = re.compile(rb"^/v\d+\.\d+")


def _parse(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


class ApiVersionMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_version: str = API_VERSION, min_version: str = MIN_API_VERSION
    ) -> None:
        self.app = app
        self.max_version = max_version
        self.min_version = min_version
        self._max = _parse(max_version)
        self._min = _parse(min_version)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        version = self.max_version
        if path.startswith("/v"):
            match = _VERSION.match(path)
            if match:
                wanted = (int(match.group(1)), int(match.group(2)))
                version = f"{wanted[0]}.{wanted[1]}"
                if wanted > self._max:
                    message = (
                        f"client version {version} is too new. "
                        f"Maximum supported API version is {self.max_version}"
                    )
                    await _reply(send, 400, b'{"message":"' + message.encode() + b'"}\n', b"application/json")
                    return
                if wanted < self._min:
                    message = (
                        f"client version {version} is too old. Minimum supported API version is "
                        f"{self.min_version}, please upgrade your client to a newer version"
                    )
                    await _reply(send, 400, message.encode() + b"\n", b"text/plain; charset=utf-8")
                    return
                rest = match.group(3) or "/"
                scope = dict(scope)
                scope["path"] = rest
                raw: bytes | None = scope.get("raw_path")
                if raw is not None:
                    scope["raw_path"] = _RAW_VERSION.sub(b"", raw, count=1) or b"/"
        state = scope.setdefault("state", {})
        state["api_version"] = version
        await self.app(scope, receive, send)


async def _reply(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
