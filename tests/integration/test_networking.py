"""Networking end to end: published ports, user networks and their DNS, isolation, connect and
disconnect, network modes, the networks API through the docker CLI and docker-py, coexistence with
a real dockerd's chains and bridge, and leak accounting.

Traffic goes only to 127.0.0.1 and to container addresses. Every network, container and helper
process made here is removed again; user networks get subnets that are not routed on the host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon import Daemon, free_subnet, running_daemon, wait_for

pytestmark = pytest.mark.timeout(600)

HTTPD = "mkdir -p /www && echo hello-$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www"


def retried(cmd: str) -> str:
    """A shell loop running `cmd` until it succeeds (the server may still be starting)."""
    return f"for i in 1 2 3 4 5 6 7 8 9 10; do {cmd} && break; sleep 0.3; done"


def uniq(prefix: str = "n") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(host: str, port: int, path: str = "/index.html", timeout_s: float = 10.0) -> str:
    """GET with retries until the server in the container is up."""

    def attempt() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return None

    return str(wait_for(attempt, timeout_s, f"http://{host}:{port}{path}"))


def inspect(daemon: Daemon, ref: str) -> dict[str, Any]:
    return json.loads(daemon.docker("inspect", ref).stdout)[0]  # type: ignore[no-any-return]


class Objects:
    """Containers and networks made by one test, removed at its end."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.containers: list[str] = []
        self.networks: list[str] = []

    def run(self, *args: str, name: str | None = None) -> str:
        name = name or uniq("c")
        self.containers.append(name)
        self.daemon.docker("run", "-d", "--name", name, *args)
        return name

    def network(self, *args: str, name: str | None = None) -> tuple[str, str]:
        """`docker network create` with a free subnet unless one is given; returns (name, subnet)."""
        name = name or uniq("net")
        subnet = ""
        if "--subnet" not in args:
            subnet = str(free_subnet())
            args = ("--subnet", subnet, *args)
        self.networks.append(name)
        self.daemon.docker("network", "create", *args, name)
        return name, subnet

    def close(self) -> None:
        for c in self.containers:
            self.daemon.docker("rm", "-f", c, check=False)
        for n in self.networks:
            self.daemon.docker("network", "rm", n, check=False)


@pytest.fixture
def objs(daemon: Daemon) -> Iterator[Objects]:
    o = Objects(daemon)
    yield o
    o.close()


def ip_of(daemon: Daemon, ref: str, network: str | None = None) -> str:
    settings = inspect(daemon, ref)["NetworkSettings"]
    if network is None:
        return str(settings["IPAddress"])
    return str(settings["Networks"][network]["IPAddress"])


def in_netns_of(
    daemon: Daemon, ref: str, *cmd: str, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run a busybox command in the network namespace of a running container."""
    return daemon.docker("run", "--rm", "--network", f"container:{ref}", "busybox", *cmd, check=check)


# --- host-side accounting --------------------------------------------------------------------------


def owned_veths(daemon: Daemon) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    alias = f"alias pydock:{daemon.chain_prefix}:veth"
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if alias in line]


def netns_entries(daemon: Daemon) -> list[str]:
    path = daemon.exec_root / "netns"
    return sorted(os.listdir(path)) if path.is_dir() else []


def port_rules(daemon: Daemon) -> list[str]:
    """Per-port rules in our chains (DNAT, the filter ACCEPT, the hairpin MASQUERADE)."""
    rules = []
    for table in ("filter", "nat"):
        saved = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=True
        ).stdout
        rules += [
            line
            for line in saved.splitlines()
            if line.startswith(f"-A {daemon.chain_prefix}") and "--dport" in line
        ]
    return rules


def listeners(daemon: Daemon) -> list[str]:
    out = subprocess.run(["ss", "-H", "-ltunp"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"pid={daemon.pid}," in line]


def netns_mounts(daemon: Daemon) -> int:
    return sum(
        1
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(daemon.exec_root / "netns"))
    )


# --- published ports -------------------------------------------------------------------------------


def test_published_port_answers_on_loopback_and_container_address(daemon: Daemon, objs: Objects) -> None:
    port = free_port()
    c = objs.run("-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", HTTPD)
    info = inspect(daemon, c)
    ip = info["NetworkSettings"]["IPAddress"]
    assert info["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert http_get("127.0.0.1", port).startswith("hello-")
    assert http_get(ip, 80).startswith("hello-")
    assert not [r for r in port_rules(daemon) if f"--dport {port} " in r]  # the proxy alone serves 127.0.0.1
    assert daemon.docker("port", c).stdout.decode().strip() == f"80/tcp -> 127.0.0.1:{port}"
    ps = daemon.docker("ps", "--filter", f"name={c}", "--format", "{{.Ports}}").stdout.decode().strip()
    assert ps == f"127.0.0.1:{port}->80/tcp"
    # the container itself, and the network, as inspect shows them
    net = info["NetworkSettings"]["Networks"]["bridge"]
    assert net["IPAddress"] == ip and net["Gateway"] == str(next(daemon.subnet.hosts()))
    assert net["MacAddress"] == "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
    assert info["NetworkSettings"]["SandboxKey"].startswith(str(daemon.exec_root))


UDP_ECHO = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(65535)
        s.sendto(b"echo:" + data, addr)
    """
)


