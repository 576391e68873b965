"""Wire models of the volume endpoints and of `GET /system/df` (Engine API names)."""

from __future__ import annotations

from typing import Any

from app.models.wire import WireModel, omit_none


class VolumeCreateRequest(WireModel):
    """Body of `POST /volumes/create`. `ClusterVolumeSpec` (swarm) is accepted and ignored."""

    Name: str = ""
    Driver: str = ""
    DriverOpts: dict[str, str] | None = None
    Labels: dict[str, str] | None = None


class VolumeUsageData(WireModel):
    Size: int = -1
    RefCount: int = -1


class Volume(WireModel):
    CreatedAt: str = ""
    Driver: str
    Labels: dict[str, str] | None = None
    Mountpoint: str
    Name: str
    Options: dict[str, str] | None = None
    Scope: str = "local"
    Status: dict[str, Any] | None = omit_none(None)
    UsageData: VolumeUsageData | None = omit_none(None)


class VolumeListResponse(WireModel):
    Volumes: list[Volume] | None = None
    Warnings: list[str] | None = None


class VolumePruneResponse(WireModel):
    VolumesDeleted: list[str] | None = None
    SpaceReclaimed: int = 0


class SystemDataUsageResponse(WireModel):
    """`GET /system/df`: images, containers (with sizes), volumes (with usage), build cache."""

    LayersSize: int = 0
    Images: list[dict[str, Any]] | None = None
    Containers: list[dict[str, Any]] | None = None
    Volumes: list[Volume] | None = None
    BuildCache: list[dict[str, Any]] | None = None
    BuilderSize: int = 0


class ContainerChange(WireModel):
    """One entry of `GET /containers/{id}/changes`: Kind 0 modified, 1 added, 2 deleted."""

    Path: str
    Kind: int


class CommitResponse(WireModel):
    Id: str
