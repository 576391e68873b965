"""`NetworkService`: the networks (predefined and user-defined) and the networks API.

Owns the network objects, persisted one per file as `<data-root>/networks/<id>.json` (IPAM pools
beside them in `networks/ipam/`), their bridges, and the iptables manager. The predefined
`bridge` network lives on the daemon's `-b`/`--bip` bridge; `host` and `none` exist with IDs of
their own. User-defined bridge networks get a `br-<id>` bridge (or `-o
com.docker.network.bridge.name`), an address pool and isolation from every other network.

The service is also the container side's `NetworkHooks`: it hands the per-container work
(namespaces, endpoints, ports, proxies, DNS) to `Sandboxes` (`runtime/netendpoints.py`).
Reference resolution follows dockerd: full ID, exact name, then unique ID prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from app.models.endpoints import EndpointSettings
from app.models.networks import NetworkCreateRequest
from netproxy import bridge
from netproxy.ipam import Ipam
from netproxy.iptables import IptablesManager, NetworkRules
from runtime import ids, store
from runtime.config import DaemonConfig
from runtime.errors import (
    Forbidden,
    InvalidParameter,
    NetworkHasActiveEndpoints,
    NetworkNameInUse,
    NoSuchNetwork,
    NotFound,
    PredefinedNetwork,
    PydockError,
)
from runtime.events import EventBus
from runtime.netattach import NetworkPlan
from runtime.netchecks import check_network_name, network_filter, prune_filter
from runtime.netendpoints import Sandboxes
from runtime.netrecords import (
    OPT_BRIDGE_NAME,
    OPT_DEFAULT_BRIDGE,
    OPT_HOST_BINDING,
    OPT_ICC,
    OPT_MASQ,
    OPT_MTU,
    PREDEFINED,
    Network,
)
from runtime.records import Container, now_rfc3339

if TYPE_CHECKING:
    from runtime.containers import ContainerService

log = logging.getLogger("pydock.networks")


class NetworkService:
    def __init__(self, config: DaemonConfig, events: EventBus, containers: ContainerService) -> None:
        self.config = config
        self.events = events
        self.containers = containers
        self.dir = config.networks_dir
        # Allocations need no fsync: container records hold the addresses, and `restore` takes
        # them again from the live ones.
        self.ipam = Ipam(self.dir / "ipam", durable_allocations=False)
        self.iptables = (
            IptablesManager(config.chain_prefix, userland_proxy=config.userland_proxy)
            if config.iptables
            else None
        )
        self.bridge_owner = f"pydock:{config.chain_prefix}"
        self._networks: dict[str, Network] = {}
        self._lock = asyncio.Lock()  # network create/remove: one at a time
        self._renames: asyncio.Task[None] | None = None
        self.sandboxes = Sandboxes(
            config, events, self, self.ipam, self.iptables, lambda ref: containers.get(ref).container
        )

    # --- index --------------------------------------------------------------------------------

    def find(self, ref: str) -> Network:
        """Full ID, then exact name, then unique ID prefix. Raises NoSuchNetwork (404)."""
        net = self._networks.get(ref)
        if net is not None:
            return net
        for net in self._networks.values():
            if net.name == ref:
                return net
        matches = ids.match_prefix(ref, self._networks)
        if len(matches) == 1:
            return self._networks[matches[0]]
        if len(matches) > 1:
            raise InvalidParameter(
                f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)"
            )
        raise NoSuchNetwork(ref)

    def by_id(self, nid: str) -> Network | None:
        return self._networks.get(nid)

    @property
    def default_bridge(self) -> Network | None:
        return next((n for n in self._networks.values() if n.default_bridge), None)

    def bridges(self) -> set[str]:
        return {n.bridge for n in self._networks.values() if n.driver == "bridge"}

    def _by_name(self, name: str) -> Network | None:
        return next((n for n in self._networks.values() if n.name == name), None)

    # --- NetworkHooks ---------------------------------------------------------------------------

    def validate(self, container: Container) -> None:
        self.sandboxes.validate(container)

    async def restore(self, containers: list[Container]) -> None:
        """Re-register live containers, sweep what dead ones left, then the first iptables sync."""
        await self.sandboxes.restore(containers)
        if self.iptables is not None:
            await self.iptables.sync(verify=True)

    async def prepare(self, container: Container) -> NetworkPlan:
        return await self.sandboxes.prepare(container)

    async def activate(self, container: Container, pid: int, plan: NetworkPlan) -> None:
        return None

    async def release(self, container: Container) -> None:
        await self.sandboxes.release(container)

    async def forget(self, container: Container) -> None:
        await self.sandboxes.forget(container)

    # --- daemon start / stop --------------------------------------------------------------------

    async def start(self) -> None:
        """Load networks and pools, make the predefined networks, bring every bridge up.

        The first iptables sync waits for `restore` (live containers' rules are known then).
        """
        loaded = await asyncio.to_thread(self._load)
        await self.ipam.load()
        self._networks = {n.nid: n for n in loaded}
        for nid in {p.key for p in self.ipam.pools()} - set(self._networks):
            await self.ipam.remove_pool(nid)  # a pool whose network was removed mid-way
        await self._predefined()
        if self.config.ip_forward and any(n.driver == "bridge" for n in self._networks.values()):
            with contextlib.suppress(OSError):
                await bridge.enable_ip_forward()
        if self.iptables is not None:
            with contextlib.suppress(OSError):
                await bridge.enable_bridge_nf()
        for net in list(self._networks.values()):
            if net.driver == "bridge":
                try:
                    await self._bring_up(net)
                except PydockError as exc:
                    log.error("network %s: bridge setup failed: %s", net.name, exc)
        await self._sweep_bridges()
        self._renames = asyncio.create_task(self._follow_renames(), name="network-dns-renames")

    async def _follow_renames(self) -> None:
        """A renamed container answers to its new name in the embedded DNS (as dockerd)."""
        async for _ in self.events.subscribe(accept=lambda e: e.type == "container" and e.action == "rename"):
            self.sandboxes.refresh_dns()

    def _load(self) -> list[Network]:
        self.dir.mkdir(parents=True, exist_ok=True)
        out: list[Network] = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                out.append(Network.from_json(store.read_json(path)))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("skipping broken network record %s: %s", path.name, exc)
        return out

    async def _save(self, net: Network) -> None:
        await asyncio.to_thread(store.write_json, self.dir / f"{net.nid}.json", net.to_json())

    async def _predefined(self) -> None:
        """The `bridge` (on -b/--bip), `host` and `none` networks, created once with their IDs."""
        cfg = self.config
        for name, driver in (("host", "host"), ("none", "null")):
            if self._by_name(name) is None:
                net = Network(ids.new_id(), name, driver, now_rfc3339())
                await self._save(net)
                self._networks[net.nid] = net
        current = self.default_bridge
        if cfg.bridge == "none":
            if current is not None:
                self._networks.pop(current.nid)
            return
        iface = cfg.bridge_network
        options = {
            OPT_DEFAULT_BRIDGE: "true",
            OPT_ICC: "true",
            OPT_MASQ: "true" if cfg.ip_masq else "false",
            OPT_HOST_BINDING: "0.0.0.0",  # noqa: S104 - as dockerd shows it
            OPT_BRIDGE_NAME: cfg.bridge,
            OPT_MTU: "1500",
        }
        if current is None:
            current = Network(ids.new_id(), "bridge", "bridge", now_rfc3339(), default_bridge=True)
            current.ipam_options = None
        current.options = options
        pool = await self.ipam.add_pool(
            current.nid, str(iface.network), gateway=str(iface.ip), check_routes=False
        )
        current.subnet, current.gateway, current.user_subnet = str(pool.subnet), str(pool.gateway), False
        self._networks[current.nid] = current
        await self._save(current)

    async def _bring_up(self, net: Network) -> None:
        record = await bridge.ensure_bridge(
            net.bridge, net.interface, owner=self.bridge_owner, mtu=net.mtu, previous=self._record(net)
        )
        if record.created != net.bridge_created:
            net.bridge_created = record.created
            await self._save(net)
        if self.iptables is not None:
            self.iptables.set_network(self._rules(net))
            if not self.config.userland_proxy:
                with contextlib.suppress(OSError):
                    await bridge.set_route_localnet(net.bridge)

    def _record(self, net: Network) -> bridge.BridgeRecord:
        return bridge.BridgeRecord(
            name=net.bridge, gateway=str(net.interface), created=net.bridge_created, owner=self.bridge_owner
        )

    def _rules(self, net: Network) -> NetworkRules:
        return NetworkRules(
            bridge=net.bridge,
            subnet=ipaddress.IPv4Network(net.subnet),
            internal=net.internal,
            icc=net.icc,
            masquerade=net.masquerade and self.config.ip_masq,
        )

    async def _sweep_bridges(self) -> None:
        """Delete bridges of ours whose network no longer exists (a crash during `network rm`)."""
        known = {n.bridge for n in self._networks.values() if n.driver == "bridge"}
        try:
            names = await bridge.links_owned_by(self.bridge_owner)
        except PydockError as exc:
            log.warning("bridge sweep failed: %s", exc)
            return
        for name in names:
            if name not in known:
                gone = bridge.BridgeRecord(name=name, gateway="", created=True, owner=self.bridge_owner)
                with contextlib.suppress(PydockError):
                    await bridge.delete_bridge(gone)

    async def shutdown(self) -> None:
        """Stop proxies and DNS; live containers keep namespaces, veths and rules (live restore)."""
        if self._renames is not None:
            self._renames.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renames
            self._renames = None
        await self.sandboxes.shutdown()

    # --- API --------------------------------------------------------------------------------------

    def _containers_of(self, net: Network) -> dict[str, dict[str, str]]:
        return {c.cid: ep.container_entry(c) for c, ep in self.sandboxes.endpoints_on(net.nid)}

    def inspect(self, ref: str, *, scope: str | None = None) -> dict[str, Any]:
        net = self.find(ref)
        if scope and scope != "local":
            raise NoSuchNetwork(ref)
        return net.wire(self._containers_of(net))

    def list_networks(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        accept = network_filter(filters)
        out = []
        for net in sorted(self._networks.values(), key=lambda n: n.name):
            containers = self._containers_of(net)
            if accept(net, len(containers)):
                out.append(net.wire(containers))
        return out

    async def create(self, body: NetworkCreateRequest) -> str:
        """`POST /networks/create`; returns the new ID. Raises NetworkNameInUse (409),
        PredefinedNetwork / Forbidden (403), NotFound (unknown driver), InvalidParameter,
        PoolOverlap."""
        name = check_network_name(body.Name)
        if name in PREDEFINED:
            raise PredefinedNetwork(name, "created")
        driver = body.Driver or "bridge"
        if driver in ("host", "null"):
            raise Forbidden(f'only one instance of "{driver}" network is allowed')
        if driver != "bridge":
            raise NotFound(f'plugin "{driver}" not found')
        if body.EnableIPv6:
            raise InvalidParameter("pydock serves IPv4 networks only: EnableIPv6 is not supported")
        ipam = body.IPAM
        configs = list(ipam.Config or []) if ipam is not None else []
        if any(":" in (c.Subnet or "") for c in configs):
            raise InvalidParameter("pydock serves IPv4 networks only: IPv6 subnets are not supported")
        if len(configs) > 1:
            raise InvalidParameter("pydock supports one IPv4 subnet per network")
        wanted = configs[0] if configs else None
        if wanted is not None and not wanted.Subnet and (wanted.Gateway or wanted.IPRange):
            raise InvalidParameter("a gateway or ip-range needs a subnet")
        options = dict(body.Options or {})
        async with self._lock:
            if self._by_name(name) is not None:
                raise NetworkNameInUse(name)
            net = Network(
                nid=ids.new_id(),
                name=name,
                driver="bridge",
                created=now_rfc3339(),
                internal=body.Internal,
                attachable=body.Attachable,
                ingress=body.Ingress,
                options=options,
                labels=dict(body.Labels or {}),
                ipam_driver=(ipam.Driver if ipam is not None else "") or "default",
                ipam_options=ipam.Options if ipam is not None else None,
            )
            if any(n.bridge == net.bridge for n in self._networks.values()):
                raise Forbidden(f"bridge name {net.bridge} is in use by another network")
            await self._make(net, wanted.Subnet if wanted else None, wanted)
        self.events.publish("network", "create", net.nid, {"name": net.name, "type": net.driver})
        return net.nid

    async def _make(self, net: Network, subnet: str | None, wanted: Any) -> None:
        avoid = [ipaddress.IPv4Network(n.subnet) for n in self._networks.values() if n.subnet]
        pool = await self.ipam.add_pool(
            net.nid,
            subnet or None,
            gateway=(wanted.Gateway or None) if wanted else None,
            ip_range=(wanted.IPRange or None) if wanted else None,
            avoid=avoid,
        )
        net.subnet, net.gateway = str(pool.subnet), str(pool.gateway)
        net.ip_range = str(pool.ip_range) if pool.ip_range else ""
        net.user_subnet = pool.user_subnet
        self._networks[net.nid] = net
        try:
            await self._bring_up(net)
            await self._save(net)
            if self.iptables is not None:
                await self.iptables.sync()
        except BaseException:
            await asyncio.shield(self._unmake(net))
            raise

    async def _unmake(self, net: Network) -> None:
        self._networks.pop(net.nid, None)
        if self.iptables is not None:
            self.iptables.drop_network(net.bridge)
            with contextlib.suppress(PydockError):
                await self.iptables.sync()
        with contextlib.suppress(PydockError):
            await bridge.delete_bridge(self._record(net))
        await asyncio.to_thread(store.remove_tree, self.dir / f"{net.nid}.json")
        await self.ipam.remove_pool(net.nid)

    async def remove(self, ref: str) -> None:
        """`DELETE /networks/{id}`. Raises NoSuchNetwork, PredefinedNetwork and
        NetworkHasActiveEndpoints (403)."""
        async with self._lock:
            net = self.find(ref)
            if net.predefined:
                raise PredefinedNetwork(net.name, "removed")
            if self.sandboxes.endpoints_on(net.nid):
                raise NetworkHasActiveEndpoints(net.name, net.nid)
            await self._unmake(net)
        self.events.publish("network", "destroy", net.nid, {"name": net.name, "type": net.driver})

    async def prune(self, filters: dict[str, list[str]]) -> list[str]:
        accept = prune_filter(filters)
        deleted: list[str] = []
        for net in list(self._networks.values()):
            if net.predefined or self.sandboxes.endpoints_on(net.nid) or not accept(net):
                continue
            try:
                await self.remove(net.nid)
            except PydockError:
                continue
            deleted.append(net.name)
        self.events.publish("network", "prune", "", {})
        return deleted

    async def connect(self, ref: str, container_ref: str, config: EndpointSettings | None) -> None:
        net = self.find(ref)
        container = self.containers.get(container_ref).container
        await self.sandboxes.connect(net, container, config or EndpointSettings())

    async def disconnect(self, ref: str, container_ref: str, *, force: bool = False) -> None:
        net = self.find(ref)
        container = self.containers.get(container_ref).container
        await self.sandboxes.disconnect(net, container)
