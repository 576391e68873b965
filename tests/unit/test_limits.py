"""Request hygiene at the byte level: a real uvicorn with `LimitedProtocol` on a temp UNIX socket.

The limits and timeouts are made small on a subclass so that slow and oversized clients show
their fate in well under a second; long-lived answers (streams, hijacked sessions) and streamed
uploads must outlive those timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response, StreamingResponse

from app import errors
from app.hijack import HijackedResponse, hijack_channel
from app.limits import BodyLimitMiddleware, LimitedProtocol, is_streamed_upload

MAX_BODY = 4096


class SmallLimits(LimitedProtocol):
    max_url_bytes = 2048
    max_header_bytes = 4096
    max_headers = 20
    max_upgrade_body = 1024
    header_timeout_s = 0.5
    body_timeout_s = 0.5
    upload_idle_timeout_s = 0.5
    linger_s = 0.5


def make_app() -> BodyLimitMiddleware:
    app = FastAPI()
    errors.install(app)

    @app.post("/containers/create")
    async def create(request: Request) -> Response:
        body = await request.json()
        return Response(json.dumps({"got": len(json.dumps(body))}), media_type="application/json")

    @app.post("/images/load")
    async def load(request: Request) -> Response:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return Response(f"loaded {size}")

    @app.get("/events")
    async def events() -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            for i in range(4):
                await asyncio.sleep(0.3)
                yield f"{i}\n".encode()

        return StreamingResponse(lines())

    @app.post("/attach")
    async def attach(request: Request) -> Response:
        channel = hijack_channel(request)
        assert channel is not None
        await channel.accept()
        data = await channel.read()  # the client stays silent longer than every timeout
        channel.write(b"echo:" + data)
        channel.close()
        return HijackedResponse()

    @app.put("/containers/ro/archive")
    async def refuse_upload() -> Response:
        # answered before the body is read, as a `cp` into a read-only rootfs
        return Response(b'{"message":"container rootfs is marked read-only"}', status_code=500)

    @app.get("/plain")
    async def plain() -> Response:
        return Response(b"plain")

    return BodyLimitMiddleware(app, max_body=MAX_BODY)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    path = str(tmp_path / "s.sock")
    config = uvicorn.Config(
        make_app(), uds=path, http=SmallLimits, lifespan="off", log_config=None, timeout_keep_alive=30
    )
    srv = uvicorn.Server(config)
    srv.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(srv.serve())
    async with asyncio.timeout(5):
        while not srv.started:
            await asyncio.sleep(0.01)
    yield path
    srv.should_exit = True
    await task


async def exchange(path: str, data: bytes, *, timeout_s: float = 5.0) -> bytes:
    """Send `data`, then read until the server closes."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_and_json(raw: bytes) -> tuple[int, object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.strip() else None


def test_streamed_uploads_are_named_by_method_and_path() -> None:
    assert is_streamed_upload("POST", "/images/load")
    assert is_streamed_upload("POST", "/v1.41/images/load")
    assert is_streamed_upload("POST", "/v1.24/images/create")
    assert is_streamed_upload("PUT", "/containers/web/archive")
    assert not is_streamed_upload("GET", "/containers/web/archive")
    assert not is_streamed_upload("POST", "/containers/create")
    assert not is_streamed_upload("POST", "/images/load/x")


