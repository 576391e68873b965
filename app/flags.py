"""`pydockd` command line and `--config-file`, with dockerd's flag and daemon.json names.

Produces one `DaemonConfig`. As dockerd does, a setting given both as a flag and in the config
file is an error, and unknown config-file keys are refused (a typo must not be silently ignored).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from runtime.cgroups import DEFAULT_CGROUP_PARENT, cgroup_parent_parts
from runtime.config import (
    DEFAULT_BIP,
    DEFAULT_BRIDGE,
    DEFAULT_CHAIN_PREFIX,
    DEFAULT_DATA_ROOT,
    DEFAULT_EXEC_ROOT,
    DEFAULT_INIT_BINARY,
    DEFAULT_SOCKET,
    DaemonConfig,
    RuntimeSpec,
    TlsConfig,
)
from runtime.engine import VERSION
from runtime.errors import InvalidParameter

DEFAULT_CONFIG_FILE = Path("/etc/pydock/daemon.json")
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "fatal")


class ConfigError(Exception):
    """A bad flag or config file; `pydockd` prints it and exits 1."""


def go_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which dockerd's boolean flags use (`--iptables=false`)."""
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


# flag dest → daemon.json key (dockerd's names where dockerd has the setting)
CONFIG_KEYS: dict[str, str] = {
    "hosts": "hosts",
    "data_root": "data-root",
    "exec_root": "exec-root",
    "pidfile": "pidfile",
    "group": "group",
    "default_runtime": "default-runtime",
    "add_runtime": "runtimes",
    "bridge": "bridge",
    "bip": "bip",
    "iptables": "iptables",
    "ip_forward": "ip-forward",
    "ip_masq": "ip-masq",
    "userland_proxy": "userland-proxy",
    "chain_prefix": "iptables-chain-prefix",
    "insecure_registries": "insecure-registries",
    "registry_mirrors": "registry-mirrors",
    "live_restore": "live-restore",
    "tls": "tls",
    "tlsverify": "tlsverify",
    "tlscacert": "tlscacert",
    "tlscert": "tlscert",
    "tlskey": "tlskey",
    "insecure_tcp": "insecure-tcp",
    "log_level": "log-level",
    "log_format": "log-format",
    "debug": "debug",
    "init_path": "init-path",
    "dns": "dns",
    "dns_search": "dns-search",
    "dns_opts": "dns-opts",
    "labels": "labels",
    "log_driver": "log-driver",
    "log_opts": "log-opts",
    "default_ulimits": "default-ulimits",
    "max_concurrent_downloads": "max-concurrent-downloads",
    "max_concurrent_uploads": "max-concurrent-uploads",
    "shutdown_timeout": "shutdown-timeout",
    "cgroup_parent": "cgroup-parent",
}


