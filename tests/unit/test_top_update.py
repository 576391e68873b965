"""`docker top` output parsing and `docker update` merge rules (moby top_unix.go, UpdateContainer)."""

from __future__ import annotations

import pytest

from app.models.hostconfig import ContainerUpdate, HostConfig, RestartPolicy
from runtime.errors import Conflict, InvalidParameter, SystemError_
from runtime.top import parse_ps_output, validate_ps_args
from runtime.update import check_update, merged_host_config
from runtime.validation import CreateLimits

PS_EF = """UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init
root         200     100  0 10:01 ?        00:00:00 sh -c while true; do sleep 1; done
root         201     200  0 10:01 ?        00:00:00 sleep 1
"""


def test_top_keeps_the_containers_pids_and_joins_the_command() -> None:
    body = parse_ps_output(PS_EF, {200, 201})
    assert body["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert body["Processes"] == [
        ["root", "200", "100", "0", "10:01", "?", "00:00:00", "sh -c while true; do sleep 1; done"],
        ["root", "201", "200", "0", "10:01", "?", "00:00:00", "sleep 1"],
    ]


def test_top_custom_columns_and_threads() -> None:
    out = "  PID COMMAND\n  200 sh\n    - -\n  300 other\n    - -\n"
    assert parse_ps_output(out, {200}) == {
        "Titles": ["PID", "COMMAND"],
        "Processes": [["200", "sh"], ["-", "-"]],
    }
    with pytest.raises(SystemError_, match="Couldn't find PID field in ps output"):
        parse_ps_output("COMMAND\nsh\n", {1})


def test_ps_args_validation() -> None:
    validate_ps_args("-o pid,comm")
    validate_ps_args("-o pid= PID")
    with pytest.raises(InvalidParameter, match='specifying "user=PID" is not allowed'):
        validate_ps_args("-o user= PID")


def test_update_merges_non_zero_fields() -> None:
    old = HostConfig(Memory=100 << 20, MemorySwap=200 << 20, CpuShares=1024, PidsLimit=10)
    new = merged_host_config(
        old, ContainerUpdate(CpuShares=512, NanoCpus=500_000_000, CpusetCpus="0", PidsLimit=0), "c1"
    )
    assert (new.CpuShares, new.NanoCpus, new.CpusetCpus, new.Memory) == (512, 500_000_000, "0", 100 << 20)
    assert new.PidsLimit is None  # 0 lifts the limit
    assert old.CpuShares == 1024  # the old config is untouched
    new = merged_host_config(old, ContainerUpdate(RestartPolicy=RestartPolicy(Name="always")), "c1")
    assert new.RestartPolicy.Name == "always"


def test_update_conflicts_as_dockerd() -> None:
    with pytest.raises(
        Conflict, match="Cannot update container c1: Memory limit should be smaller than already"
    ):
        merged_host_config(HostConfig(), ContainerUpdate(Memory=64 << 20), "c1")
    merged_host_config(HostConfig(), ContainerUpdate(Memory=64 << 20, MemorySwap=128 << 20), "c1")
    with pytest.raises(Conflict, match="Nano CPUs cannot be updated as CPU Quota has already been set"):
        merged_host_config(HostConfig(CpuQuota=5000), ContainerUpdate(NanoCpus=1_000_000_000), "c1")
    with pytest.raises(Conflict, match="CPU Period cannot be updated as NanoCPUs has already been set"):
        merged_host_config(HostConfig(NanoCpus=1), ContainerUpdate(CpuPeriod=100_000), "c1")
    with pytest.raises(Conflict, match="AutoRemove is enabled"):
        merged_host_config(
            HostConfig(AutoRemove=True), ContainerUpdate(RestartPolicy=RestartPolicy(Name="always")), "c1"
        )


def test_update_checks_use_creates_wording() -> None:
    limits = CreateLimits(ncpu=2)
    with pytest.raises(InvalidParameter, match=r"Range of CPUs is from 0\.01 to 2\.00"):
        check_update(ContainerUpdate(NanoCpus=3_000_000_000), limits)
    with pytest.raises(InvalidParameter, match="Minimum memory limit allowed is 6MB"):
        check_update(ContainerUpdate(Memory=1024), limits)
    with pytest.raises(InvalidParameter, match="unknown policy 'sometimes'"):
        check_update(ContainerUpdate(RestartPolicy=RestartPolicy(Name="sometimes")), limits)
    assert check_update(ContainerUpdate(MemorySwap=1 << 30), limits) == []  # no Memory needed in updates
