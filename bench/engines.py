"""The daemons under test, as the benchmark sees them: a socket the docker CLI and HTTP talk to,
and the processes whose memory counts as "daemon side".

`Engine` is the common face; `PydockEngine` starts a throwaway `pydockd` (its own socket, data
root, exec root, bridge, subnet and chain prefix, via the integration tests' `Daemon`) and
`bench.dockerd.DockerdEngine` a throwaway real dockerd. Neither touches anything it did not make.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.memory import process_tree
from tests.integration.daemon import Daemon

DOCKER = shutil.which("docker", path="/usr/local/bin:" + os.environ.get("PATH", "")) or "docker"
API = "/v1.41"
BENCH_LABEL = "pydock.bench"


class Engine:
    """A Docker-API daemon under test."""

    name = "engine"

    def __init__(self, sock: Path, config_dir: Path) -> None:
        self.sock = sock
        self.config_dir = config_dir
        self._http: httpx.Client | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def daemon_pids(self) -> list[int]:
        """Every daemon-side process (not the containers' own processes)."""
        return process_tree(self.pid)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.config_dir)
        return env

    def docker(
        self, *args: str, check: bool = True, timeout_s: float = 300.0, capture: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the docker CLI against this engine."""
        result = subprocess.run(
            [DOCKER, *args],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{self.name}: docker {' '.join(args)} exited {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result

    # --- HTTP -------------------------------------------------------------------------------------

    def http(self) -> httpx.Client:
        """A client kept open (one connection) for the whole run."""
        if self._http is None:
            self._http = self.new_http()
        return self._http

    def new_http(self, timeout_s: float = 300.0) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.sock)), base_url="http://docker", timeout=timeout_s
        )

    def api(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204, 304), **kw: Any) -> Any:
        r = self.http().request(method, API + path, **kw)
        if r.status_code not in ok:
            raise RuntimeError(f"{self.name}: {method} {path} -> {r.status_code} {r.text[:300]}")
        if r.headers.get("content-type", "").startswith("application/json") and r.content:
            return r.json()
        return r.content

    def create(
        self,
        cmd: list[str],
        *,
        image: str = "busybox:latest",
        name: str | None = None,
        ports: dict[str, list[dict[str, str]]] | None = None,
        client: httpx.Client | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "Image": image,
            "Cmd": cmd,
            "Labels": {BENCH_LABEL: "1"},
            "HostConfig": {"PortBindings": ports or {}},
            "ExposedPorts": {p: {} for p in (ports or {})},
        }
        c = client or self.http()
        r = c.post(f"{API}/containers/create", params={"name": name} if name else None, json=body)
        if r.status_code != 201:
            raise RuntimeError(f"{self.name}: create -> {r.status_code} {r.text[:300]}")
        cid: str = r.json()["Id"]
        return cid

    def start(self, cid: str, client: httpx.Client | None = None) -> None:
        c = client or self.http()
        r = c.post(f"{API}/containers/{cid}/start")
        if r.status_code not in (204, 304):
            raise RuntimeError(f"{self.name}: start -> {r.status_code} {r.text[:300]}")

    def run_detached(self, cmd: list[str], client: httpx.Client | None = None, **kw: Any) -> str:
        cid = self.create(cmd, client=client, **kw)
        self.start(cid, client=client)
        return cid

    def remove(self, cid: str, client: httpx.Client | None = None) -> None:
        c = client or self.http()
        r = c.delete(f"{API}/containers/{cid}", params={"force": "1", "v": "1"})
        if r.status_code not in (204, 404):
            raise RuntimeError(f"{self.name}: rm -f -> {r.status_code} {r.text[:300]}")

    def inspect(self, cid: str) -> dict[str, Any]:
        data: dict[str, Any] = self.api("GET", f"/containers/{cid}/json")
        return data

    def bench_containers(self) -> list[str]:
        filters = json.dumps({"label": [BENCH_LABEL]})
        items = self.api("GET", "/containers/json", params={"all": "1", "filters": filters})
        return [str(c["Id"]) for c in items]

    def parallel(self, fn_name: str, args: list[Any], workers: int = 4) -> list[Any]:
        """Call `self.<fn_name>(arg, client=...)` for every arg on `workers` threads and connections."""
        clients = [self.new_http() for _ in range(workers)]
        try:
            with ThreadPoolExecutor(workers) as pool:
                futures = [
                    pool.submit(getattr(self, fn_name), arg, client=clients[i % workers])
                    for i, arg in enumerate(args)
                ]
                return [f.result() for f in futures]
        finally:
            for c in clients:
                c.close()

    def remove_bench_containers(self) -> int:
        cids = self.bench_containers()
        self.parallel("remove", cids)
        return len(cids)

    def load_image(self, archive: Path) -> None:
        self.docker("load", "-q", "-i", str(archive))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


class BenchDaemon(Daemon):
    """The integration tests' throwaway pydockd, at the log level a user runs it with."""

    def args(self) -> list[str]:
        argv = super().args()
        i = argv.index("--log-level")
        argv[i + 1] = "info"
        return argv


class PydockEngine(Engine):
    name = "pydock"

    def __init__(self, root: Path, extra_args: list[str] | None = None) -> None:
        self.daemon = BenchDaemon(root / "pydock", list(extra_args or []))
        super().__init__(self.daemon.sock, root / "docker-config")

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def start_daemon(self) -> None:
        self.daemon.start()

    def close(self) -> None:
        super().close()
        leftovers = self.daemon.close()
        if leftovers:
            # pydockd keeps its bridge and chains when it stops, as dockerd does: removed here
            print(f"[bench] removed after pydockd stopped: {', '.join(leftovers)}", file=sys.stderr)
