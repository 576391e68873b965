from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime import layers, reference
from runtime.config import DaemonConfig
from runtime.errors import Conflict, NoSuchImage, NotFound
from runtime.events import EventBus
from runtime.images import ImageService
from runtime.imagestore import DigestMismatch, ImageStore, LayerRecord

BUSYBOX_ID = "sha256:86bd41204673c106ec38db8db65264226893b36f3d2d228eb36c024f8eea4eeb"


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_for(diff_ids: list[str], **extra: object) -> bytes:
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"], **extra},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(diff_ids))
        ],
    }
    return json.dumps(cfg).encode()


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def fixture_body(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            yield chunk


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[ImageService]:
    service = ImageService(DaemonConfig(data_root=tmp_path), EventBus())
    await service.start()
    yield service
    await service.close()


async def add_image(
    svc: ImageService, layer_blobs: list[bytes], tag: str | None = None, **extra: object
) -> str:
    """Register an image made of these layer tars (through the real layer path)."""
    diff_ids = [layers.sha256_digest(b) for b in layer_blobs]
    chains = layers.chain_ids(diff_ids)
    with svc.store.pinned(chains):
        for i, blob in enumerate(layer_blobs):

            async def make(_job: object, i: int = i, blob: bytes = blob) -> LayerRecord:
                return await asyncio.to_thread(
                    svc.store.create_layer_blocking,
                    chains[i - 1] if i else None,
                    lambda: io.BytesIO(blob),
                    blob=None,
                )

            await svc.ensure_layer(chains[i], make)  # type: ignore[arg-type]

        record = await svc.add_image(
            config_for(diff_ids, **extra), tags=[reference.parse(tag).tagged_or_latest()] if tag else []
        )
    return record.image_id


def test_blob_writer_mismatch_lands_nothing(tmp_path: Path) -> None:
    st = ImageStore(tmp_path)
    st.recover_blocking()
    with pytest.raises(DigestMismatch):
        st.put_blob_blocking(b"hello", "sha256:" + "0" * 64)
    assert list(st.blobs_dir.iterdir()) == []
    digest = st.put_blob_blocking(b"hello")
    assert st.blob_path(digest).read_bytes() == b"hello"


def test_failed_layer_leaves_nothing(tmp_path: Path) -> None:
    st = ImageStore(tmp_path)
    st.recover_blocking()
    evil = layer_tar({"../escape": b"x"})
    with pytest.raises(layers.InvalidLayer):
        st.create_layer_blocking(None, lambda: io.BytesIO(evil), blob=None)
    assert list(st.layers_dir.iterdir()) == []
    assert list(st.blobs_dir.iterdir()) == []
    assert list(st.links_dir.iterdir()) == []
    good = layer_tar({"f": b"1"})
    with pytest.raises(layers.InvalidLayer, match="diff ID mismatch"):
        st.create_layer_blocking(
            None, lambda: io.BytesIO(good), blob=None, expected_diff_id="sha256:" + "1" * 64
        )
    assert list(st.layers_dir.iterdir()) == [] and list(st.blobs_dir.iterdir()) == []


async def test_recover_sweeps_leftovers(tmp_path: Path, svc: ImageService) -> None:
    image_id = await add_image(svc, [layer_tar({"a": b"1"})], "t:1")
    root = svc.store.root
    (root / "layers" / ".tmp-deadbeef" / "diff").mkdir(parents=True)
    (root / "blobs" / "sha256" / ".tmp-half").write_bytes(b"half")
    (root / "l" / "DANGLING").symlink_to("../layers/nope/diff")
    (root / ".tmp-upload-x").write_bytes(b"spool")
    again = ImageService(DaemonConfig(data_root=tmp_path), EventBus())
    await again.start()
    assert again.resolve("t:1").image_id == image_id
    assert not (root / "layers" / ".tmp-deadbeef").exists()
    assert not (root / "blobs" / "sha256" / ".tmp-half").exists()
    assert not (root / "l" / "DANGLING").is_symlink()
    assert not (root / ".tmp-upload-x").exists()
    dirs = again.layer_dirs(again.resolve("t:1"))
    assert [d.resolve() for d in dirs] == [
        again.store.layer_diff_dir(c).resolve() for c in reversed(again.resolve("t:1").chain_ids)
    ]
    assert (dirs[0] / "a").read_bytes() == b"1"


async def test_image_with_missing_layer_is_dropped_at_startup(tmp_path: Path, svc: ImageService) -> None:
    await add_image(svc, [layer_tar({"a": b"1"})], "t:1")
    for layer in list(svc.store.layers.values()):
        os.rename(svc.store.layers_dir / layer.chain_id[7:], svc.store.layers_dir / "moved")
    again = ImageService(DaemonConfig(data_root=tmp_path), EventBus())
    await again.start()
    with pytest.raises(NoSuchImage):
        again.resolve("t:1")


async def test_resolve_forms(svc: ImageService) -> None:
    image_id = await add_image(svc, [layer_tar({"a": b"1"})], "docker.io/library/app:v1")
    hexid = image_id[7:]
    for ref in ("app:v1", "docker.io/library/app:v1", image_id, hexid, hexid[:12], "sha256:" + hexid[:8]):
        assert svc.resolve(ref).image_id == image_id
    with pytest.raises(NoSuchImage, match=r"No such image: app$"):
        svc.resolve("app")
    with pytest.raises(NotFound, match="No such image: nope:1"):
        svc.resolve("nope:1")
    with pytest.raises(NotFound, match=r"no such image: app: No such image: app:latest"):
        svc.inspect("app")


async def test_shared_layers_stored_once_and_refcounted(svc: ImageService) -> None:
    base = layer_tar({"base": b"b"})
    a = await add_image(svc, [base, layer_tar({"a": b"a"})], "a:1")
    b = await add_image(svc, [base, layer_tar({"b": b"b"})], "b:1")
    base_chain = layers.sha256_digest(base)
    assert svc.store.layer_refcount(base_chain) == 2
    assert len(svc.store.layers) == 3
    out = await svc.remove("a:1")
    assert out[0] == {"Untagged": "a:1"} and {"Deleted": a} in out
    assert base_chain in svc.store.layers
    out = await svc.remove("b:1")
    assert {"Deleted": b} in out and {"Deleted": base_chain} in out
    assert svc.store.layers == {}
    assert [p for p in svc.store.blobs_dir.iterdir()] == []
    assert [p for p in svc.store.links_dir.iterdir()] == []


async def test_concurrent_layer_jobs_run_once(svc: ImageService) -> None:
    blob = layer_tar({"x": b"x" * 1000})
    chain = layers.sha256_digest(blob)
    calls = 0
    gate = asyncio.Event()

    async def make(_job: object) -> LayerRecord:
        nonlocal calls
        calls += 1
        await gate.wait()
        return await asyncio.to_thread(
            svc.store.create_layer_blocking, None, lambda: io.BytesIO(blob), blob=None
        )

    waiters = [asyncio.ensure_future(svc.ensure_layer(chain, make)) for _ in range(5)]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one waiter leaving does not cancel the shared job
    gate.set()
    results = await asyncio.gather(*waiters[1:])
    assert calls == 1
    assert {r.chain_id for r in results} == {chain}


async def test_rmi_rules(svc: ImageService) -> None:
    image_id = await add_image(svc, [layer_tar({"a": b"1"})], "one:1")
    await svc.tag("one:1", "docker.io/library/two", "2")
    users: list[tuple[str, bool]] = [("c" * 64, False)]
    svc.set_usage_probe(lambda i: users if i == image_id else [])
    # Untagging one of two names is fine even with a container.
    assert await svc.remove("two:2") == [{"Untagged": "two:2"}]
    with pytest.raises(
        Conflict,
        match=r'unable to remove repository reference "one:1" \(must force\) - container cccccccccccc',
    ):
        await svc.remove("one:1")
    with pytest.raises(
        Conflict, match=r"\(must be forced\) - image is being used by stopped container cccccccccccc"
    ):
        await svc.remove(image_id[7:19])
    users[0] = ("d" * 64, True)
    with pytest.raises(
        Conflict, match=r"\(cannot be forced\) - image is being used by running container dddddddddddd"
    ):
        await svc.remove(image_id, force=True)
    users.clear()
    await svc.tag("one:1", "docker.io/library/three", None)
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        await svc.remove(image_id[7:19])
    out = await svc.remove(image_id[7:19], force=True)
    assert (
        {"Untagged": "one:1"} in out and {"Untagged": "three:latest"} in out and {"Deleted": image_id} in out
    )


async def test_list_filters(svc: ImageService) -> None:
    a = await add_image(svc, [layer_tar({"a": b"1"})], "alpha:1", Labels={"k": "v"})
    b = await add_image(svc, [layer_tar({"b": b"2"})], None)
    ids = lambda rows: {r["Id"] for r in rows}  # noqa: E731
    assert ids(svc.list_images({})) == {a, b}
    assert ids(svc.list_images({"dangling": ["true"]})) == {b}
    assert ids(svc.list_images({"dangling": ["false"]})) == {a}
    assert ids(svc.list_images({"label": ["k=v"]})) == {a}
    assert ids(svc.list_images({"label": ["k=x"]})) == set()
    assert ids(svc.list_images({"reference": ["alp*"]})) == {a}
    assert ids(svc.list_images({"reference": ["alpha:1"]})) == {a}
    dangling = next(r for r in svc.list_images({}) if r["Id"] == b)
    assert dangling["RepoTags"] == ["<none>:<none>"] and dangling["RepoDigests"] == ["<none>@<none>"]
    pruned = await svc.prune({})
    assert pruned["ImagesDeleted"][0] == {"Deleted": b}
    assert ids(svc.list_images({})) == {a}


async def test_commit_from_upper_dir(tmp_path: Path, svc: ImageService) -> None:
    base = await add_image(svc, [layer_tar({"etc/base": b"b"})], "base:1")
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/new").write_bytes(b"new")
    image_id = await svc.commit(
        parent="base:1",
        layer_tar=lambda: layers.tar_directory_diff(upper),
        config={"Cmd": ["sh"], "Env": ["A=1"]},
        changes=["ENV B=2", "WORKDIR /w"],
        comment="snap",
        author="me",
        repo="snap",
        tag="v1",
    )
    image = svc.resolve("snap:v1")
    assert image.image_id == image_id and image.parent == base
    assert image.config["config"]["Env"] == ["A=1", "B=2"] and image.config["config"]["WorkingDir"] == "/w"
    assert len(image.chain_ids) == 2
    top = svc.layer_dirs(image)[0]
    assert (top / "etc/new").read_bytes() == b"new"
    hist = svc.history("snap:v1")
    assert hist[0]["Id"] == image_id and hist[0]["Comment"] == "snap" and hist[0]["Tags"] == ["snap:v1"]
    with pytest.raises(Conflict, match="dependent child images"):
        await svc.remove(base, force=True)


async def test_prune_sweeps_orphans_of_interrupted_pulls(svc: ImageService) -> None:
    """A pull killed after downloading (stray blob) or after unpacking (orphan layer)."""
    keep = await add_image(svc, [layer_tar({"k": b"keep"})], "keep:1")
    stray = await asyncio.to_thread(svc.store.put_blob_blocking, b"downloaded, never unpacked")
    orphan_blob = layer_tar({"o": b"orphan"})
    record = await asyncio.to_thread(
        svc.store.create_layer_blocking, None, lambda: io.BytesIO(orphan_blob), blob=None
    )
    svc.store.register_layer(record)
    result = await svc.prune({})
    assert result["ImagesDeleted"] is None and result["SpaceReclaimed"] == record.size
    assert not svc.store.has_blob(stray) and record.chain_id not in svc.store.layers
    assert not svc.store.has_blob(record.blob)
    image = svc.resolve("keep:1")
    assert image.image_id == keep and svc.store.has_blob(svc.store.layers[image.chain_ids[0]].blob)
    assert svc.store.has_blob(keep)