class DockerdHelpFormatter(argparse.HelpFormatter):
    """`pydockd --help` laid out like dockerd's (Go pflag): `-H, --host list`, `    --bip string`,
    boolean flags without a value placeholder, and `Usage:` with a capital."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=42, width=110)

    def add_usage(self, usage: str | None, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, prefix="Usage:  " if prefix is None else prefix)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        short = [o for o in action.option_strings if not o.startswith("--")]
        long = [o for o in action.option_strings if o.startswith("--")]
        names = ", ".join([*short, *long]) if short else "    " + ", ".join(long)
        if action.nargs == 0 or not action.metavar:  # a flag, or a boolean like --iptables[=false]
            return names
        return f"{names} {action.metavar}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pydockd",
        usage="pydockd [OPTIONS]",
        description="A self-sufficient runtime for containers: the Docker Engine API in one Python process.",
        formatter_class=DockerdHelpFormatter,
        argument_default=argparse.SUPPRESS,
        add_help=False,
    )
    o = p.add_argument_group("Options")
    o.add_argument("-h", "--help", action="help", help="Print usage")
    o.add_argument(
        "-v",
        "--version",
        action="version",
        version=f"pydock version {VERSION}",
        help="Print version information and quit",
    )
    o.add_argument(
        "-H",
        "--host",
        dest="hosts",
        action="append",
        metavar="list",
        help=f"Daemon socket(s) to connect to: unix://PATH, tcp://HOST:PORT, fd://[N] "
        f"(default unix://{DEFAULT_SOCKET})",
    )
    o.add_argument(
        "--config-file", metavar="string", help=f'Daemon configuration file (default "{DEFAULT_CONFIG_FILE}")'
    )
    o.add_argument(
        "--data-root",
        metavar="string",
        help=f'Root directory of persistent pydock state (default "{DEFAULT_DATA_ROOT}")',
    )
    o.add_argument(
        "--exec-root",
        metavar="string",
        help=f'Root directory for execution state files (default "{DEFAULT_EXEC_ROOT}")',
    )
    o.add_argument("-p", "--pidfile", metavar="string", help="Path to use for daemon PID file")
    o.add_argument(
        "-G", "--group", metavar="string", help="Group for the unix socket (socket is root:GROUP, mode 0660)"
    )
    o.add_argument(
        "--default-runtime", metavar="string", help='Default OCI runtime for containers (default "runc")'
    )
    o.add_argument(
        "--add-runtime",
        action="append",
        metavar="NAME=PATH",
        help="Register an additional OCI compatible runtime (e.g. crun=/usr/bin/crun)",
    )
    o.add_argument(
        "--init-path",
        metavar="string",
        help=f'Path to the docker-init binary (default "{DEFAULT_INIT_BINARY}")',
    )
    o.add_argument(
        "--live-restore",
        nargs="?",
        const=True,
        type=go_bool,
        metavar="",
        help="Enable live restore of containers when the daemon stops",
    )
    o.add_argument(
        "--cgroup-parent",
        metavar="string",
        help=f'Parent cgroup of every container without its own (default "{DEFAULT_CGROUP_PARENT}")',
    )
    o.add_argument(
        "--shutdown-timeout", type=int, metavar="int", help="Default shutdown timeout in seconds (default 15)"
    )
    o.add_argument(
        "--label", dest="labels", action="append", metavar="list", help="Set key=value labels to the daemon"
    )
    o.add_argument(
        "--log-driver", metavar="string", help='Default driver for container logs (default "json-file")'
    )
    o.add_argument(
        "--log-opt",
        dest="log_opts",
        action="append",
        metavar="map",
        help="Default log driver options for containers (max-size, max-file)",
    )
    o.add_argument(
        "--default-ulimit",
        dest="default_ulimits",
        action="append",
        metavar="ulimit",
        help="Default ulimits for containers (e.g. nofile=1024:2048)",
    )

    n = p.add_argument_group("Networking")
    n.add_argument(
        "-b",
        "--bridge",
        metavar="string",
        help=f'Attach containers to a network bridge (default "{DEFAULT_BRIDGE}")',
    )
    n.add_argument("--bip", metavar="string", help=f'Specify network bridge IP (default "{DEFAULT_BIP}")')
    n.add_argument(
        "--iptables",
        nargs="?",
        const=True,
        type=go_bool,
        metavar="",
        help="Enable addition of iptables rules (default true)",
    )
    n.add_argument(
        "--ip-forward",
        nargs="?",
        const=True,
        type=go_bool,
        metavar="",
        help="Enable net.ipv4.ip_forward (default true)",
    )
    n.add_argument(
        "--ip-masq",
        nargs="?",
        const=True,
        type=go_bool,
        metavar="",
        help="Enable IP masquerading (default true)",
    )
    n.add_argument(
        "--userland-proxy",
        nargs="?",
        const=True,
        type=go_bool,
        metavar="",
        help="Use userland proxy for loopback traffic (default true)",
    )
    n.add_argument(
        "--iptables-chain-prefix",
        dest="chain_prefix",
        metavar="string",
        help=f'Prefix of the iptables chains pydock owns (default "{DEFAULT_CHAIN_PREFIX}")',
    )
    n.add_argument("--dns", action="append", metavar="list", help="DNS server to use")
    n.add_argument("--dns-search", action="append", metavar="list", help="DNS search domains to use")
    n.add_argument("--dns-opt", dest="dns_opts", action="append", metavar="list", help="DNS options to use")

    r = p.add_argument_group("Registries")
    r.add_argument(
        "--insecure-registry",
        dest="insecure_registries",
        action="append",
        metavar="list",
        help="Enable insecure registry communication (host:port or CIDR)",
    )
    r.add_argument(
        "--registry-mirror",
        dest="registry_mirrors",
        action="append",
        metavar="list",
        help="Preferred registry mirror",
    )
    r.add_argument(
        "--max-concurrent-downloads",
        type=int,
        metavar="int",
        help="Set the max concurrent downloads (default 3)",
    )
    r.add_argument(
        "--max-concurrent-uploads", type=int, metavar="int", help="Set the max concurrent uploads (default 5)"
    )

    t = p.add_argument_group("Security")
    t.add_argument(
        "--tls", nargs="?", const=True, type=go_bool, metavar="", help="Use TLS; implied by --tlsverify"
    )
    t.add_argument(
        "--tlsverify",
        nargs="?",
        const=True,
        type=go_bool,
        metavar="",
        help="Use TLS and verify the remote (mutual TLS)",
    )
    t.add_argument("--tlscacert", metavar="string", help="Trust certs signed only by this CA")
    t.add_argument("--tlscert", metavar="string", help="Path to TLS certificate file")
    t.add_argument("--tlskey", metavar="string", help="Path to TLS key file")
    t.add_argument(
        "--insecure-tcp",
        nargs="?",
        const=True,
        type=go_bool,
        metavar="",
        help="Allow tcp:// listeners on loopback addresses without mutual TLS (dangerous: any "
        "local user who can connect is root on this host)",
    )

    d = p.add_argument_group("Logging")
    d.add_argument("-D", "--debug", nargs="?", const=True, type=go_bool, metavar="", help="Enable debug mode")
    d.add_argument(
        "-l",
        "--log-level",
        metavar="string",
        choices=LOG_LEVELS,
        help='Set the logging level ("debug"|"info"|"warn"|"error"|"fatal") (default "info")',
    )
    d.add_argument(
        "--log-format",
        metavar="string",
        choices=("text", "json"),
        help='Set the logging format ("text"|"json") (default "text")',
    )
    return p


def _load_config_file(path: Path, explicit: bool) -> dict[str, Any]:
    if not path.exists():
        if explicit:
            raise ConfigError(f"unable to configure the pydock daemon with file {path}: no such file")
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unable to configure the pydock daemon with file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"unable to configure the pydock daemon with file {path}: not a JSON object")
    known = set(CONFIG_KEYS.values())
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise ConfigError(
            "the following directives don't match any configuration option: " + ", ".join(unknown)
        )
    return data


def _ulimit(text: str) -> tuple[str, tuple[int, int]]:
    name, sep, values = text.partition("=")
    soft, _, hard = values.partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return name, (int(soft), int(hard or soft))
    except ValueError as exc:
        raise ConfigError(f"invalid ulimit argument: {text}") from exc


def _key_values(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"invalid {what}: {item!r} (expected key=value)")
        out[key] = value
    return out


def parse_args(argv: list[str] | None = None) -> tuple[DaemonConfig, str]:
    """Flags + config file → (DaemonConfig, log format). Raises ConfigError on bad input."""
    args = vars(build_parser().parse_args(argv))
    config_path = Path(args.pop("config_file", DEFAULT_CONFIG_FILE))
    file_values = _load_config_file(config_path, explicit=config_path != DEFAULT_CONFIG_FILE)

    both = sorted(CONFIG_KEYS[k] for k in args if k in CONFIG_KEYS and CONFIG_KEYS[k] in file_values)
    if both:
        raise ConfigError(
            "the following directives are specified both as a flag and in the configuration file: "
            + ", ".join(both)
        )
    merged: dict[str, Any] = dict(args)
    for dest, key in CONFIG_KEYS.items():
        if key in file_values:
            merged[dest] = file_values[key]

    cfg = DaemonConfig()
    changes: dict[str, Any] = {}
    if "hosts" in merged:
        hosts = merged["hosts"]
        changes["hosts"] = tuple([hosts] if isinstance(hosts, str) else hosts)
    for dest in ("data_root", "exec_root"):
        if dest in merged:
            changes[dest] = Path(merged[dest]).absolute()
    if "pidfile" in merged:
        changes["pidfile"] = Path(merged["pidfile"]).absolute()
    for dest in ("group", "default_runtime", "bridge", "bip", "chain_prefix", "log_driver"):
        if dest in merged:
            changes[dest] = str(merged[dest])
    for dest in ("iptables", "ip_forward", "ip_masq", "userland_proxy", "live_restore", "debug"):
        if dest in merged:
            changes[dest] = bool(merged[dest])
    for dest in ("insecure_registries", "registry_mirrors", "dns", "dns_search", "labels"):
        if dest in merged:
            changes[dest] = tuple(str(v) for v in merged[dest])
    if "dns_opts" in merged:
        changes["dns_options"] = tuple(str(v) for v in merged["dns_opts"])
    if "init_path" in merged:
        changes["init_binary"] = str(merged["init_path"])
    if "log_level" in merged:
        changes["log_level"] = {"warning": "warn"}.get(merged["log_level"], merged["log_level"])
    if merged.get("debug"):
        changes["log_level"] = "debug"
    for dest in ("max_concurrent_downloads", "max_concurrent_uploads"):
        if dest in merged:
            changes[dest] = int(merged[dest])
    if "shutdown_timeout" in merged:
        changes["shutdown_timeout_s"] = int(merged["shutdown_timeout"])
    if "log_opts" in merged:
        opts = merged["log_opts"]
        changes["log_opts"] = dict(opts) if isinstance(opts, dict) else _key_values(opts, "log-opt")
    if "default_ulimits" in merged:
        raw = merged["default_ulimits"]
        if isinstance(raw, dict):  # daemon.json: {"nofile": {"Name": "nofile", "Soft": 1, "Hard": 2}}
            changes["default_ulimits"] = {k: (int(v["Soft"]), int(v["Hard"])) for k, v in raw.items()}
        else:
            changes["default_ulimits"] = dict(_ulimit(u) for u in raw)
    if "add_runtime" in merged:
        raw_rt = merged["add_runtime"]
        extra = (
            {k: str(v.get("path", k)) for k, v in raw_rt.items()}
            if isinstance(raw_rt, dict)
            else _key_values(raw_rt, "runtime")
        )
        runtimes = {spec.name: spec for spec in cfg.runtimes}
        runtimes.update({name: RuntimeSpec(name, path) for name, path in extra.items()})
        changes["runtimes"] = tuple(runtimes.values())
    if "cgroup_parent" in merged:
        parent = str(merged["cgroup_parent"])
        try:
            cgroup_parent_parts(parent)
        except InvalidParameter as exc:
            raise ConfigError(str(exc)) from exc
        changes["cgroup_parent"] = parent
    if merged.get("insecure_tcp"):
        changes["allow_insecure_tcp"] = True

    tls_verify = bool(merged.get("tlsverify", False))
    use_tls = tls_verify or bool(merged.get("tls", False))
    if use_tls:
        changes["tls"] = TlsConfig(
            verify=tls_verify,
            ca_cert=Path(merged["tlscacert"]) if "tlscacert" in merged else None,
            cert=Path(merged["tlscert"]) if "tlscert" in merged else None,
            key=Path(merged["tlskey"]) if "tlskey" in merged else None,
        )
    cfg = replace(cfg, **changes)
    if cfg.runtime() is None:
        raise ConfigError(
            f"default runtime {cfg.default_runtime!r} is not a known runtime "
            f"(known: {', '.join(s.name for s in cfg.runtimes)})"
        )
    return cfg, str(merged.get("log_format", "text"))
