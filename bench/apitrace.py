"""Where the time of one CLI command goes, request by request: a timing relay on a UNIX socket.

    python -m bench.apitrace --upstream /path/daemon.sock -- docker run --rm busybox true

Listens on a temp socket, points the docker CLI at it (DOCKER_HOST), relays every connection to
the daemon, and prints a timeline: when each request was sent, when its response started, and the
bytes of hijacked streams, in ms since the CLI was started. Works the same for pydock and dockerd.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.engines import DOCKER

METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ")


@dataclass(slots=True)
class Trace:
    t0: float = field(default_factory=time.perf_counter)
    events: list[tuple[float, int, str, str]] = field(default_factory=list)
    conns: int = 0

    def add(self, conn: int, direction: str, what: str) -> None:
        self.events.append(((time.perf_counter() - self.t0) * 1e3, conn, direction, what))


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trace: Trace, conn: int, direction: str
) -> None:
    try:
        while data := await reader.read(65536):
            first = data.split(b"\r\n", 1)[0]
            if data.startswith(METHODS) or data.startswith(b"HTTP/1."):
                trace.add(conn, direction, first.decode(errors="replace")[:100])
            else:
                trace.add(conn, direction, f"{len(data)} bytes")
            writer.write(data)
            await writer.drain()
        trace.add(conn, direction, "EOF")
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        trace.add(conn, direction, "reset")


async def trace_command(upstream: Path, argv: list[str]) -> Trace:
    trace = Trace()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        trace.conns += 1
        conn = trace.conns
        trace.add(conn, "--", "connect")
        ur, uw = await asyncio.open_unix_connection(str(upstream))
        await asyncio.gather(_pump(cr, uw, trace, conn, "->"), _pump(ur, cw, trace, conn, "<-"))
        uw.close()
        cw.close()

    def on_conn(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(handle(cr, cw))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    with tempfile.TemporaryDirectory(prefix="pdtrace-") as tmp:
        sock = Path(tmp) / "trace.sock"
        server = await asyncio.start_unix_server(on_conn, str(sock))
        async with server:
            env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
            env.pop("DOCKER_CONTEXT", None)
            trace.t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(*argv, env=env, stdin=asyncio.subprocess.DEVNULL)
            await proc.wait()
            trace.add(0, "--", f"CLI exited {proc.returncode}")
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return trace


def render(trace: Trace) -> str:
    lines = []
    for ms, conn, direction, what in trace.events:
        lines.append(f"{ms:8.1f} ms  #{conn:<2} {direction} {what}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--upstream", type=Path, required=True, help="the daemon's UNIX socket")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("command", nargs="+", help="e.g. docker run --rm busybox true")
    args = ap.parse_args(argv)
    command = [DOCKER, *args.command[1:]] if args.command[0] == "docker" else args.command
    for _ in range(args.repeat):
        trace = asyncio.run(trace_command(args.upstream, command))
        print(render(trace), flush=True)
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
