"""Hostile image archives through the real API: `docker load` (Docker and OCI layouts) and
`docker import`, with layers the test builds itself.

Each hostile layer (`../` and absolute names, symlinks and hardlinks pointing out, writes and
whiteouts through symlinks, device files, a huge PAX header, a decompression bomb, truncated
streams) is sent three ways. The host outside the data root is never read or written: canary
files outside are unchanged, no file named after the run appears outside, no layer holds the
canary's secret. A refused archive is a 400 with a message, registers nothing, and leaves no
partial files in the data root. The data root sits on a small tmpfs so that the bomb meets the
disk-space guard in seconds. Counts are in the terminal summary.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fuzzstats import count
from tests.integration.daemon import Daemon, running_daemon

SUITE = "hostile archives (docker load / import)"
TOKEN = secrets.token_hex(4)
ESCAPE = f"escape-{TOKEN}"
SECRET = f"CANARY-SECRET-{TOKEN}".encode()
TMPFS_SIZE = "128m"
BOMB_BYTES = 1 << 30  # 1 GiB of zeros, ~1 MiB gzip'd: far more than the tmpfs holds
UP = "../" * 12


@pytest.fixture(scope="module")
def canary() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pdt-canary-", dir="/tmp"))
    (path / "canary.txt").write_bytes(SECRET)
    (path / "victim").mkdir()
    (path / "victim" / "keep").write_bytes(SECRET)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tmpfs_daemon() -> Iterator[Daemon]:
    root = Path(tempfile.mkdtemp(prefix="pdt-", dir="/tmp"))
    data = root / "data"
    data.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0711", "tmpfs", str(data)], check=True
    )
    try:
        with running_daemon(root=root) as d:
            yield d
    finally:  # running_daemon's cleanup unmounts what is under its root; this is a second net
        subprocess.run(["umount", "-l", str(data)], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


# --- building layers ------------------------------------------------------------------------------


def _member(
    tf: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _layer(build: Callable[[tarfile.TarFile], None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        build(tf)
    return buf.getvalue()


def hostile_layers(canary_dir: Path) -> dict[str, bytes]:
    c = str(canary_dir).lstrip("/")
    e = ESCAPE
    layers: dict[str, Callable[[tarfile.TarFile], None]] = {
        "benign": lambda tf: (_member(tf, "etc", tarfile.DIRTYPE), _member(tf, "etc/hello", data=b"hi")),
        "dotdot": lambda tf: _member(tf, f"{UP}{c}/{e}-dotdot", data=b"x"),
        "dotdot-mid": lambda tf: _member(tf, f"a/b/{UP}{c}/{e}-mid", data=b"x"),
        "absolute": lambda tf: _member(tf, f"/{c}/{e}-abs", data=b"x"),
        "symlink-abs-write": lambda tf: (
            _member(tf, "out", tarfile.SYMTYPE, linkname=f"/{c}"),
            _member(tf, f"out/{e}-symabs", data=b"x"),
        ),
        "symlink-rel-write": lambda tf: (
            _member(tf, "out", tarfile.SYMTYPE, linkname=f"{UP}{c}"),
            _member(tf, f"out/{e}-symrel", data=b"x"),
        ),
        "symlink-chain-write": lambda tf: (
            _member(tf, "a", tarfile.SYMTYPE, linkname="."),
            _member(tf, "b", tarfile.SYMTYPE, linkname=f"a/{UP}{c}"),
            _member(tf, f"b/{e}-chain", data=b"x"),
        ),
        "symlink-then-overwrite": lambda tf: (
            _member(tf, "victim", tarfile.SYMTYPE, linkname=f"/{c}/canary.txt"),
            _member(tf, "victim", data=b"pwned"),
        ),
        "symlink-dir-then-file": lambda tf: (
            _member(tf, "v", tarfile.SYMTYPE, linkname=f"/{c}/victim"),
            _member(tf, "v/keep", data=b"pwned"),
        ),
        "hardlink-abs": lambda tf: _member(tf, "hl", tarfile.LNKTYPE, linkname=f"/{c}/canary.txt"),
        "hardlink-rel": lambda tf: _member(tf, "hl", tarfile.LNKTYPE, linkname=f"{UP}{c}/canary.txt"),
        "hardlink-via-symlink": lambda tf: (
            _member(tf, "d", tarfile.SYMTYPE, linkname=f"/{c}"),
            _member(tf, "hl", tarfile.LNKTYPE, linkname="d/canary.txt"),
        ),
        "whiteout-through-symlink": lambda tf: (
            _member(tf, "w", tarfile.SYMTYPE, linkname=f"/{c}"),
            _member(tf, "w/.wh.canary.txt"),
        ),
        "opaque-through-symlink": lambda tf: (
            _member(tf, "w", tarfile.SYMTYPE, linkname=f"/{c}/victim"),
            _member(tf, "w/.wh..wh..opq"),
        ),
        "whiteout-dotdot": lambda tf: _member(tf, f"{UP}{c}/.wh.canary.txt"),
        "device-files": lambda tf: (
            _member(tf, "null", tarfile.CHRTYPE, devmajor=1, devminor=3),
            _member(tf, "disk", tarfile.BLKTYPE, devmajor=8, devminor=0),
            _member(tf, "fifo", tarfile.FIFOTYPE),
        ),
        "huge-pax-header": lambda tf: tf.addfile(
            _pax_info("big", {"comment": "x" * (2 << 20)}), io.BytesIO(b"")
        ),
        "long-gnu-name": lambda tf: _member(tf, "d/" * 150 + "f", data=b"x"),
    }
    out = {name: _layer(build) for name, build in layers.items()}
    out["long-gnu-name"] = _layer(layers["long-gnu-name"], tarfile.GNU_FORMAT)
    full = out["benign"] + _layer(lambda tf: _member(tf, "big", data=b"y" * 100_000))
    out["truncated-tar"] = _layer(lambda tf: _member(tf, "big", data=b"y" * 100_000))[:50_000]
    out["truncated-gzip"] = gzip.compress(full)[:-200]
    out["decompression-bomb"] = _bomb()
    return out


def _pax_info(name: str, headers: dict[str, str]) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.pax_headers = headers
    return info


def _bomb() -> bytes:
    buf = io.BytesIO()
    zeros = b"\0" * (1 << 20)
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1) as gz:
        info = tarfile.TarInfo("zeros")
        info.size = BOMB_BYTES
        gz.write(info.tobuf(tarfile.PAX_FORMAT))
        for _ in range(BOMB_BYTES // len(zeros)):
            gz.write(zeros)
        gz.write(b"\0" * 1024)
    return buf.getvalue()


# --- packaging them -----------------------------------------------------------------------------


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _diff_id(layer: bytes) -> str:
    raw = layer
    if layer[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError):
            raw = gzip.decompress(layer)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _config(layer: bytes) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [_diff_id(layer)]},
        }
    ).encode()


def docker_archive(layer: bytes, tag: str) -> bytes:
    config = _config(layer)
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": ["l1/layer.tar"]}]
    return _tar({config_name: config, "l1/layer.tar": layer, "manifest.json": json.dumps(manifest).encode()})


def oci_archive(layer: bytes, tag: str) -> bytes:
    config = _config(layer)

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if layer[:2] == b"\x1f\x8b" else "")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": [{"mediaType": media, "digest": digest(layer), "size": len(layer)}],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest(manifest),
                "size": len(manifest),
                "annotations": {"io.containerd.image.name": f"docker.io/library/{tag}"},
            }
        ],
    }
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode()}
    for blob in (config, manifest, layer):
        files[f"blobs/sha256/{digest(blob)[7:]}"] = blob
    return _tar(files)


# --- the checks ---------------------------------------------------------------------------------


def _outside_state(canary_dir: Path) -> dict[str, object]:
    """What must not change: the canary tree (names, modes, link counts, bytes), and no file
    named after this run in the places an escape would land."""
    tree: dict[str, object] = {}
    for path in sorted([canary_dir, *canary_dir.rglob("*")]):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        tree[str(path)] = (st.st_mode, st.st_nlink, st.st_ino, data)
    stray = []
    for where in (Path("/"), Path("/tmp"), canary_dir, canary_dir / "victim"):
        stray += [str(p) for p in where.iterdir() if p.name.startswith(ESCAPE)]
    tree["stray"] = stray
    return tree


def _data_files(daemon: Daemon) -> set[str]:
    root = daemon.data_root
    return {str(p.relative_to(root)) for p in root.rglob("*") if "containers" not in p.parts}


def _holds_secret(daemon: Daemon) -> list[str]:
    found = []
    for path in daemon.data_root.rglob("*"):
        small = path.is_file() and not path.is_symlink() and path.stat().st_size < (4 << 20)
        if small and SECRET in path.read_bytes():
            found.append(str(path))
    return found


CASES = [
    "benign", "dotdot", "dotdot-mid", "absolute", "symlink-abs-write", "symlink-rel-write",
    "symlink-chain-write", "symlink-then-overwrite", "symlink-dir-then-file", "hardlink-abs",
    "hardlink-rel", "hardlink-via-symlink", "whiteout-through-symlink", "opaque-through-symlink",
    "whiteout-dotdot", "device-files", "huge-pax-header", "long-gnu-name", "truncated-tar",
    "truncated-gzip", "decompression-bomb",
]  # fmt: skip
MUST_REFUSE = {
    "dotdot", "dotdot-mid", "symlink-abs-write", "symlink-rel-write", "symlink-chain-write",
    "symlink-dir-then-file", "hardlink-abs", "hardlink-rel", "hardlink-via-symlink",
    "whiteout-through-symlink", "opaque-through-symlink", "whiteout-dotdot", "huge-pax-header",
    "truncated-tar", "truncated-gzip", "decompression-bomb",
}  # fmt: skip


@pytest.fixture(scope="module")
def layers(canary: Path) -> dict[str, bytes]:
    return hostile_layers(canary)


@pytest.mark.parametrize("way", ["docker-save", "oci-layout", "import"])
@pytest.mark.parametrize("case", CASES)
def test_hostile_archive(
    tmpfs_daemon: Daemon, canary: Path, layers: dict[str, bytes], case: str, way: str
) -> None:
    d = tmpfs_daemon
    tag = f"hostile-{case}:{way}"
    layer = layers[case]
    if way == "docker-save":
        body, path = docker_archive(layer, tag), "/images/load?quiet=1"
    elif way == "oci-layout":
        body, path = oci_archive(layer, tag), "/images/load?quiet=1"
    else:
        body, path = layer, f"/images/create?fromSrc=-&repo=hostile-{case}&tag={way}"
    count(SUITE, "archives built")
    before_outside = _outside_state(canary)
    before_files = _data_files(d)
    before_images = {i["Id"] for i in d.json("GET", "/images/json?all=1")}

    r = d.request("POST", path, content=body, headers={"Content-Type": "application/x-tar"}, timeout=120)
    count(SUITE, "requests sent")
    text = r.text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()] if r.status_code == 200 else []
    in_band_error = next((m["error"] for m in lines if "error" in m), None)
    refused = r.status_code != 200 or in_band_error is not None

    escaped = _outside_state(canary) != before_outside or bool(_holds_secret(d))
    count(SUITE, "escapes found", int(escaped))
    assert not escaped, f"{case} via {way} reached outside the data root: {_holds_secret(d)}"
    assert r.status_code < 500, f"{case} via {way}: {r.status_code} {text[:300]}"
    if case == "benign":
        assert not refused, f"the benign control was refused via {way}: {text[:300]}"
    if case in MUST_REFUSE:
        assert refused, f"{case} via {way} was accepted: {text[:300]}"
    if refused:
        message = r.json()["message"] if r.status_code != 200 else in_band_error
        assert message and "internal error" not in message, f"{case} via {way}: unclear error {text[:300]}"
        assert {i["Id"] for i in d.json("GET", "/images/json?all=1")} == before_images, (
            "an image was registered"
        )
        leftovers = _data_files(d) - before_files
        assert not leftovers, f"{case} via {way} left partial files: {sorted(leftovers)[:10]}"
    else:
        for image_id in {i["Id"] for i in d.json("GET", "/images/json?all=1")} - before_images:
            d.request("DELETE", f"/images/{image_id}?force=1")
    assert d.raw_ping()


def test_device_nodes_stay_inside_the_data_root(tmpfs_daemon: Daemon) -> None:
    """Device members, where accepted, are nodes in a layer directory and nothing else."""
    for path in tmpfs_daemon.data_root.rglob("*"):
        if path.is_block_device() or path.is_char_device():
            assert str(path).startswith(str(tmpfs_daemon.data_root))
    count(SUITE, "failures found", 0)
    assert os.path.ismount(tmpfs_daemon.data_root)
