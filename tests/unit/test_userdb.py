"""User resolution against a container's /etc files, and reading them without escaping the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.errors import InvalidParameter
from runtime.inroot import open_in_root, read_in_root
from runtime.userdb import ProcessUser, parse_group, parse_passwd, resolve_user, resolve_user_in

PASSWD = parse_passwd(
    "root:x:0:0:root:/root:/bin/sh\n"
    "# comment\n"
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    "app:x:1000:1000:App:/home/app:/bin/sh\n"
    "broken line\n"
)
GROUPS = parse_group("root:x:0:\nwheel:x:10:app,other\nstaff:x:50:app\napp:x:1000:\ndocker:x:999:\n")


@pytest.mark.parametrize(
    ("spec", "group_add", "expected"),
    [
        ("", (), ProcessUser(0, 0, (), "/root")),
        ("root", (), ProcessUser(0, 0, (), "/root")),
        ("app", (), ProcessUser(1000, 1000, (10, 50), "/home/app")),
        ("1000", (), ProcessUser(1000, 1000, (10, 50), "/home/app")),
        ("app:staff", (), ProcessUser(1000, 50, (), "/home/app")),
        ("app:999", (), ProcessUser(1000, 999, (), "/home/app")),
        ("4242", (), ProcessUser(4242, 0, (), "/")),
        ("4242:4343", (), ProcessUser(4242, 4343, (), "/")),
        ("app", ("docker", "77"), ProcessUser(1000, 1000, (10, 50, 999, 77), "/home/app")),
    ],
)
def test_resolve(spec: str, group_add: tuple[str, ...], expected: ProcessUser) -> None:
    assert resolve_user_in(spec, PASSWD, GROUPS, group_add) == expected


def test_resolve_errors() -> None:
    with pytest.raises(
        InvalidParameter, match="unable to find user nobody: no matching entries in passwd file"
    ):
        resolve_user_in("nobody", PASSWD, GROUPS)
    with pytest.raises(
        InvalidParameter, match="unable to find group nogroup: no matching entries in group file"
    ):
        resolve_user_in("app:nogroup", PASSWD, GROUPS)
    with pytest.raises(InvalidParameter, match="Unable to find group ghosts"):
        resolve_user_in("app", PASSWD, GROUPS, ["ghosts"])
    with pytest.raises(InvalidParameter, match="uids and gids must be in range"):
        resolve_user_in("99999999999", PASSWD, GROUPS)


def test_resolve_from_rootfs_without_files(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, "") == ProcessUser(0, 0)
    assert resolve_user(tmp_path, "1000:1000") == ProcessUser(1000, 1000)
    with pytest.raises(InvalidParameter):
        resolve_user(tmp_path, "app")


def test_symlinked_passwd_stays_inside_the_root(tmp_path: Path) -> None:
    host = tmp_path / "host"
    root = tmp_path / "root"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "passwd").write_text("evil:x:0:0::/:/bin/sh\n")
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    (root / "real" / "passwd").write_text("app:x:1000:1000::/home/app:/bin/sh\n")
    # Absolute and relative links that would leave the root if followed on the host.
    os.symlink(str(host / "etc" / "passwd"), root / "etc" / "passwd")
    with pytest.raises(InvalidParameter):
        resolve_user(root, "evil")  # resolves to <root>/<host path>/etc/passwd: missing → no user
    os.unlink(root / "etc" / "passwd")
    os.symlink("../../../../../../../real/passwd", root / "etc" / "passwd")
    assert resolve_user(root, "app").uid == 1000  # ".." is clamped at the root
    os.unlink(root / "etc" / "passwd")
    os.symlink("/real/passwd", root / "etc" / "passwd")
    assert resolve_user(root, "app").uid == 1000
    os.symlink("/etc", root / "etc2")
    assert read_in_root(root, "/etc2/passwd").startswith(b"app:")


def test_open_in_root_errors(tmp_path: Path) -> None:
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(OSError, match="Too many levels"):
        open_in_root(tmp_path, "/loop")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        open_in_root(tmp_path, "/file/x")
    with pytest.raises(FileNotFoundError):
        open_in_root(tmp_path, "/missing")
    fd = open_in_root(tmp_path, "/")
    try:
        assert os.fstat(fd).st_ino == os.stat(tmp_path).st_ino
    finally:
        os.close(fd)
