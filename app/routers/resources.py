"""What a running container uses and may use: `docker top`, `docker stats`, `docker update`.

`stats?stream=0` answers one JSON object (`application/json`) after about a second, with
`precpu_stats` filled; `stream=1` one object per line every second, with no Content-Type, as
dockerd 20.10 (PROTOCOL.md §2, §5). `top` is 409 for a stopped container; `update` answers
`{"Warnings":[...]}`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import StreamingResponse

from app.deps import get_containers
from app.errors import DockerJSONResponse
from app.models.hostconfig import ContainerUpdate, ContainerUpdateResponse
from app.params import DockerBool
from app.streams import json_lines
from runtime.containers import ContainerService
from runtime.errors import NoSuchContainer
from runtime.stats import collect
from runtime.supervisor import Call
from runtime.top import container_top
from runtime.update import apply_update, check_update

router = APIRouter(tags=["Container"])
Containers = Annotated[ContainerService, Depends(get_containers)]


@router.get("/containers/{ref}/top", operation_id="ContainerTop")
async def container_top_route(
    ref: str, containers: Containers, ps_args: str | None = None
) -> DockerJSONResponse:
    sup = containers.get(ref)
    body = await container_top(sup, containers.launcher.cgroup_layout, ps_args)
    return DockerJSONResponse(body)


@router.get("/containers/{ref}/stats", operation_id="ContainerStats", response_class=StreamingResponse)
async def container_stats(
    ref: str,
    containers: Containers,
    stream: DockerBool = True,
    one_shot: Annotated[DockerBool, Query(alias="one-shot")] = False,
) -> StreamingResponse:
    sup = containers.get(ref)
    cid = sup.container.cid

    def exists() -> bool:
        try:
            return containers.get(cid) is sup
        except NoSuchContainer:
            return False

    source = collect(
        sup, containers.launcher.cgroup_layout, stream=stream, one_shot=one_shot and not stream, exists=exists
    )
    return json_lines(source, media_type=None if stream else "application/json")


@router.post(
    "/containers/{ref}/update",
    operation_id="ContainerUpdate",
    responses={200: {"model": ContainerUpdateResponse}},
)
async def container_update(ref: str, body: ContainerUpdate, containers: Containers) -> DockerJSONResponse:
    sup = containers.get(ref)
    warnings = check_update(body, containers.create_limits())
    facts = containers.host_facts
    await sup.request(
        Call(fn=lambda: apply_update(sup, body, cgroup_v2=facts.cgroup_v2, swap_limit=facts.swap_limit))
    )
    return DockerJSONResponse({"Warnings": warnings})