async def test_long_url_is_414(server: str) -> None:
    raw = await exchange(server, b"GET /plain?" + b"a" * 4000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, body = status_and_json(raw)
    assert status == 414
    assert body == {"message": "request URI too long: limit is 2048 bytes"}


@pytest.mark.parametrize(
    "headers",
    [
        b"".join(b"X-H%d: v\r\n" % i for i in range(30)),  # too many
        b"X-Big: " + b"v" * 5000 + b"\r\n",  # too large
    ],
)
async def test_header_limits_are_431(server: str, headers: bytes) -> None:
    raw = await exchange(server, b"GET /plain HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    status, body = status_and_json(raw)
    assert status == 431
    assert isinstance(body, dict)
    assert body["message"].startswith("request header fields too large")


async def test_json_body_over_the_cap_is_413_before_it_is_read(server: str) -> None:
    head = b"POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    raw = await exchange(server, head + b"Content-Length: 100000000\r\n\r\n{")
    status, body = status_and_json(raw)
    assert status == 413
    assert body == {"message": f"request body too large: limit is {MAX_BODY} bytes"}


async def test_chunked_json_body_over_the_cap_is_413(server: str) -> None:
    payload = json.dumps({"Env": ["A=" + "x" * 6000]}).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(payload[i : i + 500]), payload[i : i + 500])
        for i in range(0, len(payload), 500)
    )
    head = b"POST /containers/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw = await exchange(server, head + chunks + b"0\r\n\r\n")
    status, body = status_and_json(raw)
    assert status == 413
    assert body == {"message": f"request body too large: limit is {MAX_BODY} bytes"}


async def test_json_body_under_the_cap_is_served(server: str) -> None:
    payload = json.dumps({"Env": ["A=" + "x" * 1000]}).encode()
    head = b"POST /containers/create HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    raw = await exchange(server, head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
    assert raw.startswith(b"HTTP/1.1 200 ")


async def test_streamed_upload_may_exceed_the_json_cap(server: str) -> None:
    payload = b"t" * (MAX_BODY * 50)
    head = b"POST /images/load HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    raw = await exchange(server, head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(f"loaded {len(payload)}".encode())


@pytest.mark.parametrize("client_closes", [True, False])
async def test_answered_before_the_body_the_client_may_finish_writing(
    server: str, client_closes: bool
) -> None:
    """The answer comes while the client still uploads: its writes go on succeeding (the rest is
    dropped), it reads the whole answer, then the connection ends (at its EOF, or after the linger)."""
    reader, writer = await asyncio.open_unix_connection(server)
    loop = asyncio.get_running_loop()
    try:
        writer.write(b"PUT /containers/ro/archive HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 500 ")
        chunk = b"%x\r\n%s\r\n" % (65536, b"\0" * 65536)
        for _ in range(64):  # 4 MiB after the answer: more than any socket buffer holds
            writer.write(chunk)
            await writer.drain()
        if client_closes:
            writer.write(b"0\r\n\r\n")
            writer.write_eof()
        rest = await asyncio.wait_for(reader.read(), 5)  # the answer, then the server's EOF
        assert json.loads(rest) == {"message": "container rootfs is marked read-only"}
        if not client_closes:
            # the client goes on writing: accepted (and dropped) until the linger ends
            started = loop.time()
            with pytest.raises(ConnectionError):
                while loop.time() - started < 5:
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.02)
            assert 0.3 < loop.time() - started < 3
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_upgrade_body_over_the_cap_is_413(server: str) -> None:
    head = b"POST /attach HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
    raw = await exchange(server, head + b"Content-Length: 99999999\r\n\r\n{")
    status, _ = status_and_json(raw)
    assert status == 413


async def test_silent_connection_is_closed(server: str) -> None:
    reader, writer = await asyncio.open_unix_connection(server)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert 0.4 < loop.time() - started < 3
    writer.close()


async def test_trickled_headers_are_cut_off(server: str) -> None:
    """Slowloris: a byte every 50 ms keeps no idle timer from firing, but the header deadline holds."""
    reader, writer = await asyncio.open_unix_connection(server)
    loop = asyncio.get_running_loop()
    request = b"GET /plain HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200  # 11 s at this pace

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in request:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    started = loop.time()
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert loop.time() - started < 3
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()


async def test_stalled_json_body_is_cut_off(server: str) -> None:
    head = b"POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    reader, writer = await asyncio.open_unix_connection(server)
    writer.write(head)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_slow_but_steady_upload_is_not_cut_off(server: str) -> None:
    """An upload may take longer than every timeout as long as it never goes silent for long."""
    reader, writer = await asyncio.open_unix_connection(server)
    writer.write(b"POST /images/load HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 15\r\n\r\n")
    for _ in range(15):  # 15 x 0.1 s = three times the idle timeout
        writer.write(b"u")
        await writer.drain()
        await asyncio.sleep(0.1)
    raw = await asyncio.wait_for(reader.read(), 5)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b"loaded 15")
    writer.close()


async def test_long_stream_outlives_every_timeout(server: str) -> None:
    raw = await exchange(server, b"GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b"0\n" in raw and b"3\n" in raw  # 1.2 s of streaming with 0.5 s timeouts


async def test_silent_hijacked_session_outlives_every_timeout(server: str) -> None:
    reader, writer = await asyncio.open_unix_connection(server)
    writer.write(b"POST /attach HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED")
    await asyncio.sleep(1.2)  # silence: the behaviour under test, not a wait for a condition
    writer.write(b"late")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b"echo:late"
    writer.close()


async def test_keep_alive_requests_and_pipelining_still_work(server: str) -> None:
    reader, writer = await asyncio.open_unix_connection(server)
    request = b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(request * 3)  # pipelined
    await writer.drain()
    for _ in range(3):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await reader.readexactly(5) == b"plain"
    # idle longer than the header deadline after the last answer: the connection goes away
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
