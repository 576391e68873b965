"""System endpoints: `/_ping`, `/version`, `/info`, `/events`, `/build/prune`."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response, StreamingResponse

from app.deps import get_engine
from app.errors import DockerJSONResponse
from app.fastpath import PING_HEADERS
from app.middleware import API_VERSION, MIN_API_VERSION
from app.params import FiltersQuery, check_filter_keys, parse_filters
from app.streams import json_lines
from runtime import sysinfo
from runtime.aiters import closing
from runtime.engine import Engine
from runtime.errors import InvalidParameter
from runtime.events import Event

router = APIRouter(tags=["System"])

# Api-Version, Docker-Experimental and Ostype are on every response (uvicorn default headers).

EngineDep = Annotated[Engine, Depends(get_engine)]


@router.get("/_ping", operation_id="SystemPing", response_class=Response)
async def system_ping() -> Response:
    return Response(b"OK", media_type="text/plain; charset=utf-8", headers=PING_HEADERS)


@router.head("/_ping", operation_id="SystemPingHead", response_class=Response)
async def system_ping_head() -> Response:
    return Response(media_type="text/plain; charset=utf-8", headers={**PING_HEADERS, "Content-Length": "0"})


def _version_body(engine: Engine) -> dict[str, Any]:
    host = engine.host
    build_time = dt.datetime.fromtimestamp(engine.started_at, dt.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.000000000+00:00"
    )
    details = {
        "ApiVersion": API_VERSION,
        "Arch": host.goarch,
        "BuildTime": build_time,
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "KernelVersion": host.kernel_version,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
    }
    components: list[dict[str, Any]] = [{"Name": "Engine", "Version": engine.version, "Details": details}]
    for name, version in engine.component_versions.items():
        components.append({"Name": name, "Version": version, "Details": {"GitCommit": ""}})
    return {
        "Platform": {"Name": f"pydock {engine.version}"},
        "Components": components,
        "Version": engine.version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "Os": "linux",
        "Arch": host.goarch,
        "KernelVersion": host.kernel_version,
        "BuildTime": build_time,
    }


@router.get("/version", operation_id="SystemVersion")
async def system_version(engine: EngineDep) -> DockerJSONResponse:
    return DockerJSONResponse(_version_body(engine))


def _info_body(engine: Engine) -> dict[str, Any]:
    config = engine.config
    host = engine.host
    counts = engine.container_counts()
    runtimes = {
        spec.name: {"path": spec.resolved() or spec.path}
        for spec in config.runtimes
        if spec.resolved() is not None
    }
    security = ["name=seccomp,profile=builtin"]
    if host.cgroup_version == "2":
        security.append("name=cgroupns")
    warnings: list[str] = []
    if not config.iptables:
        warnings.append("WARNING: iptables is disabled: published ports and outbound NAT do not work")
    if host.cgroup_hybrid and config.default_runtime == "crun":
        warnings.append("WARNING: crun does not support hybrid cgroup hosts")
    return {
        "ID": engine.engine_id,
        "Containers": counts.total,
        "ContainersRunning": counts.running,
        "ContainersPaused": counts.paused,
        "ContainersStopped": counts.stopped,
        "Images": engine.image_count(),
        "Driver": "overlay2",
        "DriverStatus": [
            ["Backing Filesystem", engine.backing_filesystem],
            ["Supports d_type", "true"],
            ["Native Overlay Diff", "false"],
            ["userxattr", "false"],
        ],
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "none", "null"],
            "Authorization": None,
            "Log": ["json-file"],
        },
        "MemoryLimit": True,
        "SwapLimit": os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
        or host.cgroup_version == "2",
        "KernelMemory": host.cgroup_version == "1",
        "KernelMemoryTCP": host.cgroup_version == "1",
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": True,
        "CPUSet": True,
        "PidsLimit": True,
        "IPv4Forwarding": sysinfo.ipv4_forwarding(),
        "BridgeNfIptables": sysinfo.bridge_nf_iptables(),
        "BridgeNfIp6tables": False,
        "Debug": config.debug,
        "NFd": len(os.listdir("/proc/self/fd")),
        "OomKillDisable": host.cgroup_version == "1",
        "NGoroutines": engine.task_count(),
        "SystemTime": dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="microseconds"),
        "LoggingDriver": config.log_driver,
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": host.cgroup_version,
        "NEventsListener": engine.events.listener_count,
        "KernelVersion": host.kernel_version,
        "OperatingSystem": host.operating_system,
        "OSVersion": host.os_version,
        "OSType": "linux",
        "Architecture": host.architecture,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": ["127.0.0.0/8", *[r for r in config.insecure_registries if "/" in r]],
            "IndexConfigs": {
                "docker.io": {
                    "Name": "docker.io",
                    "Mirrors": list(config.registry_mirrors),
                    "Secure": True,
                    "Official": True,
                },
            },
            "Mirrors": list(config.registry_mirrors),
        },
        "NCPU": host.ncpu,
        "MemTotal": host.mem_total,
        "GenericResources": None,
        "DockerRootDir": str(config.data_root),
        "HttpProxy": os.environ.get("HTTP_PROXY", os.environ.get("http_proxy", "")),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", os.environ.get("https_proxy", "")),
        "NoProxy": os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")),
        "Name": host.hostname,
        "Labels": list(config.labels),
        "ExperimentalBuild": False,
        "ServerVersion": engine.version,
        "Runtimes": runtimes,
        "DefaultRuntime": config.default_runtime,
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": config.live_restore,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": security,
        "Warnings": warnings or None,
    }


@router.get("/info", operation_id="SystemInfo")
async def system_info(engine: EngineDep) -> DockerJSONResponse:
    return DockerJSONResponse(_info_body(engine))


# --- events ---------------------------------------------------------------------------------------

EVENT_FILTERS = {"container", "event", "image", "label", "type", "volume", "network", "daemon", "scope"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_timestamp_ns(value: str | None, *, now: float | None = None) -> int | None:
    """Docker's time parameters: unix seconds with optional fraction, RFC 3339, or a Go duration
    (relative to now, into the past)."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            seconds, _, frac = text.partition(".")
            return int(seconds) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
        match = _DURATION.match(text)
        if match:
            ago = float(match.group(1)) * _UNITS[match.group(2)]
            return int(((now if now is not None else time.time()) - ago) * 1e9)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return int(parsed.timestamp() * 1e9)
    except ValueError as exc:
        raise InvalidParameter(f"invalid time value {value!r}") from exc


