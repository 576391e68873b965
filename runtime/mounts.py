"""`ContainerMounts`: a container's volumes and bind mounts, from create to removal, and access to
its files while it is stopped.

- create (`prepare`): plan the mount points (`mountplan.py`), create the named volumes that do
  not exist and the anonymous ones, populate each new, empty volume from the image's content at
  its path (dockerd's copy-up, skipped with `nocopy`), fill `Container.mounts` (inspect's
  `Mounts`). Volumes count as used by a container from here until it is removed (`usage`).
- start (`setup`, called by the launcher): mount the rootfs, mount the volumes (an options volume
  is mounted by its first user), create missing `-v` bind sources, return the spec's binds.
- stop (`release`): unmount the volumes and the rootfs. Remove (`remove`): `rm -v` / `--rm`
  removes the container's anonymous volumes (named ones stay; one still used elsewhere stays).
- `hold`: the container's file tree for cp and export: the live rootfs while it is mounted,
  else a private overlay mount of its layers. A start (and a removal) waits for the holders, as
  dockerd's container lock makes it, so two overlay mounts never share one upper dir.

Volume events `mount` and `unmount` are published here, with dockerd's attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Protocol

from runtime import rootfs as mounting
from runtime.config import DaemonConfig
from runtime.copyup import image_view, populate_volume
from runtime.ctrpath import ContainerTree, FsMount, split_path
from runtime.errors import Conflict, InvalidParameter, NotFound, PydockError
from runtime.events import EventBus
from runtime.mountplan import plan_mounts, volumes_from_refs
from runtime.records import Container
from runtime.rootfs import RootFs
from runtime.specmounts import BindMount
from runtime.volumes import VolumeService

log = logging.getLogger("pydock.mounts")


class MountHooks(Protocol):
    """What the launcher calls around a container's start and removal."""

    async def setup(self, container: Container, rootfs: RootFs, lowers: list[Path]) -> list[BindMount]: ...

    async def release(self, container: Container, rootfs: RootFs) -> None: ...

    async def remove(self, container: Container, *, remove_volumes: bool) -> None: ...


