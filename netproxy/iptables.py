"""The iptables manager: pydock's own chains, the jumps into them, and nothing else.

Owns the chains named from a prefix (default `PYDOCK`):

    filter  PREFIX-FORWARD      jumped to from FORWARD; per-bridge accept/forward rules
            PREFIX              per published port ACCEPT, then DROP of other inbound traffic
            PREFIX-ISOLATION-1  -> PREFIX-ISOLATION-2: networks cannot reach each other
            PREFIX-USER         for the administrator; created empty, never flushed by a sync
    nat     PREFIX              DNAT of published ports (jumped to from PREROUTING and OUTPUT)
            PREFIX-POSTROUTING  MASQUERADE of bridge subnets, hairpin (jumped to from POSTROUTING)

and the rules in built-in chains that jump to them. Anything else (a real dockerd's DOCKER
chains, the administrator's rules) is never touched. Chain names are matched exactly, never by
prefix, so prefix `PD1` never claims `PD12-FORWARD`.

The rule layout follows dockerd's (libnetwork `setupIPTablesInternal`, `setINC`, port mapping),
moved into our chains. Rules are rendered from the desired state by pure functions (the unit
tests compare them with golden files) and applied in one atomic `iptables-restore --noflush`
batch: declaring a chain (`:NAME - [0:0]`) in a noflush restore flushes and refills exactly
that chain, so each sync replaces our chains' contents at once; jumps in built-in chains are
added or deleted after diffing against `iptables-save`. Syncing twice is harmless, and the first
sync after a start replaces whatever a previous run left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from runtime import procs
from runtime.errors import SystemError_

log = logging.getLogger(__name__)

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network

DEFAULT_PREFIX = "PYDOCK"
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}
TABLES = ("filter", "nat")


class Proto(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class Chains:
    """Our chain names for one prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def main(self) -> str:  # filter PREFIX and nat PREFIX
        return self.prefix

    @property
    def forward(self) -> str:
        return f"{self.prefix}-FORWARD"

    @property
    def isolation1(self) -> str:
        return f"{self.prefix}-ISOLATION-1"

    @property
    def isolation2(self) -> str:
        return f"{self.prefix}-ISOLATION-2"

    @property
    def user(self) -> str:
        return f"{self.prefix}-USER"

    @property
    def postrouting(self) -> str:
        return f"{self.prefix}-POSTROUTING"

    def owned(self, table: str) -> tuple[str, ...]:
        """Every chain of ours in `table` (the user chain included)."""
        if table == "filter":
            return (self.main, self.forward, self.isolation1, self.isolation2, self.user)
        if table == "nat":
            return (self.main, self.postrouting)
        return ()

    def synced(self, table: str) -> tuple[str, ...]:
        """Chains whose whole content each sync rewrites (all of ours but the user chain)."""
        return tuple(c for c in self.owned(table) if c != self.user)


@dataclass(frozen=True, slots=True, order=True)
class NetworkRules:
    """One bridge network as the firewall sees it."""

    bridge: str
    subnet: IPv4Network
    internal: bool = False  # --internal: no traffic in or out of the subnet
    icc: bool = True  # inter-container communication on this bridge
    masquerade: bool = True  # --ip-masq


@dataclass(frozen=True, slots=True, order=True)
class PortRule:
    """One published port: host_ip:host_port/proto -> container_ip:container_port."""

    bridge: str
    proto: Proto
    host_port: int
    container_ip: IPv4Address
    container_port: int
    host_ip: IPv4Address | None = None  # None or 0.0.0.0: every host address


@dataclass(slots=True)
class Ruleset:
    """Rendered rules of our chains, per table, as `-A CHAIN ...` lines."""

    filter: list[str] = field(default_factory=list)
    nat: list[str] = field(default_factory=list)

    def table(self, name: str) -> list[str]:
        return self.filter if name == "filter" else self.nat


# --- pure rendering -----------------------------------------------------------------------------


def _port_match(proto: Proto, port: int) -> str:
    return f"-p {proto} -m {proto} --dport {port}"


