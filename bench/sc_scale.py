"""Scenario 4 of issue 9: many running containers: `docker ps` and `GET /containers/json`
latency, and daemon-side memory (PSS) per added running container.

Daemon side means the daemon's whole process tree without the containers' own processes: pydockd
alone; dockerd + containerd + one containerd-shim per container (+ docker-proxy when ports are
published; none are here). Containers are started in small batches on every engine in turn.
It runs first, on fresh daemons (after one warm-up container): later, the heap a daemon grew for
other scenarios (e.g. 50 MB of logs) would absorb the new containers and hide their cost.
"""

from __future__ import annotations

import statistics
import time

from bench.context import Context, cli_sampler
from bench.engines import API, Engine
from bench.harness import Goal, Metric, Sampler
from bench.memory import pss_bytes

MIB = 1 << 20
BATCH = 10


def daemon_pss(engine: Engine, reads: int = 3) -> float:
    """Median of a few PSS reads of the daemon side, in bytes."""
    values = []
    for i in range(reads):
        if i:
            time.sleep(0.2)
        values.append(pss_bytes(engine.daemon_pids()))
    return statistics.median(values)


def _list_sampler(engine: Engine) -> Sampler:
    def sample() -> float:
        start = time.perf_counter()
        r = engine.http().get(f"{API}/containers/json")
        elapsed = time.perf_counter() - start
        if r.status_code != 200:
            raise RuntimeError(f"GET /containers/json -> {r.status_code}")
        return elapsed

    return sample


def many_containers(ctx: Context) -> list[Metric]:
    n = ctx.sizes.containers
    mem = Metric(
        "mem_per_container",
        f"daemon-side PSS per added running container ({n} running)",
        "MiB",
        "lower",
        Goal("<=", 0.05, text="<= 1/20 of dockerd's"),
        floor_label="",
    )
    ps = Metric("ps", f"`docker ps` with {n} running", "ms", "lower", Goal("<=", 1.0), floor_label="")
    listing = Metric(
        "containers_json",
        f"`GET /containers/json` with {n} running",
        "ms",
        "lower",
        Goal("<=", 1.0),
        floor_label="",
    )
    for m in (mem, ps, listing):
        ctx.skip_absent(m, floors=False)
    engines = list(ctx.engines)
    idle: dict[str, float] = {}
    for e in engines:
        # warm code paths (and caches) with one container first, so the base is not a cold daemon
        e.remove(e.run_detached(["sleep", "3600"]))
        idle[e.name] = daemon_pss(e)
    started: dict[str, int] = {e.name: 0 for e in engines}
    for first in range(0, n, BATCH):
        count = min(BATCH, n - first)
        for e in engines:
            e.parallel("run_detached", [["sleep", "3600"]] * count)
            started[e.name] += count
        if (first // BATCH) % 5 == 4:
            ctx.progress(f"many: {first + count}/{n} running on each engine")
    for e in engines:
        running = len(e.api("GET", "/containers/json", params={"filters": '{"label": ["pydock.bench"]}'}))
        if running != n:
            mem.notes.append(f"{e.name}: only {running} of {n} containers were running")
        full = daemon_pss(e)
        mem.add(e.name, (full - idle[e.name]) / n / MIB)
        mem.notes.append(
            f"{e.name}: daemon side {idle[e.name] / MIB:.1f} MiB idle, {full / MIB:.1f} MiB with {n} running"
        )
    ctx.progress("many: " + "; ".join(mem.notes))
    ctx.sample(ps, {e.name: cli_sampler(e, "ps") for e in engines})
    ctx.sample(listing, {e.name: _list_sampler(e) for e in engines})
    for e in engines:
        e.remove_bench_containers()
    return [mem, ps, listing]


SCENARIOS = {"many": many_containers}
