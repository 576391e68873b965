"""Container file access without a kernel: in-root resolution, archives out and in, changes."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from runtime.changes import ADDED, DELETED, MODIFIED, container_changes
from runtime.cparchive import (
    archive_resource,
    export_rootfs,
    go_file_mode,
    go_time,
    request_path,
    stat_resource,
)
from runtime.cpextract import extract
from runtime.ctrpath import ContainerTree, FsMount, Walker
from runtime.errors import (
    HostileArchive,
    InvalidParameter,
    NotADirectoryTarget,
    RootfsReadOnly,
    VolumeReadOnly,
)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A host dir with a secret, a container root, and a volume source."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret")
    root = tmp_path / "root"
    for d in ("etc", "tmp", "data", "bin"):
        (root / d).mkdir(parents=True)
    (root / "etc" / "secret").write_text("container secret")
    (root / "bin" / "busybox").write_text("bb")
    os.symlink("busybox", root / "bin" / "sh")
    os.symlink("/", root / "tmp" / "rootlink")
    os.symlink(str(host), root / "tmp" / "hostlink")  # absolute: means the container's path
    os.symlink("../../..", root / "tmp" / "up")
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "in-volume").write_text("volume data")
    return {"host": host, "root": root, "vol": vol}


def _tree(world: dict[str, Path], *, ro_volume: bool = False, ro_root: bool = False) -> ContainerTree:
    mounts = (FsMount(("data",), str(world["vol"]), writable=not ro_volume),)
    return ContainerTree(world["root"], mounts, root_writable=not ro_root)


def _tar(*entries: tuple[str, str, bytes | str], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """Entries: (kind, name, payload): kind file/dir/symlink/hardlink/char/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for kind, name, payload in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            data = payload.encode() if isinstance(payload, str) else payload
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data.decode()
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data.decode()
            elif kind == "char":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tf.addfile(info)
    return buf.getvalue()


# --- request paths and the stat header ---------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/tmp/f.txt", ("/tmp/f.txt", "f.txt", False)),
        ("tmp/d/", ("/tmp/d/", "d", True)),
        ("/tmp/d/.", ("/tmp/d/.", ".", True)),
        ("/tmp/d/../d", ("/tmp/d", "d", False)),
        ("/", ("/", "/", True)),
        ("/.", ("/.", ".", True)),
    ],
)
def test_request_path_is_dockerd_abspath(given: str, expected: tuple[str, str, bool]) -> None:
    assert request_path(given) == expected


