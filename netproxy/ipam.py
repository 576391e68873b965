"""IPv4 address management: subnets for networks, addresses for endpoints, persisted.

Owns: one address pool per network (subnet, gateway, optional ip-range) with its allocations,
allocation of a requested or the lowest free address (as Docker's default IPAM hands
172.17.0.2 again after a container is removed), release, and picking a subnet for a network
created without `--subnet` from configurable default pools, skipping subnets that are routed
on the host or used by another network. The network, broadcast and gateway addresses are never
handed out.

State lives in one JSON file per network under the directory the caller passes, replaced
atomically through `runtime/store.py`. Changes are made in memory first with no `await`
between check and act, then persisted under a per-network lock, so the file always ends with
the newest state. This module knows networks only by key and owners only as strings.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netproxy.netlink import iproute, on_netlink_thread
from runtime import store
from runtime.errors import (
    AddressInUse,
    AddressOutOfSubnet,
    InvalidParameter,
    NoAvailableAddress,
    NoAvailablePool,
    NotFound,
    PoolOverlap,
)

log = logging.getLogger(__name__)

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A default address pool: `base` cut into subnets of prefix length `size`.

    Subnets below `start` are skipped (Docker's "172.17.0.0/12" pool begins at 172.17).
    """

    base: IPv4Network
    size: int
    start: IPv4Address | None = None


# Docker's defaults (libnetwork ipamutils): 172.17.0.0/16 .. 172.31.0.0/16, then
# 192.168.0.0/16 in /20s. Subnets routed on the host (a real dockerd's docker0) are skipped.
DEFAULT_POOLS: tuple[PoolSpec, ...] = (
    PoolSpec(IPv4Network("172.16.0.0/12"), 16, IPv4Address("172.17.0.0")),
    PoolSpec(IPv4Network("192.168.0.0/16"), 20),
)


@dataclass(slots=True)
class Pool:
    """One network's addresses: what `network inspect` shows as IPAM.Config, plus allocations."""

    key: str
    subnet: IPv4Network
    gateway: IPv4Address
    ip_range: IPv4Network | None = None
    user_subnet: bool = False  # --subnet given: --ip is allowed only then (Docker's rule)
    allocations: dict[IPv4Address, str] = field(default_factory=dict)  # address -> owner

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "subnet": str(self.subnet),
            "gateway": str(self.gateway),
            "ip_range": str(self.ip_range) if self.ip_range else None,
            "user_subnet": self.user_subnet,
            "allocations": {str(ip): owner for ip, owner in sorted(self.allocations.items())},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Pool:
        rng = obj.get("ip_range")
        return cls(
            key=str(obj["key"]),
            subnet=IPv4Network(obj["subnet"]),
            gateway=IPv4Address(obj["gateway"]),
            ip_range=IPv4Network(rng) if rng else None,
            user_subnet=bool(obj.get("user_subnet", False)),
            allocations={IPv4Address(ip): str(o) for ip, o in obj.get("allocations", {}).items()},
        )

    def reserved(self) -> set[IPv4Address]:
        return {self.subnet.network_address, self.subnet.broadcast_address, self.gateway}

    def take(self, owner: str, ip: IPv4Address | None = None) -> IPv4Address:
        """Allocate `ip` (must be free and in the subnet) or the lowest free address."""
        if ip is not None:
            if ip not in self.subnet:
                raise AddressOutOfSubnet(str(ip))
            if ip in self.allocations or ip in self.reserved():
                raise AddressInUse()
            self.allocations[ip] = owner
            return ip
        candidates = self.ip_range if self.ip_range is not None else self.subnet
        reserved = self.reserved()
        for candidate in candidates:  # lowest free, as Docker's default IPAM
            if candidate in self.subnet and candidate not in reserved and candidate not in self.allocations:
                self.allocations[candidate] = owner
                return candidate
        raise NoAvailableAddress(self.key)


def make_pool(
    key: str,
    subnet: str | IPv4Network,
    *,
    gateway: str | None = None,
    ip_range: str | None = None,
    user_subnet: bool = True,
) -> Pool:
    """Validate a network's IPAM config (as `network create` sends it) into a `Pool`."""
    try:
        net = IPv4Network(subnet) if isinstance(subnet, str) else subnet
    except ValueError as exc:
        raise InvalidParameter(f"invalid subnet {subnet}: {exc}") from exc
    if net.prefixlen > 30:
        raise InvalidParameter(f"subnet {net} is too small: no address left for endpoints")
    try:
        gw = IPv4Address(gateway) if gateway else net.network_address + 1
    except ValueError as exc:
        raise InvalidParameter(f"invalid gateway {gateway}: {exc}") from exc
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise InvalidParameter(f"no matching subnet for gateway {gw}")
    rng: IPv4Network | None = None
    if ip_range:
        try:
            rng = IPv4Network(ip_range)
        except ValueError as exc:
            raise InvalidParameter(f"invalid ip-range {ip_range}: {exc}") from exc
        if not rng.subnet_of(net):
            raise InvalidParameter(f"no matching subnet for range {ip_range}")
    return Pool(key=key, subnet=net, gateway=gw, ip_range=rng, user_subnet=user_subnet)


def pick_subnet(pools: Sequence[PoolSpec], taken: Iterable[IPv4Network]) -> IPv4Network:
    """The first subnet from `pools` that overlaps nothing in `taken` (pure; used by tests)."""
    busy = list(taken)
    for spec in pools:
        if spec.size < spec.base.prefixlen:
            continue
        for candidate in spec.base.subnets(new_prefix=spec.size):
            if spec.start is not None and candidate.network_address < spec.start:
                continue
            if not any(candidate.overlaps(other) for other in busy):
                return candidate
    raise NoAvailablePool()


