"""The default seccomp profile and the profile → OCI conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.caps import DEFAULT_CAPABILITIES
from runtime.errors import InvalidParameter
from runtime.ocispec import Seccomp
from runtime.seccomp import build_seccomp, default_profile, parse_profile, seccomp_for

GOLDEN = Path(__file__).parent / "golden" / "spec" / "seccomp_default_amd64.json"
KERNEL = (6, 1)

# Calls a default container must never make (Docker blocks them too, see issue 8).
BLOCKED = [
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "mount",
    "umount2",
    "pivot_root",
    "reboot",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "unshare",
    "setns",
    "open_by_handle_at",
    "userfaultfd",
    "acct",
    "swapon",
    "swapoff",
    "settimeofday",
    "clock_settime",
    "io_uring_setup",
    "process_vm_readv",
    "iopl",
    "syslog",
]


def allowed(seccomp: Seccomp) -> dict[str, list[object]]:
    """name → the arg conditions of each ALLOW rule naming it ([] = unconditional)."""
    out: dict[str, list[object]] = {}
    for rule in seccomp.syscalls or []:
        if rule.action != "SCMP_ACT_ALLOW":
            continue
        for name in rule.names:
            out.setdefault(name, []).append([a.to_json() for a in rule.args or []])
    return out


def default(
    caps: tuple[str, ...] = DEFAULT_CAPABILITIES, machine: str = "x86_64", kernel: tuple[int, int] = KERNEL
):
    return build_seccomp(default_profile(), caps=caps, machine=machine, kernel=kernel)


def test_default_action_is_eperm_and_arches() -> None:
    s = default()
    assert s.default_action == "SCMP_ACT_ERRNO" and s.default_errno_ret == 1
    assert s.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert default(machine="aarch64").architectures == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


def test_dangerous_calls_are_blocked_by_default() -> None:
    names = allowed(default())
    for name in BLOCKED:
        assert name not in names, name
    for name in ("read", "write", "execve", "futex", "epoll_wait", "chroot", "socketpair", "statx"):
        assert names[name] == [[]], name


def test_conditional_rules() -> None:
    names = allowed(default())
    # socket: every family but AF_VSOCK.
    assert names["socket"] == [[{"index": 0, "value": 40, "valueTwo": 0, "op": "SCMP_CMP_NE"}]]
    # personality: only the harmless personas.
    values = sorted(cond[0]["value"] for cond in names["personality"])  # type: ignore[index]
    assert values == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    # clone: only without namespace flags.
    assert names["clone"] == [[{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]]
    clone3 = [r for r in default().syscalls or [] if "clone3" in r.names]
    assert len(clone3) == 1 and clone3[0].action == "SCMP_ACT_ERRNO" and clone3[0].errno_ret == 38


def test_capabilities_unlock_their_calls() -> None:
    admin = allowed(default((*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN")))
    for name in ("mount", "umount2", "pivot_root", "unshare", "setns", "bpf", "clone3"):
        assert [] in admin[name], name
    assert [] in admin["clone"]  # unrestricted clone
    assert "init_module" not in admin and "kexec_load" not in admin
    assert [] in allowed(default((*DEFAULT_CAPABILITIES, "CAP_SYS_MODULE")))["finit_module"]
    assert [] in allowed(default((*DEFAULT_CAPABILITIES, "CAP_SYS_TIME")))["clock_settime"]
    assert "chroot" not in allowed(default(("CAP_CHOWN",)))


def test_ptrace_depends_on_kernel_or_capability() -> None:
    assert "ptrace" in allowed(default(kernel=(4, 8)))
    assert "ptrace" not in allowed(default(kernel=(4, 4)))
    assert "ptrace" in allowed(default((*DEFAULT_CAPABILITIES, "CAP_SYS_PTRACE"), kernel=(4, 4)))


def test_arch_specific_rules() -> None:
    amd64 = allowed(default())
    assert "arch_prctl" in amd64 and "set_tls" not in amd64
    arm64 = allowed(default(machine="aarch64"))
    assert "set_tls" in arm64 and "arch_prctl" not in arm64


def test_unconfined_builtin_and_cache() -> None:
    caps = list(DEFAULT_CAPABILITIES)
    assert seccomp_for("unconfined", caps=caps, machine="x86_64", kernel=KERNEL) is None
    first = seccomp_for(None, caps=caps, machine="x86_64", kernel=KERNEL)
    assert first is seccomp_for("builtin", caps=list(reversed(caps)), machine="x86_64", kernel=KERNEL)


def test_custom_profile_in_docker_format() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_CHOWN"]}},
        ],
    }
    s = seccomp_for(json.dumps(profile), caps=["CAP_CHOWN"], machine="x86_64", kernel=KERNEL)
    assert s is not None and s.default_action == "SCMP_ACT_ALLOW"
    assert [(r.names, r.errno_ret) for r in s.syscalls or []] == [(["chmod"], 13)]
    assert s.architectures == ["SCMP_ARCH_X86_64"]


def test_bad_profile_is_a_400() -> None:
    with pytest.raises(InvalidParameter, match="Decoding seccomp profile failed"):
        parse_profile("{not json")
    with pytest.raises(InvalidParameter, match="Decoding seccomp profile failed"):
        parse_profile('{"syscalls": []}')


def test_profile_file_is_well_formed() -> None:
    profile = default_profile()
    base = profile.syscalls[0].names
    assert len(base) == len(set(base)) > 300
    for rule in profile.syscalls:
        assert rule.action in ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO")
        assert all(name == name.strip() and name for name in rule.names)


def test_golden_default_amd64(update_golden: bool) -> None:
    data = default().to_json()
    text = json.dumps(data, indent=1) + "\n"
    if update_golden or not GOLDEN.exists():
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
        if not update_golden:
            pytest.fail(f"golden file {GOLDEN} was missing and has been written; re-run")
    assert json.loads(GOLDEN.read_text()) == data
