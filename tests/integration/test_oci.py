"""Real containers from specs built by `runtime.spec`, run by the real runc through `runtime.oci`.

The rootfs is made by hand from /bin/busybox. The test process makes itself child subreaper
(as pydockd does) so container inits become its children once `runc create` returns, and waits
for them through pidfds. Every test removes its containers and cgroups; the module checks that
no host mount and no cgroup is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from app.models.containers import ContainerCreateRequest
from app.models.hostconfig import DeviceMapping, HostConfig
from runtime.caps import capability_mask, names_from_mask
from runtime.cgroups import CgroupLayout, CgroupMode, CgroupReader, container_cgroup_path, remove_cgroup
from runtime.config import RuntimeSpec
from runtime.console import receive_console_master
from runtime.devices import lookup_devices
from runtime.errors import OciRuntimeError
from runtime.hostfacts import HostFacts
from runtime.oci import RuncRuntime, Stdio, runtime_usable
from runtime.ocispec import Memory, Pids, Process, Resources
from runtime.spec import SpecInputs, build_spec, merge_image_config
from runtime.userdb import resolve_user
from runtime.validation import adapt_host_config

pytestmark = pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")

TINI = Path("/usr/bin/tini-static")
PR_SET_CHILD_SUBREAPER = 36


def _mounts_under(base: Path) -> list[str]:
    """Host mount points below `base` (other test runs mount things elsewhere meanwhile)."""
    points = [line.split(" ")[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted(p for p in points if p.startswith(str(base)))


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    base = Path("/tmp") / f"pdt-oci-{os.getpid()}-{os.urandom(3).hex()}"
    rootfs = base / "rootfs"
    for sub in ("bin", "etc", "proc", "sys", "dev", "tmp", "mnt", "sbin"):
        (rootfs / sub).mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], check=True, capture_output=True, text=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nstaff:x:50:app\napp:x:1000:\n")
    (base / "hostname").write_text("pydock-oci\n")
    (base / "hosts").write_text("127.0.0.1\tlocalhost\n10.9.8.7\tpydock-oci\n")
    (base / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    try:
        yield base
        assert _mounts_under(base) == [], "a host mount leaked"
    finally:
        shutil.rmtree(base, ignore_errors=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


async def wait_exit(pid: int, timeout_s: float = 30.0) -> int:
    """Reap a child (container init or exec) through a pidfd; 128+N when killed by signal N."""
    fd = os.pidfd_open(pid)
    loop = asyncio.get_running_loop()
    try:
        ready: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, on_exit)
        try:
            async with asyncio.timeout(timeout_s):
                await ready
        finally:
            loop.remove_reader(fd)
        info = os.waitid(os.P_PIDFD, fd, os.WEXITED)
    finally:
        os.close(fd)
    assert info is not None
    return info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status


async def read_all(fd: int, timeout_s: float = 30.0) -> str:
    """Read a pipe to EOF without blocking the loop; closes it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        async with asyncio.timeout(timeout_s):
            return (await reader.read()).decode()
    finally:
        transport.close()


