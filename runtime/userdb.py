"""Resolving `--user` and `--group-add` against a container's own /etc/passwd and /etc/group.

Semantics are libcontainer's `user.GetExecUser` as dockerd uses it: `name|uid[:group|gid]`;
a numeric uid/gid need not exist in the files; a name must; without an explicit group the
user's primary group comes from passwd and the supplementary groups from group membership;
`GroupAdd` entries (names or numbers) are added after those.

`parse_passwd` / `parse_group` / `resolve_user_in` are pure; `resolve_user` reads the two files
from the rootfs through `runtime.inroot` so a symlinked /etc/passwd cannot read the host's.
Blocking file I/O: call `resolve_user` from a thread in async code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import InvalidParameter
from runtime.inroot import read_in_root

MAX_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True, slots=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProcessUser:
    """The resolved identity of a container process (OCI `process.user`)."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    home: str = "/"
    name: str = field(default="", compare=False)


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def parse_passwd(text: str) -> list[PasswdEntry]:
    out: list[PasswdEntry] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 4:
            continue
        uid, gid = _int(parts[2]), _int(parts[3])
        if uid is None or gid is None:
            continue
        out.append(PasswdEntry(parts[0], uid, gid, parts[5] if len(parts) > 5 else ""))
    return out


def parse_group(text: str) -> list[GroupEntry]:
    out: list[GroupEntry] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 3:
            continue
        gid = _int(parts[2])
        if gid is None:
            continue
        members = tuple(m for m in parts[3].split(",") if m) if len(parts) > 3 else ()
        out.append(GroupEntry(parts[0], gid, members))
    return out


def _check_range(value: int) -> int:
    if value < 0 or value > MAX_ID:
        raise InvalidParameter("uids and gids must be in range 0-2147483647")
    return value


def resolve_user_in(
    spec: str,
    passwd: Sequence[PasswdEntry],
    groups: Sequence[GroupEntry],
    group_add: Sequence[str] = (),
) -> ProcessUser:
    """Resolve `spec` (e.g. "", "nobody", "1000:1000", "app:staff") against parsed files.

    Raises InvalidParameter with libcontainer's wording when a name is unknown.
    """
    user_part, _, group_part = spec.partition(":")
    uid, gid, home, name = 0, 0, "/", "root"
    entry: PasswdEntry | None = None
    if user_part:
        numeric = _int(user_part)
        for candidate in passwd:
            if (numeric is not None and candidate.uid == numeric) or (
                numeric is None and candidate.name == user_part
            ):
                entry = candidate
                break
        if entry is None:
            if numeric is None:
                raise InvalidParameter(f"unable to find user {user_part}: no matching entries in passwd file")
            uid, name = _check_range(numeric), ""
        else:
            uid, gid, home, name = entry.uid, entry.gid, entry.home or "/", entry.name
    else:
        root = next((p for p in passwd if p.uid == 0), None)
        if root is not None:
            gid, home, name = root.gid, root.home or "/", root.name
        entry = root

    supplementary: list[int] = []
    if group_part:
        numeric_gid = _int(group_part)
        match = next(
            (
                g
                for g in groups
                if (numeric_gid is not None and g.gid == numeric_gid)
                or (numeric_gid is None and g.name == group_part)
            ),
            None,
        )
        if match is None:
            if numeric_gid is None:
                raise InvalidParameter(
                    f"unable to find group {group_part}: no matching entries in group file"
                )
            gid = _check_range(numeric_gid)
        else:
            gid = match.gid
    elif entry is not None:
        supplementary = [g.gid for g in groups if entry.name in g.members]

    for wanted in group_add:
        numeric_gid = _int(wanted)
        match = next((g for g in groups if g.name == wanted or g.gid == numeric_gid), None)
        if match is not None:
            supplementary.append(match.gid)
        elif numeric_gid is not None:
            supplementary.append(_check_range(numeric_gid))
        else:
            raise InvalidParameter(f"Unable to find group {wanted}")
    return ProcessUser(uid, gid, tuple(dict.fromkeys(supplementary)), home, name)


def _read_optional(rootfs: Path, path: str) -> str:
    try:
        return read_in_root(rootfs, path, limit=4 * 1024 * 1024).decode(errors="replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise InvalidParameter(f"unable to read {path} in container: {exc.strerror}") from exc


def resolve_user(rootfs: Path, spec: str, group_add: Sequence[str] = ()) -> ProcessUser:
    """Resolve `spec` against the files of the container rootfs (which may lack them)."""
    passwd = parse_passwd(_read_optional(rootfs, "/etc/passwd"))
    groups = parse_group(_read_optional(rootfs, "/etc/group"))
    return resolve_user_in(spec, passwd, groups, group_add)
