"""A real registry for tests: Debian's `docker-registry` on 127.0.0.1 with a temp storage dir.

    with running_registry(auth=("user", "pw")) as reg:
        reg.copy_archive(archive_path, "busybox:latest")
        reg.host  # "127.0.0.1:PORT"

Images are filled with `skopeo copy` (the registry speaks plain HTTP; loopback is insecure by
default for pydock). Helpers also build multi-layer archives and put manifest lists, so tests
need nothing from the internet. Importable by any test; the process is stopped by PID.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
MT_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry (via `htpasswd` from apache2-utils)."""
    out = subprocess.run(
        ["htpasswd", "-nbB", user, password], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return out.strip()


@dataclass
class Registry:
    root: Path
    auth: tuple[str, str] | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.root / 'storage'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.host}",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if self.auth is not None:
            (self.root / "htpasswd").write_text(htpasswd_line(*self.auth) + "\n")
            lines += ["auth:", "  htpasswd:", "    realm: pydock-test", f"    path: {self.root / 'htpasswd'}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 20.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "config.yml"
        cfg.write_text(self.config())
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited: {(self.root / 'registry.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/", timeout=2).status_code in (200, 401):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("docker-registry did not answer /v2/")
            time.sleep(0.05)

    def blob_fetches(self, repo: str, digest: str) -> int:
        """How many times the access log shows a GET of this blob (a HEAD does not count)."""
        log = (self.root / "registry.log").read_text(errors="replace")
        return log.count(f'"GET /v2/{repo}/blobs/{digest} ')

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    # --- filling it -----------------------------------------------------------------------------

    def _creds(self, flag: str) -> list[str]:
        return [flag, f"{self.auth[0]}:{self.auth[1]}"] if self.auth else []

    def copy_archive(self, archive: Path, name: str, fmt: str = "docker-archive") -> None:
        """`skopeo copy` an archive (docker-archive or oci-archive) to `name` (repo:tag) here."""
        subprocess.run(
            [SKOPEO, "copy", "--quiet", "--dest-tls-verify=false", *self._creds("--dest-creds"),
             f"{fmt}:{archive}", f"docker://{self.host}/{name}"],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip

    def client(self) -> httpx.Client:
        auth = httpx.BasicAuth(*self.auth) if self.auth else None
        return httpx.Client(base_url=self.url, auth=auth, timeout=60)

    def manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        with self.client() as c:
            r = c.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": f"{MT_MANIFEST}, {MT_LIST}"})
            r.raise_for_status()
            return r.content, r.headers["docker-content-digest"]

    def put_manifest_list(self, repo: str, tag: str, entries: list[tuple[str, str, str]]) -> str:
        """Put a manifest list of (manifest digest, os, architecture) entries (all in `repo`)."""
        manifests = []
        with self.client() as c:
            for digest, os_name, arch in entries:
                r = c.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": MT_MANIFEST})
                r.raise_for_status()
                manifests.append(
                    {"mediaType": MT_MANIFEST, "digest": digest, "size": len(r.content),
                     "platform": {"os": os_name, "architecture": arch}}
                )  # fmt: skip
            body = json.dumps({"schemaVersion": 2, "mediaType": MT_LIST, "manifests": manifests}).encode()
            r = c.put(f"/v2/{repo}/manifests/{tag}", content=body, headers={"Content-Type": MT_LIST})
            r.raise_for_status()
        return "sha256:" + hashlib.sha256(body).hexdigest()


def layer_tar(files: dict[str, bytes], mtime: int = 1_700_000_000) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({str(Path(n).parent) for n in files if str(Path(n).parent) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tf.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_docker_archive(
    out: Path, layers: list[bytes], tag: str, config: dict[str, Any] | None = None
) -> str:
    """Write a docker-save archive of an image made of these layer tars; returns the image ID."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"], **(config or {})},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(layers))
        ],
    }
    cfg_bytes = json.dumps(cfg).encode()
    image_id = "sha256:" + hashlib.sha256(cfg_bytes).hexdigest()
    manifest = [
        {
            "Config": f"{image_id[7:]}.json",
            "RepoTags": [tag],
            "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids],
        }
    ]
    with tarfile.open(out, "w") as tf:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        add(f"{image_id[7:]}.json", cfg_bytes)
        for d, layer in zip(diff_ids, layers, strict=True):
            add(f"{d[7:]}/layer.tar", layer)
        add("manifest.json", json.dumps(manifest).encode())
    return image_id


def registry_auth_header(user: str, password: str, server: str) -> str:
    raw = json.dumps({"username": user, "password": password, "serveraddress": server}).encode()
    return base64.urlsafe_b64encode(raw).decode()


@contextlib.contextmanager
def running_registry(auth: tuple[str, str] | None = None) -> Iterator[Registry]:
    root = Path(tempfile.mkdtemp(prefix="pdt-reg-", dir="/tmp"))
    reg = Registry(root, auth)
    try:
        reg.start()
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(root, ignore_errors=True)


__all__ = ["Registry", "build_docker_archive", "layer_tar", "registry_auth_header", "running_registry"]
