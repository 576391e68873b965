"""`VolumeService`: named and anonymous volumes, what `docker volume ...` and containers use.

The service owns the in-memory index of volumes (the `local` driver's, `runtime/volumedriver.py`)
and changes it on the event loop only; directory work and mount(2) run in threads. Creation and
removal of one name never interleave (one lock for index changes). A volume is "in use" while
any container (running or not) lists it among its mounts: the container side answers through a
usage probe (`set_usage_probe`), so references never drift from the containers that exist.

Docker's wording: `get V: no such volume` (404), `remove V: volume is in use - [<cid>]` (409).
Events: `create`, `destroy`, `prune` here; `mount`/`unmount` are the container side's.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from runtime import ids, volumedriver
from runtime.config import DaemonConfig
from runtime.errors import Conflict, InvalidParameter, NoSuchVolume, NoSuchVolumePlugin, NotFound, VolumeInUse
from runtime.events import EventBus
from runtime.volumedriver import LocalVolume

log = logging.getLogger("pydock.volumes")

ANONYMOUS_LABEL = "com.docker.volume.anonymous"
DEFAULT_DRIVER = "local"
LIST_FILTERS = frozenset({"dangling", "name", "driver", "label"})
PRUNE_FILTERS = frozenset({"label", "label!", "all"})

UsageProbe = Callable[[], dict[str, list[str]]]  # volume name → IDs of containers using it


def _no_users() -> dict[str, list[str]]:
    return {}


def check_driver(driver: str | None) -> None:
    if driver and driver != DEFAULT_DRIVER:
        raise NoSuchVolumePlugin(driver)


def _bool_filter(values: list[str], key: str) -> bool:
    if len(values) != 1 or values[0].lower() not in ("true", "1", "false", "0"):
        raise InvalidParameter(f"invalid filter '{key}={','.join(values)}'")
    return values[0].lower() in ("true", "1")


def labels_match(wanted: list[str], labels: dict[str, str]) -> bool:
    """`label=key` or `label=key=value`, every one of them (moby `filters.MatchKVList`)."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _name_matches(patterns: list[str], name: str) -> bool:
    for pattern in patterns:
        try:
            if re.search(pattern, name):
                return True
        except re.error:
            if pattern in name:
                return True
    return False


