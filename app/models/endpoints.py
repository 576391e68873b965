"""`NetworkingConfig` and `EndpointSettings`: a container's attachment to one network, on the wire.

Used in the create body (`NetworkingConfig.EndpointsConfig`), in network connect, and in inspect
(`NetworkSettings.Networks`). Newer clients send fields this API version does not have
(`GwPriority`, `DNSNames`): they are ignored.
"""

from __future__ import annotations

from app.models.wire import WireModel


class EndpointIPAMConfig(WireModel):
    IPv4Address: str = ""
    IPv6Address: str = ""
    LinkLocalIPs: list[str] | None = None


class EndpointSettings(WireModel):
    IPAMConfig: EndpointIPAMConfig | None = None
    Links: list[str] | None = None
    Aliases: list[str] | None = None
    NetworkID: str = ""
    EndpointID: str = ""
    Gateway: str = ""
    IPAddress: str = ""
    IPPrefixLen: int = 0
    IPv6Gateway: str = ""
    GlobalIPv6Address: str = ""
    GlobalIPv6PrefixLen: int = 0
    MacAddress: str = ""
    DriverOpts: dict[str, str] | None = None


class NetworkingConfig(WireModel):
    EndpointsConfig: dict[str, EndpointSettings] | None = None
