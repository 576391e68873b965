"""A throwaway real dockerd for side-by-side numbers, and the cleanup of everything it made.

dockerd gets its own socket, `--data-root`, `--exec-root`, `--pidfile`, config file and bridge
(made here: dockerd refuses `-b` together with `--bip`, and a non-default `-b` bridge must already
exist), with `--iptables` on, and spawns its own containerd (dockerd 20.10 does so when none is
configured). Never `--bridge none`: that deletes docker0 even when another daemon owns it.

dockerd's iptables chains are named DOCKER*, whoever runs it, so it is started only when no other
dockerd runs, and the cleanup removes only the DOCKER chains and the rules that were not there
before it started (from an `iptables-save` snapshot). The same goes for the host files it creates
outside its roots (/etc/docker/key.json, /run/docker, /run/containerd/s), the parent cgroup
`docker` it leaves in every hierarchy, and the sysctls it sets.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.engines import Engine
from bench.harness import Skip
from bench.memory import pids_with_arg, process_tree
from tests.integration.daemon import free_subnet

HOST_PATHS = (
    Path("/etc/docker/key.json"),
    Path("/run/docker/plugins"),
    Path("/run/docker"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# ip_forward is left on: pydock sets it too, and turning it off would cut other daemons' networks.
SYSCTLS = (
    Path("/proc/sys/net/bridge/bridge-nf-call-iptables"),
    Path("/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)


def running_dockerds() -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry.name}/comm").read_text().strip() == "dockerd":
                    pids.append(int(entry.name))
    return pids


def _docker_cgroups() -> list[Path]:
    """`docker/` in each cgroup hierarchy (v1 controllers and the v2 mount): dockerd's parent."""
    if not CGROUP_ROOT.is_dir():
        return []
    found = [d / "docker" for d in CGROUP_ROOT.iterdir() if d.is_dir() and not d.is_symlink()]
    found.append(CGROUP_ROOT / "docker")
    return found


def iptables_lines(table: str) -> list[str]:
    """`iptables-save` of `table`: chain declarations (without counters) and rules."""
    out = _run("iptables-save", "-t", table).stdout
    lines = []
    for line in out.splitlines():
        if line.startswith(":"):
            lines.append(line.split()[0])
        elif line.startswith("-A "):
            lines.append(line)
    return lines


def _forward_policy() -> str:
    for line in _run("iptables-save", "-t", "filter").stdout.splitlines():
        if line.startswith(":FORWARD "):
            return line.split()[1]
    return "ACCEPT"


