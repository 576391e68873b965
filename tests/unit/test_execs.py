"""Exec records without a kernel: create/inspect shape, dockerd's 404/409 rules, the end of an exec,
garbage collection (mark, then drop; gone containers; the cap), fast-path request building."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.models.containers import ContainerConfig
from app.models.endpoints import NetworkingConfig
from app.models.exec import ExecConfig
from app.models.hostconfig import HostConfig
from runtime import execs as execs_mod
from runtime.errors import Conflict, InvalidParameter, NoSuchContainer, NoSuchExec, NotRunning
from runtime.execs import ExecService, start_failure_code
from runtime.fastexec import FastExecUnavailable, process_request, target_from_state
from runtime.hostfacts import HostFacts
from runtime.ocispec import Capabilities, Process, Rlimit, User
from runtime.records import Container, ContainerState, Status

CID = "c" * 64


@dataclass
class FakeSupervisor:
    container: Container
    events: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def event(self, action: str, **extra: str) -> None:
        self.events.append((action, extra))


@dataclass
class FakeConfig:
    runtime_root: Path = Path("/nonexistent/runtime")


class FakeContainers:
    def __init__(self, sup: FakeSupervisor) -> None:
        self.sups = {sup.container.cid: sup, sup.container.name: sup}
        self.config = FakeConfig()
        self.host_facts = HostFacts()

    def get(self, ref: str) -> FakeSupervisor:
        try:
            return self.sups[ref]
        except KeyError:
            raise NoSuchContainer(ref) from None


def make_container(status: Status = Status.RUNNING) -> Container:
    config = ContainerConfig(Env=["A=1"], User="app", WorkingDir="/srv", Hostname="h1")
    return Container(
        cid=CID,
        name="web",
        created="2024-01-01T00:00:00Z",
        image_id="sha256:" + "0" * 64,
        config=config,
        host_config=HostConfig(),
        networking=NetworkingConfig(),
        path="sleep",
        args=["1000"],
        data_dir=Path("/nonexistent"),
        state=ContainerState(status=status),
    )


@pytest.fixture
def service() -> tuple[ExecService, FakeSupervisor]:
    sup = FakeSupervisor(make_container())
    return ExecService(FakeContainers(sup)), sup  # type: ignore[arg-type]


async def test_create_and_inspect_shape(service: tuple[ExecService, FakeSupervisor]) -> None:
    svc, sup = service
    eid = svc.create("web", ExecConfig(Cmd=["sh", "-c", "echo hi"], AttachStdout=True, Env=["B=2"]))
    body = svc.get(eid).inspect()
    assert list(body) == [
        "ID", "Running", "ExitCode", "ProcessConfig", "OpenStdin", "OpenStderr", "OpenStdout",
        "CanRemove", "ContainerID", "DetachKeys", "Pid",
    ]  # fmt: skip
    assert body["ExitCode"] is None and body["Running"] is False and body["ContainerID"] == CID
    assert body["ProcessConfig"] == {
        "tty": False, "entrypoint": "sh", "arguments": ["-c", "echo hi"], "privileged": False, "user": "app",
    }  # fmt: skip
    record = svc.get(eid)
    assert record.working_dir == "/srv" and not record.user_given
    assert record.env[-2:] == ["A=1", "B=2"] and record.env[0].startswith("PATH=")
    assert sup.container.exec_ids == [eid]
    assert sup.events == [("exec_create: sh -c echo hi", {"execID": eid})]


async def test_dockerd_rules(service: tuple[ExecService, FakeSupervisor]) -> None:
    svc, sup = service
    with pytest.raises(InvalidParameter, match="No exec command specified"):
        svc.create("web", ExecConfig(Cmd=[]))
    with pytest.raises(NoSuchContainer):
        svc.create("nope", ExecConfig(Cmd=["true"]))
    with pytest.raises(NoSuchExec, match="No such exec instance: x"):
        svc.reserve("x")
    eid = svc.create("web", ExecConfig(Cmd=["true"]))
    svc.reserve(eid)
    with pytest.raises(Conflict, match=f"Error: Exec command {eid} is already running"):
        svc.reserve(eid)
    sup.container.state.status = Status.PAUSED
    with pytest.raises(Conflict, match="Container web is paused, unpause the container before exec"):
        svc.create("web", ExecConfig(Cmd=["true"]))
    with pytest.raises(Conflict, match=f"Container {CID} is paused"):
        svc.resize(eid, 10, 10)
    sup.container.state.status = Status.EXITED
    with pytest.raises(NotRunning, match=f"Container {CID} is not running"):
        svc.create("web", ExecConfig(Cmd=["true"]))


async def test_end_gc_and_cap(service: tuple[ExecService, FakeSupervisor], monkeypatch: Any) -> None:
    svc, sup = service
    eid = svc.create("web", ExecConfig(Cmd=["true"]))
    record = svc.reserve(eid)
    svc._ended(record, 3)
    assert (record.exit_code, record.running) == (3, False)
    assert sup.container.exec_ids == []  # ended: out of ExecIDs, still inspectable
    assert sup.events[-1] == ("exec_die", {"execID": eid, "exitCode": "3"})
    with pytest.raises(Conflict, match="has already run"):
        svc.reserve(eid)
    assert svc.collect_garbage() == 0 and svc.get(eid).can_remove  # first pass marks
    assert svc.collect_garbage() == 1  # second pass drops
    with pytest.raises(NoSuchExec):
        svc.get(eid)
    # records of a removed container go at the next pass
    other = svc.create("web", ExecConfig(Cmd=["true"]))
    del svc.containers.sups[CID]  # type: ignore[attr-defined]
    with pytest.raises(NoSuchExec):
        svc.get(other)
    assert svc.collect_garbage() == 1
    # at most MAX_ENDED ended records are kept
    svc.containers.sups[CID] = sup  # type: ignore[attr-defined]
    monkeypatch.setattr(execs_mod, "MAX_ENDED", 2)
    ids = []
    for _ in range(4):
        ids.append(svc.create("web", ExecConfig(Cmd=["true"])))
        svc._ended(svc.reserve(ids[-1]), 0)
    assert [e for e in ids if e in svc._records] == ids[-2:]
    await svc.close()


def test_start_failure_codes() -> None:
    assert start_failure_code('exec: "x": executable file not found in $PATH') == 127
    assert start_failure_code("stat /x: no such file or directory") == 127
    assert start_failure_code('exec: "/etc/passwd": permission denied') == 126
    assert start_failure_code("unable to find user bob: no matching entries in passwd file") == 126


STATE: dict[str, Any] = {
    "init_process_pid": 42,
    "init_process_start": 7,
    "cgroup_paths": {"memory": "/sys/fs/cgroup/memory/pydock/x", "": "/sys/fs/cgroup/unified/pydock/x"},
    "namespace_paths": {
        k: f"/proc/42/ns/{k}" for k in ("NEWNS", "NEWPID", "NEWNET", "NEWIPC", "NEWUTS", "NEWUSER")
    },
    "config": {
        "namespaces": [{"type": t} for t in ("NEWNS", "NEWNET", "NEWUTS", "NEWPID", "NEWIPC")],
        "seccomp": {"default_action": 2, "syscalls": []},
        "no_new_keyring": False,
    },
}


def test_fast_exec_target_from_runc_state() -> None:
    target, has_seccomp = target_from_state(STATE, "x")
    assert has_seccomp
    assert [kind for kind, _ in target.namespaces] == ["NEWIPC", "NEWUTS", "NEWNET", "NEWPID", "NEWNS"]
    assert set(target.cgroup_procs) == {
        "/sys/fs/cgroup/memory/pydock/x/cgroup.procs",
        "/sys/fs/cgroup/unified/pydock/x/cgroup.procs",
    }
    assert target.keyring == "_ses.x"
    for change in (
        {"config": {**STATE["config"], "namespaces": [{"type": "NEWUSER"}]}},
        {"config": {**STATE["config"], "seccomp": {"flags": ["SECCOMP_FILTER_FLAG_LOG"]}}},
        {"config": {**STATE["config"], "seccomp": {"listener_path": "/run/x.sock"}}},
        {"config": {**STATE["config"], "mount_label": "system_u:object_r:container_file_t"}},
        {"rootless": True},
    ):
        with pytest.raises(FastExecUnavailable):
            target_from_state({**STATE, **change}, "x")


def test_fast_exec_process_request() -> None:
    process = Process(
        args=["sh"],
        env=["PATH=/bin"],
        cwd="/tmp",
        user=User(uid=1000, gid=1000, additional_gids=[5]),
        capabilities=Capabilities(bounding=["CAP_KILL"], effective=["CAP_KILL", "CAP_CHOWN"]),
        rlimits=[Rlimit(type="RLIMIT_NOFILE", soft=10, hard=20)],
        no_new_privileges=True,
        terminal=True,
    )
    req = process_request(process)
    assert req["capabilities"]["bounding"] == [5] and req["capabilities"]["effective"] == [0, 5]
    assert (req["uid"], req["gid"], req["additional_gids"], req["cwd"]) == (1000, 1000, [5], "/tmp")
    assert req["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]
    assert req["no_new_privileges"] is True and req["terminal"] is True
    with pytest.raises(FastExecUnavailable):
        process_request(process.model_copy(update={"apparmor_profile": "docker-default"}))
