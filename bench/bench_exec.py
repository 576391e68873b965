"""Exec latency: `docker exec C true` through the real CLI, pydock beside dockerd and the runc floor.

Each daemon gets a `busybox sleep` container (busybox is loaded from pydock's own archive when
missing); after a warm-up, samples are taken interleaved (one per daemon per round, the order
rotating, so machine drifts hit both alike). The floor is `runc exec <id> true` on a plain runc
container of the same rootfs (no daemon, no CLI). Containers are removed at the end.

    python -m bench.bench_exec [--pydock-host unix:///...] [--dockerd-host unix:///...] [--rounds 40] [--json]

Without `--pydock-host` a throwaway pydockd is started (and stopped) for the run.
`run(pydock_host, dockerd_host) -> dict` is the entry point for `make bench`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import standalone
from bench.harness import percentile
from runtime import busybox_image

DOCKER = shutil.which("docker", path="/usr/local/bin:" + os.environ.get("PATH", "")) or "docker"
LABEL = "pydock.bench.exec=1"


def _remove(host: str, cid: str) -> None:
    docker(host, "rm", "-f", cid, check=False)


def docker(host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONTEXT"}
    env["DOCKER_HOST"] = host
    result = subprocess.run([DOCKER, *args], env=env, capture_output=True, check=False, timeout=300)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} on {host}: {result.stderr.decode(errors='replace')}")
    return result


def ensure_busybox(host: str, work: Path) -> None:
    if docker(host, "image", "inspect", "busybox:latest", check=False).returncode == 0:
        return
    archive = work / "busybox.tar"
    if not archive.exists():
        busybox_image.build_archive(archive)
    docker(host, "load", "-q", "-i", str(archive))


def timer(host: str, *args: str) -> Callable[[], float]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONTEXT"}
    env["DOCKER_HOST"] = host

    def sample() -> float:
        start = time.perf_counter()
        code = subprocess.run([DOCKER, *args], env=env, stdout=subprocess.DEVNULL, check=False).returncode
        elapsed = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited {code}")
        return elapsed

    return sample


def runc_floor(work: Path) -> tuple[Callable[[], float], Callable[[], None]] | None:
    """`runc exec <sleeper> true` on a bare runc container (the OCI runtime alone)."""
    if shutil.which("runc") is None:
        return None
    from bench.floor import OciFloor, become_subreaper, unpack_busybox

    become_subreaper()
    rootfs = work / "rootfs"
    unpack_busybox(rootfs)
    floor = OciFloor("runc", work, rootfs)
    try:
        floor.setup()
        cid = floor.start_sleeper()
    except Exception:
        floor.close()
        return None
    return (lambda: floor.exec_true(cid)), floor.close


def summarize(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"median_ms": round(percentile(ms, 50), 2), "p90_ms": round(percentile(ms, 90), 2)}


def run(pydock_host: str, dockerd_host: str | None, rounds: int = 40, warmup: int = 3) -> dict[str, Any]:
    hosts = {"pydock": pydock_host} | ({"dockerd": dockerd_host} if dockerd_host else {})
    result: dict[str, Any] = {"benchmark": "exec", "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="pdbench-exec-") as tmp:
        work = Path(tmp)
        samplers: dict[str, Callable[[], float]] = {}
        cleanups: list[Callable[[], None]] = []
        try:
            for name, host in hosts.items():
                ensure_busybox(host, work)
                cid = (
                    docker(host, "run", "-d", "--label", LABEL, "busybox", "sleep", "3600")
                    .stdout.decode()
                    .strip()
                )
                cleanups.append(functools.partial(_remove, host, cid))
                samplers[name] = timer(host, "exec", cid, "true")
            floor = runc_floor(work / "floor")
            if floor is not None:
                samplers["runc"], close = floor
                cleanups.append(close)
            for sample in samplers.values():
                for _ in range(warmup):
                    sample()
            samples: dict[str, list[float]] = {name: [] for name in samplers}
            names = list(samplers)
            for i in range(rounds):
                for name in names[i % len(names) :] + names[: i % len(names)]:
                    samples[name].append(samplers[name]())
        finally:
            for cleanup in cleanups:
                with contextlib.suppress(Exception):
                    cleanup()
    for name, values in samples.items():
        for key, value in summarize(values).items():
            result[f"{name}_{key}"] = value
    if dockerd_host:
        result["ratio_pydock_over_dockerd"] = round(
            result["pydock_median_ms"] / result["dockerd_median_ms"], 3
        )
    if "runc_median_ms" in result:
        result["ratio_pydock_over_runc_exec"] = round(
            result["pydock_median_ms"] / result["runc_median_ms"], 3
        )
    return result


def main(argv: list[str] | None = None) -> int:
    return standalone.main(
        __doc__,
        lambda args, host, dockerd_host: run(host, dockerd_host, rounds=args.rounds),
        argv,
        rounds=40,
    )


if __name__ == "__main__":
    sys.exit(main())
