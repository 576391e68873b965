"""Bridges and veth pairs over netlink: the kernel side of a network endpoint.

Owns: creating a bridge with its gateway address, plugging an endpoint (a network namespace
given by path) into it with a veth pair, tearing both down, and the sysctls dockerd sets
(ip_forward, route_localnet, bridge-nf-call-iptables).

Ownership is explicit. Every bridge and host-side veth made here carries an interface alias
(IFLA_IFALIAS, shown by `ip link`) naming its owner, and the caller persists a `BridgeRecord`;
`delete_bridge` removes a bridge only when both say it is ours, never because of its name.

Netlink goes through `pyroute2.AsyncIPRoute` on the netlink thread (`netlink.py`: uvloop
cannot host pyroute2's socket). Inside a namespace we use a netlink socket created there by
`netns.run_in_netns` (pyroute2's own `netns=` forks a helper process).
This module deals in endpoints, never in containers, and must not import `app/` or `runtime/`
services.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from netproxy import ifconfig
from netproxy.netlink import iproute, on_netlink_thread
from runtime.errors import InvalidParameter, NotFound, SystemError_

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MTU = 1500
IFNAMSIZ = 15
PROC_SYS = Path("/proc/sys")
SYS_CLASS_NET = Path("/sys/class/net")
LOOPBACK_INDEX = 1  # `lo` is always interface 1 of a network namespace


@dataclass(frozen=True, slots=True)
class BridgeRecord:
    """What the caller persists about a bridge; `created` says pydock made it."""

    name: str
    gateway: str  # "10.88.0.1/24": gateway address with the subnet's prefix length
    created: bool
    owner: str  # the interface alias written on it, e.g. "pydock:PYDOCK"
    mtu: int = DEFAULT_MTU


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One network attachment of a namespace: what `attach` plugs in."""

    netns_path: str
    bridge: str
    address: ipaddress.IPv4Interface  # "10.88.0.2/24"
    gateway: ipaddress.IPv4Address | None = None  # default route via it (the primary network)
    ifname: str = "eth0"
    mac: str | None = None  # None: derived from the address, as Docker does
    mtu: int = DEFAULT_MTU
    host_ifname: str | None = None  # None: "veth" + 7 random hex digits, as Docker names them


@dataclass(frozen=True, slots=True)
class AttachedEndpoint:
    host_ifname: str
    ifname: str
    mac: str


