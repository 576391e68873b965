"""The FastAPI application: routers, error handlers, API version middleware.

`create_app(engine)` builds the ASGI app the daemon serves and the one tests and the OpenAPI
generator use. The HTTP layer holds no state: everything lives in the engine's services.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
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


class PydockAPI(FastAPI):
    """FastAPI with only the middleware pydock uses: the 500 handler, the exception handlers and
    the exit stack FastAPI's routes expect. The default stack also has telemetry and a body limit
    pydock does not need (its limits are `app/limits.py`); every layer costs on each request.
    """

    def build_middleware_stack(self) -> ASGIApp:
        error_handler = None
        handlers = {}
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = value
            else:
                handlers[key] = value
        # FastAPI's routes need the exit stack it keeps in the request scope.
        app: ASGIApp = AsyncExitStackMiddleware(self.router)
        app = ExceptionMiddleware(app, handlers=handlers, debug=self.debug)
        return ServerErrorMiddleware(app, handler=error_handler, debug=self.debug)


def create_fastapi(engine: Engine | None = None) -> FastAPI:
    """The bare FastAPI app (routers + handlers), without the version-prefix middleware."""
    app = PydockAPI(
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
