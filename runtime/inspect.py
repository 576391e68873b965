"""`GET /containers/{id}/json`: a container record in dockerd's inspect shape (API 1.41)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.records import Container, Status

if TYPE_CHECKING:
    from runtime.launch import Launcher

EMPTY_NETWORK_SETTINGS: dict[str, Any] = {
    "Bridge": "",
    "SandboxID": "",
    "HairpinMode": False,
    "LinkLocalIPv6Address": "",
    "LinkLocalIPv6PrefixLen": 0,
    "Ports": {},
    "SandboxKey": "",
    "SecondaryIPAddresses": None,
    "SecondaryIPv6Addresses": None,
    "EndpointID": "",
    "Gateway": "",
    "GlobalIPv6Address": "",
    "GlobalIPv6PrefixLen": 0,
    "IPAddress": "",
    "IPPrefixLen": 0,
    "IPv6Gateway": "",
    "MacAddress": "",
    "Networks": {},
}


def state_body(container: Container) -> dict[str, Any]:
    s = container.state
    body: dict[str, Any] = {
        "Status": s.status.value,
        "Running": s.status in (Status.RUNNING, Status.PAUSED),
        "Paused": s.status == Status.PAUSED,
        "Restarting": s.status == Status.RESTARTING,
        "OOMKilled": s.oom_killed,
        "Dead": s.status == Status.DEAD,
        "Pid": s.pid,
        "ExitCode": s.exit_code,
        "Error": s.error,
        "StartedAt": s.started_at,
        "FinishedAt": s.finished_at,
    }
    if s.health is not None:
        body["Health"] = s.health
    return body


def inspect_body(
    container: Container, launcher: Launcher, *, sizes: tuple[int, int] | None = None
) -> dict[str, Any]:
    c = container
    rootfs = launcher.rootfs(c)
    data = c.data_dir
    network_settings = dict(EMPTY_NETWORK_SETTINGS)
    network_settings.update(c.network_settings or {})
    body: dict[str, Any] = {
        "Id": c.cid,
        "Created": c.created,
        "Path": c.path,
        "Args": list(c.args),
        "State": state_body(c),
        "Image": c.image_id,
        "ResolvConfPath": str(data / "resolv.conf"),
        "HostnamePath": str(data / "hostname"),
        "HostsPath": str(data / "hosts"),
        "LogPath": str(c.log_path),
        "Name": "/" + c.name,
        "RestartCount": c.state.restart_count,
        "Driver": "overlay2",
        "Platform": c.platform,
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": list(c.exec_ids) or None,
        "HostConfig": c.host_config.wire(),
        "GraphDriver": {
            "Data": {
                "LowerDir": ":".join(str(p) for p in launcher.lower_dirs(c)),
                "MergedDir": str(rootfs.target),
                "UpperDir": str(rootfs.upper),
                "WorkDir": str(rootfs.work),
            },
            "Name": "overlay2",
        },
        "Mounts": list(c.mounts),
        "Config": c.config.wire(),
        "NetworkSettings": network_settings,
    }
    if sizes is not None:
        body["SizeRw"], body["SizeRootFs"] = sizes
    return body


def summary_ports(ports: dict[str, Any]) -> list[dict[str, Any]]:
    """`Ports` of a list item from inspect's `NetworkSettings.Ports` map."""
    out: list[dict[str, Any]] = []
    for key, bindings in ports.items():
        port, _, proto = key.partition("/")
        if not bindings:
            out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
            continue
        for b in bindings:
            entry: dict[str, Any] = {"PrivatePort": int(port), "Type": proto or "tcp"}
            if b.get("HostIp"):
                entry["IP"] = b["HostIp"]
            if b.get("HostPort"):
                entry["PublicPort"] = int(b["HostPort"])
            out.append(entry)
    return out
