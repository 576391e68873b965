"""Scenario 6 of issue 9: a 50 MB log: ingest rate while the container writes it, and the
`docker logs` read-back rate.

The container writes 100-byte lines (`yes LINE | head -c N`) to stdout. Ingest is timed from
`start` to `wait` returning (the daemon has the whole log when the container is reported exited);
read-back is `docker logs C` through the CLI, and the byte count is checked. The ingest floor is
the same command under plain `runc run` with stdout on /dev/null: how fast the writer itself goes.
"""

from __future__ import annotations

import functools
import time

from bench.context import Context
from bench.engines import API, Engine
from bench.floor import OciFloor
from bench.harness import Goal, Metric, Sampler

LINE = "0123456789" * 9 + "abcdefghi"  # + "\n" from `yes`: 100 bytes a line


def _command(size: int) -> list[str]:
    return ["sh", "-c", f"yes {LINE} | head -c {size}"]


def _floor_rate(floor: OciFloor, size: int) -> float:
    return size / 1e6 / floor.run_cmd("logs", _command(size))


class LogRound:
    """One engine's container: ingest then read back, checked."""

    def __init__(self, engine: Engine, size: int) -> None:
        self.engine = engine
        self.size = size
        self.pending: str | None = None

    def ingest(self) -> float:
        e = self.engine
        cid = e.create(_command(self.size))
        start = time.perf_counter()
        e.start(cid)
        r = e.http().post(f"{API}/containers/{cid}/wait", timeout=600)
        elapsed = time.perf_counter() - start
        if r.status_code != 200 or r.json().get("StatusCode") != 0:
            raise RuntimeError(f"log writer: wait -> {r.status_code} {r.text[:200]}")
        self.pending = cid
        return self.size / 1e6 / elapsed

    def read_back(self) -> float:
        cid, self.pending = self.pending, None
        if cid is None:
            raise RuntimeError("no log to read (its ingest failed)")
        try:
            start = time.perf_counter()
            out = self.engine.docker("logs", cid, timeout_s=600)
            elapsed = time.perf_counter() - start
            if len(out.stdout) != self.size:
                raise RuntimeError(f"docker logs returned {len(out.stdout)} bytes, expected {self.size}")
            return self.size / 1e6 / elapsed
        finally:
            self.engine.remove(cid)


def logs(ctx: Context) -> list[Metric]:
    size = ctx.sizes.log_bytes
    mb = size / 1e6
    ingest = Metric(
        "log_ingest",
        f"log ingest, {mb:g} MB of 100-byte lines (start -> exit)",
        "MB/s",
        "higher",
        Goal(">=", 1.0),
        floor_label="`runc run`, stdout to /dev/null",
    )
    read = Metric(
        "log_read",
        f"`docker logs` read-back of {mb:g} MB",
        "MB/s",
        "higher",
        Goal(">=", 2.0),
        floor_label="",
    )
    ctx.skip_absent(ingest)
    ctx.skip_absent(read, floors=False)
    rounds = {e.name: LogRound(e, size) for e in ctx.engines}
    ingest_samplers: dict[str, Sampler] = {
        f.name: functools.partial(_floor_rate, f, size) for f in ctx.floors
    }
    for name, r in rounds.items():
        ingest_samplers[name] = r.ingest
    # one ingest then one read-back per engine and round, so a log is read right after it is written
    for _ in range(ctx.sizes.log_rounds):
        live = {n: fn for n, fn in ingest_samplers.items() if n not in ingest.skipped}
        ctx.sample(ingest, live, iterations=1, warmup=0, scale=1.0)
        readers = {n: r.read_back for n, r in rounds.items() if r.pending is not None}
        ctx.sample(read, readers, iterations=1, warmup=0, scale=1.0)
    for e in ctx.engines:
        e.remove_bench_containers()
    return [ingest, read]


SCENARIOS = {"logs": logs}
