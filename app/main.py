"""`pydockd`: parse flags, become child subreaper, start the engine, serve the API, shut down.

One process, one event loop (uvloop when installed). uvicorn serves the FastAPI app on every
`-H` listener with our `HijackProtocol`; SIGTERM/SIGINT stop accepting requests, then the engine
shuts down (stopping containers unless `--live-restore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import resource
import signal
import sys
from collections.abc import Generator
from pathlib import Path

import uvicorn

from app import logfmt
from app.api import create_app
from app.flags import ConfigError, parse_args
from app.limits import BodyLimitMiddleware, LimitedProtocol
from app.listeners import Listener, ListenerError, open_listeners
from runtime.config import DaemonConfig
from runtime.engine import VERSION, Engine
from runtime.errors import PydockError
from runtime.oci import runtime_usable

log = logging.getLogger("pydock.daemon")

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned container inits (after `runc create` exits) are re-parented to us, so we can reap
    them with their real exit status."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def write_pidfile(path: Path) -> None:
    try:
        old = int(path.read_text().strip() or "0")
    except (FileNotFoundError, ValueError):
        old = 0
    if old > 0 and old != os.getpid() and Path(f"/proc/{old}").exists():
        cmdline = Path(f"/proc/{old}/cmdline").read_bytes()
        if b"pydockd" in cmdline:
            raise ListenerError(f"pid file found, ensure pydock is not running or delete {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}")


class Server(uvicorn.Server):
    """uvicorn's server, serving our pre-opened listeners (each with its own TLS context) and
    leaving signal handling to the daemon."""

    def __init__(self, config: uvicorn.Config, listeners: list[Listener]) -> None:
        super().__init__(config)
        self.listeners = listeners

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # pydockd installs its own handlers (see `serve`)

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await self.lifespan.startup()
        config = self.config
        loop = asyncio.get_running_loop()

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        self.servers = []
        for listener in self.listeners:
            server = await loop.create_server(
                create_protocol, sock=listener.sock, ssl=listener.ssl_context, backlog=1024
            )
            self.servers.append(server)
            log.info("API listening", extra={"listener": listener.spec})
        self.started = True


def uvicorn_config(app: object, config: DaemonConfig) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        http=LimitedProtocol,  # HijackProtocol + size limits and slow-client timeouts
        lifespan="off",
        loop="none",
        log_config=None,
        access_log=config.debug,
        server_header=False,
        proxy_headers=False,  # no reverse proxy in front of a UNIX socket: skip that middleware
        date_header=True,
        headers=[
            ("Api-Version", "1.41"),
            ("Docker-Experimental", "false"),
            ("Ostype", "linux"),
            ("Server", f"pydock/{VERSION} (linux)"),
        ],
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=64 * 1024,
    )


async def serve(config: DaemonConfig) -> int:
    loop = asyncio.get_running_loop()
    engine = Engine(config)
    listeners = open_listeners(config)
    try:
        await engine.start()
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    warn_unusable_default_runtime(config)
    server = Server(uvicorn_config(BodyLimitMiddleware(create_app(engine)), config), listeners)

    def on_signal(signum: int) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    loop.add_signal_handler(
        signal.SIGHUP, lambda: log.info("SIGHUP received: configuration reload is not supported")
    )
    try:
        await server.serve()
    finally:
        for listener in listeners:
            listener.close()
        await engine.shutdown()
    return 0


def warn_unusable_default_runtime(config: DaemonConfig) -> None:
    """Say at startup when the default runtime cannot run containers here (crun on a hybrid
    cgroup host): every `docker run` would fail otherwise, with no word in the daemon's log."""
    spec = config.runtime()
    if spec is None:
        return
    usable, why = runtime_usable(spec)
    if not usable:
        log.warning("the default runtime cannot run containers on this host: %s", why)


def dump_tasks() -> None:
    """SIGUSR1: log every asyncio task's stack (dockerd dumps goroutines the same way)."""
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=8)
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        log.info("task %s: %s", task.get_name(), where or "(not started)")


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        loop = asyncio.new_event_loop()
    return loop


def main(argv: list[str] | None = None) -> int:
    try:
        config, log_format = parse_args(argv)
    except ConfigError as exc:
        print(f"pydockd: {exc}", file=sys.stderr)
        return 1
    logfmt.setup(config.log_level, log_format)
    if os.geteuid() != 0:
        print("pydockd needs to be started with root privileges", file=sys.stderr)
        return 1
    try:
        become_subreaper()
        raise_nofile_limit()
        if config.pidfile is not None:
            write_pidfile(config.pidfile)
    except (OSError, ListenerError) as exc:
        print(f"pydockd: {exc}", file=sys.stderr)
        return 1
    log.info("starting pydockd", extra={"version": VERSION, "pid": os.getpid()})
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(serve(config))
    except (ListenerError, PydockError, OSError) as exc:
        log.error("pydockd failed to start: %s", exc)
        print(f"pydockd: {exc}", file=sys.stderr)
        return 1
    finally:
        if config.pidfile is not None:
            with contextlib.suppress(FileNotFoundError):
                config.pidfile.unlink()


if __name__ == "__main__":
    sys.exit(main())
