"""`HostConfig.SecurityOpt` parsed the way dockerd reads it (moby `parseSecurityOpt`).

Accepted: `no-new-privileges[=bool]`, `seccomp=unconfined|builtin|<profile JSON>`,
`apparmor=<profile>` (recorded; pydock loads no AppArmor profiles), `label=...` / `label:...`
(recorded, no SELinux), `systempaths=unconfined` (no masked / read-only /proc paths),
`writable-cgroups=<bool>`. Anything else is Docker's `invalid --security-opt` error. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from runtime.errors import InvalidParameter

_TRUE = {"1", "t", "true", "TRUE", "True", "T"}
_FALSE = {"0", "f", "false", "FALSE", "False", "F"}


@dataclass(frozen=True, slots=True)
class SecurityOptions:
    no_new_privileges: bool = False
    seccomp: str | None = None  # None = default profile; "unconfined"; or profile JSON
    apparmor: str | None = None
    labels: tuple[str, ...] = field(default=())
    unconfined_systempaths: bool = False
    writable_cgroups: bool = False


def _bool(raw: str, opt: str) -> bool:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InvalidParameter(f'invalid --security-opt 2: "{opt}"')


def parse_security_opts(
    opts: Iterable[str] | None, *, default_no_new_privileges: bool = False
) -> SecurityOptions:
    no_new_privs = default_no_new_privileges
    seccomp: str | None = None
    apparmor: str | None = None
    labels: list[str] = []
    systempaths = False
    writable_cgroups = False
    for opt in opts or ():
        if opt == "no-new-privileges":
            no_new_privs = True
            continue
        if opt == "disable":
            labels.append("disable")
            continue
        if "=" in opt:
            key, _, value = opt.partition("=")
        elif ":" in opt:
            key, _, value = opt.partition(":")  # deprecated separator, still accepted
        else:
            raise InvalidParameter(f'invalid --security-opt 1: "{opt}"')
        if key == "label":
            labels.append(value)
        elif key == "apparmor":
            apparmor = value
        elif key == "seccomp":
            seccomp = value
        elif key == "no-new-privileges":
            no_new_privs = _bool(value, opt)
        elif key == "systempaths":
            if value != "unconfined":
                raise InvalidParameter(f'invalid --security-opt 2: "{opt}"')
            systempaths = True
        elif key == "writable-cgroups":
            writable_cgroups = _bool(value, opt)
        else:
            raise InvalidParameter(f'invalid --security-opt 2: "{opt}"')
    return SecurityOptions(
        no_new_privileges=no_new_privs,
        seccomp=seccomp,
        apparmor=apparmor,
        labels=tuple(labels),
        unconfined_systempaths=systempaths,
        writable_cgroups=writable_cgroups,
    )
