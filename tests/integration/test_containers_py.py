"""Containers through docker-py and raw HTTP (curl-like), which send different requests than the CLI."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

from app.streams import parse_frames
from tests.integration.daemon import Daemon, wait_for


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Any]:
    c = daemon.client()
    yield c
    c.close()


def uniq() -> str:
    return f"py-{secrets.token_hex(4)}"


def test_run_returns_output(client: Any) -> None:
    out = client.containers.run("busybox", ["sh", "-c", "echo hello; echo err >&2"], remove=True)
    assert out == b"hello\n"
    out = client.containers.run(
        "busybox", ["sh", "-c", "echo err >&2"], stdout=False, stderr=True, remove=True
    )
    assert out == b"err\n"


def test_run_failure_raises_container_error(client: Any) -> None:
    with pytest.raises(docker.errors.ContainerError) as info:
        client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    assert info.value.exit_status == 3


def test_missing_image_is_image_not_found(client: Any) -> None:
    with pytest.raises(docker.errors.ImageNotFound):
        client.containers.create("pydock-test/nonexistent:nope")


def test_detached_container_api(client: Any) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "echo started; sleep 30"], detach=True, name=uniq(),
                              labels={"suite": "py"})  # fmt: skip
    try:
        c.reload()
        assert c.status == "running"
        assert c.labels == {"suite": "py"}
        wait_for(lambda: c.logs() == b"started\n", 10, "first output")
        assert c in client.containers.list(filters={"label": "suite=py"})
        c.kill(signal="SIGKILL")
        assert c.wait(timeout=20) == {"Error": None, "StatusCode": 137}
        c.reload()
        assert c.attrs["State"]["ExitCode"] == 137
        c.start()
        c.stop(timeout=1)
        c.reload()
        assert c.status == "exited"
    finally:
        c.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(c.id)


def test_logs_stream_follow(client: Any) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done"],
                              detach=True)  # fmt: skip
    try:
        lines = list(c.logs(stream=True, follow=True))
        assert b"".join(lines) == b"1\n2\n3\n"
    finally:
        c.remove(force=True)


def test_attach_socket_stdin_and_detach_keys(daemon: Daemon, client: Any) -> None:
    """docker-py's raw attach socket: stdin in, output out; the server scans for detach keys."""
    c = client.containers.create("busybox", ["sh"], stdin_open=True, tty=True, name=uniq())
    try:
        c.start()
        sock = client.api.attach_socket(c.id, params={"stdin": 1, "stdout": 1, "stream": 1,
                                                       "detachKeys": "ctrl-x"})  # fmt: skip
        raw = sock._sock
        raw.settimeout(10)
        raw.sendall(b"echo via-attach-$((6*7))\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"via-attach-42" not in got and time.monotonic() < deadline:
            got += raw.recv(4096)
        assert b"via-attach-42" in got
        raw.sendall(b"\x18")  # ctrl-x: detach, the container keeps running
        rest = b""
        while chunk := raw.recv(4096):
            rest += chunk
        sock.close()
        raw.close()
        c.reload()
        assert c.status == "running"
    finally:
        c.remove(force=True)


def test_put_get_via_raw_http(daemon: Daemon) -> None:
    """curl-style: create, start, wait over plain HTTP; wait flushes its headers before the exit."""
    body = {"Image": "busybox", "Cmd": ["sh", "-c", "sleep 0.5; exit 6"]}
    r = daemon.request("POST", "/v1.41/containers/create", json=body)
    assert r.status_code == 201
    cid = r.json()["Id"]
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(daemon.sock))
            s.sendall(f"POST /v1.41/containers/{cid}/wait?condition=next-exit HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: 0\r\n\r\n".encode())  # fmt: skip
            head = s.recv(4096)
            assert head.startswith(b"HTTP/1.1 200 ")  # headers came before the container even started
            assert daemon.request("POST", f"/v1.41/containers/{cid}/start").status_code == 204
            assert daemon.request("POST", f"/v1.41/containers/{cid}/start").status_code == 304
            data = head
            while b"StatusCode" not in data:
                data += s.recv(4096)
            payload = data.split(b"\r\n\r\n", 1)[1]
            assert b'{"Error":null,"StatusCode":6}' in payload
    finally:
        daemon.request("DELETE", f"/v1.41/containers/{cid}", params={"force": "1"})


def test_error_shapes(daemon: Daemon) -> None:
    r = daemon.request("POST", "/v1.41/containers/nope/stop")
    assert r.status_code == 404
    assert r.json() == {"message": "No such container: nope"}
    r = daemon.request("POST", "/v1.41/containers/create", content=b"{not json",
                       headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 400
    assert "message" in r.json()
    r = daemon.request("POST", "/v1.41/containers/create", json={"Image": "busybox", "Cmd": ["true"],
                       "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}})  # fmt: skip
    assert r.status_code == 400
    assert "invalid restart policy" in r.json()["message"]
    r = daemon.request("POST", "/v1.41/containers/create", params={"name": "bad name"},
                       json={"Image": "busybox", "Cmd": ["true"]})  # fmt: skip
    assert r.status_code == 400
    r = daemon.request("POST", "/v1.41/containers/create", json={"Image": "nosuchimage:v9", "Cmd": ["x"]})
    assert r.status_code == 404
    assert r.json() == {"message": "No such image: nosuchimage:v9"}
    r = daemon.request("POST", "/v1.41/containers/create", json={"Image": "bad::ref", "Cmd": ["x"]})
    assert r.status_code == 400
    assert r.json() == {"message": "invalid reference format"}


def test_hijacked_attach_multiplexes_stdout_and_stderr(daemon: Daemon) -> None:
    r = daemon.request("POST", "/v1.41/containers/create",
                       json={"Image": "busybox", "Cmd": ["sh", "-c", "echo o; echo e >&2"],
                             "AttachStdout": True, "AttachStderr": True})  # fmt: skip
    cid = r.json()["Id"]
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(daemon.sock))
            s.sendall(
                f"POST /v1.41/containers/{cid}/attach?stderr=1&stdout=1&stream=1 HTTP/1.1\r\n"
                "Host: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
            s.shutdown(socket.SHUT_WR)  # as the CLI does without stdin
            assert daemon.request("POST", f"/v1.41/containers/{cid}/start").status_code == 204
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        frames, rest = parse_frames(data)
        assert rest == b""
        assert sorted(frames) == [(1, b"o\n"), (2, b"e\n")]
    finally:
        daemon.request("DELETE", f"/v1.41/containers/{cid}", params={"force": "1"})


def test_events_stream_live(daemon: Daemon, client: Any) -> None:
    name = uniq()
    since = time.time()
    c = client.containers.run("busybox", "true", name=name, detach=True)
    c.wait(timeout=20)
    c.remove()
    events = client.events(since=since, until=time.time() + 0.2, decode=True,
                           filters={"container": name})  # fmt: skip
    actions = [e["Action"] for e in events]
    assert actions[:1] == ["create"]
    assert "start" in actions and "die" in actions and actions[-1] == "destroy"
    die = next(e for e in client.events(since=since, until=time.time(), decode=True,
                                        filters={"container": name, "event": "die"}))  # fmt: skip
    assert die["Actor"]["Attributes"]["exitCode"] == "0"
    assert die["from"] == "busybox"
    assert json.dumps(die)
