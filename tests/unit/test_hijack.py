"""The hijack protocol at the byte level: a real uvicorn with HijackProtocol on a temp UNIX socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

from app.errors import DockerJSONResponse
from app.hijack import HijackedResponse, HijackProtocol, hijack_channel

UPGRADE_101 = (
    b"HTTP/1.1 101 UPGRADED\r\n"
    b"Content-Type: application/vnd.docker.raw-stream\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: tcp\r\n"
    b"\r\n"
)


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        """Accept, then echo every byte back upper-cased; on client EOF write a trailer and close."""
        channel = hijack_channel(request)
        assert channel is not None
        body = await request.body()
        await channel.accept()
        channel.write(b"body=" + body + b";")
        while True:
            data = await channel.read()
            if not data:
                break
            channel.write(data.upper())
            await channel.drain()
        channel.write(b"<eof>")
        channel.close()
        return HijackedResponse()

    @app.post("/late")
    async def late(request: Request) -> Response:
        """Accept only after a delay: bytes and EOF sent before must still arrive."""
        channel = hijack_channel(request)
        assert channel is not None
        await asyncio.sleep(0.2)
        await channel.accept()
        got = b""
        while chunk := await channel.read():
            got += chunk
        channel.write(b"got:" + got)
        channel.close()
        return HijackedResponse()

    @app.post("/output-after-halfclose")
    async def output_after_halfclose(request: Request) -> Response:
        channel = hijack_channel(request)
        assert channel is not None
        await channel.accept()
        assert await channel.read() == b""  # the client half-closed right away (no stdin)
        for i in range(3):
            await asyncio.sleep(0.05)
            channel.write(f"line{i}\n".encode())
        channel.close()
        return HijackedResponse()

    @app.post("/missing")
    async def missing(request: Request) -> Response:
        return DockerJSONResponse({"message": "No such container: x"}, status_code=404)

    @app.get("/plain")
    async def plain() -> Response:
        return Response(b"plain")

    return app


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    path = str(tmp_path / "s.sock")
    config = uvicorn.Config(make_app(), uds=path, http=HijackProtocol, lifespan="off", log_config=None)
    srv = uvicorn.Server(config)
    srv.capture_signals = lambda: __import__("contextlib").nullcontext()  # type: ignore[method-assign]
    task = asyncio.create_task(srv.serve())
    for _ in range(200):
        if srv.started:
            break
        await asyncio.sleep(0.01)
    yield path
    srv.should_exit = True
    await task


async def open_conn(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(path)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


async def read_until_close(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)


def upgrade_request(path: str, body: bytes = b"", chunked: bool = False) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
        return head.encode() + payload
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def test_101_exact_bytes_and_echo_with_half_close(server: str) -> None:
    reader, writer = await open_conn(server)
    writer.write(upgrade_request("/echo"))
    await writer.drain()
    head = await asyncio.wait_for(reader.readexactly(len(UPGRADE_101)), 5)
    assert head == UPGRADE_101
    writer.write(b"hello")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(len(b"body=;HELLO")), 5) == b"body=;HELLO"
    writer.write_eof()  # half-close: the server must still answer
    assert await read_until_close(reader) == b"<eof>"
    await close(writer)


async def test_body_cut_from_raw_stream_in_one_packet(server: str) -> None:
    body = json.dumps({"Detach": False, "Tty": False}).encode()
    reader, writer = await open_conn(server)
    # request, body and the first raw bytes in one write: llhttp sees them all after the upgrade
    writer.write(upgrade_request("/echo", body) + b"stdin-bytes")
    writer.write_eof()
    await writer.drain()
    data = await read_until_close(reader)
    assert data == UPGRADE_101 + b"body=" + body + b";STDIN-BYTES<eof>"
    await close(writer)


async def test_chunked_body_with_upgrade(server: str) -> None:
    reader, writer = await open_conn(server)
    writer.write(upgrade_request("/echo", b'{"Tty":true}', chunked=True) + b"x")
    writer.write_eof()
    data = await read_until_close(reader)
    assert data == UPGRADE_101 + b'body={"Tty":true};X<eof>'
    await close(writer)


async def test_bytes_and_eof_before_accept_are_buffered(server: str) -> None:
    reader, writer = await open_conn(server)
    writer.write(upgrade_request("/late"))
    writer.write(b"early stdin")
    writer.write_eof()
    await writer.drain()
    data = await read_until_close(reader)
    assert data == UPGRADE_101 + b"got:early stdin"
    await close(writer)


async def test_half_close_without_stdin_keeps_output_flowing(server: str) -> None:
    reader, writer = await open_conn(server)
    writer.write(upgrade_request("/output-after-halfclose"))
    writer.write_eof()
    data = await read_until_close(reader)
    assert data == UPGRADE_101 + b"line0\nline1\nline2\n"
    await close(writer)


async def test_error_before_accept_is_plain_http_and_closes(server: str) -> None:
    reader, writer = await open_conn(server)
    writer.write(upgrade_request("/missing"))
    await writer.drain()
    data = await read_until_close(reader)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ")
    assert json.loads(body) == {"message": "No such container: x"}
    await close(writer)


async def test_keep_alive_requests_are_unaffected(server: str) -> None:
    reader, writer = await open_conn(server)
    for _ in range(3):
        writer.write(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await reader.readexactly(5) == b"plain"
    await close(writer)


async def test_large_stdin_is_flow_controlled(server: str) -> None:
    reader, writer = await open_conn(server)
    writer.write(upgrade_request("/echo"))
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(len(UPGRADE_101)), 5) == UPGRADE_101
    assert await asyncio.wait_for(reader.readexactly(6), 5) == b"body=;"
    payload = b"a" * (8 << 20)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await asyncio.wait_for(reader.read(), 20)
    await sender
    assert received == b"A" * len(payload) + b"<eof>"
    await close(writer)
