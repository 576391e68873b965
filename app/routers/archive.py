"""A container's files over HTTP: `docker cp` (`HEAD`/`GET`/`PUT .../archive`), `docker export`,
`docker diff` (`/changes`), `docker commit` (`POST /commit`).

The stat of a path travels in `X-Docker-Container-Path-Stat` (base64 of JSON, Go FileMode bits)
on HEAD and GET. Uploads and downloads are streamed; the runtime works on them in threads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse

from app.deps import engine_of
from app.errors import DockerJSONResponse
from app.models.volumes import CommitResponse, ContainerChange
from app.params import DockerBool, docker_bool
from app.streams import ClosingStreamingResponse
from runtime.containerfs import ContainerFs
from runtime.engine import Engine
from runtime.errors import ClientGone, InvalidParameter

router = APIRouter(tags=["Container"])

STAT_HEADER = "X-Docker-Container-Path-Stat"


async def get_containerfs(request: Request) -> ContainerFs:
    engine: Engine = engine_of(request)
    return ContainerFs(engine.containers, engine.images)


Files = Annotated[ContainerFs, Depends(get_containerfs)]
PathQuery = Annotated[str | None, Query(alias="path")]


def _path(path: str | None) -> str:
    if not path:
        raise InvalidParameter("bad parameter: 'path' cannot be empty")
    return path


async def _upload(request: Request) -> AsyncIterator[bytes]:
    """The request body; a client that goes away mid-upload ends the extraction with an error."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect as exc:
        raise ClientGone() from exc


def _stat_header(body: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()


@router.head("/containers/{ref}/archive", operation_id="ContainerArchiveInfo", response_class=Response)
async def container_archive_info(ref: str, files: Files, path: PathQuery = None) -> Response:
    body = await files.stat(ref, _path(path))
    return Response(status_code=200, headers={STAT_HEADER: _stat_header(body)})


@router.get(
    "/containers/{ref}/archive",
    operation_id="ContainerArchive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}},
)
async def container_archive(ref: str, files: Files, path: PathQuery = None) -> StreamingResponse:
    body, stream = await files.archive(ref, _path(path))
    return ClosingStreamingResponse(
        stream, media_type="application/x-tar", headers={STAT_HEADER: _stat_header(body)}
    )


@router.put("/containers/{ref}/archive", operation_id="PutContainerArchive", response_class=Response)
async def put_container_archive(
    ref: str,
    request: Request,
    files: Files,
    path: PathQuery = None,
    noOverwriteDirNonDir: DockerBool = False,
    copyUIDGID: DockerBool = False,
) -> Response:
    await files.extract(
        ref,
        _path(path),
        _upload(request),
        no_overwrite_dir_non_dir=noOverwriteDirNonDir,
        copy_uid_gid=copyUIDGID,
    )
    return Response(status_code=200)


@router.get(
    "/containers/{ref}/export",
    operation_id="ContainerExport",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def container_export(ref: str, files: Files) -> StreamingResponse:
    stream: AsyncIterator[bytes] = await files.export(ref)
    return ClosingStreamingResponse(stream, media_type="application/octet-stream")


@router.get(
    "/containers/{ref}/changes",
    operation_id="ContainerChanges",
    responses={200: {"model": list[ContainerChange]}},
)
async def container_changes(ref: str, files: Files) -> DockerJSONResponse:
    changes = await files.changes(ref)
    return DockerJSONResponse(changes or None)


@router.post(
    "/commit", operation_id="ImageCommit", status_code=201, responses={201: {"model": CommitResponse}}
)
async def image_commit(
    request: Request,
    files: Files,
    container: str = "",
    repo: str | None = None,
    tag: str | None = None,
    comment: str = "",
    author: str = "",
    pause: str | None = None,
    changes: Annotated[list[str] | None, Query()] = None,
) -> DockerJSONResponse:
    if not container:
        raise InvalidParameter("No container name or ID supplied")
    raw = await request.body()
    config: dict[str, Any] | None = None
    if raw.strip():
        try:
            decoded = json.loads(raw)
        except ValueError as exc:
            raise InvalidParameter(f"invalid JSON: {exc}") from exc
        if decoded is not None and not isinstance(decoded, dict):
            raise InvalidParameter("invalid JSON: the body must be a container config object")
        config = decoded or None
    image_id = await files.commit(
        container,
        repo=repo or None,
        tag=tag or None,
        comment=comment,
        author=author,
        pause=True if pause is None or pause == "" else docker_bool(pause),  # dockerd's default
        changes=[c for c in changes or [] if c],
        config=config,
    )
    return DockerJSONResponse({"Id": image_id}, status_code=201)
