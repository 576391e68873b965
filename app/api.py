"""The FastAPI application: routers, error handlers, API version middleware.

`create_app(engine)` builds the ASGI app the daemon serves and the one tests and the OpenAPI
generator use. The HTTP layer holds no state: everything lives in the engine's services.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp

from app import errors
from app.middleware import API_VERSION, ApiVersionMiddleware
from app.routers import (
    archive,
    attach,
    containers,
    diskusage,
    exec,
    images,
    networks,
    resources,
    system,
    volumes,
)
from runtime.engine import VERSION, Engine


def create_fastapi(engine: Engine | None = None) -> FastAPI:
    """The bare FastAPI app (routers + handlers), without the version-prefix middleware."""
    app = FastAPI(
        title="pydock Engine API",
        version=API_VERSION,
        summary=f"The Docker Engine API as served by pydock {VERSION}",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.engine = engine
    errors.install(app)
    app.include_router(system.router)
    app.include_router(images.router)
    app.include_router(containers.router)
    app.include_router(attach.router)
    app.include_router(exec.router)
    app.include_router(resources.router)
    app.include_router(networks.router)
    app.include_router(volumes.router)
    app.include_router(archive.router)
    app.include_router(diskusage.router)
    return app


def create_app(engine: Engine) -> ASGIApp:
    return ApiVersionMiddleware(create_fastapi(engine))
