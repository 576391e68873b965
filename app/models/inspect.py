"""Response bodies that describe containers: inspect (`GET /containers/{id}/json`) and list items.

Shapes follow dockerd 20.10 (API 1.41) as captured in PROTOCOL.md: times are RFC 3339 strings
with Docker's zero time `0001-01-01T00:00:00Z` rather than null, `ExecIDs` is null until an exec
exists, and Go `omitempty` fields (`SizeRw`, `Health`, a port's `PublicPort`) vanish when zero.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.models.containers import ContainerConfig
from app.models.endpoints import EndpointSettings
from app.models.hostconfig import HostConfig, PortBinding
from app.models.wire import WireModel, omit_empty, omit_none

ZERO_TIME = "0001-01-01T00:00:00Z"

ContainerStatus = Literal["created", "running", "paused", "restarting", "removing", "exited", "dead"]
HealthStatus = Literal["none", "starting", "healthy", "unhealthy"]


class HealthcheckResult(WireModel):
    Start: str = ZERO_TIME
    End: str = ZERO_TIME
    ExitCode: int = 0
    Output: str = ""


class Health(WireModel):
    Status: HealthStatus = "none"
    FailingStreak: int = 0
    Log: list[HealthcheckResult] = Field(default_factory=list)


_Health = Health


class ContainerState(WireModel):
    """`State` of inspect."""

    Status: ContainerStatus = "created"
    Running: bool = False
    Paused: bool = False
    Restarting: bool = False
    OOMKilled: bool = False
    Dead: bool = False
    Pid: int = 0
    ExitCode: int = 0
    Error: str = ""
    StartedAt: str = ZERO_TIME
    FinishedAt: str = ZERO_TIME
    Health: _Health | None = omit_none(None)


class GraphDriverData(WireModel):
    Name: str = "overlay2"
    Data: dict[str, str] | None = None


class MountPoint(WireModel):
    """One entry of inspect's (and the list's) `Mounts`."""

    Type: str = ""  # "bind", "volume", "tmpfs"
    Name: str = omit_empty("")
    Source: str = ""
    Destination: str = ""
    Driver: str = omit_empty("")
    Mode: str = ""
    RW: bool = True
    Propagation: str = ""


class NetworkSettings(WireModel):
    """`NetworkSettings` of inspect (20.10 shape, with the deprecated top-level address fields)."""

    Bridge: str = ""
    SandboxID: str = ""
    HairpinMode: bool = False
    LinkLocalIPv6Address: str = ""
    LinkLocalIPv6PrefixLen: int = 0
    Ports: dict[str, list[PortBinding] | None] = Field(default_factory=dict)
    SandboxKey: str = ""
    SecondaryIPAddresses: list[dict[str, object]] | None = None
    SecondaryIPv6Addresses: list[dict[str, object]] | None = None
    EndpointID: str = ""
    Gateway: str = ""
    GlobalIPv6Address: str = ""
    GlobalIPv6PrefixLen: int = 0
    IPAddress: str = ""
    IPPrefixLen: int = 0
    IPv6Gateway: str = ""
    MacAddress: str = ""
    Networks: dict[str, EndpointSettings] = Field(default_factory=dict)


_HostConfig = HostConfig
_ContainerConfig = ContainerConfig
_NetworkSettings = NetworkSettings


class ContainerInspect(WireModel):
    """`GET /containers/{id}/json`."""

    Id: str
    Created: str = ZERO_TIME
    Path: str = ""
    Args: list[str] = Field(default_factory=list)
    State: ContainerState = Field(default_factory=ContainerState)
    Image: str = ""
    ResolvConfPath: str = ""
    HostnamePath: str = ""
    HostsPath: str = ""
    LogPath: str = ""
    Name: str = ""
    RestartCount: int = 0
    Driver: str = "overlay2"
    Platform: str = "linux"
    MountLabel: str = ""
    ProcessLabel: str = ""
    AppArmorProfile: str = ""
    ExecIDs: list[str] | None = None
    HostConfig: _HostConfig = Field(default_factory=HostConfig)
    GraphDriver: GraphDriverData = Field(default_factory=GraphDriverData)
    SizeRw: int | None = omit_none(None)
    SizeRootFs: int | None = omit_none(None)
    Mounts: list[MountPoint] = Field(default_factory=list)
    # "Config" as a pydantic class attribute means a (deprecated) settings class: alias it.
    Config_: _ContainerConfig = Field(default_factory=ContainerConfig, alias="Config")
    NetworkSettings: _NetworkSettings = Field(default_factory=NetworkSettings)


class Port(WireModel):
    """A port of a list item: `{"IP":"0.0.0.0","PrivatePort":80,"PublicPort":8080,"Type":"tcp"}`."""

    IP: str = omit_empty("")
    PrivatePort: int = 0
    PublicPort: int = omit_empty(0)
    Type: str = "tcp"


class SummaryHostConfig(WireModel):
    NetworkMode: str = ""
    Annotations: dict[str, str] | None = omit_empty(None)


class SummaryNetworkSettings(WireModel):
    Networks: dict[str, EndpointSettings] = Field(default_factory=dict)


class ContainerSummary(WireModel):
    """One item of `GET /containers/json`."""

    Id: str
    Names: list[str] = Field(default_factory=list)
    Image: str = ""
    ImageID: str = ""
    Command: str = ""
    Created: int = 0
    Ports: list[Port] = Field(default_factory=list)
    SizeRw: int = omit_empty(0)
    SizeRootFs: int = omit_empty(0)
    Labels: dict[str, str] = Field(default_factory=dict)
    State: ContainerStatus = "created"
    Status: str = ""
    HostConfig: SummaryHostConfig = Field(default_factory=SummaryHostConfig)
    NetworkSettings: SummaryNetworkSettings = Field(default_factory=SummaryNetworkSettings)
    Mounts: list[MountPoint] = Field(default_factory=list)
