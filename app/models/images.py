"""Wire models of the image endpoints (Engine API names), for validation and the OpenAPI spec."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    """Engine API bodies: Docker's names; unknown request fields are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AuthConfig(WireModel):
    """The body of `POST /auth` (and, base64url-encoded, the `X-Registry-Auth` header)."""

    username: str = ""
    password: str = ""
    email: str = ""
    serveraddress: str = ""
    identitytoken: str = ""
    registrytoken: str = ""


class AuthResponse(WireModel):
    Status: str
    IdentityToken: str = ""


class ImageSummary(WireModel):
    Containers: int = -1
    Created: int
    Id: str
    Labels: dict[str, str] | None = None
    ParentId: str = ""
    RepoDigests: list[str] | None = None
    RepoTags: list[str] | None = None
    SharedSize: int = -1
    Size: int
    VirtualSize: int


class HistoryItem(WireModel):
    Comment: str = ""
    Created: int
    CreatedBy: str = ""
    Id: str
    Size: int
    Tags: list[str] | None = None


class ImageDeleteItem(WireModel):
    Untagged: str | None = None
    Deleted: str | None = None


class ImagePruneResponse(WireModel):
    ImagesDeleted: list[ImageDeleteItem] | None = None
    SpaceReclaimed: int = 0


class ImageInspect(WireModel):
    Id: str
    RepoTags: list[str] = Field(default_factory=list)
    RepoDigests: list[str] = Field(default_factory=list)
    Parent: str = ""
    Comment: str = ""
    Created: str = ""
    Container: str = ""
    ContainerConfig: dict[str, Any] | None = None
    DockerVersion: str = ""
    Author: str = ""
    Config: dict[str, Any] | None = None
    Architecture: str = ""
    Os: str = "linux"
    Size: int = 0
    VirtualSize: int = 0
    GraphDriver: dict[str, Any] = Field(default_factory=dict)
    RootFS: dict[str, Any] = Field(default_factory=dict)
    Metadata: dict[str, Any] = Field(default_factory=dict)


class DistributionInspect(WireModel):
    Descriptor: dict[str, Any]
    Platforms: list[dict[str, Any]]
