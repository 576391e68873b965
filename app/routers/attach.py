"""Container streams: attach (hijacked, both ways) and logs (json-file read back, follow).

Attach semantics (moby `container/stream/attach.go`, PROTOCOL.md §3):
- output is multiplexed (8-byte frames) without a TTY, raw with one;
- a client that did not ask for stdin half-closes right after the 101: that is not goodbye;
- stdin EOF closes the container's stdin for `StdinOnce` non-TTY containers, otherwise it ends
  this attach session only; the detach keys (default ctrl-p ctrl-q) end it too on a TTY;
- the session ends when the container stops, after all output was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from app.deps import get_containers
from app.hijack import RAW_STREAM, HijackChannel, HijackedResponse, hijack_channel, pump_input
from app.params import DockerBool
from app.routers.system import parse_timestamp_ns
from app.streams import STDERR, STDOUT, ClosingStreamingResponse, frame, log_renderer
from runtime.aiters import closing
from runtime.containers import ContainerService
from runtime.errors import Conflict, InvalidParameter
from runtime.logread import LogQuery, read_logs
from runtime.stdio import Sink
from runtime.supervisor import Supervisor

router = APIRouter(tags=["Container"])
Containers = Annotated[ContainerService, Depends(get_containers)]

DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q
WRITE_HIGH_WATER = 1 << 20


def parse_detach_keys(spec: str | None) -> bytes:
    """Docker's `detachKeys`: comma-separated `ctrl-<x>` or single characters."""
    if not spec:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for part in spec.split(","):
        key = part.strip()
        if key.startswith("ctrl-") and len(key) == 6:
            ch = key[5]
            if "a" <= ch <= "z":
                out.append(ord(ch) - ord("a") + 1)
            elif ch in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[ch])
            else:
                raise InvalidParameter(f"Unknown character: '{ch}'")
        elif len(key) == 1 and key.isascii():  # Go compares bytes: "é" is two, not a key
            out.append(ord(key))
        else:
            raise InvalidParameter(f"Unknown character: '{key}'")
    return bytes(out)


class ChannelSink(Sink):
    """Container output into a hijacked connection, framed unless the container has a TTY."""

    def __init__(self, channel: HijackChannel, *, tty: bool, stdout: bool, stderr: bool) -> None:
        self.channel = channel
        self.tty = tty
        self.streams = {n for n, on in ((STDOUT, stdout), (STDERR, stderr)) if on}
        self.ended = asyncio.Event()

    def send(self, stream: int, data: bytes) -> None:
        if stream not in self.streams or self.channel.is_closed:
            return
        self.channel.write(data if self.tty else frame(stream, data))

    @property
    def congested(self) -> bool:
        transport = self.channel._protocol.transport
        return not transport.is_closing() and transport.get_write_buffer_size() > WRITE_HIGH_WATER

    async def drain(self) -> None:
        await self.channel.drain()

    def end(self) -> None:
        self.ended.set()


async def _replay_logs(sup: Supervisor, sink: ChannelSink) -> None:
    query = LogQuery(stdout=STDOUT in sink.streams, stderr=STDERR in sink.streams)
    render = log_renderer(tty=sink.tty)
    async with closing(read_logs(sup.container.log_path, query, None, render)) as chunks:
        async for chunk in chunks:
            sink.channel.write(chunk)
            await sink.drain()


async def _pump_stdin(channel: HijackChannel, sup: Supervisor, *, detach_keys: bytes, tty: bool) -> str:
    """Client stdin → container stdin. Returns why it ended: "eof" or "detach"."""
    stdio = sup.stdio

    async def write(data: bytes) -> None:
        stdio.write_stdin(data)
        await stdio.stdin_drained()

    return await pump_input(channel, write, detach_keys=detach_keys if tty else b"")


