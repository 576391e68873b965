"""Host port reservation for published ports (`-p`, `-P`), done before a container starts.

Owns: turning Docker's PortBindings/ExposedPorts (and `-p` strings, for tools and tests) into
requests, and binding the host sockets for them: a fixed port, the first free one of a host
range (`-p 8000-8010:80`), or an ephemeral one from Docker's range 32768-60999 (`-P`,
`-p ip::80`). A port held by another mapping of this daemon fails with Docker's
`Bind for 0.0.0.0:8080 failed: port is already allocated`; one held by another program with
dockerd 28's `failed to bind host port for ...: address already in use`. A reservation is all
or nothing: on any failure every socket bound by that call is closed again.

The bound sockets are the reservation: the userland proxy accepts on them (TCP sockets are
listening as soon as they are reserved with `listen=True`), and closing them releases the port.
Binding a local socket does not block, and check-then-act on the registry has no `await` in
between, so `reserve` is a plain function called from the event loop. IPv4 only.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netproxy.iptables import Proto
from runtime.errors import (
    ExternalConnectivityFailed,
    HostPortBindFailed,
    InvalidParameter,
    PortAlreadyAllocated,
    PydockError,
)

EPHEMERAL_RANGE = (32768, 60999)  # Docker's default (the kernel's ip_local_port_range)
ANY = "0.0.0.0"  # noqa: S104 - publishing on every host address is what -p means
LISTEN_BACKLOG = 4096


@dataclass(frozen=True, slots=True)
class PortRequest:
    """One container port to publish: on host_ip, at a port in [start, end] (0: ephemeral)."""

    container_port: int
    proto: Proto = Proto.TCP
    host_ip: str = ANY
    host_port_start: int = 0
    host_port_end: int = 0

    @property
    def key(self) -> str:
        """Docker's port key, as in PortBindings and NetworkSettings.Ports: `80/tcp`."""
        return f"{self.container_port}/{self.proto}"


@dataclass(slots=True, eq=False)
class HostPort:
    """A reserved host port; `sock` is bound (and listening for TCP with `listen=True`)."""

    request: PortRequest
    host_ip: str
    host_port: int
    sock: socket.socket = field(repr=False)

    @property
    def proto(self) -> Proto:
        return self.request.proto

    @property
    def container_port(self) -> int:
        return self.request.container_port


# --- parsing ------------------------------------------------------------------------------------


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise InvalidParameter(f"invalid {what}: {text}")
    return int(text)


def _port_range(text: str, what: str) -> tuple[int, int]:
    if "-" in text:
        lo_s, hi_s = text.split("-", 1)
        lo, hi = _port(lo_s, what), _port(hi_s, what)
        if hi < lo:
            raise InvalidParameter(f"invalid range specified for {what}: {text}")
        return lo, hi
    value = _port(text, what)
    return value, value


def _proto(text: str) -> Proto:
    try:
        return Proto(text.lower() or "tcp")
    except ValueError:
        raise InvalidParameter(f"invalid proto: {text}") from None


def _host_ip(text: str) -> str:
    text = text.strip("[]")
    if not text:
        return ANY
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise InvalidParameter(f"invalid IP address: {text}") from None


def parse_port_key(key: str) -> tuple[int, int, Proto]:
    """`80/tcp`, `80`, `8000-8002/udp` -> (first, last, proto)."""
    port_s, _, proto_s = key.partition("/")
    lo, hi = _port_range(port_s, "port")
    return lo, hi, _proto(proto_s)


def parse_port_bindings(
    port_bindings: Mapping[str, Sequence[Mapping[str, str]] | None] | None,
    exposed_ports: Iterable[str] = (),
    *,
    publish_all: bool = False,
) -> list[PortRequest]:
    """HostConfig.PortBindings (+ ExposedPorts with PublishAllPorts) -> requests.

    `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`; an empty HostPort is ephemeral, a
    HostPort range takes the first free port in it. With `publish_all`, every exposed port
    without a binding gets an ephemeral one on 0.0.0.0, as `docker run -P`. IPv6 host
    addresses are skipped (IPv4 only).
    """
    requests: list[PortRequest] = []
    bound: set[tuple[int, Proto]] = set()
    for key, bindings in sorted((port_bindings or {}).items()):
        lo, hi, proto = parse_port_key(key)
        if lo != hi:
            raise InvalidParameter(f"invalid port specification: {key}")
        for binding in bindings or []:
            host_ip_s = binding.get("HostIp") or ""
            if ":" in host_ip_s:
                continue  # IPv6
            host_port_s = binding.get("HostPort") or ""
            start, end = _port_range(host_port_s, "hostPort") if host_port_s else (0, 0)
            requests.append(PortRequest(lo, proto, _host_ip(host_ip_s), start, end))
            bound.add((lo, proto))
    if publish_all:
        for key in sorted(exposed_ports):
            lo, hi, proto = parse_port_key(key)
            for port in range(lo, hi + 1):
                if (port, proto) not in bound:
                    requests.append(PortRequest(port, proto))
                    bound.add((port, proto))
    return requests


_PUBLISH = re.compile(
    r"^(?:(?:(?P<ip>\[[^\]]*\]|[0-9.]*):)?(?P<host>[0-9-]*):)?(?P<ctr>[0-9-]+)(?:/(?P<proto>\w+))?$"
)


