"""Legacy container links (`docker run --link NAME[:ALIAS]`): what the linking container gets.

As dockerd: the link target must exist at create (400 `could not get container for NAME`) and run
at start; the linking container's /etc/hosts names the target (`IP ALIAS ID12 NAME`) and its
environment carries `ALIAS_NAME=/<linking>/<alias>`, the target's `Config.Env` as
`ALIAS_ENV_<VAR>` (but HOME and PATH), and for each exposed port, lowest first,
`ALIAS_PORT=tcp://IP:PORT` and `ALIAS_PORT_<PORT>_<PROTO>[_ADDR|_PORT|_PROTO]`. Those variables go
to the container's processes, not into its `Config.Env` (inspect does not show them); the
container's own `Env` wins over them. The target's address is the one on a network both share.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runtime.errors import InvalidParameter

SKIPPED_ENV = frozenset({"HOME", "PATH"})


@dataclass(frozen=True, slots=True)
class Link:
    name: str  # the target's name or ID, as given
    alias: str

    @classmethod
    def parse(cls, text: str) -> Link:
        name, _, alias = text.partition(":")
        name = name.lstrip("/")
        alias = alias.rsplit("/", 1)[-1] if alias else name  # "/web/db" (inspect's form) → "db"
        if not name or not alias:
            raise InvalidParameter(f"invalid link: {text!r}: expected NAME or NAME:ALIAS")
        return cls(name, alias)


def hosts_entry(ip: str, alias: str, target_id: str, target_name: str) -> tuple[str, str]:
    """The /etc/hosts line dockerd writes for a link: the alias, the short ID, the name."""
    names: list[str] = []
    for name in (alias, target_id[:12], target_name):
        if name not in names:
            names.append(name)
    return ip, " ".join(names)


def _port_key(spec: str) -> tuple[int, str]:
    port, _, proto = spec.partition("/")
    return (int(port) if port.isdigit() else 0, proto or "tcp")


def link_env(
    *, alias: str, linking_name: str, ip: str, target_env: Iterable[str], exposed: Iterable[str]
) -> list[str]:
    prefix = alias.upper().replace("-", "_")
    env: list[str] = []
    ports = sorted(_port_key(p) for p in exposed)
    if ports:
        port, proto = ports[0]
        env.append(f"{prefix}_PORT={proto}://{ip}:{port}")
    for port, proto in ports:
        key = f"{prefix}_PORT_{port}_{proto.upper()}"
        env += [
            f"{key}={proto}://{ip}:{port}",
            f"{key}_ADDR={ip}",
            f"{key}_PORT={port}",
            f"{key}_PROTO={proto}",
        ]
    env.append(f"{prefix}_NAME=/{linking_name.lstrip('/')}/{alias}")
    for item in target_env:
        var, sep, value = item.partition("=")
        if sep and var not in SKIPPED_ENV:
            env.append(f"{prefix}_ENV_{var}={value}")
    return env
