"""The exec fast path: start exec processes through pydock's exec helper (`runtime/nsexec.py`)
instead of `runc exec`, the same way and ~10x faster.

`runc exec` costs ~30 ms here, two thirds of it compiling the container's seccomp profile with
libseccomp, again for every exec. The helper does what runc's setns path does (namespaces,
cgroups, keyring, rlimits, seccomp, capabilities, user, cwd, lookup, execve) with the inputs runc
itself recorded for the container (its `state.json`: namespace paths, cgroup paths, seccomp
config) and the exact BPF program runc loaded into the container's init, read back once per
container start. So an exec'd process ends up confined exactly like one started by runc.

Whenever a container needs something the helper does not do (a user namespace, AppArmor or SELinux
labels, seccomp flags or a notify listener, another runtime than runc, a kernel without
`PTRACE_SECCOMP_GET_FILTER`), `exec()` raises `FastExecUnavailable` before anything ran, and the
caller uses `runc exec`; `PYDOCK_EXEC_RUNTIME=runc` in pydockd's environment forces that.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import procs, store
from runtime.caps import CAP_NUMBER
from runtime.errors import OciRuntimeError
from runtime.oci import Stdio
from runtime.ocispec import Process

log = logging.getLogger("pydock.exec")

HELPER = Path(__file__).with_name("nsexec.py")
REQUEST_TIMEOUT_S = 30.0
MAX_MESSAGE = 1 << 20
FORCE_RUNC = os.environ.get("PYDOCK_EXEC_RUNTIME", "") == "runc"


class FastExecUnavailable(Exception):
    """This exec must go through the OCI runtime; nothing was started."""


@dataclass(frozen=True, slots=True)
class ExecTarget:
    """What the helper needs about a running container, from runc's state (cached per start)."""

    init_pid: int
    init_start: int
    namespaces: tuple[tuple[str, str], ...]
    cgroup_procs: tuple[str, ...]
    seccomp: str  # the init's BPF program, hex; "" without seccomp
    keyring: str | None


