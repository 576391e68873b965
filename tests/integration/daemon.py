"""A real `pydockd` for tests: temp socket, data root, exec root, bridge, subnet and chain prefix.

Every daemon gets names of its own (`pdt<hex>` bridge, `PDT<HEX>` chains, a free 10.x/24), so test
runs never collide with each other, with a pydockd in use, or with a real dockerd. `close()` stops
the daemon by PID and removes everything it could have left: mounts under its roots, its bridge,
its chains and the rules that jump to them, its runc state, its temp dirs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runtime.cgroups import CgroupLayout, remove_cgroup

REPO = Path(__file__).resolve().parents[2]
PYDOCKD = REPO / ".venv" / "bin" / "pydockd"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _run_text(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def host_routes() -> list[ipaddress.IPv4Network]:
    out = _run_text(["ip", "-4", "-o", "addr", "show"])
    nets = []
    for line in out.splitlines():
        words = line.split()
        if "inet" in words:
            nets.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=False).stdout
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        with contextlib.suppress(ValueError):
            if first != "default":
                nets.append(ipaddress.IPv4Network(first, strict=False))
    return nets


def free_subnet(prefix: int = 24) -> ipaddress.IPv4Network:
    used = host_routes()
    for _ in range(1000):
        candidate = ipaddress.IPv4Network(
            f"10.{random.randint(160, 250)}.{random.randint(0, 255)}.0/{prefix}", strict=False
        )
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise RuntimeError("no free 10.x subnet found")


@dataclass
class Daemon:
    root: Path
    extra_args: list[str] = field(default_factory=list)
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    proc: subprocess.Popen[bytes] | None = None
    subnet: ipaddress.IPv4Network = field(default_factory=free_subnet)
    env_extra: dict[str, str] = field(default_factory=dict)

    @property
    def sock(self) -> Path:
        return self.root / "pydock.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    @property
    def bridge(self) -> str:
        return f"pdt{self.run_id}"

    @property
    def chain_prefix(self) -> str:
        return f"PDT{self.run_id.upper()}"

    @property
    def cgroup_parent(self) -> str:
        return f"/pdt-{self.run_id}"

    @property
    def log_path(self) -> Path:
        return self.root / "pydockd.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def args(self) -> list[str]:
        gateway = next(self.subnet.hosts())
        return [
            str(PYDOCKD), "-H", self.host, "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root), "-b", self.bridge,
            "--bip", f"{gateway}/{self.subnet.prefixlen}", "--iptables-chain-prefix", self.chain_prefix,
            "--cgroup-parent", self.cgroup_parent,
            "--pidfile", str(self.root / "pydockd.pid"), "--log-level", "debug", *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout_s: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, **self.env_extra}
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        log.close()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"pydockd exited with {self.proc.returncode}:\n{self.log_tail()}")
            return self.raw_ping()

        wait_for(ready, timeout_s, "pydockd to answer /_ping")

    def raw_ping(self) -> bool:
        """GET /_ping over a plain socket (httpx leaks its socket when a UNIX connect fails)."""
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            try:
                s.connect(str(self.sock))
                s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            except OSError:
                return False
        return data.startswith(b"HTTP/1.1 200") and data.endswith(b"OK")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing gets a chance to clean up."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    # --- clients ------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_CONFIG"] = str(self.root / "docker-config")
        return env

    def docker(
        self, *args: str, input: bytes | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the real docker CLI against this daemon."""
        result = subprocess.run(
            [DOCKER, *args], input=input, capture_output=True, env=self.env(), timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}\nstdout: {result.stdout.decode()}\n"
                f"stderr: {result.stderr.decode()}"
            )
        return result

    def client(self, timeout: int = 120) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def http(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.sock)), base_url="http://docker", timeout=timeout
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.http() as c:
            return c.request(method, path, **kwargs)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.request(method, path, **kwargs)
        r.raise_for_status()
        return r.json()

    # --- cleanup ------------------------------------------------------------------------------

    def cleanup_host(self) -> list[str]:
        """Remove what this daemon's names own on the host; returns what was found left over."""
        leftovers: list[str] = []
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            mount_point = line.split()[4]
            if mount_point.startswith(str(self.root)):
                leftovers.append(f"mount {mount_point}")
                subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
        links = _run_text(["ip", "-o", "link", "show"])
        # user-defined networks' bridges and the veths carry the daemon's alias
        ours = re.compile(rf"alias pydock:{self.chain_prefix}(:veth)?(\\|$)")
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name == self.bridge or (f"master {self.bridge} " in line) or ours.search(line):
                leftovers.append(f"link {name}")
                subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
        for table in ("filter", "nat"):
            leftovers += _remove_chains(table, self.chain_prefix)
        runtime_root = self.exec_root / "runtime"
        if runtime_root.is_dir():
            for state in runtime_root.iterdir():
                leftovers.append(f"runc {state.name}")
                subprocess.run(["runc", "--root", str(runtime_root), "delete", "-f", state.name],
                               capture_output=True, check=False)  # fmt: skip
        # The parent itself is ours to remove (runc made it); what is left beneath it is a leak.
        layout = CgroupLayout.detect()
        for directory in layout.all_dirs(self.cgroup_parent):
            if directory.is_dir():
                leftovers += [f"cgroup {d}" for d in directory.iterdir() if d.is_dir()]
        leftovers += [f"cgroup {d} (busy)" for d in remove_cgroup(layout, self.cgroup_parent)]
        return leftovers

    def close(self) -> list[str]:
        self.stop()
        leftovers = self.cleanup_host()
        shutil.rmtree(self.root, ignore_errors=True)
        return leftovers


