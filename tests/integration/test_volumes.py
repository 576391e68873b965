"""Volumes and mounts end to end: the docker CLI, docker-py and raw HTTP against a real pydockd.

Every test names its objects uniquely and removes them (containers, volumes, images, host dirs).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.integration.daemon import Daemon, wait_for

ANON = "com.docker.volume.anonymous"


def uniq(prefix: str = "v") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


class Objects:
    """What a test made; removed afterwards in dependency order."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.containers: list[str] = []
        self.volumes: list[str] = []
        self.images: list[str] = []

    def container(self, name: str | None = None) -> str:
        name = name or uniq("c")
        self.containers.append(name)
        return name

    def volume(self, name: str | None = None) -> str:
        name = name or uniq("vol")
        self.volumes.append(name)
        return name

    def image(self, ref: str | None = None) -> str:
        ref = ref or f"pdt-img-{secrets.token_hex(4)}:v1"
        self.images.append(ref)
        return ref

    def cleanup(self) -> None:
        for c in self.containers:
            self.daemon.docker("rm", "-f", "-v", c, check=False)
        for v in self.volumes:
            self.daemon.docker("volume", "rm", "-f", v, check=False)
        for i in self.images:
            self.daemon.docker("rmi", "-f", i, check=False)


@pytest.fixture
def made(daemon: Daemon) -> Iterator[Objects]:
    objs = Objects(daemon)
    yield objs
    objs.cleanup()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Any]:
    c = daemon.client()
    yield c
    c.close()


def inspect(daemon: Daemon, *args: str) -> Any:
    return json.loads(daemon.docker(*args).stdout)


def mounts_of(daemon: Daemon, container: str) -> dict[str, dict[str, Any]]:
    body = inspect(daemon, "inspect", container)[0]
    return {m["Destination"]: m for m in body["Mounts"]}


def volume_names(daemon: Daemon) -> set[str]:
    return set(daemon.docker("volume", "ls", "-q").stdout.decode().split())


def run(daemon: Daemon, *args: str, check: bool = True) -> tuple[int, str, str]:
    r = daemon.docker("run", *args, check=check)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


# --- docker volume ... ------------------------------------------------------------------------------


def test_create_ls_inspect_rm(daemon: Daemon, made: Objects) -> None:
    name = made.volume()
    assert daemon.docker("volume", "create", "--label", "suite=vol", name).stdout.decode().strip() == name
    (body,) = inspect(daemon, "volume", "inspect", name)
    assert body["Name"] == name and body["Driver"] == "local" and body["Scope"] == "local"
    assert body["Labels"] == {"suite": "vol"}
    assert body["Mountpoint"] == str(daemon.data_root / "volumes" / name / "_data")
    assert Path(body["Mountpoint"]).is_dir()
    listed = daemon.docker("volume", "ls", "-q", "--filter", f"name={name}", "--filter", "label=suite=vol")
    assert listed.stdout.decode().split() == [name]
    r = daemon.docker("volume", "inspect", "pdt-nope-volume", check=False)
    assert r.returncode == 1 and b"get pdt-nope-volume: no such volume" in r.stderr
    daemon.docker("volume", "rm", name)
    assert name not in volume_names(daemon)
    r = daemon.docker("volume", "rm", name, check=False)
    assert r.returncode == 1 and f"get {name}: no such volume".encode() in r.stderr
    daemon.docker("volume", "rm", "-f", name)  # -f: a missing volume is fine


def test_remove_in_use_is_409_with_the_container(daemon: Daemon, made: Objects) -> None:
    name, c = made.volume(), made.container()
    daemon.docker("create", "--name", c, "-v", f"{name}:/data", "busybox", "true")  # never started
    cid = inspect(daemon, "inspect", c)[0]["Id"]
    r = daemon.docker("volume", "rm", name, check=False)
    assert r.returncode == 1
    assert f"remove {name}: volume is in use - [{cid}]".encode() in r.stderr
    resp = daemon.request("DELETE", f"/v1.41/volumes/{name}")
    assert resp.status_code == 409 and resp.json() == {
        "message": f"remove {name}: volume is in use - [{cid}]"
    }
    dangling = daemon.docker("volume", "ls", "-q", "--filter", "dangling=true").stdout.decode().split()
    assert name not in dangling
    daemon.docker("rm", c)
    assert name in daemon.docker("volume", "ls", "-q", "--filter", "dangling=true").stdout.decode().split()
    daemon.docker("volume", "rm", name)


