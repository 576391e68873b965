"""Create-time checks with dockerd's messages, and dockerd's create-time defaults."""

from __future__ import annotations

import pytest

from app.models.containers import ContainerConfig
from app.models.hostconfig import DEFAULT_MASKED_PATHS, HostConfig, Mount, RestartPolicy
from runtime.errors import InvalidParameter
from runtime.signals import parse_signal, signal_name
from runtime.validation import (
    CreateLimits,
    adapt_host_config,
    check_config,
    check_create,
    check_extra_host,
    check_host_config,
    check_mount,
    check_resources,
    check_restart_policy,
    parse_cpuset,
)

LIMITS = CreateLimits(ncpu=2, cpus=frozenset({0, 1}), mems=frozenset({0}))


def hc(**kw: object) -> HostConfig:
    return HostConfig.model_validate(kw)


def fails(message: str, **kw: object) -> None:
    with pytest.raises(InvalidParameter) as info:
        check_host_config(hc(**kw), LIMITS)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            {"Name": "always", "MaximumRetryCount": 3},
            "maximum retry count can only be used with 'on-failure'",
        ),
        (
            {"Name": "unless-stopped", "MaximumRetryCount": -1},
            "maximum retry count can only be used with 'on-failure' and cannot be negative",
        ),
        ({"Name": "on-failure", "MaximumRetryCount": -1}, "maximum retry count cannot be negative"),
        (
            {"Name": "sometimes"},
            "unknown policy 'sometimes'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'",
        ),
    ],
)
def test_restart_policy_messages(policy: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        check_restart_policy(RestartPolicy.model_validate(policy))
    assert str(info.value) == f"invalid restart policy: {message}"


def test_restart_policy_accepts_valid() -> None:
    for policy in ({}, {"Name": "no"}, {"Name": "on-failure", "MaximumRetryCount": 5}, {"Name": "always"}):
        check_restart_policy(RestartPolicy.model_validate(policy))


def test_memory_messages() -> None:
    fails("Minimum memory limit allowed is 6MB", Memory=1024)
    fails("Minimum memory limit allowed is 6MB", Memory=-1)
    fails(
        "Minimum memoryswap limit should be larger than memory limit, see usage",
        Memory=64 << 20,
        MemorySwap=32 << 20,
    )
    fails(
        "You should always set the Memory limit when using Memoryswap limit, see usage", MemorySwap=64 << 20
    )
    fails("Invalid value: 101, valid memory swappiness range is 0-100", MemorySwappiness=101)
    fails("Minimum memory reservation allowed is 6MB", MemoryReservation=1)
    fails(
        "Minimum memory limit can not be less than memory reservation limit, see usage",
        Memory=8 << 20,
        MemoryReservation=16 << 20,
    )
    check_host_config(hc(Memory=6 << 20, MemorySwap=-1, MemorySwappiness=-1), LIMITS)


def test_cpu_and_blkio_messages() -> None:
    fails(
        "Conflicting options: Nano CPUs and CPU Period cannot both be set", NanoCpus=10**9, CpuPeriod=100000
    )
    fails("Conflicting options: Nano CPUs and CPU Quota cannot both be set", NanoCpus=10**9, CpuQuota=50000)
    fails("Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available", NanoCpus=3 * 10**9)
    fails(
        "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)", CpuPeriod=10
    )
    fails("CPU cfs quota can not be less than 1ms (i.e. 1000)", CpuQuota=10)
    fails("Requested CPUs are not available - requested 0-3, available: 0,1", CpusetCpus="0-3")
    fails("Invalid value x for cpuset cpus: invalid format: x", CpusetCpus="x")
    fails("Range of blkio weight is from 10 to 1000", BlkioWeight=5)
    fails(
        "Invalid QoS settings: linux does not support Maximum IO Bandwidth or Maximum IO IOps",
        IOMaximumIOps=1,
    )
    assert parse_cpuset("0-2,4") == {0, 1, 2, 4}


def test_warnings() -> None:
    warnings = check_resources(hc(OomKillDisable=True, CpuPercent=10), LIMITS)
    assert any("OOM killer is disabled" in w for w in warnings)
    assert "linux does not support CPU percent. Percent discarded." in warnings
    v2 = CreateLimits(ncpu=2, cgroup_v2=True)
    assert any("swappiness" in w for w in check_resources(hc(MemorySwappiness=10), v2))
    assert check_host_config(hc(NetworkMode="host", PortBindings={"80/tcp": []}), LIMITS) == [
        "Published ports are discarded when using host network mode"
    ]


def test_host_config_messages() -> None:
    fails(
        "can't create 'AutoRemove' container with restart policy",
        AutoRemove=True,
        RestartPolicy={"Name": "always"},
    )
    fails('invalid port specification: "abc"', PortBindings={"abc/tcp": []})
    fails('invalid port specification: "99999"', PortBindings={"99999/tcp": []})
    fails('invalid port specification: "x1"', PortBindings={"80/tcp": [{"HostIp": "", "HostPort": "x1"}]})
    check_host_config(hc(PortBindings={"80/tcp": [{"HostPort": "8000-8010"}, {"HostPort": ""}]}), LIMITS)
    fails('invalid CapAdd: unknown capability: "CAP_FLY"', CapAdd=["fly"])
    fails('invalid CapDrop: unknown capability: "CAP_X"', CapDrop=["x"])
    fails("invalid isolation 'hyperv' on linux", Isolation="hyperv")
    fails(
        "invalid Annotations: the empty string is not permitted as an annotation key", Annotations={"": "x"}
    )
    fails("invalid IPC mode: bogus", IpcMode="bogus")
    fails("invalid PID mode: bogus", PidMode="bogus")
    fails("invalid UTS mode: bogus", UTSMode="bogus")
    fails("invalid cgroup namespace mode: bogus", CgroupnsMode="bogus")
    fails("SHM size can not be less than 0", ShmSize=-1)
    fails("Invalid value 2000, range for oom score adj is [-1000, 1000]", OomScoreAdj=2000)
    fails("invalid mount path: 'tmp' mount path must be absolute", Tmpfs={"tmp": ""})
    check_host_config(
        hc(IpcMode="container:abc", PidMode="host", CapAdd=["ALL"], CapDrop=["net_raw"]), LIMITS
    )


def test_extra_hosts() -> None:
    check_extra_host("db:10.0.0.2")
    check_extra_host("db=::1")
    check_extra_host("gw:host-gateway")
    with pytest.raises(InvalidParameter, match='bad format for add-host: "nocolon"'):
        check_extra_host("nocolon")
    with pytest.raises(InvalidParameter, match='invalid IP address in add-host: "notanip"'):
        check_extra_host("db:notanip")


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ({"Type": "bind", "Source": "/x"}, "field Target must not be empty"),
        ({"Type": "bind", "Source": "/x", "Target": "/"}, "invalid specification: destination can't be '/'"),
        (
            {"Type": "bind", "Source": "/x", "Target": "rel"},
            "invalid mount path: 'rel' mount path must be absolute",
        ),
        ({"Type": "bind", "Target": "/t"}, "field Source must not be empty"),
        (
            {"Type": "bind", "Source": "rel", "Target": "/t"},
            "invalid mount path: 'rel' mount path must be absolute",
        ),
        (
            {"Type": "bind", "Source": "/x", "Target": "/t", "VolumeOptions": {}},
            "field VolumeOptions must not be specified",
        ),
        (
            {"Type": "bind", "Source": "/x", "Target": "/t", "BindOptions": {"Propagation": "up"}},
            "invalid propagation mode: up",
        ),
        ({"Type": "bind", "Source": "/nope", "Target": "/t"}, "bind source path does not exist: /nope"),
        ({"Type": "volume", "Target": "/t", "BindOptions": {}}, "field BindOptions must not be specified"),
        (
            {"Type": "volume", "Target": "/t", "ReadOnly": True},
            "must not set ReadOnly mode when using anonymous volumes",
        ),
        ({"Type": "tmpfs", "Source": "x", "Target": "/t"}, "field Source must not be specified"),
        ({"Type": "npipe", "Target": "/t"}, "mount type unknown"),
    ],
)
def test_mount_messages(mount: dict[str, object], message: str) -> None:
    m = Mount.model_validate(mount)
    with pytest.raises(InvalidParameter) as info:
        check_mount(m, source_exists=lambda p: p != "/nope")
    assert str(info.value) == f'invalid mount config for type "{m.Type}": {message}'


