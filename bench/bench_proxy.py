"""Userland proxy benchmark: throughput (256 MiB) and small-request latency through 127.0.0.1.

Builds a throwaway testbed (a named netns on a fresh bridge, a small Python server inside it),
then measures the same client against:
  - direct:       the server's address on the bridge (no proxy),
  - splice:       pydock's proxy (netproxy.proxy, splice mode) on 127.0.0.1,
  - relay:        pydock's proxy in plain asyncio relay mode,
  - docker-proxy: dockerd's docker-proxy binary, when one is installed (or given).
The proxy runs in this process's event loop; client and server are separate processes, as
pydockd, the client and the container are. Everything it creates is removed at the end.

    python -m bench.bench_proxy [--size-mib 256] [--rounds 2000] [--docker-proxy PATH] [--json]

Against a real pydock container instead of the testbed (`pydock`: pydockd's own proxy on the
published 127.0.0.1 port, `direct`: the container's address; the server runs inside the
container's network namespace, entered with nsenter):

    docker run -d --name bench -p 127.0.0.1:15201:5201 busybox sleep 1d
    DOCKER_HOST=unix:///run/pydock.sock python -m bench.bench_proxy --container bench

`run(...) -> dict` is the entry point for `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from netproxy import bridge
from netproxy.ipam import PoolSpec, host_routes, pick_subnet
from netproxy.iptables import Proto
from netproxy.netns import create_named_netns, remove_named_netns
from netproxy.ports import PortAllocator, PortRequest
from netproxy.proxy import ProxyMode, TcpProxy

SERVER_PORT = 5201
DOCKER_PROXY_PATHS = ("/usr/bin/docker-proxy", "/usr/sbin/docker-proxy", "/usr/libexec/docker/docker-proxy")

# The server inside the netns. First byte of a connection picks the test:
#   U: read until EOF, answer "<bytes> <crc32>\n"     (upload throughput, checked)
#   D<8-byte n>: send n bytes of a 1 MiB pattern, close (download throughput)
#   E: echo every read back                            (latency)
SERVER = textwrap.dedent(
    """
    import socket, sys, threading, zlib, struct
    PATTERN = bytes(range(256)) * 4096
    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        kind = c.recv(1)
        buf = bytearray(1 << 20); view = memoryview(buf)
        if kind == b"U":
            total = crc = 0
            while True:
                n = c.recv_into(buf)
                if not n:
                    break
                total += n
                crc = zlib.crc32(view[:n], crc)
            c.sendall(f"{total} {crc}\\n".encode())
        elif kind == b"D":
            need = struct.unpack("!Q", c.recv(8, socket.MSG_WAITALL))[0]
            while need:
                chunk = memoryview(PATTERN)[: min(need, len(PATTERN))]
                c.sendall(chunk)
                need -= len(chunk)
        elif kind == b"E":
            while True:
                n = c.recv_into(buf)
                if not n:
                    break
                c.sendall(view[:n])
        c.close()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen(128)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    """
)

# The client: one test, one JSON line on stdout.
CLIENT = textwrap.dedent(
    """
    import json, socket, struct, sys, time, zlib
    host, port, test, arg = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    def conn():
        c = socket.create_connection((host, port), timeout=60)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c
    out = {}
    if test == "upload":
        block = bytes(range(256)) * 4096
        n_blocks = arg // len(block)
        crc = 0
        for _ in range(n_blocks):
            crc = zlib.crc32(block, crc)
        c = conn()
        t0 = time.perf_counter()
        c.sendall(b"U")
        for _ in range(n_blocks):
            c.sendall(block)
        c.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\\n"):
            more = c.recv(64)
            if not more:
                break
            reply += more
        dt = time.perf_counter() - t0
        got_n, got_crc = (int(x) for x in reply.split())
        out = {"seconds": dt, "bytes": got_n, "ok": got_n == n_blocks * len(block) and got_crc == crc}
    elif test == "download":
        c = conn()
        buf = bytearray(1 << 20)
        t0 = time.perf_counter()
        c.sendall(b"D" + struct.pack("!Q", arg))
        total = 0
        while True:
            n = c.recv_into(buf)
            if not n:
                break
            total += n
        dt = time.perf_counter() - t0
        out = {"seconds": dt, "bytes": total, "ok": total == arg}
    elif test == "rtt":
        c = conn()
        c.sendall(b"E")
        msg = b"x" * 64
        samples = []
        for _ in range(arg):
            t0 = time.perf_counter()
            c.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(c.recv(4096))
            samples.append(time.perf_counter() - t0)
        samples.sort()
        out = {"p50_us": samples[len(samples) // 2] * 1e6, "p99_us": samples[int(len(samples) * 0.99)] * 1e6}
    elif test == "connect":
        samples = []
        for _ in range(arg):
            t0 = time.perf_counter()
            c = conn()
            c.sendall(b"Eping")
            got = b""
            while len(got) < 4:
                got += c.recv(64)
            c.close()
            samples.append(time.perf_counter() - t0)
        samples.sort()
        out = {"p50_us": samples[len(samples) // 2] * 1e6, "p99_us": samples[int(len(samples) * 0.99)] * 1e6}
    print(json.dumps(out), flush=True)
    """
)


class Testbed:
    """A bridge, a netns on it, and the server inside; `close()` removes all of it."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.owner = f"pydock-bench:{tag}"
        self.bridge_name = f"pdb{tag}"
        self.netns_name = f"pydock-bench-{tag}"
        self.netns_path: Path | None = None
        self.record: bridge.BridgeRecord | None = None
        self.veth: str | None = None
        self.server: asyncio.subprocess.Process | None = None
        self.server_ip = ""

    async def start(self) -> None:
        subnet = pick_subnet([PoolSpec(ipaddress.IPv4Network("10.231.0.0/16"), 24)], await host_routes())
        gateway = ipaddress.IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")
        address = ipaddress.IPv4Interface(f"{subnet.network_address + 2}/{subnet.prefixlen}")
        self.server_ip = str(address.ip)
        self.record = await bridge.ensure_bridge(self.bridge_name, gateway, owner=self.owner)
        self.netns_path = await create_named_netns(self.netns_name)
        attached = await bridge.attach(
            bridge.Endpoint(str(self.netns_path), self.bridge_name, address, gateway.ip), owner=self.owner
        )
        self.veth = attached.host_ifname
        self.server = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.netns_name, sys.executable, "-c", SERVER, str(SERVER_PORT),
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.server.stdout is not None
        async with asyncio.timeout(20):
            line = await self.server.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("bench server did not start")

    async def close(self) -> None:
        if self.server is not None and self.server.returncode is None:
            self.server.kill()
            await self.server.wait()
        if self.veth is not None:
            await bridge.detach(self.veth, owner=self.owner)
        if self.netns_path is not None:
            await remove_named_netns(self.netns_path)
        if self.record is not None:
            await bridge.delete_bridge(self.record)


async def client(host: str, port: int, test: str, arg: int, *, timeout_s: float = 300) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, host, str(port), test, str(arg),
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"bench client {test} via {host}:{port} failed")
    result: dict[str, Any] = json.loads(out)
    return result


def _cpu_seconds(pid: int | None) -> float:
    """User+system CPU time of process `pid` (None: this process, where our proxy runs)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    host: str, port: int, size: int, rounds: int, connects: int, *, repeat: int = 3, pid: int | None = -1
) -> dict[str, Any]:
    """Best of `repeat` runs for throughput; `pid` is the proxy process whose CPU is counted
    (None: this process; -1: no proxy)."""
    mib = size / (1 << 20)
    best: dict[str, float] = {"upload": 0.0, "download": 0.0}
    ok = True
    cpu = 0.0
    for _ in range(repeat):
        for test in ("upload", "download"):
            before = _cpu_seconds(pid) if pid != -1 else 0.0
            res = await client(host, port, test, size)
            cpu += (_cpu_seconds(pid) - before) if pid != -1 else 0.0
            ok = ok and bool(res["ok"])
            best[test] = max(best[test], mib / res["seconds"])
    rtt = await client(host, port, "rtt", rounds)
    conn = await client(host, port, "connect", connects)
    moved_gib = 2 * repeat * size / (1 << 30)
    return {
        "upload_mib_s": round(best["upload"], 1),
        "download_mib_s": round(best["download"], 1),
        "ok": ok,
        "proxy_cpu_s_per_gib": round(cpu / moved_gib, 3) if pid != -1 else None,
        "rtt_p50_us": round(rtt["p50_us"], 1),
        "rtt_p99_us": round(rtt["p99_us"], 1),
        "connect_p50_us": round(conn["p50_us"], 1),
        "connect_p99_us": round(conn["p99_us"], 1),
    }


def find_docker_proxy(given: str | None = None) -> str | None:
    for candidate in (given, os.environ.get("PYDOCK_DOCKER_PROXY"), *DOCKER_PROXY_PATHS):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("docker-proxy")


async def _wait_ready(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(10):
        line = await proc.stdout.readline()
    if line.strip() != b"0":
        raise RuntimeError(f"docker-proxy did not start: {line!r}")


def _docker_socket(host: str | None) -> str:
    host = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/pydock.sock"
    if not host.startswith("unix://"):
        raise SystemExit(f"--container needs a unix:// DOCKER_HOST, not {host}")
    return host.removeprefix("unix://")


def _inspect_container(ref: str, host: str | None) -> dict[str, Any]:
    import httpx

    transport = httpx.HTTPTransport(uds=_docker_socket(host))
    with httpx.Client(transport=transport, base_url="http://docker", timeout=30) as api:
        r = api.get(f"/containers/{ref}/json")
        r.raise_for_status()
        info: dict[str, Any] = r.json()
        return info


def _listener_pid(port: int) -> int | None:
    """The process listening on TCP `port` (pydockd, whose proxy CPU is counted)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
    return None


async def run_container_async(
    ref: str,
    *,
    host: str | None = None,
    size_mib: int = 256,
    rounds: int = 2000,
    connects: int = 200,
    repeat: int = 3,
) -> dict[str, Any]:
    """The `direct` and `pydock` paths of a running pydock container with a published TCP port."""
    info = await asyncio.to_thread(_inspect_container, ref, host)
    settings = info["NetworkSettings"]
    published = [
        (int(key.split("/")[0]), b) for key, bindings in (settings.get("Ports") or {}).items()
        if key.endswith("/tcp") for b in bindings or []
    ]  # fmt: skip
    if not published:
        raise SystemExit(f"container {ref} publishes no TCP port (docker run -p 127.0.0.1:P:{SERVER_PORT})")
    container_port, binding = published[0]
    host_ip = binding["HostIp"] if binding["HostIp"] not in ("", "0.0.0.0") else "127.0.0.1"
    host_port = int(binding["HostPort"])
    ip = settings.get("IPAddress") or next(
        n["IPAddress"] for n in settings["Networks"].values() if n.get("IPAddress")
    )
    server = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={settings['SandboxKey']}", sys.executable, "-c", SERVER, str(container_port),
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    size = size_mib << 20
    results: dict[str, Any] = {"size_mib": size_mib, "rounds": rounds, "container": info["Id"][:12]}
    try:
        assert server.stdout is not None
        async with asyncio.timeout(20):
            if (await server.stdout.readline()).strip() != b"ready":
                raise RuntimeError("bench server did not start in the container's namespace")
        results["direct"] = await _measure(ip, container_port, size, rounds, connects, repeat=repeat)
        results["pydock"] = await _measure(
            host_ip, host_port, size, rounds, connects, repeat=repeat, pid=_listener_pid(host_port) or -1
        )
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    return results


async def run_async(
    *,
    size_mib: int = 256,
    rounds: int = 2000,
    connects: int = 200,
    modes: tuple[str, ...] = ("direct", "splice", "relay", "docker-proxy"),
    docker_proxy: str | None = None,
    repeat: int = 3,
) -> dict[str, Any]:
    size = size_mib << 20
    results: dict[str, Any] = {"size_mib": size_mib, "rounds": rounds}
    bed = Testbed()
    alloc = PortAllocator()
    try:
        await bed.start()
        for mode in modes:
            if mode == "direct":
                results[mode] = await _measure(
                    bed.server_ip, SERVER_PORT, size, rounds, connects, repeat=repeat
                )
            elif mode in ("splice", "relay"):
                (hp,) = alloc.reserve([PortRequest(SERVER_PORT, Proto.TCP, "127.0.0.1")])
                proxy = TcpProxy(hp.sock, (bed.server_ip, SERVER_PORT), mode=ProxyMode(mode))
                proxy.start()
                try:
                    results[mode] = await _measure(
                        "127.0.0.1", hp.host_port, size, rounds, connects, repeat=repeat, pid=None
                    )
                finally:
                    await proxy.close()
                    alloc.release([hp])
            elif mode == "docker-proxy":
                binary = find_docker_proxy(docker_proxy)
                if binary is None:
                    results[mode] = None
                    continue
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                # docker-proxy reports readiness ("0\n") on fd 3, and exits at once without it.
                proc = await asyncio.create_subprocess_exec(
                    "sh", "-c", 'exec "$@" 3>&1 1>/dev/null', "sh",
                    binary, "-proto", "tcp", "-host-ip", "127.0.0.1", "-host-port", str(port),
                    "-container-ip", bed.server_ip, "-container-port", str(SERVER_PORT),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    await _wait_ready(proc)
                    results[mode] = await _measure(
                        "127.0.0.1", port, size, rounds, connects, repeat=repeat, pid=proc.pid
                    )
                finally:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
    finally:
        await asyncio.shield(bed.close())
    return results


def run(*, use_uvloop: bool = True, container: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run the benchmark in a fresh event loop (uvloop, as pydockd; needs root)."""
    if container is not None:
        kwargs.pop("modes", None)
        kwargs.pop("docker_proxy", None)
        work = run_container_async(container, **kwargs)
    else:
        kwargs.pop("host", None)
        work = run_async(**kwargs)
    if use_uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
        try:
            res = loop.run_until_complete(work)
        finally:
            loop.close()
        res["loop"] = "uvloop"
        return res
    res = asyncio.run(work)
    res["loop"] = "asyncio"
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--connects", type=int, default=200)
    ap.add_argument("--modes", default="direct,splice,relay,docker-proxy")
    ap.add_argument("--docker-proxy", default=None, help="path of a docker-proxy binary to compare")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs per path (best counts)")
    ap.add_argument("--asyncio", action="store_true", help="the stdlib loop instead of uvloop")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--container", default=None, help="measure a running pydock container instead")
    ap.add_argument("--host", default=None, help="the daemon for --container (default: $DOCKER_HOST)")
    args = ap.parse_args()
    if args.container is not None:
        args.modes = "direct,pydock"
    started = time.perf_counter()
    res = run(
        container=args.container,
        host=args.host,
        size_mib=args.size_mib,
        rounds=args.rounds,
        connects=args.connects,
        modes=tuple(args.modes.split(",")),
        docker_proxy=args.docker_proxy,
        repeat=args.repeat,
        use_uvloop=not args.asyncio,
    )
    if args.json:
        print(json.dumps(res))
        return
    print(
        f"proxy benchmark ({res['loop']}): {args.size_mib} MiB, {args.rounds} round trips "
        f"({time.perf_counter() - started:.1f} s)"
    )
    cols = (
        "upload_mib_s",
        "download_mib_s",
        "proxy_cpu_s_per_gib",
        "rtt_p50_us",
        "rtt_p99_us",
        "connect_p50_us",
        "connect_p99_us",
        "ok",
    )
    print(f"{'path':<14}" + "".join(f"{c:>20}" for c in cols))
    for mode in args.modes.split(","):
        row = res.get(mode)
        if row is None:
            print(f"{mode:<14}  (not installed)")
            continue
        print(f"{mode:<14}" + "".join(f"{row[c]!s:>20}" for c in cols))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