def test_udp_mapping_answers(daemon: Daemon, objs: Objects) -> None:
    port = free_port()
    c = objs.run("-p", f"127.0.0.1:{port}:5353/udp", "busybox", "sleep", "300")
    sandbox = inspect(daemon, c)["NetworkSettings"]["SandboxKey"]
    # busybox's nc has no UDP: the echo server runs inside the container's namespace instead.
    server = subprocess.Popen(
        ["nsenter", f"--net={sandbox}", sys.executable, "-c", UDP_ECHO, "5353"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            for i in range(3):
                s.sendto(b"ping%d" % i, ("127.0.0.1", port))
                assert s.recvfrom(100)[0] == b"echo:ping%d" % i
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_publish_all_and_docker_port(daemon: Daemon, objs: Objects) -> None:
    c = objs.run("-P", "--expose", "80", "--expose", "7000-7001/udp", "busybox", "sh", "-c", HTTPD)
    ports = inspect(daemon, c)["NetworkSettings"]["Ports"]
    assert set(ports) == {"80/tcp", "7000/udp", "7001/udp"}
    host_port = int(ports["80/tcp"][0]["HostPort"])
    assert 32768 <= host_port <= 60999 and ports["80/tcp"][0]["HostIp"] == "0.0.0.0"
    out = daemon.docker("port", c, "80/tcp").stdout.decode().split()
    assert out == [f"0.0.0.0:{host_port}"]
    assert http_get("127.0.0.1", host_port).startswith("hello-")


def test_port_range_and_exposed_only(daemon: Daemon, objs: Objects) -> None:
    base = free_port()
    c = objs.run("-p", f"127.0.0.1:{base}-{base + 50}:80", "--expose", "9000", "busybox", "sh", "-c", HTTPD)
    ports = inspect(daemon, c)["NetworkSettings"]["Ports"]
    assert ports["9000/tcp"] is None  # exposed, not published
    bound = int(ports["80/tcp"][0]["HostPort"])
    assert base <= bound <= base + 50
    assert http_get("127.0.0.1", bound).startswith("hello-")


def test_port_conflict_fails_clearly_and_leaves_nothing(daemon: Daemon, objs: Objects) -> None:
    port = free_port()
    objs.run("-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", HTTPD)
    before = (owned_veths(daemon), netns_entries(daemon), port_rules(daemon), listeners(daemon))
    second = uniq("c")
    objs.containers.append(second)
    r = daemon.docker(
        "run", "-d", "--name", second, "-p", f"127.0.0.1:{port}:80", "busybox", "true", check=False
    )
    assert r.returncode == 125
    err = r.stderr.decode()
    assert "driver failed programming external connectivity on endpoint " + second in err
    assert f"Bind for 127.0.0.1:{port} failed: port is already allocated" in err
    assert inspect(daemon, second)["State"]["Status"] == "created"
    # a port held by another program: dockerd 28's wording
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        taken = foreign.getsockname()[1]
        third = uniq("c")
        objs.containers.append(third)
        r = daemon.docker(
            "run", "-d", "--name", third, "-p", f"127.0.0.1:{taken}:80", "busybox", "true", check=False
        )
    assert r.returncode == 125
    assert f"failed to bind host port for 127.0.0.1:{taken}:" in r.stderr.decode()
    assert "address already in use" in r.stderr.decode()
    after = (owned_veths(daemon), netns_entries(daemon), port_rules(daemon), listeners(daemon))
    assert after == before


# --- user-defined networks ----------------------------------------------------------------------------


def test_containers_on_a_user_network_reach_each_other_by_name_and_alias(
    daemon: Daemon, objs: Objects
) -> None:
    net, _ = objs.network()
    srv = objs.run("--network", net, "--network-alias", "web", "busybox", "sh", "-c", HTTPD)
    short = inspect(daemon, srv)["Id"][:12]
    fetch = retried("wget -qO- http://$h/")
    script = f"cat /etc/resolv.conf; for h in {srv} web {short} {srv}.{net}; do {fetch}; done"
    out = daemon.docker("run", "--rm", "--network", net, "busybox", "sh", "-c", script).stdout.decode()
    assert "nameserver 127.0.0.11" in out and "options ndots:0" in out
    assert out.count(f"hello-{short}") == 4, out
    # the same with a TCP echo through busybox nc
    objs.run("--network", net, "busybox", "nc", "-ll", "-p", "7000", "-e", "cat", name="echo-" + srv)
    out = daemon.docker(
        "run", "--rm", "--network", net, "busybox", "sh", "-c", retried(f"echo ping | nc echo-{srv} 7000")
    ).stdout
    assert out == b"ping\n"
    # /etc/hosts has only localhost and the container's own names
    hosts = daemon.docker("run", "--rm", "--network", net, "--hostname", "h1", "busybox", "cat", "/etc/hosts")
    lines = [
        ln for ln in hosts.stdout.decode().splitlines() if ln and not ln.startswith(("::", "fe00", "ff0"))
    ]
    assert lines[0] == "127.0.0.1\tlocalhost" and len(lines) == 2 and lines[1].endswith("\th1")
    # the default bridge has no name resolution (as Docker)
    r = daemon.docker("run", "--rm", "busybox", "cat", "/etc/resolv.conf")
    assert b"127.0.0.11" not in r.stdout


def test_a_renamed_container_answers_to_its_new_name(daemon: Daemon, objs: Objects) -> None:
    net, _ = objs.network()
    old = objs.run("--network", net, "busybox", "sleep", "300")
    new = uniq("renamed")
    daemon.docker("rename", old, new)
    objs.containers.append(new)
    ip = ip_of(daemon, new, net)
    out = daemon.docker(
        "run", "--rm", "--network", net, "busybox", "nslookup", new, "127.0.0.11"
    ).stdout.decode()
    assert ip in out
    r = daemon.docker("run", "--rm", "--network", net, "busybox", "nslookup", old, "127.0.0.11", check=False)
    assert ip not in r.stdout.decode()


def test_networks_are_isolated_from_each_other(daemon: Daemon, objs: Objects) -> None:
    net1, _ = objs.network()
    net2, _ = objs.network()
    srv = objs.run("--network", net1, "busybox", "sh", "-c", HTTPD)
    ip = ip_of(daemon, srv, net1)
    ok = daemon.docker(
        "run", "--rm", "--network", net1, "busybox", "sh", "-c", retried(f"wget -qO- http://{ip}/")
    )
    assert ok.stdout.startswith(b"hello-")
    r = daemon.docker("run", "--rm", "--network", net2, "busybox", "sh", "-c",
                      f"timeout 3 wget -qO- http://{ip}/; exit $?", check=False)  # fmt: skip
    assert r.returncode != 0 and not r.stdout
    # neither does the default bridge reach it
    r = daemon.docker(
        "run", "--rm", "busybox", "sh", "-c", f"timeout 3 wget -qO- http://{ip}/; exit $?", check=False
    )
    assert r.returncode != 0


def test_connect_and_disconnect_a_running_container(daemon: Daemon, objs: Objects) -> None:
    net, subnet = objs.network()
    srv = objs.run("--network", net, "busybox", "sh", "-c", HTTPD)
    cli = objs.run("busybox", "sleep", "300")
    wanted_ip = str(list(ipaddress.IPv4Network(subnet).hosts())[49])
    daemon.docker("network", "connect", "--alias", "client", "--ip", wanted_ip, net, cli)
    assert wanted_ip in in_netns_of(daemon, cli, "ip", "-4", "addr").stdout.decode()
    settings = inspect(daemon, cli)["NetworkSettings"]["Networks"]
    assert settings[net]["IPAddress"] == wanted_ip and "client" in settings[net]["Aliases"]
    out = in_netns_of(daemon, cli, "sh", "-c", retried(f"wget -qO- http://{srv}/"))
    assert out.stdout.startswith(b"hello-")
    found = daemon.docker("run", "--rm", "--network", net, "busybox", "nslookup", "client", "127.0.0.11")
    assert wanted_ip in found.stdout.decode()
    members = json.loads(daemon.docker("network", "inspect", net).stdout)[0]["Containers"]
    assert {m["Name"] for m in members.values()} == {srv, cli}
    daemon.docker("network", "disconnect", net, cli)
    assert wanted_ip not in in_netns_of(daemon, cli, "ip", "-4", "addr").stdout.decode()
    assert net not in inspect(daemon, cli)["NetworkSettings"]["Networks"]
    r = daemon.docker("network", "disconnect", net, cli, check=False)
    assert r.returncode == 1 and b"is not connected to network " + net.encode() in r.stderr


def test_connect_a_created_container_takes_effect_at_start(daemon: Daemon, objs: Objects) -> None:
    net, _ = objs.network()
    name = uniq("c")
    objs.containers.append(name)
    daemon.docker("create", "--name", name, "busybox", "sleep", "300")
    daemon.docker("network", "connect", "--alias", "late", net, name)
    networks = inspect(daemon, name)["NetworkSettings"]["Networks"]
    assert set(networks) == {"bridge", net} and networks[net]["IPAddress"] == ""
    daemon.docker("start", name)
    addrs = in_netns_of(daemon, name, "ip", "-4", "-o", "addr").stdout.decode()
    assert "eth0" in addrs and "eth1" in addrs
    found = daemon.docker("run", "--rm", "--network", net, "busybox", "nslookup", "late", "127.0.0.11")
    assert ip_of(daemon, name, net) in found.stdout.decode()


def test_network_none_host_and_container_modes(daemon: Daemon, objs: Objects) -> None:
    links = daemon.docker("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout.decode()
    assert [ln.split(":")[1].strip() for ln in links.splitlines()] == ["lo"]
    host = daemon.docker("run", "--rm", "--network", "host", "busybox", "ip", "-o", "link").stdout.decode()
    assert daemon.bridge in host  # the host's own interfaces
    assert daemon.docker(
        "run", "--rm", "--network", "host", "busybox", "hostname"
    ).stdout.decode().strip() == (os.uname().nodename)
    first = objs.run("--hostname", "shared", "busybox", "sleep", "300")
    ip = ip_of(daemon, first)
    second = objs.run("--network", f"container:{first}", "busybox", "sleep", "300")
    info = inspect(daemon, second)
    assert info["HostConfig"]["NetworkMode"] == f"container:{first}"
    assert info["NetworkSettings"]["Networks"] == {}
    shown = daemon.docker("run", "--rm", "--network", f"container:{second}", "busybox", "sh", "-c",
                          "hostname; ip -4 -o addr")  # fmt: skip
    assert shown.stdout.decode().startswith("shared\n") and ip in shown.stdout.decode()


def test_dns_hosts_and_addresses_flags(daemon: Daemon, objs: Objects) -> None:
    net, subnet = objs.network()
    ip = str(list(ipaddress.IPv4Network(subnet).hosts())[20])
    out = daemon.docker(
        "run", "--rm", "--network", net, "--ip", ip,
        "--hostname", "box", "--add-host", "db:10.1.2.3", "--add-host", "gw:host-gateway",
        "--dns-search", "example.internal", "--dns-option", "timeout:2",
        "busybox", "sh", "-c", "cat /etc/hosts /etc/resolv.conf; ip -o addr show eth0; ip -o link show eth0",
    ).stdout.decode()  # fmt: skip
    assert "10.1.2.3\tdb" in out
    assert f"{next(daemon.subnet.hosts())}\tgw" in out  # host-gateway: the default bridge's gateway
    assert f"{ip}\tbox" in out and f"inet {ip}/" in out
    assert "search example.internal" in out and "timeout:2" in out and "nameserver 127.0.0.11" in out
    # --mac-address: the CLI 28 wants API 1.44 for it; docker-py sends Config.MacAddress (API 1.41)
    client = daemon.client()
    cmd = ["ip", "-o", "link", "show", "eth0"]
    link = client.containers.run("busybox", cmd, mac_address="02:42:de:ad:be:ef", remove=True)
    client.close()
    assert b"link/ether 02:42:de:ad:be:ef" in link
    dns = daemon.docker("run", "--rm", "--dns", "192.0.2.53", "busybox", "cat", "/etc/resolv.conf").stdout
    assert dns.decode().splitlines()[0] == "nameserver 192.0.2.53"


def test_legacy_links_hosts_env_and_errors(daemon: Daemon, objs: Objects) -> None:
    db = objs.run("-e", "SECRET=s3", "--expose", "5432", "--expose", "53/udp", "busybox", "sleep", "300")
    db_id, db_ip = inspect(daemon, db)["Id"], ip_of(daemon, db)
    web = uniq("web")
    script = "cat /etc/hosts; env | sort; ping -c 1 -W 2 db >/dev/null && echo reached"
    out = daemon.docker("run", "--rm", "--name", web, "--link", f"{db}:db", "-e", "DB_ENV_SECRET=mine",
                        "busybox", "sh", "-c", script).stdout.decode()  # fmt: skip
    assert f"{db_ip}\tdb {db_id[:12]} {db}\n" in out
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and line.startswith("DB_"))
    assert env["DB_NAME"] == f"/{web}/db"
    assert env["DB_PORT"] == f"udp://{db_ip}:53"  # the lowest port
    assert env["DB_PORT_5432_TCP"] == f"tcp://{db_ip}:5432"
    assert (env["DB_PORT_5432_TCP_ADDR"], env["DB_PORT_5432_TCP_PORT"], env["DB_PORT_5432_TCP_PROTO"]) == (
        db_ip,
        "5432",
        "tcp",
    )
    assert env["DB_PORT_53_UDP_PROTO"] == "udp"
    assert env["DB_ENV_SECRET"] == "mine"  # the container's own Env wins over a link's
    assert "DB_ENV_PATH" not in env and "DB_ENV_HOME" not in env
    assert out.rstrip().endswith("reached")
    # without an alias the name is the alias; the variables are not in inspect's Config.Env
    plain = objs.run("--link", db, "busybox", "sleep", "300")
    assert f"{db_ip}\t{db} {db_id[:12]}" in daemon.docker("exec", plain, "cat", "/etc/hosts").stdout.decode()
    assert not [e for e in inspect(daemon, plain)["Config"]["Env"] if "_NAME=" in e]
    assert f"/{plain}/{db}" in daemon.docker("exec", plain, "env").stdout.decode()  # exec has them too
    # on a user network both are on
    net, _ = objs.network()
    a = objs.run("--network", net, "busybox", "sleep", "300")
    out = daemon.docker("run", "--rm", "--network", net, "--link", f"{a}:peer", "busybox",
                        "cat", "/etc/hosts").stdout.decode()  # fmt: skip
    assert f"{ip_of(daemon, a, net)}\tpeer " in out
    # errors, as dockerd words them
    r = daemon.docker("run", "--rm", "--link", "pdt-nope:x", "busybox", "true", check=False)
    assert r.returncode == 125 and b"could not get container for pdt-nope" in r.stderr
    stopped = objs.run("busybox", "true")
    wait_for(lambda: not inspect(daemon, stopped)["State"]["Running"], 10, "the container to exit")
    r = daemon.docker("run", "--rm", "--link", f"{stopped}:s", "busybox", "true", check=False)
    assert (
        r.returncode != 0 and f"Cannot link to a non running container: /{stopped} AS /".encode() in r.stderr
    )
    r = daemon.docker("run", "--rm", "--network", "host", "--link", db, "busybox", "true", check=False)
    assert r.returncode == 125 and b"host type networking can't be used with links" in r.stderr


def test_create_checks_networks(daemon: Daemon) -> None:
    # (the CLI answers any 404 of create by pulling the image, so this one goes through the API)
    nope = "nope-" + secrets.token_hex(3)
    body = {
        "Image": "busybox",
        "HostConfig": {"NetworkMode": nope},
        "NetworkingConfig": {"EndpointsConfig": {nope: {}}},
    }
    r = daemon.request("POST", "/v1.41/containers/create", json=body)
    assert r.status_code == 404 and r.json() == {"message": f"network {nope} not found"}
    r = daemon.docker("create", "--ip", "10.9.9.9", "busybox", check=False)
    assert b"user specified IP address is supported on user defined networks only" in r.stderr
    body = {"Image": "busybox", "HostConfig": {"NetworkMode": "bridge"},
            "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["x"]}}}}  # fmt: skip
    r = daemon.request("POST", "/v1.41/containers/create", json=body)
    assert r.status_code == 400
    assert (
        r.json()["message"]
        == "network-scoped alias is supported only for containers in user defined networks"
    )


# --- the networks API ---------------------------------------------------------------------------------


def test_network_cli_lifecycle_and_errors(daemon: Daemon, objs: Objects) -> None:
    subnet = free_subnet()
    gateway = str(subnet.network_address + 254)
    ip_range = str(list(subnet.subnets(new_prefix=subnet.prefixlen + 1))[1])
    bridge_opt = "com.docker.network.bridge.name=pdtbr" + secrets.token_hex(2)
    name, _ = objs.network("--subnet", str(subnet), "--gateway", gateway, "--ip-range", ip_range,
                           "--label", "team=net", "-o", bridge_opt, "--internal")  # fmt: skip
    net = json.loads(daemon.docker("network", "inspect", name).stdout)[0]
    assert net["IPAM"]["Config"] == [{"Subnet": str(subnet), "IPRange": ip_range, "Gateway": gateway}]
    assert net["Internal"] is True and net["Labels"] == {"team": "net"} and net["Scope"] == "local"
    bridge_name = net["Options"]["com.docker.network.bridge.name"]
    assert (
        subprocess.run(["ip", "link", "show", bridge_name], capture_output=True, check=False).returncode == 0
    )
    # an address from the range; an internal network has no default route
    c = objs.run("--network", name, "busybox", "sleep", "300")
    assert ipaddress.IPv4Address(ip_of(daemon, c, name)) in ipaddress.IPv4Network(ip_range)
    assert "default" not in in_netns_of(daemon, c, "ip", "route").stdout.decode()
    # generic inspect walks to networks
    assert json.loads(daemon.docker("inspect", name).stdout)[0]["Id"] == net["Id"]
    r = daemon.docker("network", "create", name, check=False)
    assert r.returncode == 1 and f"network with name {name} already exists".encode() in r.stderr
    r = daemon.docker("network", "rm", name, check=False)
    assert (
        f"error while removing network: network {name} id {net['Id']} has active endpoints".encode()
        in r.stderr
    )
    for predefined in ("bridge", "host", "none"):
        r = daemon.docker("network", "rm", predefined, check=False)
        assert f"{predefined} is a pre-defined network and cannot be removed".encode() in r.stderr
    r = daemon.docker("network", "inspect", "nope-x", check=False)
    assert b"network nope-x not found" in r.stderr
    daemon.docker("rm", "-f", c)
    daemon.docker("network", "rm", name)
    assert (
        subprocess.run(["ip", "link", "show", bridge_name], capture_output=True, check=False).returncode != 0
    )


def test_network_ls_filters_and_prune(daemon: Daemon, objs: Objects) -> None:
    tag = secrets.token_hex(3)
    used, _ = objs.network("--label", f"t={tag}", name=f"flt-used-{tag}")
    idle, _ = objs.network("--label", f"t={tag}", "--label", "idle=1", name=f"flt-idle-{tag}")
    objs.run("--network", used, "busybox", "sleep", "300")

    def ls(*filters: str) -> set[str]:
        args = [a for f in filters for a in ("--filter", f)]
        return set(daemon.docker("network", "ls", "--format", "{{.Name}}", *args).stdout.decode().split())

    assert ls(f"label=t={tag}") == {used, idle}
    assert ls("label=idle") >= {idle} and used not in ls("label=idle")
    assert ls(f"name=flt-.*-{tag}") == {used, idle}
    assert ls("dangling=true", f"label=t={tag}") == {idle}
    assert {"bridge", "host", "none"} <= ls("type=builtin") and idle not in ls("type=builtin")
    assert ls("driver=null") == {"none"}
    nid = json.loads(daemon.docker("network", "inspect", idle).stdout)[0]["Id"]
    assert ls(f"id={nid[:10]}") == {idle}
    out = daemon.docker("network", "prune", "-f", "--filter", f"label=t={tag}").stdout.decode()
    assert idle in out and used not in out
    assert ls(f"label=t={tag}") == {used}


def test_network_events(daemon: Daemon, objs: Objects) -> None:
    since = str(time.time() - 1)
    name, _ = objs.network()
    c = objs.run("--network", name, "busybox", "sleep", "300")
    cid = inspect(daemon, c)["Id"]
    daemon.docker("rm", "-f", c)
    daemon.docker("network", "rm", name)
    until = str(time.time() + 1)
    out = daemon.docker("events", "--since", since, "--until", until, "--filter", "type=network",
                        "--format", "{{json .}}").stdout.decode()  # fmt: skip
    mine = [e for e in map(json.loads, out.splitlines()) if e["Actor"]["Attributes"].get("name") == name]
    assert [e["Action"] for e in mine] == ["create", "connect", "disconnect", "destroy"]
    assert all(e["Type"] == "network" and e["Actor"]["Attributes"]["type"] == "bridge" for e in mine)
    assert mine[1]["Actor"]["Attributes"]["container"] == cid == mine[2]["Actor"]["Attributes"]["container"]


def test_docker_py_network_api(daemon: Daemon) -> None:
    import docker
    from docker.types import IPAMConfig, IPAMPool

    client = daemon.client()
    subnet = free_subnet()
    name = uniq("pynet")
    net = client.networks.create(
        name, driver="bridge", labels={"k": "v"},
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet), gateway=str(subnet.network_address + 1))]),
    )  # fmt: skip
    container = None
    try:
        assert client.networks.get(net.id).name == name
        assert [n.name for n in client.networks.list(names=[name])] == [name]
        assert client.networks.list(filters={"label": ["k=v"]})[0].id == net.id
        container = client.containers.run("busybox", ["sleep", "300"], detach=True)
        ip = str(subnet.network_address + 77)
        net.connect(container, ipv4_address=ip, aliases=["py"])
        net.reload()
        assert [c.id for c in net.containers] == [container.id]
        container.reload()
        assert container.attrs["NetworkSettings"]["Networks"][name]["IPAddress"] == ip
        with pytest.raises(docker.errors.APIError) as err:
            net.remove()
        assert err.value.status_code == 403
        net.disconnect(container)
        with pytest.raises(docker.errors.APIError) as err:
            net.disconnect(container)
        assert err.value.status_code == 500
        with pytest.raises(docker.errors.NotFound):
            client.networks.get("nope-" + name)
        with pytest.raises(docker.errors.APIError) as err:
            client.networks.create(name)
        assert err.value.status_code == 409
    finally:
        if container is not None:
            container.remove(force=True)
    deleted = client.networks.prune(filters={"label": "k=v"})
    assert name in (deleted["NetworksDeleted"] or [])
    client.close()


