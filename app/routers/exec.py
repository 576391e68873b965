"""Exec endpoints: create, start (hijacked like attach), inspect, resize.

Start (moby `postContainerExecStart`, PROTOCOL.md §2 exec and §3):
- `Detach: true` answers 200 with an empty body; the process runs with /dev/null stdio;
- otherwise `Upgrade: tcp` gets 101 and the raw stream: output framed unless the start body's
  `Tty` (dockerd frames by the start body, not the exec's), stdin from the client when the exec
  opened it; without an `Upgrade` header, a plain 200 carries the output;
- a failure to start (no such command, unknown user) after the 101 is written into the stream
  as text + CRLF (a stdout frame without a TTY), as dockerd does; the CLI then reads the exec's
  exit code (126/127) from `GET /exec/{id}/json`;
- stdin EOF closes the process's stdin (non-TTY) or ends the session (TTY); the detach keys on a
  TTY end the session and leave the process running (`exec_detach`); a client that goes away
  mid-stream leaves a TTY process running (the CLI detaches so: it reads ctrl-p ctrl-q itself
  and closes the connection), and gets a process without a TTY terminated (SIGTERM, SIGKILL
  10 s later) so nothing is left behind; the session ends once the process exited and its
  output was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.deps import get_execs
from app.errors import DockerJSONResponse
from app.hijack import RAW_STREAM, HijackChannel, HijackedResponse, hijack_channel, pump_input
from app.models.exec import ExecConfig, ExecCreateResponse, ExecInspect, ExecStartConfig
from app.routers.attach import DEFAULT_DETACH_KEYS, ChannelSink, parse_detach_keys
from app.streams import STDOUT, ClosingStreamingResponse, frame
from runtime.errors import InvalidParameter, PydockError
from runtime.execproc import ExecProcess
from runtime.execs import ExecRecord, ExecService
from runtime.stdio import Sink

router = APIRouter(tags=["Exec"])
HANGUP_POLL_S = 0.5
Execs = Annotated[ExecService, Depends(get_execs)]


@router.post(
    "/containers/{ref}/exec",
    operation_id="ContainerExec",
    status_code=201,
    responses={201: {"model": ExecCreateResponse}},
)
async def container_exec(ref: str, body: ExecConfig, execs: Execs) -> DockerJSONResponse:
    keys = b""
    if body.DetachKeys:
        try:
            keys = parse_detach_keys(body.DetachKeys)
        except InvalidParameter:
            raise InvalidParameter(f"Invalid escape keys ({body.DetachKeys}) provided") from None
    eid = execs.create(ref, body, detach_keys=keys)
    return DockerJSONResponse({"Id": eid}, status_code=201)


@router.get("/exec/{eid}/json", operation_id="ExecInspect", responses={200: {"model": ExecInspect}})
async def exec_inspect(eid: str, execs: Execs) -> DockerJSONResponse:
    return DockerJSONResponse(execs.get(eid).inspect())


@router.post("/exec/{eid}/resize", operation_id="ExecResize")
async def exec_resize(eid: str, execs: Execs, h: int = 0, w: int = 0) -> Response:
    execs.resize(eid, h, w)
    return Response(status_code=200)


@router.post("/exec/{eid}/start", operation_id="ExecStart", response_class=Response)
async def exec_start(
    request: Request, eid: str, execs: Execs, body: ExecStartConfig | None = None
) -> Response:
    start = body or ExecStartConfig()
    record = execs.reserve(eid)
    if start.Detach:
        await execs.start(record, None)
        return Response(status_code=200)
    channel = hijack_channel(request)
    if channel is None:
        return _start_without_upgrade(execs, record, framed=not start.Tty)
    await channel.accept(content_type=RAW_STREAM)
    sink = ChannelSink(channel, tty=not _framed(start), stdout=record.open_stdout, stderr=record.open_stderr)
    try:
        try:
            proc = await execs.start(record, sink)
        except PydockError as exc:
            _write_error(channel, exc.message, framed=_framed(start))
            await channel.drain()
            return HijackedResponse()
        await _session(channel, execs, record, proc, sink)
    finally:
        channel.close()
    return HijackedResponse()


def _framed(start: ExecStartConfig) -> bool:
    return not start.Tty


def _write_error(channel: HijackChannel, message: str, *, framed: bool) -> None:
    data = (message + "\r\n").encode()
    channel.write(frame(STDOUT, data) if framed else data)


def _hung_up(channel: HijackChannel) -> bool:
    """Whether the client shut both directions (UNIX sockets report POLLHUP then; a half-close,
    which the CLI does right after the 101 when it sends no stdin, does not)."""
    sock = channel._protocol.transport.get_extra_info("socket")
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLHUP)
    return any(events & select.POLLHUP for _fd, events in poller.poll(0))


async def _client_gone(channel: HijackChannel) -> None:
    """Returns once the client is gone. A closed socket is only noticed by the transport when
    it writes; a process that is quiet (`sleep`, a shell waiting for input) must not keep a
    vanished client's session, and its process, alive forever."""
    closed = asyncio.ensure_future(channel.wait_closed())
    try:
        while not closed.done():
            await asyncio.wait({closed}, timeout=HANGUP_POLL_S)
            if not closed.done() and _hung_up(channel):
                return
    finally:
        closed.cancel()