def test_tmpfs_volume_is_mounted_while_used(daemon: Daemon, made: Objects) -> None:
    name, c = made.volume(), made.container()
    daemon.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=8m", name)
    (body,) = inspect(daemon, "volume", "inspect", name)
    assert body["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=8m"}
    data = body["Mountpoint"]

    def mounted() -> bool:
        return any(line.split()[4] == data for line in Path("/proc/self/mountinfo").read_text().splitlines())

    assert not mounted()
    daemon.docker("run", "-d", "--name", c, "-v", f"{name}:/t", "busybox", "sleep", "60")
    out = daemon.docker("exec", c, "sh", "-c", "grep ' /t ' /proc/mounts; df -k /t | tail -1").stdout.decode()
    assert "tmpfs" in out and "8192" in out
    assert mounted()
    daemon.docker("rm", "-f", c)
    assert not mounted()
    bad = daemon.docker("volume", "create", "-o", "type=tmpfs", uniq(), check=False)
    assert bad.returncode == 1 and b'missing required option: "device"' in bad.stderr
    bad = daemon.docker("volume", "create", "-o", "bogus=1", uniq(), check=False)
    assert bad.returncode == 1 and b'invalid option: "bogus"' in bad.stderr


def test_bind_options_volume(daemon: Daemon, made: Objects, tmp_root: Path) -> None:
    """`-o type=none -o o=bind -o device=/path`: the host dir is bound on `_data` while used."""
    name = made.volume()
    device = tmp_root / "device"
    device.mkdir()
    (device / "already").write_text("there\n")
    daemon.docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={device}", name)
    out = daemon.docker("run", "--rm", "-v", f"{name}:/b", "busybox", "sh", "-c",
                        "cat /b/already; echo new > /b/new").stdout  # fmt: skip
    assert out == b"there\n" and (device / "new").read_text() == "new\n"
    data = inspect(daemon, "volume", "inspect", name)[0]["Mountpoint"]
    assert not any(line.split()[4] == data for line in Path("/proc/self/mountinfo").read_text().splitlines())
    assert not (Path(data) / "new").exists()  # the data dir itself was only a mount point


def test_prune_removes_only_unused(daemon: Daemon, made: Objects) -> None:
    tag = secrets.token_hex(4)
    unused, used, c = made.volume(), made.volume(), made.container()
    for v in (unused, used):
        daemon.docker("volume", "create", "--label", f"prune={tag}", v)
    daemon.docker("create", "--name", c, "-v", f"{used}:/d", "busybox", "true")
    out = daemon.docker("volume", "prune", "-f", "--filter", f"label=prune={tag}").stdout.decode()
    assert unused in out and used not in out
    assert unused not in volume_names(daemon) and used in volume_names(daemon)


def test_volume_events(daemon: Daemon, made: Objects) -> None:
    name = made.volume()
    since = str(time.time() - 1)
    daemon.docker("volume", "create", name)
    daemon.docker("run", "--rm", "-v", f"{name}:/d", "busybox", "true")
    daemon.docker("volume", "rm", name)
    out = daemon.docker("events", "--since", since, "--until", str(time.time() + 0.5), "--filter",
                        f"volume={name}", "--format", "{{json .}}").stdout  # fmt: skip
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert [e["Action"] for e in events] == ["create", "mount", "unmount", "destroy"]
    mount = events[1]["Actor"]["Attributes"]
    assert mount["destination"] == "/d" and mount["read/write"] == "true" and mount["driver"] == "local"


def test_volumes_survive_a_daemon_restart(fresh_daemon: Daemon) -> None:
    name = uniq()
    fresh_daemon.docker("volume", "create", "--label", "k=v", "-o", "type=tmpfs", "-o", "device=tmpfs", name)
    before = inspect(fresh_daemon, "volume", "inspect", name)
    fresh_daemon.restart()
    assert inspect(fresh_daemon, "volume", "inspect", name) == before
    fresh_daemon.docker("volume", "rm", name)


# --- containers with volumes -------------------------------------------------------------------------


def test_named_volume_is_populated_from_the_image_once(daemon: Daemon, made: Objects) -> None:
    name = made.volume()
    _, out, _ = run(daemon, "--rm", "-v", f"{name}:/etc", "busybox", "ls", "/etc")
    assert "passwd" in out.split()
    data = Path(inspect(daemon, "volume", "inspect", name)[0]["Mountpoint"])
    assert (data / "passwd").is_file()
    # Not empty any more: another path of the image is not copied on top.
    run(daemon, "--rm", "-v", f"{name}:/usr", "busybox", "true")
    assert not (data / "bin").exists() and (data / "passwd").is_file()
    nocopy = made.volume()
    _, out, _ = run(daemon, "--rm", "-v", f"{nocopy}:/var:nocopy", "busybox", "ls", "-A", "/var")
    assert out == ""  # the image's /var/www was not copied


