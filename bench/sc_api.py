"""Scenario 7 of issue 9: API requests per second for `/_ping` and `/containers/json`.

A closed-loop client (`bench.loadgen`, its own process, 32 keep-alive connections) hammers each
daemon for a few seconds, engines interleaved. The floor column is the same client against a stub
server that answers instantly: the client's own ceiling, which must sit well above every daemon.
Daemon CPU per 1000 requests is noted beside the rate (on 2 cores the client competes for CPU).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

from bench.context import Context
from bench.engines import Engine
from bench.harness import Goal, Metric, Sampler
from bench.memory import cpu_seconds

REPO = Path(__file__).resolve().parents[1]
PATHS = ("/_ping", "/containers/json")


def load(sock: Path, path: str, conns: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "client", "--uds", str(sock), "--path", path,
         "--conns", str(conns), "--seconds", str(seconds)],
        cwd=REPO, capture_output=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    result: dict[str, float] = json.loads(out)
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} non-200 answers from {path}")
    return result


class Stub:
    """`bench.loadgen stub` in its own process, stopped by PID."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", "stub", "--uds", str(sock)],
            cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            self.close()
            raise RuntimeError("loadgen stub did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.sock.unlink(missing_ok=True)


def api_rps(ctx: Context) -> list[Metric]:
    sz = ctx.sizes
    metrics = {
        path: Metric(
            f"rps{path.replace('/', '_')}",
            f"API requests/s, `GET {path}` ({sz.api_connections} connections"
            + (f", {sz.api_containers} containers)" if path != "/_ping" else ")"),
            "req/s",
            "higher",
            Goal(">=", 1.0),
            floor_label="client ceiling (stub server)",
        )
        for path in PATHS
    }
    for m in metrics.values():
        ctx.skip_absent(m, floors=False)
    for e in ctx.engines:
        e.parallel("run_detached", [["sleep", "3600"]] * sz.api_containers)
    stub = Stub(ctx.work / "stub.sock")
    try:
        for path, m in metrics.items():
            samplers: dict[str, Sampler] = {"runc": functools.partial(_stub_rps, stub, path, ctx)}
            cpu: dict[str, list[float]] = {}
            for e in ctx.engines:
                samplers[e.name] = _engine_sampler(e, path, sz.api_connections, sz.api_seconds, cpu)
            ctx.sample(m, samplers, iterations=2, warmup=0, scale=1.0)
            for name, per_k in cpu.items():
                m.notes.append(f"{name}: {sum(per_k) / len(per_k):.3f} CPU-s per 1000 requests (daemon side)")
    finally:
        stub.close()
    for e in ctx.engines:
        e.remove_bench_containers()
    return list(metrics.values())


def _stub_rps(stub: Stub, path: str, ctx: Context) -> float:
    return load(stub.sock, path, ctx.sizes.api_connections, ctx.sizes.api_seconds)["rps"]


def _engine_sampler(
    engine: Engine, path: str, conns: int, seconds: float, cpu: dict[str, list[float]]
) -> Sampler:
    def sample() -> float:
        pids = engine.daemon_pids()
        before = cpu_seconds(pids)
        result = load(engine.sock, path, conns, seconds)
        used = cpu_seconds(pids) - before
        cpu.setdefault(engine.name, []).append(used / result["requests"] * 1000)
        return result["rps"]

    return sample


SCENARIOS = {"api": api_rps}
