from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime import archive, layers
from runtime.config import DaemonConfig
from runtime.errors import InvalidParameter, NoSuchImage
from runtime.events import EventBus
from runtime.images import ImageService
from tests.archives import Archive, ArchivePair


async def body_of(data: bytes | Path) -> AsyncIterator[bytes]:
    raw = data.read_bytes() if isinstance(data, Path) else data
    for i in range(0, len(raw), 1 << 16):
        yield raw[i : i + (1 << 16)]


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[ImageService]:
    service = ImageService(DaemonConfig(data_root=tmp_path), EventBus())
    await service.start()
    yield service
    await service.close()


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def store_is_empty(svc: ImageService) -> bool:
    root = svc.store.root
    leftovers = [p for d in ("layers", "blobs/sha256", "l", "imagedb") for p in (root / d).iterdir()]
    leftovers += [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    return not leftovers and not svc.store.images and not svc.store.refs


@pytest.mark.parametrize("kind", ["docker_save", "oci"])
async def test_archives_load(svc: ImageService, archives: ArchivePair, kind: str) -> None:
    archive: Archive = getattr(archives, kind)
    messages = await svc.load(body_of(archive.path))
    assert messages == [{"stream": "Loaded image: busybox:latest\n"}]
    image = svc.resolve("busybox")
    assert image.image_id == archive.image_id
    assert image.diff_ids == list(archive.diff_ids)
    top = svc.layer_dirs(image)[0]
    assert (top / "bin" / "busybox").is_file()
    assert (top / "bin" / "sh").is_symlink()


async def test_save_load_round_trip(tmp_path: Path, svc: ImageService, archives: ArchivePair) -> None:
    await svc.load(body_of(archives.docker_save.path))
    (diff_id,), image_id = archives.docker_save.diff_ids, archives.docker_save.image_id
    await svc.tag("busybox", "docker.io/library/other", "v2")
    saved = b"".join([chunk async for chunk in await svc.save(["busybox:latest", "other:v2"])])
    with tarfile.open(fileobj=io.BytesIO(saved)) as tf:
        names = set(tf.getnames())
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
    assert {
        "manifest.json",
        "index.json",
        "oci-layout",
        "repositories",
        f"blobs/sha256/{diff_id[7:]}",
    } <= names
    assert manifest[0]["RepoTags"] == ["busybox:latest", "other:v2"]
    assert {m["annotations"]["io.containerd.image.name"] for m in index["manifests"]} == {
        "docker.io/library/busybox:latest",
        "docker.io/library/other:v2",
    }
    other = ImageService(DaemonConfig(data_root=tmp_path / "second"), EventBus())
    await other.start()
    messages = await other.load(body_of(saved))
    assert messages == [{"stream": "Loaded image: busybox:latest\n"}, {"stream": "Loaded image: other:v2\n"}]
    assert other.resolve("other:v2").image_id == image_id
    # The same archive, read as an OCI layout (index.json only), names the same images.
    with tarfile.open(fileobj=io.BytesIO(saved)) as tf:
        oci_only = io.BytesIO()
        with tarfile.open(fileobj=oci_only, mode="w") as out:
            for m in tf.getmembers():
                if m.name not in ("manifest.json", "repositories"):
                    out.addfile(m, tf.extractfile(m) if m.isfile() else None)
    third = ImageService(DaemonConfig(data_root=tmp_path / "third"), EventBus())
    await third.start()
    await third.load(body_of(oci_only.getvalue()))
    assert third.resolve("busybox:latest").image_id == image_id


async def test_save_unknown_is_404_before_streaming(svc: ImageService) -> None:
    with pytest.raises(NoSuchImage):
        await svc.save(["nope"])


def docker_archive(layer: bytes, diff_id: str | None = None, tags: list[str] | None = None) -> bytes:
    cfg = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id or layers.sha256_digest(layer)]},
        }
    ).encode()
    manifest = json.dumps(
        [{"Config": "c.json", "RepoTags": tags or ["evil:1"], "Layers": ["l/layer.tar"]}]
    ).encode()
    return tar_of({"c.json": cfg, "l/layer.tar": layer, "manifest.json": manifest})


@pytest.mark.parametrize(
    "layer",
    [
        tar_of({"../../escape": b"x"}),
        tar_of({"/abs": b"x"}),
        b"\x1f\x8b\x08\x00" + b"\x00" * 20,
    ],
)
async def test_hostile_archives_register_nothing(svc: ImageService, layer: bytes) -> None:
    with pytest.raises(InvalidParameter):
        await svc.load(body_of(docker_archive(layer)))
    assert store_is_empty(svc)


async def test_diff_id_mismatch_registers_nothing(svc: ImageService) -> None:
    with pytest.raises(InvalidParameter, match="diff ID mismatch"):
        await svc.load(body_of(docker_archive(tar_of({"f": b"x"}), diff_id="sha256:" + "2" * 64)))
    assert store_is_empty(svc)


async def test_not_an_archive(svc: ImageService) -> None:
    with pytest.raises(InvalidParameter, match="invalid archive"):
        await svc.load(body_of(tar_of({"hello": b"world"})))
    with pytest.raises(InvalidParameter):
        await svc.load(body_of(b"garbage" * 1000))
    assert store_is_empty(svc)


async def test_import_with_changes(svc: ImageService) -> None:
    rootfs = tar_of({"bin/tool": b"#!/bin/sh\n", "etc/conf": b"c"})

    image_id = await svc.import_(
        body_of(gzip.compress(rootfs)),
        repo="imp",
        tag="v1",
        changes=[
            'CMD ["sh", "-c", "echo hi"]',
            "ENTRYPOINT /bin/tool",
            'ENV A=1 B="two words"',
            "ENV LEGACY some value",
            "WORKDIR /srv",
            "EXPOSE 80 53/udp",
            'LABEL a=b "c d"=e',
            "USER nobody",
            'VOLUME ["/data", "/logs"]',
        ],
        message="hello import",
    )
    image = svc.resolve("imp:v1")
    assert image.image_id == image_id
    assert image.diff_ids == [layers.sha256_digest(rootfs)]
    cfg = image.config["config"]
    assert cfg["Cmd"] == ["sh", "-c", "echo hi"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "/bin/tool"]
    assert cfg["Env"] == ["A=1", "B=two words", "LEGACY=some value"]
    assert cfg["WorkingDir"] == "/srv" and cfg["User"] == "nobody"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"a": "b", "c d": "e"}
    assert cfg["Volumes"] == {"/data": {}, "/logs": {}}
    assert image.config["comment"] == "hello import"
    assert svc.history("imp:v1")[0]["Comment"] == "hello import"


def test_bad_change_is_400() -> None:
    with pytest.raises(InvalidParameter, match="RUN is not a valid change command"):
        archive.apply_changes({}, ["RUN rm -rf /"])
