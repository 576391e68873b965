"""`docker stats` and `docker top` end to end: the CLI's columns (CPU %, MEM USAGE / LIMIT, NET I/O,
BLOCK I/O, PIDS), `stream=0` with precpu filled, the stream, zeros for a stopped container, and
docker-py's `stats()` / `top()`."""

from __future__ import annotations

import gc
import json
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon import Daemon, wait_for


def uniq(prefix: str = "st") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def run(daemon: Daemon, names: list[str], *args: str) -> str:
    name = uniq()
    names.append(name)
    daemon.docker("run", "-d", "--name", name, *args)
    return name


def stats_row(daemon: Daemon, name: str) -> dict[str, str]:
    out = daemon.docker("stats", "--no-stream", "--format", "{{json .}}", name).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def size_bytes(text: str) -> float:
    """`8.39MB`, `16.4kB`, `64MiB`, `0B` → bytes (the CLI's units)."""
    units = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    raise ValueError(text)


def backing_disk(path: Path) -> str | None:
    """The whole disk (`/dev/vda`, `/dev/nvme0n1`) that holds `path`; None off a block device."""
    st_dev = os.stat(path).st_dev
    node = Path(f"/sys/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}")
    if not node.exists():
        return None  # tmpfs, overlayfs, ...
    real = node.resolve()
    if (real / "partition").exists():
        real = real.parent
    dev = Path("/dev") / real.name
    return str(dev) if dev.exists() else None


def test_cli_columns_of_a_busy_limited_container(daemon: Daemon, names: list[str]) -> None:
    # a write limit on the data root's disk makes the kernel count the container's block I/O
    # (cgroup v1 counts direct I/O only where a throttle rule exists)
    disk = backing_disk(daemon.data_root)
    script = "dd if=/dev/zero of=/big bs=1M count=4 oflag=direct 2>/dev/null; while :; do :; done"
    limits = ["-m", "64m", "--cpus", "0.5", *(["--device-write-bps", f"{disk}:500mb"] if disk else [])]
    busy = run(daemon, names, *limits, "busybox", "sh", "-c", script)
    peer = run(daemon, names, "busybox", "sleep", "1000")
    ip = json.loads(daemon.docker("inspect", busy).stdout)[0]["NetworkSettings"]["IPAddress"]
    if ip:  # some traffic into the busy one's eth0, from a container of this test
        daemon.docker("exec", peer, "ping", "-c", "2", "-W", "1", ip, check=False)
    started = time.monotonic()
    row = stats_row(daemon, busy)
    assert time.monotonic() - started < 5
    assert row["Name"] == busy
    cpu = float(row["CPUPerc"].rstrip("%"))
    assert 15.0 < cpu < 80.0, row  # --cpus 0.5 of a spinning shell
    used, limit = (size_bytes(p.strip()) for p in row["MemUsage"].split("/"))
    assert limit == 64 * 1024**2
    assert 0 < used < limit
    assert row["PIDs"] == "1"
    if ip:
        rx, _tx = (size_bytes(p.strip()) for p in row["NetIO"].split("/"))
        assert rx > 0
    if disk is None:
        pytest.skip(f"block I/O not checked: the data root {daemon.data_root} is not on a block device")
    _read, written = (size_bytes(p.strip()) for p in row["BlockIO"].split("/"))
    assert written >= 4e6


