"""Image endpoints: list, create (pull/import), inspect, history, tag, remove, push, save, load,
prune, `/auth` and `/distribution/{name}/json`.

Image names may hold `/` and a registry port (`/images/127.0.0.1:5000/ns/x/push`), so the
name is a `{name:path}` parameter and the operation is the fixed suffix after it. Progress
streams (pull, push, import, load) are JSON lines ending in `\\r\\n`; an error raised before the
first message is an ordinary HTTP error (as dockerd answers a failed manifest fetch), one after
it goes in-band.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from starlette.responses import Response, StreamingResponse

from app.deps import engine_of, get_engine
from app.errors import DockerJSONResponse
from app.models.images import (
    AuthConfig as AuthConfigBody,
)
from app.models.images import (
    AuthResponse,
    DistributionInspect,
    HistoryItem,
    ImageDeleteItem,
    ImageInspect,
    ImagePruneResponse,
    ImageSummary,
)
from app.params import FiltersQuery, docker_bool, parse_filters
from app.streams import ClosingStreamingResponse, json_message_stream
from runtime import distribution, reference
from runtime.engine import Engine
from runtime.errors import InvalidParameter, Unsupported
from runtime.images import ImageService, Progress
from runtime.registry import AuthConfig, RegistryClient, decode_registry_auth, select_platform

router = APIRouter(tags=["Image"])


async def get_images(request: Request) -> ImageService:
    engine: Engine = engine_of(request)
    return engine.images


ImagesDep = Annotated[ImageService, Depends(get_images)]
RegistryAuthHeader = Annotated[str | None, Header(alias="X-Registry-Auth")]
BoolQuery = Annotated[str | None, Query()]


async def _progress(work: Callable[[Progress], Awaitable[Any]]) -> AsyncIterator[Mapping[str, Any]]:
    """Run `work` as a task and yield what it emits; its exception ends the iteration.

    Closing the iterator (the client went away) cancels the work.
    """
    queue: asyncio.Queue[Mapping[str, Any] | None] = asyncio.Queue()

    async def runner() -> None:
        try:
            await work(queue.put_nowait)
        finally:
            queue.put_nowait(None)

    task = asyncio.ensure_future(runner())
    try:
        while (item := await queue.get()) is not None:
            yield item
        await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait([task])


async def _started_stream(source: AsyncIterator[Mapping[str, Any]]) -> StreamingResponse:
    """Wait for the first message so that an early failure is a plain HTTP error."""
    try:
        first = await anext(source)
    except StopAsyncIteration:
        first = None

    async def chained() -> AsyncIterator[Mapping[str, Any]]:
        try:
            if first is not None:
                yield first
            async for item in source:
                yield item
        finally:
            await source.aclose()  # type: ignore[attr-defined]

    return json_message_stream(chained())


@router.get("/images/json", operation_id="ImageList", response_model=list[ImageSummary])
async def image_list(
    images: ImagesDep,
    all_: Annotated[str | None, Query(alias="all")] = None,
    filters: FiltersQuery = None,
    digests: BoolQuery = None,
    shared_size: Annotated[str | None, Query(alias="shared-size")] = None,
) -> Response:
    del shared_size
    rows = images.list_images(parse_filters(filters), all_=docker_bool(all_), digests=docker_bool(digests))
    return DockerJSONResponse(rows)


@router.post("/images/create", operation_id="ImageCreate")
async def image_create(
    request: Request,
    images: ImagesDep,
    fromImage: str | None = None,
    fromSrc: str | None = None,
    repo: str | None = None,
    tag: str | None = None,
    message: str | None = None,
    changes: Annotated[list[str] | None, Query()] = None,
    platform: str | None = None,
    x_registry_auth: RegistryAuthHeader = None,
) -> StreamingResponse:
    """Pull (`fromImage`) or import (`fromSrc=-` with the tarball as the body)."""
    if fromImage:
        ref = distribution.parse_pull_ref(fromImage, tag)
        auth = decode_registry_auth(x_registry_auth)

        async def pull(emit: Progress) -> None:
            await distribution.pull(images, ref, auth, emit)

        return await _started_stream(_progress(pull))
    if fromSrc is None:
        raise InvalidParameter("either fromImage or fromSrc is required")
    if fromSrc != "-":
        raise Unsupported("importing from a URL is not supported by pydock: send the tarball as the body")
    body = request.stream()

    async def import_(emit: Progress) -> None:
        image_id = await images.import_(
            body, repo=repo, tag=tag, changes=changes or [], message=message or "", platform=platform
        )
        emit({"status": image_id})

    return await _started_stream(_progress(import_))


@router.get("/images/get", operation_id="ImageGetAll", response_class=StreamingResponse)
async def image_get_all(
    images: ImagesDep, names: Annotated[list[str] | None, Query()] = None
) -> StreamingResponse:
    if not names:
        raise InvalidParameter("no image names given")
    return ClosingStreamingResponse(await images.save(names), media_type="application/x-tar")


@router.post("/images/load", operation_id="ImageLoad")
async def image_load(request: Request, images: ImagesDep, quiet: BoolQuery = None) -> StreamingResponse:
    body = request.stream()
    # The result lines are sent either way, as dockerd does; per-layer progress only when the
    # client asks with quiet=0 (dockerd's default is quiet; the CLI sends quiet=0 on a TTY).
    show_progress = quiet is not None and not docker_bool(quiet)

    async def load(emit: Progress) -> None:
        for msg in await images.load(body, emit if show_progress else None):
            emit(msg)

    return await _started_stream(_progress(load))


@router.post("/images/prune", operation_id="ImagePrune", response_model=ImagePruneResponse)
async def image_prune(images: ImagesDep, filters: FiltersQuery = None) -> Response:
    return DockerJSONResponse(await images.prune(parse_filters(filters)))


@router.get("/images/{name:path}/json", operation_id="ImageInspect", response_model=ImageInspect)
async def image_inspect(name: str, images: ImagesDep) -> Response:
    return DockerJSONResponse(images.inspect(name))


@router.get("/images/{name:path}/history", operation_id="ImageHistory", response_model=list[HistoryItem])
async def image_history(name: str, images: ImagesDep) -> Response:
    return DockerJSONResponse(images.history(name))


@router.post("/images/{name:path}/tag", operation_id="ImageTag", status_code=201, response_class=Response)
async def image_tag(
    name: str, images: ImagesDep, repo: str | None = None, tag: str | None = None
) -> Response:
    await images.tag(name, repo or "", tag)
    return Response(status_code=201)


@router.post("/images/{name:path}/push", operation_id="ImagePush")
async def image_push(
    name: str, images: ImagesDep, tag: str | None = None, x_registry_auth: RegistryAuthHeader = None
) -> StreamingResponse:
    ref = reference.parse(name)
    auth = decode_registry_auth(x_registry_auth)

    async def push(emit: Progress) -> None:
        await distribution.push(images, ref, tag, auth, emit)

    return json_message_stream(_progress(push))


@router.get("/images/{name:path}/get", operation_id="ImageGet", response_class=StreamingResponse)
async def image_get(name: str, images: ImagesDep) -> StreamingResponse:
    return ClosingStreamingResponse(await images.save([name]), media_type="application/x-tar")


@router.delete("/images/{name:path}", operation_id="ImageDelete", response_model=list[ImageDeleteItem])
async def image_delete(
    name: str, images: ImagesDep, force: BoolQuery = None, noprune: BoolQuery = None
) -> Response:
    return DockerJSONResponse(
        await images.remove(name, force=docker_bool(force), noprune=docker_bool(noprune))
    )


def _login_host(server: str) -> str:
    host = server.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    if not host or host in ("index.docker.io", "docker.io", "registry-1.docker.io"):
        return "registry-1.docker.io"
    return host


@router.post("/auth", operation_id="SystemAuth", response_model=AuthResponse)
async def system_auth(
    engine: Annotated[Engine, Depends(get_engine)], body: Annotated[AuthConfigBody, Body()]
) -> Response:
    auth = AuthConfig(
        username=body.username,
        password=body.password,
        serveraddress=body.serveraddress,
        identitytoken=body.identitytoken,
        registrytoken=body.registrytoken,
    )
    host = _login_host(body.serveraddress)
    async with RegistryClient(host, auth, insecure_registries=engine.config.insecure_registries) as client:
        await client.login()
    return DockerJSONResponse({"Status": "Login Succeeded", "IdentityToken": ""})


@router.get(
    "/distribution/{name:path}/json", operation_id="DistributionInspect", response_model=DistributionInspect
)
async def distribution_inspect(
    name: str, engine: Annotated[Engine, Depends(get_engine)], x_registry_auth: RegistryAuthHeader = None
) -> Response:
    ref = reference.parse(name).tagged_or_latest()
    auth = decode_registry_auth(x_registry_auth)
    async with RegistryClient(
        reference.registry_host(ref), auth, insecure_registries=engine.config.insecure_registries
    ) as client:
        manifest = await client.get_manifest(ref.path, ref.digest or ref.tag or "latest")
    body = manifest.json()
    platforms: list[dict[str, Any]] = []
    if "manifests" in body:
        platforms = [dict(m.get("platform") or {}) for m in body.get("manifests") or []]
        select_platform(body)  # raises when nothing fits this host
    descriptor = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": len(manifest.raw)}
    return DockerJSONResponse({"Descriptor": descriptor, "Platforms": platforms})
