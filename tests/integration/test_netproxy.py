"""netproxy against the real kernel: netns, veths, a bridge, iptables, the proxy, the DNS server.

Everything is made with per-run unique names (bridge `pdt<hex>`, netns `pydock-test-<hex>-N`,
chain prefix `PDT<HEX>`, a 10.x subnet not routed on the host) and removed even on failure;
the last test checks that nothing of this run is left. Traffic goes only to 127.0.0.1 and to
addresses inside the namespaces made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netproxy import bridge
from netproxy.dns import DnsServer
from netproxy.ipam import PoolSpec, host_routes, pick_subnet
from netproxy.iptables import Chains, IptablesManager, NetworkRules, PortRule, Proto, parse_save
from netproxy.netns import create_named_netns, remove_named_netns
from netproxy.ports import PortAllocator, PortRequest
from netproxy.proxy import ProxyMode, TcpProxy, UdpProxy

TAG = secrets.token_hex(3)
OWNER = f"pydock-test:{TAG}"
PREFIX = f"PDT{TAG.upper()}"
NETNS_PREFIX = f"pydock-test-{TAG}-"

pytestmark = pytest.mark.timeout(300)


# --- fixtures -----------------------------------------------------------------------------------


@dataclass
class Net:
    br: str
    subnet: ipaddress.IPv4Network
    record: bridge.BridgeRecord

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    def ip(self, n: int) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.subnet.network_address + n}/{self.subnet.prefixlen}")


@dataclass
class Lab:
    """Creates bridges, namespaces, endpoints and processes; `close()` removes all of them."""

    nets: list[Net] = field(default_factory=list)
    netns: list[Path] = field(default_factory=list)
    veths: list[str] = field(default_factory=list)
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    taken: list[ipaddress.IPv4Network] = field(default_factory=list)
    plain_links: list[str] = field(default_factory=list)

    async def subnet(self) -> ipaddress.IPv4Network:
        routes = await host_routes()
        subnet = pick_subnet([PoolSpec(ipaddress.IPv4Network("10.232.0.0/16"), 24)], [*routes, *self.taken])
        self.taken.append(subnet)
        return subnet

    async def network(self) -> Net:
        subnet = await self.subnet()
        name = f"pdt{TAG}{len(self.nets)}"
        gw = ipaddress.IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")
        record = await bridge.ensure_bridge(name, gw, owner=OWNER)
        net = Net(name, subnet, record)
        self.nets.append(net)
        return net

    async def namespace(self, net: Net | None = None, host: int = 2) -> tuple[str, str]:
        """A named netns, plugged into `net` at address `.host`; returns (name, ip)."""
        name = f"{NETNS_PREFIX}{len(self.netns)}"
        path = await create_named_netns(name)
        self.netns.append(path)
        ip = ""
        if net is not None:
            addr = net.ip(host)
            ep = await bridge.attach(bridge.Endpoint(str(path), net.br, addr, net.gateway), owner=OWNER)
            self.veths.append(ep.host_ifname)
            ip = str(addr.ip)
        return name, ip

    async def outside(self) -> tuple[str, str]:
        """A namespace behind a plain veth to the host (no bridge): "another host" for DNAT.

        Returns (netns name, the host's address as seen from there).
        """
        subnet = await self.subnet()
        name = f"{NETNS_PREFIX}{len(self.netns)}"
        path = await create_named_netns(name)
        self.netns.append(path)
        host_if, peer_if = f"pdo{TAG}", f"pdp{TAG}"
        host_ip, peer_ip = subnet.network_address + 1, subnet.network_address + 2
        await run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        self.plain_links.append(host_if)
        await run("ip", "link", "set", peer_if, "netns", name)
        await run("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        await run("ip", "link", "set", host_if, "up")
        await run("ip", "netns", "exec", name, "ip", "addr", "add", f"{peer_ip}/24", "dev", peer_if)
        await run("ip", "netns", "exec", name, "ip", "link", "set", peer_if, "up")
        await run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        return name, str(host_ip)

    async def spawn(self, netns: str, code: str, *args: str) -> asyncio.subprocess.Process:
        """A Python program inside `netns`; waits for its first line ("ready")."""
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns, sys.executable, "-c", textwrap.dedent(code), *args,
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = await proc.stdout.readline()
        assert line.strip() == b"ready", line
        return proc

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for veth in self.veths:
            await bridge.detach(veth, owner=OWNER)
        for link in self.plain_links:
            await run("ip", "link", "del", link, check=False)
        for path in self.netns:
            await remove_named_netns(path)
        for net in self.nets:
            await bridge.delete_bridge(net.record)


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        await asyncio.shield(lab.close())


async def run(*argv: str, check: bool = True, input: bytes | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate(input)
    text = out.decode(errors="replace")
    assert proc.returncode is not None
    if check:
        assert proc.returncode == 0, f"{argv}: {text}"
    return proc.returncode, text


async def eventually(cond: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await cond():
            await asyncio.sleep(0.05)


async def tcp_exchange(host: str, port: int, payload: bytes, *, timeout_s: float = 10.0) -> bytes:
    """Send payload, half-close, read until EOF."""
    async with asyncio.timeout(timeout_s):
        r, w = await asyncio.open_connection(host, port)
        w.write(payload)
        await w.drain()
        w.write_eof()
        data = await r.read()
        w.close()
        return data


# Reads until EOF, then answers "got <n>" and closes: proves the half-close got through.
EOF_SERVER = """
    import socket, sys, threading
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
    print("ready", flush=True)
    def serve(c):
        n = 0
        while True:
            b = c.recv(65536)
            if not b:
                break
            n += len(b)
        c.sendall(b"got %d" % n); c.close()
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

UDP_ECHO = """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
    print("ready", flush=True)
    while True:
        b, a = s.recvfrom(65535)
        s.sendto(b"echo:" + b, a)
"""

# Sends a greeting and resets the connection (SO_LINGER 0) as soon as one arrives.
RST_SERVER = """
    import socket, struct, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.recv(100)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close()
"""


# --- bridge and veths ---------------------------------------------------------------------------


async def test_two_netns_on_the_bridge_reach_each_other(lab: Lab) -> None:
    net = await lab.network()
    a, ip_a = await lab.namespace(net, 2)
    b, ip_b = await lab.namespace(net, 3)
    await run("ip", "netns", "exec", a, "busybox", "ping", "-c1", "-W2", ip_b)
    await run("ip", "netns", "exec", b, "busybox", "ping", "-c1", "-W2", ip_a)
    _, out = await run("ip", "netns", "exec", a, "ip", "-o", "addr", "show", "eth0")
    assert f"inet {ip_a}/24" in out
    _, out = await run("ip", "netns", "exec", a, "ip", "link", "show", "eth0")
    assert bridge.docker_mac(ipaddress.IPv4Address(ip_a)) in out
    _, out = await run("ip", "netns", "exec", a, "ip", "route")
    assert f"default via {net.gateway} dev eth0" in out
    # idempotent bridge setup; a foreign owner cannot delete it
    again = await bridge.ensure_bridge(net.br, net.ip(1), owner=OWNER, previous=net.record)
    assert again.created
    assert not await bridge.delete_bridge(bridge.BridgeRecord(net.br, str(net.ip(1)), True, "someone-else"))
    assert sorted(await bridge.links_owned_by(OWNER)) == sorted([net.br, *lab.veths])


async def test_attach_failure_leaves_nothing(lab: Lab) -> None:
    net = await lab.network()
    ns, _ = await lab.namespace(net, 2)
    before = await bridge.links_owned_by(OWNER)
    with pytest.raises(Exception, match="veth"):  # eth0 exists in there already
        await bridge.attach(bridge.Endpoint(f"/run/netns/{ns}", net.br, net.ip(9), net.gateway), owner=OWNER)
    assert await bridge.links_owned_by(OWNER) == before


# --- iptables -----------------------------------------------------------------------------------


async def foreign_rules() -> list[str]:
    """Every line of iptables-save that is not about this run's chains (counters dropped)."""
    _, out = await run("iptables-save")
    chains = Chains(PREFIX)
    ours = set(chains.owned("filter")) | set(chains.owned("nat"))
    keep = []
    for line in out.splitlines():
        if line.startswith("#"):
            continue
        words = set(line.replace(":", " ").split())
        if words & ours:
            continue
        keep.append(line.split(" [")[0] if line.startswith(":") else line)
    return keep


@pytest.fixture
async def fake_dockerd() -> AsyncIterator[None]:
    """DOCKER chains and rules as a real dockerd leaves them (made only when absent)."""
    _, out = await run("iptables-save")
    if ":DOCKER " in out or ":DOCKER-USER " in out:
        yield None  # a real (or another fake) dockerd's chains: use them as they are
        return
    rules = textwrap.dedent(
        """\
        *filter
        :DOCKER - [0:0]
        :DOCKER-USER - [0:0]
        -A FORWARD -j DOCKER-USER
        -A FORWARD -o docker0 -j DOCKER
        -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
        -A DOCKER-USER -j RETURN
        COMMIT
        *nat
        :DOCKER - [0:0]
        -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
        -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
        -A DOCKER -i docker0 -j RETURN
        COMMIT
        """
    )
    await run("iptables-restore", "--noflush", "--wait", input=rules.encode())
    try:
        yield None
    finally:
        undo = textwrap.dedent(
            """\
            *filter
            -D FORWARD -j DOCKER-USER
            -D FORWARD -o docker0 -j DOCKER
            -F DOCKER
            -F DOCKER-USER
            -X DOCKER
            -X DOCKER-USER
            COMMIT
            *nat
            -D PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
            -D POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
            -F DOCKER
            -X DOCKER
            COMMIT
            """
        )
        await run("iptables-restore", "--noflush", "--wait", input=undo.encode())


@pytest.fixture
async def iptables() -> AsyncIterator[IptablesManager]:
    mgr = IptablesManager(PREFIX)
    try:
        yield mgr
    finally:
        await asyncio.shield(mgr.teardown())


async def test_rules_present_work_and_are_removed(
    lab: Lab, iptables: IptablesManager, fake_dockerd: None, request: pytest.FixtureRequest
) -> None:
    before = await foreign_rules()
    if await bridge.enable_ip_forward():  # forwarding is needed here; put the host back after
        request.addfinalizer(lambda: Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n"))
    net1 = await lab.network()
    net2 = await lab.network()
    srv, srv_ip = await lab.namespace(net1, 2)
    other, _ = await lab.namespace(net2, 2)
    outside, host_addr = await lab.outside()
    await lab.spawn(srv, EOF_SERVER, "8000")

    await iptables.add_network(NetworkRules(net1.br, net1.subnet))
    await iptables.add_network(NetworkRules(net2.br, net2.subnet))
    alloc = PortAllocator()
    (hp,) = alloc.reserve([PortRequest(8000, Proto.TCP, "0.0.0.0")], listen=False)
    try:
        rule = PortRule(net1.br, Proto.TCP, hp.host_port, ipaddress.IPv4Address(srv_ip), 8000)
        await iptables.add_ports("ep1", [rule])
        await iptables.sync()  # a second sync changes nothing and does not fail

        state = await iptables.read()
        nat = state["nat"].rules_of(PREFIX) + state["nat"].rules_of(f"{PREFIX}-POSTROUTING")
        assert f"-A {PREFIX}-POSTROUTING -s {net1.subnet} ! -o {net1.br} -j MASQUERADE" in nat
        assert (
            f"-A {PREFIX} ! -i {net1.br} -p tcp -m tcp --dport {hp.host_port} "
            f"-j DNAT --to-destination {srv_ip}:8000"
        ) in nat
        assert f"-A FORWARD -j {PREFIX}-FORWARD" in state["filter"].rules

        # DNAT for "another host": in through PREROUTING, forwarded by the port's ACCEPT rule
        _, out = await run(
            "ip", "netns", "exec", outside, sys.executable, "-c",
            "import socket,sys; c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5);"
            "c.sendall(b'abc'); c.shutdown(socket.SHUT_WR); print(c.recv(100).decode())",
            host_addr, str(hp.host_port),
        )  # fmt: skip
        assert out.strip() == "got 3"
        # ... and from the host to its own (non-loopback) address, through nat OUTPUT
        assert await tcp_exchange(str(net1.gateway), hp.host_port, b"hello") == b"got 5"
        # isolation: the other network cannot reach the server directly
        code, _ = await run(
            "ip", "netns", "exec", other, sys.executable, "-c",
            "import socket,sys; socket.create_connection((sys.argv[1], 8000), timeout=2)",
            srv_ip, check=False,
        )  # fmt: skip
        assert code != 0

        # the port goes away with its owner
        await iptables.remove_ports("ep1")
        state = await iptables.read()
        assert not any(str(hp.host_port) in r for r in state["nat"].rules_of(PREFIX))
    finally:
        alloc.release([hp])
    await iptables.teardown()
    state = await iptables.read()
    assert not set(Chains(PREFIX).owned("filter")) & state["filter"].chains
    assert not set(Chains(PREFIX).owned("nat")) & state["nat"].chains
    assert await foreign_rules() == before


async def test_no_userland_proxy_dnat_on_loopback(lab: Lab, fake_dockerd: None) -> None:
    mgr = IptablesManager(PREFIX, userland_proxy=False)
    before = await foreign_rules()
    try:
        net = await lab.network()
        srv, srv_ip = await lab.namespace(net, 2)
        await lab.spawn(srv, EOF_SERVER, "8000")
        await bridge.set_route_localnet(net.br)
        await mgr.add_network(NetworkRules(net.br, net.subnet))
        alloc = PortAllocator()
        (hp,) = alloc.reserve([PortRequest(8000, Proto.TCP, "127.0.0.1")], listen=False)
        try:
            await mgr.add_ports(
                "ep", [PortRule(net.br, Proto.TCP, hp.host_port, ipaddress.IPv4Address(srv_ip), 8000,
                                ipaddress.IPv4Address("127.0.0.1"))]
            )  # fmt: skip
            assert await tcp_exchange("127.0.0.1", hp.host_port, b"x" * 1000) == b"got 1000"
            state = await mgr.read()
            assert f"-A OUTPUT -m addrtype --dst-type LOCAL -j {PREFIX}" in state["nat"].rules
        finally:
            alloc.release([hp])
    finally:
        await asyncio.shield(mgr.teardown())
    assert await foreign_rules() == before


async def test_stale_rules_of_an_earlier_run_are_replaced(fake_dockerd: None) -> None:
    before = await foreign_rules()
    old = IptablesManager(PREFIX)
    new = IptablesManager(PREFIX, userland_proxy=False)
    try:
        await old.add_network(NetworkRules("pdtstale0", ipaddress.IPv4Network("10.233.250.0/24")))
        await old.add_ports(
            "gone", [PortRule("pdtstale0", Proto.UDP, 5353, ipaddress.IPv4Address("10.233.250.2"), 53)]
        )
        await new.sync()  # "daemon restart": nothing registered yet
        state = await new.read()
        text = "\n".join(state["nat"].rules + state["filter"].rules)
        assert "pdtstale0" not in text and "5353" not in text
        # exactly one OUTPUT jump, the new mode's
        jumps = [r for r in state["nat"].rules if r.startswith("-A OUTPUT") and r.endswith(f"-j {PREFIX}")]
        assert jumps == [f"-A OUTPUT -m addrtype --dst-type LOCAL -j {PREFIX}"]
    finally:
        await asyncio.shield(new.teardown())
    assert await foreign_rules() == before


# --- the userland proxy -------------------------------------------------------------------------


async def test_proxy_moves_256mib_through_loopback(lab: Lab) -> None:
    from bench.bench_proxy import SERVER, client

    net = await lab.network()
    srv, srv_ip = await lab.namespace(net, 2)
    await lab.spawn(srv, SERVER, "5201")
    alloc = PortAllocator()
    results = {}
    for mode in (ProxyMode.SPLICE, ProxyMode.RELAY):
        (hp,) = alloc.reserve([PortRequest(5201, Proto.TCP, "127.0.0.1")])
        proxy = TcpProxy(hp.sock, (srv_ip, 5201), mode=mode)
        proxy.start()
        try:
            up = await client("127.0.0.1", hp.host_port, "upload", 256 << 20)
            down = await client("127.0.0.1", hp.host_port, "download", 256 << 20)
        finally:
            await proxy.close()
            alloc.release([hp])
        assert up["ok"] and down["ok"], (up, down)
        results[str(mode)] = {
            "upload_mib_s": round(256 / up["seconds"]),
            "download_mib_s": round(256 / down["seconds"]),
        }
    direct = await client(srv_ip, 5201, "upload", 256 << 20)
    assert direct["ok"]
    results["direct"] = {"upload_mib_s": round(256 / direct["seconds"])}
    print("proxy throughput (MiB/s):", json.dumps(results))


async def test_half_close_reset_refused_and_close(lab: Lab) -> None:
    net = await lab.network()
    srv, srv_ip = await lab.namespace(net, 2)
    await lab.spawn(srv, EOF_SERVER, "8000")
    await lab.spawn(srv, RST_SERVER, "8001")
    alloc = PortAllocator()
    hps = alloc.reserve([PortRequest(p, Proto.TCP, "127.0.0.1") for p in (8000, 8001, 8002)])
    proxies = [TcpProxy(hp.sock, (srv_ip, hp.container_port)) for hp in hps]
    for p in proxies:
        p.start()
    try:
        # half-close: the server only answers after our EOF arrived; its answer still gets back
        assert await tcp_exchange("127.0.0.1", hps[0].host_port, b"x" * 100_000) == b"got 100000"
        # a reset by the container reaches the client as a reset
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(10):
                r, w = await asyncio.open_connection("127.0.0.1", hps[1].host_port)
                w.write(b"hi")
                await w.drain()
                while await r.read(100):
                    pass
        # nobody listening in the container: the client's connection ends (a reset, as unread
        # data was pending when the proxy closed it), and the proxy counts the failure
        with pytest.raises(ConnectionResetError):
            await tcp_exchange("127.0.0.1", hps[2].host_port, b"x")
        assert proxies[2].stats.failed_connects == 1
        # closing the proxy ends a connection in progress
        r, w = await asyncio.open_connection("127.0.0.1", hps[0].host_port)
        w.write(b"pending")
        await w.drain()

        async def one_active() -> bool:
            return proxies[0].stats.active == 1

        await eventually(one_active)
        await proxies[0].close()
        # closed before "pending" was read, the kernel answers with a reset instead of EOF
        async with asyncio.timeout(10):
            with contextlib.suppress(ConnectionResetError):
                assert await r.read() == b""
        w.close()
        assert proxies[0].stats.active == 0
    finally:
        for p in proxies:
            await p.close()
        alloc.release(hps)


async def test_udp_proxy_answers_per_client_flows(lab: Lab) -> None:
    net = await lab.network()
    srv, srv_ip = await lab.namespace(net, 2)
    await lab.spawn(srv, UDP_ECHO, "5300")
    alloc = PortAllocator()
    (hp,) = alloc.reserve([PortRequest(5300, Proto.UDP, "127.0.0.1")])
    proxy = UdpProxy(hp.sock, (srv_ip, 5300), idle_timeout_s=0.5)
    proxy.start()
    loop = asyncio.get_running_loop()
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for i, c in enumerate(clients):
            c.setblocking(False)
            await loop.sock_connect(c, ("127.0.0.1", hp.host_port))
            for attempt in range(50):  # UDP may drop; retry a bounded number of times
                await loop.sock_sendall(c, b"ping%d" % i)
                try:
                    async with asyncio.timeout(0.2 * (attempt + 1)):
                        assert await loop.sock_recv(c, 100) == b"echo:ping%d" % i
                    break
                except TimeoutError:
                    continue
            else:
                pytest.fail("no UDP answer through the proxy")
        assert proxy.flows == 2

        async def flows_gone() -> bool:
            return proxy.flows == 0

        await eventually(flows_gone, timeout_s=10)  # idle timeout
    finally:
        for c in clients:
            c.close()
        await proxy.close()
        alloc.release([hp])


# --- embedded DNS -------------------------------------------------------------------------------

DNS_CLIENT = """
    import json, socket, struct, sys
    def q(name, qtype, tcp=False):
        qn = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
        msg = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qn + struct.pack("!HH", qtype, 1)
        if tcp:
            s = socket.create_connection(("127.0.0.11", 53), timeout=5)
            s.sendall(struct.pack("!H", len(msg)) + msg)
            n = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
            r = s.recv(n, socket.MSG_WAITALL)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
            s.sendto(msg, ("127.0.0.11", 53)); r = s.recv(4096)
        rcode = r[3] & 15; an = struct.unpack("!H", r[6:8])[0]
        ends = range(len(r), len(r) - 16 * an, -16)
        ips = [socket.inet_ntoa(r[i - 4:i]) for i in ends][::-1] if qtype == 1 else []
        return {"rcode": rcode, "answers": an, "ips": ips}
    print("ready", flush=True)
    print(json.dumps({
        "web": q("web", 1), "WEB": q("WEB", 1), "alias": q("db-alias", 1), "aaaa": q("web", 28),
        "nx": q("nosuch", 1), "tcp": q("web", 1, tcp=True),
    }), flush=True)
"""


async def test_dns_answers_inside_the_netns(lab: Lab) -> None:
    net = await lab.network()
    ns, ip = await lab.namespace(net, 2)
    dns = DnsServer(upstreams=[])
    try:
        await dns.attach("ep1", f"/run/netns/{ns}")
        await dns.attach("ep1", f"/run/netns/{ns}")  # twice is harmless
        dns.set_records("ep1", {"web": [ip], "db-alias": [str(net.ip(3).ip), str(net.ip(4).ip)]})

        _, out = await run("ip", "netns", "exec", ns, "busybox", "nslookup", "web", "127.0.0.11")
        assert f"Address: {ip}" in out
        code, out = await run(
            "ip", "netns", "exec", ns, "busybox", "nslookup", "nosuch", "127.0.0.11", check=False
        )
        assert code != 0 and "NXDOMAIN" in out

        proc = await lab.spawn(ns, DNS_CLIENT)
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            got = json.loads(await proc.stdout.readline())
        assert got["web"] == {"rcode": 0, "answers": 1, "ips": [ip]}
        assert got["WEB"]["ips"] == [ip]
        assert got["alias"]["ips"] == [str(net.ip(3).ip), str(net.ip(4).ip)]
        assert got["aaaa"] == {"rcode": 0, "answers": 0, "ips": []}
        assert got["nx"]["rcode"] == 3
        assert got["tcp"]["ips"] == [ip]

        dns.set_records("ep1", {})  # the endpoint left the network: name gone
        code, _ = await run(
            "ip", "netns", "exec", ns, "busybox", "nslookup", "web", "127.0.0.11", check=False
        )
        assert code != 0
    finally:
        await dns.close()
    assert dns.keys() == []


# --- leaks --------------------------------------------------------------------------------------


async def test_zz_nothing_of_this_run_is_left() -> None:
    assert await bridge.links_owned_by(OWNER) == []
    _, out = await run("ip", "netns", "list")
    assert NETNS_PREFIX not in out
    _, out = await run("iptables-save")
    assert PREFIX not in out
    assert parse_save(out).chains.isdisjoint(Chains(PREFIX).owned("filter"))


def test_everything_works_under_uvloop() -> None:
    """pydockd runs on uvloop, which refuses pyroute2's netlink socket: the netlink thread."""
    import uvloop

    async def scenario() -> None:
        lab = Lab()
        try:
            net = await lab.network()
            srv, srv_ip = await lab.namespace(net, 2)
            await lab.spawn(srv, EOF_SERVER, "8000")
            alloc = PortAllocator()
            (hp,) = alloc.reserve([PortRequest(8000, Proto.TCP, "127.0.0.1")])
            proxy = TcpProxy(hp.sock, (srv_ip, 8000))
            proxy.start()
            try:
                assert await tcp_exchange("127.0.0.1", hp.host_port, b"y" * 5000) == b"got 5000"
            finally:
                await proxy.close()
                alloc.release([hp])
            dns = DnsServer(upstreams=[])
            await dns.attach("k", f"/run/netns/{srv}")
            dns.set_records("k", {"web": [srv_ip]})
            _, out = await run("ip", "netns", "exec", srv, "busybox", "nslookup", "web", "127.0.0.11")
            assert f"Address: {srv_ip}" in out
            await dns.close()
        finally:
            await lab.close()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
