"""A container's mount points at create, planned as dockerd's `registerMountPoints` does.

Sources, in dockerd's order (a later one replaces an earlier one at the same destination):
`HostConfig.VolumesFrom` (the other container's mount points, `:ro` makes them read-only),
`HostConfig.Binds` (`-v`), `HostConfig.Mounts` (`--mount`), then the image's `Config.Volumes`
as anonymous volumes where nothing else (nor `--tmpfs`) covers the path. Two `-v`/`--mount`
entries at one destination are refused (`Duplicate mount point: /p`).

`MountPoint` is one planned mount; `inspect()` is the container's inspect `Mounts` entry (what
`Container.mounts` persists). Pure: volumes are created, bind sources checked and image content
copied by `runtime/mounts.py`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.models.hostconfig import HostConfig
from runtime.binds import DEFAULT_PROPAGATION, parse_bind, parse_volumes_from
from runtime.errors import InvalidParameter
from runtime.volumes import DEFAULT_DRIVER, check_driver


@dataclass(slots=True)
class MountPoint:
    type: str  # "bind", "volume" or "tmpfs"
    destination: str
    source: str = ""  # bind: host path; volume: the data path once the volume exists
    name: str = ""  # volume name; "" until an anonymous volume is created
    driver: str = ""
    mode: str = ""
    rw: bool = True
    propagation: str = ""
    copy_data: bool = False  # populate a new, empty volume from the image (not with nocopy)
    driver_options: dict[str, str] | None = None  # for a volume this mount creates
    labels: dict[str, str] | None = None

    def inspect(self) -> dict[str, Any]:
        """The inspect `Mounts` entry (Name and Driver are omitted when empty, as Go's omitempty)."""
        out: dict[str, Any] = {"Type": self.type}
        if self.name:
            out["Name"] = self.name
        out["Source"] = self.source
        out["Destination"] = self.destination
        if self.driver:
            out["Driver"] = self.driver
        out["Mode"] = self.mode
        out["RW"] = self.rw
        out["Propagation"] = self.propagation
        return out


def _read_write(mode: str) -> bool:
    return not any(o == "ro" or o.startswith("ro-") or o == "rro" for o in mode.split(","))


def _duplicate(destination: str) -> InvalidParameter:
    return InvalidParameter(f"Duplicate mount point: {destination}")


def plan_mounts(
    hc: HostConfig,
    image_volumes: Iterable[str],
    volumes_from: Mapping[str, list[dict[str, Any]]],
) -> list[MountPoint]:
    """The container's mount points, sorted by destination.

    `volumes_from` maps each `HostConfig.VolumesFrom` reference (without its mode) to that
    container's inspect `Mounts`. Raises InvalidParameter with dockerd's wording, NotFound for
    a volume driver other than `local`.
    """
    points: dict[str, MountPoint] = {}
    check_driver(hc.VolumeDriver or None)

    for vf_spec in hc.VolumesFrom or []:
        ref, mode = parse_volumes_from(vf_spec)
        for theirs in volumes_from.get(ref, []):
            copied = MountPoint(
                type=str(theirs.get("Type", "volume")),
                destination=str(theirs["Destination"]),
                source=str(theirs.get("Source", "")),
                name=str(theirs.get("Name", "")),
                driver=str(theirs.get("Driver", "")),
                rw=bool(theirs.get("RW", True)) and _read_write(mode),
                propagation=str(theirs.get("Propagation", "")),
            )
            points[copied.destination] = copied

    taken: set[str] = set()
    for raw in hc.Binds or []:
        spec = parse_bind(raw)
        if spec.destination in taken:
            raise _duplicate(spec.destination)
        taken.add(spec.destination)
        if spec.type == "bind":
            point = MountPoint(
                type="bind",
                destination=spec.destination,
                source=spec.source,
                mode=spec.mode,
                rw=not spec.read_only,
                propagation=spec.propagation or DEFAULT_PROPAGATION,
            )
        else:
            point = MountPoint(
                type="volume",
                destination=spec.destination,
                name=spec.source,
                driver=DEFAULT_DRIVER,
                mode=spec.mode or "z",  # dockerd's setBindModeIfNull for the local driver
                rw=not spec.read_only,
                copy_data=spec.copy_data,
            )
        points[point.destination] = point

    for m in hc.Mounts or []:
        destination = posixpath.normpath(m.Target)
        if destination in taken:
            raise _duplicate(destination)
        taken.add(destination)
        if m.Type == "bind":
            opts = m.BindOptions
            point = MountPoint(
                type="bind",
                destination=destination,
                source=posixpath.normpath(m.Source),
                rw=not m.ReadOnly,
                propagation=(
                    opts.Propagation if opts is not None and opts.Propagation else DEFAULT_PROPAGATION
                ),
            )
        elif m.Type == "volume":
            vopts = m.VolumeOptions
            driver_cfg = vopts.DriverConfig if vopts is not None else None
            check_driver(driver_cfg.Name if driver_cfg is not None else None)
            if vopts is not None and vopts.Subpath:
                raise InvalidParameter(
                    'invalid mount config for type "volume": '
                    f"volume subpaths are not supported: {vopts.Subpath}"
                )
            point = MountPoint(
                type="volume",
                destination=destination,
                name=m.Source,
                driver=DEFAULT_DRIVER,
                mode="z",
                rw=not m.ReadOnly,
                copy_data=not (vopts is not None and vopts.NoCopy),
                driver_options=dict(driver_cfg.Options)
                if driver_cfg is not None and driver_cfg.Options
                else None,
                labels=dict(vopts.Labels) if vopts is not None and vopts.Labels else None,
            )
        elif m.Type == "tmpfs":
            point = MountPoint(type="tmpfs", destination=destination, rw=not m.ReadOnly)
        else:
            raise InvalidParameter(f'invalid mount config for type "{m.Type}": mount type unknown')
        points[destination] = point

    tmpfs = {posixpath.normpath(d) for d in hc.Tmpfs or {}}
    for path in image_volumes:
        destination = posixpath.normpath(path)
        if not destination.startswith("/"):
            raise InvalidParameter(f"invalid mount path: '{path}' mount path must be absolute")
        if destination == "/":
            raise InvalidParameter("invalid specification: destination can't be '/'")
        if destination in points or destination in tmpfs:
            continue
        points[destination] = MountPoint(
            type="volume", destination=destination, driver=DEFAULT_DRIVER, rw=True, copy_data=True
        )
    return [points[d] for d in sorted(points)]


def volumes_from_refs(hc: HostConfig) -> list[str]:
    """The container references of `HostConfig.VolumesFrom` (modes checked, dropped)."""
    return [parse_volumes_from(spec)[0] for spec in hc.VolumesFrom or []]