@router.post("/containers/{ref}/attach", operation_id="ContainerAttach", response_class=Response)
async def container_attach(
    request: Request,
    ref: str,
    containers: Containers,
    stream: DockerBool = False,
    logs: DockerBool = False,
    stdin: DockerBool = False,
    stdout: DockerBool = False,
    stderr: DockerBool = False,
    detachKeys: str | None = None,
) -> Response:
    sup = containers.get(ref)
    c = sup.container
    if c.state.status.value == "paused":
        raise Conflict("You cannot attach to a paused container, unpause it first")
    keys = parse_detach_keys(detachKeys)
    channel = hijack_channel(request)
    if channel is None:
        return _attach_without_upgrade(sup, stream=stream, logs=logs, stdout=stdout, stderr=stderr)
    tty = c.config.Tty
    await channel.accept(content_type=RAW_STREAM)
    sink = ChannelSink(channel, tty=tty, stdout=stdout, stderr=stderr)
    detach = sup.stdio.attach(sink) if stream else None
    sup.event("attach")
    pump: asyncio.Task[str] | None = None
    try:
        if logs:
            await _replay_logs(sup, sink)
        if not stream:
            return HijackedResponse()
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(sink.ended.wait())}
        waiters.add(asyncio.ensure_future(channel.wait_closed()))
        if stdin and c.config.OpenStdin:
            pump = asyncio.create_task(_pump_stdin(channel, sup, detach_keys=keys, tty=tty))
            waiters.add(pump)
        while True:
            done, _pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if pump is not None and pump in done:
                reason = pump.result()
                waiters.discard(pump)
                pump = None
                if reason == "detach":
                    sup.event("detach")
                    break
                if c.config.StdinOnce and not tty:
                    sup.stdio.close_stdin()  # `run -i`: EOF reaches the process; output goes on
                    continue
                break  # stdin ended: this session ends, the container keeps running
            break
        for waiter in waiters:
            waiter.cancel()
        await channel.drain()
    finally:
        if detach is not None:
            detach()
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        channel.close()
    return HijackedResponse()


def _attach_without_upgrade(
    sup: Supervisor, *, stream: bool, logs: bool, stdout: bool, stderr: bool
) -> Response:
    """A client without `Upgrade: tcp` (curl): 200 with the raw stream, output only."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    tty = sup.container.config.Tty
    streams = {n for n, on in ((STDOUT, stdout), (STDERR, stderr)) if on}

    class QueueSink(Sink):
        def send(self, stream_no: int, data: bytes) -> None:
            if stream_no in streams:
                queue.put_nowait(data if tty else frame(stream_no, data))

        def end(self) -> None:
            queue.put_nowait(None)

    async def body() -> AsyncIterator[bytes]:
        sink = QueueSink()
        detach = sup.stdio.attach(sink) if stream else None
        try:
            if logs:
                query = LogQuery(stdout=stdout, stderr=stderr)
                logs_ = read_logs(sup.container.log_path, query, None, log_renderer(tty=tty))
                async with closing(logs_):
                    async for chunk in logs_:
                        yield chunk
            if stream:
                while (item := await queue.get()) is not None:
                    yield item
        finally:
            if detach is not None:
                detach()

    return ClosingStreamingResponse(body(), media_type=RAW_STREAM)


@router.get("/containers/{ref}/logs", operation_id="ContainerLogs", response_class=StreamingResponse)
async def container_logs(
    ref: str,
    containers: Containers,
    follow: DockerBool = False,
    stdout: DockerBool = False,
    stderr: DockerBool = False,
    since: str | None = None,
    until: str | None = None,
    timestamps: DockerBool = False,
    tail: str = "all",
    details: DockerBool = False,
) -> StreamingResponse:
    if not stdout and not stderr:
        raise InvalidParameter("Bad parameters: you must choose at least one stream")
    sup = containers.get(ref)
    c = sup.container
    if c.host_config.LogConfig.Type not in ("", "json-file"):
        raise InvalidParameter(
            f"configured logging driver does not support reading: {c.host_config.LogConfig.Type}"
        )
    tail_n: int | None = None
    if tail not in ("", "all"):
        try:
            tail_n = max(0, int(tail))
        except ValueError as exc:
            raise InvalidParameter(f"invalid tail value: {tail!r}") from exc
    since_ns = parse_timestamp_ns(since)
    until_ns = parse_timestamp_ns(until)
    query = LogQuery(
        stdout=stdout,
        stderr=stderr,
        since_ns=since_ns if since_ns else None,
        until_ns=until_ns if until_ns else None,
        tail=tail_n,
        follow=follow and c.state.running,
    )
    tty = c.config.Tty
    writer = sup.log_writer if c.state.running else None

    render = log_renderer(tty=tty, timestamps=timestamps, details=details)

    async def body() -> AsyncIterator[bytes]:
        async with closing(read_logs(c.log_path, query, writer, render)) as chunks:
            async for chunk in chunks:
                yield chunk

    # No Content-Type below API 1.42, as dockerd 20.10 answers (PROTOCOL.md §2 logs).
    return ClosingStreamingResponse(body())
