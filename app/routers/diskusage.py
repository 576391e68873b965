"""`GET /system/df` (`docker system df [-v]`): what images, containers and volumes use on disk."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.deps import engine_of
from app.errors import DockerJSONResponse
from app.models.volumes import SystemDataUsageResponse

router = APIRouter(tags=["System"])


@router.get("/system/df", operation_id="SystemDataUsage", responses={200: {"model": SystemDataUsageResponse}})
async def system_data_usage(request: Request, type: str | None = None) -> DockerJSONResponse:
    """The `type` filter (API 1.42) is accepted; everything is always computed."""
    engine = engine_of(request)
    images = engine.images.disk_usage()
    containers = await engine.containers.list_containers(all_=True, limit=None, size=True, filters={})
    for c in containers:
        c.setdefault("SizeRw", 0)
    volumes = await engine.containers.volumes.usage()
    return DockerJSONResponse(
        {
            "LayersSize": images["LayersSize"],
            "Images": images["Images"],
            "Containers": containers,
            "Volumes": volumes,
            "BuildCache": [],
            "BuilderSize": 0,
        }
    )
