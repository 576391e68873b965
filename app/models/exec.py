"""Exec bodies: `POST /containers/{id}/exec`, `POST /exec/{id}/start`, `GET /exec/{id}/json`."""

from __future__ import annotations

from pydantic import Field, field_validator

from app.models.wire import WireModel


class ExecConfig(WireModel):
    """Body of exec create. docker-py also sends `Container`; it is ignored (the path names it)."""

    User: str = ""
    Privileged: bool = False
    Tty: bool = False
    ConsoleSize: list[int] | None = None  # [height, width]
    AttachStdin: bool = False
    AttachStderr: bool = False
    AttachStdout: bool = False
    Detach: bool = False
    DetachKeys: str = ""
    Env: list[str] | None = None
    WorkingDir: str = ""
    Cmd: list[str] | None = None

    @field_validator("Cmd", mode="before")
    @classmethod
    def _str_slice(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class ExecCreateResponse(WireModel):
    Id: str


class ExecStartConfig(WireModel):
    """Body of exec start: `{"Detach":false,"Tty":true}`."""

    Detach: bool = False
    Tty: bool = False
    ConsoleSize: list[int] | None = None


class ExecProcessConfig(WireModel):
    """`ProcessConfig` of exec inspect; Docker spells these keys in lower case."""

    privileged: bool = False
    user: str = ""
    tty: bool = False
    entrypoint: str = ""
    arguments: list[str] = Field(default_factory=list)


class ExecInspect(WireModel):
    """`GET /exec/{id}/json`; `ExitCode` is null while the process has not exited."""

    CanRemove: bool = False
    DetachKeys: str = ""
    ID: str
    Running: bool = False
    ExitCode: int | None = None
    ProcessConfig: ExecProcessConfig = Field(default_factory=ExecProcessConfig)
    OpenStdin: bool = False
    OpenStderr: bool = False
    OpenStdout: bool = False
    ContainerID: str = ""
    Pid: int = 0
