"""Container endpoints: which networks a container joins, and when.

`Sandboxes` implements the per-container half of `NetworkHooks` (`runtime/netattach.py`):
`validate` resolves the create body's networks (404 for unknown ones) and normalises
`EndpointsConfig` to network names; `prepare` (before the OCI runtime runs) registers a sandbox
for the container and has `runtime/netplumbing.py` make it (addresses, host ports, namespace,
veths, proxies, rules, DNS), then records `NetworkSettings` in the container's record; `release`
(after the init exited) unmakes it. `connect` and `disconnect` plug and unplug one endpoint of a
live namespace, or edit the stored attachments of a container that is not running. Restarts of
the daemon are in `runtime/netrestore.py`.

One lock per container serialises these, so a connect during a start waits for the start.
Networks are looked up through `NetworkIndex` (the network service); this module never creates
or deletes networks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from app.models.endpoints import EndpointSettings
from netproxy.ipam import Ipam
from netproxy.iptables import IptablesManager
from netproxy.ports import port_map
from runtime import ids, netrestore, store
from runtime.config import DaemonConfig
from runtime.errors import (
    Conflict,
    EndpointExists,
    Forbidden,
    InvalidParameter,
    NoSuchContainer,
    NotConnected,
    PydockError,
)
from runtime.events import EventBus
from runtime.links import Link, hosts_entry, link_env
from runtime.netattach import NetworkPlan, joined_netns, network_mode
from runtime.netchecks import (
    HOST_CONFLICT,
    MIXED_MODES,
    NONE_CONFLICT,
    SHARED_CONFLICT,
    check_endpoint_config,
)
from runtime.netplumbing import PhaseClock, Plumbing
from runtime.netrecords import Endpoint, Network, Sandbox, network_settings
from runtime.records import Container

log = logging.getLogger("pydock.netendpoints")


class NetworkIndex(Protocol):
    """What the network service offers this module."""

    def find(self, ref: str) -> Network: ...  # raises NoSuchNetwork

    def by_id(self, nid: str) -> Network | None: ...

    @property
    def default_bridge(self) -> Network | None: ...

    def bridges(self) -> set[str]: ...  # the bridge interfaces of every bridge network


class Sandboxes:
    def __init__(
        self,
        config: DaemonConfig,
        events: EventBus,
        networks: NetworkIndex,
        ipam: Ipam,
        iptables: IptablesManager | None,
        lookup: Callable[[str], Container],
    ) -> None:
        self.config = config
        self.events = events
        self.networks = networks
        self.ipam = ipam
        self.lookup = lookup  # container ref -> record; raises NoSuchContainer
        self.plumbing = Plumbing(config, ipam, iptables)
        self._by_cid: dict[str, Sandbox] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- queries ----------------------------------------------------------------------------------

    def get(self, cid: str) -> Sandbox | None:
        return self._by_cid.get(cid)

    def all(self) -> list[Sandbox]:
        return list(self._by_cid.values())

    def endpoints_on(self, nid: str) -> list[tuple[Container, Endpoint]]:
        return [(sb.container, sb.endpoints[nid]) for sb in self._by_cid.values() if nid in sb.endpoints]

    def _lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    # --- attachments (what a container is configured to join) -------------------------------------

    def validate(self, container: Container) -> None:
        """Resolve the create body's networks; normalise `EndpointsConfig` to network names."""
        mode = network_mode(container)
        configs = dict(container.networking.EndpointsConfig or {})
        self._validate_links(container, mode)
        if mode.startswith("container:"):
            self.lookup(mode.split(":", 1)[1])  # No such container: 404 at create, as dockerd
            container.networking.EndpointsConfig = None
            container.network_settings = network_settings(container, sandbox=None, attached={})
            return
        primary = self.networks.find(mode)
        resolved: dict[str, EndpointSettings] = {}
        for key, config in configs.items():
            net = primary if key in ("default", mode, container.host_config.NetworkMode) else None
            net = net or self.networks.find(key)
            resolved[net.name] = config or EndpointSettings()
        ordered = {primary.name: resolved.pop(primary.name, EndpointSettings())}
        ordered.update(resolved)
        nets = [self.networks.find(name) for name in ordered]
        if len(nets) > 1 and any(n.driver in ("host", "null") for n in nets):
            raise InvalidParameter(MIXED_MODES)
        for net in nets:
            check_endpoint_config(net, ordered[net.name])
        container.networking.EndpointsConfig = ordered
        container.network_settings = self.settings(container)

    def _validate_links(self, container: Container, mode: str) -> None:
        """`--link` targets exist (400, as dockerd) and no host networking is involved."""
        for text in container.host_config.Links or []:
            link = Link.parse(text)
            try:
                target = self.lookup(link.name)
            except NoSuchContainer as exc:
                # 400, not 404, as dockerd (moby#39823): a 404 makes the CLI pull the image
                raise InvalidParameter(f"could not get container for {link.name}: {exc.message}") from None
            if mode == "host" or network_mode(target) == "host":
                raise InvalidParameter(
                    "conflicting options: host type networking can't be used with links. "
                    "This would result in undefined behavior"
                )

    def _links(self, container: Container, sandbox: Sandbox) -> tuple[list[tuple[str, str]], list[str]]:
        """At start: the /etc/hosts lines and variables of the container's `--link`s. A target
        must run and share a network with it (its address there is the one linked)."""
        hosts: list[tuple[str, str]] = []
        env: list[str] = []
        for text in container.host_config.Links or []:
            link = Link.parse(text)
            target = self.lookup(link.name)
            if not target.state.running:
                as_name = f"/{container.name}/{link.alias}"
                raise Conflict(f"Cannot link to a non running container: /{target.name} AS {as_name}")
            theirs = self._by_cid.get(target.cid)
            shared = [
                ep.ip
                for nid, ep in (theirs.endpoints.items() if theirs is not None else ())
                if nid in sandbox.endpoints and ep.ip is not None
            ]
            if not shared:
                raise InvalidParameter(
                    f"Cannot link to /{target.name}, as it does not belong to a network of /{container.name}"
                )
            ip = str(shared[0].ip)
            hosts.append(hosts_entry(ip, link.alias, target.cid, target.name))
            env += link_env(
                alias=link.alias,
                linking_name=container.name,
                ip=ip,
                target_env=target.config.Env or [],
                exposed=(target.config.ExposedPorts or {}).keys(),
            )
        return hosts, env

    def attached(self, container: Container) -> dict[str, tuple[Network, EndpointSettings]]:
        """Network name → (network, config) for the container's stored attachments that exist."""
        out: dict[str, tuple[Network, EndpointSettings]] = {}
        known = (container.network_settings or {}).get("Networks") or {}
        for name, config in (container.networking.EndpointsConfig or {}).items():
            nid = str((known.get(name) or {}).get("NetworkID", ""))
            net = self.networks.by_id(nid) if nid else None
            if net is None:
                with contextlib.suppress(PydockError):
                    net = self.networks.find(name)
            if net is not None:
                out[net.name] = (net, config)
        return out

    def settings(self, container: Container) -> dict[str, Any]:
        sandbox = self._by_cid.get(container.cid)
        ports = port_map(sandbox.ports) if sandbox is not None else None
        return network_settings(container, sandbox=sandbox, attached=self.attached(container), ports=ports)

    async def _persist(self, container: Container) -> None:
        """Write the container's record with its new NetworkSettings (it holds them durably)."""
        container.network_settings = self.settings(container)
        data = container.config_json()
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
            # Not fsync'd: NetworkSettings change on every start and are re-derived at startup;
            # the rename keeps the file whole (and ext4's auto_da_alloc flushes it before).
            await asyncio.to_thread(store.write_json, container.config_path, data, durable=False)

    def _event(self, action: str, network: Network, cid: str) -> None:
        self.events.publish(
            "network", action, network.nid, {"container": cid, "name": network.name, "type": network.driver}
        )

    # --- start ------------------------------------------------------------------------------------

    async def prepare(self, container: Container) -> NetworkPlan:
        async with self._lock(container.cid):
            mode = network_mode(container)
            if mode.startswith("container:"):
                return self._join(container, mode.split(":", 1)[1])
            started = time.perf_counter()
            plan, phases = await self._start(container)
            log.debug(
                "network prepared",
                extra={
                    "container": container.short_id,
                    "duration_ms": round((time.perf_counter() - started) * 1e3, 2),
                    "phases_ms": phases,
                },
            )
            return plan

    def _join(self, container: Container, ref: str) -> NetworkPlan:
        other = self.lookup(ref)
        if not other.state.running:
            joined_netns(0, ref)  # raises Docker's "cannot join network of a non running container"
        container.config.Hostname = other.config.Hostname  # as dockerd: the namespace's hostname
        sandbox = self._by_cid.get(other.cid)
        if sandbox is None:
            return NetworkPlan(netns=joined_netns(other.state.pid, ref), host_gateway=self._host_gateway())
        sandbox.joiners.add(container.cid)
        addresses = [str(ep.ip.ip) for ep in sandbox.endpoints.values() if ep.ip is not None]
        netns = sandbox.netns or ("host" if self._is_host(sandbox) else joined_netns(other.state.pid, ref))
        return NetworkPlan(
            netns=netns, addresses=addresses, use_embedded_dns=sandbox.dns, host_gateway=self._host_gateway()
        )

    @staticmethod
    def _is_host(sandbox: Sandbox) -> bool:
        return any(ep.network.driver == "host" for ep in sandbox.endpoints.values())

    def _host_gateway(self) -> str:
        default = self.networks.default_bridge
        return default.gateway if default is not None else ""

    async def _start(self, container: Container) -> tuple[NetworkPlan, dict[str, float]]:
        attached = self.attached(container)
        wanted = [name for name in (container.networking.EndpointsConfig or {}) if name not in attached]
        if wanted:
            self.networks.find(wanted[0])  # raises `network X not found`
        if not attached:
            return NetworkPlan(netns=None), {}  # disconnected from everything: loopback only
        sandbox = Sandbox(ids.new_id(), container, None)
        for net, config in attached.values():
            sandbox.endpoints[net.nid] = Endpoint(ids.new_id(), net, config)
        primary = next(iter(sandbox.endpoints.values()))
        self._by_cid[container.cid] = sandbox  # registered before any await: `network rm` sees it
        phases: dict[str, float] = {}
        link_hosts: list[tuple[str, str]] = []
        link_vars: list[str] = []
        try:
            if container.host_config.Links:  # before plumbing: a bad link costs nothing to undo
                link_hosts, link_vars = self._links(container, sandbox)
            if primary.network.driver == "bridge":
                phases = await self.plumbing.plumb(sandbox, container)
                self.refresh_dns({ep.network.nid for ep in sandbox.endpoints.values()})
            clock = PhaseClock()
            await self._persist(container)
            clock.mark("persist")
            phases.update(clock.phases)
        except BaseException:
            self._by_cid.pop(container.cid, None)
            await asyncio.shield(self._teardown(sandbox))
            raise
        for ep in sandbox.endpoints.values():
            self._event("connect", ep.network, container.cid)
        if primary.network.driver == "host":
            return NetworkPlan(netns="host", host_gateway=self._host_gateway()), phases
        if primary.network.driver == "null":
            return NetworkPlan(netns=None), phases
        plan = NetworkPlan(
            netns=sandbox.netns,
            addresses=[str(ep.ip.ip) for ep in sandbox.endpoints.values() if ep.ip is not None],
            aliases=list(primary.config.Aliases or []),
            use_embedded_dns=sandbox.dns,
            host_gateway=self._host_gateway(),
            link_hosts=link_hosts,
            link_env=link_vars,
        )
        return plan, phases

    # --- stop -------------------------------------------------------------------------------------

    async def release(self, container: Container) -> None:
        async with self._lock(container.cid):
            sandbox = self._by_cid.pop(container.cid, None)
            if sandbox is None:
                self._drop_joiner(container.cid)
                # Not registered (it died while the daemon was away): give back what it held.
                for net, _ in self.attached(container).values():
                    if net.driver == "bridge":
                        await self.ipam.release_owner(net.nid, container.cid)
            else:
                await self._teardown(sandbox)
                for ep in sandbox.endpoints.values():
                    self._event("disconnect", ep.network, container.cid)
            if container.host_config.AutoRemove:
                container.network_settings = self.settings(container)  # the record goes next
            else:
                await self._persist(container)

    def _drop_joiner(self, cid: str) -> None:
        for sb in self._by_cid.values():
            sb.joiners.discard(cid)

    async def _teardown(self, sandbox: Sandbox) -> None:
        shared = any(
            (c := self._lookup_quiet(cid)) is not None and c.state.running for cid in sandbox.joiners
        )
        await self.plumbing.teardown(sandbox, shared=shared)
        self.refresh_dns({ep.network.nid for ep in sandbox.endpoints.values()})

    def refresh_dns(self, nids: set[str] | None = None) -> None:
        self.plumbing.refresh_dns(list(self._by_cid.values()), nids)

    def _lookup_quiet(self, ref: str) -> Container | None:
        try:
            return self.lookup(ref)
        except PydockError:
            return None

    async def forget(self, container: Container) -> None:
        self._locks.pop(container.cid, None)

    # --- connect / disconnect -----------------------------------------------------------------------

    async def connect(self, network: Network, container: Container, config: EndpointSettings) -> None:
        """`docker network connect`: hot-plug into a running container, else store for its start.

        Raises Forbidden (already connected, host/none/shared modes), InvalidParameter (--ip,
        --alias checks), and whatever plugging the endpoint raises.
        """
        async with self._lock(container.cid):
            mode = network_mode(container)
            if mode.startswith("container:"):
                raise Forbidden(SHARED_CONFLICT)
            if network.driver == "host" or mode == "host":
                raise Forbidden(HOST_CONFLICT)
            if network.driver == "null" or mode == "none":
                raise Forbidden(NONE_CONFLICT)
            if network.name in self.attached(container):
                raise EndpointExists(container.name, network.name)
            check_endpoint_config(network, config)
            sandbox = self._by_cid.get(container.cid)
            configs = dict(container.networking.EndpointsConfig or {})
            if sandbox is not None and sandbox.netns is not None:
                await self._hotplug(sandbox, network, config)
            configs[network.name] = config
            container.networking.EndpointsConfig = configs
            await self._persist(container)
        self._event("connect", network, container.cid)

    async def _hotplug(self, sandbox: Sandbox, network: Network, config: EndpointSettings) -> None:
        ep = Endpoint(ids.new_id(), network, config, ifname=sandbox.next_ifname())
        ep.gateway = not network.internal and not any(e.gateway for e in sandbox.endpoints.values())
        sandbox.endpoints[network.nid] = ep
        try:
            await self.plumbing.address(sandbox, ep)
            await self.plumbing.plug(sandbox, ep)
            if network.has_dns and not sandbox.dns:
                assert sandbox.netns is not None
                await self.plumbing.dns.attach(sandbox.cid, sandbox.netns)
                sandbox.dns = True
        except BaseException:
            sandbox.endpoints.pop(network.nid, None)
            if ep.veth:
                await asyncio.shield(self.plumbing.unplug(ep))
            if ep.ip is not None:
                await asyncio.shield(self.ipam.release(network.nid, ep.ip.ip))
            raise
        self.refresh_dns({network.nid})

    async def disconnect(self, network: Network, container: Container) -> None:
        """`docker network disconnect`: unplug from a running container, or drop the stored
        attachment. Raises NotConnected (500, as dockerd) and Forbidden for host mode."""
        async with self._lock(container.cid):
            if network.driver == "host" and network_mode(container) == "host":
                raise Forbidden(HOST_CONFLICT)
            configs = dict(container.networking.EndpointsConfig or {})
            names = [n for n, (net, _) in self.attached(container).items() if net.nid == network.nid]
            sandbox = self._by_cid.get(container.cid)
            ep = sandbox.endpoints.get(network.nid) if sandbox is not None else None
            if not names and ep is None:
                raise NotConnected(container.cid, network.name)
            if sandbox is not None and ep is not None:
                if ep.gateway and sandbox.ports:
                    await self.plumbing.unpublish(sandbox)
                await self.plumbing.unplug(ep)
                del sandbox.endpoints[network.nid]
                if ep.ip is not None:
                    await self.ipam.release(network.nid, ep.ip.ip)
                self.refresh_dns({network.nid})
            for name in names:
                configs.pop(name, None)
            container.networking.EndpointsConfig = configs
            await self._persist(container)
        self._event("disconnect", network, container.cid)

    # --- daemon start / stop (runtime/netrestore.py) -------------------------------------------------

    def bridges(self) -> set[str]:
        return self.networks.bridges()

    def register(self, sandbox: Sandbox) -> None:
        """Adopt the sandbox of a container that kept running across a daemon restart."""
        self._by_cid[sandbox.cid] = sandbox

    async def restore(self, containers: Iterable[Container]) -> None:
        await netrestore.restore(self, list(containers))

    async def shutdown(self) -> None:
        await netrestore.shutdown(self)
