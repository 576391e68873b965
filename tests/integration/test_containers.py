"""Containers end to end through the docker CLI: run, lifecycle, ps, logs, inspect, events, restart."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.integration.daemon import DOCKER, Daemon, PtyCli, wait_for


def uniq(prefix: str = "c") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def name(daemon: Daemon) -> Iterator[str]:
    value = uniq()
    yield value
    daemon.docker("rm", "-f", value, check=False)


def inspect(daemon: Daemon, ref: str) -> dict:  # type: ignore[type-arg]
    return json.loads(daemon.docker("inspect", ref).stdout)[0]  # type: ignore[no-any-return]


def test_run_prints_and_propagates_exit_code(daemon: Daemon) -> None:
    r = daemon.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert r.returncode == 3
    assert r.stdout == b"out\n"
    assert r.stderr == b"err\n"


def test_run_rm_removes_the_container(daemon: Daemon) -> None:
    n = uniq()
    daemon.docker("run", "--rm", "--name", n, "busybox", "true")
    r = daemon.docker("inspect", n, check=False)
    assert r.returncode == 1
    assert b"No such object" in r.stderr


def test_run_missing_command_is_127_and_not_executable_is_126(daemon: Daemon) -> None:
    r = daemon.docker("run", "--rm", "busybox", "nonexist", check=False)
    assert r.returncode == 127
    assert b"executable file not found" in r.stderr
    r = daemon.docker("run", "--rm", "busybox", "/etc/passwd", check=False)
    assert r.returncode == 126, r.stderr


def test_run_with_piped_stdin(daemon: Daemon) -> None:
    payload = b"".join(b"line %d\n" % i for i in range(2000))
    r = daemon.docker("run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo done", input=payload)
    assert r.stdout == payload + b"done\n"


def test_run_it_with_a_pty(daemon: Daemon) -> None:
    cli = PtyCli(daemon, "run", "-it", "--rm", "busybox", "sh")
    try:
        assert b"/ #" in cli.read_until(b"/ #")
        cli.send(b"tty; echo marker-$((40+2))\r")
        assert b"marker-42" in cli.read_until(b"marker-42")
        assert b"/dev/pts/0" in cli.out
        cli.send(b"exit 5\r")
        assert cli.wait() == 5
    finally:
        cli.close()


def test_run_it_detach_keys_then_attach_again(daemon: Daemon, name: str) -> None:
    """ctrl-p ctrl-q leaves `run -it` and `attach` with the container running; `attach` joins
    the same shell."""
    cli = PtyCli(daemon, "run", "-it", "--name", name, "busybox", "sh")
    try:
        assert b"/ #" in cli.read_until(b"/ #")
        cli.send(b"export MARK=kept\r")
        assert cli.detach() == (0, False)
    finally:
        cli.close()
    assert inspect(daemon, name)["State"]["Running"] is True
    cli = PtyCli(daemon, "attach", name)
    try:
        time.sleep(0.3)
        cli.send(b"echo mark-$MARK-$((40+2))\r")
        assert b"mark-kept-42" in cli.read_until(b"mark-kept-42")
        assert cli.detach() == (1, True)  # the CLI's own ending, as with dockerd
    finally:
        cli.close()
    assert inspect(daemon, name)["State"]["Running"] is True
    cli = PtyCli(daemon, "attach", name)
    try:
        time.sleep(0.3)
        cli.send(b"exit 3\r")
        assert cli.wait() == 3
    finally:
        cli.close()
    assert inspect(daemon, name)["State"]["ExitCode"] == 3


def test_detached_lifecycle(daemon: Daemon, name: str) -> None:
    script = "trap 'exit 7' TERM; while true; do echo tick; sleep 0.1; done"
    cid = daemon.docker("run", "-d", "--name", name, "busybox", "sh", "-c", script).stdout.strip().decode()
    assert len(cid) == 64
    ps = daemon.docker("ps", "--format", "{{.Names}} {{.Status}}").stdout.decode()
    assert f"{name} Up" in ps
    wait_for(lambda: b"tick" in daemon.docker("logs", name).stdout, 10, "log output")
    daemon.docker("pause", name)
    assert inspect(daemon, name)["State"]["Status"] == "paused"
    assert (
        "(Paused)"
        in daemon.docker("ps", "--filter", f"name={name}", "--format", "{{.Status}}").stdout.decode()
    )
    r = daemon.docker("pause", name, check=False)
    assert b"is already paused" in r.stderr
    daemon.docker("unpause", name)
    r = daemon.docker("unpause", name, check=False)
    assert b"is not paused" in r.stderr
    daemon.docker("stop", "-t", "5", name)
    state = inspect(daemon, name)["State"]
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 7
    assert state["Running"] is False
    assert state["FinishedAt"] != "0001-01-01T00:00:00Z"
    # stop of a stopped container: 304, the CLI still succeeds
    daemon.docker("stop", name)
    r = daemon.docker("kill", name, check=False)
    assert r.returncode == 1
    assert f"Container {cid} is not running".encode() in r.stderr
    daemon.docker("start", name)
    assert inspect(daemon, name)["State"]["Running"] is True
    daemon.docker("start", name)  # 304: already running
    daemon.docker("kill", "-s", "TERM", name)
    wait_for(lambda: inspect(daemon, name)["State"]["Status"] == "exited", 10, "exit after TERM")
    assert inspect(daemon, name)["State"]["ExitCode"] == 7
    daemon.docker("restart", "-t", "1", name)
    assert inspect(daemon, name)["State"]["Running"] is True
    r = daemon.docker("rm", name, check=False)
    assert r.returncode == 1
    assert (
        f"You cannot remove a running container {cid}. Stop the container before attempting removal "
        "or force remove"
    ).encode() in r.stderr
    daemon.docker("rm", "-f", name)
    assert daemon.docker("inspect", name, check=False).returncode == 1


def test_name_conflict_message(daemon: Daemon, name: str) -> None:
    cid = daemon.docker("create", "--name", name, "busybox", "true").stdout.strip().decode()
    r = daemon.docker("create", "--name", name, "busybox", "true", check=False)
    assert r.returncode != 0
    assert (
        f'Conflict. The container name "/{name}" is already in use by container "{cid}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    ).encode() in r.stderr


def test_rename(daemon: Daemon, name: str) -> None:
    daemon.docker("create", "--name", name, "busybox", "true")
    other = name + "-b"
    daemon.docker("rename", name, other)
    try:
        assert inspect(daemon, other)["Name"] == "/" + other
        assert daemon.docker("inspect", name, check=False).returncode == 1
    finally:
        daemon.docker("rm", "-f", other, check=False)


def test_inspect_shape(daemon: Daemon, name: str) -> None:
    daemon.docker("create", "--name", name, "-e", "FOO=bar", "-l", "k=v", "--init", "-w", "/tmp",
                  "--restart", "on-failure:3", "busybox", "sh", "-c", "exit 0")  # fmt: skip
    body = inspect(daemon, name)
    assert body["Name"] == "/" + name
    assert body["Path"] == "sh"
    assert body["Args"] == ["-c", "exit 0"]
    assert body["Image"].startswith("sha256:")
    assert body["Config"]["Image"] == "busybox"
    assert "FOO=bar" in body["Config"]["Env"]
    assert any(e.startswith("PATH=") for e in body["Config"]["Env"])
    assert body["Config"]["Labels"] == {"k": "v"}
    assert body["Config"]["WorkingDir"] == "/tmp"
    assert body["Config"]["Hostname"] == body["Id"][:12]
    assert body["HostConfig"]["Init"] is True
    assert body["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert body["State"]["Status"] == "created"
    assert body["State"]["StartedAt"] == "0001-01-01T00:00:00Z"
    assert body["LogPath"].endswith(f"{body['Id']}-json.log")
    assert body["GraphDriver"]["Name"] == "overlay2"
    assert body["RestartCount"] == 0
    assert body["ExecIDs"] is None


def test_restart_policy_on_failure_counts(daemon: Daemon, name: str) -> None:
    daemon.docker("run", "-d", "--name", name, "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 1")

    def settled() -> bool:
        body = inspect(daemon, name)
        return body["State"]["Status"] == "exited" and body["RestartCount"] == 2

    wait_for(settled, 20, "two restarts then exited")
    assert inspect(daemon, name)["State"]["ExitCode"] == 1


def test_restart_always_and_manual_stop(daemon: Daemon, name: str) -> None:
    daemon.docker("run", "-d", "--name", name, "--restart", "always", "busybox", "sh", "-c", "sleep 0.2")
    wait_for(lambda: inspect(daemon, name)["RestartCount"] >= 2, 20, "restarts")
    daemon.docker("stop", "-t", "1", name)
    count = inspect(daemon, name)["RestartCount"]
    time.sleep(1.0)  # a stopped always-container must stay stopped: check it does not come back
    body = inspect(daemon, name)
    assert body["State"]["Status"] == "exited"
    assert body["RestartCount"] == count


def test_wait_and_conditions(daemon: Daemon, name: str) -> None:
    daemon.docker("run", "-d", "--name", name, "busybox", "sh", "-c", "sleep 0.3; exit 4")
    assert daemon.docker("wait", name).stdout.strip() == b"4"
    # not-running on an exited container answers at once
    assert daemon.docker("wait", name).stdout.strip() == b"4"
    r = daemon.request("POST", f"/v1.41/containers/{name}/wait", params={"condition": "bogus"})
    assert r.status_code == 400


def test_ps_filters_and_formats(daemon: Daemon) -> None:
    a, b = uniq("psa"), uniq("psb")
    try:
        daemon.docker("run", "-d", "--name", a, "-l", "team=red", "busybox", "sleep", "30")
        daemon.docker("run", "--name", b, "-l", "team=blue", "busybox", "sh", "-c", "exit 2", check=False)
        names = lambda *args: set(  # noqa: E731
            daemon.docker("ps", *args, "--format", "{{.Names}}").stdout.decode().split()
        )
        assert a in names()
        assert b not in names()
        assert {a, b} <= names("-a")
        assert names("-a", "--filter", "label=team=red") >= {a}
        assert b not in names("-a", "--filter", "label=team=red")
        assert names("--filter", "status=exited") >= {b}
        assert a not in names("--filter", "status=exited")
        assert b in names("-a", "--filter", "exited=2")
        assert a in names("-a", "--filter", f"name={a}")
        assert names("-a", "--filter", "ancestor=busybox") >= {a, b}
        assert b in names("-a", "--filter", f"since={a}")
        assert a not in names("-a", "--filter", f"since={a}")
        assert a in names("-a", "--filter", f"before={b}")
        latest = daemon.docker("ps", "-l", "-q").stdout.split()
        assert len(latest) == 1
        assert len(daemon.docker("ps", "-a", "-n", "1", "--format", "{{.ID}}").stdout.split()) == 1
        quiet = daemon.docker("ps", "-a", "-q", "--no-trunc").stdout.decode().split()
        assert inspect(daemon, a)["Id"] in quiet
        sized = daemon.docker("ps", "-a", "-s", "--filter", f"name={a}", "--format", "{{.Size}}").stdout
        assert b"virtual" in sized
        r = daemon.docker("ps", "--filter", "status=nonsense", check=False)
        assert r.returncode != 0
        assert b"Unrecognised filter value for status" in r.stderr
        status = daemon.docker("ps", "-a", "--filter", f"name={b}", "--format", "{{.Status}}").stdout.decode()
        assert status.startswith("Exited (2) ")
    finally:
        daemon.docker("rm", "-f", a, b, check=False)


def test_logs_options(daemon: Daemon, name: str) -> None:
    daemon.docker("run", "--name", name, "busybox", "sh", "-c",
                  "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done")  # fmt: skip
    r = daemon.docker("logs", name)
    assert r.stdout == b"".join(b"out%d\n" % i for i in range(1, 6))
    assert r.stderr == b"".join(b"err%d\n" % i for i in range(1, 6))
    # stdout and stderr are separate pipes: the tail counts records of both
    tail = daemon.docker("logs", "--tail", "2", name)
    assert (tail.stdout + tail.stderr).count(b"\n") == 2
    # as in dockerd, the tail is taken before the stream selection
    both = daemon.request(
        "GET", f"/v1.41/containers/{name}/logs", params={"stdout": 1, "stderr": 1, "tail": 2}
    )
    only_out = daemon.request("GET", f"/v1.41/containers/{name}/logs", params={"stdout": 1, "tail": 2})
    assert only_out.content == b"".join(f for f in _frames(both.content) if f.startswith(b"\x01"))
    last = daemon.docker("logs", "-t", "--tail", "1", name)
    stamped = (last.stdout + last.stderr).decode()
    assert stamped.endswith((" out5\n", " err5\n"))
    assert stamped[4] == "-" and stamped[10] == "T" and "Z " in stamped
    assert daemon.docker("logs", "--since", "2000-01-01T00:00:00Z", name).stdout.count(b"\n") == 5
    assert daemon.docker("logs", "--until", "2000-01-01T00:00:00Z", name).stdout == b""


def _frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        size = int.from_bytes(data[4:8], "big")
        out.append(data[: 8 + size])
        data = data[8 + size :]
    return out


def test_logs_follow_ends_when_the_container_stops(daemon: Daemon, name: str) -> None:
    daemon.docker(
        "run", "-d", "--name", name, "busybox", "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done"
    )
    r = daemon.docker("logs", "-f", name, timeout=30)
    assert r.stdout == b"1\n2\n3\n"


def test_log_rotation(daemon: Daemon, name: str) -> None:
    daemon.docker("run", "--name", name, "--log-opt", "max-size=2k", "--log-opt", "max-file=3", "busybox",
                  "sh", "-c", "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); done")  # fmt: skip
    log_path = inspect(daemon, name)["LogPath"]
    assert os.path.getsize(log_path) <= 2048
    assert os.path.exists(log_path + ".1")
    assert os.path.exists(log_path + ".2")
    assert not os.path.exists(log_path + ".3")
    lines = daemon.docker("logs", name).stdout.decode().split()
    assert lines[-1] == "line-399"
    assert lines == [f"line-{i}" for i in range(400 - len(lines), 400)]


def test_events_of_run_rm(daemon: Daemon) -> None:
    n = uniq()
    since = str(time.time() - 1)
    daemon.docker("run", "--rm", "--name", n, "busybox", "true")
    out = daemon.docker("events", "--since", since, "--until", str(time.time() + 0.5), "--filter",
                        f"container={n}", "--format", "{{json .}}").stdout  # fmt: skip
    actions = [json.loads(line)["Action"] for line in out.decode().splitlines()]
    assert actions == ["create", "attach", "start", "die", "destroy"]


def test_state_survives_daemon_restart(fresh_daemon: Daemon, busybox_tar: os.PathLike[str]) -> None:
    d = fresh_daemon
    d.docker("load", "-q", "-i", str(busybox_tar))
    n = uniq()
    d.docker("run", "--name", n, "busybox", "sh", "-c", "echo persisted; exit 9", check=False)
    d.restart()
    body = inspect(d, n)
    assert body["State"]["Status"] == "exited"
    assert body["State"]["ExitCode"] == 9
    assert d.docker("logs", n).stdout == b"persisted\n"
    assert n in d.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode()


def test_init_is_pid_one(daemon: Daemon) -> None:
    out = daemon.docker("run", "--rm", "--init", "busybox", "ps", "-o", "pid,args").stdout.decode()
    first = out.splitlines()[1].split(None, 1)
    assert first == ["1", "/sbin/docker-init -- ps -o pid,args"]


def test_user_workdir_env_hostname(daemon: Daemon) -> None:
    out = daemon.docker("run", "--rm", "-u", "nobody", "-w", "/tmp", "-e", "FOO=bar", "-h", "myhost",
                        "busybox", "sh", "-c", "id -un; pwd; echo $FOO; hostname").stdout  # fmt: skip
    assert out == b"nobody\n/tmp\nbar\nmyhost\n"


def test_container_prune(daemon: Daemon) -> None:
    n = uniq()
    daemon.docker("run", "--name", n, "-l", "prune-me=yes", "busybox", "true")
    out = daemon.docker("container", "prune", "-f", "--filter", "label=prune-me=yes").stdout.decode()
    assert "Deleted Containers:" in out
    assert daemon.docker("inspect", n, check=False).returncode == 1


def test_sig_proxy_forwards_signals(daemon: Daemon) -> None:
    n = uniq()
    proc = subprocess.Popen(
        [DOCKER, "run", "--rm", "--name", n, "busybox", "sh", "-c",
         "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done"],
        env=daemon.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert out == b"got-term\n"
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
