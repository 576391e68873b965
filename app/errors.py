"""Error kinds → HTTP responses in Docker's format: `{"message": "..."}` plus the kind's status.

Framework defaults are replaced: validation errors become 400, unknown paths 404
`page not found`, anything unexpected 500 with a logged traceback. Never a FastAPI-shaped error.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from runtime.errors import PydockError

log = logging.getLogger("pydock.api")


class DockerJSONResponse(JSONResponse):
    """JSON the way dockerd writes it: compact, newline-terminated."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # what orjson refuses (integers past 64 bits, odd types): the stdlib
            return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def error_response(message: str, status: int) -> Response:
    if status == 304:
        return Response(status_code=304)
    return DockerJSONResponse({"message": message}, status_code=status)


async def on_pydock_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PydockError)
    if exc.status >= 500:
        log.error("request failed: %s", exc, extra={"path": request.url.path})
    return error_response(str(exc), exc.status)


def _describe_validation(exc: RequestValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = ".".join(loc[1:] if loc and loc[0] in ("query", "path", "header") else loc)
        kind = err.get("type", "")
        msg = err.get("msg", "invalid value")
        if kind in ("json_invalid", "json_type"):
            ctx = err.get("ctx") or {}
            return f"invalid JSON: {ctx.get('error', msg)}"
        parts.append(f"{where}: {msg}" if where else msg)
    return "invalid parameter: " + "; ".join(parts) if parts else "invalid request"


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(_describe_validation(exc), 400)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_response("page not found", 404)
    if exc.status_code == 405:
        return error_response(f"method {request.method} not allowed for {request.url.path}", 405)
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    return error_response(detail, exc.status_code)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error", exc_info=exc, extra={"path": request.url.path})
    return error_response(f"internal error: {type(exc).__name__}: {exc}", 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(PydockError, on_pydock_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(Exception, on_unexpected)
