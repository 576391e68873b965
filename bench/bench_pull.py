"""Pull benchmark: a ~100 MB, 5-layer image from a local registry, with pydock (and dockerd).

Builds the image itself from random data (incompressible, so the blobs are ~100 MB on the wire),
serves it from Debian's `docker-registry` on 127.0.0.1 (filled with `skopeo copy`), then times
`POST /images/create` to completion against each daemon, removing the image between rounds.

    python -m bench.bench_pull [--pydock-host unix:///...] [--dockerd-host unix:///...] [--rounds 3] [--json]

Without `--pydock-host` a throwaway pydockd is started (and stopped) for the run.
`run(pydock_host, dockerd_host) -> dict` is the entry point for `make bench`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import standalone
from tests.integration.registry import Registry, build_docker_archive, layer_tar, running_registry

LAYERS = 5
LAYER_BYTES = 20 << 20
REPO = "bench/pull"


def _client(host: str) -> httpx.Client:
    if not host.startswith("unix://"):
        raise ValueError(f"only unix:// daemons are supported: {host}")
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=host[len("unix://") :]), base_url="http://d", timeout=600
    )


def _pull_once(host: str, ref: str) -> float:
    with _client(host) as c:
        c.delete(f"/v1.41/images/{ref}", params={"force": "1"})
        c.post("/v1.41/images/prune", params={"filters": json.dumps({"dangling": {"false": True}})})
        name, _, tag = ref.rpartition(":")
        start = time.perf_counter()
        with c.stream("POST", "/v1.41/images/create", params={"fromImage": name, "tag": tag}) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"pull failed: {resp.status_code} {resp.read().decode(errors='replace')}")
            for line in resp.iter_lines():
                if '"error"' in line:
                    raise RuntimeError(f"pull failed: {line}")
        elapsed = time.perf_counter() - start
        if c.get(f"/v1.41/images/{ref}/json").status_code != 200:
            raise RuntimeError("pulled image is missing")
        c.delete(f"/v1.41/images/{ref}", params={"force": "1"})
        return elapsed


def _prepare(reg: Registry, work: Path) -> tuple[str, int]:
    layers = [layer_tar({f"data/layer{i}.bin": os.urandom(LAYER_BYTES)}) for i in range(LAYERS)]
    archive = work / "bench.tar"
    build_docker_archive(archive, layers, f"{REPO}:1")
    reg.copy_archive(archive, f"{REPO}:1")
    return f"{reg.host}/{REPO}:1", sum(len(layer) for layer in layers)


def run(pydock_host: str, dockerd_host: str | None, rounds: int = 3) -> dict[str, Any]:
    """Time pulls of the benchmark image, daemons interleaved; returns seconds (samples, median
    and best) per daemon."""
    with tempfile.TemporaryDirectory(prefix="pdbench-") as tmp, running_registry() as reg:
        ref, size = _prepare(reg, Path(tmp))
        result: dict[str, Any] = {
            "benchmark": "pull",
            "layers": LAYERS,
            "image_bytes": size,
            "rounds": rounds,
        }
        hosts = {"pydock": pydock_host} | ({"dockerd": dockerd_host} if dockerd_host else {})
        samples: dict[str, list[float]] = {name: [] for name in hosts}
        for i in range(rounds):  # interleaved, the order rotating, so drifts hit both daemons alike
            names = list(hosts)[i % len(hosts) :] + list(hosts)[: i % len(hosts)]
            for name in names:
                samples[name].append(_pull_once(hosts[name], ref))
        for name, times in samples.items():
            result[f"{name}_samples_s"] = [round(t, 4) for t in times]
            result[f"{name}_median_s"] = round(statistics.median(times), 3)
            result[f"{name}_best_s"] = round(min(times), 3)
            result[f"{name}_MBps"] = round(size / 1e6 / statistics.median(times), 1)
        if dockerd_host:
            result["ratio_pydock_over_dockerd"] = round(
                result["pydock_median_s"] / result["dockerd_median_s"], 3
            )
        return result


def main(argv: list[str] | None = None) -> int:
    return standalone.main(
        __doc__,
        lambda args, host, dockerd_host: run(host, dockerd_host, rounds=args.rounds),
        argv,
        rounds=3,
    )


if __name__ == "__main__":
    sys.exit(main())
