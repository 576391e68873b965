"""Container confinement checked from inside containers started with the docker CLI (issue 8).

Default containers: Docker's default capabilities only (CapEff 00000000a80425fb), seccomp
filtering (`Seccomp: 2`), masked paths unreadable, /proc/sys read-only, no access to the host's
devices (a node made with mknod cannot be opened), no mounts. `--security-opt no-new-privileges`
sets NoNewPrivs; `--privileged` lifts exactly these (every capability pydockd holds, no seccomp,
paths unmasked, /proc/sys writable, the host's devices) and keeps the namespaces; `--cap-add`,
`--cap-drop`, `seccomp=unconfined` and `systempaths=unconfined` lift one thing each. Execs get the
container's confinement. The counts (checks, escapes found) are printed in the test summary.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.caps import DEFAULT_CAPABILITIES, capability_mask
from tests.fuzzstats import count
from tests.integration.daemon import Daemon

SUITE = "confinement (docker CLI, inside containers)"
DEFAULT_CAPEFF = "00000000a80425fb"
MASKED_FILES = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                "/proc/latency_stats", "/proc/timer_stats")  # fmt: skip
MASKED_DIRS = ("/sys/firmware", "/proc/acpi", "/proc/scsi", "/proc/asound", "/sys/devices/virtual/powercap")
ALLOWED_DEV = {"console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
               "stdin", "stdout", "tty", "urandom", "zero"}  # fmt: skip
HOST_DISK = "/dev/loop0"  # a host block device, made inside with mknod

PROBE = r"""
grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\t' | sed 's/:/=/'
for p in FILES; do [ -e "$p" ] && echo "file:$p=$(head -c 64 "$p" 2>/dev/null | wc -c)"; done
for d in DIRS; do [ -d "$d" ] && echo "dir:$d=$(ls -A "$d" 2>/dev/null | wc -l)"; done
(echo 0 > /proc/sys/net/ipv4/ip_forward) 2>/dev/null && echo procsys=rw || echo procsys=ro
mknod /tmp/hostdisk b MAJOR MINOR 2>/dev/null
(head -c 1 /tmp/hostdisk > /dev/null) 2>/dev/null && echo hostdev=open || echo hostdev=denied
echo "devs=$(ls /dev | tr '\n' ' ')"
mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null && echo mount=ok || echo mount=denied
echo "pidns=$(readlink /proc/self/ns/pid)"
echo "netns=$(readlink /proc/self/ns/net)"
"""


def probe_script() -> str:
    st = os.stat(HOST_DISK)
    return (
        PROBE.replace("FILES", " ".join(MASKED_FILES))
        .replace("DIRS", " ".join(MASKED_DIRS))
        .replace("MAJOR", str(os.major(st.st_rdev)))
        .replace("MINOR", str(os.minor(st.st_rdev)))
    )


def parse(out: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key] = value.strip()
    return facts


def host_capbnd() -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return line.split()[1]
    raise AssertionError("no CapBnd")


def host_nonempty(path: str) -> bool:
    p = Path(path)
    try:
        return any(p.iterdir()) if p.is_dir() else bool(p.read_bytes()[:1])
    except OSError:
        return False


class Checks:
    """Records each expectation; failures are reported together at the end of a test."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failed: list[str] = []
        self.n = 0

    def expect(self, label: str, ok: bool, detail: object = "") -> None:
        self.n += 1
        if not ok:
            self.failed.append(f"{self.what}: {label} {detail}")

    def done(self, *, confining: bool = True) -> None:
        count(SUITE, "checks", self.n)
        count(SUITE, "escapes found" if confining else "failures found", len(self.failed))
        assert not self.failed, "\n".join(self.failed)


@pytest.fixture(scope="module")
def host() -> dict[str, str]:
    if not Path(HOST_DISK).exists():
        pytest.skip(f"{HOST_DISK} is missing on this host")
    return {
        "pidns": os.readlink("/proc/self/ns/pid"),
        "netns": os.readlink("/proc/self/ns/net"),
        "capbnd": host_capbnd(),
    }


def inside(daemon: Daemon, *args: str) -> dict[str, str]:
    return parse(daemon.docker("run", "--rm", *args, "busybox", "sh", "-c", probe_script()).stdout.decode())


def confined(c: Checks, facts: dict[str, str], host: dict[str, str], *, caps: str = DEFAULT_CAPEFF) -> None:
    """Every default confinement holds (what --privileged must lift)."""
    c.expect("CapEff", facts.get("CapEff") == caps, facts.get("CapEff"))
    c.expect("CapBnd", facts.get("CapBnd") == caps, facts.get("CapBnd"))
    c.expect("Seccomp", facts.get("Seccomp") == "2", facts.get("Seccomp"))
    for path in MASKED_FILES:
        if f"file:{path}" in facts:
            c.expect(f"masked {path}", facts[f"file:{path}"] == "0", facts[f"file:{path}"])
    for path in MASKED_DIRS:
        if f"dir:{path}" in facts:
            c.expect(f"masked {path}", facts[f"dir:{path}"] == "0", facts[f"dir:{path}"])
    c.expect("/proc/sys read-only", facts.get("procsys") == "ro", facts.get("procsys"))
    c.expect("host device denied", facts.get("hostdev") == "denied", facts.get("hostdev"))
    extra = set(facts.get("devs", "").split()) - ALLOWED_DEV
    c.expect("no host devices in /dev", not extra, extra)
    c.expect("mount denied", facts.get("mount") == "denied", facts.get("mount"))
    namespaced(c, facts, host)