def test_anonymous_volumes_from_the_image(daemon: Daemon, made: Objects) -> None:
    base, image = made.container(), made.image()
    daemon.docker("run", "--name", base, "busybox", "sh", "-c", "mkdir /seed && echo seeded > /seed/file")
    daemon.docker("commit", "-c", "VOLUME /seed", base, image)
    c = made.container()
    daemon.docker("run", "-d", "--name", c, image, "sleep", "60")
    mount = mounts_of(daemon, c)["/seed"]
    assert mount["Type"] == "volume" and len(mount["Name"]) == 64 and mount["Mode"] == "" and mount["RW"]
    anon = mount["Name"]
    (vol,) = inspect(daemon, "volume", "inspect", anon)
    assert vol["Labels"] == {ANON: ""}
    assert daemon.docker("exec", c, "cat", "/seed/file").stdout == b"seeded\n"
    assert (Path(vol["Mountpoint"]) / "file").read_text() == "seeded\n"
    daemon.docker("rm", "-f", c)  # without -v: the anonymous volume stays
    assert anon in volume_names(daemon)
    daemon.docker("volume", "rm", anon)
    c2 = made.container()
    daemon.docker("create", "--name", c2, image)
    anon2 = mounts_of(daemon, c2)["/seed"]["Name"]
    daemon.docker("rm", "-v", c2)
    assert anon2 not in volume_names(daemon)


def test_rm_volumes_keeps_named_ones_and_run_rm_removes_anonymous(daemon: Daemon, made: Objects) -> None:
    named = made.volume()
    before = volume_names(daemon)
    run(daemon, "--rm", "-v", f"{named}:/named", "-v", "/anon", "busybox", "true")
    assert volume_names(daemon) - before == {named}
    c = made.container()
    daemon.docker("create", "--name", c, "-v", f"{named}:/named", "-v", "/anon", "busybox", "true")
    anon = mounts_of(daemon, c)["/anon"]["Name"]
    assert inspect(daemon, "volume", "inspect", anon)[0]["Labels"] == {ANON: ""}
    daemon.docker("rm", "-v", c)
    assert anon not in volume_names(daemon) and named in volume_names(daemon)


def test_bind_mounts(daemon: Daemon, made: Objects, tmp_root: Path) -> None:
    src = tmp_root / "src"
    src.mkdir()
    (src / "hello").write_text("from host\n")
    code, out, err = run(daemon, "--rm", "-v", f"{src}:/h:ro", "busybox", "sh", "-c",
                         "cat /h/hello; touch /h/x", check=False)  # fmt: skip
    assert out == "from host\n" and code == 1 and "Read-only file system" in err
    assert not (src / "x").exists()
    run(daemon, "--rm", "-v", f"{src}:/h", "busybox", "sh", "-c", "echo written > /h/y")
    assert (src / "y").read_text() == "written\n"
    created = tmp_root / "made" / "by" / "run"
    run(daemon, "--rm", "-v", f"{created}:/m", "busybox", "true")
    assert created.is_dir()  # -v creates a missing host directory
    missing = tmp_root / "missing"
    code, _, err = run(daemon, "--rm", "--mount", f"type=bind,source={missing},target=/m", "busybox", "true",
                       check=False)  # fmt: skip
    assert (
        code == 125
        and f'invalid mount config for type "bind": bind source path does not exist: {missing}' in err
    )
    assert not missing.exists()
    c = made.container()
    daemon.docker("create", "--name", c, "--mount", f"type=bind,source={src},target=/b,readonly", "busybox")
    assert mounts_of(daemon, c)["/b"] == {
        "Type": "bind",
        "Source": str(src),
        "Destination": "/b",
        "Mode": "",
        "RW": False,
        "Propagation": "rprivate",
    }


def test_mount_flag_volume_and_tmpfs(daemon: Daemon, made: Objects) -> None:
    name = made.volume()
    c = made.container()
    daemon.docker(
        "run", "-d", "--name", c,
        "--mount", f"type=volume,source={name},target=/var,volume-nocopy,volume-label=from=mount",
        "--mount", "type=tmpfs,target=/scratch,tmpfs-size=2097152",
        "--tmpfs", "/fast:size=1m",
        "busybox", "sleep", "60",
    )  # fmt: skip
    m = mounts_of(daemon, c)
    assert m["/var"]["Type"] == "volume" and m["/var"]["Name"] == name and m["/var"]["Mode"] == "z"
    assert m["/scratch"]["Type"] == "tmpfs"
    assert inspect(daemon, "volume", "inspect", name)[0]["Labels"] == {"from": "mount"}
    out = daemon.docker("exec", c, "sh", "-c", "ls -A /var; df -k /scratch /fast | tail -2").stdout.decode()
    lines = out.splitlines()
    assert "2048" in lines[-2] and "1024" in lines[-1]
    assert lines[0].startswith("tmpfs")  # nocopy: /var is empty, the df output comes first


