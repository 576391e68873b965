"""The daemon's configuration: one immutable record built from flags and `--config-file`.

`app/main.py` parses the command line into a `DaemonConfig`; every service reads it, none
changes it. Paths derived from the data root and exec root live here so there is one layout.
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from runtime.cgroups import DEFAULT_CGROUP_PARENT

DEFAULT_SOCKET = "/var/run/pydock.sock"
DEFAULT_DATA_ROOT = Path("/var/lib/pydock")
DEFAULT_EXEC_ROOT = Path("/run/pydock")
DEFAULT_BRIDGE = "pydock0"
# Not 172.17.0.0/16 (docker0's default) so a real dockerd can run beside pydock.
DEFAULT_BIP = "172.30.0.1/16"
DEFAULT_CHAIN_PREFIX = "PYDOCK"
DEFAULT_INIT_BINARY = "/usr/bin/tini-static"


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """An OCI runtime pydock may use: its name (as `--runtime` takes it) and binary path."""

    name: str
    path: str

    def resolved(self) -> str | None:
        """The absolute binary path, or None when the binary is not installed."""
        if "/" in self.path:
            return self.path if Path(self.path).exists() else None
        return shutil.which(self.path)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    verify: bool
    ca_cert: Path | None
    cert: Path | None
    key: Path | None


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    hosts: tuple[str, ...] = (f"unix://{DEFAULT_SOCKET}",)
    data_root: Path = DEFAULT_DATA_ROOT
    exec_root: Path = DEFAULT_EXEC_ROOT
    pidfile: Path | None = None
    group: str | None = None
    default_runtime: str = "runc"
    runtimes: tuple[RuntimeSpec, ...] = (RuntimeSpec("runc", "runc"), RuntimeSpec("crun", "crun"))
    bridge: str = DEFAULT_BRIDGE
    bip: str = DEFAULT_BIP
    iptables: bool = True
    ip_forward: bool = True
    ip_masq: bool = True
    userland_proxy: bool = True
    chain_prefix: str = DEFAULT_CHAIN_PREFIX
    insecure_registries: tuple[str, ...] = ()
    registry_mirrors: tuple[str, ...] = ()
    live_restore: bool = False
    tls: TlsConfig | None = None
    allow_insecure_tcp: bool = False
    log_level: str = "info"
    debug: bool = False
    init_binary: str = DEFAULT_INIT_BINARY
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    log_driver: str = "json-file"
    log_opts: dict[str, str] = field(default_factory=dict)
    default_ulimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    max_concurrent_downloads: int = 3
    max_concurrent_uploads: int = 5
    shutdown_timeout_s: int = 15
    cgroup_parent: str = DEFAULT_CGROUP_PARENT

    # --- layout -------------------------------------------------------------------------------

    @property
    def containers_dir(self) -> Path:
        return self.data_root / "containers"

    @property
    def images_dir(self) -> Path:
        return self.data_root / "images"

    @property
    def volumes_dir(self) -> Path:
        return self.data_root / "volumes"

    @property
    def networks_dir(self) -> Path:
        return self.data_root / "networks"

    @property
    def runtime_root(self) -> Path:
        """`--root` for the OCI runtime: its state is per daemon so two daemons never mix."""
        return self.exec_root / "runtime"

    @property
    def bundles_dir(self) -> Path:
        return self.exec_root / "containers"

    @property
    def bridge_network(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.bip)

    def runtime(self, name: str | None = None) -> RuntimeSpec | None:
        wanted = name or self.default_runtime
        for spec in self.runtimes:
            if spec.name == wanted:
                return spec
        return None