def test_stream_zero_has_precpu_and_one_shot_does_not(daemon: Daemon, names: list[str]) -> None:
    name = run(daemon, names, "busybox", "sh", "-c", "while :; do :; done")
    started = time.monotonic()
    body = daemon.json("GET", f"/v1.41/containers/{name}/stats", params={"stream": "0"})
    assert time.monotonic() - started < 2.0  # the CLI shows zeros after 2 s without a sample
    assert body["preread"] != "0001-01-01T00:00:00Z"
    assert body["precpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert body["cpu_stats"]["cpu_usage"]["total_usage"] > body["precpu_stats"]["cpu_usage"]["total_usage"]
    assert body["cpu_stats"]["online_cpus"] >= 1
    assert body["cpu_stats"]["system_cpu_usage"] > body["precpu_stats"]["system_cpu_usage"]
    assert body["id"] == json.loads(daemon.docker("inspect", name).stdout)[0]["Id"]
    assert body["name"] == "/" + name
    assert body["pids_stats"]["current"] == 1
    assert body["memory_stats"]["usage"] > 0 and "stats" in body["memory_stats"]
    one = daemon.json("GET", f"/v1.41/containers/{name}/stats", params={"stream": "0", "one-shot": "1"})
    assert one["preread"] == "0001-01-01T00:00:00Z"
    assert one["cpu_stats"]["cpu_usage"]["total_usage"] > 0


def test_stream_sends_one_object_per_second(daemon: Daemon, names: list[str]) -> None:
    name = run(daemon, names, "busybox", "sleep", "1000")
    with daemon.http() as c, c.stream("GET", f"/v1.41/containers/{name}/stats") as r:
        assert r.status_code == 200
        assert "content-type" not in r.headers  # dockerd 20.10 sends none for the stream
        bodies: list[dict[str, Any]] = []
        started = time.monotonic()
        for line in r.iter_lines():
            bodies.append(json.loads(line))
            if len(bodies) == 3:
                break
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 5
    assert bodies[0]["preread"] == "0001-01-01T00:00:00Z"
    assert bodies[1]["preread"] == bodies[0]["read"]
    assert bodies[2]["precpu_stats"] == bodies[1]["cpu_stats"]


def test_stopped_container_gives_zeros(daemon: Daemon, names: list[str]) -> None:
    name = uniq()
    names.append(name)
    daemon.docker("create", "--name", name, "busybox", "true")
    row = stats_row(daemon, name)
    assert (row["CPUPerc"], row["MemUsage"], row["NetIO"], row["BlockIO"], row["PIDs"]) == (
        "0.00%", "0B / 0B", "0B / 0B", "0B / 0B", "0",
    )  # fmt: skip
    body = daemon.json("GET", f"/v1.41/containers/{name}/stats", params={"stream": "0"})
    assert body["read"] == "0001-01-01T00:00:00Z"
    assert body["memory_stats"] == {} and body["pids_stats"] == {}


def test_stats_of_every_running_container(daemon: Daemon, names: list[str]) -> None:
    a = run(daemon, names, "busybox", "sleep", "1000")
    b = run(daemon, names, "busybox", "sleep", "1000")
    out = daemon.docker("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}").stdout.decode()
    rows = dict(line.split() for line in out.splitlines())
    assert rows[a] == "1" and rows[b] == "1"


def test_docker_py_stats_and_top(daemon: Daemon, names: list[str]) -> None:
    name = run(daemon, names, "busybox", "sh", "-c", "sleep 1000 & sleep 1000; true")
    client = daemon.client()
    try:
        c = client.containers.get(name)
        body = c.stats(stream=False)
        assert {"read", "preread", "cpu_stats", "precpu_stats", "memory_stats", "pids_stats"} <= set(body)
        assert body["pids_stats"]["current"] == 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # docker-py leaves a stream's socket open
            stream = c.stats(stream=True, decode=True)
            first, second = next(stream), next(stream)
            stream.close()
            del stream
            gc.collect()
        assert first["preread"] == "0001-01-01T00:00:00Z"
        assert second["preread"] == first["read"]
        top = c.top()
        assert top["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        cmds = sorted(p[-1] for p in top["Processes"])
        assert cmds == ["sh -c sleep 1000 & sleep 1000; true", "sleep 1000", "sleep 1000"]
        top = c.top(ps_args="-o pid,comm")
        assert top["Titles"] == ["PID", "COMMAND"]
        assert sorted(p[1] for p in top["Processes"]) == ["sh", "sleep", "sleep"]
    finally:
        client.close()


def test_top_through_the_cli(daemon: Daemon, names: list[str]) -> None:
    name = run(daemon, names, "busybox", "sleep", "1000")
    out = daemon.docker("top", name).stdout.decode().splitlines()
    assert out[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert out[1].split()[-2:] == ["sleep", "1000"]
    pid = json.loads(daemon.docker("inspect", name).stdout)[0]["State"]["Pid"]
    out = daemon.docker("top", name, "-o", "pid,comm").stdout.decode().splitlines()
    assert out[0].split() == ["PID", "COMMAND"]
    assert out[1].split() == [str(pid), "sleep"]
    r = daemon.request("GET", f"/v1.41/containers/{name}/top", params={"ps_args": "-o user= PID"})
    assert (r.status_code, r.json()) == (400, {"message": 'specifying "user=PID" is not allowed'})
    daemon.docker("kill", name)
    wait_for(lambda: daemon.request("GET", f"/v1.41/containers/{name}/top").status_code == 409, 10, "409")
    r = daemon.docker("top", name, check=False)
    assert r.returncode == 1 and b"is not running" in r.stderr
