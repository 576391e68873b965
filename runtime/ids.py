"""Identifiers and names: generation, validation, prefix resolution.

IDs and names pass through here before they become path components or index keys.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import NewType

from runtime.errors import InvalidParameter

ContainerId = NewType("ContainerId", str)
ImageId = NewType("ImageId", str)  # "sha256:<64 hex>"

HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX_PREFIX = re.compile(r"^[0-9a-f]{1,64}$")
NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def new_id() -> str:
    """A random 64-hex ID, as Docker makes for containers, execs, networks and volumes."""
    while True:
        candidate = secrets.token_hex(32)
        # Docker avoids all-digit short IDs, which look like numbers to shells and parsers.
        if not candidate[:12].isdigit():
            return candidate


def is_full_id(value: str) -> bool:
    return HEX64.match(value) is not None


def check_container_name(name: str) -> str:
    """Validate a container name (an optional leading "/" is dropped) and return it bare."""
    bare = name[1:] if name.startswith("/") else name
    if not NAME.match(bare):
        raise InvalidParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return bare


def check_object_name(name: str, what: str) -> str:
    """Validate a volume or network name."""
    if not NAME.match(name):
        raise InvalidParameter(
            f'"{name}" includes invalid characters for a local {what} name, '
            'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path"
            if what == "volume"
            else f"invalid name {name!r} for {what}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return name


def check_hex_id(value: str) -> str:
    """Validate a full 64-hex ID before it becomes a path component."""
    if not is_full_id(value):
        raise InvalidParameter(f"invalid ID: {value!r}")
    return value


def match_prefix(ref: str, ids: Iterable[str]) -> list[str]:
    """IDs that start with `ref` (a hex prefix); empty when `ref` is not hex."""
    if not HEX_PREFIX.match(ref):
        return []
    return [i for i in ids if i.startswith(ref)]


def short_id(full: str) -> str:
    """The 12-character form Docker prints; accepts a "sha256:" prefix."""
    return full.removeprefix("sha256:")[:12]
