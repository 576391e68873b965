"""`ExecService`: exec instances (`docker exec`) and health-check probes in running containers.

An exec is created (`POST /containers/{id}/exec`, recorded, listed in the container's `ExecIDs`),
then started once (`POST /exec/{id}/start`): its process is built from the container's own OCI
process (the bundle's `config.json`: capabilities, rlimits, no-new-privileges, the user unless
`-u` resolves another one from the container's /etc/passwd) with the exec's command, env, cwd
and TTY, and started by `runtime/execproc.py` through pydock's exec helper
(`runtime/fastexec.py`: runc's setns path without runc's ~30 ms) or, when the container needs
what only runc does, `runc exec`. dockerd's rules and wording (moby daemon/exec.go):
409 for a stopped, paused or restarting container and for a second start, 404 for an unknown
exec, exit code 126/127 when the command cannot start. Events `exec_create: <cmd>`,
`exec_start: <cmd>`, `exec_die` (exitCode), `exec_detach`.

An ended exec leaves `ExecIDs` but stays inspectable (the CLI reads its exit code right after
the stream ends); a garbage collector drops it some minutes later (as dockerd's `execCommandGC`:
first marked `CanRemove`, then removed), and at most `MAX_ENDED` ended records are kept. When a
container stops its execs die with it (the kernel kills its pid namespace; pydock sends SIGKILL
too, for `--pid host`), which ends their streams.

The service is also the containers' `LifecycleHooks`: it runs each container's health monitor
(`runtime/health.py`) while the container runs unpaused, and gives it `probe()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.models.exec import ExecConfig
from runtime import ids, store
from runtime.errors import (
    Conflict,
    InvalidParameter,
    NoSuchContainer,
    NoSuchExec,
    NotRunning,
    PydockError,
)
from runtime.execproc import ExecProcess, ExecStreams, Starter, runtime_starter
from runtime.fastexec import FastExec, FastExecUnavailable
from runtime.health import HealthMonitor, LimitedBuffer, probe_command
from runtime.oci import Stdio
from runtime.ocispec import Process
from runtime.records import Container, Status
from runtime.spec import build_exec_process, container_env, replace_or_append_env
from runtime.stdio import Sink
from runtime.userdb import resolve_user

if TYPE_CHECKING:
    from runtime.containers import ContainerService
    from runtime.supervisor import Supervisor

log = logging.getLogger("pydock.exec")

GC_INTERVAL_S = 150.0  # two passes (mark, then remove): an ended exec lives 2.5 to 5 minutes
MAX_ENDED = 1024
TERM_GRACE_S = 10.0  # client gone: SIGTERM, then SIGKILL after this (moby termProcessTimeout)
PROBE_KILL_WAIT_S = 5.0


@dataclass(slots=True, eq=False)
class ExecRecord:
    """One exec instance, as `GET /exec/{id}/json` shows it."""

    eid: str
    cid: str
    entrypoint: str
    args: list[str]
    env: list[str]
    user: str  # as shown (the container's user when -u was not given)
    user_given: bool
    working_dir: str
    tty: bool
    privileged: bool
    open_stdin: bool
    open_stdout: bool
    open_stderr: bool
    detach_keys: bytes
    console_size: list[int] | None = None
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    can_remove: bool = False
    ended_at: float = 0.0
    process: ExecProcess | None = None
    pending_size: tuple[int, int] | None = None
    probe: bool = False

    @property
    def command_text(self) -> str:
        return " ".join([self.entrypoint, *self.args])

    def inspect(self) -> dict[str, Any]:
        return {
            "ID": self.eid,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": self.tty,
                "entrypoint": self.entrypoint,
                "arguments": list(self.args),
                "privileged": self.privileged,
                "user": self.user,
            },
            "OpenStdin": self.open_stdin,
            "OpenStderr": self.open_stderr,
            "OpenStdout": self.open_stdout,
            "CanRemove": self.can_remove,
            "ContainerID": self.cid,
            "DetachKeys": self.detach_keys.decode("latin-1"),
            "Pid": self.pid,
        }


def start_failure_code(message: str) -> int:
    """dockerd's exit code for an exec that could not start (translateContainerdStartErr)."""
    low = message.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return 127
    return 126


def check_exec_target(sup: Supervisor, shown_ref: str) -> None:
    """409 unless the container runs unpaused (moby getActiveContainer / getExecConfig)."""
    c = sup.container
    status = c.state.status
    if status == Status.PAUSED:
        raise Conflict(f"Container {shown_ref} is paused, unpause the container before exec")
    if status == Status.RESTARTING:
        raise Conflict(f"Container {c.cid} is restarting, wait until the container is running")
    if status != Status.RUNNING:
        raise NotRunning(c.cid)