# --- leaks -----------------------------------------------------------------------------------------


def test_100_run_rm_cycles_with_published_ports_leave_nothing(daemon: Daemon) -> None:
    port = free_port()

    def snapshot() -> tuple[Any, ...]:
        return (owned_veths(daemon), netns_entries(daemon), netns_mounts(daemon), port_rules(daemon),
                listeners(daemon))  # fmt: skip

    for _ in range(2):  # warm-up
        daemon.docker("run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox", "true")
    wait_for(lambda: not owned_veths(daemon), 30, "veths of the warm-up to go")
    before = snapshot()
    assert before[0] == [] and before[1] == [] and before[3] == []
    for i in range(100):
        daemon.docker(
            "run", "--rm", "-p", f"127.0.0.1:{port}:80", "-p", f"{port + 1}:81/udp", "busybox", "true"
        )
        if i == 0:
            assert listeners(daemon) == before[-1]
    # the kernel deletes the veths with their namespaces, asynchronously
    wait_for(lambda: snapshot() == before, 30, "veths, namespaces, rules and listeners to be gone")
    ipam = [json.loads(p.read_text()) for p in (daemon.data_root / "networks" / "ipam").glob("*.json")]
    assert all(pool["allocations"] == {} for pool in ipam), ipam


# --- coexistence with a real dockerd, daemon restarts, flags ----------------------------------------


