from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from netproxy.ipam import Ipam, PoolSpec, make_pool, pick_subnet
from runtime.errors import (
    AddressInUse,
    AddressOutOfSubnet,
    InvalidParameter,
    NoAvailableAddress,
    NoAvailablePool,
    PoolOverlap,
)


def test_lowest_free_skips_network_gateway_broadcast() -> None:
    pool = make_pool("n", "10.9.0.0/29")
    got = [pool.take(f"e{i}") for i in range(5)]
    assert got == [IPv4Address(f"10.9.0.{i}") for i in range(2, 7)]
    with pytest.raises(NoAvailableAddress):
        pool.take("e6")  # .7 is the broadcast address


def test_release_then_lowest_again() -> None:
    pool = make_pool("n", "10.9.0.0/24")
    a = pool.take("a")
    pool.take("b")
    del pool.allocations[a]
    assert pool.take("c") == a


def test_specific_address() -> None:
    pool = make_pool("n", "10.9.0.0/24", gateway="10.9.0.254")
    assert pool.take("a", IPv4Address("10.9.0.1")) == IPv4Address("10.9.0.1")
    with pytest.raises(AddressInUse) as exc:
        pool.take("b", IPv4Address("10.9.0.1"))
    assert str(exc.value) == "Address already in use"
    with pytest.raises(AddressInUse):
        pool.take("b", IPv4Address("10.9.0.254"))  # the gateway
    with pytest.raises(AddressInUse):
        pool.take("b", IPv4Address("10.9.0.255"))
    with pytest.raises(AddressOutOfSubnet):
        pool.take("b", IPv4Address("10.8.0.5"))


def test_ip_range_limits_dynamic_allocations_only() -> None:
    pool = make_pool("n", "10.9.0.0/24", ip_range="10.9.0.128/30")
    assert [pool.take(str(i)) for i in range(4)] == [IPv4Address(f"10.9.0.{i}") for i in range(128, 132)]
    with pytest.raises(NoAvailableAddress):
        pool.take("x")
    assert pool.take("y", IPv4Address("10.9.0.9")) == IPv4Address("10.9.0.9")


def test_range_starting_at_network_address_skips_it() -> None:
    pool = make_pool("n", "10.9.0.0/24", ip_range="10.9.0.0/30")
    assert pool.take("a") == IPv4Address("10.9.0.2")  # .0 network, .1 gateway


@pytest.mark.parametrize(
    ("subnet", "gateway", "ip_range"),
    [
        ("10.9.0.0/33", None, None),
        ("bogus", None, None),
        ("10.9.0.0/24", "10.10.0.1", None),
        ("10.9.0.0/24", "10.9.0.0", None),
        ("10.9.0.0/24", None, "10.10.0.0/28"),
        ("10.9.0.0/31", None, None),
    ],
)
def test_invalid_configs(subnet: str, gateway: str | None, ip_range: str | None) -> None:
    with pytest.raises(InvalidParameter):
        make_pool("n", subnet, gateway=gateway, ip_range=ip_range)


def test_pick_subnet_skips_taken_and_routed() -> None:
    pools = [PoolSpec(IPv4Network("10.200.0.0/22"), 24)]
    taken = [IPv4Network("10.200.0.0/24"), IPv4Network("10.200.1.128/25")]
    assert pick_subnet(pools, taken) == IPv4Network("10.200.2.0/24")
    with pytest.raises(NoAvailablePool):
        pick_subnet(pools, [IPv4Network("10.200.0.0/16")])


def test_pick_subnet_falls_through_pools_like_docker_defaults() -> None:
    from netproxy.ipam import DEFAULT_POOLS

    pools = DEFAULT_POOLS
    assert pick_subnet(pools, []) == IPv4Network("172.17.0.0/16")
    assert pick_subnet(pools, [IPv4Network("172.17.0.0/16")]) == IPv4Network("172.18.0.0/16")
    assert pick_subnet(pools, [IPv4Network("172.16.0.0/12")]) == IPv4Network("192.168.0.0/20")


async def test_store_persists_and_reloads(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path, default_pools=[PoolSpec(IPv4Network("10.201.0.0/16"), 24)])
    await ipam.load()
    p1 = await ipam.add_pool("net1", None, avoid=[IPv4Network("10.201.0.0/24")], check_routes=False)
    assert p1.subnet == IPv4Network("10.201.1.0/24")
    assert p1.gateway == IPv4Address("10.201.1.1")
    p2 = await ipam.add_pool("net2", None, check_routes=False)
    assert p2.subnet == IPv4Network("10.201.0.0/24")  # net1 is taken, the avoided one is free now
    with pytest.raises(PoolOverlap):
        await ipam.add_pool("net3", "10.201.1.128/25")
    assert await ipam.allocate("net1", "ep1") == IPv4Address("10.201.1.2")
    assert await ipam.allocate("net1", "ep2", "10.201.1.77") == IPv4Address("10.201.1.77")
    await ipam.allocate("net1", "ep3")
    await ipam.release("net1", "10.201.1.3")

    on_disk = json.loads((tmp_path / "net1.json").read_text())
    assert on_disk["allocations"] == {"10.201.1.2": "ep1", "10.201.1.77": "ep2"}

    again = Ipam(tmp_path)
    await again.load()
    assert {p.key for p in again.pools()} == {"net1", "net2"}
    assert await again.allocate("net1", "ep4") == IPv4Address("10.201.1.3")
    assert await again.release_owner("net1", "ep2") == [IPv4Address("10.201.1.77")]
    await again.remove_pool("net2")
    assert not (tmp_path / "net2.json").exists()
    await again.remove_pool("net2")  # twice is harmless


async def test_add_pool_is_idempotent(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path)
    await ipam.load()
    a = await ipam.add_pool("n", "10.202.0.0/24", gateway="10.202.0.1")
    await ipam.allocate("n", "e")
    b = await ipam.add_pool("n", "10.202.0.0/24", gateway="10.202.0.1")
    assert a is b
    assert b.allocations


async def test_broken_record_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / ".tmp-x.json.1234").write_text("half")
    ipam = Ipam(tmp_path)
    await ipam.load()
    assert ipam.pools() == []
    assert not (tmp_path / ".tmp-x.json.1234").exists()


async def test_concurrent_allocations_all_persisted(tmp_path: Path) -> None:
    import asyncio

    ipam = Ipam(tmp_path)
    await ipam.load()
    await ipam.add_pool("n", "10.203.0.0/24")
    got = await asyncio.gather(*(ipam.allocate("n", f"e{i}") for i in range(20)))
    assert len(set(got)) == 20
    on_disk = json.loads((tmp_path / "n.json").read_text())
    assert len(on_disk["allocations"]) == 20
