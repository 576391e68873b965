"""The embedded DNS server (Docker's 127.0.0.11) for endpoints on user-defined networks.

Owns: one UDP and one TCP socket bound to 127.0.0.11:53 inside each attached network namespace
(made by a short-lived thread that enters the namespace, binds and leaves: `netns.run_in_netns`),
all served from the daemon's event loop; and one table of names per namespace that the caller
replaces as endpoints join and leave networks (`set_records`). A query for a name in the table
gets its A records (AAAA: an empty answer; PTR: the name of a known address). An unknown
single-label name gets NXDOMAIN; other names are forwarded to the host's non-loopback
resolvers, the way Docker's embedded server does (tests never rely on that).

The caller writes `nameserver 127.0.0.11` and `options ndots:0` into the endpoint's
resolv.conf. This module knows namespaces by a key and names by strings, never containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netproxy.netns import run_in_netns
from runtime.errors import SystemError_

log = logging.getLogger(__name__)

DNS_ADDRESS = "127.0.0.11"
DNS_PORT = 53
TTL_S = 600  # Docker's embedded DNS answers with TTL 600
UPSTREAM_TIMEOUT_S = 2.0
TCP_IDLE_TIMEOUT_S = 10.0
IP_FREEBIND = 15

QTYPE_A = 1
QTYPE_PTR = 12
QTYPE_AAAA = 28
CLASS_IN = 1
RCODE_OK, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_NOTIMP = 0, 1, 2, 3, 4


# --- wire format (pure) -------------------------------------------------------------------------


class DnsFormatError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Query:
    msg_id: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    question: bytes  # the question section as received, echoed in the answer


def parse_query(data: bytes) -> Query:
    """Parse a query with exactly one question; raises DnsFormatError."""
    if len(data) < 12:
        raise DnsFormatError("short message")
    msg_id, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qdcount != 1:
        raise DnsFormatError("not a single-question query")
    labels: list[str] = []
    pos = 12
    while True:
        if pos >= len(data):
            raise DnsFormatError("truncated name")
        length = data[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0 or pos + length > len(data):
            raise DnsFormatError("bad label")
        labels.append(data[pos : pos + length].decode("ascii", errors="replace"))
        pos += length
    if pos + 4 > len(data):
        raise DnsFormatError("truncated question")
    qtype, qclass = struct.unpack("!HH", data[pos : pos + 4])
    return Query(msg_id, flags, ".".join(labels).lower(), qtype, qclass, data[12 : pos + 4])


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


def build_response(
    query: Query, rcode: int, answers: Sequence[tuple[int, bytes]] = (), *, ttl_s: int = TTL_S
) -> bytes:
    """A response echoing the question; `answers` are (type, rdata) for the queried name."""
    opcode_rd = query.flags & 0x7900  # opcode and RD copied from the query
    flags = 0x8000 | 0x0400 | 0x0080 | opcode_rd | rcode  # QR, AA, RA
    out = struct.pack("!HHHHHH", query.msg_id, flags, 1, len(answers), 0, 0) + query.question
    for rtype, rdata in answers:
        # 0xC00C: a pointer to the name in the question
        out += struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, ttl_s, len(rdata)) + rdata
    return out


def reverse_name(ip: ipaddress.IPv4Address) -> str:
    return ".".join(reversed(str(ip).split("."))) + ".in-addr.arpa"


@dataclass(slots=True)
class NameTable:
    """One namespace's view: name -> addresses, and the reverse map for PTR queries."""

    names: dict[str, list[ipaddress.IPv4Address]] = field(default_factory=dict)
    reverse: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, records: Mapping[str, Iterable[str]]) -> NameTable:
        table = cls()
        for name, ips in records.items():
            key = name.strip(".").lower()
            addrs = [ipaddress.IPv4Address(ip) for ip in ips]
            table.names.setdefault(key, []).extend(addrs)
            for ip in addrs:
                table.reverse.setdefault(reverse_name(ip), name.strip("."))
        return table


def answer(table: NameTable, query: Query, *, can_forward: bool) -> bytes | None:
    """The local answer to `query`, or None when it should be forwarded upstream (pure)."""
    if (query.flags >> 11) & 0xF != 0:
        return build_response(query, RCODE_NOTIMP)
    if query.qclass != CLASS_IN:
        return build_response(query, RCODE_NOTIMP)
    if query.qtype == QTYPE_PTR and query.name in table.reverse:
        return build_response(query, RCODE_OK, [(QTYPE_PTR, encode_name(table.reverse[query.name]))])
    addrs = table.names.get(query.name)
    if addrs is not None:
        if query.qtype == QTYPE_A:
            return build_response(query, RCODE_OK, [(QTYPE_A, ip.packed) for ip in addrs])
        return build_response(query, RCODE_OK)  # the name exists; no records of that type
    if "." not in query.name or not can_forward:
        return build_response(query, RCODE_NXDOMAIN)
    return None


