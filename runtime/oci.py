"""The OCI runtime (runc, or crun where it can run) driven as subprocesses, asynchronously.

Every call runs `<runtime> --root <exec-root>/runtime --log <file> --log-format json ...` through
`asyncio.create_subprocess_exec`, inside `asyncio.timeout`. A failure raises `OciRuntimeError`
carrying the runtime's last error line from that JSON log, verbatim (the CLI maps
`executable file not found` → 127 and `permission denied` → 126 by that text). A call that times
out or is cancelled terminates the runtime process (TERM, then KILL) before re-raising.

Container stdio: `create` and `exec` hand the caller's `Stdio` file descriptors to the runtime
as its fds 0/1/2 (nothing else is inherited); runc passes them on to the container process. With
a TTY the process gets a pty instead, whose master arrives on the `--console-socket`
(`runtime.console`, re-exported here).

`OciRuntime` is the seam tests fake. Stats come from `runtime.cgroups`, not `runc events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from runtime import procs
from runtime.cgroups import CgroupLayout, CgroupMode
from runtime.config import RuntimeSpec
from runtime.console import ConsoleSocket as ConsoleSocket  # re-exported: part of this API
from runtime.console import receive_console_master as receive_console_master
from runtime.errors import OciContainerNotFound, OciRuntimeError
from runtime.ocispec import Process, Resources, State
from runtime.signals import parse_signal

Fd = int | IO[bytes] | IO[str]


@dataclass(frozen=True, slots=True)
class Stdio:
    """File descriptors (or files) that become the process's stdin/stdout/stderr; None: /dev/null."""

    stdin: Fd | None = None
    stdout: Fd | None = None
    stderr: Fd | None = None


class OciRuntime(Protocol):
    """What the supervisor needs from an OCI runtime.

    Every method raises `OciRuntimeError` with the runtime's own last error line when the
    runtime fails (`OciContainerNotFound` when it does not know the container), and
    `TimeoutError` after `timeout_s`. Cancelling a call terminates the runtime process
    (SIGTERM, then SIGKILL) and reaps it before the CancelledError propagates; a container the
    runtime had half-made stays for the caller's `delete(force=True)`.
    """

    name: str

    async def create(
        self,
        cid: str,
        bundle: Path,
        *,
        pid_file: Path,
        console_socket: Path | None = None,
        stdio: Stdio | None = None,
        timeout_s: float = 60.0,
    ) -> int: ...

    async def start(self, cid: str, *, timeout_s: float = 30.0) -> None: ...

    async def run(
        self,
        cid: str,
        *,
        bundle: Path,
        pid_file: Path,
        console_socket: Path | None = None,
        stdin: Fd | None = None,
        stdout: Fd | None = None,
        stderr: Fd | None = None,
        timeout_s: float = 60.0,
    ) -> int | None: ...

    async def state(self, cid: str, *, timeout_s: float = 10.0) -> State: ...

    async def kill(
        self, cid: str, sig: int | str = "KILL", *, all_processes: bool = False, timeout_s: float = 10.0
    ) -> None: ...

    async def delete(self, cid: str, *, force: bool = False, timeout_s: float = 30.0) -> None: ...

    async def pause(self, cid: str, *, timeout_s: float = 10.0) -> None: ...

    async def resume(self, cid: str, *, timeout_s: float = 10.0) -> None: ...

    async def exec(
        self,
        cid: str,
        process: Process,
        *,
        pid_file: Path,
        console_socket: Path | None = None,
        stdio: Stdio | None = None,
        timeout_s: float = 30.0,
    ) -> int: ...

    async def update(self, cid: str, resources: Resources, *, timeout_s: float = 10.0) -> None: ...

    async def ps(self, cid: str, *, timeout_s: float = 10.0) -> list[int]: ...


def last_error(log: str) -> str:
    """The last `error`/`fatal` message of a runc/crun JSON log (plain text lines also count)."""
    found = ""
    for line in log.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            found = line
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            found = str(entry.get("msg", "")) or found
    return found