@contextlib.contextmanager
def fake_dockerd(tag: str) -> Iterator[None]:
    """What a real dockerd leaves on a host: DOCKER chains with rules, jumps, and a docker0-like bridge."""
    chains = [f"DOCKER{tag}", f"DOCKER{tag}-USER"]
    bridge = f"dk0{tag}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "172.31.254.1/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        for table in ("filter", "nat"):
            for chain in chains:
                subprocess.run(["iptables", "-w", "-t", table, "-N", chain], check=True)
                subprocess.run(["iptables", "-w", "-t", table, "-A", chain, "-j", "RETURN"], check=True)
        subprocess.run(["iptables", "-w", "-I", "FORWARD", "-j", chains[1]], check=True)
        subprocess.run(["iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-m", "addrtype",
                        "--dst-type", "LOCAL", "-j", chains[0]], check=True)  # fmt: skip
        yield
    finally:
        subprocess.run(["iptables", "-w", "-D", "FORWARD", "-j", chains[1]], check=False)
        subprocess.run(["iptables", "-w", "-t", "nat", "-D", "PREROUTING", "-m", "addrtype",
                        "--dst-type", "LOCAL", "-j", chains[0]], check=False)  # fmt: skip
        for table in ("filter", "nat"):
            for chain in chains:
                subprocess.run(["iptables", "-w", "-t", table, "-F", chain], check=False)
                subprocess.run(["iptables", "-w", "-t", table, "-X", chain], check=False)
        subprocess.run(["ip", "link", "del", bridge], check=False)