async def _session(
    channel: HijackChannel, execs: ExecService, record: ExecRecord, proc: ExecProcess, sink: ChannelSink
) -> None:
    ended = asyncio.ensure_future(sink.ended.wait())
    closed = asyncio.ensure_future(_client_gone(channel))
    waiters: set[asyncio.Future[Any]] = {ended, closed}
    pump: asyncio.Task[str] | None = None
    if record.open_stdin:
        keys = record.detach_keys or DEFAULT_DETACH_KEYS
        pump = asyncio.create_task(_pump_stdin(channel, proc, detach_keys=keys, tty=record.tty))
        waiters.add(pump)
    try:
        while True:
            done, _pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if ended in done:
                break
            if pump is not None and pump in done:
                reason = pump.result()
                waiters.discard(pump)
                pump = None
                if reason == "detach":
                    execs.detached(record)
                    break
                if _hung_up(channel):
                    execs.client_gone(record)  # not a half-close: the client is gone
                    break
                if not record.tty:
                    proc.close_stdin()  # `exec -i`: EOF reaches the process; its output goes on
                    continue
                proc.detach_sink()
                break  # TTY: stdin EOF ends this session, the process runs on
            if closed in done:
                execs.client_gone(record)
                break
        await channel.drain()
    finally:
        for waiter in waiters:
            waiter.cancel()
        if pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await pump


async def _pump_stdin(channel: HijackChannel, proc: ExecProcess, *, detach_keys: bytes, tty: bool) -> str:
    """Client stdin → the process. Returns why it ended: "eof" or "detach" (TTY only)."""
    return await pump_input(channel, proc.write_stdin, detach_keys=detach_keys if tty else b"")


def _start_without_upgrade(execs: ExecService, record: ExecRecord, *, framed: bool) -> Response:
    """A client without `Upgrade: tcp` (curl): 200 and the output, no stdin."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    wanted = {n for n, on in ((1, record.open_stdout), (2, record.open_stderr)) if on}

    class QueueSink(Sink):
        def send(self, stream: int, data: bytes) -> None:
            if stream in wanted:
                queue.put_nowait(frame(stream, data) if framed else data)

        def end(self) -> None:
            queue.put_nowait(None)

    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            try:
                await execs.start(record, QueueSink())
            except PydockError as exc:
                data = (exc.message + "\r\n").encode()
                yield frame(STDOUT, data) if framed else data
                return
            while (item := await queue.get()) is not None:
                yield item
            finished = True
        finally:
            if not finished:
                execs.client_gone(record)

    return ClosingStreamingResponse(body(), media_type=RAW_STREAM)