def test_config_checks() -> None:
    with pytest.raises(
        InvalidParameter, match="the working directory 'rel' is invalid, it needs to be an absolute path"
    ):
        check_config(ContainerConfig(WorkingDir="rel"))
    assert check_config(ContainerConfig(WorkingDir="/a/../b/")).WorkingDir == "/b"
    with pytest.raises(InvalidParameter, match="Invalid signal: SIGFOO"):
        check_config(ContainerConfig(StopSignal="SIGFOO"))
    with pytest.raises(InvalidParameter, match="invalid environment variable: =x"):
        check_config(ContainerConfig(Env=["=x"]))
    with pytest.raises(InvalidParameter, match="Interval in Healthcheck cannot be less than 1ms"):
        check_config(ContainerConfig.model_validate({"Healthcheck": {"Interval": 10}}))
    with pytest.raises(InvalidParameter, match="Retries in Healthcheck cannot be negative"):
        check_config(ContainerConfig.model_validate({"Healthcheck": {"Retries": -1}}))
    config, warnings = check_create(ContainerConfig(WorkingDir="/x/"), hc(), LIMITS)
    assert config.WorkingDir == "/x" and warnings == []


def test_signals() -> None:
    assert parse_signal("TERM") == parse_signal("sigterm") == parse_signal("15") == 15
    assert parse_signal("RTMIN+3") == 37 and parse_signal("RTMAX") == 64 and parse_signal(9) == 9
    for bad in ("0", "FOO", "", -1):
        with pytest.raises(InvalidParameter, match="Invalid signal"):
            parse_signal(bad)
    assert signal_name(17) == "SIGCHLD" and signal_name(15) == "SIGTERM" and signal_name(100) == "100"


def test_adapt_host_config_defaults() -> None:
    out = adapt_host_config(hc(Memory=64 << 20, MemorySwappiness=-1, PidsLimit=0))
    assert out.MemorySwap == 128 << 20 and out.MemorySwappiness is None and out.PidsLimit is None
    assert out.ShmSize == 64 << 20 and out.IpcMode == "private" and out.CgroupnsMode == "host"
    assert out.OomKillDisable is False and out.NetworkMode == "default" and out.Runtime == "runc"
    assert out.MaskedPaths == list(DEFAULT_MASKED_PATHS) and out.ReadonlyPaths is not None
    assert adapt_host_config(hc(), cgroup_v2=True).CgroupnsMode == "private"
    priv = adapt_host_config(hc(Privileged=True))
    assert priv.MaskedPaths is None and priv.ReadonlyPaths is None
    kept = adapt_host_config(hc(Memory=64 << 20, MemorySwap=-1, MaskedPaths=[]))
    assert kept.MemorySwap == -1 and kept.MaskedPaths == []
