"""`ContainerService`: the container index (IDs, names), create, list, inspect, and the front door
to each container's supervisor.

The service owns the name index and the map of supervisors; each supervisor owns its container's
state. Reference resolution follows dockerd: full ID, then exact name, then unique ID prefix.
Check-then-act on the name index never awaits in between (no races on names).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from app.models.containers import ContainerCreateRequest
from app.models.endpoints import NetworkingConfig
from app.models.hostconfig import HostConfig
from runtime import ids, reference, store
from runtime.cgroups import container_cgroup_path
from runtime.config import DaemonConfig
from runtime.errors import (
    AmbiguousRef,
    Conflict,
    InvalidParameter,
    NameInUse,
    NoSuchContainer,
    NoSuchImage,
    PydockError,
    SystemError_,
)
from runtime.events import EventBus
from runtime.fdkeeper import FdKeeper
from runtime.hostfacts import HostFacts
from runtime.images import ImageService
from runtime.inspect import inspect_body, summary_ports
from runtime.launch import Launcher
from runtime.lifecycle import LifecycleHooks, NoLifecycle
from runtime.listing import ListFilter, summary
from runtime.mounts import ContainerMounts
from runtime.names import random_name
from runtime.netattach import BasicNetwork, NetworkHooks, joined_netns
from runtime.oci import OciRuntime, RuncRuntime
from runtime.prune import container_prune_filter
from runtime.records import Container, ContainerCounts, ContainerState, Status, now_rfc3339
from runtime.rootfs import unmount
from runtime.spec import entrypoint_and_args, merge_image_config
from runtime.supervisor import Kill, Pause, Remove, Start, Stop, Supervisor, Unpause
from runtime.validation import CreateLimits, adapt_host_config, check_create
from runtime.volumes import VolumeService

log = logging.getLogger("pydock.containers")

KILL_WAIT_S = 10.0  # `docker kill` (SIGKILL) answers once the container is gone, as dockerd does


class ContainerService:
    def __init__(
        self, config: DaemonConfig, events: EventBus, images: ImageService, host_facts: HostFacts
    ) -> None:
        self.config = config
        self.events = events
        self.images = images
        self.host_facts = host_facts
        self.network: NetworkHooks = BasicNetwork(self._netns_of)
        self._supervisors: dict[str, Supervisor] = {}
        self._names: dict[str, str] = {}  # name → cid
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runtimes: dict[str, OciRuntime] = {}
        self._stopping = False
        self.fdkeeper = FdKeeper(config.exec_root / "fdkeeper.json")
        self.lifecycle: LifecycleHooks = NoLifecycle()  # the exec service once the engine is up
        self.launcher = Launcher(self)
        images.set_usage_probe(self.image_users)
        self.volumes = VolumeService(config, events)
        self.mounts = ContainerMounts(
            config,
            events,
            self.volumes,
            rootfs_of=self.launcher.rootfs,
            lowers_of=self.launcher.lower_dirs,
            lookup=lambda ref: self.get(ref).container,
            containers=lambda: [s.container for s in self._supervisors.values()],
        )

    # --- LaunchContext ----------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def forget(self, cid: str) -> None:
        sup = self._supervisors.pop(cid, None)
        if sup is not None and self._names.get(sup.container.name) == cid:
            del self._names[sup.container.name]

    def is_stopping(self) -> bool:
        return self._stopping

    def runtime_for(self, name: str) -> OciRuntime:
        runtime = self._runtimes.get(name)
        if runtime is None:
            spec = self.config.runtime(name)
            if spec is None:
                raise InvalidParameter(f"Unknown runtime specified {name}")
            binary = spec.resolved()
            if binary is None:
                raise InvalidParameter(f"runtime {name}: {spec.path} not found")
            log_dir = self.config.exec_root / "runtime-logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            runtime = RuncRuntime(binary, self.config.runtime_root, log_dir, name=name)
            self._runtimes[name] = runtime
        return runtime

    # --- startup / shutdown -----------------------------------------------------------------------

    async def open(self) -> None:
        """Load every container record; re-adopt running ones, restart those whose policy says so."""
        await self.volumes.open()
        await self.mounts.open()
        records = await asyncio.to_thread(self._load_records)
        # Networking re-registers the live ones (ports, proxies, DNS) before anything starts.
        await self.network.restore(
            [c for c in records if c.state.running and _alive(c.state.pid, c.state.pid_start_time)]
        )
        for container in records:
            sup = Supervisor(container, self.launcher)
            self._supervisors[container.cid] = sup
            self._names[container.name] = container.cid
            sup.spawn()
        masters = await asyncio.to_thread(self.fdkeeper.open)
        for sup in list(self._supervisors.values()):
            await self._reconcile(sup, masters.pop(sup.container.cid, None))
        for cid, fd in masters.items():  # pty masters of containers that are gone
            os.close(fd)
            self.fdkeeper.release(cid)
        await self._sweep_orphans()

    def _load_records(self) -> list[Container]:
        out: list[Container] = []
        root = self.config.containers_dir
        for entry in sorted(root.iterdir()) if root.is_dir() else []:
            if not entry.is_dir() or not ids.is_full_id(entry.name):
                continue
            try:
                out.append(Container.load(entry))
            except (OSError, ValueError, KeyError) as exc:
                log.error("skipping broken container record %s: %s", entry.name, exc)
        return out

    async def _reconcile(self, sup: Supervisor, tty_master: int | None) -> None:
        c = sup.container
        state = c.state
        if state.status in (Status.RUNNING, Status.PAUSED) and _alive(state.pid, state.pid_start_time):
            sup.adopt(state.pid, tty_master)
            log.info("re-adopted running container", extra={"container": c.short_id, "pid": state.pid})
            return
        if tty_master is not None:
            os.close(tty_master)
            self.fdkeeper.release(c.cid)
        if state.status in (Status.RUNNING, Status.PAUSED, Status.RESTARTING):
            # It died while the daemon was away: its exit status is lost (documented fallback: 255).
            if state.status != Status.RESTARTING:
                state.exit_code = 255
                state.error = "the container exited while pydockd was not running; its exit status is lost"
            state.status = Status.EXITED
            state.pid = 0
            state.finished_at = now_rfc3339()
            await self.launcher.teardown(c)
            await sup.persist_state()
        elif self.launcher.runtime_dir(c).exists():
            # A start interrupted by a crash (runtime state, mounts, netns but no record of running):
            # undo it, the client never got its 204.
            await self.launcher.teardown(c)
        if state.status == Status.REMOVING:
            with contextlib.suppress(PydockError):
                await sup.request(Remove(force=True, volumes=False))
            return
        policy = c.host_config.RestartPolicy.Name or "no"
        if policy == "always" or (policy == "unless-stopped" and not state.manually_stopped):
            try:
                await sup.request(Start())
            except PydockError as exc:
                log.warning("restart at daemon start failed: %s", exc, extra={"container": c.short_id})

    async def _sweep_orphans(self) -> None:
        """Runtime dirs and OCI runtime state of containers that have no record (a create or rm
        interrupted by a crash): delete the runtime's container and unmount what is left."""
        known = set(self._supervisors)
        dirs = [self.config.bundles_dir, self.config.runtime_root]
        orphans: set[str] = set()
        for base in dirs:
            if base.is_dir():
                orphans.update(p.name for p in base.iterdir() if ids.is_full_id(p.name))
        orphans -= known
        for cid in sorted(orphans):
            log.warning("cleaning up orphaned container runtime state", extra={"container": cid[:12]})
            for runtime in {s.name for s in self.config.runtimes if s.resolved() is not None}:
                with contextlib.suppress(PydockError, OSError):
                    await self.runtime_for(runtime).delete(cid, force=True)
            await asyncio.to_thread(_remove_runtime_leftovers, self.config.bundles_dir / cid)

    async def shutdown(self, *, live_restore: bool) -> None:
        """Daemon shutdown: stop running containers (unless live restore), end supervisors."""
        self._stopping = True
        if not live_restore:
            running = [s for s in self._supervisors.values() if s.container.state.running]
            await asyncio.gather(*(self._stop_for_shutdown(s) for s in running), return_exceptions=True)
        for sup in list(self._supervisors.values()):
            await sup.close()
        self.fdkeeper.close(keep_running=live_restore)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _stop_for_shutdown(self, sup: Supervisor) -> None:
        with contextlib.suppress(PydockError):
            waiter = await sup.request(Stop(timeout_s=None, signal=None))
            await waiter
        # Docker keeps the restart policy intact across a daemon restart.
        sup.container.state.manually_stopped = False
        await sup.persist_state()

    # --- resolution -------------------------------------------------------------------------------

    def get(self, ref: str) -> Supervisor:
        """Full ID, then exact name, then unique ID prefix (dockerd's order). Raises NoSuchContainer."""
        sup = self._supervisors.get(ref)
        if sup is not None:
            return sup
        name = ref[1:] if ref.startswith("/") else ref
        cid = self._names.get(name)
        if cid is not None:
            return self._supervisors[cid]
        matches = ids.match_prefix(ref, self._supervisors)
        if len(matches) == 1:
            return self._supervisors[matches[0]]
        if len(matches) > 1:
            raise AmbiguousRef("container", ref)
        raise NoSuchContainer(ref)

    def all(self) -> list[Supervisor]:
        return list(self._supervisors.values())

    def _netns_of(self, ref: str) -> str:
        sup = self.get(ref)
        return joined_netns(sup.container.state.pid if sup.container.state.running else 0, ref)

    def image_users(self, image_id: str) -> list[tuple[str, bool]]:
        return [
            (s.container.cid, s.container.state.running)
            for s in self._supervisors.values()
            if s.container.image_id == image_id
        ]

    def counts(self) -> ContainerCounts:
        total = running = paused = 0
        for sup in self._supervisors.values():
            total += 1
            status = sup.container.state.status
            if status == Status.RUNNING:
                running += 1
            elif status == Status.PAUSED:
                paused += 1
        return ContainerCounts(total, running, paused, total - running - paused)

    # --- create -----------------------------------------------------------------------------------

    async def create(self, body: ContainerCreateRequest, name: str | None) -> tuple[str, list[str]]:
        """Create a container; returns (cid, warnings). Raises NoSuchImage (404, the CLI then
        pulls), InvalidParameter (400), NameInUse (409)."""
        if name:
            name = ids.check_container_name(name)
        try:
            image = self.images.resolve(body.Image)
        except NoSuchImage:
            # A malformed reference is a 400 (dockerd's "invalid reference format"), not a 404
            # the CLI would answer by trying to pull it.
            if not ids.HEX_PREFIX.match(body.Image.removeprefix("sha256:")):
                reference.parse(body.Image)
            raise
        hc = body.HostConfig or HostConfig()
        config = body.config()
        config, warnings = check_create(config, hc, self.create_limits())
        hc = adapt_host_config(
            hc, cgroup_v2=self.host_facts.cgroup_v2, default_runtime=self.config.default_runtime
        )
        if not hc.LogConfig.Type:
            hc.LogConfig.Type = self.config.log_driver  # inspect shows the driver in use (docker-py reads it)
        if hc.LogConfig.Config is None:
            hc.LogConfig.Config = {}
        runtime_name = hc.Runtime or self.config.default_runtime
        if self.config.runtime(runtime_name) is None:
            raise InvalidParameter(f"Unknown runtime specified {runtime_name}")
        merged = merge_image_config(config, (image.config or {}).get("config"))
        merged.Image = body.Image
        cid = ids.new_id()
        if not merged.Hostname:
            merged.Hostname = os.uname().nodename if hc.NetworkMode == "host" else cid[:12]
        path, args = entrypoint_and_args(merged)
        # Reserve the name with no await between check and insert.
        if name:
            owner = self._names.get(name)
            if owner is not None:
                raise NameInUse(name, owner)
        else:
            name = random_name(self._names)
        container = Container(
            cid=cid,
            name=name,
            created=now_rfc3339(),
            image_id=image.image_id,
            config=merged,
            host_config=hc,
            networking=body.NetworkingConfig or NetworkingConfig(),
            path=path,
            args=args,
            data_dir=self.config.containers_dir / cid,
            runtime=runtime_name,
            state=ContainerState(),
            cgroup_path=container_cgroup_path(cid, hc.CgroupParent, default_parent=self.config.cgroup_parent),
        )
        self.network.validate(container)  # unknown network: 404 before anything is written
        self._names[name] = cid
        try:
            await self.mounts.prepare(container, self.images.layer_dirs(image))  # volumes, copy-up
            await asyncio.to_thread(self._write_new, container)
        except BaseException:
            self._names.pop(name, None)
            await asyncio.shield(self.mounts.abandon(container))
            raise
        sup = Supervisor(container, self.launcher)
        self._supervisors[cid] = sup
        self.mounts.finish(cid)
        sup.spawn()
        sup.event("create")
        return cid, warnings

    @staticmethod
    def _write_new(container: Container) -> None:
        tmp = container.data_dir.with_name(f"{store.TMP_PREFIX}{container.cid}")
        final_dir = container.data_dir
        try:
            tmp.mkdir(mode=0o710)
            container.data_dir = tmp
            try:
                container.save_config()
                container.save_state()
            finally:
                container.data_dir = final_dir
            # The record appears whole or not at all. The parent dir is not fsync'd (a few ms on
            # every create): after a power cut a record that vanished is a create that never happened.
            os.rename(tmp, final_dir)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SystemError_(f"failed to create container {container.cid}: {exc.strerror or exc}") from exc

    def create_limits(self) -> CreateLimits:
        return CreateLimits(
            ncpu=os.cpu_count() or 1,
            cgroup_v2=self.host_facts.cgroup_v2,
            swap_limit=self.host_facts.swap_limit,
        )

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self, ref: str) -> None:
        await self.get(ref).request(Start())

    async def stop(self, ref: str, timeout_s: int | None = None, signal: str | None = None) -> None:
        waiter = await self.get(ref).request(Stop(timeout_s=timeout_s, signal=signal))
        await asyncio.shield(waiter)

    async def restart(self, ref: str, timeout_s: int | None = None, signal: str | None = None) -> None:
        sup = self.get(ref)
        if sup.container.state.running or sup.container.state.status == Status.RESTARTING:
            with contextlib.suppress(PydockError):
                waiter = await sup.request(Stop(timeout_s=timeout_s, signal=signal))
                await asyncio.shield(waiter)
        await sup.request(Start())
        sup.event("restart")

    async def kill(self, ref: str, signal: str | None = None) -> None:
        waiter = await self.get(ref).request(Kill(signal=signal, ref=ref))
        if waiter is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT_S):
                    await asyncio.shield(waiter)

    async def pause(self, ref: str) -> None:
        await self.get(ref).request(Pause())

    async def unpause(self, ref: str) -> None:
        await self.get(ref).request(Unpause())

    async def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> None:
        sup = self.get(ref)
        waiter = await sup.request(Remove(force=force, volumes=volumes))
        if waiter is not None:
            await asyncio.shield(waiter)

    async def rename(self, ref: str, new_name: str) -> None:
        sup = self.get(ref)
        new_name = ids.check_container_name(new_name)
        old = sup.container.name
        if new_name == old:
            raise InvalidParameter("Renaming a container with the same name as its current name")
        owner = self._names.get(new_name)
        if owner is not None:
            raise Conflict(f"Error when allocating new name: {NameInUse(new_name, owner)}")
        self._names[new_name] = sup.container.cid
        del self._names[old]
        sup.container.name = new_name
        try:
            await asyncio.to_thread(sup.container.save_config)
        except BaseException:
            sup.container.name = old
            self._names[old] = sup.container.cid
            self._names.pop(new_name, None)
            raise
        sup.event("rename", oldName="/" + old)

    # --- reading ----------------------------------------------------------------------------------

    def inspect(self, ref: str, *, sizes: tuple[int, int] | None = None) -> dict[str, Any]:
        sup = self.get(ref)
        return inspect_body(sup.container, self.launcher, sizes=sizes)

    async def sizes(self, ref: str) -> tuple[int, int]:
        sup = self.get(ref)
        return await asyncio.to_thread(self._sizes, sup.container)

    def _sizes(self, container: Container) -> tuple[int, int]:
        rw = _du(self.launcher.rootfs(container).upper)
        try:
            image_size = self.images.resolve(container.image_id).size
        except PydockError:
            image_size = 0
        return rw, rw + image_size

    async def list_containers(
        self, *, all_: bool, limit: int | None, size: bool, filters: dict[str, list[str]]
    ) -> list[dict[str, Any]]:
        flt = ListFilter(
            filters,
            resolve=lambda ref: self.get(ref).container,
            image_matches=self._image_matches,
            networks_of=_networks_of,
            volumes_of=_volumes_of,
        )
        show_all = all_ or flt.includes_stopped or (limit is not None and limit > 0)
        chosen = [
            s.container
            for s in self._supervisors.values()
            if (show_all or s.container.state.running) and flt(s.container)
        ]
        chosen.sort(key=lambda c: c.created, reverse=True)
        if limit is not None and limit > 0:
            chosen = chosen[:limit]
        size_map: dict[str, tuple[int, int]] = {}
        if size:
            results = await asyncio.gather(*(asyncio.to_thread(self._sizes, c) for c in chosen))
            size_map = {c.cid: r for c, r in zip(chosen, results, strict=True)}
        out = []
        for c in chosen:
            settings = c.network_settings or {}
            out.append(
                summary(
                    c,
                    image_name=c.config.Image or c.image_id,
                    ports=summary_ports(settings.get("Ports") or {}),
                    networks=dict(settings.get("Networks") or {}),
                    mounts=list(c.mounts),
                    sizes=size_map.get(c.cid),
                )
            )
        return out

    def _image_matches(self, container: Container, ref: str) -> bool:
        if container.config.Image == ref:
            return True
        try:
            wanted = self.images.resolve(ref).image_id
        except PydockError:
            return False
        return container.image_id == wanted

    async def prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        accept = container_prune_filter(filters)
        deleted: list[str] = []
        reclaimed = 0
        for sup in list(self._supervisors.values()):
            c = sup.container
            if c.state.status not in (Status.EXITED, Status.CREATED, Status.DEAD) or not accept(c):
                continue
            size_rw, _ = await asyncio.to_thread(self._sizes, c)
            try:
                await self.remove(c.cid)
            except PydockError:
                continue
            deleted.append(c.cid)
            reclaimed += size_rw
        self.events.publish("container", "prune", "", {"reclaimed": str(reclaimed)})
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}


def _networks_of(container: Container) -> list[tuple[str, str]]:
    nets = (container.network_settings or {}).get("Networks") or {}
    return [(name, str((settings or {}).get("NetworkID", ""))) for name, settings in nets.items()]


def _volumes_of(container: Container) -> list[tuple[str, str]]:
    return [(str(m.get("Name", "")), str(m.get("Destination", ""))) for m in container.mounts]


def _alive(pid: int, start_time: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return False
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return False
    return start_time == 0 or int(fields[19]) == start_time


def _remove_runtime_leftovers(rdir: Path) -> None:
    with contextlib.suppress(OSError):
        unmount(rdir / "rootfs")
    shutil.rmtree(rdir, ignore_errors=True)


def _du(path: Path) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512 if st.st_blocks else st.st_size
    return total
