"""A closed-loop HTTP/1.1 load generator over a UNIX socket, and a stub server to measure its ceiling.

    python -m bench.loadgen client --uds PATH --path /_ping --conns 32 --seconds 4 [--procs 1]
    python -m bench.loadgen stub --uds PATH      # answers every request with a canned 200 "OK"

The client keeps `conns` keep-alive connections, each sending the next GET as soon as the previous
response is complete (Content-Length or chunked bodies), for `seconds`, and prints one JSON line:
requests, requests/s, latency p50/p99, errors and its own CPU time. It runs on uvloop with raw
protocols (no HTTP library), so that it is not what limits the numbers: the same client against
the stub shows how far it goes on this machine (the "client ceiling" in the report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from typing import Any, cast


class _Conn(asyncio.Protocol):
    def __init__(self, request: bytes, deadline: float, stats: _Stats, done: asyncio.Future[None]) -> None:
        self.request = request
        self.deadline = deadline
        self.stats = stats
        self.done = done
        self.buf = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def _complete(self) -> int:
        """Length of the first complete response in buf, or 0."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return 0
        body = end + 4
        length = -1
        chunked = False
        for line in bytes(self.buf[:end]).lower().split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
        if length >= 0:
            return body + length if len(self.buf) >= body + length else 0
        if chunked:
            # JSON bodies hold no raw CRLF, so the last-chunk marker cannot appear inside one
            if self.buf.startswith(b"0\r\n\r\n", body):
                return body + 5
            tail = self.buf.find(b"\r\n0\r\n\r\n", body)
            return tail + 7 if tail >= 0 else 0
        return body

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            size = self._complete()
            if not size:
                return
            now = time.perf_counter()
            if not self.buf.startswith(b"HTTP/1.1 200"):
                self.stats.errors += 1
            self.stats.latencies.append(now - self.sent_at)
            del self.buf[:size]
            if now >= self.deadline:
                assert self.transport is not None
                self.transport.close()
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0


async def _client(uds: str, path: str, conns: int, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: pydock-bench\r\n\r\n".encode()
    stats = _Stats()
    cpu0 = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    dones: list[asyncio.Future[None]] = []
    for _ in range(conns):
        done: asyncio.Future[None] = loop.create_future()
        dones.append(done)
        await loop.create_unix_connection(lambda d=done: _Conn(request, deadline, stats, d), uds)  # type: ignore[misc]
    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*dones)
    elapsed = time.perf_counter() - start
    lat = sorted(stats.latencies)
    n = len(lat)
    return {
        "requests": n,
        "seconds": elapsed,
        "rps": n / elapsed,
        "p50_ms": lat[n // 2] * 1e3 if n else None,
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3 if n else None,
        "errors": stats.errors,
        "cpu_s": time.process_time() - cpu0,
    }


class _Stub(asyncio.Protocol):
    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK"

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        count = self.buf.count(b"\r\n\r\n")
        if count:
            del self.buf[: self.buf.rfind(b"\r\n\r\n") + 4]
            assert self.transport is not None
            self.transport.write(self.RESPONSE * count)


async def _stub(uds: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(_Stub, uds)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _loop_run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is one of pydock's dependencies
        return asyncio.run(coro)


def _one_proc(args: tuple[str, str, int, float]) -> dict[str, Any]:
    result: dict[str, Any] = _loop_run(_client(*args))
    return result


def run_client(uds: str, path: str, conns: int, seconds: float, procs: int = 1) -> dict[str, Any]:
    """Run the load (in `procs` processes, `conns` connections each) and merge the results."""
    if procs <= 1:
        return _one_proc((uds, path, conns, seconds))
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        parts = pool.map(_one_proc, [(uds, path, conns, seconds)] * procs)
    total = sum(p["requests"] for p in parts)
    return {
        "requests": total,
        "seconds": max(p["seconds"] for p in parts),
        "rps": sum(p["rps"] for p in parts),
        "p50_ms": max(p["p50_ms"] or 0 for p in parts),
        "p99_ms": max(p["p99_ms"] or 0 for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "cpu_s": sum(p["cpu_s"] for p in parts),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("client")
    c.add_argument("--uds", required=True)
    c.add_argument("--path", default="/_ping")
    c.add_argument("--conns", type=int, default=32)
    c.add_argument("--seconds", type=float, default=4.0)
    c.add_argument("--procs", type=int, default=1)
    s = sub.add_parser("stub")
    s.add_argument("--uds", required=True)
    args = ap.parse_args(argv)
    if args.mode == "stub":
        try:
            _loop_run(_stub(args.uds))
        except KeyboardInterrupt:
            pass
        finally:
            if os.path.exists(args.uds):
                os.unlink(args.uds)
        return 0
    print(json.dumps(run_client(args.uds, args.path, args.conns, args.seconds, args.procs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
