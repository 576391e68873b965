"""FastAPI dependencies: the engine and its services, taken from the app state.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread, which
costs a thread round trip on every request.
"""

from __future__ import annotations

from fastapi import Request

from runtime.containers import ContainerService
from runtime.engine import Engine
from runtime.execs import ExecService


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_engine(request: Request) -> Engine:
    return engine_of(request)


async def get_containers(request: Request) -> ContainerService:
    return engine_of(request).containers


async def get_execs(request: Request) -> ExecService:
    return engine_of(request).execs


async def api_version(request: Request) -> str:
    """The API version the client asked for (from the `/vX.Y` prefix), or the highest served."""
    version: str = request.scope.get("state", {}).get("api_version", "1.41")
    return version