def _remove_chains(table: str, prefix: str) -> list[str]:
    """Delete rules jumping to `prefix*` chains and those chains, in `table`."""
    found: list[str] = []
    saved = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=False).stdout
    chains = [line[1:].split()[0] for line in saved.splitlines() if line.startswith(f":{prefix}")]
    for line in saved.splitlines():
        if line.startswith("-A ") and (f"-j {prefix}" in line or f"-g {prefix}" in line):
            chain = line.split()[1]
            if not chain.startswith(prefix):
                found.append(f"rule {table} {line}")
                subprocess.run(["iptables", "-w", "-t", table, "-D", *line.split()[1:]],
                               capture_output=True, check=False)  # fmt: skip
    for chain in chains:
        subprocess.run(["iptables", "-w", "-t", table, "-F", chain], capture_output=True, check=False)
    for chain in chains:
        found.append(f"chain {table} {chain}")
        subprocess.run(["iptables", "-w", "-t", table, "-X", chain], capture_output=True, check=False)
    return found


@contextlib.contextmanager
def running_daemon(
    *extra_args: str, root: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[Daemon]:
    base = root or Path(tempfile.mkdtemp(prefix="pdt-", dir="/tmp"))
    daemon = Daemon(base, list(extra_args), env_extra=dict(env or {}))
    try:
        daemon.start()
        yield daemon
    except BaseException:
        sys.stderr.write(f"--- pydockd log ({daemon.log_path}) ---\n{daemon.log_tail(120)}\n")
        raise
    finally:
        daemon.close()


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


class PtyCli:
    """The docker CLI on a pseudo-terminal of its own (for `-it`), like a user at a terminal."""

    def __init__(self, daemon: Daemon, *args: str, rows: int = 0, cols: int = 0) -> None:
        import pty
        import struct
        import termios

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.environ.update(daemon.env())
            os.execv(DOCKER, [DOCKER, *args])
        if rows and cols:
            import fcntl

            fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.out = b""

    def read_until(self, marker: bytes, timeout_s: float = 15.0) -> bytes:
        import select

        deadline = time.monotonic() + timeout_s
        while marker not in self.out and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.out += os.read(self.fd, 4096)
                except OSError:
                    break
        return self.out

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def detach(self) -> tuple[int, bool]:
        """ctrl-p ctrl-q as a user types them: (the CLI's exit code, whether it printed the escape
        "error" that `docker attach` and `docker exec` end with; `docker run -it` hides it)."""
        self.send(b"\x10\x11")
        code = self.wait()
        ending = b"read escape sequence"
        return code, code != 0 and ending in self.read_until(ending, timeout_s=5)

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        os.close(self.fd)
        if self.pid:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