def foreign_state(tag: str) -> tuple[list[str], str]:
    rules = []
    for table in ("filter", "nat"):
        saved = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=True
        ).stdout
        rules += [re.sub(r"\[\d+:\d+\]", "", ln) for ln in saved.splitlines() if f"DOCKER{tag}" in ln]
    out = subprocess.run(
        ["ip", "-j", "addr", "show", f"dk0{tag}"], capture_output=True, text=True, check=True
    )
    (link,) = json.loads(out.stdout)
    kept = {k: link.get(k) for k in ("ifindex", "ifname", "flags", "mtu", "operstate", "address")}
    kept["addrs"] = sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []))
    return rules, json.dumps(kept, sort_keys=True)


def test_real_dockerd_chains_and_bridge_are_untouched(busybox_tar: Path) -> None:
    tag = secrets.token_hex(2).upper()
    with fake_dockerd(tag):
        before = foreign_state(tag)
        with running_daemon() as d:
            d.docker("load", "-q", "-i", str(busybox_tar))
            assert foreign_state(tag) == before
            port = free_port()
            name = uniq("c")
            d.docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", HTTPD)
            net = uniq("net")
            d.docker("network", "create", "--subnet", str(free_subnet()), net)
            assert http_get("127.0.0.1", port).startswith("hello-")
            assert foreign_state(tag) == before
            d.docker("rm", "-f", name)
            d.docker("network", "rm", net)
            d.stop()
            assert foreign_state(tag) == before
        assert foreign_state(tag) == before


