"""Network endpoints: list, inspect, create, remove, connect, disconnect, prune.

Statuses follow dockerd: 201 for create, 204 for remove, 200 with an empty body for connect and
disconnect; 404 `network X not found`, 409 for a taken name, 403 for a network in use.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.deps import engine_of
from app.errors import DockerJSONResponse
from app.models.networks import (
    Network,
    NetworkConnectRequest,
    NetworkCreateRequest,
    NetworkCreateResponse,
    NetworkDisconnectRequest,
    NetworkPruneResponse,
)
from app.params import DockerBool, FiltersQuery, parse_filters
from runtime.networks import NetworkService

router = APIRouter(tags=["Network"])


async def get_networks(request: Request) -> NetworkService:
    return engine_of(request).networks


Networks = Annotated[NetworkService, Depends(get_networks)]


@router.get("/networks", operation_id="NetworkList", responses={200: {"model": list[Network]}})
async def network_list(networks: Networks, filters: FiltersQuery = None) -> DockerJSONResponse:
    return DockerJSONResponse(networks.list_networks(parse_filters(filters)))


@router.post("/networks/prune", operation_id="NetworkPrune", responses={200: {"model": NetworkPruneResponse}})
async def network_prune(networks: Networks, filters: FiltersQuery = None) -> DockerJSONResponse:
    deleted = await networks.prune(parse_filters(filters))
    return DockerJSONResponse({"NetworksDeleted": deleted or None})


@router.post(
    "/networks/create",
    operation_id="NetworkCreate",
    status_code=201,
    responses={201: {"model": NetworkCreateResponse}},
)
async def network_create(body: NetworkCreateRequest, networks: Networks) -> DockerJSONResponse:
    nid = await networks.create(body)
    return DockerJSONResponse({"Id": nid, "Warning": ""}, status_code=201)


@router.get("/networks/{ref}", operation_id="NetworkInspect", responses={200: {"model": Network}})
async def network_inspect(
    ref: str, networks: Networks, verbose: DockerBool = False, scope: str | None = None
) -> DockerJSONResponse:
    return DockerJSONResponse(networks.inspect(ref, scope=scope))


@router.delete("/networks/{ref}", operation_id="NetworkDelete", status_code=204)
async def network_delete(ref: str, networks: Networks) -> Response:
    await networks.remove(ref)
    return Response(status_code=204)


@router.post("/networks/{ref}/connect", operation_id="NetworkConnect")
async def network_connect(ref: str, body: NetworkConnectRequest, networks: Networks) -> Response:
    await networks.connect(ref, body.Container, body.EndpointConfig)
    return Response(status_code=200)


@router.post("/networks/{ref}/disconnect", operation_id="NetworkDisconnect")
async def network_disconnect(ref: str, body: NetworkDisconnectRequest, networks: Networks) -> Response:
    await networks.disconnect(ref, body.Container, force=body.Force)
    return Response(status_code=200)