async def terminate(proc: asyncio.subprocess.Process, grace_s: float = 5.0) -> None:
    """SIGTERM, up to `grace_s` to exit, then SIGKILL; closes its pipes and always reaps."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace_s):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    _close_transport(proc)
    await proc.wait()


def _close_transport(proc: asyncio.subprocess.Process) -> None:
    """Close the pipes of an abandoned subprocess even if grandchildren still hold them.

    asyncio keeps a subprocess transport (and `wait()`) open until every pipe reaches EOF;
    after a timeout nobody reads them any more. The transport is not public API.
    """
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


def _read_and_remove(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int:
    return int(path.read_text().strip())


def _fileno(fd: Fd | None) -> int:
    """An fd to hand to the child; None means /dev/null."""
    if fd is None:
        return procs.DEVNULL
    return fd if isinstance(fd, int) else fd.fileno()


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class RuncRuntime:
    """An OCI runtime with runc's command line (runc, crun)."""

    def __init__(self, binary: str, root: Path, log_dir: Path, *, name: str = "runc") -> None:
        self.binary = binary
        self.root = root
        self.log_dir = log_dir
        self.name = name
        self._seq = itertools.count()

    def _log_path(self, cid: str, action: str) -> Path:
        return self.log_dir / f"{cid}.{action}.{os.getpid()}.{next(self._seq)}.log.json"

    async def _run(
        self,
        action: str,
        *args: str,
        cid: str,
        timeout_s: float,
        stdio: Stdio | None = None,
        capture: bool = True,
        stdin_data: bytes | None = None,
        status: int = 500,
    ) -> bytes:
        """Run one runtime command; returns stdout (when `capture`)."""
        log = self._log_path(cid, action)
        argv = [self.binary, "--root", str(self.root), "--log", str(log), "--log-format", "json", *args]
        if capture:
            # Output pipes only for commands whose process tree ends with the command
            # (never create/exec: the container would inherit them).
            stdin: int | None = procs.DEVNULL
            stdout: int | None = procs.PIPE
            stderr: int | None = procs.PIPE
        else:
            io = stdio or Stdio()
            stdin = _fileno(io.stdin)
            stdout = _fileno(io.stdout)
            stderr = _fileno(io.stderr)
        try:
            result = await procs.run(
                argv, stdin=stdin, stdout=stdout, stderr=stderr, input=stdin_data, timeout_s=timeout_s
            )
        except BaseException:
            await asyncio.to_thread(_remove, log)
            raise
        out, err = result.stdout, result.stderr
        logged = await asyncio.to_thread(_read_and_remove, log)
        if result.returncode != 0:
            detail = last_error(logged) or (err or b"").decode(errors="replace").strip()
            detail = detail or f"{self.name} {action} exited with status {result.returncode}"
            if "does not exist" in detail and action not in ("create", "run"):
                raise OciContainerNotFound(action, detail, status=status)
            raise OciRuntimeError(action, detail, status=status)
        return out or b""

    async def create(
        self,
        cid: str,
        bundle: Path,
        *,
        pid_file: Path,
        console_socket: Path | None = None,
        stdio: Stdio | None = None,
        timeout_s: float = 60.0,
    ) -> int:
        """`runc create`; returns the container init's pid. Start failures are 400s (as dockerd)."""
        args = ["create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        await self._run(
            "create", *args, cid, cid=cid, timeout_s=timeout_s, stdio=stdio, capture=False, status=400
        )
        return await asyncio.to_thread(_read_pid, pid_file)

    async def start(self, cid: str, *, timeout_s: float = 30.0) -> None:
        await self._run("start", "start", cid, cid=cid, timeout_s=timeout_s, status=400)

    async def run(
        self,
        cid: str,
        *,
        bundle: Path,
        pid_file: Path,
        console_socket: Path | None = None,
        stdin: Fd | None = None,
        stdout: Fd | None = None,
        stderr: Fd | None = None,
        timeout_s: float = 60.0,
    ) -> int | None:
        """`run --detach` (create and start in one runtime call); returns the pty master fd when
        `console_socket` is given.

        The init pid is in `pid_file`. On any failure the half-made container is deleted. Failures
        are 400s with the runtime's message, as dockerd answers start failures.
        """
        console = receive_console_master(console_socket, timeout_s=timeout_s) if console_socket else None
        master: int | None = None
        args = ["run", "--detach", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        try:
            await self._run(
                "run",
                *args,
                cid,
                cid=cid,
                timeout_s=timeout_s,
                stdio=Stdio(stdin, stdout, stderr),
                capture=False,
                status=400,
            )
            if console is not None:
                master = await console
            return master
        except BaseException:
            if console is not None:
                console.cancel()  # its done callback closes and removes the socket
            if master is not None:
                os.close(master)
            with contextlib.suppress(OciRuntimeError):
                await asyncio.shield(self.delete(cid, force=True))
            raise

    async def state(self, cid: str, *, timeout_s: float = 10.0) -> State:
        """`runc state`; OciContainerNotFound when the runtime does not know the container."""
        out = await self._run("state", "state", cid, cid=cid, timeout_s=timeout_s)
        return State.model_validate_json(out)

    async def kill(
        self, cid: str, sig: int | str = "KILL", *, all_processes: bool = False, timeout_s: float = 10.0
    ) -> None:
        number = parse_signal(sig)
        args = ["kill", *(["--all"] if all_processes else []), cid, str(number)]
        await self._run("kill", *args, cid=cid, timeout_s=timeout_s)

    async def delete(self, cid: str, *, force: bool = False, timeout_s: float = 30.0) -> None:
        args = ["delete", *(["--force"] if force else []), cid]
        await self._run("delete", *args, cid=cid, timeout_s=timeout_s)

    async def pause(self, cid: str, *, timeout_s: float = 10.0) -> None:
        await self._run("pause", "pause", cid, cid=cid, timeout_s=timeout_s)

    async def resume(self, cid: str, *, timeout_s: float = 10.0) -> None:
        await self._run("resume", "resume", cid, cid=cid, timeout_s=timeout_s)

    async def exec(
        self,
        cid: str,
        process: Process,
        *,
        pid_file: Path,
        console_socket: Path | None = None,
        stdio: Stdio | None = None,
        timeout_s: float = 30.0,
    ) -> int:
        """`runc exec --detach`; returns the new process's pid (the caller, as subreaper, reaps it)."""
        proc_file = self.log_dir / f"{cid}.process.{os.getpid()}.{next(self._seq)}.json"
        await asyncio.to_thread(_write_file, proc_file, json.dumps(process.to_json()).encode())
        args = ["exec", "--detach", "--process", str(proc_file), "--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        try:
            await self._run("exec", *args, cid, cid=cid, timeout_s=timeout_s, stdio=stdio, capture=False)
        finally:
            await asyncio.to_thread(_remove, proc_file)
        return await asyncio.to_thread(_read_pid, pid_file)

    async def update(self, cid: str, resources: Resources, *, timeout_s: float = 10.0) -> None:
        data = json.dumps(resources.to_json()).encode()
        await self._run(
            "update", "update", "--resources", "-", cid, cid=cid, timeout_s=timeout_s, stdin_data=data
        )

    async def ps(self, cid: str, *, timeout_s: float = 10.0) -> list[int]:
        out = await self._run("ps", "ps", "--format", "json", cid, cid=cid, timeout_s=timeout_s)
        pids = json.loads(out or b"[]") or []
        return [int(p) for p in pids]

    async def version(self, *, timeout_s: float = 10.0) -> str:
        """The first line of `<runtime> --version` (e.g. `runc version 1.1.5+ds1`)."""
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(timeout_s):
                out, _ = await proc.communicate()
        except BaseException:
            await asyncio.shield(terminate(proc))
            raise
        return out.decode(errors="replace").splitlines()[0] if out else ""


def runtime_usable(spec: RuntimeSpec, *, layout: CgroupLayout | None = None) -> tuple[bool, str]:
    """Whether pydock can run containers with this runtime here, and why not.

    crun 1.x refuses hybrid hosts (cgroup v1 controllers with a cgroup2 mount beside them)
    unless the cgroup2 mount is hidden in a private mount namespace, which pydock does not do:
    such a runtime must not become the default silently.
    """
    binary = spec.resolved()
    if binary is None:
        return False, f"{spec.name}: {spec.path} is not installed"
    if not os.access(binary, os.X_OK):
        return False, f"{spec.name}: {binary} is not executable"
    is_crun = "crun" in Path(binary).name or spec.name == "crun"
    if is_crun:
        try:
            layout = layout or CgroupLayout.detect()
        except OSError as exc:
            return False, f"{spec.name}: cannot read the cgroup layout: {exc}"
        if layout.mode is CgroupMode.HYBRID:
            return False, (
                f"{spec.name}: this host mounts cgroup v1 controllers with a cgroup2 hierarchy at "
                f"{layout.unified} (hybrid), which crun refuses; use runc, or hide the cgroup2 mount "
                "in a private mount namespace"
            )
    return True, ""
