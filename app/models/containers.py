"""Container `Config` and the create / wait bodies, as wire models with Docker's field names.

`ContainerConfig` is both the portable half of the create body and `Config` in inspect (after
the image's config was merged in, see `runtime.spec.merge_image_config`). Image configs use the
same keys, so `ContainerConfig.model_validate(image_config)` reads one too.

Only parsing lives here; Docker's create-time checks are in `app/models/validation.py`.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from app.models.endpoints import NetworkingConfig
from app.models.hostconfig import HostConfig
from app.models.wire import WireModel, omit_empty, omit_none


def _str_slice(value: object) -> object:
    """Go's `strslice.StrSlice`: a JSON string is accepted as a one-element list."""
    if isinstance(value, str):
        return [value]
    return value


class HealthConfig(WireModel):
    """`Healthcheck`: durations are nanoseconds; 0 means "inherit / default"."""

    Test: list[str] | None = omit_empty(None)
    Interval: int = omit_empty(0)
    Timeout: int = omit_empty(0)
    StartPeriod: int = omit_empty(0)
    StartInterval: int = omit_empty(0)
    Retries: int = omit_empty(0)


class ContainerConfig(WireModel):
    """`Config`: what a container runs, independent of the host it runs on."""

    Hostname: str = ""
    Domainname: str = ""
    User: str = ""
    AttachStdin: bool = False
    AttachStdout: bool = False
    AttachStderr: bool = False
    ExposedPorts: dict[str, dict[str, object]] | None = omit_empty(None)
    Tty: bool = False
    OpenStdin: bool = False
    StdinOnce: bool = False
    Env: list[str] | None = None
    Cmd: list[str] | None = None
    Healthcheck: HealthConfig | None = omit_none(None)
    ArgsEscaped: bool = omit_empty(False)
    Image: str = ""
    Volumes: dict[str, dict[str, object]] | None = None
    WorkingDir: str = ""
    Entrypoint: list[str] | None = None
    NetworkDisabled: bool = omit_empty(False)
    MacAddress: str = omit_empty("")
    OnBuild: list[str] | None = None
    Labels: dict[str, str] | None = None
    StopSignal: str = omit_empty("")
    StopTimeout: int | None = omit_none(None)
    Shell: list[str] | None = omit_empty(None)

    _slices = field_validator("Cmd", "Entrypoint", "Shell", mode="before")(_str_slice)

    @field_validator("ExposedPorts", "Volumes", mode="before")
    @classmethod
    def _empty_struct_values(cls, value: object) -> object:
        # The values are Go's `struct{}`: whatever a client sends, Docker keeps `{}`.
        if isinstance(value, dict):
            return {str(k): {} for k in value}
        return value


_HostConfig = HostConfig
_NetworkingConfig = NetworkingConfig


class ContainerCreateRequest(ContainerConfig):
    """Body of `POST /containers/create`: `Config` fields at the top, plus the host side."""

    HostConfig: _HostConfig | None = None
    NetworkingConfig: _NetworkingConfig | None = None

    def config(self) -> ContainerConfig:
        """The `Config` part alone (what inspect shows under `Config`)."""
        return ContainerConfig(**{name: getattr(self, name) for name in ContainerConfig.model_fields})


class ContainerCreateResponse(WireModel):
    Id: str
    Warnings: list[str] = Field(default_factory=list)


class ContainerWaitExitError(WireModel):
    Message: str = ""


class ContainerWaitResponse(WireModel):
    """`{"Error":null,"StatusCode":N}`; Error is null unless waiting itself failed."""

    StatusCode: int
    Error: ContainerWaitExitError | None = None
