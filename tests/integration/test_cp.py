"""A container's files from the outside: `docker cp` both ways, export, diff, commit, and the
escape suite (hostile archives, symlinks to /, symlink swaps while copying).

The host side of every escape attempt is a marker directory under /tmp that exists only on the
host: resolving any container path there must fail (404) and nothing may ever appear in it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon import DOCKER, Daemon, wait_for
from tests.integration.test_volumes import Objects


@pytest.fixture
def made(daemon: Daemon) -> Iterator[Objects]:
    objs = Objects(daemon)
    yield objs
    objs.cleanup()


@pytest.fixture
def running(daemon: Daemon, made: Objects) -> str:
    """A running busybox container with a volume at /vol."""
    name = made.container()
    made.volume(f"{name}-vol")
    daemon.docker("run", "-d", "--name", name, "-v", f"{name}-vol:/vol", "busybox", "sleep", "300")
    return name


@pytest.fixture
def marker(tmp_root: Path) -> Path:
    """A host-only directory holding a secret; it must stay exactly as it is."""
    d = tmp_root / f"hostonly-{secrets.token_hex(3)}"
    d.mkdir()
    (d / "secret").write_text("host secret\n")
    return d


def sh(daemon: Daemon, container: str, script: str) -> str:
    return daemon.docker("exec", container, "sh", "-c", script).stdout.decode()


def stat_header(daemon: Daemon, container: str, path: str) -> dict[str, Any]:
    r = daemon.request("HEAD", f"/v1.41/containers/{container}/archive", params={"path": path})
    assert r.status_code == 200, r.status_code
    return json.loads(base64.b64decode(r.headers["X-Docker-Container-Path-Stat"]))  # type: ignore[no-any-return]


def tar_of(*entries: tuple[str, str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, payload in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "file":
                data = payload.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "char": tarfile.CHRTYPE}[kind]  # fmt: skip
            info.linkname = payload
            if kind == "char":
                info.devmajor, info.devminor = 1, 3
            tf.addfile(info)
    return buf.getvalue()


def put(daemon: Daemon, container: str, path: str, body: bytes) -> Any:
    return daemon.request(
        "PUT", f"/v1.41/containers/{container}/archive", params={"path": path}, content=body
    )


# --- docker cp -----------------------------------------------------------------------------------


def test_cp_into_and_out_of_a_running_container(daemon: Daemon, running: str, tmp_root: Path) -> None:
    src = tmp_root / "src"
    (src / "sub").mkdir(parents=True)
    (src / "top.txt").write_text("top\n")
    (src / "sub" / "deep.txt").write_text("deep\n")
    os.symlink("top.txt", src / "link")
    single = tmp_root / "f.txt"
    single.write_text("hello world")
    daemon.docker("cp", str(single), f"{running}:/tmp/f.txt")
    daemon.docker("cp", str(src), f"{running}:/tmp/")
    daemon.docker("cp", f"{src}/.", f"{running}:/root")
    out = sh(
        daemon,
        running,
        "cat /tmp/f.txt; echo; cat /tmp/src/sub/deep.txt /root/top.txt; readlink /tmp/src/link",
    )
    assert out == "hello world\ndeep\ntop\ntop.txt\n"
    back = tmp_root / "back"
    daemon.docker("cp", f"{running}:/tmp/src", str(back))
    assert (back / "sub" / "deep.txt").read_text() == "deep\n" and os.readlink(back / "link") == "top.txt"
    contents = tmp_root / "contents"
    contents.mkdir()
    daemon.docker("cp", f"{running}:/tmp/src/.", str(contents))
    assert sorted(p.name for p in contents.iterdir()) == ["link", "sub", "top.txt"]
    raw = daemon.docker("cp", f"{running}:/etc/passwd", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        assert tf.getnames() == ["passwd"]
    r = daemon.docker("cp", f"{running}:/nonexist", str(tmp_root / "x"), check=False)
    assert (
        r.returncode == 1 and f"Could not find the file /nonexist in container {running}".encode() in r.stderr
    )


def test_cp_archive_mode_keeps_owners_and_preserves_modes(
    daemon: Daemon, running: str, tmp_root: Path
) -> None:
    f = tmp_root / "owned"
    f.write_text("x")
    os.chown(f, 1234, 4321)
    os.chmod(f, 0o640)
    daemon.docker("cp", "-a", str(f), f"{running}:/tmp/owned")
    assert sh(daemon, running, "stat -c '%u %g %a' /tmp/owned") == "1234 4321 640\n"


def test_cp_with_volumes_and_binds(daemon: Daemon, made: Objects, tmp_root: Path) -> None:
    bind = tmp_root / "bind"
    bind.mkdir()
    (bind / "from-host").write_text("host side\n")
    ro = tmp_root / "ro"
    ro.mkdir()
    c, vol = made.container(), made.volume()
    daemon.docker("create", "--name", c, "-v", f"{vol}:/data", "-v", f"{bind}:/b", "-v", f"{ro}:/ro:ro",
                  "busybox", "sleep", "300")  # fmt: skip
    payload = tmp_root / "payload"
    payload.write_text("payload\n")
    # The container was never started: the copies go to the volume and the bind, not the rootfs.
    daemon.docker("cp", str(payload), f"{c}:/data/p")
    daemon.docker("cp", str(payload), f"{c}:/b/p")
    volume_dir = Path(json.loads(daemon.docker("volume", "inspect", vol).stdout)[0]["Mountpoint"])
    assert (volume_dir / "p").read_text() == "payload\n" and (bind / "p").read_text() == "payload\n"
    r = daemon.docker("cp", str(payload), f"{c}:/ro/p", check=False)
    assert r.returncode == 1 and b"mounted volume is marked read-only" in r.stderr
    assert not (ro / "p").exists()
    out = tmp_root / "out"
    daemon.docker("cp", f"{c}:/b/from-host", str(out))
    assert out.read_text() == "host side\n"
    daemon.docker("start", c)
    assert sh(daemon, c, "cat /data/p /b/p") == "payload\npayload\n"
    daemon.docker("cp", f"{c}:/data/p", str(tmp_root / "p2"))
    assert (tmp_root / "p2").read_text() == "payload\n"


def test_cp_out_of_and_into_a_stopped_container(daemon: Daemon, made: Objects, tmp_root: Path) -> None:
    c = made.container()
    daemon.docker("run", "--name", c, "busybox", "sh", "-c", "echo left behind > /root/note")
    daemon.docker("cp", f"{c}:/root/note", str(tmp_root / "note"))
    assert (tmp_root / "note").read_text() == "left behind\n"
    (tmp_root / "in").write_text("put while stopped\n")
    daemon.docker("cp", str(tmp_root / "in"), f"{c}:/root/in")
    daemon.docker("start", "-a", c)  # runs the echo again: the container's rootfs was kept
    daemon.docker("cp", f"{c}:/root/in", str(tmp_root / "in2"))
    assert (tmp_root / "in2").read_text() == "put while stopped\n"

    def private_mounts() -> list[str]:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        return [line for line in lines if "/fs/" in line and str(daemon.root) in line]

    # The private mount of the stopped container goes once the copy's response has been sent
    # (the CLI may have read its last byte a moment before): wait for that, boundedly.
    wait_for(lambda: private_mounts() == [], 10, "the private mount to go")


def test_stat_header_and_errors(daemon: Daemon, running: str) -> None:
    st = stat_header(daemon, running, "/tmp")
    assert st["name"] == "tmp" and st["mode"] & (1 << 31) and st["linkTarget"] == ""
    st = stat_header(daemon, running, "/bin/sh")
    assert st["mode"] & (1 << 27) and st["linkTarget"] == "/bin/busybox"
    st = stat_header(daemon, running, "/etc/passwd")
    assert st["mode"] == 0o644 and st["size"] > 0 and st["mtime"].endswith("Z")
    r = daemon.request("HEAD", f"/v1.41/containers/{running}/archive", params={"path": "/nope"})
    assert r.status_code == 404
    r = daemon.request("GET", f"/v1.41/containers/{running}/archive", params={"path": "/nope"})
    assert r.status_code == 404 and r.json() == {
        "message": f"Could not find the file /nope in container {running}"
    }
    r = daemon.request("GET", f"/v1.41/containers/{running}/archive")
    assert r.status_code == 400
    r = put(daemon, running, "/etc/passwd", tar_of(("file", "x", "x")))
    assert r.status_code == 400 and r.json() == {"message": "extraction point is not a directory"}
    r = daemon.request("GET", "/v1.41/containers/pdt-nope/archive", params={"path": "/"})
    assert r.status_code == 404 and r.json() == {"message": "No such container: pdt-nope"}


def test_read_only_rootfs_refuses_cp_but_not_into_volumes(
    daemon: Daemon, made: Objects, tmp_root: Path
) -> None:
    c = made.container()
    daemon.docker("run", "-d", "--name", c, "--read-only", "-v", f"{made.volume()}:/data", "busybox",
                  "sleep", "300")  # fmt: skip
    f = tmp_root / "f"
    f.write_text("x")
    r = daemon.docker("cp", str(f), f"{c}:/root/f", check=False)
    assert r.returncode == 1 and b"container rootfs is marked read-only" in r.stderr
    daemon.docker("cp", str(f), f"{c}:/data/f")
    assert sh(daemon, c, "cat /data/f") == "x"


def test_docker_py_archives(daemon: Daemon, running: str) -> None:
    client = daemon.client()
    try:
        c = client.containers.get(running)
        assert c.put_archive("/tmp", tar_of(("dir", "py", ""), ("file", "py/a", "from py")))
        stream, st = c.get_archive("/tmp/py")
        assert st["name"] == "py" and st["mode"] & (1 << 31)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tf:
            assert sorted(tf.getnames()) == ["py", "py/a"]
    finally:
        client.close()


# --- export, diff, commit -------------------------------------------------------------------------------


def test_export(daemon: Daemon, running: str, tmp_root: Path) -> None:
    sh(daemon, running, "echo exported > /root/marker; echo vol > /vol/in-volume")
    out = tmp_root / "rootfs.tar"
    daemon.docker("export", "-o", str(out), running)
    with tarfile.open(out) as tf:
        names = tf.getnames()
        assert "bin/busybox" in names and "etc/passwd" in names and "root/marker" in names
        assert "vol/in-volume" not in names  # volumes are not part of the rootfs
        member = tf.extractfile("root/marker")
        assert member is not None and member.read() == b"exported\n"
    r = subprocess.run(["tar", "tf", "-"], input=daemon.docker("export", running).stdout, capture_output=True)
    assert r.returncode == 0 and b"bin/busybox" in r.stdout


def test_diff(daemon: Daemon, running: str) -> None:
    sh(
        daemon,
        running,
        "mkdir -p /tmp/newdir && echo a > /tmp/newdir/a && rm /bin/ls && echo x >> /etc/passwd",
    )
    lines = set(daemon.docker("diff", running).stdout.decode().splitlines())
    assert {"C /tmp", "A /tmp/newdir", "A /tmp/newdir/a", "C /bin", "D /bin/ls", "C /etc/passwd"} <= lines
    assert not any(line.endswith(("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")) for line in lines)
    changes = daemon.json("GET", f"/v1.41/containers/{running}/changes")
    assert {"Path": "/bin/ls", "Kind": 2} in changes and {"Path": "/tmp/newdir", "Kind": 1} in changes


def test_commit_creates_a_runnable_image(daemon: Daemon, made: Objects) -> None:
    c, image = made.container(), made.image()
    daemon.docker("run", "--name", c, "busybox", "sh", "-c", "echo committed > /root/file; rm /bin/vi")
    image_id = daemon.docker("commit", "-c", 'CMD ["cat", "/root/file"]', "-c", "ENV FOO=bar", "-m", "msg",
                             "-a", "tester", c, image).stdout.decode().strip()  # fmt: skip
    assert image_id.startswith("sha256:")
    assert daemon.docker("run", "--rm", image).stdout == b"committed\n"
    r = daemon.docker("run", "--rm", image, "sh", "-c", "echo $FOO; ls /bin/vi", check=False)
    assert r.stdout == b"bar\n" and r.returncode != 0  # the deletion is in the layer too
    body = json.loads(daemon.docker("image", "inspect", image).stdout)[0]
    assert body["Id"] == image_id and body["Comment"] == "msg" and body["Author"] == "tester"
    assert body["Config"]["Cmd"] == ["cat", "/root/file"] and "FOO=bar" in body["Config"]["Env"]
    assert len(body["RootFS"]["Layers"]) == 2


def test_commit_pauses_a_running_container_and_docker_py(daemon: Daemon, running: str, made: Objects) -> None:
    image = made.image()
    repo, tag = image.split(":")
    sh(daemon, running, "echo live > /root/live")
    since = time.time() - 1
    client = daemon.client()
    try:
        committed = client.containers.get(running).commit(
            repository=repo, tag=tag, conf={"Cmd": ["cat", "/root/live"]}
        )
        assert client.containers.run(committed.id, remove=True) == b"live\n"
        assert client.containers.get(running).status == "running"
    finally:
        client.close()
    until = str(time.time() + 0.5)
    out = daemon.docker("events", "--since", str(since), "--until", until, "--filter", f"container={running}",
                        "--format", "{{.Action}}").stdout.decode().split()  # fmt: skip
    assert {"pause", "unpause", "commit"} <= set(out)
    r = daemon.request("POST", "/v1.41/commit", params={"container": "pdt-nope"})
    assert r.status_code == 404


# --- the escape suite -----------------------------------------------------------------------------


def test_symlink_to_root_cannot_read_or_write_the_host(
    daemon: Daemon, running: str, marker: Path, tmp_root: Path
) -> None:
    sh(
        daemon,
        running,
        f"ln -s / /tmp/root; ln -s {marker} /tmp/hostdir; ln -s {marker}/secret /tmp/hostfile",
    )
    for path in (
        f"/tmp/root{marker}/secret",
        "/tmp/hostdir/secret",
        "/tmp/hostfile/",
        f"/tmp/root/..{marker}",
    ):
        r = daemon.request("GET", f"/v1.41/containers/{running}/archive", params={"path": path})
        assert r.status_code == 404, (path, r.status_code)
    # Following the link in the container: it is the container's own /etc, not the host's.
    data = daemon.docker("cp", f"{running}:/tmp/root/etc/hostname", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        member = tf.extractfile("hostname")
        assert member is not None
        assert member.read() == sh(daemon, running, "cat /etc/hostname").encode()
    # The archived link is the link itself.
    data = daemon.docker("cp", f"{running}:/tmp/hostfile", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        (m,) = tf.getmembers()
        assert m.issym() and m.linkname == f"{marker}/secret"
    # Writing through them lands in the container (or nowhere), never on the host.
    src = tmp_root / "pwn"
    src.write_text("pwned\n")
    daemon.docker("cp", str(src), f"{running}:/tmp/root/tmp/", check=False)
    daemon.docker("cp", str(src), f"{running}:/tmp/hostdir/", check=False)
    r = put(daemon, running, "/tmp/root/tmp", tar_of(("file", "via-link", "x")))
    assert r.status_code == 200
    assert sh(daemon, running, "cat /tmp/via-link") == "x"
    assert sorted(p.name for p in marker.iterdir()) == ["secret"]
    assert (marker / "secret").read_text() == "host secret\n"


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ((("file", "../../../../../../tmp/escape", "x"),), "leaves the destination"),
        ((("file", "/etc/pwned", "x"),), "absolute path"),
        ((("symlink", "evil", "/"), ("file", "evil/etc/pwned", "x")), "which this archive created"),
        (
            (("symlink", "evil", "../../../../.."), ("file", "evil/tmp/escape", "x")),
            "which this archive created",
        ),
        ((("hardlink", "hl", "../../../../etc/shadow"),), "leaves the destination"),
        ((("hardlink", "hl", "/etc/shadow"),), "absolute target"),
        ((("char", "mem", ""),), "device files"),
    ],
)
def test_hostile_archives_are_refused(
    daemon: Daemon, running: str, marker: Path, entries: Any, fragment: str
) -> None:
    r = put(daemon, running, "/tmp", tar_of(*entries))
    assert r.status_code == 400, r.text
    assert fragment in r.json()["message"]
    assert sorted(p.name for p in marker.iterdir()) == ["secret"]
    assert not Path("/tmp/escape").exists() and not Path("/etc/pwned").exists()
    assert sh(daemon, running, "ls /etc/pwned /tmp/escape /tmp/hl /tmp/mem 2>/dev/null; true") == ""


def test_symlink_swaps_during_copies_never_reach_the_host(
    daemon: Daemon, running: str, marker: Path, tmp_root: Path
) -> None:
    """The container flips /tmp/sw between a directory and a symlink to / as fast as it can while
    the host reads and writes through it: whatever wins each race, the host marker is untouched."""
    sh(daemon, running, f"mkdir -p /tmp/real{marker}")
    flipper = subprocess.Popen(
        [DOCKER, "exec", running, "sh", "-c",
         "while true; do rm -rf /tmp/sw; ln -s / /tmp/sw; rm -f /tmp/sw; ln -s /tmp/real /tmp/sw; done"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=daemon.env(),
    )  # fmt: skip
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            r = daemon.request(
                "GET", f"/v1.41/containers/{running}/archive", params={"path": f"/tmp/sw{marker}/secret"}
            )
            seen.append(r.status_code)
            assert b"host secret" not in r.content

    try:
        t = threading.Thread(target=reader)
        t.start()
        deadline = time.monotonic() + 4
        puts = 0
        while time.monotonic() < deadline:
            r = put(daemon, running, f"/tmp/sw{marker}", tar_of(("file", "raced", "x")))
            assert r.status_code in (200, 404, 400, 500), r.status_code
            puts += 1
        stop.set()
        t.join(30)
    finally:
        flipper.kill()
        flipper.wait()
    assert puts > 5 and len(seen) > 5
    assert sorted(p.name for p in marker.iterdir()) == ["secret"]
    assert (marker / "secret").read_text() == "host secret\n"


def test_a_client_that_leaves_mid_copy_leaves_nothing_held(daemon: Daemon, made: Objects) -> None:
    """A GET of a stopped container's files, abandoned after a few bytes: the private mount goes
    away and the container still starts (a start waits for file operations to end)."""
    c = made.container()
    daemon.docker("run", "--name", c, "busybox", "dd", "if=/dev/zero", "of=/big", "bs=1048576", "count=64")
    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(daemon.sock))
            s.sendall(f"GET /v1.41/containers/{c}/archive?path=/big HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 200")  # then go away, 64 MiB unread
    root = str(daemon.root)

    def released() -> bool:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        return not any(f"{root}/exec/fs/" in line for line in mounts)

    wait_for(released, 15, "the private mount to go")
    daemon.docker("start", "-a", c, timeout=60)