def test_volumes_from(daemon: Daemon, made: Objects, tmp_root: Path) -> None:
    name, src, dst = made.volume(), made.container(), made.container()
    daemon.docker("run", "--name", src, "-v", f"{name}:/shared", "-v", f"{tmp_root}:/hostdir", "busybox",
                  "sh", "-c", "echo shared > /shared/f")  # fmt: skip
    code, out, err = run(daemon, "--rm", "--volumes-from", f"{src}:ro", "busybox", "sh", "-c",
                         "cat /shared/f; ls -d /hostdir; touch /shared/g", check=False)  # fmt: skip
    assert out == "shared\n/hostdir\n" and code == 1 and "Read-only file system" in err
    daemon.docker("create", "--name", dst, "--volumes-from", src, "busybox")
    m = mounts_of(daemon, dst)
    assert m["/shared"]["Name"] == name and m["/shared"]["RW"] and m["/hostdir"]["Type"] == "bind"
    # A 404 from create makes the CLI try to pull the image, so ask over HTTP.
    body = {"Image": "busybox", "HostConfig": {"VolumesFrom": ["pdt-no-such-container"]}}
    r = daemon.request("POST", "/v1.41/containers/create", json=body)
    assert r.status_code == 404 and r.json() == {"message": "No such container: pdt-no-such-container"}


def test_read_only_rootfs_keeps_volumes_writable(daemon: Daemon, made: Objects) -> None:
    name = made.volume()
    code, out, err = run(daemon, "--rm", "--read-only", "-v", f"{name}:/data", "busybox", "sh", "-c",
                         "echo ok > /data/f && cat /data/f; touch /root/nope", check=False)  # fmt: skip
    assert out == "ok\n" and code == 1 and "Read-only file system" in err


def test_duplicate_mount_point_is_400(daemon: Daemon) -> None:
    body = {"Image": "busybox", "HostConfig": {"Binds": ["a1:/x", "a2:/x"]}}
    r = daemon.request("POST", "/v1.41/containers/create", json=body)
    assert r.status_code == 400 and r.json() == {"message": "Duplicate mount point: /x"}
    assert "a1" not in volume_names(daemon)  # nothing was created for a refused container


def test_system_df_reports_volumes(daemon: Daemon, made: Objects) -> None:
    name, c = made.volume(), made.container()
    daemon.docker("run", "--name", c, "-v", f"{name}:/d", "busybox", "sh", "-c",
                  "dd if=/dev/zero of=/d/blob bs=1024 count=64 2>/dev/null")  # fmt: skip
    df = daemon.json("GET", "/v1.41/system/df")
    assert set(df) >= {"LayersSize", "Images", "Containers", "Volumes", "BuildCache", "BuilderSize"}
    vol = next(v for v in df["Volumes"] if v["Name"] == name)
    assert vol["UsageData"]["RefCount"] == 1 and vol["UsageData"]["Size"] >= 64 * 1024
    cont = next(x for x in df["Containers"] if x["Names"] == [f"/{c}"])
    assert "SizeRw" in cont and cont["SizeRootFs"] > 0
    assert df["BuildCache"] == [] and df["BuilderSize"] == 0
    out = daemon.docker("system", "df", "-v").stdout.decode()
    assert name in out and "Local Volumes space usage" in out


# --- docker-py -----------------------------------------------------------------------------------------


def test_docker_py_volumes(client: Any, made: Objects) -> None:
    name = made.volume()
    vol = client.volumes.create(name, driver="local", labels={"py": "yes"},
                                driver_opts={"type": "tmpfs", "device": "tmpfs"})  # fmt: skip
    assert vol.name == name and vol.attrs["Labels"] == {"py": "yes"}
    assert name in [v.name for v in client.volumes.list(filters={"label": "py=yes"})]
    assert client.volumes.get(name).attrs["Options"] == {"type": "tmpfs", "device": "tmpfs"}
    c = client.containers.create(
        "busybox", "true", volumes={name: {"bind": "/t", "mode": "rw"}}, name=made.container()
    )
    with pytest.raises(docker.errors.APIError) as info:
        client.volumes.get(name).remove()
    assert info.value.status_code == 409
    c.remove(v=True)
    client.volumes.get(name).remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(name)
    anon = client.volumes.create()
    made.volumes.append(anon.name)
    assert anon.attrs["Labels"] == {ANON: ""}
    out = client.containers.run("busybox", ["cat", "/data/f"], remove=True,
                                volumes={anon.name: {"bind": "/data", "mode": "rw"}},
                                entrypoint=["sh", "-c", "echo py > /data/f; exec \"$@\"", "--"])  # fmt: skip
    assert out == b"py\n"
    assert client.df()["Volumes"] is not None
    wait_for(lambda: anon.name in [v.name for v in client.volumes.list()], 5, "the volume listed")
