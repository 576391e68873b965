from __future__ import annotations

import socket

import pytest

from netproxy.iptables import Proto
from netproxy.ports import (
    PortAllocator,
    PortRequest,
    parse_port_bindings,
    parse_publish,
    port_map,
)
from runtime.errors import (
    ExternalConnectivityFailed,
    HostPortBindFailed,
    InvalidParameter,
    PortAlreadyAllocated,
)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_block(n: int) -> int:
    """A base port whose next n ports are free for TCP and UDP on 127.0.0.1 right now."""
    for _ in range(50):
        base = free_port()
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free block")


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", [PortRequest(80)]),
        ("8080:80", [PortRequest(80, Proto.TCP, "0.0.0.0", 8080, 8080)]),
        ("127.0.0.1:8080:80/udp", [PortRequest(80, Proto.UDP, "127.0.0.1", 8080, 8080)]),
        ("127.0.0.1::80", [PortRequest(80, Proto.TCP, "127.0.0.1", 0, 0)]),
        ("8000-8010:80", [PortRequest(80, Proto.TCP, "0.0.0.0", 8000, 8010)]),
        (
            "8000-8002:80-82",
            [PortRequest(80 + i, Proto.TCP, "0.0.0.0", 8000 + i, 8000 + i) for i in range(3)],
        ),
        ("80-81", [PortRequest(80), PortRequest(81)]),
    ],
)
def test_parse_publish(spec: str, expected: list[PortRequest]) -> None:
    assert parse_publish(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "x:80", "8000-8001:80-82", "80/sctp", "1.2.3:80:80", "70000:80", "0:80"]
)
def test_parse_publish_invalid(spec: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_publish(spec)


def test_parse_port_bindings_as_the_cli_sends_them() -> None:
    bindings = {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
        "81/tcp": [{"HostIp": "", "HostPort": "9000-9010"}],
        "90/tcp": None,
    }
    got = parse_port_bindings(bindings, ["80/tcp", "443/tcp", "90/tcp"], publish_all=True)
    assert got == [
        PortRequest(53, Proto.UDP, "127.0.0.1", 0, 0),
        PortRequest(80, Proto.TCP, "0.0.0.0", 8080, 8080),
        PortRequest(81, Proto.TCP, "0.0.0.0", 9000, 9010),
        PortRequest(443),
        PortRequest(90),
    ]
    assert parse_port_bindings(None, ["80/tcp"]) == []


# --- reservation --------------------------------------------------------------------------------


def test_reserve_fixed_and_conflict_in_daemon() -> None:
    alloc = PortAllocator()
    port = free_port()
    got = alloc.reserve([PortRequest(80, Proto.TCP, "127.0.0.1", port, port)])
    try:
        assert got[0].host_port == port
        assert got[0].sock.getsockname() == ("127.0.0.1", port)
        with pytest.raises(PortAlreadyAllocated) as exc:
            alloc.reserve([PortRequest(81, Proto.TCP, "0.0.0.0", port, port)])
        assert str(exc.value) == f"Bind for 0.0.0.0:{port} failed: port is already allocated"
        assert port_map(got) == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    finally:
        alloc.release(got)
    alloc.release(got)  # twice is harmless
    assert alloc.held() == []


def test_port_taken_by_another_program_wording() -> None:
    alloc = PortAllocator()
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(HostPortBindFailed) as exc:
            alloc.reserve([PortRequest(80, Proto.TCP, "127.0.0.1", port, port)], container_ip="10.9.0.2")
        assert str(exc.value) == (
            f"failed to bind host port for 127.0.0.1:{port}:10.9.0.2:80/tcp: address already in use"
        )
        with pytest.raises(ExternalConnectivityFailed) as wrapped:
            alloc.reserve(
                [PortRequest(80, Proto.TCP, "127.0.0.1", port, port)],
                container_ip="10.9.0.2",
                endpoint="web",
                endpoint_id="abc",
            )
        assert str(wrapped.value).startswith(
            "failed to set up container networking: driver failed programming external "
            "connectivity on endpoint web (abc): failed to bind host port for"
        )
    assert alloc.held() == []


def test_nothing_half_made_on_failure() -> None:
    alloc = PortAllocator()
    base = free_block(3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", base + 2))
        with pytest.raises(HostPortBindFailed):
            alloc.reserve(
                [
                    PortRequest(80, Proto.UDP, "127.0.0.1", base, base),
                    PortRequest(81, Proto.UDP, "127.0.0.1", base + 1, base + 1),
                    PortRequest(82, Proto.UDP, "127.0.0.1", base + 2, base + 2),
                ]
            )
    assert alloc.held() == []
    # the first two ports were released: bindable again
    for p in (base, base + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", p))


def test_host_range_takes_first_free() -> None:
    alloc = PortAllocator()
    base = free_block(3)
    with socket.socket() as other:
        other.bind(("127.0.0.1", base))
        other.listen()
        got = alloc.reserve([PortRequest(80, Proto.TCP, "127.0.0.1", base, base + 2)])
        got2 = alloc.reserve([PortRequest(80, Proto.TCP, "127.0.0.1", base, base + 2)])
    try:
        assert [got[0].host_port, got2[0].host_port] == [base + 1, base + 2]
    finally:
        alloc.release(got + got2)


def test_ephemeral_ports_are_sequential_and_skip_taken() -> None:
    base = free_block(4)
    alloc = PortAllocator(ephemeral=(base, base + 3))
    with socket.socket() as other:
        other.bind(("127.0.0.1", base + 1))
        other.listen()
        got = alloc.reserve(
            [PortRequest(80, Proto.TCP, "127.0.0.1"), PortRequest(81, Proto.TCP, "127.0.0.1")]
        )
    try:
        assert [p.host_port for p in got] == [base, base + 2]
        udp = alloc.reserve([PortRequest(53, Proto.UDP, "127.0.0.1")])
        assert udp[0].host_port == base  # tcp and udp are separate spaces
        alloc.release(udp)
    finally:
        alloc.release(got)


def test_unassignable_address() -> None:
    alloc = PortAllocator()
    with pytest.raises(HostPortBindFailed) as exc:
        alloc.reserve([PortRequest(80, Proto.TCP, "198.51.100.7", 8080, 8080)])
    assert "cannot assign requested address" in str(exc.value)
