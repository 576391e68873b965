"""Scenarios 1-3 of issue 9: `docker run --rm busybox true`, `run -d` + `rm -f`, `exec C true`.

Each is timed as the user sees it, around the real docker CLI, and beside the same operation on
the OCI runtime alone (the floor). A CLI-only row shows what the client itself costs.
"""

from __future__ import annotations

import functools
import time

from bench.context import Context, cli_sampler
from bench.engines import API, Engine
from bench.harness import Goal, Metric, Sampler, Skip


def cli_floor(ctx: Context) -> list[Metric]:
    """`docker version`: the CLI's start-up plus one API round trip; floor: `docker --version`."""
    m = Metric(
        "cli_version",
        "`docker version` (CLI start + 2 API calls)",
        "ms",
        "lower",
        floor_label="`docker --version` (no daemon)",
    )
    samplers: dict[str, Sampler] = {}
    if ctx.engines:
        samplers["runc"] = cli_sampler(ctx.engines[0], "--version")  # the floor column
    for e in ctx.engines:
        samplers[e.name] = cli_sampler(e, "version")
    ctx.skip_absent(m, floors=False)
    return [ctx.sample(m, samplers)]


def run_rm(ctx: Context) -> list[Metric]:
    m = Metric(
        "run_rm",
        "`docker run --rm busybox true`",
        "ms",
        "lower",
        Goal("<=", 0.35),
        floor_label="`runc run`",
    )
    samplers: dict[str, Sampler] = {f.name: f.run_true for f in ctx.floors}
    for e in ctx.engines:
        samplers[e.name] = cli_sampler(e, "run", "--rm", "busybox", "true")
    ctx.skip_absent(m)
    return [ctx.sample(m, samplers, warmup=2)]


def _run_d_rm(engine: Engine) -> Sampler:
    def sample() -> float:
        start = time.perf_counter()
        cid = engine.docker("run", "-d", "--label", "pydock.bench=1", "busybox", "sleep", "3600")
        engine.docker("rm", "-f", cid.stdout.decode().strip(), capture=False)
        return time.perf_counter() - start

    return sample


def run_d_rm(ctx: Context) -> list[Metric]:
    m = Metric(
        "run_d_rm",
        "`docker run -d busybox sleep` + `docker rm -f`",
        "ms",
        "lower",
        Goal("<=", 0.4),
        floor_label="`runc run -d` + `kill` + `delete`",
    )
    samplers: dict[str, Sampler] = {f.name: f.run_detached_then_delete for f in ctx.floors}
    for e in ctx.engines:
        samplers[e.name] = _run_d_rm(e)
    ctx.skip_absent(m)
    return [ctx.sample(m, samplers)]


def _exec_supported(engine: Engine, cid: str) -> None:
    r = engine.http().post(f"{API}/containers/{cid}/exec", json={"Cmd": ["true"]})
    if r.status_code == 404 and "page not found" in r.text:
        raise Skip(f"{engine.name} has no exec endpoint yet (POST /containers/{{id}}/exec is 404)")
    if r.status_code != 201:
        raise Skip(f"{engine.name}: exec create -> {r.status_code} {r.text[:200]}")


def exec_true(ctx: Context) -> list[Metric]:
    m = Metric(
        "exec",
        "`docker exec C true`",
        "ms",
        "lower",
        Goal("<=", 0.7),
        floor_label="`runc exec`",
    )
    samplers: dict[str, Sampler] = {}
    for f in ctx.floors:
        fcid = f.start_sleeper()
        samplers[f.name] = functools.partial(f.exec_true, fcid)
    for e in ctx.engines:
        cid = e.run_detached(["sleep", "3600"])
        try:
            _exec_supported(e, cid)
        except Skip as exc:
            m.skip(e.name, str(exc))
            continue
        samplers[e.name] = cli_sampler(e, "exec", cid, "true")
    ctx.skip_absent(m)
    ctx.sample(m, samplers)
    for e in ctx.engines:
        e.remove_bench_containers()
    return [m]


SCENARIOS = {"cli": cli_floor, "run_rm": run_rm, "run_d_rm": run_d_rm, "exec": exec_true}
