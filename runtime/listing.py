"""`docker ps`: the human `Status` strings, container summaries, and every list filter.

The CLI prints `Status` verbatim, so it is built here exactly as moby's `State.String()` with
`units.HumanDuration` builds it ("Up 2 minutes", "Exited (0) 3 seconds ago", "Created").
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from runtime.errors import InvalidParameter
from runtime.records import Container, Status, parse_rfc3339

LIST_FILTERS = {
    "id", "name", "label", "status", "exited", "ancestor", "before", "since", "health", "network",
    "volume", "publish", "expose", "isolation", "is-task",
}  # fmt: skip
STATUSES = {s.value for s in Status}
HEALTH_VALUES = {"starting", "healthy", "unhealthy", "none"}


def human_duration(seconds_f: float) -> str:
    """Go's `units.HumanDuration`."""
    seconds = int(seconds_f)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(seconds_f / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds_f / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds_f / 3600) // 24 // 365} years"


def health_status(container: Container) -> str | None:
    health = container.state.health
    if not health:
        return None
    return str(health.get("Status") or "starting")


def status_text(container: Container, now: float | None = None) -> str:
    """moby `State.String()`."""
    state = container.state
    now = time.time() if now is None else now
    if state.status == Status.PAUSED:
        return f"Up {human_duration(now - parse_rfc3339(state.started_at))} (Paused)"
    if state.status == Status.RESTARTING:
        ago = human_duration(now - parse_rfc3339(state.finished_at))
        return f"Restarting ({state.exit_code}) {ago} ago"
    if state.status == Status.RUNNING:
        up = human_duration(now - parse_rfc3339(state.started_at))
        health = health_status(container)
        if health is not None:
            label = "health: starting" if health == "starting" else health
            return f"Up {up} ({label})"
        return f"Up {up}"
    if state.status == Status.REMOVING:
        return "Removal In Progress"
    if state.status == Status.DEAD:
        return "Dead"
    if not state.has_been_started and state.started_at.startswith("0001-"):
        return "Created"
    if state.finished_at.startswith("0001-"):
        return ""
    return f"Exited ({state.exit_code}) {human_duration(now - parse_rfc3339(state.finished_at))} ago"


def command_text(container: Container) -> str:
    """`Command` of the summary: path and args joined, args with spaces quoted as Docker does."""
    parts = [container.path]
    for arg in container.args:
        parts.append(f"'{arg}'" if (" " in arg or not arg) else arg)
    return " ".join(parts)


def _regex_match(pattern: str, value: str) -> bool:
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return pattern in value


def _labels_match(wanted: Sequence[str], labels: dict[str, str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


class ListFilter:
    """Compiled `filters` of `GET /containers/json`."""

    def __init__(
        self,
        filters: dict[str, list[str]],
        *,
        resolve: Callable[[str], Container],
        image_matches: Callable[[Container, str], bool],
        networks_of: Callable[[Container], list[tuple[str, str]]],
        volumes_of: Callable[[Container], list[tuple[str, str]]],
    ) -> None:
        for key in filters:
            if key not in LIST_FILTERS:
                raise InvalidParameter(f"invalid filter '{key}'")
        self.filters = filters
        for value in filters.get("status", []):
            if value not in STATUSES:
                raise InvalidParameter(f"Unrecognised filter value for status: {value}")
        for value in filters.get("health", []):
            if value not in HEALTH_VALUES:
                raise InvalidParameter(f"Unrecognised filter value for health: {value}")
        self.exited: list[int] = []
        for value in filters.get("exited", []):
            try:
                self.exited.append(int(value))
            except ValueError as exc:
                raise InvalidParameter(f"invalid filter 'exited={value}'") from exc
        self.before = min(
            (parse_rfc3339(resolve(v).created) for v in filters.get("before", [])), default=None
        )
        self.since = max((parse_rfc3339(resolve(v).created) for v in filters.get("since", [])), default=None)
        self._image_matches = image_matches
        self._networks_of = networks_of
        self._volumes_of = volumes_of

    @property
    def includes_stopped(self) -> bool:
        """status/exited filters list stopped containers even without `all`."""
        return bool(self.filters.get("status") or self.exited)

    def __call__(self, c: Container) -> bool:
        f = self.filters
        if "id" in f and not any(_regex_match(v, c.cid) for v in f["id"]):
            return False
        if "name" in f and not any(
            _regex_match(v, c.name) or _regex_match(v, "/" + c.name) for v in f["name"]
        ):
            return False
        if "label" in f and not _labels_match(f["label"], c.config.Labels or {}):
            return False
        if "status" in f and c.state.status.value not in f["status"]:
            return False
        if self.exited and (c.state.status != Status.EXITED or c.state.exit_code not in self.exited):
            return False
        created = parse_rfc3339(c.created)
        if self.before is not None and created >= self.before:
            return False
        if self.since is not None and created <= self.since:
            return False
        if "health" in f and (health_status(c) or "none") not in f["health"]:
            return False
        if "ancestor" in f and not any(self._image_matches(c, v) for v in f["ancestor"]):
            return False
        if "network" in f:
            nets = self._networks_of(c)
            if not any(v in (name, nid) or nid.startswith(v) for v in f["network"] for name, nid in nets):
                return False
        if "volume" in f:
            vols = self._volumes_of(c)
            if not any(v in (name, dest) for v in f["volume"] for name, dest in vols):
                return False
        if "publish" in f or "expose" in f:
            return _ports_match(c, f.get("publish", []), f.get("expose", []))
        return True


def _port_key(spec: str) -> str:
    port, _, proto = spec.partition("/")
    return f"{port}/{proto or 'tcp'}"


def _ports_match(c: Container, publish: list[str], expose: list[str]) -> bool:
    exposed = set((c.config.ExposedPorts or {}).keys())
    bindings = c.host_config.PortBindings or {}
    if expose and not any(_port_key(v) in exposed for v in expose):
        return False
    if publish:
        published: set[str] = set()
        for container_port, binds in bindings.items():
            proto = container_port.partition("/")[2] or "tcp"
            for b in binds or []:
                if b.HostPort:
                    published.add(f"{b.HostPort}/{proto}")
        if not any(_port_key(v) in published for v in publish):
            return False
    return True


def summary(
    c: Container,
    *,
    image_name: str,
    ports: list[dict[str, Any]],
    networks: dict[str, Any],
    mounts: list[dict[str, Any]],
    sizes: tuple[int, int] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Id": c.cid,
        "Names": ["/" + c.name],
        "Image": image_name,
        "ImageID": c.image_id,
        "Command": command_text(c),
        "Created": int(parse_rfc3339(c.created)),
        "Ports": ports,
        "Labels": dict(c.config.Labels or {}),
        "State": c.state.status.value,
        "Status": status_text(c, now),
        "HostConfig": {"NetworkMode": c.host_config.NetworkMode or "default"},
        "NetworkSettings": {"Networks": networks},
        "Mounts": mounts,
    }
    if sizes is not None:
        size_rw, size_root = sizes
        if size_rw:
            out["SizeRw"] = size_rw
        out["SizeRootFs"] = size_root
    return out
