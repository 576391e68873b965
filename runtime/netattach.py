"""The seam between containers and networking: what a container start needs from the network.

`NetworkHooks` is called by the launcher: `prepare` before the OCI runtime runs (choose or create
the network namespace, reserve addresses and host ports), `activate` once the init exists,
`release` when it stopped (addresses, ports, veths, rules go away), `forget` when the container
is removed. `NetworkPlan` is what `prepare` decided: the netns for the spec and the contents of
/etc/hosts and /etc/resolv.conf.

`BasicNetwork` serves the modes that need no bridge (`none`, `host`, `container:<id>`); the
bridge and user-defined networks implement the same protocol in `runtime/networks.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from runtime import rootfs as rootfs_mod
from runtime.config import DaemonConfig
from runtime.errors import Conflict, InvalidParameter, NoSuchNetwork
from runtime.records import Container


@dataclass(slots=True)
class NetworkPlan:
    netns: str | None  # "host", a netns path to join, or None for a new, empty namespace
    addresses: list[str] = field(default_factory=list)  # the container's IPv4 addresses
    aliases: list[str] = field(default_factory=list)
    use_embedded_dns: bool = False
    hosts_file_from: str | None = None  # container:<id> shares that container's files
    host_gateway: str = ""  # what `--add-host name:host-gateway` resolves to
    link_hosts: list[tuple[str, str]] = field(default_factory=list)  # `--link`: (ip, names)
    link_env: list[str] = field(default_factory=list)  # `--link`: the targets' variables

    def extra_hosts(self, items: Sequence[str]) -> list[str]:
        """`--add-host` entries with `host-gateway` replaced by the host's gateway address."""
        out: list[str] = []
        for item in items:
            name, sep, address = item.partition(":")
            if sep and address == "host-gateway":
                if not self.host_gateway:
                    continue
                item = f"{name}:{self.host_gateway}"
            out.append(item)
        return out

    def hosts_entries(self, fqdn: str) -> list[tuple[str, str]]:
        hostname = fqdn.split(".", 1)[0]
        names = fqdn if hostname == fqdn else f"{fqdn} {hostname}"
        return [(address, names) for address in self.addresses] + self.link_hosts

    def resolv_conf(
        self,
        dns: Sequence[str] | None,
        dns_search: Sequence[str] | None,
        dns_options: Sequence[str] | None,
        config: DaemonConfig,
    ) -> str:
        """The container's /etc/resolv.conf: `--dns*` flags, then the daemon's, then the host's."""
        host_ns, host_search, host_opts = rootfs_mod.host_resolv_conf()
        if self.netns == "host" and not (dns or config.dns):
            nameservers = host_ns
        elif self.use_embedded_dns:
            nameservers = ["127.0.0.11"]
        else:
            nameservers = list(dns or config.dns or host_ns or rootfs_mod.DEFAULT_NAMESERVERS)
        search = list(dns_search or config.dns_search or host_search)
        options = list(dns_options or config.dns_options or host_opts)
        if self.use_embedded_dns and not any(o.startswith("ndots:") for o in options):
            options.append("ndots:0")
        return rootfs_mod.resolv_conf_content(nameservers, search, options)


class NetworkHooks(Protocol):
    def validate(self, container: Container) -> None:
        """At create, before the record is written: refuse unknown networks (404) and bad
        endpoint settings (400); may fill `container.network_settings` for inspect."""
        ...

    async def restore(self, containers: list[Container]) -> None:
        """At daemon start, before any container starts: the containers that kept running."""
        ...

    async def prepare(self, container: Container) -> NetworkPlan: ...

    async def activate(self, container: Container, pid: int, plan: NetworkPlan) -> None: ...

    async def release(self, container: Container) -> None: ...

    async def forget(self, container: Container) -> None: ...


def network_mode(container: Container) -> str:
    mode = container.host_config.NetworkMode or "default"
    return "bridge" if mode == "default" else mode


class BasicNetwork:
    """`none`, `host` and `container:<id>`; anything else is refused until bridges exist."""

    def __init__(self, netns_of: Callable[[str], str]) -> None:
        # netns_of(ref) → "/proc/<pid>/ns/net" of a running container, or raises.
        self._netns_of = netns_of

    def validate(self, container: Container) -> None:
        mode = network_mode(container)
        if mode not in ("none", "host", "bridge") and not mode.startswith("container:"):
            raise NoSuchNetwork(mode)

    async def restore(self, containers: list[Container]) -> None:
        return None

    async def prepare(self, container: Container) -> NetworkPlan:
        mode = network_mode(container)
        if mode == "none":
            return NetworkPlan(netns=None)
        if mode == "host":
            return NetworkPlan(netns="host")
        if mode.startswith("container:"):
            return NetworkPlan(netns=self._netns_of(mode.split(":", 1)[1]))
        if mode == "bridge":
            # Without the bridge service a container still gets its own, empty namespace.
            return NetworkPlan(netns=None)
        raise InvalidParameter(f"network {mode} not found")

    async def activate(self, container: Container, pid: int, plan: NetworkPlan) -> None:
        return None

    async def release(self, container: Container) -> None:
        return None

    async def forget(self, container: Container) -> None:
        return None


def joined_netns(pid: int, ref: str) -> str:
    if pid <= 0:
        raise Conflict(f"cannot join network of a non running container: {ref}")
    return f"/proc/{pid}/ns/net"