def docker_mac(ip: ipaddress.IPv4Address) -> str:
    """Docker's MAC for an address: 02:42 followed by the four address bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def random_veth_name() -> str:
    return "veth" + secrets.token_hex(4)[:7]


def _check_ifname(name: str) -> None:
    if not name or len(name) > IFNAMSIZ or "/" in name or name.strip() != name:
        raise InvalidParameter(f"invalid interface name: {name!r}")


def _netlink_error(action: str, exc: NetlinkError) -> SystemError_:
    return SystemError_(f"{action}: {os.strerror(exc.code)}")


async def _ensure(op: Awaitable[T], *done: int) -> T | None:
    """Await a netlink request; the listed errnos (EEXIST, ENOENT, ...) mean 'already done'."""
    try:
        return await op
    except NetlinkError as exc:
        if exc.code in done:
            return None
        raise


async def _index(ipr: Any, ifname: str) -> int | None:
    # RTM_GETLINK by name: one kernel lookup (link_lookup dumps every link, slow with many veths).
    try:
        msgs = await ipr.link("get", ifname=ifname)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    return int(msgs[0]["index"]) if msgs else None


# Bridge name -> ifindex, read and written on the netlink thread only: saves a lookup per
# container start. Forgotten when we make or delete that bridge, and after a failed use.
_bridge_indexes: dict[str, int] = {}


async def _bridge_index(ipr: Any, name: str, *, fresh: bool = False) -> int | None:
    index = None if fresh else _bridge_indexes.get(name)
    if index is None:
        index = await _index(ipr, name)
        if index is not None:
            _bridge_indexes[name] = index
    return index


async def _link_alias(ipr: Any, index: int) -> str | None:
    msgs = await ipr.link("get", index=index)
    for msg in msgs:
        alias = msg.get("ifalias")
        return str(alias) if alias is not None else None
    return None


# --- bridges ------------------------------------------------------------------------------------


async def _ensure_bridge(
    name: str,
    gateway: ipaddress.IPv4Interface,
    *,
    owner: str,
    mtu: int = DEFAULT_MTU,
    previous: BridgeRecord | None = None,
) -> BridgeRecord:
    _check_ifname(name)
    _bridge_indexes.pop(name, None)
    async with iproute() as ipr:
        try:
            index = await _index(ipr, name)
            created = False
            if index is None:
                mac = "02:42:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4))
                await _ensure(
                    ipr.link("add", ifname=name, kind="bridge", address=mac, mtu=mtu),
                    errno.EEXIST,
                )
                index = await _index(ipr, name)
                if index is None:
                    raise SystemError_(f"bridge {name} vanished while being created")
                # The kernel ignores IFLA_IFALIAS in RTM_NEWLINK: set it on the new link.
                await ipr.link("set", index=index, ifalias=owner)
                created = True
                log.info("bridge created", extra={"bridge": name, "gateway": str(gateway)})
            else:
                msgs = await ipr.link("get", index=index)
                kind = msgs[0].get(("linkinfo", "kind")) if msgs else None
                if kind != "bridge":
                    raise InvalidParameter(f"interface {name} exists and is not a bridge")
                alias = await _link_alias(ipr, index)
                created = bool(previous and previous.created and alias == owner)
            await _ensure(
                ipr.addr(
                    "add",
                    index=index,
                    address=str(gateway.ip),
                    prefixlen=gateway.network.prefixlen,
                    broadcast=str(gateway.network.broadcast_address),
                ),
                errno.EEXIST,
            )
            await ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise _netlink_error(f"failed to set up bridge {name}", exc) from exc
    return BridgeRecord(name=name, gateway=str(gateway), created=created, owner=owner, mtu=mtu)


async def _delete_bridge(record: BridgeRecord) -> bool:
    if not record.created:
        return False
    _bridge_indexes.pop(record.name, None)
    async with iproute() as ipr:
        try:
            index = await _index(ipr, record.name)
            if index is None:
                return True
            if await _link_alias(ipr, index) != record.owner:
                log.warning("bridge not deleted: not ours", extra={"bridge": record.name})
                return False
            await _ensure(ipr.link("del", index=index), errno.ENOENT, errno.ENODEV)
        except NetlinkError as exc:
            raise _netlink_error(f"failed to delete bridge {record.name}", exc) from exc
    log.info("bridge deleted", extra={"bridge": record.name})
    return True


# --- endpoints ----------------------------------------------------------------------------------


async def _attach(endpoint: Endpoint, *, owner: str, inet_socket: socket.socket | None) -> AttachedEndpoint:
    _check_ifname(endpoint.ifname)
    host_ifname = endpoint.host_ifname or random_veth_name()
    _check_ifname(host_ifname)
    mac = endpoint.mac or docker_mac(endpoint.address.ip)
    async with iproute() as ipr:
        nsfd = os.open(endpoint.netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for fresh in (False, True):
                bridge_index = await _bridge_index(ipr, endpoint.bridge, fresh=fresh)
                if bridge_index is None:
                    raise NotFound(f"bridge {endpoint.bridge} not found")
                try:
                    # One request makes the pair, puts the peer into the namespace, enslaves the
                    # host side to the bridge and brings it up (the peer stays down until
                    # configured).
                    await ipr.link(
                        "add",
                        ifname=host_ifname,
                        kind="veth",
                        mtu=endpoint.mtu,
                        master=bridge_index,
                        state="up",
                        peer={
                            "ifname": endpoint.ifname,
                            "net_ns_fd": nsfd,
                            "address": mac,
                            "mtu": endpoint.mtu,
                        },
                    )
                    break
                except NetlinkError as exc:
                    _bridge_indexes.pop(endpoint.bridge, None)
                    if fresh or exc.code == errno.EEXIST:
                        raise _netlink_error(
                            f"failed to create veth {host_ifname} for {endpoint.netns_path}", exc
                        ) from exc
        finally:
            os.close(nsfd)
        try:
            # The kernel ignores IFLA_IFALIAS in RTM_NEWLINK: set it on the new link (through
            # sysfs: one write instead of a netlink round trip).
            _set_alias(host_ifname, owner)
            if inet_socket is not None:
                ifconfig.configure(
                    inet_socket, endpoint.ifname, endpoint.address, endpoint.gateway
                )  # a few syscalls
            else:
                await _configure_inside(endpoint)
        except BaseException as exc:
            await asyncio.shield(_delete_link(host_ifname))
            if isinstance(exc, NetlinkError):
                raise _netlink_error(f"failed to set up endpoint {host_ifname}", exc) from exc
            if isinstance(exc, OSError):
                raise SystemError_(f"failed to set up endpoint {host_ifname}: {exc}") from exc
            raise
    log.info(
        "endpoint attached",
        extra={"veth": host_ifname, "bridge": endpoint.bridge, "address": str(endpoint.address)},
    )
    return AttachedEndpoint(host_ifname=host_ifname, ifname=endpoint.ifname, mac=mac)


def _set_alias(ifname: str, alias: str) -> None:
    try:
        (SYS_CLASS_NET / ifname / "ifalias").write_text(alias + "\n")
    except OSError as exc:
        raise SystemError_(f"cannot set the alias of {ifname}: {exc}") from exc


async def _configure_inside(endpoint: Endpoint) -> None:
    async with iproute(endpoint.netns_path) as ipr:
        await ipr.link("set", index=LOOPBACK_INDEX, state="up")
        index = await _index(ipr, endpoint.ifname)
        if index is None:
            raise SystemError_(f"{endpoint.ifname} did not appear in {endpoint.netns_path}")
        await _ensure(
            ipr.addr(
                "add",
                index=index,
                address=str(endpoint.address.ip),
                prefixlen=endpoint.address.network.prefixlen,
                broadcast=str(endpoint.address.network.broadcast_address),
            ),
            errno.EEXIST,
        )
        await ipr.link("set", index=index, state="up")
        if endpoint.gateway is not None:
            await _ensure(
                ipr.route("add", dst="0.0.0.0/0", gateway=str(endpoint.gateway), oif=index),
                errno.EEXIST,
            )


async def _delete_link(ifname: str) -> None:
    async with iproute() as ipr:
        index = await _index(ipr, ifname)
        if index is not None:
            await _ensure(ipr.link("del", index=index), errno.ENOENT, errno.ENODEV)


async def _detach(host_ifname: str, *, owner: str) -> bool:
    async with iproute() as ipr:
        try:
            index = await _index(ipr, host_ifname)
            if index is None:
                return True
            if await _link_alias(ipr, index) != owner:
                log.warning("veth not deleted: not ours", extra={"veth": host_ifname})
                return False
            await _ensure(ipr.link("del", index=index), errno.ENOENT, errno.ENODEV)
        except NetlinkError as exc:
            raise _netlink_error(f"failed to delete veth {host_ifname}", exc) from exc
    return True


async def _links_owned_by(owner: str, masters: frozenset[str] | None) -> list[str]:
    names: list[str] = []
    async with iproute() as ipr:
        links = [msg async for msg in await ipr.link("dump")]
    by_index = {int(msg["index"]): str(msg.get("ifname")) for msg in links}
    for msg in links:
        if msg.get("ifalias") != owner:
            continue
        if masters is not None and by_index.get(int(msg.get("master") or 0)) not in masters:
            continue
        names.append(str(msg.get("ifname")))
    return names


# --- sysctls ------------------------------------------------------------------------------------


def _write_sysctl(path: Path, value: str) -> bool:
    """Write `value` unless it is there already; return whether it changed."""
    current = path.read_text().strip()
    if current == value:
        return False
    path.write_text(value + "\n")
    return True


async def enable_ip_forward() -> bool:
    """Turn on IPv4 forwarding as dockerd does; returns whether it was off."""
    return await asyncio.to_thread(_write_sysctl, PROC_SYS / "net/ipv4/ip_forward", "1")


async def set_route_localnet(bridge: str, enabled: bool = True) -> None:
    """route_localnet on the bridge, for DNAT of 127.0.0.1 when the userland proxy is off."""
    _check_ifname(bridge)
    path = PROC_SYS / "net/ipv4/conf" / bridge / "route_localnet"
    await asyncio.to_thread(_write_sysctl, path, "1" if enabled else "0")


async def enable_bridge_nf() -> bool:
    """bridge-nf-call-iptables=1 (needed for rules on traffic between two ports of a bridge).

    Returns False when br_netfilter is not loaded (the file is missing): pydock does not load
    kernel modules; dockerd loads it with modprobe.
    """
    path = PROC_SYS / "net/bridge/bridge-nf-call-iptables"

    def write() -> bool:
        if not path.exists():
            return False
        _write_sysctl(path, "1")
        return True

    return await asyncio.to_thread(write)


# --- public coroutines: run on the netlink thread, awaitable from any loop ---------------------


async def ensure_bridge(
    name: str,
    gateway: ipaddress.IPv4Interface,
    *,
    owner: str,
    mtu: int = DEFAULT_MTU,
    previous: BridgeRecord | None = None,
) -> BridgeRecord:
    """Make sure bridge `name` exists, holds `gateway` and is up; return its record.

    A bridge that exists already is used as is (the gateway address is added if missing) and
    is ours only if `previous` says we created it and it still carries our alias. Running
    this twice is harmless. Raises `SystemError_` on netlink failures, `InvalidParameter` when
    `name` is an existing non-bridge interface.
    """
    return await on_netlink_thread(_ensure_bridge(name, gateway, owner=owner, mtu=mtu, previous=previous))


async def delete_bridge(record: BridgeRecord) -> bool:
    """Delete the bridge if pydock created it and it still carries our alias.

    Returns True when it was deleted (or was already gone), False when it is not ours and was
    left alone. Raises `SystemError_` on netlink failures.
    """
    return await on_netlink_thread(_delete_bridge(record))


async def attach(
    endpoint: Endpoint, *, owner: str, inet_socket: socket.socket | None = None
) -> AttachedEndpoint:
    """Plug the namespace `endpoint.netns_path` into `endpoint.bridge` with a veth pair.

    The namespace side is created there directly under `endpoint.ifname`, gets the address,
    MAC and MTU, is brought up with `lo`, and gets the default route via `endpoint.gateway`
    when one is given. The host side joins the bridge and comes up. On any failure the pair
    is deleted again, so nothing is left half-made. Raises `NotFound` when the bridge is
    missing, `SystemError_` for other netlink failures. Cancellation also removes the pair.
    `inet_socket`, an AF_INET socket already made inside the namespace (see
    `netns.create_named_netns_with`), configures it by ioctl without entering it (`ifconfig.py`);
    the caller closes it (an open socket pins the namespace).
    """
    return await on_netlink_thread(_attach(endpoint, owner=owner, inet_socket=inet_socket))


async def detach(host_ifname: str, *, owner: str) -> bool:
    """Delete the host end of an endpoint's veth pair (the peer goes with it).

    Only a veth carrying our alias is deleted; a missing one counts as done (the namespace
    may have died and taken the pair along). Returns whether something of ours is now gone.
    """
    return await on_netlink_thread(_detach(host_ifname, owner=owner))


async def links_owned_by(owner: str, *, masters: set[str] | None = None) -> list[str]:
    """Names of host interfaces that carry our alias (stale-veth sweeps, leak tests); with
    `masters`, only those enslaved to one of these bridges."""
    wanted = frozenset(masters) if masters is not None else None
    return await on_netlink_thread(_links_owned_by(owner, wanted))
