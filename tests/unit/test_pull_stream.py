"""A layer unpacked while it downloads (`distribution._download_and_unpack`), against a fake
registry client: what lands when the body is right, and that nothing does otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import tarfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from runtime import distribution, layers
from runtime.config import DaemonConfig
from runtime.events import EventBus
from runtime.images import ImageService, LayerJob
from runtime.imagestore import LayerRecord
from runtime.registry import RegistryError


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1, 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    """`blob_body` of a RegistryClient: serves `body` in small chunks, optionally failing or
    stalling after `stop_after` bytes."""

    host = "reg.test"

    def __init__(
        self,
        body: bytes,
        *,
        chunk: int = 7000,
        fail_after: int | None = None,
        stall_after: int | None = None,
    ) -> None:
        self.body = body
        self.chunk = chunk
        self.fail_after = fail_after
        self.stall_after = stall_after
        self.sent = 0
        self.stalled = asyncio.Event()

    @contextlib.asynccontextmanager
    async def blob_body(self, repo: str, digest: str) -> AsyncIterator[tuple[AsyncIterator[bytes], int]]:
        yield self._chunks(), len(self.body)

    async def _chunks(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), self.chunk):
            if self.fail_after is not None and i >= self.fail_after:
                raise RegistryError("reading blob: connection reset by peer")
            if self.stall_after is not None and i >= self.stall_after:
                self.stalled.set()
                await asyncio.Event().wait()  # until cancelled
            self.sent += len(self.body[i : i + self.chunk])
            yield self.body[i : i + self.chunk]
            await asyncio.sleep(0)


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[ImageService]:
    service = ImageService(DaemonConfig(data_root=tmp_path), EventBus())
    await service.start()
    yield service
    await service.close()


async def stream(
    svc: ImageService, reg: FakeRegistry, blob_digest: str, diff_id: str, messages: list[dict[str, Any]]
) -> LayerRecord:
    job = LayerJob(asyncio.get_running_loop().create_future())  # type: ignore[arg-type]
    job.listeners.append(messages.append)
    return await distribution._download_and_unpack(
        svc,
        reg,  # type: ignore[arg-type]
        "ns/app",
        (blob_digest, "application/vnd.docker.image.rootfs.diff.tar.gzip", len(reg.body)),
        None,
        diff_id,
        blob_digest[7:19],
        job,
    )


def store_entries(svc: ImageService) -> dict[str, list[str]]:
    return {
        name: sorted(p.name for p in d.iterdir())
        for name, d in (("blobs", svc.store.blobs_dir), ("layers", svc.store.layers_dir))
    }


def no_pull_threads() -> bool:
    return not any(t.name.startswith("pull ") for t in threading.enumerate())


async def wait_threads_gone() -> None:
    for _ in range(500):
        if no_pull_threads():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a layer thread is still running")


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
async def test_streamed_layer_lands_with_its_blob(svc: ImageService, compression: str) -> None:
    payload = os.urandom(3 << 20)
    tar = layer_tar({"a/big.bin": payload, "a/small": b"hi"})
    body = {
        "gzip": lambda: gzip.compress(tar, compresslevel=1),
        "zstd": lambda: zstandard.ZstdCompressor().compress(tar),
        "none": lambda: tar,
    }[compression]()
    messages: list[dict[str, Any]] = []
    reg = FakeRegistry(body)
    record = await stream(svc, reg, digest_of(body), digest_of(tar), messages)
    assert record.diff_id == digest_of(tar) and record.blob == digest_of(body)
    assert record.blob_size == len(body) and record.tar_size == len(tar)
    diff = svc.store.layers_dir / record.chain_id[7:] / "diff"
    assert (diff / "a" / "big.bin").read_bytes() == payload
    assert (diff / "a" / "small").read_bytes() == b"hi"
    assert svc.store.blob_path(record.blob).read_bytes() == body
    assert store_entries(svc) == {"blobs": [record.blob[7:]], "layers": [record.chain_id[7:]]}
    statuses = [m["status"] for m in messages]
    assert statuses[-4:] == ["Downloading", "Verifying Checksum", "Download complete", "Extracting"]
    assert messages[-4]["progressDetail"] == {"current": len(body), "total": len(body)}
    assert messages[-1]["progressDetail"] == {"current": len(body), "total": len(body)}
    await wait_threads_gone()


async def test_corrupted_body_lands_nothing(svc: ImageService) -> None:
    tar = layer_tar({"f": os.urandom(1 << 20)})
    body = gzip.compress(tar)
    bad = bytearray(body)
    bad[len(bad) // 2] ^= 0xFF  # the gzip stream breaks (or its CRC does) half-way
    with pytest.raises(RegistryError, match="filesystem layer verification failed for digest"):
        await stream(svc, FakeRegistry(bytes(bad)), digest_of(body), digest_of(tar), [])
    assert store_entries(svc) == {"blobs": [], "layers": []}
    await wait_threads_gone()


async def test_another_valid_layer_under_the_digest_lands_nothing(svc: ImageService) -> None:
    """A body that unpacks fine but is not the blob named: the diff ID check trips first, the
    error says what is wrong (the digest)."""
    tar = layer_tar({"f": b"the real one"})
    other = gzip.compress(layer_tar({"f": b"an impostor"}))
    with pytest.raises(RegistryError, match="verification failed"):
        await stream(svc, FakeRegistry(other), digest_of(gzip.compress(tar)), digest_of(tar), [])
    assert store_entries(svc) == {"blobs": [], "layers": []}


async def test_right_digest_wrong_diff_id(svc: ImageService) -> None:
    tar = layer_tar({"f": b"data"})
    body = gzip.compress(tar)
    with pytest.raises(layers.InvalidLayer, match="diff ID mismatch"):
        await stream(svc, FakeRegistry(body), digest_of(body), "sha256:" + "1" * 64, [])
    assert store_entries(svc) == {"blobs": [], "layers": []}


async def test_hostile_layer_with_the_right_digest_lands_nothing(svc: ImageService, tmp_path: Path) -> None:
    tar = layer_tar({"ok": os.urandom(200_000), "../../escape": b"x"})
    body = gzip.compress(tar)
    reg = FakeRegistry(body)
    with pytest.raises(layers.InvalidLayer, match="escapes the layer"):
        await stream(svc, reg, digest_of(body), digest_of(tar), [])
    assert reg.sent == len(body)  # read to the end to tell a bad digest from a bad layer
    assert store_entries(svc) == {"blobs": [], "layers": []}
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()


async def test_network_error_mid_body_lands_nothing(svc: ImageService) -> None:
    tar = layer_tar({"f": os.urandom(2 << 20)})
    body = gzip.compress(tar)
    reg = FakeRegistry(body, fail_after=len(body) // 2)
    with pytest.raises(RegistryError, match="connection reset"):
        await stream(svc, reg, digest_of(body), digest_of(tar), [])
    assert store_entries(svc) == {"blobs": [], "layers": []}
    await wait_threads_gone()


async def test_cancelled_mid_body_cleans_up_and_stops_its_thread(svc: ImageService) -> None:
    tar = layer_tar({"f": os.urandom(2 << 20)})
    body = gzip.compress(tar)
    reg = FakeRegistry(body, stall_after=len(body) // 2)
    task = asyncio.create_task(stream(svc, reg, digest_of(body), digest_of(tar), []))
    await asyncio.wait_for(reg.stalled.wait(), 10)
    assert store_entries(svc)["layers"]  # a temp layer dir is being filled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store_entries(svc) == {"blobs": [], "layers": []}
    assert no_pull_threads()  # the task waited for its thread


async def test_a_full_pipe_holds_the_download_back() -> None:
    loop = asyncio.get_running_loop()
    pipe = distribution._BodyPipe(loop, limit=100)
    assert await pipe.put(b"x" * 60)
    assert await pipe.put(b"y" * 60)  # over the limit now: the next put waits
    third = asyncio.create_task(pipe.put(b"z" * 10))
    await asyncio.sleep(0.05)
    assert not third.done()
    taken = await asyncio.to_thread(pipe.take, 1000)
    assert taken == b"x" * 60 + b"y" * 60
    assert await asyncio.wait_for(third, 5)
    pipe.close()
    assert await asyncio.to_thread(pipe.take, 4) == b"zzzz"  # a chunk larger than asked: split
    assert await asyncio.to_thread(pipe.take, 100) == b"z" * 6
    assert await asyncio.to_thread(pipe.take, 100) == b""
    pipe.abandon()
    assert not await pipe.put(b"late")  # the reader is gone: stop sending


async def test_a_failed_pipe_raises_in_the_reader() -> None:
    pipe = distribution._BodyPipe(asyncio.get_running_loop())
    await pipe.put(b"data")
    pipe.fail(RegistryError("gone"))
    with pytest.raises(RegistryError, match="gone"):
        await asyncio.to_thread(pipe.take, 100)


async def test_unpacking_threads_are_bounded(svc: ImageService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small layers download at once (each fits in its pipe) and free their download slot; the
    threads still unpacking them are bounded all the same."""
    release = threading.Event()
    lock = threading.Lock()
    running = peak = 0
    real = svc.store.create_layer_blocking

    def held(*args: Any, **kwargs: Any) -> LayerRecord:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            release.wait(30)
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(svc.store, "create_layer_blocking", held)
    tars = [layer_tar({f"f{i}": os.urandom(1000)}) for i in range(10)]
    bodies = [gzip.compress(t) for t in tars]
    tasks = [
        asyncio.create_task(stream(svc, FakeRegistry(b), digest_of(b), digest_of(t), []))
        for t, b in zip(tars, bodies, strict=True)
    ]
    limit = 2 * svc.config.max_concurrent_downloads
    for _ in range(500):
        if running >= limit:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert running == peak == limit
    release.set()
    records = await asyncio.gather(*tasks)
    assert peak == limit and {r.diff_id for r in records} == {digest_of(t) for t in tars}