@dataclass(slots=True)
class _Cached:
    started_at: str
    process: Process


@dataclass(slots=True)
class _Counters:
    created: int = 0
    started: int = 0
    ended: int = 0
    failed: int = 0


class ExecService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self._records: dict[str, ExecRecord] = {}
        self._processes: dict[str, _Cached] = {}  # cid → the container's OCI process
        self._monitors: dict[str, HealthMonitor] = {}
        self._gc_task: asyncio.Task[None] | None = None
        self.counters = _Counters()
        self.fast = FastExec(containers.config.runtime_root, containers.host_facts.last_cap)

    # --- records ----------------------------------------------------------------------------------

    def create(self, ref: str, ec: ExecConfig, *, detach_keys: bytes = b"") -> str:
        """Record a new exec; returns its ID. 400 without a command, 404/409 for the container."""
        if not ec.Cmd:
            raise InvalidParameter("No exec command specified")
        sup = self.containers.get(ref)
        check_exec_target(sup, ref)
        record = self._new_record(sup.container, ec, detach_keys)
        sup.event(f"exec_create: {record.command_text}", execID=record.eid)
        return record.eid

    def _new_record(
        self, c: Container, ec: ExecConfig, detach_keys: bytes, *, probe: bool = False
    ) -> ExecRecord:
        cmd = list(ec.Cmd or [])
        record = ExecRecord(
            eid=ids.new_id(),
            cid=c.cid,
            entrypoint=cmd[0],
            args=cmd[1:],
            env=replace_or_append_env(
                container_env(c.config, tty=ec.Tty, link_env=c.state.link_env), ec.Env or []
            ),
            user=ec.User or c.config.User,
            user_given=bool(ec.User),
            working_dir=ec.WorkingDir or c.config.WorkingDir,
            tty=ec.Tty,
            privileged=ec.Privileged,
            open_stdin=ec.AttachStdin,
            open_stdout=ec.AttachStdout,
            open_stderr=ec.AttachStderr,
            detach_keys=detach_keys,
            console_size=list(ec.ConsoleSize) if ec.ConsoleSize else None,
            probe=probe,
        )
        self._records[record.eid] = record
        c.exec_ids.append(record.eid)
        self.counters.created += 1
        if self._gc_task is None:
            self._gc_task = asyncio.create_task(self._gc_loop(), name="exec-gc")
        return record

    def get(self, eid: str) -> ExecRecord:
        """The exec of a container that still exists (404 otherwise, as dockerd)."""
        record = self._records.get(eid)
        if record is None:
            raise NoSuchExec(eid)
        try:
            self.containers.get(record.cid)
        except NoSuchContainer:
            raise NoSuchExec(eid) from None
        return record

    def supervisor_for(self, eid: str) -> Supervisor:
        """The exec's container, checked as dockerd's getExecConfig checks it (404/409)."""
        record = self._records.get(eid)
        if record is None:
            raise NoSuchExec(eid)
        try:
            sup = self.containers.get(record.cid)
        except NoSuchContainer:
            raise NoSuchContainer(eid) from None
        check_exec_target(sup, sup.container.cid)
        return sup

    def reserve(self, eid: str) -> ExecRecord:
        """Mark an exec as starting (no await between the checks and the mark: one start wins)."""
        self.supervisor_for(eid)
        record = self._records[eid]
        if record.exit_code is not None:
            raise Conflict(f"Error: Exec command {eid} has already run")
        if record.running:
            raise Conflict(f"Error: Exec command {eid} is already running")
        record.running = True
        return record

    def resize(self, eid: str, height: int, width: int) -> None:
        """Resize the exec's pty; before the process started, the size waits for it."""
        self.supervisor_for(eid)
        record = self._records[eid]
        record.pending_size = (height, width)
        if record.process is not None:
            record.process.resize(height, width)

    # --- starting ---------------------------------------------------------------------------------

    async def start(self, record: ExecRecord, sink: Sink | None) -> ExecProcess:
        """Start a reserved exec. With a sink, output (and stdin, if opened) is connected; without
        one (`Detach`), the process gets /dev/null. Raises PydockError when it cannot start; the
        record then holds exit code 126/127."""
        sup = self.containers.get(record.cid)
        c = sup.container
        sup.event(f"exec_start: {record.command_text}", execID=record.eid)
        attached = sink is not None
        streams = ExecStreams(
            tty=record.tty,
            stdin=record.open_stdin and attached,
            stdout=record.open_stdout and attached,
            stderr=record.open_stderr and attached,
            merged=record.probe,
        )
        proc = ExecProcess(streams, sink, on_exit=lambda code: self._ended(record, code))
        if record.pending_size is not None:
            proc.resize(*record.pending_size)
        record.process = proc
        try:
            process = await self._exec_process(c, record)
            record.pid = await proc.spawn(self._starter(c, record, process))
        except BaseException as exc:
            record.process = None
            record.running = False
            message = exc.message if isinstance(exc, PydockError) else str(exc)
            record.exit_code = start_failure_code(message)
            record.ended_at = time.monotonic()
            self.counters.failed += 1
            _discard(c.exec_ids, record.eid)
            if isinstance(exc, OSError):
                raise InvalidParameter(f"exec failed: {exc}") from exc
            raise
        self.counters.started += 1
        return proc

    def _starter(self, c: Container, record: ExecRecord, process: Process) -> Starter:
        """pydock's exec helper when it can confine the process as runc would, else runc exec."""
        launcher = self.containers.launcher
        runtime = launcher.runtime(c)
        fallback = runtime_starter(
            runtime,
            c.cid,
            process,
            pid_file=launcher.runtime_dir(c) / f"exec-{record.eid[:16]}.pid",
            console_socket=self._console_path(c, record) if record.tty else None,
        )
        if Path(getattr(runtime, "binary", "")).name != "runc":
            return fallback

        async def start(stdio: Stdio) -> tuple[int, int | None]:
            try:
                return await self.fast.exec(c.cid, process, stdio)
            except FastExecUnavailable as exc:
                log.debug("exec through the OCI runtime: %s", exc, extra={"container": c.short_id})
                return await fallback(stdio)

        return start

    def _console_path(self, c: Container, record: ExecRecord) -> Path:
        return self.containers.launcher.console_socket_path(c).with_name(f"x{record.eid[:15]}.sock")

    async def _exec_process(self, c: Container, record: ExecRecord) -> Process:
        cached = self._processes.get(c.cid)
        if cached is None or cached.started_at != c.state.started_at:
            path = self.containers.launcher.runtime_dir(c) / "config.json"
            try:
                spec = await asyncio.to_thread(store.read_json, path)
            except (OSError, ValueError) as exc:
                raise NotRunning(c.cid) from exc
            cached = _Cached(c.state.started_at, Process.model_validate(spec.get("process") or {}))
            self._processes[c.cid] = cached
        user = None
        if record.user_given:
            rootfs = self.containers.launcher.rootfs(c).target
            user = await asyncio.to_thread(resolve_user, rootfs, record.user, c.host_config.GroupAdd or [])
        # A resize that came before the start is the pty's initial size (runc sets it before
        # the process runs, so even an immediate `stty size` sees it).
        size = list(record.pending_size) if record.pending_size else record.console_size
        ec = ExecConfig(
            Cmd=[record.entrypoint, *record.args],
            Tty=record.tty,
            Privileged=record.privileged,
            WorkingDir=record.working_dir,
            ConsoleSize=size,
        )
        process = build_exec_process(cached.process, c.config, ec, user=user, host=self.containers.host_facts)
        process.env = list(record.env)
        return process

    def _ended(self, record: ExecRecord, code: int) -> None:
        record.exit_code = code
        record.running = False
        record.ended_at = time.monotonic()
        self.counters.ended += 1
        try:
            sup = self.containers.get(record.cid)
        except NoSuchContainer:
            return
        _discard(sup.container.exec_ids, record.eid)
        sup.event("exec_die", execID=record.eid, exitCode=str(code))
        self._trim()

    def client_gone(self, record: ExecRecord) -> None:
        """The client went away mid-stream. With a TTY that is how the docker CLI detaches (it
        reads ctrl-p ctrl-q itself and closes the connection), so the process runs on with its
        output dropped, as under dockerd. Without one there are no detach keys and nobody left
        to read or end it: `terminate`."""
        if record.tty:
            if record.process is not None:
                record.process.detach_sink()
        else:
            self.terminate(record)

    def terminate(self, record: ExecRecord) -> None:
        """SIGTERM, SIGKILL after TERM_GRACE_S."""
        proc = record.process
        if proc is None or not proc.running:
            return
        proc.detach_sink()
        proc.signal(signal.SIGTERM)
        asyncio.get_running_loop().call_later(TERM_GRACE_S, proc.signal, signal.SIGKILL)

    def detached(self, record: ExecRecord) -> None:
        """The client detached (its detach keys): the process runs on, its output is dropped."""
        if record.process is not None:
            record.process.detach_sink()
        with contextlib.suppress(NoSuchContainer):
            self.containers.get(record.cid).event("exec_detach", execID=record.eid)

    # --- health probes ----------------------------------------------------------------------------

    async def probe(self, sup: Supervisor, test: list[str], timeout_s: float) -> tuple[int, str]:
        """Run a health check command as dockerd does (an exec with the container's user, workdir
        and env, stdout and stderr into one 4 KiB buffer). Returns (exit code, output); a probe
        over `timeout_s` is killed and gives (-1, "Health check exceeded timeout (...)").
        Raises PydockError when it cannot start."""
        c = sup.container
        check_exec_target(sup, c.cid)
        argv = probe_command(test, c.config.Shell)
        record = self._new_record(
            c, ExecConfig(Cmd=argv, AttachStdout=True, AttachStderr=True), b"", probe=True
        )
        record.running = True
        sup.event(f"exec_create: {record.command_text}", execID=record.eid)
        buffer = LimitedBuffer()
        proc = await self.start(record, buffer)
        try:
            async with asyncio.timeout(timeout_s):
                code = await proc.wait()
        except TimeoutError:
            proc.signal(signal.SIGKILL)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(PROBE_KILL_WAIT_S):
                    await proc.wait()
            return -1, buffer.timeout_text(timeout_s)
        except asyncio.CancelledError:
            proc.signal(signal.SIGKILL)
            raise
        return code, buffer.text()

    # --- lifecycle hooks --------------------------------------------------------------------------

    def container_started(self, sup: Supervisor) -> None:
        cid = sup.container.cid
        self._processes.pop(cid, None)
        self.fast.forget(cid)
        self.fast.warm()
        old = self._monitors.pop(cid, None)
        if old is not None:
            old.stop()
        monitor = HealthMonitor.for_container(sup, self.probe)
        if monitor is not None:
            self._monitors[cid] = monitor
            if sup.container.state.status == Status.RUNNING:  # a re-adopted one may be paused
                monitor.start()

    def container_paused(self, sup: Supervisor, paused: bool) -> None:
        monitor = self._monitors.get(sup.container.cid)
        if monitor is not None:
            if paused:
                monitor.stop()
            else:
                monitor.start()

    def container_stopped(self, sup: Supervisor) -> None:
        c = sup.container
        self._processes.pop(c.cid, None)
        self.fast.forget(c.cid)
        monitor = self._monitors.pop(c.cid, None)
        if monitor is not None:
            monitor.stop()
        for eid in list(c.exec_ids):
            record = self._records.get(eid)
            if record is None:
                continue
            if record.process is not None and record.process.running:
                record.process.signal(signal.SIGKILL)  # dies with the pid namespace anyway
            elif not record.running:
                del self._records[eid]  # created but never started: dockerd forgets it too
        c.exec_ids.clear()

    # --- garbage collection -----------------------------------------------------------------------

    def _trim(self) -> None:
        ended = [r for r in self._records.values() if r.exit_code is not None]
        if len(ended) > MAX_ENDED:
            ended.sort(key=lambda r: r.ended_at)
            for record in ended[: len(ended) - MAX_ENDED]:
                self._records.pop(record.eid, None)

    def collect_garbage(self) -> int:
        """One GC pass: drop records marked last time (or whose container is gone), mark the
        ended ones. Returns how many were dropped."""
        dropped = 0
        for eid, record in list(self._records.items()):
            gone = False
            try:
                self.containers.get(record.cid)
            except NoSuchContainer:
                gone = True
            if gone or record.can_remove:
                del self._records[eid]
                dropped += 1
            elif record.exit_code is not None:
                record.can_remove = True
        return dropped

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(GC_INTERVAL_S)
            dropped = self.collect_garbage()
            if dropped:
                log.debug("dropped %d ended exec records", dropped)

    def stats(self) -> dict[str, int]:
        running = sum(1 for r in self._records.values() if r.running)
        return {
            "records": len(self._records),
            "running": running,
            "monitors": len(self._monitors),
            "created": self.counters.created,
            "ended": self.counters.ended,
            "failed": self.counters.failed,
            "fast_path": self.fast.used,
        }

    async def close(self) -> None:
        """Daemon shutdown: stop the monitors and the GC, let go of exec processes (their
        containers' fate is the container service's business)."""
        for monitor in list(self._monitors.values()):
            monitor.stop()
        await asyncio.gather(*(m.wait_stopped() for m in self._monitors.values()), return_exceptions=True)
        self._monitors.clear()
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
            self._gc_task = None
        for record in self._records.values():
            if record.process is not None and record.process.running:
                record.process.close()
        await self.fast.close()


def _discard(items: list[str], value: str) -> None:
    with contextlib.suppress(ValueError):
        items.remove(value)
