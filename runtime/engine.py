"""The engine: the daemon-wide object that owns every service and their lifetimes.

`app/` builds one `Engine` from a `DaemonConfig`, awaits `start()` before serving and
`shutdown()` after. Services are started in dependency order (images, volumes, networks,
containers) and stopped in reverse. The engine itself holds no per-object state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from pathlib import Path

from runtime import procs, store
from runtime.config import DaemonConfig
from runtime.containers import ContainerService
from runtime.events import EventBus
from runtime.execs import ExecService
from runtime.hostfacts import HostFacts
from runtime.images import ImageService
from runtime.networks import NetworkService
from runtime.records import ContainerCounts
from runtime.sysinfo import HostInfo

log = logging.getLogger("pydock.engine")

VERSION = "0.1.0"


async def _tool_version(argv: list[str], marker: str) -> str | None:
    """First version-looking word after `marker` in a tool's `--version` output, or None."""
    try:
        result = await procs.run(argv, stderr=procs.PIPE, timeout_s=5)
    except (OSError, TimeoutError):
        return None
    for line in (result.stdout + result.stderr).decode(errors="replace").splitlines():
        if marker in line:
            words = line.split(marker, 1)[1].split()
            if words:
                return words[0]
    return None


def _filesystem_type(path: Path) -> str:
    """The backing filesystem of `path` from /proc/self/mountinfo (longest matching mount point)."""
    best, fstype = "", "unknown"
    target = str(path.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return fstype
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount_point = fields[4]
        if (target == mount_point or target.startswith(mount_point.rstrip("/") + "/")) and len(
            mount_point
        ) >= len(best):
            best, fstype = mount_point, right.split()[0]
    return {"ext4": "extfs", "ext3": "extfs", "ext2": "extfs"}.get(fstype, fstype)


def _load_engine_id(data_root: Path) -> str:
    path = data_root / "engine-id"
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = str(uuid.uuid4())
    store.write_atomic(path, value.encode())
    return value


def _prepare_dirs(config: DaemonConfig) -> str:
    for directory in (
        config.data_root,
        config.containers_dir,
        config.images_dir,
        config.volumes_dir,
        config.networks_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True, mode=0o711)
    for directory in (config.exec_root, config.runtime_root, config.bundles_dir):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(config.data_root, 0o711)
    for directory in (
        config.data_root,
        config.containers_dir,
        config.volumes_dir,
        config.networks_dir,
        config.bundles_dir,
    ):
        store.sweep(directory)
    return _load_engine_id(config.data_root)


class Engine:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.host = HostInfo.probe()
        self.events = EventBus()
        self.images = ImageService(config, self.events)
        self.host_facts = HostFacts.probe()
        self.containers = ContainerService(config, self.events, self.images, self.host_facts)
        self.networks = NetworkService(config, self.events, self.containers)
        self.containers.network = self.networks
        self.execs = ExecService(self.containers)
        self.containers.lifecycle = self.execs  # ends execs, runs health checks
        self.engine_id = ""
        self.started_at = time.time()
        self.version = VERSION
        self.component_versions: dict[str, str] = {}
        self.backing_filesystem = "unknown"
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Prepare the data and exec roots, then start every service. Raises on fatal setup errors."""
        self.engine_id = await asyncio.to_thread(_prepare_dirs, self.config)
        self.backing_filesystem = await asyncio.to_thread(_filesystem_type, self.config.data_root)
        await self.images.start()
        await self._probe_components()
        await self.networks.start()
        await self.containers.open()
        log.info(
            "engine started",
            extra={"data_root": str(self.config.data_root), "exec_root": str(self.config.exec_root)},
        )

    async def shutdown(self) -> None:
        """Stop services in reverse order. With live restore, containers keep running."""
        self._stopping.set()
        await self.execs.close()
        await self.containers.shutdown(live_restore=self.config.live_restore)
        await self.networks.shutdown()
        await self.images.close()
        self.events.close()
        log.info("engine stopped")

    @property
    def is_stopping(self) -> bool:
        return self._stopping.is_set()

    async def _probe_components(self) -> None:
        runtime = self.config.runtime()
        binary = runtime.resolved() if runtime else None
        if runtime is not None and binary is not None:
            version = await _tool_version([binary, "--version"], f"{runtime.name} version")
            if version:
                self.component_versions[runtime.name] = version
        init = await _tool_version([self.config.init_binary, "--version"], "tini version")
        if init:
            self.component_versions["docker-init"] = init

    def container_counts(self) -> ContainerCounts:
        return self.containers.counts()

    def image_count(self) -> int:
        return self.images.image_count()

    @staticmethod
    def task_count() -> int:
        return len(asyncio.all_tasks())