class VolumeService:
    def __init__(self, config: DaemonConfig, events: EventBus) -> None:
        self.config = config
        self.events = events
        self.root = config.volumes_dir
        self._volumes: dict[str, LocalVolume] = {}
        self._lock = asyncio.Lock()
        self._users: UsageProbe = _no_users
        self._pruning = False

    async def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o701)
        for vol in await asyncio.to_thread(volumedriver.load_blocking, self.root):
            self._volumes[vol.name] = vol

    def set_usage_probe(self, probe: UsageProbe) -> None:
        self._users = probe

    def users(self, name: str) -> list[str]:
        return sorted(self._users().get(name, []))

    # --- lookup --------------------------------------------------------------------------------

    def get(self, name: str) -> LocalVolume:
        vol = self._volumes.get(name)
        if vol is None:
            raise NoSuchVolume(name)
        return vol

    def exists(self, name: str) -> bool:
        return name in self._volumes

    def all(self) -> list[LocalVolume]:
        return list(self._volumes.values())

    @staticmethod
    def body(vol: LocalVolume) -> dict[str, Any]:
        """The Volume object of the Engine API (inspect, list, create)."""
        return {
            "CreatedAt": vol.created_at,
            "Driver": DEFAULT_DRIVER,
            "Labels": vol.labels,
            "Mountpoint": str(vol.data_path),
            "Name": vol.name,
            "Options": vol.options,
            "Scope": "local",
        }

    def is_anonymous(self, name: str) -> bool:
        vol = self._volumes.get(name)
        return vol is not None and ANONYMOUS_LABEL in (vol.labels or {})

    # --- create / remove -------------------------------------------------------------------------

    async def create(
        self,
        name: str | None,
        *,
        driver: str | None = None,
        options: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> tuple[LocalVolume, bool]:
        """Create a volume, or return the existing one of that name; (volume, created).

        No name: an anonymous volume (64-hex name and the `com.docker.volume.anonymous` label).
        Raises InvalidParameter (bad name or options), NotFound (unknown driver plugin).
        """
        check_driver(driver)
        if not name:
            name = ids.new_id()
            labels = {**(labels or {}), ANONYMOUS_LABEL: ""}
        elif len(name) == 1:
            raise InvalidParameter(
                "volume name is too short, names should be at least two alphanumeric characters"
            )
        else:
            ids.check_object_name(name, "volume")
        if options:
            volumedriver.check_options(options)
        async with self._lock:
            existing = self._volumes.get(name)
            if existing is not None:
                return existing, False
            vol = LocalVolume(
                name=name,
                root=self.root / name,
                created_at=volumedriver.created_at_now(),
                labels=dict(labels) if labels is not None else None,
                options=dict(options) if options is not None else None,
            )
            try:
                await asyncio.to_thread(vol.create_blocking)
            except FileExistsError as exc:
                raise Conflict(f"volume already exists under {self.root / name}") from exc
            self._volumes[name] = vol
        self.events.publish("volume", "create", name, {"driver": DEFAULT_DRIVER})
        log.info("volume created", extra={"volume": name})
        return vol, True

    async def remove(self, name: str, *, force: bool = False) -> None:
        """Raises NoSuchVolume (404, not with `force`) and VolumeInUse (409)."""
        async with self._lock:
            vol = self._volumes.get(name)
            if vol is None:
                if force:
                    return
                raise NoSuchVolume(name)
            users = self.users(name)
            if users:
                raise VolumeInUse(name, users)
            del self._volumes[name]  # from here on nobody can start using it
            try:
                await asyncio.to_thread(vol.remove_blocking)
            except BaseException:
                self._volumes[name] = vol
                raise
        self.events.publish("volume", "destroy", name, {"driver": DEFAULT_DRIVER})
        log.info("volume removed", extra={"volume": name})

    # --- mount references (containers) ---------------------------------------------------------

    async def mount(self, name: str, ref: str) -> str:
        """The host path of the volume for user `ref`; options volumes are mounted on first use."""
        vol = self.get(name)
        vol.users.add(ref)
        if vol.needs_mount and not vol.mounted:
            async with self._lock:
                try:
                    await asyncio.to_thread(vol.mount_blocking)
                except BaseException:
                    vol.users.discard(ref)
                    raise
        return str(vol.data_path)

    async def unmount(self, name: str, ref: str) -> None:
        """Drop user `ref`; the last one out unmounts an options volume."""
        vol = self._volumes.get(name)
        if vol is None:
            return
        vol.users.discard(ref)
        if vol.users or not vol.mounted:
            return
        async with self._lock:
            if not vol.users and vol.mounted:
                await asyncio.to_thread(vol.unmount_blocking)

    # --- listing -------------------------------------------------------------------------------

    def list_volumes(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        for key in filters:
            if key not in LIST_FILTERS:
                raise InvalidParameter(f"invalid filter '{key}'")
        used = self._users()
        out = []
        for vol in sorted(self._volumes.values(), key=lambda v: v.name):
            if "name" in filters and not _name_matches(filters["name"], vol.name):
                continue
            if "driver" in filters and DEFAULT_DRIVER not in filters["driver"]:
                continue
            if "label" in filters and not labels_match(filters["label"], vol.labels or {}):
                continue
            if "dangling" in filters:
                dangling = _bool_filter(filters["dangling"], "dangling")
                if dangling == bool(used.get(vol.name)):
                    continue
            out.append(self.body(vol))
        return {"Volumes": out, "Warnings": None}

    async def usage(self) -> list[dict[str, Any]]:
        """The volumes part of `GET /system/df`: local volumes without options, with UsageData."""
        used = self._users()
        vols = [v for v in self._volumes.values() if not v.options]
        sizes = await asyncio.gather(*(asyncio.to_thread(volumedriver.disk_usage, v.data_path) for v in vols))
        out = []
        for vol, size in zip(vols, sizes, strict=True):
            body = self.body(vol)
            body["UsageData"] = {"RefCount": len(used.get(vol.name, [])), "Size": size}
            out.append(body)
        return out

    async def prune(self, filters: dict[str, list[str]], *, api_version: str) -> dict[str, Any]:
        """Remove unused local volumes without options; only anonymous ones unless `all=true`
        (the default for API < 1.42, as dockerd's router adds it)."""
        for key in filters:
            if key not in PRUNE_FILTERS:
                raise InvalidParameter(f"invalid filter '{key}'")
        if self._pruning:
            raise Conflict("a prune operation is already running")
        prune_all = False
        if "all" in filters:
            if len(filters["all"]) > 1:
                raise InvalidParameter(
                    f"invalid filter 'all=[{' '.join(filters['all'])}]': only one value is expected"
                )
            value = filters["all"][0].lower()
            if value not in ("1", "t", "true", "0", "f", "false"):
                raise InvalidParameter(
                    "invalid filter 'all': strconv.ParseBool: "
                    f'parsing "{filters["all"][0]}": invalid syntax'
                )
            prune_all = value in ("1", "t", "true")
        if _version_tuple(api_version) < (1, 42):
            prune_all = True
        self._pruning = True
        try:
            deleted: list[str] = []
            reclaimed = 0
            used = self._users()
            for vol in sorted(self._volumes.values(), key=lambda v: v.name):
                labels = vol.labels or {}
                if vol.options or used.get(vol.name):
                    continue
                if not prune_all and ANONYMOUS_LABEL not in labels:
                    continue
                if "label" in filters and not labels_match(filters["label"], labels):
                    continue
                if "label!" in filters and any(labels_match([item], labels) for item in filters["label!"]):
                    continue
                size = await asyncio.to_thread(volumedriver.disk_usage, vol.data_path)
                try:
                    await self.remove(vol.name)
                except (Conflict, NotFound):
                    continue
                deleted.append(vol.name)
                reclaimed += size
        finally:
            self._pruning = False
        self.events.publish("volume", "prune", "", {"reclaimed": str(reclaimed)})
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed}


def _version_tuple(version: str) -> tuple[int, int]:
    try:
        major, _, minor = version.partition(".")
        return int(major), int(minor or 0)
    except ValueError:
        return (99, 0)
