"""Listening sockets for `-H`: `unix://PATH`, `tcp://HOST:PORT`, `fd://[N]` (systemd activation).

The UNIX socket is bound under a temporary name with a restrictive umask, given its final owner
(root:`--group`) and mode 0660, and only then renamed into place: it is never reachable with
looser permissions. TCP needs mutual TLS (`--tlsverify`) unless `--insecure-tcp` forces it.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import logging
import os
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from runtime.config import DaemonConfig, TlsConfig

log = logging.getLogger("pydock.api")

SD_LISTEN_FDS_START = 3


class ListenerError(Exception):
    """A listener could not be set up; `pydockd` prints it and exits 1."""


@dataclass(slots=True)
class Listener:
    spec: str
    sock: socket.socket
    ssl_context: ssl.SSLContext | None
    unix_path: Path | None = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_path.unlink()


def _unix_listener(path: Path, group: str | None) -> socket.socket:
    gid = 0
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            if group.isdigit():
                gid = int(group)
            else:
                raise ListenerError(f"can't create unix socket {path}: group {group!r} not found") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ListenerError(f"can't create unix socket {path}: a file that is not a socket is in the way")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket of a dead daemon
        else:
            raise ListenerError(f"can't create unix socket {path}: a daemon is already listening there")
        finally:
            probe.close()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is born 0600: nobody else can connect yet
    try:
        sock.bind(str(tmp))
    finally:
        os.umask(old_umask)
    try:
        os.chown(tmp, 0, gid)
        os.chmod(tmp, 0o660)
        sock.listen(1024)
        os.rename(tmp, path)
    except OSError:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    sock.setblocking(False)
    return sock


def _tls_context(tls: TlsConfig) -> ssl.SSLContext:
    if tls.cert is None or tls.key is None:
        raise ListenerError("TLS needs both --tlscert and --tlskey")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ListenerError(f"could not load TLS certificate {tls.cert} / key {tls.key}: {exc}") from exc
    if tls.verify:
        if tls.ca_cert is None:
            raise ListenerError("--tlsverify needs --tlscacert to verify client certificates")
        try:
            ctx.load_verify_locations(cafile=str(tls.ca_cert))
        except (OSError, ssl.SSLError) as exc:
            raise ListenerError(f"could not load TLS CA certificate {tls.ca_cert}: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tcp_listener(spec: str, config: DaemonConfig) -> tuple[socket.socket, ssl.SSLContext | None]:
    parts = urlsplit(spec)
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port
    except ValueError as exc:
        raise ListenerError(f"invalid -H {spec!r}: {exc}") from exc
    mutual = config.tls is not None and config.tls.verify
    if port is None:
        port = 2376 if config.tls is not None else 2375
    if not mutual:
        if not _is_loopback(host):
            raise ListenerError(
                f"refusing to listen on {spec} without mutual TLS: anyone who can connect would be "
                "root on this host. Use --tlsverify --tlscacert --tlscert --tlskey (--insecure-tcp "
                "is only for loopback addresses)"
            )
        if not config.allow_insecure_tcp:
            raise ListenerError(
                f"refusing to listen on {spec} without mutual TLS: anyone who can connect would be "
                "root on this host. Use --tlsverify --tlscacert --tlscert --tlskey, or pass "
                "--insecure-tcp to force it on this loopback address"
            )
        log.warning(
            "binding to %s without mutual TLS: any local user who can connect has root on this host", spec
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"can't listen on {spec}: {exc}") from exc
    sock.setblocking(False)
    return sock, _tls_context(config.tls) if config.tls is not None else None


def _activation_fds(spec: str) -> list[int]:
    """File descriptors passed by systemd (LISTEN_PID/LISTEN_FDS), or the one `fd://N` names."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        raise ListenerError(
            f"no sockets found via socket activation for {spec}: LISTEN_PID is not this process"
        )
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    if count <= 0:
        raise ListenerError(f"no sockets found via socket activation for {spec}: LISTEN_FDS is 0")
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    wanted = spec.removeprefix("fd://")
    if wanted:
        if not wanted.isdigit() or int(wanted) not in fds:
            raise ListenerError(f"too few socket activated files passed in for {spec}")
        fds = [int(wanted)]
    return fds


def open_listeners(config: DaemonConfig) -> list[Listener]:
    """Open every `-H` listener; on failure close what was opened and raise ListenerError."""
    opened: list[Listener] = []
    try:
        for spec in config.hosts:
            if spec.startswith("unix://") or spec.startswith("/"):
                path = Path(spec.removeprefix("unix://") or "/var/run/pydock.sock")
                opened.append(Listener(spec, _unix_listener(path, config.group), None, path))
            elif spec.startswith("tcp://"):
                sock, ctx = _tcp_listener(spec, config)
                opened.append(Listener(spec, sock, ctx))
            elif spec.startswith("fd://"):
                for fd in _activation_fds(spec):
                    sock = socket.socket(fileno=fd)
                    sock.setblocking(False)
                    is_tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
                    ctx = _tls_context(config.tls) if is_tcp and config.tls is not None else None
                    opened.append(Listener(f"fd://{fd}", sock, ctx))
            else:
                raise ListenerError(f"invalid -H {spec!r}: use unix://PATH, tcp://HOST:PORT or fd://")
    except BaseException:
        for listener in opened:
            listener.close()
        raise
    os.environ.pop("LISTEN_PID", None)
    os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    return opened
