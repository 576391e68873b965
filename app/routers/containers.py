"""Container endpoints: create, list, inspect, lifecycle, rename, remove, wait, resize, prune.

Streams (attach, logs) are in `app/routers/attach.py`. Statuses and messages follow dockerd: 201
create, 204 for lifecycle verbs, 304 for a start of a running / stop of a stopped container.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response, StreamingResponse

from app.deps import get_containers
from app.errors import DockerJSONResponse
from app.models.containers import ContainerCreateRequest, ContainerCreateResponse, ContainerWaitResponse
from app.models.inspect import ContainerInspect, ContainerSummary
from app.params import DockerBool, FiltersQuery, parse_filters
from app.streams import json_lines
from runtime.containers import ContainerService
from runtime.errors import InvalidParameter, NotRunning

router = APIRouter(tags=["Container"])

Containers = Annotated[ContainerService, Depends(get_containers)]
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


def _no_content() -> Response:
    return Response(status_code=204)


@router.get(
    "/containers/json",
    operation_id="ContainerList",
    responses={200: {"model": list[ContainerSummary]}},
)
async def container_list(
    containers: Containers,
    all_: Annotated[DockerBool, Query(alias="all")] = False,
    limit: int | None = None,
    size: DockerBool = False,
    filters: FiltersQuery = None,
) -> DockerJSONResponse:
    items = await containers.list_containers(
        all_=all_, limit=limit, size=size, filters=parse_filters(filters)
    )
    return DockerJSONResponse(items)


@router.post(
    "/containers/create",
    operation_id="ContainerCreate",
    status_code=201,
    responses={201: {"model": ContainerCreateResponse}},
)
async def container_create(
    body: ContainerCreateRequest,
    containers: Containers,
    name: str | None = None,
    platform: str | None = None,
) -> DockerJSONResponse:
    if platform and platform not in ("linux", "linux/amd64", "linux/x86_64", "linux/arm64"):
        raise InvalidParameter(f"invalid platform: {platform}")
    cid, warnings = await containers.create(body, name)
    return DockerJSONResponse({"Id": cid, "Warnings": warnings}, status_code=201)


@router.get(
    "/containers/{ref}/json",
    operation_id="ContainerInspect",
    responses={200: {"model": ContainerInspect}},
)
async def container_inspect(ref: str, containers: Containers, size: DockerBool = False) -> DockerJSONResponse:
    sizes = await containers.sizes(ref) if size else None
    return DockerJSONResponse(containers.inspect(ref, sizes=sizes))


@router.post(
    "/containers/{ref}/start",
    operation_id="ContainerStart",
    status_code=204,
    responses={304: {"description": "Container already started"}},
)
async def container_start(ref: str, containers: Containers, detachKeys: str | None = None) -> Response:
    await containers.start(ref)
    return _no_content()


@router.post(
    "/containers/{ref}/stop",
    operation_id="ContainerStop",
    status_code=204,
    responses={304: {"description": "Container already stopped"}},
)
async def container_stop(
    ref: str,
    containers: Containers,
    t: int | None = None,
    stop_signal: Annotated[str | None, Query(alias="signal")] = None,
) -> Response:
    await containers.stop(ref, timeout_s=t, signal=stop_signal)
    return _no_content()


@router.post("/containers/{ref}/restart", operation_id="ContainerRestart", status_code=204)
async def container_restart(
    ref: str,
    containers: Containers,
    t: int | None = None,
    stop_signal: Annotated[str | None, Query(alias="signal")] = None,
) -> Response:
    await containers.restart(ref, timeout_s=t, signal=stop_signal)
    return _no_content()


@router.post("/containers/{ref}/kill", operation_id="ContainerKill", status_code=204)
async def container_kill(
    ref: str, containers: Containers, kill_signal: Annotated[str | None, Query(alias="signal")] = None
) -> Response:
    await containers.kill(ref, kill_signal or None)
    return _no_content()


@router.post("/containers/{ref}/pause", operation_id="ContainerPause", status_code=204)
async def container_pause(ref: str, containers: Containers) -> Response:
    await containers.pause(ref)
    return _no_content()


@router.post("/containers/{ref}/unpause", operation_id="ContainerUnpause", status_code=204)
async def container_unpause(ref: str, containers: Containers) -> Response:
    await containers.unpause(ref)
    return _no_content()


@router.post("/containers/{ref}/rename", operation_id="ContainerRename", status_code=204)
async def container_rename(ref: str, containers: Containers, name: str) -> Response:
    await containers.rename(ref, name)
    return _no_content()


@router.delete("/containers/{ref}", operation_id="ContainerDelete", status_code=204)
async def container_delete(
    ref: str,
    containers: Containers,
    v: DockerBool = False,
    force: DockerBool = False,
    link: DockerBool = False,
) -> Response:
    if link:
        raise InvalidParameter("Conflict, cannot remove the default link name of the container")
    await containers.remove(ref, force=force, volumes=v)
    return _no_content()


@router.post(
    "/containers/{ref}/wait",
    operation_id="ContainerWait",
    responses={200: {"model": ContainerWaitResponse}},
    response_class=StreamingResponse,
)
async def container_wait(ref: str, containers: Containers, condition: str | None = None) -> StreamingResponse:
    wanted = condition or "not-running"
    if wanted not in WAIT_CONDITIONS:
        raise InvalidParameter(f"invalid condition: {condition!r}")
    sup = containers.get(ref)
    waiter = sup.wait_exit(wanted)

    async def result() -> AsyncIterator[dict[str, Any]]:
        # The 200 and its headers go out before this runs: `docker run` waits for them before
        # it sends `start` (holding them until exit would deadlock the CLI).
        outcome = await waiter
        body: dict[str, Any] = {"Error": None, "StatusCode": outcome.code}
        if outcome.error:
            body["Error"] = {"Message": outcome.error}
        yield body

    return json_lines(result())


@router.post("/containers/{ref}/resize", operation_id="ContainerResize")
async def container_resize(ref: str, containers: Containers, h: int = 0, w: int = 0) -> Response:
    if not (0 <= h <= 0xFFFF and 0 <= w <= 0xFFFF):  # a TTY's winsize holds unsigned shorts
        raise InvalidParameter(f"invalid terminal size {h}x{w}: height and width must be 0 to 65535")
    sup = containers.get(ref)
    if not sup.container.state.running:
        raise NotRunning(sup.container.cid)
    sup.stdio.resize(h, w)
    sup.event("resize", height=str(h), width=str(w))
    return Response(status_code=200, media_type="text/plain")


@router.post("/containers/prune", operation_id="ContainerPrune")
async def container_prune(containers: Containers, filters: FiltersQuery = None) -> DockerJSONResponse:
    return DockerJSONResponse(await containers.prune(parse_filters(filters)))