def host_upstreams(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's nameservers that a container can use: loopback ones left out (as Docker)."""
    servers: list[str] = []
    try:
        text = resolv_conf.read_text()
    except OSError:
        return servers
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                ip = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if ip.version == 4 and not ip.is_loopback:
                servers.append(str(ip))
    return servers


# --- the server ---------------------------------------------------------------------------------


def _bind_sockets() -> tuple[socket.socket, socket.socket]:
    """Runs inside the namespace: the UDP and TCP sockets on 127.0.0.11:53."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        for s in (udp, tcp):
            # lo may still be down when we bind; FREEBIND lets the bind happen anyway.
            s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            s.bind((DNS_ADDRESS, DNS_PORT))
        tcp.listen(64)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


@dataclass(slots=True, eq=False)
class _Endpoint:
    key: str
    udp: socket.socket
    tcp: socket.socket
    table: NameTable
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class DnsServer:
    """Serves 127.0.0.11 in every attached namespace from the event loop."""

    def __init__(self, upstreams: Sequence[str] | None = None) -> None:
        self.upstreams = list(upstreams) if upstreams is not None else host_upstreams()
        self._endpoints: dict[str, _Endpoint] = {}

    async def attach(self, key: str, netns_path: str | Path) -> None:
        """Start answering inside the namespace `netns_path`, known from now on as `key`.

        Raises `SystemError_` when the namespace cannot be entered or 127.0.0.11:53 is taken.
        Attaching the same key again is harmless.
        """
        if key in self._endpoints:
            return
        try:
            udp, tcp = await run_in_netns(netns_path, _bind_sockets)
        except OSError as exc:
            raise SystemError_(f"failed to start the embedded DNS server in {netns_path}: {exc}") from exc
        if key in self._endpoints:  # attached meanwhile by a concurrent call
            udp.close()
            tcp.close()
            return
        ep = _Endpoint(key, udp, tcp, NameTable())
        self._endpoints[key] = ep
        loop = asyncio.get_running_loop()
        loop.add_reader(udp.fileno(), self._on_udp, ep)
        self._own(ep, loop.create_task(self._accept_tcp(ep), name=f"dns-tcp-{key}"))

    def set_records(self, key: str, records: Mapping[str, Iterable[str]]) -> None:
        """Replace the names `key` resolves: {"web": ["10.99.0.2"], "db": [...], ...}."""
        ep = self._endpoints.get(key)
        if ep is None:
            raise SystemError_(f"no embedded DNS server for {key}")
        ep.table = NameTable.build(records)

    def keys(self) -> list[str]:
        return list(self._endpoints)

    async def detach(self, key: str) -> None:
        """Stop serving `key`: close its sockets, end its tasks. A missing key is fine."""
        ep = self._endpoints.pop(key, None)
        if ep is None:
            return
        asyncio.get_running_loop().remove_reader(ep.udp.fileno())
        tasks = list(ep.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ep.udp.close()
        ep.tcp.close()

    async def close(self) -> None:
        for key in list(self._endpoints):
            await self.detach(key)

    def _own(self, ep: _Endpoint, task: asyncio.Task[None]) -> None:
        ep.tasks.add(task)
        task.add_done_callback(ep.tasks.discard)

    # UDP

    def _on_udp(self, ep: _Endpoint) -> None:
        for _ in range(64):
            try:
                data, addr = ep.udp.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            reply = self._local(ep, data)
            if reply is not None:
                with contextlib.suppress(OSError):
                    ep.udp.sendto(reply, addr)
            elif data:
                loop = asyncio.get_running_loop()
                self._own(ep, loop.create_task(self._forward_udp(ep, data, addr)))

    def _local(self, ep: _Endpoint, data: bytes) -> bytes | None:
        """The answer from the table; b"" for garbage (dropped); None: forward upstream."""
        try:
            query = parse_query(data)
        except DnsFormatError:
            if len(data) >= 12:
                return data[:2] + struct.pack("!H", 0x8000 | RCODE_FORMERR) + b"\x00" * 8
            return b""
        return answer(ep.table, query, can_forward=bool(self.upstreams))

    async def _forward_udp(self, ep: _Endpoint, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self._upstream(data)
        if reply is not None:
            with contextlib.suppress(OSError):
                ep.udp.sendto(reply, addr)

    async def _upstream(self, data: bytes) -> bytes | None:
        loop = asyncio.get_running_loop()
        for server in self.upstreams:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            try:
                await loop.sock_connect(s, (server, DNS_PORT))
                await loop.sock_sendall(s, data)
                async with asyncio.timeout(UPSTREAM_TIMEOUT_S):
                    reply = await loop.sock_recv(s, 65535)
                if reply[:2] == data[:2]:
                    return reply
            except (OSError, TimeoutError) as exc:
                log.debug("dns upstream %s failed: %s", server, exc)
            finally:
                s.close()
        try:
            query = parse_query(data)
        except DnsFormatError:
            return None
        return build_response(query, RCODE_SERVFAIL)

    # TCP

    async def _accept_tcp(self, ep: _Endpoint) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(ep.tcp)
            self._own(ep, loop.create_task(self._serve_tcp(ep, conn)))

    async def _serve_tcp(self, ep: _Endpoint, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn.setblocking(False)
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT_S):
                    head = await _recv_exact(loop, conn, 2)
                    if head is None:
                        return
                    body = await _recv_exact(loop, conn, struct.unpack("!H", head)[0])
                if body is None:
                    return
                reply = self._local(ep, body)
                if reply is None:
                    reply = await self._upstream(body)
                if not reply:
                    return
                await loop.sock_sendall(conn, struct.pack("!H", len(reply)) + reply)
        except (OSError, TimeoutError):
            return
        finally:
            conn.close()


async def _recv_exact(loop: asyncio.AbstractEventLoop, conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        more = await loop.sock_recv(conn, n - len(buf))
        if not more:
            return None
        buf += more
    return buf