def test_live_restore_keeps_ports_dns_and_endpoints(busybox_tar: Path) -> None:
    with running_daemon("--live-restore") as d:
        d.docker("load", "-q", "-i", str(busybox_tar))
        port = free_port()
        net = uniq("net")
        d.docker("network", "create", "--subnet", str(free_subnet()), net)
        d.docker("run", "-d", "--name", "srv", "--network", net, "-p", f"127.0.0.1:{port}:80", "-p", "81/udp",
                 "busybox", "sh", "-c", HTTPD)  # fmt: skip
        d.docker("run", "-d", "--name", "cli", "--network", net, "busybox", "sleep", "300")
        assert http_get("127.0.0.1", port).startswith("hello-")
        veths = owned_veths(d)
        for how in ("restart", "crash"):
            if how == "restart":
                d.restart()
            else:
                d.kill()
                d.start()
            assert http_get("127.0.0.1", port).startswith("hello-")
            out = in_netns_of(d, "cli", "wget", "-qO-", "http://srv/index.html").stdout
            assert out.startswith(b"hello-")
            assert owned_veths(d) == veths
            dnat = [r for r in port_rules(d) if "DNAT" in r]  # the UDP port's (loopback needs none)
            assert len(dnat) == 1 and "-p udp" in dnat[0]
        d.docker("rm", "-f", "srv", "cli")
        d.docker("network", "rm", net)
        wait_for(lambda: not owned_veths(d), 30, "veths to go")
        assert port_rules(d) == [] and netns_entries(d) == []


