"""The kernel and socket side of container endpoints: addresses, namespaces, veths, host ports,
proxies, iptables rules and the embedded DNS, made and unmade for one `Sandbox` at a time.

`Plumbing.plumb` makes a bridge-mode sandbox before the OCI runtime runs: addresses from IPAM,
host ports bound (a taken port fails here, before anything else is made), a network namespace
of its own (`<exec-root>/netns/<sandbox-id>`, which the spec joins) with a veth pair per network,
the userland proxies, the DNAT rules, and the DNS server on user-defined networks. `teardown`
undoes whatever part of it was done: unmounting the namespace lets the kernel take the veths
along. Which endpoints a container has is decided by `runtime/netendpoints.py`, not here.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from netproxy import bridge, ifconfig
from netproxy.dns import DnsServer
from netproxy.ipam import Ipam
from netproxy.iptables import IptablesManager, PortRule, Proto, flush_conntrack
from netproxy.netns import create_named_netns_with, remove_named_netns
from netproxy.ports import PortAllocator
from netproxy.proxy import start_proxy
from runtime.config import DaemonConfig
from runtime.errors import PydockError
from runtime.netchecks import port_requests
from runtime.netrecords import Endpoint, Sandbox, dns_names, veth_name
from runtime.records import Container

log = logging.getLogger("pydock.netplumbing")


class Plumbing:
    def __init__(self, config: DaemonConfig, ipam: Ipam, iptables: IptablesManager | None) -> None:
        self.config = config
        self.ipam = ipam
        self.iptables = iptables
        self.ports = PortAllocator()
        self.dns = DnsServer()
        self.netns_dir = config.exec_root / "netns"
        self.owner = f"pydock:{config.chain_prefix}:veth"  # the alias on every host-side veth

    async def plumb(self, sandbox: Sandbox, container: Container) -> dict[str, float]:
        """Addresses, host ports, namespace, veths, proxies, rules, DNS; returns phase durations.

        Undone by `teardown`, whatever part of it was done.
        """
        endpoints = list(sandbox.endpoints.values())
        clock = PhaseClock()
        for ep in endpoints:
            await self.address(sandbox, ep)
        clock.mark("ipam")
        primary = endpoints[0]
        gateway_ep = next((ep for ep in endpoints if not ep.network.internal), None)
        if gateway_ep is not None:
            gateway_ep.gateway = True
        requests = port_requests(container) if not primary.network.internal else []
        if requests:
            assert primary.ip is not None
            sandbox.ports = self.ports.reserve(
                requests,
                listen=self.config.userland_proxy,
                container_ip=str(primary.ip.ip),
                endpoint=container.name,
                endpoint_id=primary.eid,
            )
            clock.mark("ports")
        # The socket that configures the inside (by ioctl) is made while the namespace is made.
        path, sock = await create_named_netns_with(
            sandbox.sid[:12], ifconfig.inet_socket, run_dir=self.netns_dir
        )
        sandbox.netns = str(path)
        clock.mark("netns")
        try:
            for i, ep in enumerate(endpoints):
                ep.ifname = f"eth{i}"
                await self.plug(sandbox, ep, inet_socket=sock)
        finally:
            sock.close()  # it would pin the namespace
        clock.mark("veth")
        if sandbox.ports:
            await self.publish(sandbox, primary)
            clock.mark("publish")
        if any(ep.network.has_dns for ep in endpoints):
            await self.dns.attach(sandbox.cid, sandbox.netns)
            sandbox.dns = True
            clock.mark("dns")
        return clock.phases

    async def address(self, sandbox: Sandbox, ep: Endpoint) -> None:
        net = ep.network
        requested = ep.config.IPAMConfig.IPv4Address if ep.config.IPAMConfig is not None else ""
        ip = await self.ipam.allocate(net.nid, sandbox.cid, requested or None)
        ep.ip = ipaddress.IPv4Interface(f"{ip}/{ipaddress.IPv4Network(net.subnet).prefixlen}")
        mac = ep.config.MacAddress
        if not mac and ep is next(iter(sandbox.endpoints.values())):
            mac = sandbox.container.config.MacAddress  # `--mac-address` (API < 1.44) is the primary's
        ep.mac = mac.lower() if mac else bridge.docker_mac(ip)

    async def plug(self, sandbox: Sandbox, ep: Endpoint, *, inet_socket: socket.socket | None = None) -> None:
        assert sandbox.netns is not None and ep.ip is not None
        net = ep.network
        ep.veth = veth_name(ep.eid)
        await bridge.attach(
            bridge.Endpoint(
                netns_path=sandbox.netns,
                bridge=net.bridge,
                address=ep.ip,
                gateway=ipaddress.IPv4Address(net.gateway) if ep.gateway else None,
                ifname=ep.ifname,
                mac=ep.mac,
                mtu=net.mtu,
                host_ifname=ep.veth,
            ),
            owner=self.owner,
            inet_socket=inet_socket,
        )

    async def publish(self, sandbox: Sandbox, ep: Endpoint, *, sync: bool = True) -> None:
        assert ep.ip is not None
        target_ip = str(ep.ip.ip)
        if self.config.userland_proxy:
            for hp in sandbox.ports:
                sandbox.proxies.append(start_proxy(hp.sock, str(hp.proto), (target_ip, hp.container_port)))
        if self.iptables is not None:
            self.iptables.set_ports(sandbox.cid, self.port_rules(sandbox, ep))
            if sync:
                await self.iptables.sync()

    def port_rules(self, sandbox: Sandbox, ep: Endpoint) -> list[PortRule]:
        """The DNAT/ACCEPT rules of the sandbox's published ports.

        With the userland proxy, ports bound to a loopback address need none: connections to
        127.0.0.1 never pass PREROUTING or FORWARD, and our OUTPUT jump leaves 127/8 to the
        proxy. So `-p 127.0.0.1:P:80` costs no iptables call at all.
        """
        assert ep.ip is not None
        return [
            PortRule(
                bridge=ep.network.bridge,
                proto=hp.proto,
                host_port=hp.host_port,
                container_ip=ep.ip.ip,
                container_port=hp.container_port,
                host_ip=ipaddress.IPv4Address(hp.host_ip),
            )
            for hp in sandbox.ports
            if not (self.config.userland_proxy and ipaddress.IPv4Address(hp.host_ip).is_loopback)
        ]

    async def teardown(self, sandbox: Sandbox, *, shared: bool) -> None:
        """Undo `plumb`, whatever part of it was done; errors are logged, never raised.

        `shared`: other containers still live in the namespace (`--network container:`).
        """
        await self.unpublish(sandbox)
        if sandbox.dns:
            await self.dns.detach(sandbox.cid)
            sandbox.dns = False
        if sandbox.netns is not None:
            if shared:
                # Another container still lives in the namespace: take the interfaces out now.
                for ep in sandbox.endpoints.values():
                    await self.unplug(ep)
            with logged("remove netns"):
                await remove_named_netns(Path(sandbox.netns))  # the kernel deletes the veths with it
        for ep in sandbox.endpoints.values():
            if ep.ip is not None:
                with logged("release address"):
                    await self.ipam.release(ep.network.nid, ep.ip.ip)

    async def unplug(self, ep: Endpoint) -> None:
        if ep.veth:
            with logged("delete veth"):
                await bridge.detach(ep.veth, owner=self.owner)

    async def unpublish(self, sandbox: Sandbox) -> None:
        proxies, sandbox.proxies = sandbox.proxies, []
        for proxy in proxies:
            await proxy.close()
        ports, sandbox.ports = sandbox.ports, []
        self.ports.release(ports)
        if ports and self.iptables is not None:
            self.iptables.drop_ports(sandbox.cid)
            with logged("iptables sync"):
                await self.iptables.sync()  # no process at all when the rules did not change
            for hp in ports:
                if hp.proto is Proto.UDP and not ipaddress.IPv4Address(hp.host_ip).is_loopback:
                    # DNAT'ed UDP flows outlive the rule in conntrack (as dockerd, flush them).
                    await flush_conntrack(hp.proto, hp.host_port)

    # --- DNS ---

    def refresh_dns(self, sandboxes: list[Sandbox], nids: set[str] | None = None) -> None:
        """Give every DNS-served namespace on the networks `nids` its current names."""
        per_net: dict[str, dict[str, list[str]]] = {}
        for sb in sandboxes:
            for nid, ep in sb.endpoints.items():
                if ep.network.has_dns and ep.ip is not None:
                    table = per_net.setdefault(nid, {})
                    for name in dns_names(sb.container, ep):
                        table.setdefault(name, []).append(str(ep.ip.ip))
        for sb in sandboxes:
            if not sb.dns or (nids is not None and not nids & sb.endpoints.keys()):
                continue
            records: dict[str, list[str]] = {}
            for nid in sb.endpoints:
                for name, ips in per_net.get(nid, {}).items():
                    records.setdefault(name, []).extend(ips)
            with logged("dns records"):
                self.dns.set_records(sb.cid, records)


class PhaseClock:
    """Durations of the phases of a start, for the debug log (where do the milliseconds go)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = round((now - self._last) * 1e3, 2)
        self._last = now


@contextlib.contextmanager
def logged(what: str) -> Iterator[None]:
    """Log a failed cleanup step and go on (a teardown finishes whatever fails)."""
    try:
        yield
    except (PydockError, OSError, ValueError, KeyError) as exc:
        log.warning("%s failed: %s", what, exc)
