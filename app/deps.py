"""FastAPI dependencies: the engine and its services, taken from the app state."""

from __future__ import annotations

from fastapi import Request

from runtime.containers import ContainerService
from runtime.engine import Engine
from runtime.execs import ExecService


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_containers(request: Request) -> ContainerService:
    return get_engine(request).containers


def get_execs(request: Request) -> ExecService:
    return get_engine(request).execs


def api_version(request: Request) -> str:
    """The API version the client asked for (from the `/vX.Y` prefix), or the highest served."""
    version: str = request.scope.get("state", {}).get("api_version", "1.41")
    return version
