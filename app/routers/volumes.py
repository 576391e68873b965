"""Volume endpoints: create, list, inspect, remove, prune (dockerd's statuses and wording).

201 create (also when the name exists: the existing volume is returned), 204 remove, 404
`get V: no such volume`, 409 `remove V: volume is in use - [<cid>]`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.deps import api_version, engine_of
from app.errors import DockerJSONResponse
from app.models.volumes import Volume, VolumeCreateRequest, VolumeListResponse, VolumePruneResponse
from app.params import DockerBool, FiltersQuery, parse_filters
from runtime.engine import Engine
from runtime.volumes import VolumeService

router = APIRouter(tags=["Volume"])


async def get_volumes(request: Request) -> VolumeService:
    engine: Engine = engine_of(request)
    return engine.containers.volumes


Volumes = Annotated[VolumeService, Depends(get_volumes)]


@router.get("/volumes", operation_id="VolumeList", responses={200: {"model": VolumeListResponse}})
async def volume_list(volumes: Volumes, filters: FiltersQuery = None) -> DockerJSONResponse:
    return DockerJSONResponse(volumes.list_volumes(parse_filters(filters)))


@router.post(
    "/volumes/create", operation_id="VolumeCreate", status_code=201, responses={201: {"model": Volume}}
)
async def volume_create(body: VolumeCreateRequest, volumes: Volumes) -> DockerJSONResponse:
    vol, _created = await volumes.create(
        body.Name or None, driver=body.Driver or None, options=body.DriverOpts, labels=body.Labels
    )
    return DockerJSONResponse(volumes.body(vol), status_code=201)


@router.get("/volumes/{name}", operation_id="VolumeInspect", responses={200: {"model": Volume}})
async def volume_inspect(name: str, volumes: Volumes) -> DockerJSONResponse:
    return DockerJSONResponse(volumes.body(volumes.get(name)))


@router.delete("/volumes/{name}", operation_id="VolumeDelete", status_code=204)
async def volume_delete(name: str, volumes: Volumes, force: DockerBool = False) -> Response:
    await volumes.remove(name, force=force)
    return Response(status_code=204)


@router.post("/volumes/prune", operation_id="VolumePrune", responses={200: {"model": VolumePruneResponse}})
async def volume_prune(
    volumes: Volumes, version: Annotated[str, Depends(api_version)], filters: FiltersQuery = None
) -> DockerJSONResponse:
    return DockerJSONResponse(await volumes.prune(parse_filters(filters), api_version=version))
