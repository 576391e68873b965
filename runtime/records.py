"""A container's durable record: what `config.json` and `state.json` under its data dir hold.

`Container` is owned by the container's supervisor (the only writer); the service reads it for
listing and inspect. `config.json` changes rarely (create, rename, update); `state.json` on every
state change. Both are replaced atomically, so a crash leaves the old or the new version.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.models.containers import ContainerConfig
from app.models.endpoints import NetworkingConfig
from app.models.hostconfig import HostConfig
from runtime import store

ZERO_TIME = "0001-01-01T00:00:00Z"


class Status(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


def now_rfc3339() -> str:
    """Docker's timestamp format: RFC 3339 with nanoseconds, UTC."""
    ns = time.time_ns()
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


@functools.lru_cache(maxsize=8192)
def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp (0.0 for Docker's zero time).

    Cached: listing containers parses the same few timestamps per container on every request."""
    if not text or text.startswith("0001-"):
        return 0.0
    main, _, frac = text.rstrip("Z").partition(".")
    base = dt.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
    return base + (float("0." + frac[:9]) if frac else 0.0)


@dataclass(frozen=True, slots=True)
class ContainerCounts:
    total: int = 0
    running: int = 0
    paused: int = 0
    stopped: int = 0


@dataclass(slots=True)
class ContainerState:
    status: Status = Status.CREATED
    pid: int = 0
    pid_start_time: int = 0  # /proc/<pid>/stat starttime: guards re-adoption against PID reuse
    exit_code: int = 0
    error: str = ""
    error_kind: str = ""
    oom_killed: bool = False
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    restart_count: int = 0
    manually_stopped: bool = False
    has_been_started: bool = False
    health: dict[str, Any] | None = None
    link_env: list[str] = field(default_factory=list)  # `--link` variables of this run (for exec)

    @property
    def running(self) -> bool:
        return self.status in (Status.RUNNING, Status.PAUSED)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        state = cls(**known)
        state.status = Status(state.status)
        return state


@dataclass(slots=True)
class Container:
    """Everything pydock keeps about one container."""

    cid: str
    name: str  # without the leading "/"
    created: str
    image_id: str  # sha256:<hex>
    config: ContainerConfig  # merged with the image's config
    host_config: HostConfig
    networking: NetworkingConfig
    path: str
    args: list[str]
    data_dir: Path  # <data-root>/containers/<cid>
    runtime: str = "runc"
    state: ContainerState = field(default_factory=ContainerState)
    exec_ids: list[str] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)  # inspect `Mounts`, resolved at create
    network_settings: dict[str, Any] = field(default_factory=dict)  # filled by the network layer
    platform: str = "linux"
    cgroup_path: str = ""  # where runc puts its cgroup (`<parent>/<cid>`), fixed at create

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.cid}-json.log"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "config.json"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.json"

    @property
    def short_id(self) -> str:
        return self.cid[:12]

    def config_json(self) -> dict[str, Any]:
        return {
            "Id": self.cid,
            "Name": self.name,
            "Created": self.created,
            "Image": self.image_id,
            "Config": self.config.model_dump(mode="json"),
            "HostConfig": self.host_config.model_dump(mode="json"),
            "NetworkingConfig": self.networking.model_dump(mode="json"),
            "Path": self.path,
            "Args": self.args,
            "Runtime": self.runtime,
            "Mounts": self.mounts,
            "NetworkSettings": self.network_settings,
            "ExecIDs": self.exec_ids,
            "Platform": self.platform,
            "CgroupPath": self.cgroup_path,
        }

    @classmethod
    def from_json(cls, data_dir: Path, config: dict[str, Any], state: dict[str, Any]) -> Container:
        return cls(
            cid=config["Id"],
            name=config["Name"],
            created=config["Created"],
            image_id=config["Image"],
            config=ContainerConfig.model_validate(config["Config"]),
            host_config=HostConfig.model_validate(config["HostConfig"]),
            networking=NetworkingConfig.model_validate(config.get("NetworkingConfig") or {}),
            path=config["Path"],
            args=list(config["Args"]),
            data_dir=data_dir,
            runtime=config.get("Runtime", "runc"),
            state=ContainerState.from_json(state),
            exec_ids=[],
            mounts=list(config.get("Mounts") or []),
            network_settings=dict(config.get("NetworkSettings") or {}),
            platform=config.get("Platform", "linux"),
            cgroup_path=config.get("CgroupPath", ""),
        )

    # --- persistence (blocking: call through asyncio.to_thread) -------------------------------

    def save_config(self) -> None:
        store.write_json(self.config_path, self.config_json())

    def save_state(self) -> None:
        # Atomic (rename) but not fsync'd: it changes on every start and stop, and after a power
        # loss the startup reconciliation re-derives liveness from /proc and the runtime anyway.
        store.write_json(self.state_path, self.state.to_json(), durable=False)

    @classmethod
    def load(cls, data_dir: Path) -> Container:
        config = store.read_json(data_dir / "config.json")
        try:
            state = store.read_json(data_dir / "state.json")
        except FileNotFoundError:
            state = {}
        return cls.from_json(data_dir, config, state)