@dataclass
class Harness:
    base: Path
    runtime: RuncRuntime
    layout: CgroupLayout
    parent: str
    facts: HostFacts
    cids: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def prepare(self, body: dict[str, object], **extra: object) -> tuple[str, Path]:
        """Write a bundle for `body` (a create request); returns (cid, bundle)."""
        cid = "t" + os.urandom(8).hex()
        req = ContainerCreateRequest.model_validate({"Image": "busybox", "Hostname": "pydock-oci", **body})
        hc = adapt_host_config(req.HostConfig or HostConfig())
        config = merge_image_config(req.config(), {"Env": ["PATH=/bin"], "Cmd": ["sh"]})
        rootfs = self.base / "rootfs"
        inputs = SpecInputs(
            rootfs=rootfs,
            cgroups_path=container_cgroup_path(cid, self.parent),
            user=resolve_user(rootfs, config.User, hc.GroupAdd or []),
            hostname_path=self.base / "hostname",
            hosts_path=self.base / "hosts",
            resolv_conf_path=self.base / "resolv.conf",
            netns=None,
            init_path=TINI if hc.Init else None,
            host=self.facts,
        )
        spec = build_spec(config, hc, replace(inputs, **extra))  # type: ignore[arg-type]
        bundle = self.base / "bundles" / cid
        bundle.mkdir(parents=True)
        (bundle / "config.json").write_text(json.dumps(spec.to_json()))
        self.cids.append(cid)
        return cid, bundle

    def reader(self, cid: str) -> CgroupReader:
        return CgroupReader(self.layout, container_cgroup_path(cid, self.parent))

    async def start(
        self, body: dict[str, object], *, stdin: int | None = None, **extra: object
    ) -> tuple[str, int, int, int]:
        """create + start with piped stdout/stderr; returns (cid, pid, stdout fd, stderr fd)."""
        cid, bundle = self.prepare(body, **extra)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            pid = await self.runtime.create(
                cid, bundle, pid_file=bundle / "init.pid", stdio=Stdio(stdin, out_w, err_w)
            )
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        self.pids.append(pid)
        await self.runtime.start(cid)
        return cid, pid, out_r, err_r

    async def run(self, body: dict[str, object], *, stdin: int | None = None, **extra: object) -> Result:
        cid, pid, out, err = await self.start(body, stdin=stdin, **extra)
        stdout, stderr = await asyncio.gather(read_all(out), read_all(err))
        code = await wait_exit(pid)
        self.pids.remove(pid)
        await self.runtime.delete(cid)
        return Result(code, stdout, stderr)

    async def cleanup(self) -> None:
        for cid in self.cids:
            with contextlib.suppress(OciRuntimeError):
                await self.runtime.kill(cid, "KILL", all_processes=True)
            with contextlib.suppress(OciRuntimeError):
                await self.runtime.delete(cid, force=True)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                await wait_exit(pid, timeout_s=10)
        for cid in self.cids:
            assert remove_cgroup(self.layout, container_cgroup_path(cid, self.parent)) == []


@pytest.fixture
async def h(workdir: Path) -> AsyncIterator[Harness]:
    parent = f"/pydock-test-{os.getpid()}"
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    harness = Harness(
        base=workdir,
        runtime=RuncRuntime("runc", workdir / "runc-root", logs),
        layout=CgroupLayout.detect(),
        parent=parent,
        facts=HostFacts.probe(),
    )
    try:
        yield harness
    finally:
        await harness.cleanup()
        assert remove_cgroup(harness.layout, parent) == []
        assert list(logs.iterdir()) == []


