"""Wire models: Docker's names, null tolerance, unknown fields, Go omitempty in responses."""

from __future__ import annotations

import json

from app.models.containers import (
    ContainerConfig,
    ContainerCreateRequest,
    ContainerCreateResponse,
    ContainerWaitExitError,
    ContainerWaitResponse,
)
from app.models.exec import ExecConfig, ExecInspect, ExecStartConfig
from app.models.hostconfig import ContainerUpdate, HostConfig
from app.models.inspect import ContainerInspect, ContainerState, ContainerSummary, Health, MountPoint, Port

# What `docker create --name x -e A=1 -p 8080:80 busybox echo hi` (CLI 28) sends, abridged but
# with its nulls and with fields newer than API 1.41.
CLI_BODY = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": True,
    "AttachStderr": True,
    "ExposedPorts": {"80/tcp": {}},
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": ["A=1"],
    "Cmd": ["echo", "hi"],
    "Image": "busybox",
    "Volumes": {},
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": {},
    "HostConfig": {
        "Binds": None,
        "ContainerIDFile": "",
        "LogConfig": {"Type": "", "Config": {}},
        "NetworkMode": "default",
        "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "AutoRemove": False,
        "VolumeDriver": "",
        "VolumesFrom": None,
        "ConsoleSize": [0, 0],
        "CapAdd": None,
        "CapDrop": None,
        "CgroupnsMode": "",
        "Dns": [],
        "DnsOptions": [],
        "DnsSearch": [],
        "ExtraHosts": None,
        "GroupAdd": None,
        "IpcMode": "",
        "Cgroup": "",
        "Links": None,
        "OomScoreAdj": 0,
        "PidMode": "",
        "Privileged": False,
        "PublishAllPorts": False,
        "ReadonlyRootfs": False,
        "SecurityOpt": None,
        "UTSMode": "",
        "UsernsMode": "",
        "ShmSize": 0,
        "Isolation": "",
        "CpuShares": 0,
        "Memory": 0,
        "NanoCpus": 0,
        "CgroupParent": "",
        "BlkioWeight": 0,
        "BlkioWeightDevice": [],
        "BlkioDeviceReadBps": [],
        "BlkioDeviceWriteBps": [],
        "BlkioDeviceReadIOps": [],
        "BlkioDeviceWriteIOps": [],
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpuRealtimePeriod": 0,
        "CpuRealtimeRuntime": 0,
        "CpusetCpus": "",
        "CpusetMems": "",
        "Devices": [],
        "DeviceCgroupRules": None,
        "DeviceRequests": None,
        "MemoryReservation": 0,
        "MemorySwap": 0,
        "MemorySwappiness": -1,
        "OomKillDisable": None,
        "PidsLimit": 0,
        "Ulimits": [],
        "CpuCount": 0,
        "CpuPercent": 0,
        "IOMaximumIOps": 0,
        "IOMaximumBandwidth": 0,
        "MaskedPaths": None,
        "ReadonlyPaths": None,
    },
    "NetworkingConfig": {
        "EndpointsConfig": {
            "default": {
                "IPAMConfig": None,
                "Links": None,
                "Aliases": None,
                "MacAddress": "",
                "DriverOpts": None,
                "GwPriority": 0,
                "NetworkID": "",
                "EndpointID": "",
                "Gateway": "",
                "IPAddress": "",
                "IPPrefixLen": 0,
                "IPv6Gateway": "",
                "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "DNSNames": None,
            }
        }
    },
}


def test_cli_create_body_round_trips() -> None:
    req = ContainerCreateRequest.model_validate(CLI_BODY)
    assert req.Cmd == ["echo", "hi"] and req.Entrypoint is None and req.Env == ["A=1"]
    hc = req.HostConfig
    assert hc is not None
    assert hc.PortBindings is not None and hc.PortBindings["80/tcp"][0].HostPort == "8080"  # type: ignore[index]
    assert hc.MemorySwappiness == -1 and hc.PidsLimit == 0 and hc.OomKillDisable is None and hc.Init is None
    assert req.NetworkingConfig is not None and "default" in (req.NetworkingConfig.EndpointsConfig or {})
    out = hc.wire()
    # What the client sent comes back the same (except fields Go omits when empty/nil).
    for key, value in CLI_BODY["HostConfig"].items():  # type: ignore[attr-defined]
        assert out[key] == value, key
    assert "Init" not in out and "Annotations" not in out and "Sysctls" not in out and "Runtime" not in out


def test_null_means_default_and_unknown_fields_are_ignored() -> None:
    body = {
        "Image": "busybox",
        "Tty": None,
        "Hostname": None,
        "HostConfig": {"Privileged": None, "RestartPolicy": None, "LogConfig": None, "Memory": None},
        "SomethingNew": {"x": 1},
    }
    req = ContainerCreateRequest.model_validate(body)
    assert req.Tty is False and req.Hostname == ""
    assert req.HostConfig is not None and req.HostConfig.Privileged is False
    assert req.HostConfig.RestartPolicy.Name == "" and req.HostConfig.Memory == 0
    assert not hasattr(req, "SomethingNew")


