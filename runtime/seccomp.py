"""Seccomp: pydock's default profile and user profiles, turned into the OCI `linux.seccomp`.

Profiles use Docker's profile format (so `--security-opt seccomp=profile.json` files written for
Docker work): `defaultAction`, `defaultErrnoRet`, `archMap` (or a plain `architectures` list),
and `syscalls` entries whose `includes` / `excludes` select them by the container's capabilities,
the host architecture (Go names: amd64, arm64, ...) and the kernel version (`minKernel`).
`build_seccomp` resolves those conditions for one container; the OCI result has none left.

The default profile (`seccomp_default.json`, ours) is parsed once; its per-container result is
cached by (capabilities, architecture, kernel), so starting a container costs a dict lookup.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from runtime.errors import InvalidParameter
from runtime.ocispec import Seccomp, SeccompArg, SeccompSyscall

# uname -m → Go's GOARCH, which profiles use in includes/excludes.arches.
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}
# Native libseccomp architecture per uname -m, used to pick the archMap entry.
NATIVE_SCMP_ARCH = {
    "x86_64": "SCMP_ARCH_X86_64",
    "aarch64": "SCMP_ARCH_AARCH64",
    "armv7l": "SCMP_ARCH_ARM",
    "i686": "SCMP_ARCH_X86",
}


class _Model(BaseModel):
    # Profiles are camelCase JSON; Python names are snake_case.
    model_config = ConfigDict(extra="ignore", frozen=True, alias_generator=to_camel, populate_by_name=True)


class ProfileArg(_Model):
    index: int
    value: int
    value_two: int = 0
    op: str


class ProfileFilter(_Model):
    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_kernel: str = ""


class ProfileSyscall(_Model):
    name: str = ""  # legacy single-name form
    names: tuple[str, ...] = ()
    action: str
    errno_ret: int | None = None
    args: tuple[ProfileArg, ...] | None = None
    includes: ProfileFilter = Field(default_factory=ProfileFilter)
    excludes: ProfileFilter = Field(default_factory=ProfileFilter)


class ProfileArch(_Model):
    architecture: str
    sub_architectures: tuple[str, ...] = ()


class Profile(_Model):
    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    arch_map: tuple[ProfileArch, ...] = ()
    flags: tuple[str, ...] = ()
    syscalls: tuple[ProfileSyscall, ...] = ()


def parse_profile(text: str | bytes) -> Profile:
    """Parse a Docker-format profile; InvalidParameter with Docker's prefix when it is bad."""
    try:
        return Profile.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise InvalidParameter(f"Decoding seccomp profile failed: {detail}") from exc


@functools.cache
def default_profile() -> Profile:
    """pydock's default profile, parsed once per process."""
    text = resources.files("runtime").joinpath("seccomp_default.json").read_bytes()
    return parse_profile(text)


def _kernel_at_least(kernel: tuple[int, int], wanted: str) -> bool:
    major, _, rest = wanted.partition(".")
    minor = rest.partition(".")[0] or "0"
    try:
        return kernel >= (int(major), int(minor))
    except ValueError as exc:
        raise InvalidParameter(f"invalid minKernel {wanted!r} in seccomp profile") from exc


def _selected(rule: ProfileSyscall, caps: Collection[str], goarch: str, kernel: tuple[int, int]) -> bool:
    inc, exc = rule.includes, rule.excludes
    if inc.arches and goarch not in inc.arches:
        return False
    if inc.caps and not all(c in caps for c in inc.caps):
        return False
    if inc.min_kernel and not _kernel_at_least(kernel, inc.min_kernel):
        return False
    if exc.arches and goarch in exc.arches:
        return False
    return not (exc.caps and any(c in caps for c in exc.caps))


def _architectures(profile: Profile, machine: str) -> list[str]:
    if profile.architectures:
        return list(profile.architectures)
    native = NATIVE_SCMP_ARCH.get(machine)
    for entry in profile.arch_map:
        if entry.architecture == native:
            return [entry.architecture, *entry.sub_architectures]
    return [native] if native else []


def build_seccomp(
    profile: Profile, *, caps: Collection[str], machine: str, kernel: tuple[int, int]
) -> Seccomp:
    """The OCI seccomp section of `profile` for a container with `caps` on this host.

    `machine` is `uname -m`, `kernel` the (major, minor) of the running kernel.
    """
    goarch = GOARCH.get(machine, machine)
    syscalls: list[SeccompSyscall] = []
    for rule in profile.syscalls:
        if not _selected(rule, caps, goarch, kernel):
            continue
        names = list(rule.names) or ([rule.name] if rule.name else [])
        if not names:
            continue
        args = (
            [SeccompArg(index=a.index, value=a.value, value_two=a.value_two, op=a.op) for a in rule.args]
            if rule.args
            else None
        )
        syscalls.append(SeccompSyscall(names=names, action=rule.action, errno_ret=rule.errno_ret, args=args))
    return Seccomp(
        default_action=profile.default_action,
        default_errno_ret=profile.default_errno_ret,
        architectures=_architectures(profile, machine) or None,
        flags=list(profile.flags) or None,
        syscalls=syscalls,
    )


@functools.lru_cache(maxsize=64)
def _default_for(caps: frozenset[str], machine: str, kernel: tuple[int, int]) -> Seccomp:
    return build_seccomp(default_profile(), caps=caps, machine=machine, kernel=kernel)


def seccomp_for(
    setting: str | None, *, caps: Collection[str], machine: str, kernel: tuple[int, int]
) -> Seccomp | None:
    """The seccomp section for a container's `seccomp=` security option.

    None or "builtin": the default profile; "unconfined": no filter (None); anything else is
    the JSON text of a profile, as the CLI sends `--security-opt seccomp=file.json`.
    The result is shared when cached: callers must not modify it.
    """
    if setting is None or setting in ("", "builtin"):
        return _default_for(frozenset(caps), machine, kernel)
    if setting == "unconfined":
        return None
    return build_seccomp(parse_profile(setting), caps=caps, machine=machine, kernel=kernel)
