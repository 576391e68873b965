"""Bringing one container up and down: rootfs, /etc files, network, OCI bundle, runtime calls.

The supervisor decides *when*; the `Launcher` knows *how*. It holds no per-container state
beyond what is on disk: the exec-root dir `<exec-root>/containers/<cid>/` (bundle `config.json`,
`rootfs/` mount point, stdio FIFOs, console socket, runtime log, init pid file) is rebuilt on
every start and removed on every stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Protocol

from runtime import rootfs as rootfs_mod
from runtime import store
from runtime.cgroups import CgroupLayout, container_cgroup_path, oom_kill_count, remove_cgroup_async
from runtime.config import DaemonConfig
from runtime.devices import block_device_numbers, host_devices, lookup_devices
from runtime.errors import PydockError, SystemError_
from runtime.events import EventBus
from runtime.fdkeeper import FdKeeper
from runtime.hostfacts import HostFacts
from runtime.images import ImageService
from runtime.lifecycle import LifecycleHooks
from runtime.mounts import MountHooks
from runtime.netattach import NetworkHooks, NetworkPlan
from runtime.oci import OciRuntime
from runtime.records import Container
from runtime.rootfs import RootFs
from runtime.spec import SpecInputs, build_spec
from runtime.specmounts import BindMount
from runtime.specresources import block_device_paths
from runtime.stdio import StdioHub
from runtime.userdb import resolve_user

log = logging.getLogger("pydock.launch")


class LaunchContext(Protocol):
    """What the container service provides to supervisors and the launcher."""

    config: DaemonConfig
    events: EventBus
    images: ImageService
    host_facts: HostFacts
    network: NetworkHooks
    fdkeeper: FdKeeper
    lifecycle: LifecycleHooks
    mounts: MountHooks  # rootfs and volume mounts (runtime/mounts.py)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]: ...

    def forget(self, cid: str) -> None: ...

    def is_stopping(self) -> bool: ...

    def runtime_for(self, name: str) -> OciRuntime: ...


def cgroups_path(container: Container) -> str:
    """The container's cgroup: recorded at create (records from before that fall back to the
    default parent)."""
    return container.cgroup_path or container_cgroup_path(container.cid, container.host_config.CgroupParent)


class Launcher:
    def __init__(self, ctx: LaunchContext) -> None:
        self.ctx = ctx
        self.cgroup_layout = CgroupLayout.detect()
        self._console_dir: Path | None = None

    def console_socket_path(self, container: Container) -> Path:
        """Where runc sends the pty master: short, since AF_UNIX paths have at most 107 bytes."""
        if self._console_dir is None:
            preferred = self.ctx.config.exec_root / "console"
            if len(str(preferred)) + 22 < 100:
                preferred.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._console_dir = preferred
            else:
                self._console_dir = Path(tempfile.mkdtemp(prefix="pydock-console-"))
        return self._console_dir / f"{container.cid[:16]}.sock"

    def runtime_dir(self, container: Container) -> Path:
        return self.ctx.config.bundles_dir / container.cid

    def rootfs(self, container: Container) -> RootFs:
        return RootFs(container.data_dir, self.runtime_dir(container) / "rootfs")

    def lower_dirs(self, container: Container) -> list[Path]:
        try:
            return self.ctx.images.layer_dirs(self.ctx.images.resolve(container.image_id))
        except PydockError:
            return []

    def runtime(self, container: Container) -> OciRuntime:
        return self.ctx.runtime_for(container.runtime)

    # --- up -------------------------------------------------------------------------------------

    async def launch(self, container: Container, stdio: StdioHub) -> int:
        """Start the container; returns its init pid. Raises a PydockError with the runtime's
        message (status 400, as dockerd answers start failures) and leaves nothing behind."""
        rdir = self.runtime_dir(container)
        rootfs = self.rootfs(container)
        image = self.ctx.images.resolve(container.image_id)
        lowers = self.ctx.images.layer_dirs(image)
        runtime = self.runtime(container)
        made_rootfs = False
        plan: NetworkPlan | None = None
        try:
            await asyncio.to_thread(self._prepare_dirs, rdir, rootfs)
            made_rootfs = True
            binds = await self.ctx.mounts.setup(container, rootfs, lowers)  # mounts the rootfs too
            plan = await self.ctx.network.prepare(container)
            container.state.link_env = list(plan.link_env)
            spec_json = await asyncio.to_thread(self._write_bundle, container, rootfs, rdir, plan, binds)
            del spec_json
            fds = stdio.prepare()
            console = self.console_socket_path(container) if container.config.Tty else None
            try:
                master = await runtime.run(
                    container.cid,
                    bundle=rdir,
                    pid_file=rdir / "init.pid",
                    console_socket=console,
                    stdin=fds.stdin,
                    stdout=fds.stdout,
                    stderr=fds.stderr,
                )
            finally:
                fds.close()
            if master is not None:
                stdio.set_tty_master(master)
                self.ctx.fdkeeper.keep(container.cid, master)  # survives a daemon crash
            pid = int((rdir / "init.pid").read_text().strip())
            await self.ctx.network.activate(container, pid, plan)
            stdio.start_reading()
            return pid
        except BaseException as exc:
            stdio.close_readers()
            await asyncio.shield(self._undo(container, rdir, rootfs if made_rootfs else None, plan))
            if isinstance(exc, PydockError | asyncio.CancelledError):
                raise
            if isinstance(exc, OSError):
                raise SystemError_(f"failed to start container: {exc}") from exc
            raise

    def _prepare_dirs(self, rdir: Path, rootfs: RootFs) -> None:
        rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        rootfs.create()

    def _write_bundle(
        self, container: Container, rootfs: RootFs, rdir: Path, plan: NetworkPlan, binds: list[BindMount]
    ) -> dict[str, Any]:
        """Write the /etc files and the OCI `config.json` (blocking: runs in a thread)."""
        c = container
        hc = c.host_config
        cfg = self.ctx.config
        data = c.data_dir
        hostname_path = data / "hostname"
        hosts_path = data / "hosts"
        resolv_path = data / "resolv.conf"
        fqdn = c.config.Hostname + (f".{c.config.Domainname}" if c.config.Domainname else "")
        rootfs_mod.write_file(hostname_path, c.config.Hostname + "\n")
        rootfs_mod.write_file(
            hosts_path,
            rootfs_mod.hosts_content(plan.hosts_entries(fqdn), plan.extra_hosts(hc.ExtraHosts or [])),
        )
        rootfs_mod.write_file(resolv_path, plan.resolv_conf(hc.Dns, hc.DnsSearch, hc.DnsOptions, cfg))
        user = resolve_user(rootfs.target, c.config.User, hc.GroupAdd or [])
        inputs = SpecInputs(
            rootfs=rootfs.target,
            cgroups_path=cgroups_path(c),
            user=user,
            hostname_path=hostname_path,
            hosts_path=hosts_path,
            resolv_conf_path=resolv_path,
            netns=plan.netns,
            binds=tuple(binds),
            init_path=Path(cfg.init_binary) if hc.Init else None,
            host=self.ctx.host_facts,
            default_ulimits=cfg.default_ulimits,
            devices=tuple(lookup_devices(hc.Devices or [])),
            host_devices=tuple(host_devices()) if hc.Privileged else (),
            block_devices=block_device_numbers(block_device_paths(hc)),
            link_env=tuple(plan.link_env),
        )
        spec = build_spec(c.config, hc, inputs).to_json()
        store.write_json(rdir / "config.json", spec, durable=False)
        return spec

    async def _undo(
        self, container: Container, rdir: Path, rootfs: RootFs | None, plan: NetworkPlan | None
    ) -> None:
        with contextlib.suppress(PydockError, OSError):
            await self.runtime(container).delete(container.cid, force=True)
        if plan is not None:
            with contextlib.suppress(PydockError, OSError):
                await self.ctx.network.release(container)
        if rootfs is not None:
            with contextlib.suppress(PydockError, OSError):
                await self.ctx.mounts.release(container, rootfs)
        await asyncio.to_thread(_clear_runtime_dir, rdir)

    # --- down -----------------------------------------------------------------------------------

    async def oom_killed(self, container: Container) -> bool:
        """Whether the kernel OOM killer hit this container (read before its cgroup goes)."""
        count = await asyncio.to_thread(oom_kill_count, cgroups_path(container), self.cgroup_layout)
        return count > 0

    async def teardown(self, container: Container) -> None:
        """After the init exited: runtime state, cgroup, network, rootfs mount, runtime dir."""
        if not await self._forget_stopped(container):
            try:
                await self.runtime(container).delete(container.cid, force=True)
            except PydockError as exc:
                log.warning("runtime delete failed: %s", exc, extra={"container": container.short_id})
        try:
            await self.ctx.network.release(container)
        except PydockError as exc:
            log.warning("network release failed: %s", exc, extra={"container": container.short_id})
        if container.config.Tty:
            self.ctx.fdkeeper.release(container.cid)
        rdir = self.runtime_dir(container)
        await self.ctx.mounts.release(container, self.rootfs(container))
        aside = await asyncio.to_thread(_set_runtime_dir_aside, rdir)
        if aside is not None:  # bundle, FIFOs, pid file: deleted off the exit path
            self.ctx.spawn(asyncio.to_thread(store.delete, aside))

    async def _forget_stopped(self, container: Container) -> bool:
        """What `runc delete` does for a stopped container (remove its cgroup and its state dir),
        without spawning runc (~8 ms). False when it does not apply: another runtime, an init that
        still lives, a cgroup that stays busy; the caller then runs the runtime's delete."""
        runtime = self.runtime(container)
        if Path(getattr(runtime, "binary", "")).name != "runc":
            return False
        state_dir = self.ctx.config.runtime_root / container.cid
        try:
            state = await asyncio.to_thread(store.read_json, state_dir / "state.json")
        except FileNotFoundError:
            return True  # the runtime has no state for it: nothing to delete
        except (OSError, ValueError):
            return False
        pid = int(state.get("init_process_pid") or 0)
        if pid > 0 and _lives(pid, int(state.get("init_process_start") or 0)):
            return False
        left = await remove_cgroup_async(self.cgroup_layout, cgroups_path(container), timeout_s=1.0)
        if left:
            return False
        await asyncio.to_thread(shutil.rmtree, state_dir, True)
        return True

    async def pause(self, container: Container) -> None:
        await self.runtime(container).pause(container.cid)

    async def resume(self, container: Container) -> None:
        await self.runtime(container).resume(container.cid)

    async def destroy(self, container: Container, *, remove_volumes: bool) -> None:
        """Remove everything the container has on disk (it is not running)."""
        await self.ctx.mounts.remove(container, remove_volumes=remove_volumes)
        rdir = self.runtime_dir(container)
        rootfs = self.rootfs(container)

        def blocking() -> list[Path]:
            with contextlib.suppress(OSError):
                rootfs.unmount()
            asides = [_set_runtime_dir_aside(rdir), store.set_aside(container.data_dir)]
            return [p for p in asides if p is not None]

        # Renamed aside, the container is gone; its files (the log may be large) are deleted in the
        # background so that `rm` and `wait?condition=removed` answer at once. A crash before the
        # delete finishes leaves `.removing` dirs that the startup sweep deletes.
        leftovers = await asyncio.to_thread(blocking)
        for path in leftovers:
            self.ctx.spawn(asyncio.to_thread(store.delete, path))
        await self.ctx.network.forget(container)


def _lives(pid: int, start_time: int) -> bool:
    """Whether `pid` is still the (non-zombie) process that started at `start_time` ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and (start_time == 0 or int(fields[19]) == start_time)


def _clear_runtime_dir(rdir: Path) -> None:
    aside = _set_runtime_dir_aside(rdir)
    if aside is not None:
        store.delete(aside)


def _set_runtime_dir_aside(rdir: Path) -> Path | None:
    """Unmount what may still be mounted in a runtime dir and rename it aside for deletion."""
    if not rdir.is_dir():
        return None
    with contextlib.suppress(OSError):
        rootfs_mod.unmount(rdir / "rootfs")
    return store.set_aside(rdir)
