"""`docker stats` bodies: dockerd's shape for cgroup v1 and v2, zeros for a stopped container, and
the numbers the CLI derives from them (docker/cli stats_helpers.go, re-done here)."""

from __future__ import annotations

import dataclasses
from typing import Any

from runtime.cgroups import BlkioEntry, BlkioStats, CpuStats, MemoryStats, PidsStats
from runtime.stats import Sample, parse_net_dev, stats_body

ZERO = "0001-01-01T00:00:00Z"
NET_DEV = "\n".join(
    [
        "Inter-|   Receive                                                |  Transmit",
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop ...",
        "    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0",
        "  eth0: 1500 12 1 2 0 0 0 0 700 7 3 4 0 0 0 0",
    ]
)


def sample(*, v2: bool, total: int, system: int, read: str = "2024-01-01T00:00:01Z") -> Sample:
    return Sample(
        read=read,
        v2=v2,
        cpu=CpuStats(
            total_ns=total,
            percpu_ns=[] if v2 else [total // 2, total - total // 2],
            user_ns=7,
            system_ns=3,
            periods=5,
            throttled_periods=1,
            throttled_ns=9,
        ),
        system_cpu_ns=system,
        online_cpus=2,
        memory=MemoryStats(
            usage=10_000_000,
            max_usage=None if v2 else 20_000_000,
            limit=None,
            failcnt=0,
            oom_kill=0,
            under_oom=False,
            stats={"inactive_file": 1_000_000} if v2 else {"total_inactive_file": 2_000_000, "cache": 1},
        ),
        pids=PidsStats(current=3, limit=None),
        blkio=BlkioStats(
            service_bytes=[
                BlkioEntry(8, 0, "Read" if not v2 else "read", 4096),
                BlkioEntry(8, 0, "Write", 512),
            ],
            serviced=[],
        ),
        networks=parse_net_dev(NET_DEV),
    )


def cli_columns(body: dict[str, Any]) -> dict[str, float]:
    """What `docker stats` prints, computed as the CLI does."""
    cpu, pre = body["cpu_stats"], body["precpu_stats"]
    cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [])
    cpu_percent = cpu_delta / sys_delta * online * 100 if sys_delta > 0 and cpu_delta > 0 else 0.0
    mem = body["memory_stats"]
    stats = mem.get("stats", {})
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    used = mem.get("usage", 0) - inactive
    blk_read = sum(e["value"] for e in body["blkio_stats"]["io_service_bytes_recursive"] or []
                   if e["op"].lower() == "read")  # fmt: skip
    nets = body.get("networks", {})
    return {
        "cpu": cpu_percent,
        "mem": used,
        "limit": mem.get("limit", 0),
        "rx": sum(n["rx_bytes"] for n in nets.values()),
        "tx": sum(n["tx_bytes"] for n in nets.values()),
        "blk_read": blk_read,
        "pids": body["pids_stats"].get("current", 0),
    }


def test_v1_body_shape_and_cli_numbers() -> None:
    first = sample(v2=False, total=1_000_000_000, system=100_000_000_000, read="2024-01-01T00:00:00Z")
    second = sample(v2=False, total=1_500_000_000, system=101_000_000_000)
    body = stats_body(second, first, name="web", cid="c" * 64, machine_memory=8 << 30)
    assert list(body) == [
        "read", "preread", "pids_stats", "blkio_stats", "num_procs", "storage_stats",
        "cpu_stats", "precpu_stats", "memory_stats", "name", "id", "networks",
    ]  # fmt: skip
    assert body["preread"] == "2024-01-01T00:00:00Z"
    assert body["name"] == "/web"
    assert list(body["cpu_stats"]["cpu_usage"]) == [
        "total_usage", "percpu_usage", "usage_in_kernelmode", "usage_in_usermode",
    ]  # fmt: skip
    assert body["cpu_stats"]["throttling_data"] == {"periods": 5, "throttled_periods": 1, "throttled_time": 9}
    assert body["memory_stats"]["max_usage"] == 20_000_000
    assert body["memory_stats"]["limit"] == 8 << 30  # unlimited: the host's memory
    assert body["networks"] == {
        "eth0": {"rx_bytes": 1500, "rx_packets": 12, "rx_errors": 1, "rx_dropped": 2,
                 "tx_bytes": 700, "tx_packets": 7, "tx_errors": 3, "tx_dropped": 4}
    }  # fmt: skip
    cols = cli_columns(body)
    assert round(cols["cpu"], 3) == 100.0  # 0.5 s of CPU over 1 s of 2 CPUs' time → 100 %
    assert cols["mem"] == 8_000_000
    assert (cols["rx"], cols["tx"], cols["blk_read"], cols["pids"]) == (1500, 700, 4096, 3)


def test_v2_body_has_no_v1_only_fields() -> None:
    body = stats_body(sample(v2=True, total=5, system=10), None, name="n", cid="x", machine_memory=1 << 40)
    assert "percpu_usage" not in body["cpu_stats"]["cpu_usage"]
    assert "max_usage" not in body["memory_stats"]
    assert body["memory_stats"]["stats"] == {"inactive_file": 1_000_000}
    assert cli_columns(body)["mem"] == 9_000_000
    assert body["preread"] == ZERO
    assert body["precpu_stats"] == {
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


def test_memory_limit_is_the_smaller_of_limit_and_host() -> None:
    s = sample(v2=False, total=1, system=1)
    memory = MemoryStats(
        usage=1, max_usage=1, limit=64 << 20, failcnt=2, oom_kill=0, under_oom=False, stats={}
    )
    limited = dataclasses.replace(s, memory=memory)
    body = stats_body(limited, None, name="n", cid="x", machine_memory=8 << 30)
    assert body["memory_stats"]["limit"] == 64 << 20
    assert body["memory_stats"]["failcnt"] == 2
    assert "stats" not in body["memory_stats"]


def test_stopped_container_is_all_zero() -> None:
    body = stats_body(None, None, name="gone", cid="y" * 64, machine_memory=1)
    assert body["read"] == ZERO and body["preread"] == ZERO
    assert body["pids_stats"] == {} and body["memory_stats"] == {} and body["storage_stats"] == {}
    assert body["blkio_stats"]["io_service_bytes_recursive"] is None
    assert "networks" not in body
    assert cli_columns(body) == {"cpu": 0.0, "mem": 0, "limit": 0, "rx": 0, "tx": 0, "blk_read": 0, "pids": 0}


def test_parse_net_dev_skips_lo_and_garbage() -> None:
    assert list(parse_net_dev(NET_DEV)) == ["eth0"]
    assert parse_net_dev("header\nheader\n  bad line\n eth1: 1 2 3\n") == {}
