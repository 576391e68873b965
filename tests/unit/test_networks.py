"""Pure parts of networking: network objects, NetworkSettings, filters, endpoint checks, port
requests, the iptables fast path, and the networks API on an engine that touches no host network."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api import create_app
from app.models.containers import ContainerConfig
from app.models.endpoints import EndpointIPAMConfig, EndpointSettings, NetworkingConfig
from app.models.hostconfig import HostConfig, PortBinding
from netproxy import iptables as iptables_mod
from netproxy.iptables import IptablesManager, NetworkRules, PortRule, Proto
from runtime.config import DaemonConfig
from runtime.engine import Engine
from runtime.errors import InvalidParameter, UserIpNotAllowed
from runtime.netattach import NetworkPlan
from runtime.netchecks import check_endpoint_config, network_filter, port_requests, prune_filter
from runtime.netrecords import Endpoint, Network, Sandbox, dns_names, network_settings, veth_name
from runtime.netrestore import published_requests
from runtime.records import Container, ContainerState

NO_HOST_NETWORKING: dict[str, Any] = {"bridge": "none", "iptables": False, "ip_forward": False}

DEFAULT = Network(
    "a" * 64, "bridge", "bridge", "2026-01-01T00:00:00Z", subnet="10.5.0.0/24", gateway="10.5.0.1",
    default_bridge=True, options={"com.docker.network.bridge.name": "pydock0"},
)  # fmt: skip
USER = Network(
    "b" * 64, "web", "bridge", "2026-01-02T00:00:00Z", subnet="10.6.0.0/24", gateway="10.6.0.1",
    user_subnet=True, labels={"team": "a"},
)  # fmt: skip
AUTO = Network(
    "c" * 64, "auto", "bridge", "2026-01-03T00:00:00Z", subnet="172.18.0.0/16", gateway="172.18.0.1"
)
HOST = Network("d" * 64, "host", "host", "2026-01-01T00:00:00Z")


def container(**config: Any) -> Container:
    hc = config.pop("host_config", HostConfig())
    return Container(
        cid="e" * 64, name="web1", created="2026-01-01T00:00:00Z", image_id="sha256:" + "f" * 64,
        config=ContainerConfig(**config), host_config=hc, networking=NetworkingConfig(), path="sh", args=[],
        data_dir=Path("/nonexistent"), state=ContainerState(),
    )  # fmt: skip


# --- network objects ------------------------------------------------------------------------------


def test_network_json_roundtrip_and_wire() -> None:
    net = USER
    assert Network.from_json(net.to_json()) == net
    wire = net.wire({})
    assert wire["IPAM"] == {
        "Driver": "default",
        "Options": None,
        "Config": [{"Subnet": "10.6.0.0/24", "Gateway": "10.6.0.1"}],
    }
    assert (
        wire["Scope"] == "local" and wire["ConfigFrom"] == {"Network": ""} and wire["Labels"] == {"team": "a"}
    )
    assert net.bridge == "br-" + "b" * 12 and DEFAULT.bridge == "pydock0"
    ranged = Network(
        "9" * 64, "r", "bridge", "x", subnet="10.7.0.0/24", gateway="10.7.0.1", ip_range="10.7.0.128/25"
    )
    assert ranged.ipam_wire()["Config"] == [
        {"Subnet": "10.7.0.0/24", "IPRange": "10.7.0.128/25", "Gateway": "10.7.0.1"}
    ]
    assert (
        HOST.wire({})["IPAM"]["Config"] == []
        and HOST.predefined
        and DEFAULT.predefined
        and not USER.predefined
    )
    assert not DEFAULT.has_dns and USER.has_dns and not HOST.has_dns
    assert veth_name("0123456789" + "0" * 54) == "veth0123456"


def test_bridge_options() -> None:
    net = Network("1" * 64, "o", "bridge", "x", subnet="10.8.0.0/24", gateway="10.8.0.1", options={
        "com.docker.network.bridge.enable_icc": "false", "com.docker.network.driver.mtu": "1400",
        "com.docker.network.bridge.enable_ip_masquerade": "0"})  # fmt: skip
    assert (net.icc, net.masquerade, net.mtu) == (False, False, 1400)
    assert (USER.icc, USER.masquerade, USER.mtu) == (True, True, 1500)
    assert net.interface == ipaddress.IPv4Interface("10.8.0.1/24")


# --- NetworkSettings --------------------------------------------------------------------------------


def test_settings_of_a_running_container_on_the_default_bridge_and_a_user_network() -> None:
    c = container(ExposedPorts={"80/tcp": {}, "90/udp": {}})
    sb = Sandbox("s" * 64, c, "/run/pydock/netns/ssssssssssss")
    ip1, ip2 = ipaddress.IPv4Interface("10.5.0.2/24"), ipaddress.IPv4Interface("10.6.0.9/24")
    sb.endpoints[DEFAULT.nid] = Endpoint(
        "1" * 64, DEFAULT, EndpointSettings(), ip1, "02:42:0a:05:00:02", "eth0"
    )
    sb.endpoints[USER.nid] = Endpoint(
        "2" * 64, USER, EndpointSettings(Aliases=["api"]), ip2, "02:42:0a:06:00:09"
    )
    attached = {"bridge": (DEFAULT, EndpointSettings()), "web": (USER, EndpointSettings(Aliases=["api"]))}
    ports = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    ns = network_settings(c, sandbox=sb, attached=attached, ports=ports)
    assert ns["IPAddress"] == "10.5.0.2" and ns["Gateway"] == "10.5.0.1" and ns["IPPrefixLen"] == 24
    assert ns["MacAddress"] == "02:42:0a:05:00:02" and ns["EndpointID"] == "1" * 64
    assert ns["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "90/udp": None}
    assert ns["SandboxID"] == "s" * 64 and ns["SandboxKey"] == "/run/pydock/netns/ssssssssssss"
    web = ns["Networks"]["web"]
    assert (
        web["IPAddress"] == "10.6.0.9"
        and web["NetworkID"] == USER.nid
        and web["Aliases"] == ["api", "e" * 12]
    )
    assert ns["Networks"]["bridge"]["Aliases"] is None  # no short-ID alias on the default bridge
    assert published_requests(ns)[0].host_port_start == 8080


def test_settings_of_a_created_container_and_on_a_user_network_only() -> None:
    c = container()
    ns = network_settings(c, sandbox=None, attached={"web": (USER, EndpointSettings())})
    assert ns["IPAddress"] == "" and ns["Ports"] == {} and ns["SandboxKey"] == ""
    assert ns["Networks"]["web"]["NetworkID"] == USER.nid and ns["Networks"]["web"]["EndpointID"] == ""
    sb = Sandbox("s" * 64, c, "/x")
    sb.endpoints[USER.nid] = Endpoint(
        "3" * 64, USER, EndpointSettings(), ipaddress.IPv4Interface("10.6.0.2/24")
    )
    ns = network_settings(c, sandbox=sb, attached={"web": (USER, EndpointSettings())})
    assert ns["IPAddress"] == "" and ns["Networks"]["web"]["IPAddress"] == "10.6.0.2"  # as dockerd


def test_dns_names() -> None:
    c = container()
    ep = Endpoint("1" * 64, USER, EndpointSettings(Aliases=["api", "web1"]))
    assert dns_names(c, ep) == ["web1", "e" * 12, "web1.web", "api"]


def test_plan_extra_hosts_resolves_host_gateway() -> None:
    plan = NetworkPlan(netns=None, host_gateway="10.5.0.1")
    assert plan.extra_hosts(["db:10.0.0.3", "gw:host-gateway"]) == ["db:10.0.0.3", "gw:10.5.0.1"]
    assert NetworkPlan(netns=None).extra_hosts(["gw:host-gateway"]) == []


# --- checks ---------------------------------------------------------------------------------------


def test_endpoint_checks_use_dockerds_words() -> None:
    with_ip = EndpointSettings(IPAMConfig=EndpointIPAMConfig(IPv4Address="10.6.0.50"))
    check_endpoint_config(USER, with_ip)
    with pytest.raises(UserIpNotAllowed, match="supported on user defined networks only"):
        check_endpoint_config(DEFAULT, with_ip)
    with pytest.raises(
        UserIpNotAllowed, match="only when connecting to networks with user configured subnets"
    ):
        check_endpoint_config(AUTO, EndpointSettings(IPAMConfig=EndpointIPAMConfig(IPv4Address="172.18.0.5")))
    with pytest.raises(InvalidParameter, match="no configured subnet"):
        check_endpoint_config(USER, EndpointSettings(IPAMConfig=EndpointIPAMConfig(IPv4Address="10.9.0.5")))
    with pytest.raises(InvalidParameter, match="network-scoped alias"):
        check_endpoint_config(DEFAULT, EndpointSettings(Aliases=["x"]))


def test_port_requests_from_bindings_and_publish_all() -> None:
    hc = HostConfig(PortBindings={"80/tcp": [PortBinding(HostIp="127.0.0.1", HostPort="8080")],
                                  "53/udp": [PortBinding(HostPort="")]}, PublishAllPorts=True)  # fmt: skip
    c = container(ExposedPorts={"80/tcp": {}, "53/udp": {}, "443/tcp": {}}, host_config=hc)
    got = sorted((r.key, r.host_ip, r.host_port_start) for r in port_requests(c))
    assert got == [("443/tcp", "0.0.0.0", 0), ("53/udp", "0.0.0.0", 0), ("80/tcp", "127.0.0.1", 8080)]


def test_network_filters() -> None:
    nets = [(DEFAULT, 1), (USER, 0), (AUTO, 2), (HOST, 0)]

    def names(filters: dict[str, list[str]]) -> list[str]:
        accept = network_filter(filters)
        return [n.name for n, active in nets if accept(n, active)]

    assert names({"name": ["^w"]}) == ["web"]
    assert names({"name": ["b"]}) == ["bridge", "web"]  # a regular expression, as moby
    assert names({"id": ["bbbb"]}) == ["web"]
    assert names({"label": ["team=a"]}) == ["web"] and names({"label": ["team=b"]}) == []
    assert names({"type": ["builtin"]}) == ["bridge", "host"]
    assert names({"type": ["custom"]}) == ["web", "auto"]
    assert names({"dangling": ["true"]}) == ["web"]
    assert names({"dangling": ["false"]}) == ["bridge", "auto", "host"]
    assert names({"driver": ["host"]}) == ["host"] and names({"scope": ["swarm"]}) == []
    for bad in ({"nope": ["x"]}, {"type": ["other"]}, {"dangling": ["maybe"]}):
        with pytest.raises(InvalidParameter):
            network_filter(bad)


def test_prune_filter() -> None:
    now = 1767312000.0  # 2026-01-02T00:00:00Z
    assert prune_filter({"until": ["1h"]}, now)(DEFAULT) and not prune_filter({"until": ["1h"]}, now)(AUTO)
    assert not prune_filter({"label": ["team"]})(DEFAULT) and prune_filter({"label": ["team=a"]})(USER)
    assert not prune_filter({"label!": ["team"]})(USER)
    with pytest.raises(InvalidParameter):
        prune_filter({"dangling": ["true"]})


# --- iptables: one process per change after the first sync ---------------------------------------


async def test_iptables_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    fail_restore = False

    async def fake_run(argv: list[str], stdin: bytes | None = None, *, timeout_s: float = 30.0) -> bytes:
        calls.append(argv[0])
        if argv[0].endswith("-restore") and fail_restore:
            fail_restore_once()
            raise iptables_mod.IptablesError("restore failed")
        return b""

    def fail_restore_once() -> None:
        nonlocal fail_restore
        fail_restore = False

    monkeypatch.setattr(iptables_mod, "_run", fake_run)
    mgr = IptablesManager("PDUNIT")
    mgr.set_network(NetworkRules("br0", ipaddress.IPv4Network("10.5.0.0/24")))
    await mgr.sync()
    assert calls == ["iptables-save", "iptables-save", "iptables-restore"]  # the first one verifies
    calls.clear()
    rule = PortRule("br0", Proto.TCP, 8080, ipaddress.IPv4Address("10.5.0.2"), 80)
    await mgr.add_ports("c1", [rule])
    assert calls == ["iptables-restore"]
    calls.clear()
    await mgr.sync()
    assert calls == []  # nothing changed
    fail_restore = True
    await mgr.remove_ports("c1")
    assert calls == ["iptables-restore", "iptables-save", "iptables-save", "iptables-restore"]
    calls.clear()
    await mgr.sync(verify=True)
    assert calls == ["iptables-save", "iptables-save", "iptables-restore"]


# --- the networks API, with no host networking ----------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    engine = Engine(
        DaemonConfig(data_root=tmp_path / "data", exec_root=tmp_path / "exec", **NO_HOST_NETWORKING)
    )
    await engine.start()
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://docker") as c:
        yield c
    await engine.shutdown()


async def test_networks_api_without_host_networking(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1.41/networks")
    assert r.status_code == 200 and sorted(n["Name"] for n in r.json()) == ["host", "none"]
    host = next(n for n in r.json() if n["Name"] == "host")
    assert host["Driver"] == "host" and len(host["Id"]) == 64
    r = await client.get(f"/v1.41/networks/{host['Id'][:8]}")
    assert r.status_code == 200 and r.json()["Name"] == "host"
    r = await client.get("/v1.41/networks/nope")
    assert r.status_code == 404 and r.json() == {"message": "network nope not found"}
    r = await client.get("/v1.41/networks", params={"filters": '{"driver":{"null":true}}'})
    assert [n["Name"] for n in r.json()] == ["none"]
    r = await client.post("/v1.41/networks/create", json={"Name": "host"})
    assert (
        r.status_code == 403 and r.json()["message"] == "host is a pre-defined network and cannot be created"
    )
    r = await client.post("/v1.41/networks/create", json={"Name": "x", "Driver": "overlay"})
    assert r.status_code == 404 and r.json()["message"] == 'plugin "overlay" not found'
    r = await client.post("/v1.41/networks/create", json={"Name": "bad name"})
    assert r.status_code == 400
    r = await client.delete("/v1.41/networks/none")
    assert (
        r.status_code == 403 and r.json()["message"] == "none is a pre-defined network and cannot be removed"
    )
    r = await client.post("/v1.41/networks/prune")
    assert r.status_code == 200 and r.json() == {"NetworksDeleted": None}
    r = await client.post("/v1.41/networks/host/connect", json={"Container": "nope"})
    assert r.status_code == 404 and r.json()["message"] == "No such container: nope"


def test_ifconfig_structures() -> None:
    import ctypes
    import struct

    from netproxy import ifconfig

    req = ifconfig._ifreq_addr("eth0", ipaddress.IPv4Address("10.5.0.2"))
    assert len(req) == ifconfig.IFREQ_SIZE
    assert req[:16] == b"eth0".ljust(16, b"\0")
    assert struct.unpack_from("=H", req, 16)[0] == 2 and req[20:24] == bytes([10, 5, 0, 2])
    assert ctypes.sizeof(ifconfig._Rtentry) == (120 if ctypes.sizeof(ctypes.c_void_p) == 8 else 68)
    with pytest.raises(ValueError):
        ifconfig._name("x" * 16)
