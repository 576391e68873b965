from __future__ import annotations

import pytest

from runtime.errors import InvalidParameter
from runtime.links import Link, hosts_entry, link_env


def test_parse_forms() -> None:
    assert Link.parse("db") == Link("db", "db")
    assert Link.parse("db1:db") == Link("db1", "db")
    assert Link.parse("/db1:/web/db") == Link("db1", "db")  # inspect's stored form
    for bad in ("", ":x"):
        with pytest.raises(InvalidParameter, match="invalid link"):
            Link.parse(bad)


def test_hosts_entry_names_alias_id_and_name_once() -> None:
    cid = "0123456789ab" + "c" * 52
    assert hosts_entry("10.0.0.2", "db", cid, "db1") == ("10.0.0.2", "db 0123456789ab db1")
    assert hosts_entry("10.0.0.2", "db1", cid, "db1") == ("10.0.0.2", "db1 0123456789ab")


def test_env_ports_lowest_first_name_and_target_env() -> None:
    env = link_env(
        alias="my-db",
        linking_name="web",
        ip="10.0.0.2",
        target_env=["PATH=/bin", "HOME=/root", "PW=a=b", "BROKEN"],
        exposed=["5432/tcp", "53/udp"],
    )
    assert env == [
        "MY_DB_PORT=udp://10.0.0.2:53",
        "MY_DB_PORT_53_UDP=udp://10.0.0.2:53",
        "MY_DB_PORT_53_UDP_ADDR=10.0.0.2",
        "MY_DB_PORT_53_UDP_PORT=53",
        "MY_DB_PORT_53_UDP_PROTO=udp",
        "MY_DB_PORT_5432_TCP=tcp://10.0.0.2:5432",
        "MY_DB_PORT_5432_TCP_ADDR=10.0.0.2",
        "MY_DB_PORT_5432_TCP_PORT=5432",
        "MY_DB_PORT_5432_TCP_PROTO=tcp",
        "MY_DB_NAME=/web/my-db",
        "MY_DB_ENV_PW=a=b",
    ]
    assert link_env(alias="x", linking_name="/w", ip="1.2.3.4", target_env=[], exposed=[]) == ["X_NAME=/w/x"]