def status_field(text: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(\S+)", text, re.MULTILINE)
    assert match, f"{name} not in {text!r}"
    return match.group(1)


# --- lifecycle -----------------------------------------------------------------------------------


async def test_output_through_passed_fds_and_exit_status(h: Harness) -> None:
    res = await h.run({"Cmd": ["sh", "-c", "echo out; echo err >&2; hostname; exit 3"]})
    assert res == Result(3, "out\npydock-oci\n", "err\n")


async def test_stdin_is_the_passed_fd(h: Harness) -> None:
    r, w = os.pipe()
    os.write(w, b"from stdin\n")
    os.close(w)
    try:
        res = await h.run({"Cmd": ["cat"]}, stdin=r)
    finally:
        os.close(r)
    assert res == Result(0, "from stdin\n", "")


async def test_start_failure_keeps_runcs_message(h: Harness) -> None:
    cid, bundle = h.prepare({"Cmd": ["nonexist"]})
    with pytest.raises(OciRuntimeError) as info:
        await h.runtime.create(cid, bundle, pid_file=bundle / "init.pid")
    assert info.value.status == 400
    assert 'exec: "nonexist": executable file not found in $PATH' in str(info.value)


async def test_tty_via_console_socket(h: Harness) -> None:
    cid, bundle = h.prepare(
        {
            "Tty": True,
            "Cmd": ["sh", "-c", "tty; echo $TERM; stty size"],
            "HostConfig": {"ConsoleSize": [30, 90]},
        }
    )
    master_task = receive_console_master(bundle / "console.sock", timeout_s=20)
    try:
        pid = await h.runtime.create(
            cid, bundle, pid_file=bundle / "init.pid", console_socket=bundle / "console.sock"
        )
        h.pids.append(pid)
        master = await master_task
    finally:
        master_task.cancel()
    try:
        await h.runtime.start(cid)
        data = b""
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await loop.run_in_executor(None, os.read, master, 4096)
            except OSError:  # EIO once the last slave fd closes
                break
            if not chunk:
                break
            data += chunk
    finally:
        os.close(master)
    assert await wait_exit(pid) == 0
    h.pids.remove(pid)
    assert data.decode().split("\r\n")[:3] == ["/dev/pts/0", "xterm", "30 90"]


async def test_state_kill_pause_resume_ps(h: Harness) -> None:
    cid, pid, out, err = await h.start(
        {"Cmd": ["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done"]}
    )
    os.close(out)
    os.close(err)
    state = await h.runtime.state(cid)
    assert (state.status, state.pid) == ("running", pid)
    assert pid in await h.runtime.ps(cid)
    await h.runtime.pause(cid)
    assert (await h.runtime.state(cid)).status == "paused"
    assert h.reader(cid).freezer_state() == "FROZEN"
    await h.runtime.resume(cid)
    assert (await h.runtime.state(cid)).status == "running"
    assert h.reader(cid).freezer_state() == "THAWED"
    await h.runtime.kill(cid, "TERM")
    assert await wait_exit(pid) == 7
    h.pids.remove(pid)
    assert (await h.runtime.state(cid)).status == "stopped"
    await h.runtime.delete(cid)


async def test_kill_with_sigkill(h: Harness) -> None:
    cid, pid, out, err = await h.start({"Cmd": ["sleep", "100"]})
    os.close(out)
    os.close(err)
    await h.runtime.kill(cid, 9, all_processes=True)
    assert await wait_exit(pid) == 137
    h.pids.remove(pid)


async def test_exec_and_update(h: Harness) -> None:
    cid, pid, out, err = await h.start(
        {"Cmd": ["sleep", "100"], "HostConfig": {"PidsLimit": 100, "Memory": 64 << 20}}
    )
    os.close(out)
    os.close(err)
    r, w = os.pipe()
    try:
        proc = Process(args=["sh", "-c", "echo exec-out; id -u; exit 4"], env=["PATH=/bin"], cwd="/tmp")
        exec_pid = await h.runtime.exec(
            cid, proc, pid_file=h.base / f"{cid}.exec.pid", stdio=Stdio(None, w, w)
        )
    finally:
        os.close(w)
    assert await read_all(r) == "exec-out\n0\n"
    assert await wait_exit(exec_pid) == 4
    with pytest.raises(OciRuntimeError, match="executable file not found"):
        await h.runtime.exec(cid, Process(args=["nonexist"], env=["PATH=/bin"]), pid_file=h.base / "x.pid")

    await h.runtime.update(cid, Resources(pids=Pids(limit=50), memory=Memory(limit=32 << 20, swap=64 << 20)))
    reader = h.reader(cid)
    pids, mem = reader.pids(), reader.memory()
    assert pids is not None and pids.limit == 50 and pids.current >= 1
    assert mem is not None and mem.limit == 32 << 20
    await h.runtime.kill(cid, "KILL")
    assert await wait_exit(pid) == 137
    h.pids.remove(pid)


# --- confinement ---------------------------------------------------------------------------------

PROBE = """
grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status
echo "keys-mounts $(grep -c ' /proc/keys ' /proc/self/mountinfo)"
echo "keys $(cat /proc/keys | wc -c)"
echo "timer_list $(cat /proc/timer_list | wc -c)"
echo "firmware $(ls -A /sys/firmware | wc -l)"
grep ' /proc/sys ' /proc/self/mountinfo | grep -q ' ro,' && echo proc-sys-ro
v=$(cat /proc/sys/vm/dirty_ratio); echo "$v" > /proc/sys/vm/dirty_ratio || echo proc-sys-write-refused
mount -t tmpfs none /mnt || echo mount-refused
unshare -U true || echo unshare-refused
"""


async def test_default_confinement(h: Harness) -> None:
    res = await h.run({"Cmd": ["sh", "-c", PROBE]})
    assert res.exit_code == 0, res
    assert status_field(res.stdout, "CapEff") == "00000000a80425fb"
    assert status_field(res.stdout, "Seccomp") == "2"
    assert status_field(res.stdout, "NoNewPrivs") == "0"
    for line in (
        "keys-mounts 1",
        "keys 0",
        "timer_list 0",
        "firmware 0",
        "proc-sys-ro",
        "proc-sys-write-refused",
    ):
        assert line in res.stdout.splitlines(), (line, res)
    assert "mount-refused" in res.stdout and "unshare-refused" in res.stdout
    assert "Read-only file system" in res.stderr and "Operation not permitted" in res.stderr, res


async def test_seccomp_is_what_refuses_unshare(h: Harness) -> None:
    if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
        pytest.skip("user namespaces are disabled on this host")
    res = await h.run(
        {
            "Cmd": ["sh", "-c", "grep Seccomp: /proc/self/status; unshare -U true && echo unshared"],
            "HostConfig": {"SecurityOpt": ["seccomp=unconfined"]},
        }
    )
    assert res.exit_code == 0, res
    assert status_field(res.stdout, "Seccomp") == "0" and "unshared" in res.stdout


async def test_no_new_privileges_and_cap_drop(h: Harness) -> None:
    res = await h.run(
        {
            "Cmd": ["sh", "-c", PROBE],
            "HostConfig": {"SecurityOpt": ["no-new-privileges"], "CapDrop": ["ALL"], "CapAdd": ["CHOWN"]},
        }
    )
    assert status_field(res.stdout, "NoNewPrivs") == "1"
    assert int(status_field(res.stdout, "CapEff"), 16) == capability_mask(["CAP_CHOWN"])


async def test_privileged_lifts_confinement(h: Harness) -> None:
    res = await h.run({"Cmd": ["sh", "-c", PROBE], "HostConfig": {"Privileged": True}})
    own = int(status_field(Path("/proc/self/status").read_text(), "CapBnd"), 16)
    assert int(status_field(res.stdout, "CapEff"), 16) == own  # everything the daemon holds
    assert set(names_from_mask(own)) <= set(names_from_mask(int(status_field(res.stdout, "CapEff"), 16)))
    assert status_field(res.stdout, "Seccomp") == "0"
    assert "keys-mounts 0" in res.stdout.splitlines() and "proc-sys-ro" not in res.stdout


async def test_user_and_groups_from_the_rootfs(h: Harness) -> None:
    res = await h.run({"User": "app", "Cmd": ["id"]})
    assert res == Result(0, "uid=1000(app) gid=1000(app) groups=50(staff)\n", "")


async def test_readonly_rootfs_with_tmpfs(h: Harness) -> None:
    script = "touch /x || echo rootfs-ro; touch /tmp/y && echo tmp-rw; cat /etc/hosts"
    res = await h.run(
        {"Cmd": ["sh", "-c", script], "HostConfig": {"ReadonlyRootfs": True, "Tmpfs": {"/tmp": ""}}}
    )
    assert res.stdout.splitlines()[:3] == ["rootfs-ro", "tmp-rw", "127.0.0.1\tlocalhost"], res


async def test_device_mapping_and_device_cgroup(h: Harness) -> None:
    mapping = DeviceMapping(PathOnHost="/dev/null", PathInContainer="/dev/xnull", CgroupPermissions="rw")
    devices = tuple(lookup_devices([mapping]))
    script = (
        "echo hi > /dev/xnull && echo wrote; ls -l /dev/xnull;"
        " mknod /dev/mem2 c 1 1; cat /dev/mem2 || echo mem-denied"  # /dev/mem: not in the allow list
    )
    res = await h.run(
        {"Cmd": ["sh", "-c", script], "HostConfig": {"Devices": [mapping.model_dump()]}}, devices=devices
    )
    lines = res.stdout.splitlines()
    assert lines[0] == "wrote" and lines[1].startswith("crw") and "1,   3" in lines[1], res
    assert lines[2] == "mem-denied" and "Operation not permitted" in res.stderr, res


@pytest.mark.skipif(not TINI.exists(), reason="tini-static is not installed")
async def test_init_is_pid_1(h: Harness) -> None:
    res = await h.run({"Cmd": ["ps", "-o", "pid,args"], "HostConfig": {"Init": True}})
    assert res.exit_code == 0, res
    lines = [line.split(None, 1) for line in res.stdout.splitlines()[1:]]
    assert ["1", "/sbin/docker-init -- ps -o pid,args"] in lines, res.stdout


# --- resources -----------------------------------------------------------------------------------


async def test_memory_limit_is_enforced_and_oom_is_detected(h: Harness) -> None:
    body: dict[str, object] = {
        "Cmd": ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        "HostConfig": {"Memory": 16 << 20},
    }
    cid, pid, out, err = await h.start(body)
    stdout, stderr = await asyncio.gather(read_all(out), read_all(err))
    assert await wait_exit(pid) == 137, (stdout, stderr)
    h.pids.remove(pid)
    mem = h.reader(cid).memory()  # read before `runc delete` removes the cgroup
    assert mem is not None and mem.limit == 16 << 20
    assert h.reader(cid).oom_kill_count() >= 1
    await h.runtime.delete(cid)


async def test_pids_limit_is_enforced(h: Harness) -> None:
    cid, pid, out, err = await h.start({"Cmd": ["sleep", "1000"], "HostConfig": {"PidsLimit": 8}})
    os.close(out)
    os.close(err)
    r, w = os.pipe()
    try:
        script = "for i in $(seq 1 20); do sleep 30 >/dev/null 2>&1 & done; echo all-forked"
        bomb = Process(args=["sh", "-c", script], env=["PATH=/bin"])
        exec_pid = await h.runtime.exec(
            cid, bomb, pid_file=h.base / f"{cid}.exec.pid", stdio=Stdio(None, w, w)
        )
    finally:
        os.close(w)
    output = await read_all(r)
    assert await wait_exit(exec_pid) != 0
    assert "can't fork" in output and "all-forked" not in output, output
    pids = h.reader(cid).pids()
    assert pids is not None and pids.limit == 8 and 1 < pids.current <= 8
    await h.runtime.kill(cid, "KILL", all_processes=True)
    assert await wait_exit(pid) == 137
    h.pids.remove(pid)


# --- runtime selection ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("crun") is None, reason="crun is not installed")
async def test_crun_refusal_on_hybrid_hosts_is_detected(h: Harness) -> None:
    usable, reason = runtime_usable(RuntimeSpec("crun", "crun"), layout=h.layout)
    if h.layout.mode is not CgroupMode.HYBRID:
        assert usable, reason
        pytest.skip("not a hybrid cgroup host")
    assert not usable and "hybrid" in reason
    crun = RuncRuntime("crun", h.base / "crun-root", h.base / "logs", name="crun")
    cid, bundle = h.prepare({"Cmd": ["true"]})
    try:
        with pytest.raises(OciRuntimeError, match="hybrid"):
            await crun.create(cid, bundle, pid_file=bundle / "init.pid")
    finally:
        with contextlib.suppress(OciRuntimeError):
            await crun.delete(cid, force=True)
    assert runtime_usable(RuntimeSpec("runc", "runc"), layout=h.layout) == (True, "")
