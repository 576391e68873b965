"""Networking across a daemon restart: re-adopting live containers, sweeping dead ones' leftovers.

At start (`restore`, before any container starts): each container that kept running gets its
sandbox back from its record (`NetworkSettings`: namespace, endpoints, addresses, published
ports), its host ports bound again with their proxies, its rules registered and its DNS server
restarted. Then whatever no live container owns is removed: veths carrying our alias, namespaces
under `<exec-root>/netns/`, IPAM allocations. The first iptables sync comes after (the network
service does it). At shutdown, proxies and DNS servers stop; namespaces, veths and rules of
containers that keep running (live restore) stay.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netproxy import bridge
from netproxy.iptables import Proto
from netproxy.netns import remove_named_netns
from netproxy.ports import ANY, PortRequest
from runtime import ids
from runtime.errors import PydockError
from runtime.netattach import network_mode
from runtime.netplumbing import logged
from runtime.netrecords import Endpoint, Sandbox, veth_name
from runtime.records import Container

if TYPE_CHECKING:
    from runtime.netendpoints import Sandboxes

log = logging.getLogger("pydock.netrestore")


async def restore(sbs: Sandboxes, live: list[Container]) -> None:
    """Re-register the endpoints, host ports, proxies and DNS of containers that kept running
    while the daemon was away, then remove what dead ones left (veths, namespaces, addresses)."""
    for container in live:
        if not network_mode(container).startswith("container:"):
            with logged(f"restore {container.short_id}"):
                await _readopt(sbs, container)
    for container in live:
        mode = network_mode(container)
        if mode.startswith("container:"):
            ref = mode.split(":", 1)[1]  # resolved among the records: no supervisors yet
            for other in live:
                if ref in (other.cid, other.name) or other.cid.startswith(ref):
                    if (sandbox := sbs.get(other.cid)) is not None:
                        sandbox.joiners.add(container.cid)
                    break
    await sweep(sbs)
    sbs.refresh_dns()


def published_requests(settings: Mapping[str, Any]) -> list[PortRequest]:
    """The exact host ports recorded in `NetworkSettings.Ports`, as requests to bind again."""
    requests: list[PortRequest] = []
    for key, bindings in (settings.get("Ports") or {}).items():
        port, _, proto = str(key).partition("/")
        for b in bindings or []:
            host_ip, host_port = str(b.get("HostIp") or ANY), int(b.get("HostPort") or 0)
            if host_port and ":" not in host_ip:
                requests.append(PortRequest(int(port), Proto(proto or "tcp"), host_ip, host_port, host_port))
    return requests


async def _readopt(sbs: Sandboxes, container: Container) -> None:
    settings = container.network_settings or {}
    sid = str(settings.get("SandboxID") or "") or ids.new_id()
    key = str(settings.get("SandboxKey") or "")
    sandbox = Sandbox(sid, container, key or None)
    stored = settings.get("Networks") or {}
    for i, (name, (net, config)) in enumerate(sbs.attached(container).items()):
        info = stored.get(name) or {}
        eid = str(info.get("EndpointID") or "") or ids.new_id()
        ep = Endpoint(eid, net, config, mac=str(info.get("MacAddress") or ""), ifname=f"eth{i}")
        address = str(info.get("IPAddress") or "")
        if address and net.driver == "bridge":
            ep.ip = ipaddress.IPv4Interface(f"{address}/{int(info.get('IPPrefixLen') or 32)}")
            ep.veth = veth_name(eid)
            ep.gateway = bool(info.get("Gateway")) and not net.internal and i == 0
            owner = sbs.ipam.get(net.nid).allocations.get(ep.ip.ip)
            if owner is None:
                await sbs.ipam.allocate(net.nid, container.cid, address)
            elif owner != container.cid:
                log.warning("restored address %s is held by %s", address, owner)
        sandbox.endpoints[net.nid] = ep
    sbs.register(sandbox)
    if sandbox.netns is None or not os.path.exists(sandbox.netns):  # noqa: ASYNC240 - one stat
        sandbox.netns = None
        return
    primary = next(iter(sandbox.endpoints.values()), None)
    requests = published_requests(settings)
    if requests and primary is not None and primary.ip is not None:
        try:
            sandbox.ports = sbs.plumbing.ports.reserve(requests, listen=sbs.config.userland_proxy)
        except PydockError as exc:
            log.warning("cannot bind published ports again: %s", exc, extra={"container": container.short_id})
        else:
            await sbs.plumbing.publish(sandbox, primary, sync=False)  # the first sync follows the sweep
    if any(ep.network.has_dns for ep in sandbox.endpoints.values()):
        await sbs.plumbing.dns.attach(sandbox.cid, sandbox.netns)
        sandbox.dns = True


async def sweep(sbs: Sandboxes) -> None:
    """Remove veths, namespaces and addresses that no live container owns."""
    sandboxes = sbs.all()
    keep_veths = {ep.veth for sb in sandboxes for ep in sb.endpoints.values() if ep.veth}
    with logged("sweep veths"):
        # Only veths on our own bridges: a daemon with the same prefix elsewhere keeps its own.
        bridges = sbs.bridges()
        for name in await bridge.links_owned_by(sbs.plumbing.owner, masters=bridges) if bridges else []:
            if name not in keep_veths:
                await bridge.detach(name, owner=sbs.plumbing.owner)
    keep_netns = {sb.netns for sb in sandboxes if sb.netns}
    entries = sorted(sbs.plumbing.netns_dir.iterdir()) if sbs.plumbing.netns_dir.is_dir() else []
    for entry in entries:
        if str(entry) not in keep_netns:
            with logged("sweep netns"):
                await remove_named_netns(Path(entry))
    live = {sb.cid for sb in sandboxes}
    for pool in sbs.ipam.pools():
        for owner in {o for o in pool.allocations.values() if o not in live}:
            await sbs.ipam.release_owner(pool.key, owner)


async def shutdown(sbs: Sandboxes) -> None:
    """Stop proxies and DNS servers; namespaces, veths and rules of live containers stay."""
    for sandbox in sbs.all():
        proxies, sandbox.proxies = sandbox.proxies, []
        for proxy in proxies:
            await proxy.close()
        ports, sandbox.ports = sandbox.ports, []
        sbs.plumbing.ports.release(ports)
        sandbox.dns = False
    await sbs.plumbing.dns.close()