def test_go_file_mode_bits() -> None:
    assert go_file_mode(stat.S_IFDIR | 0o755) == 0x80000000 | 0o755 == 2147484141
    assert go_file_mode(stat.S_IFREG | 0o644) == 420
    assert go_file_mode(stat.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert go_file_mode(stat.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666
    assert go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == (1 << 23) | 0o755
    assert go_file_mode(stat.S_IFDIR | stat.S_ISVTX | 0o777) == (1 << 31) | (1 << 20) | 0o777


def test_go_time_trims_nanoseconds() -> None:
    os.environ["TZ"] = "UTC"
    import time

    time.tzset()
    assert go_time(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert go_time(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"


def test_stat_follows_the_directory_part_but_not_the_last_link(world: dict[str, Path]) -> None:
    tree = _tree(world)
    st = stat_resource(tree, "/bin/sh")
    assert st["name"] == "sh" and st["mode"] == (1 << 27) | 0o777 and st["linkTarget"] == "/bin/busybox"
    assert stat_resource(tree, "/tmp/rootlink/etc/secret")["size"] == len("container secret")
    st = stat_resource(tree, "/tmp/rootlink")
    assert st["linkTarget"] == "/"
    assert stat_resource(tree, "/data")["mode"] & (1 << 31)  # the volume's root
    with pytest.raises(FileNotFoundError):
        stat_resource(tree, "/tmp/hostlink/secret")  # the host path does not exist in the container
    header = base64.b64encode(json.dumps(stat_resource(tree, "/etc")).encode())
    assert json.loads(base64.b64decode(header))["name"] == "etc"


# --- resolution never leaves the root ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/tmp/rootlink/etc/secret", "/tmp/up/etc/secret", "/../../etc/secret", "/tmp/up/tmp/up/etc/secret"],
)
def test_symlinks_and_dotdot_stay_in_the_root(world: dict[str, Path], path: str) -> None:
    with Walker(_tree(world)) as walker:
        res = walker.resolve(path, follow_last=True)
        assert res.parts == ("etc", "secret")
        fd = walker.open_file(res)
        try:
            assert os.read(fd, 100) == b"container secret"
        finally:
            os.close(fd)


def test_symlink_loops_end(world: dict[str, Path]) -> None:
    os.symlink("loop2", world["root"] / "loop1")
    os.symlink("loop1", world["root"] / "loop2")
    with Walker(_tree(world)) as walker, pytest.raises(OSError, match="level"):
        walker.resolve("/loop1/x", follow_last=True)


def test_mounts_are_stepped_onto(world: dict[str, Path]) -> None:
    os.symlink("/data", world["root"] / "tmp" / "tovol")
    with Walker(_tree(world)) as walker:
        res = walker.resolve("/tmp/tovol/in-volume", follow_last=True)
        assert res.parts == ("data", "in-volume") and res.parent.mount is not None
        assert walker.list_dir(walker.open_dir(walker.resolve("/data", follow_last=True))) == ["in-volume"]


# --- archives out --------------------------------------------------------------------------------


def _names(tree: ContainerTree, path: str) -> list[str]:
    _stat, gen = archive_resource(tree, path)
    data = b"".join(gen)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [m.name for m in tf.getmembers()]


def test_archive_names_as_dockerd(world: dict[str, Path]) -> None:
    root = world["root"]
    (root / "tmp" / "d" / "sub").mkdir(parents=True)
    (root / "tmp" / "d" / "f").write_text("f")
    (root / "tmp" / "d" / "sub" / "s").write_text("s")
    tree = _tree(world)
    assert _names(tree, "/tmp/d") == ["d", "d/f", "d/sub", "d/sub/s"]
    assert _names(tree, "/tmp/d/.") == [".", "./f", "./sub", "./sub/s"]
    assert _names(tree, "/tmp/d/f") == ["f"]
    assert _names(tree, "/bin/sh") == ["sh"]  # the link itself
    assert "data/in-volume" in _names(tree, "/")[1:] or "//data/in-volume" in _names(tree, "/")


def test_archive_of_a_symlink_to_root_does_not_follow_it(world: dict[str, Path]) -> None:
    _stat, gen = archive_resource(_tree(world), "/tmp/rootlink")
    with tarfile.open(fileobj=io.BytesIO(b"".join(gen))) as tf:
        (member,) = tf.getmembers()
        assert member.issym() and member.linkname == "/"
    names = _names(_tree(world), "/tmp/rootlink/")  # a trailing slash follows it, in the container
    assert "rootlink/etc/secret" in names and not any(n.endswith("host/secret") for n in names)


def test_export_has_the_rootfs_without_volumes(world: dict[str, Path]) -> None:
    data = b"".join(export_rootfs(_tree(world)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
        assert "etc/secret" in names and "bin/sh" in names
        assert "data/in-volume" not in names
        secret = tf.extractfile("etc/secret")
        assert secret is not None and secret.read() == b"container secret"


# --- archives in ---------------------------------------------------------------------------------


def _put(world: dict[str, Path], path: str, data: bytes, **kwargs: object) -> None:
    extract(_tree(world, **kwargs), path, io.BytesIO(data))  # type: ignore[arg-type]


def test_extract_files_dirs_links_and_into_a_volume(world: dict[str, Path]) -> None:
    archive = _tar(
        ("dir", "d", ""),
        ("file", "d/a.txt", "A"),
        ("symlink", "d/lnk", "a.txt"),
        ("hardlink", "d/hard", "d/a.txt"),
        ("fifo", "d/pipe", ""),
    )
    _put(world, "/tmp", archive)
    base = world["root"] / "tmp" / "d"
    assert (base / "a.txt").read_text() == "A" and os.readlink(base / "lnk") == "a.txt"
    assert os.stat(base / "hard").st_ino == os.stat(base / "a.txt").st_ino
    assert stat.S_ISFIFO(os.lstat(base / "pipe").st_mode)
    _put(world, "/data", _tar(("file", "new", "N")))
    assert (world["vol"] / "new").read_text() == "N"
    _put(world, "/", _tar(("file", "data/deep", "D")))  # crossing into the volume
    assert (world["vol"] / "deep").read_text() == "D"


def test_extract_through_container_symlinks_stays_inside(world: dict[str, Path]) -> None:
    _put(world, "/tmp/rootlink/etc", _tar(("file", "written", "x")))
    assert (world["root"] / "etc" / "written").read_text() == "x"
    _put(world, "/tmp", _tar(("file", "up/etc/also", "y")))  # ../../.. from /tmp is the root
    assert (world["root"] / "etc" / "also").read_text() == "y"
    with pytest.raises(FileNotFoundError):
        _put(world, "/tmp/hostlink", _tar(("file", "pwned", "z")))
    assert not (world["host"] / "pwned").exists()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ((("file", "../escape", "x"),), "leaves the destination"),
        ((("file", "a/../../escape", "x"),), "leaves the destination"),
        ((("file", "/abs", "x"),), "absolute path"),
        ((("symlink", "evil", "/"), ("file", "evil/etc/pwned", "x")), "which this archive created"),
        ((("symlink", "evil", "../../../.."), ("file", "evil/pwned", "x")), "which this archive created"),
        ((("hardlink", "h", "../../host/secret"),), "leaves the destination"),
        ((("hardlink", "h", "/etc/secret"),), "absolute target"),
        ((("char", "null", ""),), "device files"),
    ],
)
def test_hostile_archives_are_refused(world: dict[str, Path], entries: tuple, message: str) -> None:  # type: ignore[type-arg]
    before = sorted(p.name for p in world["host"].iterdir())
    with pytest.raises(HostileArchive, match=message):
        _put(world, "/tmp", _tar(*entries))
    assert sorted(p.name for p in world["host"].iterdir()) == before
    assert not (world["root"] / "etc" / "pwned").exists()
    assert not (world["root"] / "escape").exists()


def test_hardlink_through_a_symlink_is_refused(world: dict[str, Path]) -> None:
    os.symlink("/etc", world["root"] / "tmp" / "etclink")
    with pytest.raises(HostileArchive, match="goes through a symlink"):
        _put(world, "/tmp", _tar(("hardlink", "h", "etclink/secret")))


def test_read_only_volume_and_rootfs(world: dict[str, Path]) -> None:
    with pytest.raises(VolumeReadOnly, match=r"^mounted volume is marked read-only$"):
        _put(world, "/data", _tar(("file", "x", "x")), ro_volume=True)
    with pytest.raises(RootfsReadOnly, match=r"^container rootfs is marked read-only$"):
        _put(world, "/tmp", _tar(("file", "x", "x")), ro_root=True)
    _put(world, "/data", _tar(("file", "ok", "x")), ro_root=True)  # volumes stay writable
    with pytest.raises(VolumeReadOnly):
        _put(world, "/", _tar(("file", "data/x", "x")), ro_volume=True)


def test_extraction_point_and_overwrite_rules(world: dict[str, Path]) -> None:
    with pytest.raises(NotADirectoryTarget):
        _put(world, "/etc/secret", _tar(("file", "x", "x")))
    with pytest.raises(FileNotFoundError):
        _put(world, "/nope", _tar(("file", "x", "x")))
    tree = _tree(world)
    with pytest.raises(InvalidParameter, match="cannot overwrite directory"):
        extract(tree, "/", io.BytesIO(_tar(("file", "tmp", "x"))), no_overwrite_dir_non_dir=True)
    with pytest.raises(InvalidParameter, match="cannot overwrite non-directory"):
        extract(tree, "/etc", io.BytesIO(_tar(("dir", "secret", ""))), no_overwrite_dir_non_dir=True)
    with pytest.raises(InvalidParameter, match="a volume is mounted there"):
        extract(tree, "/", io.BytesIO(_tar(("file", "data", "x"))))
    extract(tree, "/etc", io.BytesIO(_tar(("file", "secret", "replaced"))))
    assert (world["root"] / "etc" / "secret").read_text() == "replaced"


def test_malformed_tar_is_400(world: dict[str, Path]) -> None:
    with pytest.raises(InvalidParameter, match="invalid tar archive"):
        _put(world, "/tmp", b"x" * 1024)
    _put(world, "/tmp", b"")  # an empty body is an empty archive


# --- changes -----------------------------------------------------------------------------------


def test_changes_against_the_layers(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    for d in ("etc", "tmp", "usr/bin"):
        (lower / d).mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("root")
    upper = tmp_path / "upper"
    (upper / "tmp" / "new").mkdir(parents=True)
    (upper / "tmp" / "new" / "f").write_text("x")
    (upper / "etc").mkdir()
    (upper / "etc" / "passwd").write_text("changed")
    (upper / "etc" / "hostname").write_text("")  # dockerd's init layer: never reported
    (upper / "usr").mkdir()
    os.chmod(upper / "usr", 0o700)
    changes = container_changes(upper, [lower])
    # /etc was copied up unchanged (same mode and owner): only the file is reported, as dockerd.
    assert changes == [
        {"Path": "/etc/passwd", "Kind": MODIFIED},
        {"Path": "/tmp", "Kind": MODIFIED},
        {"Path": "/tmp/new", "Kind": ADDED},
        {"Path": "/tmp/new/f", "Kind": ADDED},
        {"Path": "/usr", "Kind": MODIFIED},
    ]
    assert container_changes(tmp_path / "missing", [lower]) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are 0/0 character devices (mknod needs root)")
def test_changes_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "bin").mkdir(parents=True)
    (lower / "bin" / "ls").write_text("ls")
    (lower / "opt" / "old").mkdir(parents=True)
    upper = tmp_path / "upper"
    (upper / "bin").mkdir(parents=True)
    os.mknod(upper / "bin" / "ls", stat.S_IFCHR, os.makedev(0, 0))
    (upper / "opt").mkdir()
    os.setxattr(upper / "opt", "trusted.overlay.opaque", b"y")
    (upper / "opt" / "fresh").write_text("f")
    changes = {c["Path"]: c["Kind"] for c in container_changes(upper, [lower])}
    assert changes == {"/bin": MODIFIED, "/bin/ls": DELETED, "/opt": DELETED, "/opt/fresh": ADDED}
