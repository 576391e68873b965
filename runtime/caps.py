"""Linux capabilities as Docker handles them: names, the default set, `--cap-add/--cap-drop`.

Names are `CAP_*` in upper case. Users may write them in any case, with or without the `CAP_`
prefix, and `ALL` (moby `caps.NormalizeLegacyCapabilities` / `TweakCapabilities`). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from runtime.errors import InvalidParameter

# Index = capability number (linux/capability.h); the kernel's last one is cap_last_cap.
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBER: dict[str, int] = {name: i for i, name in enumerate(CAPABILITIES)}

# Docker's default set (moby oci/caps/defaults.go); CapEff 0x00000000a80425fb for root.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

ALL = "ALL"


def all_capabilities(last_cap: int = len(CAPABILITIES) - 1) -> list[str]:
    """Every capability the kernel knows (0..cap_last_cap), as `--privileged` grants them."""
    return list(CAPABILITIES[: last_cap + 1])


def normalize(caps: Iterable[str], *, last_cap: int = len(CAPABILITIES) - 1) -> list[str]:
    """`["net_admin", "CAP_SYS_TIME", "all"]` → `["CAP_NET_ADMIN", "CAP_SYS_TIME", "ALL"]`.

    Raises InvalidParameter `unknown capability: "CAP_X"` (callers prefix `invalid CapAdd: `).
    """
    valid = set(all_capabilities(last_cap))
    out: list[str] = []
    for raw in caps:
        cap = raw.upper()
        if cap == ALL:
            out.append(cap)
            continue
        if not cap.startswith("CAP_"):
            cap = "CAP_" + cap
        if cap not in valid:
            raise InvalidParameter(f'unknown capability: "{cap}"')
        out.append(cap)
    return out


def tweak(
    basics: Sequence[str],
    adds: Sequence[str] | None,
    drops: Sequence[str] | None,
    *,
    privileged: bool,
    last_cap: int = len(CAPABILITIES) - 1,
) -> list[str]:
    """The capability set of a container (moby `TweakCapabilities`), without duplicates.

    Privileged gets everything; `--cap-add ALL` everything but the drops; `--cap-drop ALL`
    only the adds; otherwise the basics minus drops plus adds.
    """
    if privileged:
        return all_capabilities(last_cap)
    if not adds and not drops:
        return list(dict.fromkeys(basics))
    cap_add = normalize(adds or (), last_cap=last_cap)
    cap_drop = normalize(drops or (), last_cap=last_cap)
    if ALL in cap_add:
        caps = [c for c in all_capabilities(last_cap) if c not in cap_drop]
    elif ALL in cap_drop:
        caps = [c for c in cap_add if c != ALL]
    else:
        caps = [c for c in basics if c not in cap_drop] + cap_add
    return list(dict.fromkeys(caps))


def capability_mask(caps: Iterable[str]) -> int:
    """The bit mask /proc/<pid>/status shows for a set (`CapEff: 00000000a80425fb`)."""
    mask = 0
    for cap in caps:
        mask |= 1 << CAP_NUMBER[cap]
    return mask


def names_from_mask(mask: int) -> list[str]:
    """The capability names set in a /proc status mask (e.g. the daemon's own `CapBnd`)."""
    return [name for i, name in enumerate(CAPABILITIES) if mask >> i & 1]
