"""docker-py's high-level client (`docker.DockerClient`) against a live pydockd: containers, images,
exec, log and event streams, networks and volumes, as a user's script would drive them.

Each test names its objects `pdpy<hex>-...` and removes them (the `objects` fixture sweeps what a
failed test left behind).
"""

from __future__ import annotations

import gc
import io
import secrets
import tarfile
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

from tests.integration.daemon import Daemon, wait_for
from tests.integration.registry import Registry


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Any]:
    c = daemon.client()
    yield c
    c.close()


class Objects:
    """Unique names for one test, and the sweep of whatever carries them."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.prefix = f"pdpy{secrets.token_hex(3)}"
        self.label = {"pydock.test": self.prefix}

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def sweep(self) -> None:
        for c in self.client.containers.list(all=True, filters={"label": f"pydock.test={self.prefix}"}):
            c.remove(force=True)
        for c in self.client.containers.list(all=True, filters={"name": self.prefix}):
            c.remove(force=True)
        for n in self.client.networks.list(names=[]):
            if n.name.startswith(self.prefix):
                n.remove()
        for v in self.client.volumes.list():
            if v.name.startswith(self.prefix):
                v.remove(force=True)
        for image in self.client.images.list():
            for tag in image.tags:
                if self.prefix in tag:
                    self.client.images.remove(tag, force=True)


@pytest.fixture
def objects(client: Any) -> Iterator[Objects]:
    o = Objects(client)
    yield o
    o.sweep()


def drain(stream: Iterator[bytes]) -> bytes:
    """All of a docker-py output stream. `exec_run(stream=True)` and `attach(stream=True)` never
    close their socket (a docker-py leak, the same against dockerd): it is collected here, with its
    ResourceWarning silenced."""
    data = b"".join(stream)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del stream
        gc.collect()
    return data


# --- containers ------------------------------------------------------------------------------------


def test_run_to_completion_returns_its_output(client: Any, objects: Objects) -> None:
    out = client.containers.run(
        "busybox", ["sh", "-c", "echo out; echo err >&2"], remove=True, labels=objects.label
    )
    assert out == b"out\n"  # stdout only, as docker-py asks
    with pytest.raises(docker.errors.ContainerError) as info:
        client.containers.run("busybox", ["sh", "-c", "exit 7"], remove=True, labels=objects.label)
    assert info.value.exit_status == 7
    with pytest.raises(docker.errors.ImageNotFound):  # create does not pull (run would: no internet here)
        client.containers.create("pydock-no-such-image:never", "true")


def test_container_lifecycle(client: Any, objects: Objects) -> None:
    name = objects.name("life")
    c = client.containers.run(
        "busybox",
        ["sleep", "300"],
        detach=True,
        name=name,
        labels=objects.label,
        environment={"GREETING": "hi there"},
        working_dir="/tmp",
        hostname="lifehost",
    )
    c.reload()
    assert c.status == "running" and c.name == name
    assert "GREETING=hi there" in c.attrs["Config"]["Env"]
    assert c.attrs["Config"]["WorkingDir"] == "/tmp" and c.attrs["Config"]["Hostname"] == "lifehost"
    assert client.containers.get(name).id == c.id
    assert client.containers.get(c.id[:12]).id == c.id
    listed = client.containers.list(filters={"label": f"pydock.test={objects.prefix}"})
    assert [x.id for x in listed] == [c.id]

    c.stop(timeout=1)  # sleep as pid 1 has no SIGTERM handler: the kernel ignores it, SIGKILL follows
    c.reload()
    assert c.status == "exited"
    assert c.wait(timeout=30)["StatusCode"] == 137
    assert client.containers.list(filters={"label": f"pydock.test={objects.prefix}"}) == []
    assert len(client.containers.list(all=True, filters={"label": f"pydock.test={objects.prefix}"})) == 1

    c.start()
    c.reload()
    assert c.status == "running"
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running"
    c.pause()
    c.reload()
    assert c.status == "paused"
    c.unpause()
    c.kill()
    assert c.wait(timeout=30)["StatusCode"] == 137
    c.rename(objects.name("renamed"))
    c.reload()
    assert c.name == objects.name("renamed")
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(c.id)


def test_create_conflicts_and_force_remove(client: Any, objects: Objects) -> None:
    name = objects.name("dup")
    c = client.containers.create("busybox", ["sleep", "300"], name=name, labels=objects.label)
    with pytest.raises(docker.errors.APIError) as info:
        client.containers.create("busybox", "true", name=name)
    assert info.value.status_code == 409
    c.start()
    with pytest.raises(docker.errors.APIError) as info:
        c.remove()
    assert info.value.status_code == 409
    c.remove(force=True)


# --- logs and events -----------------------------------------------------------------------------


def test_logs_stream_while_the_container_writes(client: Any, objects: Objects) -> None:
    script = "for i in 1 2 3 4 5; do echo line $i; sleep 0.4; done; echo oops >&2"
    c = client.containers.run("busybox", ["sh", "-c", script], detach=True, labels=objects.label)
    got: list[bytes] = []
    running_at_first_chunk = None
    started = time.monotonic()
    for chunk in c.logs(stream=True, follow=True, stdout=True, stderr=True):
        if running_at_first_chunk is None:
            c.reload()
            running_at_first_chunk = c.status == "running"
        got.append(chunk)
        assert time.monotonic() - started < 30
    assert running_at_first_chunk, "the first line came only after the container ended: not streamed"
    assert b"".join(got) == b"line 1\nline 2\nline 3\nline 4\nline 5\noops\n"
    assert c.wait(timeout=30)["StatusCode"] == 0
    assert c.logs(stdout=True, stderr=False) == b"line 1\nline 2\nline 3\nline 4\nline 5\n"
    assert c.logs(stderr=True, stdout=False) == b"oops\n"
    assert c.logs(tail=2) == b"line 5\noops\n"
    stamped = c.logs(timestamps=True).decode().splitlines()
    assert len(stamped) == 6
    for line in stamped:  # RFC 3339 with nanoseconds, a space, the line
        stamp, _, rest = line.partition(" ")
        assert (
            stamp[:4].isdigit()
            and stamp.endswith("Z")
            and rest in ("line 1", "line 2", "line 3", "line 4", "line 5", "oops")
        )


def test_events_stream(client: Any, objects: Objects) -> None:
    since = int(time.time()) - 1
    c = client.containers.run("busybox", "true", detach=True, labels=objects.label, name=objects.name("ev"))
    c.wait(timeout=30)
    until = int(time.time()) + 1
    seen = [
        e["Action"]
        for e in client.events(since=since, until=until, decode=True, filters={"container": c.id})
        if e.get("Type") == "container"
    ]
    assert seen[:3] == ["create", "start", "die"], seen


def test_attach_socket_streams_output(client: Any, objects: Objects) -> None:
    c = client.containers.create("busybox", ["sh", "-c", "sleep 0.5; echo attached"], labels=objects.label)
    stream = c.attach(stdout=True, stderr=True, stream=True, logs=True)
    c.start()
    out = drain(stream)
    assert out == b"attached\n"
    c.remove(force=True)


# --- exec ----------------------------------------------------------------------------------------


def test_exec_run(client: Any, objects: Objects) -> None:
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, labels=objects.label)
    result = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert result.exit_code == 3
    assert result.output == b"out\nerr\n"
    out, err = c.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True).output
    assert (out, err) == (b"out\n", b"err\n")
    result = c.exec_run(
        ["sh", "-c", 'echo "$A $(pwd) $(id -u)"'], environment={"A": "b"}, workdir="/tmp", user="1000"
    )
    assert result.exit_code == 0 and result.output == b"b /tmp 1000\n"
    streamed = drain(c.exec_run(["sh", "-c", "echo one; sleep 0.2; echo two"], stream=True).output)
    assert streamed == b"one\ntwo\n"
    assert c.exec_run("cat /nonexistent").exit_code == 1
    c.stop(timeout=0)
    with pytest.raises(docker.errors.APIError) as info:
        c.exec_run("true")
    assert info.value.status_code == 409


# --- images --------------------------------------------------------------------------------------


def test_images_tag_history_save_load_remove(client: Any, objects: Objects) -> None:
    busybox = client.images.get("busybox")
    assert "busybox:latest" in busybox.tags
    repo = f"{objects.prefix}/box"
    assert busybox.tag(repo, "v1")
    tagged = client.images.get(f"{repo}:v1")
    assert tagged.id == busybox.id
    assert [i.id for i in client.images.list(name=repo)] == [busybox.id]
    assert busybox.history() and busybox.history()[0]["Id"]
    archive = b"".join(tagged.save(named=f"{repo}:v1"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        assert "manifest.json" in tf.getnames()
    client.images.remove(f"{repo}:v1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(f"{repo}:v1")
    loaded = client.images.load(archive)
    assert [i.id for i in loaded] == [busybox.id]
    assert client.images.get(f"{repo}:v1").id == busybox.id
    client.images.remove(f"{repo}:v1")


def test_images_pull_and_push(client: Any, objects: Objects, registry: Registry) -> None:
    pulled = client.images.pull(f"{registry.host}/busybox", tag="latest")
    assert f"{registry.host}/busybox:latest" in pulled.tags
    target = f"{registry.host}/{objects.prefix}/box"
    pulled.tag(target, "v2")
    lines = list(client.images.push(target, tag="v2", stream=True, decode=True))
    assert not [m for m in lines if "error" in m], lines
    assert any("digest" in m.get("status", "") or m.get("aux", {}).get("Digest") for m in lines)
    client.images.remove(f"{target}:v2")
    again = client.images.pull(target, tag="v2")
    assert again.id == pulled.id
    client.images.remove(f"{target}:v2")
    client.images.remove(f"{registry.host}/busybox:latest")


# --- networks ------------------------------------------------------------------------------------


def test_network_name_resolution_and_connect(client: Any, objects: Objects) -> None:
    net = client.networks.create(objects.name("net"), driver="bridge", labels=objects.label)
    assert client.networks.get(net.id).name == objects.name("net")
    assert objects.name("net") in [n.name for n in client.networks.list(names=[objects.name("net")])]
    run = {"detach": True, "labels": objects.label}
    server = client.containers.run(
        "busybox",
        ["httpd", "-f", "-p", "8080", "-h", "/etc"],
        name=objects.name("srv"),
        network=net.name,
        **run,
    )
    probe = client.containers.run("busybox", ["sleep", "300"], network=net.name, **run)
    server.reload()
    assert net.name in server.attrs["NetworkSettings"]["Networks"]

    def fetch(url: str) -> Any:  # `timeout`, not `wget -T`: busybox 1.35's wget crashes on -T
        result = probe.exec_run(["timeout", "5", "wget", "-q", "-O", "-", url])
        return result if result.exit_code == 0 else None

    # a container reaches another by name through the network's DNS
    result = wait_for(lambda: fetch(f"http://{server.name}:8080/hostname"), 20, "name resolution")
    assert result.output.decode().strip() == server.attrs["Config"]["Hostname"]

    # a container connected later, with an alias, is found by that alias
    late = client.containers.run("busybox", ["sleep", "300"], **run)
    net.connect(late, aliases=["late-alias"])
    net.reload()
    assert {c.id for c in net.containers} == {server.id, probe.id, late.id}
    late.reload()
    late_ip = late.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
    assert "late-alias" in (late.attrs["NetworkSettings"]["Networks"][net.name]["Aliases"] or [])
    resolved = server.exec_run(["nslookup", "late-alias"])
    assert resolved.exit_code == 0 and late_ip in resolved.output.decode(), resolved.output

    net.disconnect(late)
    late.reload()
    assert net.name not in late.attrs["NetworkSettings"]["Networks"]
    with pytest.raises(docker.errors.APIError) as info:
        net.remove()  # server and probe are still attached
    assert info.value.status_code in (403, 409)
    for c in (server, probe, late):
        c.remove(force=True)
    net.remove()
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(net.id)


# --- volumes -------------------------------------------------------------------------------------


def test_named_volume_outlives_its_containers(client: Any, objects: Objects) -> None:
    vol = client.volumes.create(objects.name("data"), labels=objects.label)
    assert vol.attrs["Driver"] == "local" and vol.attrs["Mountpoint"]
    assert client.volumes.get(vol.name).name == vol.name
    assert vol.name in [
        v.name for v in client.volumes.list(filters={"label": f"pydock.test={objects.prefix}"})
    ]
    rw = {vol.name: {"bind": "/data", "mode": "rw"}}
    client.containers.run(
        "busybox", ["sh", "-c", "echo kept > /data/file"], volumes=rw, remove=True, labels=objects.label
    )
    out = client.containers.run(
        "busybox", ["cat", "/data/file"], volumes=[f"{vol.name}:/data:ro"], remove=True, labels=objects.label
    )
    assert out == b"kept\n"
    holder = client.containers.create("busybox", "true", volumes=[f"{vol.name}:/data"], labels=objects.label)
    with pytest.raises(docker.errors.APIError) as info:
        vol.remove()
    assert info.value.status_code == 409
    holder.remove()
    vol.remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(vol.name)


def test_anonymous_volume_and_prune(client: Any, objects: Objects) -> None:
    c = client.containers.create("busybox", "true", volumes=["/anon"], labels=objects.label)
    mounts = client.api.inspect_container(c.id)["Mounts"]
    assert len(mounts) == 1 and mounts[0]["Destination"] == "/anon" and len(mounts[0]["Name"]) == 64
    c.remove(v=True)
    assert mounts[0]["Name"] not in [v.name for v in client.volumes.list()]
    client.volumes.create(objects.name("orphan"), labels=objects.label)
    pruned = client.volumes.prune(filters={"label": f"pydock.test={objects.prefix}"})
    assert objects.name("orphan") in (pruned["VolumesDeleted"] or [])


# --- the daemon ----------------------------------------------------------------------------------


def test_ping_version_info_df(client: Any, daemon: Daemon) -> None:
    assert client.ping() is True
    version = client.version()
    assert version["ApiVersion"] == "1.41" and version["Os"] == "linux"
    info = client.info()
    assert info["DockerRootDir"] == str(daemon.data_root)
    df = client.df()
    assert "Images" in df and "Containers" in df and "Volumes" in df


def test_concurrent_clients(client: Any, daemon: Daemon, objects: Objects) -> None:
    """Four threads, each with its own client, run containers at once (docker-py is thread-per-call)."""
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        c = daemon.client()
        try:
            out = c.containers.run("busybox", ["echo", f"w{i}"], remove=True, labels=objects.label)
            assert out == f"w{i}\n".encode()
        except BaseException as exc:
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