def parse_publish(spec: str) -> list[PortRequest]:
    """Docker's `-p` syntax: `[ip:][hostPort|range:]containerPort|range[/proto]`."""
    m = _PUBLISH.match(spec.strip())
    if m is None:
        raise InvalidParameter(f"invalid port specification: {spec!r}")
    host_ip = _host_ip(m.group("ip") or "")
    proto = _proto(m.group("proto") or "tcp")
    c_lo, c_hi = _port_range(m.group("ctr"), "containerPort")
    host = m.group("host") or ""
    h_lo, h_hi = _port_range(host, "hostPort") if host else (0, 0)
    n = c_hi - c_lo + 1
    if host and n > 1 and (h_hi - h_lo + 1) != n:
        raise InvalidParameter(f"invalid ranges specified for container and host Ports: {spec}")
    if n == 1:
        return [PortRequest(c_lo, proto, host_ip, h_lo, h_hi)]
    return [
        PortRequest(c_lo + i, proto, host_ip, h_lo + i if host else 0, h_lo + i if host else 0)
        for i in range(n)
    ]


def port_map(ports: Iterable[HostPort]) -> dict[str, list[dict[str, str]]]:
    """NetworkSettings.Ports for the reserved ports: `{"80/tcp": [{"HostIp", "HostPort"}]}`."""
    out: dict[str, list[dict[str, str]]] = {}
    for p in ports:
        out.setdefault(p.request.key, []).append({"HostIp": p.host_ip, "HostPort": str(p.host_port)})
    return out


# --- reservation --------------------------------------------------------------------------------


def _bind(proto: Proto, host_ip: str, port: int, *, listen: bool) -> socket.socket:
    kind = socket.SOCK_STREAM if proto is Proto.TCP else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if proto is Proto.TCP:
            # As docker-proxy's Go listener: a port in TIME_WAIT is reusable. (Never for UDP,
            # where SO_REUSEADDR would let two sockets share the port.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host_ip, port))
        if listen and proto is Proto.TCP:
            sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class PortAllocator:
    """This daemon's table of reserved host ports, and the binding of new ones."""

    def __init__(self, ephemeral: tuple[int, int] = EPHEMERAL_RANGE) -> None:
        self.ephemeral = ephemeral
        self._held: dict[tuple[Proto, int], set[str]] = {}
        self._cursor: dict[Proto, int] = {}

    def _taken(self, proto: Proto, host_ip: str, port: int) -> bool:
        ips = self._held.get((proto, port))
        if not ips:
            return False
        return host_ip == ANY or ANY in ips or host_ip in ips

    def _hold(self, proto: Proto, host_ip: str, port: int) -> None:
        self._held.setdefault((proto, port), set()).add(host_ip)

    def _unhold(self, proto: Proto, host_ip: str, port: int) -> None:
        ips = self._held.get((proto, port))
        if ips is not None:
            ips.discard(host_ip)
            if not ips:
                del self._held[(proto, port)]

    def held(self) -> list[tuple[Proto, str, int]]:
        return sorted((proto, ip, port) for (proto, port), ips in self._held.items() for ip in ips)

    def reserve(
        self,
        requests: Sequence[PortRequest],
        *,
        listen: bool = True,
        container_ip: str | None = None,
        endpoint: str | None = None,
        endpoint_id: str = "",
    ) -> list[HostPort]:
        """Bind a host socket for every request, or none at all.

        Raises `PortAlreadyAllocated` (held by this daemon), `HostPortBindFailed` (bind(2)
        failed), `InvalidParameter`; wrapped in `ExternalConnectivityFailed` when `endpoint`
        is given, as dockerd reports it.
        """
        done: list[HostPort] = []
        try:
            for req in requests:
                done.append(self._reserve_one(req, listen=listen, container_ip=container_ip))
        except PydockError as exc:
            self.release(done)
            if endpoint is not None:
                raise ExternalConnectivityFailed(endpoint, endpoint_id, str(exc)) from exc
            raise
        except BaseException:
            self.release(done)
            raise
        return done

    def _reserve_one(self, req: PortRequest, *, listen: bool, container_ip: str | None) -> HostPort:
        target = f"{container_ip}:{req.container_port}" if container_ip else str(req.container_port)
        if req.host_port_start == 0:
            return self._reserve_ephemeral(req, listen=listen, target=target)
        last_error: PydockError | None = None
        for port in range(req.host_port_start, req.host_port_end + 1):
            if self._taken(req.proto, req.host_ip, port):
                last_error = PortAlreadyAllocated(req.host_ip, port)
                continue
            try:
                sock = _bind(req.proto, req.host_ip, port, listen=listen)
            except OSError as exc:
                last_error = HostPortBindFailed(req.host_ip, port, target, str(req.proto), _reason(exc))
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise last_error from exc
            self._hold(req.proto, req.host_ip, port)
            return HostPort(req, req.host_ip, port, sock)
        assert last_error is not None
        raise last_error

    def _reserve_ephemeral(self, req: PortRequest, *, listen: bool, target: str) -> HostPort:
        lo, hi = self.ephemeral
        size = hi - lo + 1
        start = self._cursor.get(req.proto, lo)
        for i in range(size):
            port = lo + (start - lo + i) % size
            if self._taken(req.proto, req.host_ip, port):
                continue
            try:
                sock = _bind(req.proto, req.host_ip, port, listen=listen)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise HostPortBindFailed(req.host_ip, 0, target, str(req.proto), _reason(exc)) from exc
            self._hold(req.proto, req.host_ip, port)
            self._cursor[req.proto] = port + 1 if port < hi else lo
            return HostPort(req, req.host_ip, port, sock)
        raise HostPortBindFailed(
            req.host_ip, 0, target, str(req.proto), "no free port in the ephemeral range"
        )

    def release(self, ports: Iterable[HostPort]) -> None:
        """Close the sockets and forget the ports; releasing twice is harmless."""
        for p in ports:
            if p.sock.fileno() != -1:
                self._unhold(p.proto, p.host_ip, p.host_port)
                p.sock.close()


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)
