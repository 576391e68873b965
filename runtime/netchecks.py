"""Checks and filters of the networks API: names, endpoint settings, published ports, `ls` and
`prune` filters, with dockerd's messages.

Pure functions over `runtime/netrecords.py` objects and wire models; no state, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping

from app.models.endpoints import EndpointSettings
from netproxy.ports import PortRequest, parse_port_bindings
from runtime.errors import InvalidParameter, UserIpNotAllowed
from runtime.netrecords import LOCAL_SCOPE, Network
from runtime.prune import labels_accept, parse_until
from runtime.records import Container, parse_rfc3339

NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
NETWORK_FILTERS = {"driver", "id", "label", "name", "scope", "type", "dangling"}
PRUNE_FILTERS = {"until", "label", "label!"}

HOST_CONFLICT = "container cannot be disconnected from host network or connected to host network"
NONE_CONFLICT = (
    "container cannot be connected to multiple networks with one of the networks in private (none) mode"
)
SHARED_CONFLICT = (
    "container sharing network namespace with another container or host cannot be connected to any "
    "other network"
)
MIXED_MODES = "conflicting options: cannot attach both user-defined and non-user-defined network-modes"
ALIAS_ON_DEFAULT = "network-scoped alias is supported only for containers in user defined networks"


def check_network_name(name: str) -> str:
    if not NETWORK_NAME.match(name):
        raise InvalidParameter(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name


def port_requests(container: Container) -> list[PortRequest]:
    """HostConfig.PortBindings, plus every ExposedPort with `-P`, as port requests."""
    hc = container.host_config
    bindings = {
        key: [b.model_dump() for b in value] if value else None
        for key, value in (hc.PortBindings or {}).items()
    }
    return parse_port_bindings(
        bindings, (container.config.ExposedPorts or {}).keys(), publish_all=hc.PublishAllPorts
    )


def check_endpoint_config(network: Network, config: EndpointSettings) -> None:
    """Docker's create/connect checks of `--ip` and `--alias` against the network."""
    ip = config.IPAMConfig.IPv4Address if config.IPAMConfig is not None else ""
    if ip:
        if network.default_bridge or network.driver != "bridge":
            raise UserIpNotAllowed(default_bridge=True)
        if not network.user_subnet:
            raise UserIpNotAllowed(default_bridge=False)
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError as exc:
            raise InvalidParameter(f"invalid IPv4 address: {ip}") from exc
        if address not in ipaddress.IPv4Network(network.subnet):
            raise InvalidParameter(f"no configured subnet or ip-range contain the IP address {ip}")
    if config.Aliases and not network.has_dns:
        raise InvalidParameter(ALIAS_ON_DEFAULT)


# --- filters --------------------------------------------------------------------------------------


def _label_matches(labels: Mapping[str, str], wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value


def _regex_match(patterns: list[str], value: str) -> bool:
    for pattern in patterns:
        try:
            if re.search(pattern, value):
                return True
        except re.error:
            if pattern in value:
                return True
    return False


def network_filter(filters: Mapping[str, list[str]]) -> Callable[[Network, int], bool]:
    """`GET /networks` filters (moby's semantics: name and id are regular expressions).

    The predicate takes a network and its number of active endpoints.
    """
    for key in filters:
        if key not in NETWORK_FILTERS:
            raise InvalidParameter(f"invalid filter '{key}'")
    for value in filters.get("type", []):
        if value not in ("custom", "builtin"):
            raise InvalidParameter(f"invalid filter: 'type'='{value}'")
    dangling_values = filters.get("dangling", [])
    dangling: bool | None = None
    for value in dangling_values:
        if value.lower() in ("true", "1"):
            dangling = True
        elif value.lower() in ("false", "0"):
            dangling = False
        else:
            raise InvalidParameter(f"invalid filter 'dangling={value}'")

    def accept(net: Network, active: int) -> bool:
        if "driver" in filters and net.driver not in filters["driver"]:
            return False
        if "name" in filters and not _regex_match(filters["name"], net.name):
            return False
        if "id" in filters and not _regex_match(filters["id"], net.nid):
            return False
        if "scope" in filters and LOCAL_SCOPE not in filters["scope"]:
            return False
        if "type" in filters:
            kind = "builtin" if net.predefined else "custom"
            if kind not in filters["type"]:
                return False
        if "label" in filters and not all(_label_matches(net.labels, w) for w in filters["label"]):
            return False
        if dangling is not None:
            is_dangling = not net.predefined and active == 0
            if is_dangling != dangling:
                return False
        return True

    return accept


def prune_filter(filters: dict[str, list[str]], now_s: float | None = None) -> Callable[[Network], bool]:
    """`POST /networks/prune` filters: `until` (timestamp or duration), `label`, `label!`."""
    for key in filters:
        if key not in PRUNE_FILTERS:
            raise InvalidParameter(f"invalid filter '{key}'")
    until = parse_until(filters.get("until", []), now_s)
    labels = labels_accept(filters)

    def accept(net: Network) -> bool:
        if until is not None and parse_rfc3339(net.created) >= until:
            return False
        return labels(net.labels)

    return accept