class ContainerMounts:
    def __init__(
        self,
        config: DaemonConfig,
        events: EventBus,
        volumes: VolumeService,
        *,
        rootfs_of: Callable[[Container], RootFs],
        lowers_of: Callable[[Container], list[Path]],
        lookup: Callable[[str], Container],
        containers: Callable[[], Iterable[Container]],
    ) -> None:
        self.config = config
        self.events = events
        self.volumes = volumes
        self._rootfs_of = rootfs_of
        self._lowers_of = lowers_of
        self._lookup = lookup
        self._containers = containers
        self.fs_dir = config.exec_root / "fs"
        self._pending: dict[str, set[str]] = {}  # cid → volumes reserved while it is created
        self._created: dict[str, list[str]] = {}  # cid → anonymous volumes its create made
        self._dropping: set[str] = set()  # containers being removed: they use nothing any more
        self._mounted: dict[str, list[str]] = {}  # cid → volumes it mounted at start
        self._conds: dict[str, asyncio.Condition] = {}
        self._holders: dict[str, int] = {}  # file operations on a private mount of a stopped one
        self._live_holders: dict[str, int] = {}  # file operations on a running one's rootfs
        self._private: dict[str, RootFs] = {}
        volumes.set_usage_probe(self.usage)

    async def open(self) -> None:
        """Daemon start: private mounts left by a crash are unmounted and removed."""
        await asyncio.to_thread(_sweep, self.fs_dir)

    def usage(self) -> dict[str, list[str]]:
        """Volume name → the containers using it (any state), for `volume rm` and `ls -f dangling`."""
        out: dict[str, set[str]] = {}
        for c in self._containers():
            if c.cid in self._dropping:
                continue
            for m in c.mounts:
                if m.get("Type") == "volume" and m.get("Name"):
                    out.setdefault(str(m["Name"]), set()).add(c.cid)
        for cid, names in self._pending.items():
            for name in names:
                out.setdefault(name, set()).add(cid)
        return {name: sorted(cids) for name, cids in out.items()}

    def _cond(self, cid: str) -> asyncio.Condition:
        cond = self._conds.get(cid)
        if cond is None:
            cond = self._conds[cid] = asyncio.Condition()
        return cond

    # --- create -----------------------------------------------------------------------------------

    async def prepare(self, container: Container, image_lowers: list[Path]) -> None:
        """Plan, create and populate the container's volumes; fill `container.mounts`.

        Raises InvalidParameter (bad specs, duplicates), NoSuchContainer (`--volumes-from`),
        NotFound (a driver plugin). On failure nothing it created stays behind.
        """
        cid = container.cid
        hc = container.host_config
        others = {ref: list(self._lookup(ref).mounts) for ref in volumes_from_refs(hc)}
        plan = plan_mounts(hc, (container.config.Volumes or {}).keys(), others)
        reserved = self._pending.setdefault(cid, set())
        created = self._created.setdefault(cid, [])
        try:
            for point in plan:
                if point.type != "volume":
                    continue
                if point.source:  # from --volumes-from: the other container's volume
                    self.volumes.get(point.name)
                    reserved.add(point.name)
                    continue
                vol, made = await self.volumes.create(
                    point.name or None, options=point.driver_options, labels=point.labels
                )
                reserved.add(vol.name)
                if made and not point.name:
                    created.append(vol.name)
                point.name, point.source = vol.name, str(vol.data_path)
            copies = [
                p for p in plan if p.type == "volume" and p.copy_data and not self.volumes.get(p.name).options
            ]
            if copies and image_lowers:
                async with image_view(image_lowers, self.fs_dir) as view:
                    for point in copies:
                        await asyncio.to_thread(populate_volume, view, point.destination, Path(point.source))
        except BaseException:
            await asyncio.shield(self.abandon(container))
            raise
        container.mounts = [p.inspect() for p in plan]

    def finish(self, cid: str) -> None:
        """The container is registered: its record now says which volumes it uses."""
        self._pending.pop(cid, None)
        self._created.pop(cid, None)

    async def abandon(self, container: Container) -> None:
        """Its create failed: forget the reservations, remove the anonymous volumes it made."""
        self._pending.pop(container.cid, None)
        for name in self._created.pop(container.cid, []):
            with contextlib.suppress(PydockError, OSError):
                await self.volumes.remove(name, force=True)

    # --- start / stop (launcher hooks) ------------------------------------------------------------

    async def setup(self, container: Container, rootfs: RootFs, lowers: list[Path]) -> list[BindMount]:
        """Mount the rootfs and the volumes; the spec's bind mounts. Waits for file operations
        that hold the stopped container's files (cp, export). Raises PydockError / OSError."""
        cid = container.cid
        cond = self._cond(cid)
        async with cond:
            await cond.wait_for(lambda: not self._busy(cid))
            await asyncio.to_thread(rootfs.mount, lowers)
        hc = container.host_config
        strict = {
            posixpath.normpath(m.Target): m
            for m in hc.Mounts or []
            if m.Type == "bind" and not (m.BindOptions is not None and m.BindOptions.CreateMountpoint)
        }
        non_recursive = {
            posixpath.normpath(m.Target)
            for m in hc.Mounts or []
            if m.Type == "bind" and m.BindOptions is not None and m.BindOptions.NonRecursive
        }
        binds: list[BindMount] = []
        mounted = self._mounted.setdefault(cid, [])
        for m in container.mounts:
            kind, dest = m.get("Type"), str(m.get("Destination", ""))
            readonly = not m.get("RW", True)
            propagation = str(m.get("Propagation") or "")
            if kind == "volume":
                name = str(m.get("Name", ""))
                path = await self.volumes.mount(name, cid)
                mounted.append(name)
                self.events.publish(
                    "volume",
                    "mount",
                    name,
                    {
                        "container": cid,
                        "destination": dest,
                        "driver": str(m.get("Driver") or "local"),
                        "propagation": propagation,
                        "read/write": "false" if readonly else "true",
                    },
                )
                binds.append(
                    BindMount(destination=dest, source=path, readonly=readonly, propagation=propagation)
                )
            elif kind == "bind":
                source = str(m.get("Source", ""))
                await asyncio.to_thread(_ensure_bind_source, source, must_exist=dest in strict)
                binds.append(
                    BindMount(
                        destination=dest,
                        source=source,
                        readonly=readonly,
                        propagation=propagation,
                        non_recursive=dest in non_recursive,
                    )
                )
        return binds

    async def release(self, container: Container, rootfs: RootFs) -> None:
        """After the container stopped (or its start failed): volumes and rootfs unmounted."""
        cid = container.cid
        mounted = self._mounted.pop(cid, None)
        # A container re-adopted after a daemon restart mounted its volumes in an earlier run:
        # release them too (an options volume is unmounted once nobody uses it), quietly.
        names = (
            mounted
            if mounted is not None
            else [str(m.get("Name")) for m in container.mounts if m.get("Type") == "volume" and m.get("Name")]
        )
        for name in names:
            try:
                await self.volumes.unmount(name, cid)
            except PydockError as exc:
                log.warning("volume unmount failed: %s", exc, extra={"container": container.short_id})
            if mounted is not None:
                self.events.publish("volume", "unmount", name, {"container": cid, "driver": "local"})
        cond = self._cond(cid)
        async with cond:
            try:
                await asyncio.to_thread(rootfs.unmount)
            except OSError as exc:
                log.warning("rootfs unmount failed: %s", exc, extra={"container": container.short_id})

    async def remove(self, container: Container, *, remove_volumes: bool) -> None:
        """The container is being removed: wait for file operations, then with `remove_volumes`
        remove its anonymous volumes (those another container still uses stay, as dockerd)."""
        cid = container.cid
        self._dropping.add(cid)
        try:
            cond = self._cond(cid)
            async with cond:
                await cond.wait_for(lambda: not self._busy(cid))
            if remove_volumes:
                for m in container.mounts:
                    name = str(m.get("Name", ""))
                    if m.get("Type") != "volume" or not self.volumes.is_anonymous(name):
                        continue
                    try:
                        await self.volumes.remove(name)
                    except (Conflict, NotFound):
                        pass
                    except PydockError as exc:
                        log.warning("removing volume %s failed: %s", name, exc)
        finally:
            self._conds.pop(cid, None)
            self._dropping.discard(cid)

    # --- file access --------------------------------------------------------------------------------

    @staticmethod
    def tree(container: Container, root: Path) -> ContainerTree:
        """The container's tree: its volumes and binds, and (as dockerd's `setupMounts` has them)
        the /etc/hostname, /etc/hosts and /etc/resolv.conf the daemon writes for it. Blocking."""
        writable = not container.host_config.ReadonlyRootfs
        net_files = [
            FsMount(("etc", name), str(container.data_dir / name), writable, "bind")
            for name in ("hostname", "hosts", "resolv.conf")
            if (container.data_dir / name).is_file()
        ]
        user = [
            FsMount(
                destination=tuple(split_path(str(m["Destination"]))),
                source=str(m.get("Source", "")),
                writable=bool(m.get("RW", True)),
                kind=str(m.get("Type")),
            )
            for m in container.mounts
            if m.get("Type") in ("bind", "volume") and m.get("Source")
        ]
        return ContainerTree(root=root, mounts=(*net_files, *user), root_writable=writable)

    @contextlib.asynccontextmanager
    async def hold(self, container: Container) -> AsyncIterator[ContainerTree]:
        """The container's file tree for the duration of the block (see the module docstring).

        Holders of the live rootfs and of a private mount both keep the container from starting
        (like dockerd's container lock); a private mount is made only once no live holder is
        left on an overlay that a stop may just have detached, so no upper dir is ever shared.
        """
        cid = container.cid
        cond = self._cond(cid)
        live = self._rootfs_of(container)
        async with cond:
            if await asyncio.to_thread(mounting.is_mountpoint, live.target):
                private = None
                self._live_holders[cid] = self._live_holders.get(cid, 0) + 1
            else:
                await cond.wait_for(lambda: self._live_holders.get(cid, 0) == 0)
                self._holders[cid] = self._holders.get(cid, 0) + 1
                try:
                    private = self._private.get(cid)
                    if private is None:
                        private = RootFs(container.data_dir, self.fs_dir / cid)
                        lowers = self._lowers_of(container)
                        await asyncio.to_thread(_mount_private, private, lowers)
                        self._private[cid] = private
                except BaseException:
                    self._holders[cid] -= 1
                    cond.notify_all()
                    raise
        try:
            root = private.target if private is not None else live.target
            yield await asyncio.to_thread(self.tree, container, root)
        finally:
            await asyncio.shield(self._let_go(cid, cond, live=private is None))

    def _busy(self, cid: str) -> bool:
        return bool(self._holders.get(cid, 0) or self._live_holders.get(cid, 0))

    async def _let_go(self, cid: str, cond: asyncio.Condition, *, live: bool) -> None:
        async with cond:
            if live:
                self._live_holders[cid] -= 1
                if not self._live_holders[cid]:
                    del self._live_holders[cid]
            else:
                self._holders[cid] -= 1
                if self._holders[cid] == 0:
                    del self._holders[cid]
                    private = self._private.pop(cid, None)
                    if private is not None:
                        await asyncio.to_thread(_unmount_private, private)
            cond.notify_all()


def _mount_private(rootfs: RootFs, lowers: list[Path]) -> None:
    rootfs.create()
    try:
        rootfs.mount(lowers)
    except BaseException:
        _unmount_private(rootfs)
        raise


def _unmount_private(rootfs: RootFs) -> None:
    with contextlib.suppress(OSError):
        rootfs.unmount()


def _ensure_bind_source(source: str, *, must_exist: bool) -> None:
    if os.path.lexists(source):
        return
    if must_exist:
        raise InvalidParameter(
            f'invalid mount config for type "bind": bind source path does not exist: {source}'
        )
    try:
        os.makedirs(source, 0o755, exist_ok=True)  # dockerd creates a missing `-v` source dir
    except OSError as exc:
        raise InvalidParameter(f"error while creating mount source path '{source}': {exc.strerror}") from exc


def _sweep(fs_dir: Path) -> None:
    if not fs_dir.is_dir():
        return
    for entry in fs_dir.iterdir():
        if entry.name == "empty":
            continue
        with contextlib.suppress(OSError):
            mounting.unmount(entry, lazy=True)
        with contextlib.suppress(OSError):
            entry.rmdir()
