"""Logs: a container writes 50 MB of 100-byte lines to stdout; the ingest rate (start → exit, the
daemon holding the whole log when it reports the exit) and the `docker logs` read-back rate (the
real CLI, output counted), pydock beside dockerd.

Rounds are interleaved between daemons (the order rotating); each round uses a fresh container,
removed afterwards. busybox is loaded from pydock's own archive when a daemon lacks it.

    python -m bench.bench_logs [--pydock-host unix:///...] [--dockerd-host unix:///...] [--mb 50]
        [--rounds 3] [--json]

Without `--pydock-host` a throwaway pydockd is started (and stopped) for the run.
`run(pydock_host, dockerd_host) -> dict` is the entry point for `make bench`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import standalone
from bench.bench_exec import DOCKER, docker, ensure_busybox

LINE = "0123456789" * 9 + "abcdefghi"  # `yes` adds the newline: 100 bytes a line
LABEL = "pydock.bench.logs=1"


def _client(host: str) -> httpx.Client:
    if not host.startswith("unix://"):
        raise ValueError(f"only unix:// daemons are supported: {host}")
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=host[len("unix://") :]), base_url="http://d", timeout=600
    )


def one_round(host: str, size: int) -> tuple[float, float]:
    """(ingest MB/s, read-back MB/s) for one container writing `size` bytes."""
    cmd = ["sh", "-c", f"yes {LINE} | head -c {size}"]
    cid = docker(host, "create", "--label", LABEL, "busybox", *cmd).stdout.decode().strip()
    try:
        with _client(host) as c:
            start = time.perf_counter()
            r = c.post(f"/v1.41/containers/{cid}/start")
            if r.status_code != 204:
                raise RuntimeError(f"start: {r.status_code} {r.text[:200]}")
            r = c.post(f"/v1.41/containers/{cid}/wait")
            ingest = time.perf_counter() - start
            if r.status_code != 200 or r.json().get("StatusCode") != 0:
                raise RuntimeError(f"wait: {r.status_code} {r.text[:200]}")
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONTEXT"} | {"DOCKER_HOST": host}
        start = time.perf_counter()
        proc = subprocess.Popen([DOCKER, "logs", cid], env=env, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        got = 0
        while chunk := proc.stdout.read(1 << 20):
            got += len(chunk)
        proc.stdout.close()
        code = proc.wait()
        read_back = time.perf_counter() - start
        if code != 0 or got != size:
            raise RuntimeError(f"docker logs returned {got} bytes (exit {code}), expected {size}")
        return size / 1e6 / ingest, size / 1e6 / read_back
    finally:
        docker(host, "rm", "-f", cid, check=False)


def run(
    pydock_host: str, dockerd_host: str | None, size: int = 50_000_000, rounds: int = 3
) -> dict[str, Any]:
    hosts = {"pydock": pydock_host} | ({"dockerd": dockerd_host} if dockerd_host else {})
    result: dict[str, Any] = {"benchmark": "logs", "bytes": size, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="pdbench-logs-") as tmp:
        for host in hosts.values():
            ensure_busybox(host, Path(tmp))
    ingest: dict[str, list[float]] = {name: [] for name in hosts}
    read: dict[str, list[float]] = {name: [] for name in hosts}
    names = list(hosts)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            a, b = one_round(hosts[name], size)
            ingest[name].append(a)
            read[name].append(b)
    for name in hosts:
        result[f"{name}_ingest_MBps"] = round(statistics.median(ingest[name]), 1)
        result[f"{name}_read_MBps"] = round(statistics.median(read[name]), 1)
        result[f"{name}_ingest_samples"] = [round(v, 1) for v in ingest[name]]
        result[f"{name}_read_samples"] = [round(v, 1) for v in read[name]]
    if dockerd_host:
        result["ingest_ratio_pydock_over_dockerd"] = round(
            result["pydock_ingest_MBps"] / result["dockerd_ingest_MBps"], 3
        )
        result["read_ratio_pydock_over_dockerd"] = round(
            result["pydock_read_MBps"] / result["dockerd_read_MBps"], 3
        )
    return result


def main(argv: list[str] | None = None) -> int:
    return standalone.main(
        __doc__,
        lambda args, host, dockerd_host: run(host, dockerd_host, size=int(args.mb * 1e6), rounds=args.rounds),
        argv,
        rounds=3,
        add_arguments=lambda p: p.add_argument("--mb", type=float, default=50.0),
    )


if __name__ == "__main__":
    sys.exit(main())