def namespaced(c: Checks, facts: dict[str, str], host: dict[str, str]) -> None:
    c.expect("own pid namespace", facts.get("pidns") not in ("", host["pidns"]), facts.get("pidns"))
    c.expect("own net namespace", facts.get("netns") not in ("", host["netns"]), facts.get("netns"))


def test_default_container_is_confined(daemon: Daemon, host: dict[str, str]) -> None:
    c = Checks("default")
    facts = inside(daemon)
    confined(c, facts, host)
    c.expect("NoNewPrivs off by default", facts.get("NoNewPrivs") == "0", facts.get("NoNewPrivs"))
    assert capability_mask(DEFAULT_CAPABILITIES) == int(DEFAULT_CAPEFF, 16)
    c.done()


def test_no_new_privileges(daemon: Daemon, host: dict[str, str]) -> None:
    c = Checks("no-new-privileges")
    facts = inside(daemon, "--security-opt", "no-new-privileges")
    c.expect("NoNewPrivs", facts.get("NoNewPrivs") == "1", facts.get("NoNewPrivs"))
    confined(c, facts, host)
    c.done()


def test_privileged_lifts_exactly_the_confinement(daemon: Daemon, host: dict[str, str]) -> None:
    c = Checks("privileged")
    facts = inside(daemon, "--privileged")
    c.expect("CapEff = the daemon's bounding set", facts.get("CapEff") == host["capbnd"], facts.get("CapEff"))
    c.expect("no seccomp", facts.get("Seccomp") == "0", facts.get("Seccomp"))
    for path in MASKED_FILES:
        if f"file:{path}" in facts and host_nonempty(path):
            c.expect(f"unmasked {path}", facts[f"file:{path}"] != "0", facts[f"file:{path}"])
    for path in MASKED_DIRS:
        if f"dir:{path}" in facts and host_nonempty(path):
            c.expect(f"unmasked {path}", facts[f"dir:{path}"] != "0", facts[f"dir:{path}"])
    c.expect("/proc/sys writable", facts.get("procsys") == "rw", facts.get("procsys"))
    c.expect("host device opens", facts.get("hostdev") == "open", facts.get("hostdev"))
    c.expect("host devices in /dev", Path(HOST_DISK).name in facts.get("devs", "").split())
    c.expect("mount allowed", facts.get("mount") == "ok", facts.get("mount"))
    c.expect("NoNewPrivs untouched", facts.get("NoNewPrivs") == "0", facts.get("NoNewPrivs"))
    namespaced(c, facts, host)  # privileged keeps its namespaces
    c.done(confining=False)


@pytest.mark.parametrize(
    ("args", "caps"),
    [
        (["--cap-drop", "ALL"], "0000000000000000"),
        (["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"], f"{1 << 12:016x}"),
        (["--cap-add", "SYS_ADMIN"], f"{int(DEFAULT_CAPEFF, 16) | 1 << 21:016x}"),
        (
            ["--cap-drop", "chown", "--cap-drop", "CAP_KILL"],
            f"{int(DEFAULT_CAPEFF, 16) & ~1 & ~(1 << 5):016x}",
        ),
    ],
)
def test_cap_add_and_drop(daemon: Daemon, host: dict[str, str], args: list[str], caps: str) -> None:
    c = Checks(" ".join(args))
    facts = inside(daemon, *args)
    c.expect("CapEff", facts.get("CapEff") == caps, facts.get("CapEff"))
    c.expect("Seccomp", facts.get("Seccomp") == "2", facts.get("Seccomp"))
    c.expect("/proc/sys read-only", facts.get("procsys") == "ro", facts.get("procsys"))
    c.expect("host device denied", facts.get("hostdev") == "denied", facts.get("hostdev"))
    if "SYS_ADMIN" not in args:
        c.expect("mount denied", facts.get("mount") == "denied", facts.get("mount"))
    c.done()


def test_seccomp_and_systempaths_unconfined(daemon: Daemon, host: dict[str, str]) -> None:
    c = Checks("seccomp=unconfined")
    facts = inside(daemon, "--security-opt", "seccomp=unconfined")
    c.expect("no seccomp", facts.get("Seccomp") == "0", facts.get("Seccomp"))
    c.expect("CapEff", facts.get("CapEff") == DEFAULT_CAPEFF, facts.get("CapEff"))
    c.expect("/proc/sys read-only", facts.get("procsys") == "ro", facts.get("procsys"))
    c.expect("host device denied", facts.get("hostdev") == "denied", facts.get("hostdev"))
    c.done()
    c = Checks("systempaths=unconfined")
    facts = inside(daemon, "--security-opt", "systempaths=unconfined")
    c.expect("Seccomp", facts.get("Seccomp") == "2", facts.get("Seccomp"))
    c.expect("CapEff", facts.get("CapEff") == DEFAULT_CAPEFF, facts.get("CapEff"))
    for path in MASKED_DIRS:
        if f"dir:{path}" in facts and host_nonempty(path):
            c.expect(f"unmasked {path}", facts[f"dir:{path}"] != "0", facts[f"dir:{path}"])
    c.expect("host device denied", facts.get("hostdev") == "denied", facts.get("hostdev"))
    c.done()


@pytest.fixture
def running(daemon: Daemon) -> Iterator[str]:
    name = f"conf-{secrets.token_hex(4)}"
    daemon.docker("run", "-d", "--name", name, "busybox", "sleep", "1000")
    yield name
    daemon.docker("rm", "-f", name, check=False)


def test_exec_gets_the_containers_confinement(daemon: Daemon, host: dict[str, str], running: str) -> None:
    c = Checks("exec")
    facts = parse(daemon.docker("exec", running, "sh", "-c", probe_script()).stdout.decode())
    confined(c, facts, host)
    c.done()
