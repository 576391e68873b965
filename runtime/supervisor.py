"""One supervisor task per container: the containerd-shim role, without a process.

The supervisor is the only code that changes its container's state. Requests (start, stop,
kill, pause, remove, ...) are messages in its inbox, handled one at a time against the state
machine `created → running ⇄ paused → exited → (restarting → running) … → removing`; callers
await a future. Nothing long blocks the inbox: a stop sends the signal, arms a kill timer and
returns a future that the exit resolves.

Starting prepares the rootfs, /etc files, stdio and the OCI bundle (`runtime/launch.py`), runs
the OCI runtime, and watches the container's init through a pidfd. pydockd is child subreaper,
so once the runtime exits the init is our child and `waitid(P_PIDFD)` gives its real status.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime import exitstatus
from runtime.errors import (
    Conflict,
    NotModified,
    NotRunning,
    PydockError,
    SystemError_,
)
from runtime.launch import Launcher
from runtime.logs import LogWriter, parse_size
from runtime.records import Container, Status, now_rfc3339, parse_rfc3339
from runtime.signals import parse_signal
from runtime.stdio import StdioHub

log = logging.getLogger("pydock.supervisor")

DEFAULT_STOP_TIMEOUT_S = 10
RESTART_BACKOFF_START_S = 0.1
RESTART_BACKOFF_MAX_S = 60.0
RESTART_RESET_AFTER_S = 10.0


@dataclass(slots=True)
class ExitResult:
    code: int
    error: str = ""


@dataclass(slots=True)
class _Msg:
    reply: asyncio.Future[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.reply = asyncio.get_running_loop().create_future()


@dataclass(slots=True)
class Start(_Msg):
    pass


@dataclass(slots=True)
class Stop(_Msg):
    timeout_s: int | None
    signal: str | None


@dataclass(slots=True)
class Kill(_Msg):
    signal: str | None
    ref: str


@dataclass(slots=True)
class Pause(_Msg):
    pass


@dataclass(slots=True)
class Unpause(_Msg):
    pass


@dataclass(slots=True)
class Remove(_Msg):
    force: bool
    volumes: bool


@dataclass(slots=True)
class InitExited(_Msg):
    pidfd: int


@dataclass(slots=True)
class RestartDue(_Msg):
    pass


@dataclass(slots=True)
class Call(_Msg):
    """Run a function inside the supervisor's turn (rename, update, ...); an awaitable it
    returns is awaited there too."""

    fn: Callable[[], Any]


def start_failure_exit_code(message: str) -> int:
    """dockerd's mapping from a start error to the container's exit code (moby daemon/start.go)."""
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    if "permission denied" in message:
        return 126
    return 128


class Supervisor:
    def __init__(self, container: Container, launcher: Launcher) -> None:
        self.container = container
        self.launcher = launcher
        self.ctx = launcher.ctx
        config = container.config
        self.stdio = StdioHub(
            directory=launcher.runtime_dir(container),
            tty=config.Tty,
            open_stdin=config.OpenStdin,
            stdin_once=config.StdinOnce,
        )
        self.log_writer: LogWriter | None = None
        self._inbox: asyncio.Queue[_Msg] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._pidfd: int | None = None
        self._exit_waiters: list[asyncio.Future[ExitResult]] = []
        self._removed_waiters: list[asyncio.Future[ExitResult]] = []
        self._stop_waiters: list[asyncio.Future[None]] = []
        self._pending_remove: tuple[asyncio.Future[None], bool] | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._restart_timer: asyncio.TimerHandle | None = None
        self._restart_delay_s = RESTART_BACKOFF_START_S
        self._removed = False
        self._stopping_signal: int | None = None

    # --- lifecycle of the task ----------------------------------------------------------------

    def spawn(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"supervisor-{self.container.short_id}")
        return self._task

    async def close(self) -> None:
        """Stop the task (daemon shutdown). The container itself is left as it is."""
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        if self._restart_timer is not None:
            self._restart_timer.cancel()
        if self._pidfd is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.stdio.close_readers()
        if self.log_writer is not None:
            self.log_writer.close()
            self.log_writer = None

    async def _run(self) -> None:
        while True:
            msg = await self._inbox.get()
            try:
                result = await self._handle(msg)
            except asyncio.CancelledError:
                if not msg.reply.done():
                    msg.reply.cancel()
                raise
            except BaseException as exc:
                if not isinstance(exc, PydockError):
                    log.exception("supervisor error", extra={"container": self.container.short_id})
                if not msg.reply.done():
                    msg.reply.set_exception(exc)
            else:
                if not msg.reply.done():
                    msg.reply.set_result(result)
            if self._removed:
                return

    async def request(self, msg: _Msg) -> Any:
        """Send a message and await its result. A caller that goes away does not cancel the work."""
        if self._removed:
            raise Conflict(f"container {self.container.cid} is being removed")
        self._inbox.put_nowait(msg)
        return await asyncio.shield(msg.reply)

    async def _handle(self, msg: _Msg) -> Any:
        match msg:
            case Start():
                return await self._start()
            case Stop(timeout_s=timeout_s, signal=sig):
                return self._stop(timeout_s, sig)
            case Kill(signal=sig, ref=ref):
                return self._kill(sig, ref)
            case Pause():
                return await self._pause()
            case Unpause():
                return await self._unpause()
            case Remove():
                return await self._remove(msg)
            case InitExited(pidfd=pidfd):
                return await self._on_exit(pidfd)
            case RestartDue():
                return await self._restart_due()
            case Call(fn=fn):
                result = fn()
                return await result if inspect.isawaitable(result) else result
        raise SystemError_(f"unknown message {type(msg).__name__}")

    # --- state ----------------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        return self.container.state.status

    async def persist_state(self) -> None:
        """Write state.json. A failure (a full disk) is logged, not raised: the in-memory state
        stays authoritative and the next change writes it again."""
        try:
            await asyncio.to_thread(self.container.save_state)
        except OSError as exc:
            log.error(
                "could not persist container state: %s", exc, extra={"container": self.container.short_id}
            )

    def _event(self, action: str, **extra: str) -> None:
        c = self.container
        attrs = {"image": c.config.Image or c.image_id, "name": c.name}
        attrs.update({k: v for k, v in (c.config.Labels or {}).items()})
        attrs.update(extra)
        self.ctx.events.publish("container", action, c.cid, attrs)

    def event(self, action: str, **extra: str) -> None:
        """Publish a container event (for callers outside the supervisor: attach, exec, ...)."""
        self._event(action, **extra)

    # --- start --------------------------------------------------------------------------------

    def _open_log(self) -> None:
        if self.log_writer is not None and not self.log_writer.closed:
            return
        opts = dict(self.ctx.config.log_opts)
        opts.update(self.container.host_config.LogConfig.Config or {})
        max_size = parse_size(opts["max-size"]) if opts.get("max-size") else None
        max_file = int(opts.get("max-file", "1") or 1)
        self.log_writer = LogWriter(self.container.log_path, max_size=max_size, max_file=max_file)
        self.stdio.log_writer = self.log_writer

    async def _start(self) -> None:
        state = self.container.state
        if state.status in (Status.RUNNING, Status.PAUSED):
            raise NotModified()
        if state.status == Status.REMOVING or self._pending_remove is not None:
            raise Conflict("container is marked for removal and cannot be started")
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        state.manually_stopped = False
        await self._launch()
        self._event("start")

    async def _launch(self) -> None:
        """Bring the container up; on failure record the error and clean up what was made."""
        c = self.container
        state = c.state
        if c.config.Tty or not c.host_config.LogConfig.Type or c.host_config.LogConfig.Type == "json-file":
            self._open_log()
        try:
            pid = await self.launcher.launch(c, self.stdio)
        except PydockError as exc:
            state.error = exc.message
            state.error_kind = exc.kind
            state.exit_code = start_failure_exit_code(exc.message)
            if state.status not in (Status.EXITED, Status.CREATED):
                state.status = Status.EXITED
            await self.persist_state()
            self._event("die", exitCode=str(state.exit_code))
            self._resolve_exit(ExitResult(state.exit_code, exc.message))
            if c.host_config.AutoRemove:
                await self._finish_removal(volumes=True)
            raise
        state.pid = pid
        state.pid_start_time = _proc_start_time(pid)
        state.status = Status.RUNNING
        state.error = ""
        state.error_kind = ""
        state.exit_code = 0
        state.oom_killed = False
        state.started_at = now_rfc3339()
        state.has_been_started = True
        self._watch(pid)
        self.ctx.lifecycle.container_started(self)  # health monitor (runtime/execs.py)
        await self.persist_state()

    def _watch(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Already gone and reaped by someone else: treat as exited now.
            fd = -1
        loop = asyncio.get_running_loop()
        if fd < 0:
            self._inbox.put_nowait(InitExited(pidfd=-1))
            return
        self._pidfd = fd

        def on_exit() -> None:
            loop.remove_reader(fd)
            self._inbox.put_nowait(InitExited(pidfd=fd))

        loop.add_reader(fd, on_exit)

    def adopt(self, pid: int, tty_master: int | None = None) -> None:
        """After a daemon restart: watch a container that kept running and reopen its stdio
        (FIFOs, or the pty master the fd keeper held while the daemon was away)."""
        self._open_log()
        self.stdio.reopen()
        if tty_master is not None:
            self.stdio.set_tty_master(tty_master)
        self.stdio.start_reading()
        self._watch(pid)
        self.ctx.lifecycle.container_started(self)

    # --- exit ---------------------------------------------------------------------------------

    async def _on_exit(self, pidfd: int) -> None:
        c = self.container
        state = c.state
        code, how = 255, "lost"
        if pidfd >= 0:
            learned = exitstatus.collect(pidfd, state.pid)
            if learned is not None:
                code, how = learned
            elif self._stopping_signal == signal.SIGKILL:
                code, how = 137, "signalled"  # SIGKILL cannot be caught: this is its status
            os.close(pidfd)
        self._pidfd = None
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None
        self.ctx.lifecycle.container_stopped(self)  # ends its execs and its health monitor
        oom = await self.launcher.oom_killed(c)
        self.stdio.finish()
        if self.log_writer is not None:
            self.log_writer.close()  # `logs --follow` ends when the container stops
            self.log_writer = None
        await self.launcher.teardown(c)
        ran_s = time.time() - parse_rfc3339(state.started_at)
        state.status = Status.EXITED
        state.pid = 0
        state.pid_start_time = 0
        state.exit_code = code
        state.oom_killed = oom
        state.finished_at = now_rfc3339()
        if how == "lost":
            state.error = "the exit status was lost while pydockd was not running"
        log.info(
            "container exited",
            extra={"container": c.short_id, "exit_code": code, "how": how, "ran_s": round(ran_s, 3)},
        )
        if oom:
            self._event("oom")
        self._event("die", exitCode=str(code))
        if self._stopping_signal is not None:
            self._event("stop")
        self._stopping_signal = None
        for waiter in self._stop_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._stop_waiters.clear()
        self._resolve_exit(ExitResult(code))

        if self._pending_remove is not None:
            (removed, volumes), self._pending_remove = self._pending_remove, None
            await self._finish_removal(volumes=volumes)
            if not removed.done():
                removed.set_result(None)
            return
        if self._should_restart(code, ran_s):
            await self._schedule_restart(ran_s)
            return
        await self.persist_state()
        if c.host_config.AutoRemove:
            await self._finish_removal(volumes=True)

    def _resolve_exit(self, result: ExitResult) -> None:
        waiters, self._exit_waiters = self._exit_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)

    def _should_restart(self, code: int, ran_s: float) -> bool:
        policy = self.container.host_config.RestartPolicy
        state = self.container.state
        if state.manually_stopped or self.ctx.is_stopping():
            return False
        name = policy.Name or "no"
        if name in ("always", "unless-stopped"):
            return True
        if name == "on-failure" and code != 0:
            return policy.MaximumRetryCount == 0 or state.restart_count < policy.MaximumRetryCount
        return False

    async def _schedule_restart(self, ran_s: float) -> None:
        state = self.container.state
        if ran_s >= RESTART_RESET_AFTER_S:
            self._restart_delay_s = RESTART_BACKOFF_START_S
        delay = self._restart_delay_s
        self._restart_delay_s = min(self._restart_delay_s * 2, RESTART_BACKOFF_MAX_S)
        state.status = Status.RESTARTING
        await self.persist_state()
        loop = asyncio.get_running_loop()
        self._restart_timer = loop.call_later(delay, lambda: self._inbox.put_nowait(RestartDue()))

    async def _restart_due(self) -> None:
        self._restart_timer = None
        state = self.container.state
        if state.status != Status.RESTARTING or state.manually_stopped:
            return
        state.restart_count += 1
        try:
            await self._launch()
        except PydockError as exc:
            log.warning("restart failed: %s", exc, extra={"container": self.container.short_id})
            if self._should_restart(state.exit_code, 0.0):
                await self._schedule_restart(0.0)
            return
        self._event("start")

    # --- stop / kill ------------------------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        pidfd = self._pidfd
        if pidfd is None:
            raise NotRunning(self.container.cid)
        # ProcessLookupError: it is exiting; the exit message is on its way.
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signum)

    def _stop(self, timeout_s: int | None, sig: str | None) -> asyncio.Future[None]:
        c = self.container
        state = c.state
        if state.status == Status.RESTARTING:
            if self._restart_timer is not None:
                self._restart_timer.cancel()
                self._restart_timer = None
            state.manually_stopped = True
            state.status = Status.EXITED
            self._event("stop")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiter.set_result(None)
            self.ctx.spawn(self.persist_state())
            return waiter
        if not state.running:
            raise NotModified()
        signum = parse_signal(sig or c.config.StopSignal or "SIGTERM")
        if timeout_s is None:
            timeout_s = c.config.StopTimeout if c.config.StopTimeout is not None else DEFAULT_STOP_TIMEOUT_S
        state.manually_stopped = True
        self._stopping_signal = signum
        waiter = asyncio.get_running_loop().create_future()
        self._stop_waiters.append(waiter)
        if timeout_s == 0:
            signum = signal.SIGKILL
        self._event("kill", signal=str(signum))
        self._signal(signum)
        if state.status == Status.PAUSED:
            self.ctx.spawn(self.launcher.resume(c))
        if timeout_s is not None and timeout_s >= 0 and signum != signal.SIGKILL:
            loop = asyncio.get_running_loop()
            self._kill_timer = loop.call_later(timeout_s, self._force_kill)
        return waiter

    def _force_kill(self) -> None:
        self._kill_timer = None
        if self._pidfd is not None:
            log.info("stop timeout: killing", extra={"container": self.container.short_id})
            self._stopping_signal = signal.SIGKILL
            self._event("kill", signal=str(int(signal.SIGKILL)))
            self._signal(signal.SIGKILL)

    def _kill(self, sig: str | None, ref: str) -> asyncio.Future[None] | None:
        """Send a signal; for SIGKILL return a future of the exit (dockerd's kill waits for it)."""
        c = self.container
        if not c.state.running:
            raise Conflict(f"Cannot kill container: {ref}: Container {c.cid} is not running")
        signum = parse_signal(sig) if sig else int(signal.SIGKILL)
        stop_signum = parse_signal(c.config.StopSignal or "SIGTERM")
        if signum in (signal.SIGKILL, stop_signum):
            # dockerd treats these as a manual stop: the restart policy does not bring it back.
            c.state.manually_stopped = True
            self._stopping_signal = signum
        waiter: asyncio.Future[None] | None = None
        if signum == signal.SIGKILL:
            waiter = asyncio.get_running_loop().create_future()
            self._stop_waiters.append(waiter)
        self._event("kill", signal=str(signum))
        self._signal(signum)
        if c.state.status == Status.PAUSED and signum == signal.SIGKILL:
            self.ctx.spawn(self.launcher.resume(c))
        return waiter

    # --- pause ----------------------------------------------------------------------------------

    async def _pause(self) -> None:
        c = self.container
        if c.state.status == Status.PAUSED:
            raise Conflict(f"Container {c.cid} is already paused")
        if c.state.status != Status.RUNNING:
            raise NotRunning(c.cid)
        await self.launcher.pause(c)
        c.state.status = Status.PAUSED
        self.ctx.lifecycle.container_paused(self, True)
        await self.persist_state()
        self._event("pause")

    async def _unpause(self) -> None:
        c = self.container
        if c.state.status != Status.PAUSED:
            raise SystemError_(f"Container {c.cid} is not paused")
        await self.launcher.resume(c)
        c.state.status = Status.RUNNING
        self.ctx.lifecycle.container_paused(self, False)
        await self.persist_state()
        self._event("unpause")

    # --- remove ---------------------------------------------------------------------------------

    async def _remove(self, msg: Remove) -> asyncio.Future[None] | None:
        c = self.container
        state = c.state
        if state.running:
            if not msg.force:
                raise Conflict(
                    f"You cannot remove a running container {c.cid}. Stop the container before "
                    "attempting removal or force remove"
                )
            # Kill, then finish the removal when the exit arrives; the caller awaits the future.
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._pending_remove = (waiter, msg.volumes)
            state.manually_stopped = True
            self._stopping_signal = signal.SIGKILL
            self._event("kill", signal=str(int(signal.SIGKILL)))
            self._signal(signal.SIGKILL)
            if state.status == Status.PAUSED:
                await self.launcher.resume(c)
            return waiter
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        await self._finish_removal(volumes=msg.volumes)
        return None

    async def _finish_removal(self, *, volumes: bool) -> None:
        c = self.container
        c.state.status = Status.REMOVING
        if self.log_writer is not None:
            self.log_writer.close()
            self.log_writer = None
        await self.launcher.destroy(c, remove_volumes=volumes)
        self._removed = True
        self._event("destroy")
        result = ExitResult(c.state.exit_code)
        self._resolve_exit(result)
        waiters, self._removed_waiters = self._removed_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)
        self.ctx.forget(c.cid)

    # --- waiting --------------------------------------------------------------------------------

    def wait_exit(self, condition: str) -> asyncio.Future[ExitResult]:
        """A future for `POST /wait`: `not-running`, `next-exit` or `removed`."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[ExitResult] = loop.create_future()
        state = self.container.state
        if condition == "removed":
            if self._removed:
                waiter.set_result(ExitResult(state.exit_code))
            else:
                self._removed_waiters.append(waiter)
        elif condition == "not-running" and state.status not in (
            Status.RUNNING,
            Status.PAUSED,
            Status.RESTARTING,
        ):
            waiter.set_result(ExitResult(state.exit_code))
        else:
            self._exit_waiters.append(waiter)
        return waiter


def _proc_start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
        return int(text.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0
