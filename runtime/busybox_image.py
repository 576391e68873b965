"""Build `busybox:latest` from Debian's busybox-static, with pydock's own code, offline.

    python -m runtime.busybox_image OUT.tar

One layer: `/bin/busybox` with every applet (`busybox --list`) linked beside it, `/etc/passwd`
(root, nobody), `/etc/group`, `/tmp` (1777), `/root`, `/dev`, `/proc`, `/sys`, `/var/www`;
`CMD ["sh"]` and Docker's default PATH. Every mtime and the creation date are fixed, so the same
busybox binary always gives the same image ID. The archive has the layout `docker save` writes
(manifest.json + OCI layout), so `docker load` and pydock's loader take it.

A build tool (blocking, sync); the daemon never imports it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

from runtime.sysinfo import GOARCH

BUSYBOX = Path("/bin/busybox")
MTIME = 1_704_067_200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def _info(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, linkname
    info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "", ""
    return info


def applets(busybox: Path = BUSYBOX) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, check=True, timeout=30).stdout
    names = sorted({line.strip() for line in out.decode().splitlines() if line.strip()})
    return [n for n in names if n != "busybox" and "/" not in n and n not in (".", "..")]


def layer_tar(busybox: Path = BUSYBOX) -> bytes:
    """The single layer, as an uncompressed, deterministic tar."""
    binary = busybox.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, mode in (("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("proc", 0o555), ("root", 0o700),
                           ("sys", 0o555), ("tmp", 0o1777), ("usr", 0o755), ("usr/bin", 0o755),
                           ("usr/sbin", 0o755), ("var", 0o755), ("var/www", 0o755)):  # fmt: skip
            tf.addfile(_info(f"{name}/", tarfile.DIRTYPE, mode))
        tf.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), io.BytesIO(binary))
        for applet in applets(busybox):
            tf.addfile(_info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, linkname="busybox"))
        tf.addfile(_info("etc/group", tarfile.REGTYPE, 0o644, len(GROUP)), io.BytesIO(GROUP))
        tf.addfile(_info("etc/passwd", tarfile.REGTYPE, 0o644, len(PASSWD)), io.BytesIO(PASSWD))
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_archive(
    out: Path,
    busybox: Path = BUSYBOX,
    tag: str = "busybox:latest",
    config_extra: dict[str, object] | None = None,
) -> str:
    """Write the image archive to `out`; returns the image ID. `config_extra` adds to the image's
    container config (tests: a HEALTHCHECK, a USER, ...)."""
    layer = layer_tar(busybox)
    diff_id = _digest(layer)
    config = json.dumps(
        {
            "architecture": GOARCH.get(platform.machine(), platform.machine()),
            "config": {"Env": [PATH_ENV], "Cmd": ["sh"], **(config_extra or {})},
            "created": CREATED,
            "history": [{"created": CREATED, "created_by": "pydock busybox_image: Debian busybox-static"}],
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        separators=(",", ":"),
    ).encode()
    image_id = _digest(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": image_id,
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": len(layer)}
            ],
        },
        separators=(",", ":"),
    ).encode()
    repo, _, tag_name = tag.rpartition(":")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": f"docker.io/library/{repo}:{tag_name}",
                        "org.opencontainers.image.ref.name": tag_name,
                    },
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    docker_manifest = json.dumps(
        [
            {
                "Config": f"blobs/sha256/{image_id[7:]}",
                "RepoTags": [tag],
                "Layers": [f"blobs/sha256/{diff_id[7:]}"],
            }
        ],
        separators=(",", ":"),
    ).encode()
    files = [
        (f"blobs/sha256/{image_id[7:]}", config),
        (f"blobs/sha256/{diff_id[7:]}", layer),
        (f"blobs/sha256/{_digest(manifest)[7:]}", manifest),
        ("index.json", index),
        ("manifest.json", docker_manifest),
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("repositories", json.dumps({repo: {tag_name: diff_id[7:]}}, separators=(",", ":")).encode()),
    ]
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in ("blobs/", "blobs/sha256/"):
            tf.addfile(_info(name, tarfile.DIRTYPE, 0o755))
        for name, data in files:
            tf.addfile(_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    os.replace(tmp, out)
    return image_id


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m runtime.busybox_image OUT.tar", file=sys.stderr)
        return 2
    if not BUSYBOX.is_file():
        print(f"{BUSYBOX} not found: install Debian's busybox-static", file=sys.stderr)
        return 1
    image_id = build_archive(Path(args[0]))
    print(f"busybox:latest {image_id} -> {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
