"""Rule generation of the iptables manager, against golden files (`--update-golden`)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from netproxy.iptables import (
    Chains,
    NetworkRules,
    PortRule,
    Proto,
    Ruleset,
    TableState,
    parse_save,
    render_jumps,
    render_restore,
    render_rules,
    render_teardown,
)

GOLDEN = Path(__file__).parent / "golden"

NETS = [
    NetworkRules("pydock0", IPv4Network("172.30.0.0/16")),
    NetworkRules("br-web", IPv4Network("10.99.0.0/24"), icc=False),
    NetworkRules("br-int", IPv4Network("10.98.0.0/24"), internal=True),
]
PORTS = [
    PortRule("pydock0", Proto.TCP, 8080, IPv4Address("172.30.0.2"), 80),
    PortRule("pydock0", Proto.UDP, 5353, IPv4Address("172.30.0.2"), 53, IPv4Address("127.0.0.1")),
    PortRule("br-web", Proto.TCP, 32768, IPv4Address("10.99.0.5"), 443, IPv4Address("0.0.0.0")),
]

# What a real dockerd leaves in the tables: none of it may be touched or reordered.
DOCKER_FILTER = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:PYDOCK-USER - [0:0]
:PYDOCK-FORWARD - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -j PYDOCK-FORWARD
-A FORWARD -j PYDOCK-FORWARD
-A INPUT -j PYDOCK-FORWARD
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A PYDOCK-USER -s 10.0.0.0/8 -j DROP
-A PYDOCK-FORWARD -j PYDOCK-USER
COMMIT
"""
DOCKER_NAT = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:PYDOCK - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j PYDOCK
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A PYDOCKER-X -j PYDOCK
COMMIT
"""


def check_golden(name: str, text: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run pytest --update-golden"
    assert text == path.read_text()


def dump(rs: Ruleset) -> str:
    return "*filter\n" + "\n".join(rs.filter) + "\n*nat\n" + "\n".join(rs.nat) + "\n"


@pytest.mark.parametrize("userland_proxy", [True, False])
def test_rules_golden(userland_proxy: bool, update_golden: bool) -> None:
    rs = render_rules(Chains("PYDOCK"), NETS, PORTS, userland_proxy=userland_proxy)
    jumps = render_jumps(Chains("PYDOCK"), userland_proxy=userland_proxy)
    name = "iptables_rules_proxy.txt" if userland_proxy else "iptables_rules_noproxy.txt"
    check_golden(name, dump(rs) + "# jumps\n" + dump(jumps), update_golden)


def test_rules_deterministic_regardless_of_order() -> None:
    a = render_rules(Chains("X"), NETS, PORTS)
    b = render_rules(Chains("X"), list(reversed(NETS)), list(reversed(PORTS)) + PORTS[:1])
    assert a == b


def test_empty_state_keeps_chain_skeleton() -> None:
    rs = render_rules(Chains("P"), [], [])
    assert rs.filter == [
        "-A P-FORWARD -j P-USER",
        "-A P-FORWARD -j P-ISOLATION-1",
        "-A P-ISOLATION-1 -j RETURN",
        "-A P-ISOLATION-2 -j RETURN",
    ]
    assert rs.nat == []


def test_restore_against_foreign_rules_golden(update_golden: bool) -> None:
    chains = Chains("PYDOCK")
    current = {"filter": parse_save(DOCKER_FILTER), "nat": parse_save(DOCKER_NAT)}
    rules = render_rules(chains, NETS[:1], PORTS[:1])
    text = render_restore(chains, current, rules, render_jumps(chains))
    check_golden("iptables_restore_foreign.txt", text, update_golden)
    touched = [
        line for line in text.splitlines() if line.startswith(("-D", "-I", "-A", ":", "-N", "-X", "-F"))
    ]
    for line in touched:
        assert "DOCKER " not in line and "DOCKER-USER" not in line and "docker0" not in line, line
    # the duplicate FORWARD jump, the INPUT jump and the proxy-less OUTPUT jump go; the rest stays
    assert "-D FORWARD -j PYDOCK-FORWARD" in text.splitlines()
    assert text.count("-D FORWARD -j PYDOCK-FORWARD") == 1
    assert "-D INPUT -j PYDOCK-FORWARD" in text
    assert "-D OUTPUT -m addrtype --dst-type LOCAL -j PYDOCK" in text
    assert "-N PYDOCK-USER" not in text  # exists, with the administrator's rule: left alone
    assert ":PYDOCK-USER" not in text
    # another prefix's chain is never declared or flushed; its jump into ours counts as ours
    assert ":PYDOCKER-X" not in text and "-F PYDOCKER-X" not in text


def test_restore_on_empty_tables_creates_everything() -> None:
    chains = Chains("T1")
    text = render_restore(chains, {}, render_rules(chains, [], []), render_jumps(chains))
    assert "-N T1-USER" in text
    assert "-I FORWARD 1 -j T1-FORWARD" in text
    assert "-I POSTROUTING 1 -j T1-POSTROUTING" in text
    assert "-A PREROUTING -m addrtype --dst-type LOCAL -j T1" in text


def test_teardown_golden(update_golden: bool) -> None:
    chains = Chains("PYDOCK")
    current = {"filter": parse_save(DOCKER_FILTER), "nat": parse_save(DOCKER_NAT)}
    check_golden("iptables_teardown_foreign.txt", render_teardown(chains, current), update_golden)


def test_teardown_of_nothing_is_empty_batch() -> None:
    text = render_teardown(Chains("P"), {"filter": TableState(), "nat": TableState()})
    assert text == "*filter\nCOMMIT\n*nat\nCOMMIT\n"


def test_prefix_is_matched_exactly() -> None:
    chains = Chains("PD1")
    save = "*filter\n:PD12-FORWARD - [0:0]\n-A FORWARD -j PD12-FORWARD\nCOMMIT\n"
    text = render_teardown(chains, {"filter": parse_save(save)})
    assert "PD12" not in text