def _proc_start(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return -1


def target_from_state(state: dict[str, Any], cid: str) -> tuple[ExecTarget, bool]:
    """An `ExecTarget` (without its filter yet) from runc's state.json, and whether the container
    has a seccomp profile. Raises FastExecUnavailable for what the helper does not do."""
    config = state.get("config") or {}
    if state.get("rootless") or config.get("uid_mappings") or config.get("gid_mappings"):
        raise FastExecUnavailable("user namespaces")
    paths = state.get("namespace_paths") or {}
    joined: list[tuple[str, str]] = []
    for ns in config.get("namespaces") or []:
        kind = str(ns.get("type", ""))
        if kind == "NEWUSER":
            raise FastExecUnavailable("user namespaces")
        path = paths.get(kind)
        if not path:
            raise FastExecUnavailable(f"no path for namespace {kind}")
        joined.append((kind, str(path)))
    order = ("NEWIPC", "NEWUTS", "NEWNET", "NEWPID", "NEWCGROUP", "NEWNS")
    joined.sort(key=lambda item: order.index(item[0]) if item[0] in order else -1)
    if any(kind not in order for kind, _ in joined):
        raise FastExecUnavailable("an unknown namespace type")
    seccomp = config.get("seccomp")
    if seccomp is not None and (seccomp.get("flags") or seccomp.get("listener_path")):
        raise FastExecUnavailable("seccomp flags or a notify listener")
    if config.get("mount_label") or config.get("process_label"):
        raise FastExecUnavailable("SELinux labels")
    procs = tuple(str(Path(p) / "cgroup.procs") for p in (state.get("cgroup_paths") or {}).values() if p)
    target = ExecTarget(
        init_pid=int(state.get("init_process_pid") or 0),
        init_start=int(state.get("init_process_start") or 0),
        namespaces=tuple(joined),
        cgroup_procs=procs,
        seccomp="",
        keyring=None if config.get("no_new_keyring") else f"_ses.{cid}",
    )
    return target, seccomp is not None


def process_request(process: Process) -> dict[str, Any]:
    """The helper's view of an OCI process. Raises FastExecUnavailable for labels."""
    if process.apparmor_profile or process.selinux_label:
        raise FastExecUnavailable("AppArmor or SELinux labels")
    caps = process.capabilities

    def numbers(names: list[str] | None) -> list[int]:
        try:
            return sorted(CAP_NUMBER[n] for n in names or [])
        except KeyError as exc:
            raise FastExecUnavailable(f"unknown capability {exc}") from None

    size = process.console_size
    return {
        "args": list(process.args),
        "env": list(process.env),
        "cwd": process.cwd or "/",
        "uid": process.user.uid,
        "gid": process.user.gid,
        "additional_gids": list(process.user.additional_gids or []),
        "umask": process.user.umask,
        "capabilities": {
            "bounding": numbers(caps.bounding if caps else None),
            "effective": numbers(caps.effective if caps else None),
            "permitted": numbers(caps.permitted if caps else None),
            "inheritable": numbers(caps.inheritable if caps else None),
            "ambient": numbers(caps.ambient if caps else None),
        },
        "rlimits": [{"type": r.type, "soft": r.soft, "hard": r.hard} for r in process.rlimits or []],
        "no_new_privileges": bool(process.no_new_privileges),
        "oom_score_adj": process.oom_score_adj,
        "terminal": process.terminal,
        "console_size": [size.height, size.width] if size else None,
    }


class FastExec:
    """The helper process and the per-container targets; one per daemon."""

    def __init__(self, runtime_root: Path, last_cap: int) -> None:
        self.runtime_root = runtime_root
        self.last_cap = last_cap
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = asyncio.Lock()
        self._targets: dict[str, ExecTarget] = {}
        self._seq = 0
        self.disabled: str | None = None
        if FORCE_RUNC:
            self.disabled = "forced off (PYDOCK_EXEC_RUNTIME=runc)"
        elif not HELPER.is_file():
            self.disabled = f"{HELPER} is missing"
        self.used = 0

    # --- the helper process ------------------------------------------------------------------------

    def _start_helper(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(  # vfork+exec: returns at once
                [sys.executable, "-I", "-S", str(HELPER), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
                cwd="/",
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        return ours

    def warm(self) -> None:
        """Start the helper ahead of the first exec (its start-up is ~20 ms of Python)."""
        if self.disabled is None and self._sock is None and not self._lock.locked():
            try:
                self._start_helper()
            except OSError as exc:
                log.warning("cannot start the exec helper: %s", exc)

    def _stop_helper(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # EOF: the helper exits
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            _reap_later(proc)

    async def _request(self, req: dict[str, Any], fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        """One request/answer with the helper (one at a time). Raises OSError/TimeoutError when
        the helper is gone or stuck (it is then replaced on the next request)."""
        async with self._lock:
            sock = self._sock or self._start_helper()
            self._seq += 1
            req["id"] = self._seq
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    sock.sendmsg(
                        [json.dumps(req).encode()],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [],
                    )
                    while True:
                        try:
                            msg, ancdata, _flags, _addr = sock.recvmsg(
                                MAX_MESSAGE, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC
                            )
                            break
                        except BlockingIOError:
                            ready: asyncio.Future[None] = loop.create_future()
                            loop.add_reader(sock.fileno(), _resolve, ready)
                            try:
                                await ready
                            finally:
                                loop.remove_reader(sock.fileno())
            except BaseException:
                self._stop_helper()
                raise
            received: list[int] = []
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    arr = array.array("i")
                    arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
                    received.extend(arr)
            if not msg:
                self._stop_helper()
                raise OSError("the exec helper exited")
            answer: dict[str, Any] = json.loads(msg)
            return answer, received

    # --- targets -------------------------------------------------------------------------------------

    async def _target(self, cid: str) -> ExecTarget:
        cached = self._targets.get(cid)
        if cached is not None and _proc_start(cached.init_pid) == cached.init_start:
            return cached
        try:
            state = await asyncio.to_thread(store.read_json, self.runtime_root / cid / "state.json")
        except (OSError, ValueError) as exc:
            raise FastExecUnavailable(f"no runc state: {exc}") from exc
        target, has_seccomp = target_from_state(state, cid)
        if target.init_pid <= 0 or _proc_start(target.init_pid) != target.init_start:
            raise FastExecUnavailable("the container's init is gone")
        if has_seccomp:
            try:
                answer, fds = await self._request({"op": "filter", "pid": target.init_pid}, [])
            except (OSError, TimeoutError) as exc:
                raise FastExecUnavailable(f"exec helper: {exc}") from exc
            for fd in fds:
                os.close(fd)
            program = str(answer.get("filter") or "")
            if "error" in answer or not program:
                raise FastExecUnavailable(f"cannot read the seccomp filter: {answer.get('error', 'none')}")
            target = ExecTarget(**{**_fields(target), "seccomp": program})
        self._targets[cid] = target
        return target

    def forget(self, cid: str) -> None:
        self._targets.pop(cid, None)

    # --- exec ----------------------------------------------------------------------------------------

    async def exec(self, cid: str, process: Process, stdio: Stdio) -> tuple[int, int | None]:
        """Start `process` in container `cid`; returns (host pid, pty master or None).

        Raises FastExecUnavailable (nothing started: use `runc exec`) or OciRuntimeError with
        runc's wording when the process cannot start (its pid, if any, is reaped here).
        """
        if self.disabled is not None:
            raise FastExecUnavailable(self.disabled)
        target = await self._target(cid)
        req = {
            "op": "exec",
            "init_pid": target.init_pid,
            "init_start": target.init_start,
            "namespaces": [list(ns) for ns in target.namespaces],
            "cgroup_procs": list(target.cgroup_procs),
            "seccomp": target.seccomp,
            "keyring": target.keyring,
            "last_cap": self.last_cap,
            "process": process_request(process),
        }
        opened: list[int] = []
        fds: list[int] = []
        if not process.terminal:
            for fd in (stdio.stdin, stdio.stdout, stdio.stderr):
                if fd is None:
                    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
                    opened.append(null)
                    fds.append(null)
                else:
                    fds.append(fd if isinstance(fd, int) else fd.fileno())
        try:
            answer, received = await self._request(req, fds)
        except (OSError, TimeoutError) as exc:
            log.warning("exec helper failed, using the OCI runtime: %s", exc)
            raise FastExecUnavailable(f"exec helper: {exc}") from exc
        finally:
            for fd in opened:
                os.close(fd)
        pid = int(answer.get("pid") or 0)
        if "error" in answer:
            for fd in received:
                os.close(fd)
            if pid:
                _reap_pid_later(pid)
            raise OciRuntimeError(
                "exec", f"exec failed: unable to start container process: {answer['error']}"
            )
        self.used += 1
        master = received[0] if received else None
        for extra in received[1:]:
            os.close(extra)
        if process.terminal and master is None:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _reap_pid_later(pid)
            raise OciRuntimeError("exec", "exec failed: no pty master received")
        return pid, master

    async def close(self) -> None:
        self._stop_helper()


def _fields(target: ExecTarget) -> dict[str, Any]:
    return {name: getattr(target, name) for name in ExecTarget.__dataclass_fields__}


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _reap_pid_later(pid: int) -> None:
    """Reap a child that failed to start (it exits at once) without waiting for it here."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    procs.reap_later(pidfd)


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    proc.returncode = -9  # reaped by _reap_pid_later: Popen must never wait for it again
    _reap_pid_later(proc.pid)
