"""Debian's docker-compose 1.29 (docker-py underneath) drives `examples/compose/` on a live pydockd:
up with a healthcheck gate, ps, logs -f, exec, scale, restart policy, down -v.

The project name and the published port are this run's own; `down -v --remove-orphans` and a
sweep by the project label run whatever happens.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.daemon import REPO, Daemon, wait_for
from tests.integration.registry import free_port

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "compose"
COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
GREETING = "hello from pydock"  # examples/compose/web.env


@dataclass
class Project:
    daemon: Daemon
    name: str
    port: int

    def env(self) -> dict[str, str]:
        return {**self.daemon.env(), "WEB_PORT": str(self.port), "COMPOSE_INTERACTIVE_NO_CLI": "1"}

    def argv(self, *args: str) -> list[str]:
        return [COMPOSE, "--ansi", "never", "-p", self.name, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(*args), cwd=EXAMPLE, env=self.env(), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker-compose {' '.join(args)} exited {result.returncode}\nstdout: {result.stdout}\n"
                f"stderr: {result.stderr}\n--- pydockd ---\n{self.daemon.log_tail(40)}"
            )
        return result

    def containers(self, service: str | None = None, all: bool = False) -> list[Any]:
        client = self.daemon.client()
        try:
            labels = [f"com.docker.compose.project={self.name}"]
            if service:
                labels.append(f"com.docker.compose.service={service}")
            return list(client.containers.list(all=all, filters={"label": labels}))
        finally:
            client.close()

    def fetch(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as response:
            return str(response.read().decode())


@pytest.fixture
def project(daemon: Daemon) -> Iterator[Project]:
    p = Project(daemon, f"pdc{secrets.token_hex(3)}", free_port())
    try:
        yield p
    finally:
        p.run("down", "-v", "--remove-orphans", "-t", "1", check=False)
        client = daemon.client()
        try:
            for c in client.containers.list(
                all=True, filters={"label": f"com.docker.compose.project={p.name}"}
            ):
                c.remove(force=True, v=True)
            for n in client.networks.list():
                if n.name.startswith(f"{p.name}_"):
                    n.remove()
            for v in client.volumes.list():
                if v.name.startswith(f"{p.name}_"):
                    v.remove(force=True)
        finally:
            client.close()


def read_lines_until(proc: subprocess.Popen[str], wanted: str, timeout_s: float) -> list[str]:
    """Lines of a running `logs -f` until one contains `wanted` (a reader thread; bounded)."""
    lines: list[str] = []
    found = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if wanted in line:
                found.set()
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    found.wait(timeout_s)
    return lines if found.is_set() else []


def test_compose_project_end_to_end(project: Project) -> None:
    # up: web becomes healthy before client starts (depends_on: condition: service_healthy)
    up = project.run("up", "-d")
    assert "Creating network" in up.stderr and "Creating volume" in up.stderr, up.stderr
    web = project.containers("web")
    client = project.containers("client")
    assert len(web) == 1 and len(client) == 1
    web_state = web[0].attrs["State"]
    assert web_state["Health"]["Status"] == "healthy", web_state
    # compose itself waited for "healthy" before creating client (it fails the `up` otherwise)
    assert any(h["ExitCode"] == 0 for h in web_state["Health"]["Log"]), web_state

    # the published port on 127.0.0.1 serves the page written into the named volume
    assert project.fetch().strip() == GREETING

    # ps: both up, web healthy
    ps = project.run("ps").stdout
    rows = {line.split()[0]: line for line in ps.splitlines()[2:] if line.strip()}
    assert set(rows) == {f"{project.name}_web_1", f"{project.name}_client_1"}, ps
    assert "Up (healthy)" in rows[f"{project.name}_web_1"], ps
    assert f"127.0.0.1:{project.port}->80/tcp" in rows[f"{project.name}_web_1"], ps
    assert "Up" in rows[f"{project.name}_client_1"], ps

    # logs -f: the client reaches web by its service name (bounded: stop reading once seen)
    logs = subprocess.Popen(
        project.argv("logs", "-f", "--no-color", "client"), cwd=EXAMPLE, env=project.env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        lines = read_lines_until(logs, f"got: {GREETING}", 60)
        assert lines and lines[-1].startswith("client_1  | got: "), lines
    finally:
        logs.terminate()
        logs.wait(30)
        assert logs.stdout is not None
        logs.stdout.close()

    # exec: in the client container, by service name again (and a non-zero exit comes back)
    out = project.run("exec", "-T", "client", "wget", "-q", "-O", "-", "http://web/").stdout
    assert out.strip() == GREETING
    failed = project.run("exec", "-T", "client", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3

    # scale: two clients, both reaching web
    project.run("up", "-d", "--scale", "client=2")
    clients = project.containers("client")
    assert sorted(c.name for c in clients) == [f"{project.name}_client_1", f"{project.name}_client_2"]
    second = project.run("exec", "-T", "--index=2", "client", "wget", "-q", "-O", "-", "http://web/").stdout
    assert second.strip() == GREETING

    # restart policies: web stays up unless stopped; client (on-failure) exits when web is gone
    # and is restarted by pydock until web answers again
    assert web[0].attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    first_client = clients[0]
    assert first_client.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    project.run("stop", "-t", "1", "web")

    def restarted() -> bool:
        first_client.reload()
        return bool(first_client.attrs["RestartCount"] >= 1)

    wait_for(restarted, 60, "client to be restarted by its on-failure policy")
    project.run("start", "web")
    wait_for(lambda: project.fetch().strip() == GREETING, 60, "web to serve again")

    def client_running() -> bool:
        first_client.reload()
        return bool(first_client.status == "running")

    wait_for(client_running, 60, "client back up")

    # down -v: containers, the project network and the named volume are gone
    down = project.run("down", "-v", "-t", "1")
    assert f"Removing network {project.name}_default" in down.stderr, down.stderr
    assert f"Removing volume {project.name}_site" in down.stderr, down.stderr
    assert project.containers(all=True) == []
    client_api = project.daemon.client()
    try:
        assert not [n for n in client_api.networks.list() if n.name == f"{project.name}_default"]
        assert not [v for v in client_api.volumes.list() if v.name == f"{project.name}_site"]
    finally:
        client_api.close()


def test_compose_config_is_valid_without_a_daemon() -> None:
    """The example stays a valid 2.4 file (checked by compose itself, offline)."""
    env = {**os.environ, "WEB_PORT": "18080", "DOCKER_HOST": "unix:///nonexistent.sock"}
    result = subprocess.run(
        [COMPOSE, "config", "-q"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved = subprocess.run(
        [COMPOSE, "config"], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "127.0.0.1:18080:80/tcp" in resolved
    assert "condition: service_healthy" in resolved
    assert "GREETING: hello from pydock" in resolved and "TARGET_URL: http://web/" in resolved
