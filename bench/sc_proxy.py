"""Scenario 5 of issue 9: proxy throughput (256 MiB each way) and small-request latency through
`-p 127.0.0.1:P:5201`, beside the container's own address (the limit).

Each engine runs `busybox sleep` with the port published on 127.0.0.1; the server (bench_proxy's,
a small Python program) runs inside that container's network namespace (`nsenter --net`), so the
path through each engine's proxy (pydock's in-process splice proxy, dockerd's docker-proxy) is the
one a real container server gets. Clients are bench_proxy's, in their own processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from bench.bench_proxy import SERVER, client
from bench.context import Context
from bench.engines import Engine, PydockEngine
from bench.harness import Goal, Metric, Sampler, Skip
from bench.memory import cpu_seconds

PORT = 5201
MIB = 1 << 20


@dataclass(slots=True)
class Endpoint:
    engine: Engine
    cid: str
    host_port: int
    container_ip: str
    server: subprocess.Popen[bytes]

    def close(self) -> None:
        if self.server.poll() is None:
            self.server.kill()
            self.server.wait(10)
        with contextlib.suppress(RuntimeError):
            self.engine.remove(self.cid)


def publish(engine: Engine) -> Endpoint:
    """A container with 127.0.0.1:P -> 5201 and the bench server listening inside it."""
    try:
        cid = engine.run_detached(
            ["sleep", "3600"], ports={f"{PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
        )
    except RuntimeError as exc:
        raise Skip(f"cannot publish a port: {exc}") from None
    info = engine.inspect(cid)
    settings = info.get("NetworkSettings") or {}
    bound = (settings.get("Ports") or {}).get(f"{PORT}/tcp") or []
    ip = settings.get("IPAddress") or next(
        (n.get("IPAddress") for n in (settings.get("Networks") or {}).values() if n.get("IPAddress")), ""
    )
    if not bound or not ip:
        engine.remove(cid)
        raise Skip(f"{engine.name}: no published port or container address in inspect (networking not there)")
    host_port = int(bound[0]["HostPort"])
    server = subprocess.Popen(
        ["nsenter", "-t", str(info["State"]["Pid"]), "-n", sys.executable, "-c", SERVER, str(PORT)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert server.stdout is not None
    if server.stdout.readline().strip() != b"ready":
        server.kill()
        server.wait()
        engine.remove(cid)
        raise RuntimeError("bench server did not start in the container's netns")
    return Endpoint(engine, cid, host_port, ip, server)


def _client(host: str, port: int, test: str, arg: int) -> dict[str, Any]:
    return asyncio.run(client(host, port, test, arg))


def proxy(ctx: Context) -> list[Metric]:
    sz = ctx.sizes
    size = sz.proxy_mib * MIB
    direct = "direct to the container address"
    up = Metric(
        "proxy_upload",
        f"proxy throughput 127.0.0.1 -> container, {sz.proxy_mib} MiB",
        "MiB/s",
        "higher",
        Goal(">=", 1.0, text=">= docker-proxy's"),
        floor_label=direct,
    )
    down = Metric(
        "proxy_download",
        f"proxy throughput container -> 127.0.0.1, {sz.proxy_mib} MiB",
        "MiB/s",
        "higher",
        Goal(">=", 1.0, text=">= docker-proxy's"),
        floor_label=direct,
    )
    rtt = Metric(
        "proxy_rtt",
        f"proxy small-request round trip (64 B echo, p50 of {sz.proxy_rtt_rounds})",
        "us",
        "lower",
        floor_label=direct,
    )
    connect = Metric(
        "proxy_connect",
        "proxy connect + 1 small request (p50 of 200)",
        "us",
        "lower",
        floor_label=direct,
    )
    metrics = [up, down, rtt, connect]
    for m in metrics:
        ctx.skip_absent(m, floors=False)
    endpoints: dict[str, Endpoint] = {}
    try:
        for e in ctx.engines:
            try:
                endpoints[e.name] = publish(e)
            except Skip as exc:
                for m in metrics:
                    m.skip(e.name, str(exc))
                ctx.progress(f"proxy: {e.name} skipped: {exc}")
        if not endpoints:
            return metrics
        first = next(iter(endpoints.values()))
        cpu: dict[str, float] = {}

        def through(ep: Endpoint, test: str, arg: int, key: str) -> Sampler:
            def sample() -> float:
                pids = ep.engine.daemon_pids()
                before = cpu_seconds(pids)
                res = _client("127.0.0.1", ep.host_port, test, arg)
                if test in ("upload", "download"):
                    cpu[ep.engine.name] = cpu.get(ep.engine.name, 0.0) + cpu_seconds(pids) - before
                return _value(res, test, arg, key)

            return sample

        def straight(test: str, arg: int, key: str) -> Sampler:
            return lambda: _value(_client(first.container_ip, PORT, test, arg), test, arg, key)

        for m, test, arg, key in (
            (up, "upload", size, "seconds"),
            (down, "download", size, "seconds"),
            (rtt, "rtt", sz.proxy_rtt_rounds, "p50_us"),
            (connect, "connect", 200, "p50_us"),
        ):
            samplers = {"runc": straight(test, arg, key)}
            samplers |= {name: through(ep, test, arg, key) for name, ep in endpoints.items()}
            repeat = sz.proxy_repeat if test in ("upload", "download") else 1
            ctx.sample(m, samplers, iterations=repeat, warmup=0, scale=1.0)
        moved = 2 * sz.proxy_repeat * size / (1 << 30)
        for name, used in cpu.items():
            up.notes.append(f"{name}: proxy-side CPU {used / moved:.2f} s per GiB moved (both directions)")
    finally:
        for ep in endpoints.values():
            ep.close()
    if ctx.engine("pydock") is not None:
        metrics += kernel_path(ctx)
    return metrics


def kernel_path(ctx: Context) -> list[Metric]:
    """pydock with `--userland-proxy=false` (DNAT of 127.0.0.1 via route_localnet, no proxy in
    the path): its own throwaway daemon, against the direct path; target >= 0.9x direct."""
    sz = ctx.sizes
    size = sz.proxy_mib * MIB
    rows = {
        test: Metric(
            f"kernel_{test}",
            f"127.0.0.1 port, kernel path (`--userland-proxy=false`), {test}, {sz.proxy_mib} MiB",
            "MiB/s",
            "higher",
            Goal(">=", 0.9, versus="runc", text=">= 0.9x direct"),
            floor_label="direct to the container address",
        )
        for test in ("upload", "download")
    }
    engine = PydockEngine(ctx.work / "kernel-path", ["--userland-proxy=false"])
    ep: Endpoint | None = None
    try:
        ctx.progress("proxy: a second pydockd with --userland-proxy=false")
        engine.start_daemon()
        engine.load_image(ctx.busybox_tar)
        ep = publish(engine)
        for test, m in rows.items():
            samplers: dict[str, Sampler] = {
                "runc": functools.partial(_rate, ep.container_ip, PORT, test, size),
                "pydock": functools.partial(_rate, "127.0.0.1", ep.host_port, test, size),
            }
            # Both paths are the kernel's alone and swing ±30 % run to run on a small VM: more
            # (cheap) interleaved samples, after a warm-up, make the median mean something.
            ctx.sample(m, samplers, iterations=4 * sz.proxy_repeat, warmup=1, scale=1.0)
    except (Skip, RuntimeError, OSError, TimeoutError) as exc:
        for m in rows.values():
            m.skip("pydock", f"kernel path: {exc}")
    finally:
        if ep is not None:
            ep.close()
        engine.close()
    return list(rows.values())


def _rate(host: str, port: int, test: str, size: int) -> float:
    return _value(_client(host, port, test, size), test, size, "seconds")


def _value(res: dict[str, Any], test: str, arg: int, key: str) -> float:
    if test in ("upload", "download"):
        if not res.get("ok"):
            raise RuntimeError(f"{test}: data mismatch through the proxy")
        return arg / MIB / float(res[key])
    return float(res[key])


SCENARIOS = {"proxy": proxy}