async def _host_routes() -> list[IPv4Network]:
    routes: list[IPv4Network] = []
    async with iproute() as ipr:
        async for msg in await ipr.route("dump", family=2):
            dst_len = int(msg.get("dst_len") or 0)
            dst = msg.get("dst")
            if dst_len == 0 or dst is None or msg.get("table") not in (254, None):
                continue
            routes.append(IPv4Network(f"{dst}/{dst_len}", strict=False))
    return routes


async def host_routes() -> list[IPv4Network]:
    """IPv4 destinations routed on the host (main table), the default route left out."""
    return await on_netlink_thread(_host_routes())


# --- the store ----------------------------------------------------------------------------------


class Ipam:
    """All networks' pools, persisted as `<state_dir>/<key>.json`.

    `key` is whatever the caller uses to name a network (its ID); owners are endpoint IDs.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        default_pools: Sequence[PoolSpec] = DEFAULT_POOLS,
        durable_allocations: bool = True,
    ) -> None:
        self.state_dir = state_dir
        # False: allocation changes skip fsync (pools are always durable). For callers that can
        # rebuild allocations from records of their own after a power loss.
        self.durable_allocations = durable_allocations
        self.default_pools = tuple(default_pools)
        self._pools: dict[str, Pool] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # loading and persisting

    async def load(self) -> None:
        """Read every pool file; a broken one is logged and skipped, never fatal."""
        self._pools = await asyncio.to_thread(self._load_all)

    def _load_all(self) -> dict[str, Pool]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        store.sweep(self.state_dir)
        pools: dict[str, Pool] = {}
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                pool = Pool.from_json(store.read_json(path))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("broken IPAM record skipped", extra={"path": str(path), "error": str(exc)})
                continue
            pools[pool.key] = pool
        return pools

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise InvalidParameter(f"invalid network key {key!r}")
        return self.state_dir / f"{key}.json"

    async def _persist(self, key: str, *, durable: bool = True) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            pool = self._pools.get(key)
            path = self._path(key)
            if pool is None:
                await asyncio.to_thread(store.remove_tree, path)
                return
            data = pool.to_json()  # the newest state, taken under the lock
            await asyncio.to_thread(self._write, path, data, durable)

    def _write(self, path: Path, data: dict[str, Any], durable: bool) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        store.write_json(path, data, durable=durable)

    # pools

    def get(self, key: str) -> Pool:
        try:
            return self._pools[key]
        except KeyError:
            raise NotFound(f"no IPAM pool for network {key}") from None

    def pools(self) -> list[Pool]:
        return list(self._pools.values())

    async def add_pool(
        self,
        key: str,
        subnet: str | None = None,
        *,
        gateway: str | None = None,
        ip_range: str | None = None,
        avoid: Iterable[IPv4Network] = (),
        check_routes: bool = True,
    ) -> Pool:
        """Create the pool of network `key`: the given subnet, or one picked from the defaults.

        A picked subnet avoids other pools, `avoid` and (with `check_routes`) the host's
        routes; a given one must not overlap another pool (`PoolOverlap`). Idempotent for an
        identical pool. Raises `InvalidParameter`, `PoolOverlap`, `NoAvailablePool`.
        """
        self._path(key)  # validates the key
        routes = await host_routes() if (check_routes and subnet is None) else []
        existing = self._pools.get(key)
        others = [p.subnet for k, p in self._pools.items() if k != key]
        if subnet is None:
            if existing is not None and not existing.user_subnet:
                return existing
            net = pick_subnet(self.default_pools, [*others, *avoid, *routes])
            pool = make_pool(key, net, gateway=gateway, ip_range=ip_range, user_subnet=False)
        else:
            pool = make_pool(key, subnet, gateway=gateway, ip_range=ip_range, user_subnet=True)
            if existing is not None and (existing.subnet, existing.gateway, existing.ip_range) == (
                pool.subnet,
                pool.gateway,
                pool.ip_range,
            ):
                return existing
            if any(pool.subnet.overlaps(other) for other in others):
                raise PoolOverlap()
        if existing is not None:
            pool.allocations = existing.allocations
        self._pools[key] = pool
        await self._persist(key)
        return pool

    async def remove_pool(self, key: str) -> None:
        """Forget network `key` and delete its file; a missing pool counts as removed."""
        self._path(key)
        self._pools.pop(key, None)
        await self._persist(key)
        self._locks.pop(key, None)

    # addresses

    async def allocate(self, key: str, owner: str, ip: str | None = None) -> IPv4Address:
        """Allocate `ip` or the lowest free address of network `key` to `owner`.

        Raises `NotFound` (no pool), `AddressOutOfSubnet`, `AddressInUse`, `NoAvailableAddress`.
        """
        pool = self.get(key)
        try:
            wanted = IPv4Address(ip) if ip else None
        except ValueError as exc:
            raise InvalidParameter(f"invalid IPv4 address: {ip}") from exc
        address = pool.take(owner, wanted)  # check and act with no await in between
        await self._persist(key, durable=self.durable_allocations)
        return address

    async def release(self, key: str, ip: str | IPv4Address) -> None:
        """Give an address back; unknown pools and addresses count as released."""
        pool = self._pools.get(key)
        if pool is None:
            return
        if pool.allocations.pop(IPv4Address(ip), None) is not None:
            await self._persist(key, durable=self.durable_allocations)

    async def release_owner(self, key: str, owner: str) -> list[IPv4Address]:
        """Give back every address `owner` holds in network `key`."""
        pool = self._pools.get(key)
        if pool is None:
            return []
        gone = [ip for ip, o in pool.allocations.items() if o == owner]
        for ip in gone:
            del pool.allocations[ip]
        if gone:
            await self._persist(key, durable=self.durable_allocations)
        return gone