class DockerdEngine(Engine):
    name = "dockerd"

    def __init__(self, root: Path) -> None:
        self.root = root / "dockerd"
        super().__init__(self.root / "docker.sock", root / "docker-config")
        tag = secrets.token_hex(3)
        self.bridge = f"pdbd{tag}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        self._iptables_before: dict[str, list[str]] = {}
        self._paths_before: dict[Path, bool] = {}
        self._sysctls_before: dict[Path, str] = {}
        self._forward_policy = "ACCEPT"
        self._bridge_made = False
        self._dockerd_pid: int | None = None

    @property
    def pid(self) -> int:
        assert self._dockerd_pid is not None
        return self._dockerd_pid

    @property
    def containerd_sock(self) -> Path:
        return self.root / "exec" / "containerd" / "containerd.sock"

    def daemon_pids(self) -> list[int]:
        """dockerd, its containerd and docker-proxies, and the shims (children of init)."""
        return process_tree(self.pid, pids_with_arg(str(self.containerd_sock)))

    @staticmethod
    def check_installed() -> None:
        for binary in ("dockerd", "containerd", "containerd-shim-runc-v2", "docker-proxy"):
            if shutil.which(binary) is None:
                raise Skip(f"{binary} not installed (make bench COMPARE=dockerd installs docker.io)")
        others = running_dockerds()
        if others:
            raise Skip(f"another dockerd runs (pid {others[0]}): its DOCKER* chains would be shared")

    def start_daemon(self, timeout_s: float = 60.0) -> None:
        self.check_installed()
        self.root.mkdir(parents=True)
        self._iptables_before = {t: iptables_lines(t) for t in ("filter", "nat")}
        self._paths_before = {p: p.exists() for p in (*HOST_PATHS, *_docker_cgroups())}
        for p in SYSCTLS:
            with contextlib.suppress(OSError):
                self._sysctls_before[p] = p.read_text().strip()
        self._forward_policy = _forward_policy()

        self.subnet = free_subnet()
        gateway = next(self.subnet.hosts())
        for argv in (
            ("ip", "link", "add", "name", self.bridge, "type", "bridge"),
            ("ip", "addr", "add", f"{gateway}/{self.subnet.prefixlen}", "dev", self.bridge),
            ("ip", "link", "set", self.bridge, "up"),
        ):
            res = _run(*argv)
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")
            self._bridge_made = True
        config = self.root / "daemon.json"
        config.write_text(json.dumps({}))
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                "dockerd", "-H", self.host, "--config-file", str(config),
                "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "dockerd.pid"), "-b", self.bridge, "--iptables=true",
                "--log-level", "warn",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        self._dockerd_pid = self.proc.pid
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError, RuntimeError):
                if self._ping():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"dockerd did not answer /_ping: {self.log_tail()}")
            time.sleep(0.1)

    def _ping(self) -> bool:
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.startswith(b"HTTP/1.1 200")

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "dockerd.log").read_text(errors="replace")[-chars:]
        return ""

    # --- teardown ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop dockerd and remove what it made; report (on stderr) what had to be removed by force."""
        super().close()
        forced: list[str] = []
        helpers: list[int] = []
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(OSError, RuntimeError):
                    for cid in self.bench_containers_all():
                        self.remove(cid)
                helpers = [p for p in self.daemon_pids() if p != self.proc.pid]
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(45)
                except subprocess.TimeoutExpired:
                    forced.append("dockerd (SIGKILL)")
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
        forced += self._kill_helpers(helpers)
        forced += self._unmount()
        forced += self._remove_links()
        self._remove_iptables()
        self._restore_host()
        shutil.rmtree(self.root, ignore_errors=True)
        if forced:
            print(f"[bench] dockerd cleanup had to remove: {forced}", file=sys.stderr)

    def bench_containers_all(self) -> list[str]:
        with self.new_http(timeout_s=60) as c:
            r = c.get("/containers/json", params={"all": "1"})
            return [str(item["Id"]) for item in r.json()] if r.status_code == 200 else []

    def _kill_helpers(self, pids: list[int]) -> list[str]:
        """containerd, shims and proxies our dockerd started, if still alive after it stopped."""
        found = []
        deadline = time.monotonic() + 10
        for pid in pids:
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if Path(f"/proc/{pid}").exists():
                found.append(f"pid {pid}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return found

    def _unmount(self) -> list[str]:
        found = []
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            mount_point = line.split()[4]
            if mount_point.startswith(str(self.root)):
                found.append(f"mount {mount_point}")
                _run("umount", "-l", mount_point)
        return found

    def _remove_links(self) -> list[str]:
        found = []
        for line in _run("ip", "-o", "link", "show").stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if f"master {self.bridge} " in line:
                found.append(f"link {name}")
                _run("ip", "link", "del", name)
        if self._bridge_made:
            _run("ip", "link", "del", self.bridge)
            self._bridge_made = False
        return found

    def _ours(self, rule: str) -> bool:
        words = rule.split()
        return (
            any(w.startswith("DOCKER") for w in words)
            or self.bridge in words
            or (self.subnet is not None and str(self.subnet) in words)
        )

    def _remove_iptables(self) -> None:
        """Rules our dockerd added outside its chains, then its DOCKER* chains (new ones only).
        dockerd leaves them all behind when it stops, so this is the normal path, not a leak."""
        for table, before in self._iptables_before.items():
            old = set(before)
            now = iptables_lines(table)
            for rule in now:
                if rule in old or not rule.startswith("-A ") or not self._ours(rule):
                    continue
                chain = rule.split()[1]
                if chain.startswith("DOCKER"):
                    continue  # goes with its chain
                _run("iptables", "-w", "-t", table, "-D", *shlex.split(rule)[1:])
            chains = [c[1:] for c in now if c.startswith(":DOCKER") and c not in old]
            for chain in chains:
                _run("iptables", "-w", "-t", table, "-F", chain)
            for chain in chains:
                _run("iptables", "-w", "-t", table, "-X", chain)

    def _restore_host(self) -> None:
        if _forward_policy() != self._forward_policy:
            _run("iptables", "-w", "-P", "FORWARD", self._forward_policy)
        for path, value in self._sysctls_before.items():
            with contextlib.suppress(OSError):
                if path.read_text().strip() != value:
                    path.write_text(value + "\n")
        for path, existed in self._paths_before.items():
            if existed or not path.exists():
                continue
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()  # only when empty (a cgroup: without children or tasks)
                else:
                    path.unlink()