def test_dnat_without_userland_proxy(busybox_tar: Path) -> None:
    with running_daemon("--userland-proxy=false") as d:
        d.docker("load", "-q", "-i", str(busybox_tar))
        port = free_port()
        d.docker("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", HTTPD)
        assert listeners(d) == []  # no proxy: DNAT on OUTPUT with route_localnet
        assert http_get("127.0.0.1", port).startswith("hello-")
        d.docker("rm", "-f", "web")


def test_iptables_false_touches_no_rules(busybox_tar: Path) -> None:
    with running_daemon("--iptables=false") as d:
        d.docker("load", "-q", "-i", str(busybox_tar))
        port = free_port()
        d.docker("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", HTTPD)
        assert http_get("127.0.0.1", port).startswith("hello-")  # the userland proxy alone
        saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
        assert d.chain_prefix not in saved
        d.docker("rm", "-f", "web")


def test_bench_proxy_runs_against_a_container(daemon: Daemon, objs: Objects) -> None:
    """bench/bench_proxy.py --container: pydockd's proxy and the container address, side by side."""
    port = free_port()
    c = objs.run("-p", f"127.0.0.1:{port}:5201", "busybox", "sleep", "300")
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_proxy", "--container", c, "--size-mib", "8", "--rounds", "200",
         "--connects", "20", "--repeat", "1", "--json"],
        capture_output=True, text=True, check=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
        env=daemon.env(),
    )  # fmt: skip
    result = json.loads(out.stdout)
    for path in ("direct", "pydock"):
        assert result[path]["ok"] and result[path]["upload_mib_s"] > 0 and result[path]["rtt_p50_us"] > 0
    assert result["pydock"]["proxy_cpu_s_per_gib"] is not None  # found pydockd by its listener
