"""Wire models of the network endpoints (Engine API names): create, connect, disconnect, and the
network object `GET /networks/{id}` returns (for the OpenAPI spec)."""

from __future__ import annotations

from pydantic import Field

from app.models.endpoints import EndpointSettings
from app.models.wire import WireModel


class IPAMConfig(WireModel):
    Subnet: str = ""
    IPRange: str = ""
    Gateway: str = ""
    AuxiliaryAddresses: dict[str, str] | None = None


class IPAM(WireModel):
    Driver: str = "default"
    Config: list[IPAMConfig] | None = None
    Options: dict[str, str] | None = None


_IPAM = IPAM  # the field named IPAM would shadow the class in annotations


class NetworkCreateRequest(WireModel):
    """Body of `POST /networks/create`. `CheckDuplicate` is accepted; names are always unique
    (as dockerd 25 and later)."""

    Name: str
    CheckDuplicate: bool | None = None
    Driver: str = "bridge"
    Scope: str = ""
    Internal: bool = False
    Attachable: bool = False
    Ingress: bool = False
    ConfigOnly: bool = False
    ConfigFrom: dict[str, str] | None = None
    IPAM: _IPAM | None = None
    EnableIPv6: bool = False
    Options: dict[str, str] | None = None
    Labels: dict[str, str] | None = None


class NetworkCreateResponse(WireModel):
    Id: str
    Warning: str = ""


class NetworkConnectRequest(WireModel):
    Container: str
    EndpointConfig: EndpointSettings | None = None


class NetworkDisconnectRequest(WireModel):
    Container: str
    Force: bool = False


class NetworkContainer(WireModel):
    Name: str = ""
    EndpointID: str = ""
    MacAddress: str = ""
    IPv4Address: str = ""
    IPv6Address: str = ""


class ConfigReference(WireModel):
    Network: str = ""


class Network(WireModel):
    """A network as `GET /networks/{id}` and `GET /networks` show it (dockerd 20.10)."""

    Name: str
    Id: str
    Created: str
    Scope: str = "local"
    Driver: str
    EnableIPv6: bool = False
    IPAM: _IPAM
    Internal: bool = False
    Attachable: bool = False
    Ingress: bool = False
    ConfigFrom: ConfigReference = Field(default_factory=ConfigReference)
    ConfigOnly: bool = False
    Containers: dict[str, NetworkContainer] = Field(default_factory=dict)
    Options: dict[str, str] = Field(default_factory=dict)
    Labels: dict[str, str] = Field(default_factory=dict)


class NetworkPruneResponse(WireModel):
    NetworksDeleted: list[str] | None = None