def test_strslice_accepts_a_string() -> None:
    req = ContainerCreateRequest.model_validate({"Cmd": "echo hi", "Entrypoint": "/bin/sh", "Shell": "bash"})
    assert req.Cmd == ["echo hi"] and req.Entrypoint == ["/bin/sh"] and req.Shell == ["bash"]
    assert ExecConfig.model_validate({"Cmd": "ls"}).Cmd == ["ls"]


def test_config_part_of_create_request() -> None:
    req = ContainerCreateRequest.model_validate(
        {**CLI_BODY, "StopTimeout": 0, "Healthcheck": {"Test": ["NONE"]}}
    )
    config = req.config()
    assert type(config) is ContainerConfig
    wire = config.wire()
    assert "HostConfig" not in wire and wire["StopTimeout"] == 0  # a pointer to 0 is kept
    assert wire["Healthcheck"] == {"Test": ["NONE"]}
    assert "ArgsEscaped" not in wire and "MacAddress" not in wire and "StopSignal" not in wire
    assert wire["ExposedPorts"] == {"80/tcp": {}} and wire["Env"] == ["A=1"] and wire["Entrypoint"] is None


def test_inspect_shape_uses_zero_time_and_omitempty() -> None:
    inspect = ContainerInspect(
        Id="c" * 64,
        Name="/web",
        State=ContainerState(Status="running", Running=True, Pid=42, StartedAt="2026-11-28T19:32:53.2Z"),
        Mounts=[MountPoint(Type="bind", Source="/h", Destination="/c", Mode="ro", RW=False)],
        HostConfig=HostConfig(Init=True),
    )
    data = json.loads(inspect.model_dump_json())
    assert data["State"]["FinishedAt"] == "0001-01-01T00:00:00Z" and "Health" not in data["State"]
    assert data["ExecIDs"] is None and "SizeRw" not in data and "SizeRootFs" not in data
    assert data["Mounts"] == [
        {"Type": "bind", "Source": "/h", "Destination": "/c", "Mode": "ro", "RW": False, "Propagation": ""}
    ]
    assert data["HostConfig"]["Init"] is True
    assert data["NetworkSettings"]["Ports"] == {} and data["NetworkSettings"]["Networks"] == {}
    assert data["Config"]["Env"] is None and data["GraphDriver"] == {"Name": "overlay2", "Data": None}
    with_health = ContainerState(Health=Health(Status="healthy"))
    assert with_health.wire()["Health"] == {"Status": "healthy", "FailingStreak": 0, "Log": []}
    assert ContainerInspect(Id="x", SizeRw=0).wire()["SizeRw"] == 0  # requested size: kept even when 0


def test_list_item_omits_empty_fields() -> None:
    item = ContainerSummary(
        Id="c",
        Names=["/web"],
        Ports=[Port(PrivatePort=80, Type="tcp"), Port(IP="0.0.0.0", PrivatePort=80, PublicPort=8080)],
        State="running",
        Status="Up 2 minutes",
    )
    data = item.wire()
    assert data["Ports"] == [
        {"PrivatePort": 80, "Type": "tcp"},
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
    ]
    assert "SizeRw" not in data and data["HostConfig"] == {"NetworkMode": ""} and data["Labels"] == {}


def test_wait_and_create_responses() -> None:
    assert ContainerWaitResponse(StatusCode=0).model_dump_json() == '{"StatusCode":0,"Error":null}'
    failed = ContainerWaitResponse(StatusCode=-1, Error=ContainerWaitExitError(Message="context canceled"))
    assert failed.wire() == {"StatusCode": -1, "Error": {"Message": "context canceled"}}
    assert ContainerCreateResponse(Id="a").wire() == {"Id": "a", "Warnings": []}


def test_exec_models() -> None:
    ec = ExecConfig.model_validate(
        {
            "User": "1000",
            "Privileged": False,
            "Tty": False,
            "AttachStdin": False,
            "AttachStderr": True,
            "AttachStdout": True,
            "Detach": False,
            "DetachKeys": "",
            "Env": ["A=b"],
            "WorkingDir": "/tmp",
            "Cmd": ["sh", "-c", "exit 3"],
            "Container": "abc",
        }
    )
    assert ec.Cmd == ["sh", "-c", "exit 3"] and ec.WorkingDir == "/tmp"
    assert ExecStartConfig.model_validate({"Detach": False, "Tty": True}).Tty
    inspect = ExecInspect(ID="e", ContainerID="c", Running=True)
    assert inspect.wire()["ExitCode"] is None
    process_config = inspect.wire()["ProcessConfig"]
    assert isinstance(process_config, dict)
    assert set(process_config) == {"privileged", "user", "tty", "entrypoint", "arguments"}


def test_update_body() -> None:
    upd = ContainerUpdate.model_validate({"Memory": 1 << 26, "RestartPolicy": {"Name": "always"}, "Bogus": 1})
    assert upd.Memory == 1 << 26 and upd.RestartPolicy is not None and upd.RestartPolicy.Name == "always"
    assert ContainerUpdate.model_validate({"CpuShares": 2}).RestartPolicy is None
