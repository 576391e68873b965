"""Network objects and endpoint records: what is persisted, and what inspect and `ls` show.

`Network` is one network as `<data-root>/networks/<id>.json` keeps it and as
`GET /networks/{id}` shows it (dockerd 20.10's shape). `Endpoint` is one container's attachment
to one network while it runs (address, MAC, veth); `Sandbox` is a running container's network
namespace with its endpoints, host ports and proxies. The functions at the end build a
container's `NetworkSettings` (inspect) from them, and filter networks for `ls` and `prune`.

Pure data and pure functions: no kernel, no I/O besides the JSON conversion.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.models.endpoints import EndpointSettings
from netproxy.ports import HostPort
from netproxy.proxy import Proxy
from runtime.records import Container

PREDEFINED = ("bridge", "host", "none")
DEFAULT_MTU = 1500
LOCAL_SCOPE = "local"

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"
OPT_MTU = "com.docker.network.driver.mtu"


def _truthy(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "t", "true", "yes", "on")


@dataclass(slots=True)
class Network:
    """One network; `subnet`/`gateway`/`ip_range` are its IPAM config (bridge driver only)."""

    nid: str
    name: str
    driver: str  # "bridge", "host" or "null"
    created: str
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv6: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ipam_driver: str = "default"
    ipam_options: dict[str, str] | None = None
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    user_subnet: bool = False  # --subnet given (then --ip is allowed)
    bridge_created: bool = False  # pydock made the bridge interface (and may delete it)
    default_bridge: bool = False

    @property
    def bridge(self) -> str:
        """The bridge interface: `-o com.docker.network.bridge.name`, else Docker's `br-<id>`."""
        if self.driver != "bridge":
            return ""
        return self.options.get(OPT_BRIDGE_NAME) or f"br-{self.nid[:12]}"

    @property
    def predefined(self) -> bool:
        return self.default_bridge or self.driver in ("host", "null")

    @property
    def icc(self) -> bool:
        return _truthy(self.options.get(OPT_ICC), True)

    @property
    def masquerade(self) -> bool:
        return _truthy(self.options.get(OPT_MASQ), True)

    @property
    def mtu(self) -> int:
        value = self.options.get(OPT_MTU, "")
        return int(value) if value.isdigit() and int(value) >= 68 else DEFAULT_MTU

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        """The gateway address with the subnet's prefix length (what the bridge holds)."""
        prefix = ipaddress.IPv4Network(self.subnet).prefixlen
        return ipaddress.IPv4Interface(f"{self.gateway}/{prefix}")

    @property
    def has_dns(self) -> bool:
        """Docker's embedded DNS serves user-defined bridge networks, not the default one."""
        return self.driver == "bridge" and not self.default_bridge

    def to_json(self) -> dict[str, Any]:
        return {
            "Id": self.nid,
            "Name": self.name,
            "Driver": self.driver,
            "Created": self.created,
            "Internal": self.internal,
            "Attachable": self.attachable,
            "Ingress": self.ingress,
            "EnableIPv6": self.enable_ipv6,
            "Options": self.options,
            "Labels": self.labels,
            "IPAMDriver": self.ipam_driver,
            "IPAMOptions": self.ipam_options,
            "Subnet": self.subnet,
            "Gateway": self.gateway,
            "IPRange": self.ip_range,
            "UserSubnet": self.user_subnet,
            "BridgeCreated": self.bridge_created,
            "DefaultBridge": self.default_bridge,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Network:
        return cls(
            nid=str(obj["Id"]),
            name=str(obj["Name"]),
            driver=str(obj["Driver"]),
            created=str(obj["Created"]),
            internal=bool(obj.get("Internal", False)),
            attachable=bool(obj.get("Attachable", False)),
            ingress=bool(obj.get("Ingress", False)),
            enable_ipv6=bool(obj.get("EnableIPv6", False)),
            options={str(k): str(v) for k, v in (obj.get("Options") or {}).items()},
            labels={str(k): str(v) for k, v in (obj.get("Labels") or {}).items()},
            ipam_driver=str(obj.get("IPAMDriver") or "default"),
            ipam_options=obj.get("IPAMOptions"),
            subnet=str(obj.get("Subnet") or ""),
            gateway=str(obj.get("Gateway") or ""),
            ip_range=str(obj.get("IPRange") or ""),
            user_subnet=bool(obj.get("UserSubnet", False)),
            bridge_created=bool(obj.get("BridgeCreated", False)),
            default_bridge=bool(obj.get("DefaultBridge", False)),
        )

    def ipam_wire(self) -> dict[str, Any]:
        config: list[dict[str, str]] = []
        if self.subnet:
            entry = {"Subnet": self.subnet}
            if self.ip_range:
                entry["IPRange"] = self.ip_range
            entry["Gateway"] = self.gateway
            config.append(entry)
        return {"Driver": self.ipam_driver, "Options": self.ipam_options, "Config": config}

    def wire(self, containers: Mapping[str, dict[str, str]]) -> dict[str, Any]:
        """`GET /networks/{id}` (and one item of `GET /networks`)."""
        return {
            "Name": self.name,
            "Id": self.nid,
            "Created": self.created,
            "Scope": LOCAL_SCOPE,
            "Driver": self.driver,
            "EnableIPv6": self.enable_ipv6,
            "IPAM": self.ipam_wire(),
            "Internal": self.internal,
            "Attachable": self.attachable,
            "Ingress": self.ingress,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": dict(containers),
            "Options": dict(self.options),
            "Labels": dict(self.labels),
        }


def veth_name(eid: str) -> str:
    """The host side of an endpoint's veth pair, derived from its ID (found again after a restart)."""
    return "veth" + eid[:7]


# --- running endpoints --------------------------------------------------------------------------


@dataclass(slots=True)
class Endpoint:
    """One container's attachment to one network while it runs."""

    eid: str
    network: Network
    config: EndpointSettings  # what the client asked for (aliases, --ip, ...)
    ip: ipaddress.IPv4Interface | None = None
    mac: str = ""
    ifname: str = ""  # inside the container: eth0, eth1, ...
    veth: str = ""  # host side of the pair
    gateway: bool = False  # this endpoint holds the container's default route

    def settings(self, container: Container) -> dict[str, Any]:
        """EndpointSettings as inspect shows it under `NetworkSettings.Networks`."""
        out = idle_settings(self.network, self.config, container)
        out["EndpointID"] = self.eid
        if self.ip is not None:
            out["Gateway"] = self.network.gateway
            out["IPAddress"] = str(self.ip.ip)
            out["IPPrefixLen"] = self.ip.network.prefixlen
        out["MacAddress"] = self.mac
        return out

    def container_entry(self, container: Container) -> dict[str, str]:
        """The container's line in `network inspect` `Containers`."""
        return {
            "Name": container.name,
            "EndpointID": self.eid,
            "MacAddress": self.mac,
            "IPv4Address": str(self.ip) if self.ip is not None else "",
            "IPv6Address": "",
        }


@dataclass(slots=True, eq=False)
class Sandbox:
    """A running container's network side: its namespace, endpoints, host ports, proxies."""

    sid: str
    container: Container
    netns: str | None  # our named netns path; None for host and none modes
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # by network ID, attach order
    ports: list[HostPort] = field(default_factory=list)
    proxies: list[Proxy] = field(default_factory=list)
    dns: bool = False  # the embedded DNS server answers in this namespace
    joiners: set[str] = field(default_factory=set)  # containers sharing it (container:<id>)

    @property
    def cid(self) -> str:
        return self.container.cid

    def next_ifname(self) -> str:
        used = {ep.ifname for ep in self.endpoints.values()}
        n = 0
        while f"eth{n}" in used:
            n += 1
        return f"eth{n}"


def idle_settings(network: Network, config: EndpointSettings, container: Container) -> dict[str, Any]:
    """EndpointSettings of an attachment that has no endpoint (created or stopped container)."""
    aliases = list(config.Aliases or [])
    if network.has_dns and aliases and container.short_id not in aliases:
        aliases.append(container.short_id)  # dockerd 20.10 adds the short ID on user networks
    ipam = config.IPAMConfig.model_dump(mode="json") if config.IPAMConfig is not None else None
    return {
        "IPAMConfig": ipam,
        "Links": config.Links,
        "Aliases": aliases or None,
        "NetworkID": network.nid,
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": "",
        "DriverOpts": config.DriverOpts,
    }


def exposed_ports_map(container: Container) -> dict[str, list[dict[str, str]] | None]:
    """`Ports` without bindings: every exposed port, unpublished (`"80/tcp": null`)."""
    return {key: None for key in sorted(container.config.ExposedPorts or {})}


def network_settings(
    container: Container,
    *,
    sandbox: Sandbox | None,
    attached: Mapping[str, tuple[Network, EndpointSettings]],
    ports: Mapping[str, list[dict[str, str]]] | None = None,
) -> dict[str, Any]:
    """A container's `NetworkSettings`. `attached`: network name → (network, config) for the
    networks it is attached to; those with a running endpoint in `sandbox` show it."""
    live = sandbox.endpoints if sandbox is not None else {}
    networks: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for name, (network, config) in attached.items():
        ep = live.get(network.nid)
        settings = ep.settings(container) if ep is not None else idle_settings(network, config, container)
        networks[name] = settings
        if network.default_bridge and ep is not None:
            top = settings  # the legacy top-level fields describe the default bridge only
    port_map: dict[str, list[dict[str, str]] | None] = {}
    if sandbox is not None and sandbox.netns is not None:
        port_map = dict(exposed_ports_map(container))
        port_map.update(ports or {})
    own_netns = sandbox is not None and sandbox.netns is not None
    return {
        "Bridge": "",
        "SandboxID": sandbox.sid if sandbox is not None else "",
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": port_map,
        "SandboxKey": sandbox.netns if own_netns and sandbox is not None else "",
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": top.get("EndpointID", ""),
        "Gateway": top.get("Gateway", ""),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": top.get("IPAddress", ""),
        "IPPrefixLen": top.get("IPPrefixLen", 0),
        "IPv6Gateway": "",
        "MacAddress": top.get("MacAddress", ""),
        "Networks": networks,
    }


# --- DNS ------------------------------------------------------------------------------------------


def dns_names(container: Container, ep: Endpoint) -> list[str]:
    """The names an endpoint answers to on its network: container name, short ID, aliases."""
    names = [container.name, container.short_id, f"{container.name}.{ep.network.name}"]
    names.extend(ep.config.Aliases or [])
    return [n for n in dict.fromkeys(names) if n]
