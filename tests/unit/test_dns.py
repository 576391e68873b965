"""The embedded DNS server's wire format and answers, as pure functions."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from netproxy.dns import (
    QTYPE_A,
    QTYPE_AAAA,
    QTYPE_PTR,
    DnsFormatError,
    NameTable,
    answer,
    encode_name,
    host_upstreams,
    parse_query,
)


def query(name: str, qtype: int = QTYPE_A, *, msg_id: int = 0x4242, flags: int = 0x0100) -> bytes:
    return (
        struct.pack("!HHHHHH", msg_id, flags, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)
    )


def decode(reply: bytes) -> tuple[int, int, list[bytes]]:
    """(id, rcode, rdatas) of a response whose answers all point at the question name."""
    msg_id, flags, _qd, an = struct.unpack("!HHHH", reply[:8])
    pos = 12
    while reply[pos]:
        pos += reply[pos] + 1
    pos += 5
    rdatas = []
    for _ in range(an):
        assert reply[pos : pos + 2] == b"\xc0\x0c"
        rdlen = struct.unpack("!H", reply[pos + 10 : pos + 12])[0]
        rdatas.append(reply[pos + 12 : pos + 12 + rdlen])
        pos += 12 + rdlen
    assert pos == len(reply)
    return msg_id, flags & 0xF, rdatas


TABLE = NameTable.build({"web": ["10.99.0.2"], "Alias.x": ["10.99.0.3", "10.99.0.4"], "db": ["10.99.0.5"]})


def test_a_records_case_insensitive() -> None:
    reply = answer(TABLE, parse_query(query("WEB.")), can_forward=True)
    assert reply is not None
    assert decode(reply) == (0x4242, 0, [bytes([10, 99, 0, 2])])
    reply = answer(TABLE, parse_query(query("alias.X")), can_forward=True)
    assert reply is not None
    assert decode(reply)[2] == [bytes([10, 99, 0, 3]), bytes([10, 99, 0, 4])]


def test_aaaa_for_known_name_is_empty_success() -> None:
    reply = answer(TABLE, parse_query(query("web", QTYPE_AAAA)), can_forward=True)
    assert reply is not None
    assert decode(reply) == (0x4242, 0, [])


def test_unknown_single_label_is_nxdomain_and_dotted_is_forwarded() -> None:
    reply = answer(TABLE, parse_query(query("nosuch")), can_forward=True)
    assert reply is not None
    assert decode(reply)[1] == 3
    assert answer(TABLE, parse_query(query("example.org")), can_forward=True) is None
    reply = answer(TABLE, parse_query(query("example.org")), can_forward=False)
    assert reply is not None
    assert decode(reply)[1] == 3


def test_ptr_of_known_address() -> None:
    reply = answer(TABLE, parse_query(query("5.0.99.10.in-addr.arpa", QTYPE_PTR)), can_forward=False)
    assert reply is not None
    assert decode(reply)[2] == [encode_name("db")]


def test_flags_echo_rd_and_set_qr_aa_ra() -> None:
    reply = answer(TABLE, parse_query(query("web")), can_forward=False)
    assert reply is not None
    flags = struct.unpack("!H", reply[2:4])[0]
    assert flags == 0x8000 | 0x0400 | 0x0100 | 0x0080


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 11,
        query("web", flags=0x8100),  # a response, not a query
        struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + encode_name("a") + b"\x00\x01\x00\x01",
        query("web")[:-3],
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # compression in a question
    ],
)
def test_garbage_is_a_format_error(data: bytes) -> None:
    with pytest.raises(DnsFormatError):
        parse_query(data)


def test_host_upstreams_drop_loopback(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "nameserver 127.0.0.53\nnameserver 10.1.2.3\nnameserver ::1\nsearch x\nnameserver bogus\n"
    )
    assert host_upstreams(conf) == ["10.1.2.3"]
    assert host_upstreams(tmp_path / "missing") == []