def event_matcher(filters: dict[str, list[str]]) -> Any:
    check_filter_keys(filters, EVENT_FILTERS)

    def accept(event: Event) -> bool:
        attrs = event.attributes
        if "type" in filters and event.type not in filters["type"]:
            return False
        if (
            "event" in filters
            and event.action not in filters["event"]
            and not any(event.action.startswith(f"{a}:") for a in filters["event"])
        ):
            return False
        for kind in ("container", "image", "volume", "network"):
            if kind in filters:
                if event.type != kind and not (kind == "image" and event.type == "container"):
                    return False
                wanted = filters[kind]
                names = {event.actor_id, attrs.get("name", "")}
                if kind == "image" and event.type == "container":
                    names = {attrs.get("image", "")}
                if not any(w in names or (len(w) >= 1 and event.actor_id.startswith(w)) for w in wanted):
                    return False
        if "daemon" in filters and event.type != "daemon":
            return False
        if "label" in filters:
            for want in filters["label"]:
                key, sep, value = want.partition("=")
                if key not in attrs or (sep and attrs[key] != value):
                    return False
        return not ("scope" in filters and event.scope not in filters["scope"])

    return accept


@router.get("/events", operation_id="SystemEvents", response_class=StreamingResponse)
async def system_events(
    engine: EngineDep,
    since: str | None = None,
    until: str | None = None,
    filters: FiltersQuery = None,
) -> StreamingResponse:
    since_ns = parse_timestamp_ns(since)
    until_ns = parse_timestamp_ns(until)
    accept = event_matcher(parse_filters(filters))

    async def wire() -> AsyncIterator[dict[str, Any]]:
        events = engine.events.subscribe(since_ns=since_ns, until_ns=until_ns, accept=accept)
        async with closing(events):
            async for event in events:
                yield event.to_wire()

    return json_lines(wire())


@router.post("/build/prune", operation_id="BuildPrune")
async def build_prune(
    all_: Annotated[str | None, Query(alias="all")] = None,
    filters: FiltersQuery = None,
) -> DockerJSONResponse:
    # pydock has no builder, so there is no build cache to prune; `docker system prune` needs this
    # endpoint to answer (a 404 makes the CLI fail).
    parse_filters(filters)
    return DockerJSONResponse({"CachesDeleted": [], "SpaceReclaimed": 0})