def render_rules(
    chains: Chains,
    networks: Iterable[NetworkRules],
    ports: Iterable[PortRule],
    *,
    userland_proxy: bool = True,
) -> Ruleset:
    """The full content of our synced chains for the given state (pure, deterministic).

    Lines are in `iptables-save` canonical form, so they can be compared with its output.
    """
    nets = sorted(set(networks))
    maps = sorted(set(ports))
    hairpin = not userland_proxy  # dockerd: hairpin mode is on when the userland proxy is off
    c = chains
    rs = Ruleset()
    f, n = rs.filter, rs.nat

    # filter: forwarding decisions per bridge
    f.append(f"-A {c.forward} -j {c.user}")
    f.append(f"-A {c.forward} -j {c.isolation1}")
    for net in nets:
        br = net.bridge
        if not net.internal:
            f.append(f"-A {c.forward} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
            f.append(f"-A {c.forward} -o {br} -j {c.main}")
            f.append(f"-A {c.forward} -i {br} ! -o {br} -j ACCEPT")
        f.append(f"-A {c.forward} -i {br} -o {br} -j {'ACCEPT' if net.icc else 'DROP'}")

    # filter: isolation between networks, and internal networks cut off from everything else
    for net in nets:
        br, sub = net.bridge, net.subnet
        if net.internal:
            f.append(f"-A {c.isolation1} ! -s {sub} -o {br} -j DROP")
            f.append(f"-A {c.isolation1} ! -d {sub} -i {br} -j DROP")
        else:
            f.append(f"-A {c.isolation1} -i {br} ! -o {br} -j {c.isolation2}")
    f.append(f"-A {c.isolation1} -j RETURN")
    for net in nets:
        if not net.internal:
            f.append(f"-A {c.isolation2} -o {net.bridge} -j DROP")
    f.append(f"-A {c.isolation2} -j RETURN")

    # filter: published ports are the only way in from outside the bridge (dockerd 28 adds the
    # final DROP too, so a FORWARD policy of ACCEPT does not expose unpublished ports)
    for m in maps:
        f.append(
            f"-A {c.main} -d {m.container_ip}/32 ! -i {m.bridge} -o {m.bridge} "
            f"{_port_match(m.proto, m.container_port)} -j ACCEPT"
        )
    for net in nets:
        if not net.internal:
            f.append(f"-A {c.main} ! -i {net.bridge} -o {net.bridge} -j DROP")

    # nat: source NAT out of the bridges
    for net in nets:
        if net.masquerade and not net.internal:
            n.append(f"-A {c.postrouting} -s {net.subnet} ! -o {net.bridge} -j MASQUERADE")
    if hairpin:
        for net in nets:
            if not net.internal:
                n.append(f"-A {c.postrouting} -o {net.bridge} -m addrtype --src-type LOCAL -j MASQUERADE")
    for m in maps:  # a container reaching itself through its own published port
        n.append(
            f"-A {c.postrouting} -s {m.container_ip}/32 -d {m.container_ip}/32 "
            f"{_port_match(m.proto, m.container_port)} -j MASQUERADE"
        )

    # nat: DNAT of published ports; with the userland proxy, traffic from the bridge itself
    # goes to the proxy instead (dockerd's "skip DNAT" rule and `! -i bridge`)
    if not hairpin:
        for net in nets:
            if net.masquerade and not net.internal:
                n.append(f"-A {c.main} -i {net.bridge} -j RETURN")
    for m in maps:
        dst = f"-d {m.host_ip}/32 " if m.host_ip is not None and not m.host_ip.is_unspecified else ""
        skip = "" if hairpin else f"! -i {m.bridge} "
        n.append(
            f"-A {c.main} {dst}{skip}{_port_match(m.proto, m.host_port)} "
            f"-j DNAT --to-destination {m.container_ip}:{m.container_port}"
        )
    return rs


def render_jumps(chains: Chains, *, userland_proxy: bool = True) -> Ruleset:
    """The rules we own in built-in chains: the jumps into our chains (pure)."""
    c = chains
    rs = Ruleset()
    rs.filter.append(f"-A FORWARD -j {c.forward}")
    rs.nat.append(f"-A PREROUTING -m addrtype --dst-type LOCAL -j {c.main}")
    if userland_proxy:
        # 127.0.0.1 is the proxy's: DNAT cannot apply to loopback without route_localnet
        rs.nat.append(f"-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j {c.main}")
    else:
        rs.nat.append(f"-A OUTPUT -m addrtype --dst-type LOCAL -j {c.main}")
    rs.nat.append(f"-A POSTROUTING -j {c.postrouting}")
    return rs


@dataclass(slots=True)
class TableState:
    """What `iptables-save -t TABLE` says: chain names and `-A` rule lines, in order."""

    chains: set[str] = field(default_factory=set)
    rules: list[str] = field(default_factory=list)

    def rules_of(self, chain: str) -> list[str]:
        head = f"-A {chain} "
        return [r for r in self.rules if r.startswith(head)]


def parse_save(text: str) -> TableState:
    state = TableState()
    for line in text.splitlines():
        if line.startswith(":"):
            state.chains.add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            state.rules.append(line.rstrip())
    return state


def _jump_target(rule: str) -> str | None:
    parts = rule.split()
    for i, part in enumerate(parts[:-1]):
        if part in ("-j", "-g"):
            return parts[i + 1]
    return None


def _insert(rule: str) -> str:
    """Turn `-A CHAIN spec` into `-I CHAIN 1 spec` (FORWARD and POSTROUTING, as dockerd)."""
    _, chain, spec = rule.split(" ", 2)
    return f"-I {chain} 1 {spec}"


def render_restore(
    chains: Chains,
    current: Mapping[str, TableState],
    rules: Ruleset,
    jumps: Ruleset,
) -> str:
    """The `iptables-restore --noflush` input that turns `current` into `rules` + `jumps` (pure).

    Only our chains are declared (which flushes them), only jumps to our chains are deleted,
    and only missing jumps are added.
    """
    out: list[str] = []
    for table in TABLES:
        state = current.get(table, TableState())
        ours = set(chains.owned(table))
        out.append(f"*{table}")
        for chain in chains.synced(table):
            out.append(f":{chain} - [0:0]")
        if table == "filter" and chains.user not in state.chains:
            out.append(f"-N {chains.user}")
        wanted = jumps.table(table)
        seen: set[str] = set()
        for rule in state.rules:
            chain = rule.split(" ", 2)[1]
            if chain in ours or _jump_target(rule) not in ours:
                continue
            if rule in wanted and rule not in seen:
                seen.add(rule)
                continue
            out.append("-D" + rule[2:])  # a stale or duplicate jump of ours
        for rule in wanted:
            if rule not in seen:
                chain = rule.split(" ", 2)[1]
                out.append(_insert(rule) if chain in ("FORWARD", "POSTROUTING") else rule)
        out.extend(rules.table(table))
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def render_teardown(chains: Chains, current: Mapping[str, TableState]) -> str:
    """The restore input that removes every jump to our chains and then our chains (pure)."""
    out: list[str] = []
    for table in TABLES:
        state = current.get(table, TableState())
        ours = set(chains.owned(table))
        present = [ch for ch in chains.owned(table) if ch in state.chains]
        out.append(f"*{table}")
        for rule in state.rules:
            chain = rule.split(" ", 2)[1]
            if chain not in ours and _jump_target(rule) in ours:
                out.append("-D" + rule[2:])
        out.extend(f"-F {ch}" for ch in present)
        out.extend(f"-X {ch}" for ch in present)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


# --- the manager --------------------------------------------------------------------------------


class IptablesError(SystemError_):
    pass


async def _run(argv: Sequence[str], stdin: bytes | None = None, *, timeout_s: float = 30.0) -> bytes:
    # vfork + exec (runtime/procs.py): a uvloop fork of the whole daemon costs ~5 ms per call.
    try:
        done = await procs.run(argv, input=stdin, timeout_s=timeout_s)
    except OSError as exc:
        raise IptablesError(f"{argv[0]} failed: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise IptablesError(f"{argv[0]} failed: {detail}")
    return done.stdout


class IptablesManager:
    """Keeps our chains equal to the desired state: networks and their published ports.

    Every change method updates the state in memory and syncs; syncs are serialised. The
    first sync after a start replaces stale rules of an earlier run (call `sync()` once the
    live networks and ports are registered, or right away to clean up).
    """

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        *,
        userland_proxy: bool = True,
        iptables: str = "iptables",
    ) -> None:
        self.chains = Chains(prefix)
        self.userland_proxy = userland_proxy
        self._save = f"{iptables}-save"
        self._restore = f"{iptables}-restore"
        self._networks: dict[str, NetworkRules] = {}
        self._ports: dict[str, tuple[PortRule, ...]] = {}
        self._lock = asyncio.Lock()
        self._applied: tuple[Ruleset, Ruleset] | None = None  # (rules, jumps) of the last sync

    # state

    def set_network(self, net: NetworkRules) -> None:
        self._networks[net.bridge] = net

    def drop_network(self, bridge: str) -> None:
        self._networks.pop(bridge, None)

    def set_ports(self, owner: str, rules: Iterable[PortRule]) -> None:
        self._ports[owner] = tuple(rules)

    def drop_ports(self, owner: str) -> None:
        self._ports.pop(owner, None)

    def desired(self) -> tuple[Ruleset, Ruleset]:
        ports = [p for rules in self._ports.values() for p in rules]
        return (
            render_rules(self.chains, self._networks.values(), ports, userland_proxy=self.userland_proxy),
            render_jumps(self.chains, userland_proxy=self.userland_proxy),
        )

    # convenience: change and sync

    async def add_network(self, net: NetworkRules) -> None:
        self.set_network(net)
        await self.sync()

    async def remove_network(self, bridge: str) -> None:
        self.drop_network(bridge)
        await self.sync()

    async def add_ports(self, owner: str, rules: Iterable[PortRule]) -> None:
        self.set_ports(owner, rules)
        await self.sync()

    async def remove_ports(self, owner: str) -> None:
        self.drop_ports(owner)
        await self.sync()

    # kernel side

    async def read(self) -> dict[str, TableState]:
        """The current tables, as `iptables-save` prints them."""
        states: dict[str, TableState] = {}
        for table in TABLES:
            out = await _run([self._save, "-t", table])
            states[table] = parse_save(out.decode())
        return states

    async def sync(self, *, verify: bool = False) -> None:
        """Make our chains and jumps equal to the desired state in one atomic batch.

        The first sync (and any with `verify`) reads the tables to diff the jumps in built-in
        chains. Later ones trust that the jumps are still in place and only rewrite our chains:
        one `iptables-restore`, no `iptables-save` (a published port costs one process, not
        three); if that batch fails, a verifying sync follows. Raises `IptablesError` when
        iptables refuses (the kernel state is then unchanged).
        """
        async with self._lock:
            rules, jumps = self.desired()
            if not verify and self._applied is not None and self._applied[1] == jumps:
                if self._applied[0] == rules:
                    return
                text = render_restore(self.chains, self._assumed(jumps), rules, jumps)
                try:
                    await _run([self._restore, "--noflush", "--wait"], text.encode())
                except IptablesError as exc:
                    log.warning("iptables fast sync failed, verifying: %s", exc)
                else:
                    self._applied = (rules, jumps)
                    return
            self._applied = None
            current = await self.read()
            if not self._in_sync(current, rules, jumps):
                text = render_restore(self.chains, current, rules, jumps)
                await _run([self._restore, "--noflush", "--wait"], text.encode())
                log.debug("iptables synced", extra={"prefix": self.chains.prefix})
            self._applied = (rules, jumps)

    def _assumed(self, jumps: Ruleset) -> dict[str, TableState]:
        """The tables as the last applied sync left them, as far as `render_restore` looks."""
        return {
            table: TableState(chains=set(self.chains.owned(table)), rules=list(jumps.table(table)))
            for table in TABLES
        }

    def _in_sync(self, current: Mapping[str, TableState], rules: Ruleset, jumps: Ruleset) -> bool:
        for table in TABLES:
            state = current[table]
            if table == "filter" and self.chains.user not in state.chains:
                return False
            for chain in self.chains.synced(table):
                if chain not in state.chains:
                    return False
            wanted = rules.table(table)
            for chain in self.chains.synced(table):
                if state.rules_of(chain) != [r for r in wanted if r.split(" ", 2)[1] == chain]:
                    return False
            builtin_jumps = [
                r
                for r in state.rules
                if r.split(" ", 2)[1] not in self.chains.owned(table)
                and _jump_target(r) in self.chains.owned(table)
            ]
            if sorted(builtin_jumps) != sorted(jumps.table(table)):
                return False
        return True

    async def teardown(self) -> None:
        """Remove every jump to our chains and the chains themselves (the user chain too)."""
        async with self._lock:
            self._applied = None
            current = await self.read()
            text = render_teardown(self.chains, current)
            await _run([self._restore, "--noflush", "--wait"], text.encode())


async def flush_conntrack(proto: Proto, host_port: int) -> None:
    """Forget conntrack entries to a host port whose mapping went away (UDP flows linger).

    A missing `conntrack` tool or no matching entry is not an error.
    """
    argv = ["conntrack", "-D", "-p", str(proto), "--orig-port-dst", str(host_port)]
    with contextlib.suppress(OSError, TimeoutError):
        await procs.run(argv, stdout=procs.DEVNULL, stderr=procs.DEVNULL, timeout_s=10)
