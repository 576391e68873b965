"""Pull and push: moving images between the store and registries, with Docker's progress
messages (the CLI renders them as per-layer bars).

Pull: manifest (or list -> this platform's manifest), config, then every missing layer as a
shared, de-duplicated job (`ImageService.ensure_layer`): download into a verified blob, unpack
into a layer dir. Layers are independent overlay lower dirs, so they download and unpack in
parallel. Push: gzip each layer once (the compressed digest is remembered), skip blobs the
registry has, mount across repositories when the blob came from another repo there, upload,
then put a schema2 manifest.

This module holds no state of its own; it drives `ImageService`, `ImageStore` and
`RegistryClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar, cast

from runtime import layers, reference
from runtime.errors import InvalidParameter, NotFound, PydockError
from runtime.images import ImageService, LayerJob, Progress
from runtime.imagestore import MEDIA_OCI_GZIP, MEDIA_TAR_GZIP, BlobWriter, LayerRecord, hex_of
from runtime.progress import ProgressReader, Throttle, layer_message
from runtime.registry import (
    INDEX_TYPES,
    MT_DOCKER_CONFIG,
    MT_DOCKER_MANIFEST,
    AuthConfig,
    RegistryClient,
    RegistryError,
    pull_error,
    select_platform,
    verification_failed,
)

log = logging.getLogger("pydock.distribution")

LAYER_MEDIA_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}


# --- pull ----------------------------------------------------------------------------------------


async def pull(svc: ImageService, ref: reference.Reference, auth: AuthConfig, emit: Progress) -> str:
    """Pull `ref` (tag or digest); returns the image ID. Raises PydockError kinds.

    Cancellation stops this pull; layer jobs that others share go on.
    """
    ref = ref.tagged_or_latest()
    wanted = ref.digest or ref.tag or reference.DEFAULT_TAG
    async with RegistryClient(
        reference.registry_host(ref), auth, insecure_registries=svc.config.insecure_registries
    ) as client:
        try:
            manifest = await client.get_manifest(ref.path, wanted)
        except PydockError as exc:
            raise pull_error(ref.familiar(), ref.familiar_name, exc) from exc
        top_digest = manifest.digest
        if manifest.media_type in INDEX_TYPES:
            desc = select_platform(manifest.json())
            manifest = await client.get_manifest(ref.path, str(desc.get("digest", "")))
            if manifest.media_type in INDEX_TYPES:
                raise RegistryError("a manifest list may not point at another manifest list")
        body = manifest.json()
        config_desc = body.get("config") or {}
        layer_descs = body.get("layers") or []
        config_digest = str(config_desc.get("digest", ""))
        hex_of(config_digest)
        emit({"status": f"Pulling from {ref.path}", "id": wanted})
        existing = svc.store.images.get(config_digest)
        tag_ref = ref if ref.digest is None else None
        digest_ref = ref.with_digest(top_digest)
        if existing is not None:
            before = svc.store.refs.get(str(tag_ref)) if tag_ref else config_digest
            await svc.add_image(
                await asyncio.to_thread(svc.store.config_bytes_blocking, config_digest),
                tags=[tag_ref] if tag_ref else [],
                digests=[digest_ref],
            )
            emit({"status": f"Digest: {top_digest}"})
            newer = before != config_digest
            status = "Downloaded newer image for" if newer else "Image is up to date for"
            emit({"status": f"Status: {status} {ref.familiar()}"})
            svc.events.publish("image", "pull", ref.familiar(), {"name": ref.familiar_name})
            return config_digest
        config_bytes = await client.get_blob_bytes(ref.path, config_digest)
        try:
            config = json.loads(config_bytes)
            diff_ids = [str(d) for d in config["rootfs"]["diff_ids"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"invalid image config {config_digest}: {exc}") from exc
        if len(diff_ids) != len(layer_descs):
            raise RegistryError("the manifest and the image config disagree on the number of layers")
        chains = layers.chain_ids(diff_ids)
        with svc.store.pinned(chains):
            missing = []
            for i, desc in enumerate(layer_descs):
                digest = str(desc.get("digest", ""))
                hex_of(digest)
                media = str(desc.get("mediaType", ""))
                if media not in LAYER_MEDIA_TYPES:
                    raise RegistryError(f"unsupported layer media type {media!r}")
                short = hex_of(digest)[:12]
                if chains[i] in svc.store.layers:
                    emit(layer_message(short, "Already exists"))
                else:
                    emit(layer_message(short, "Pulling fs layer"))
                    missing.append(i)

            async def one(i: int) -> None:
                desc = layer_descs[i]
                make = _layer_maker(svc, client, ref.path, desc, chains[i - 1] if i else None, diff_ids[i])
                await svc.ensure_layer(chains[i], make, emit)

            try:
                async with asyncio.TaskGroup() as tg:
                    for i in missing:
                        tg.create_task(one(i))
            except BaseExceptionGroup as group:  # a failed layer stops the others: say why
                raise _first_error(group) from group
            await svc.add_image(config_bytes, tags=[tag_ref] if tag_ref else [], digests=[digest_ref])
        emit({"status": f"Digest: {top_digest}"})
        emit({"status": f"Status: Downloaded newer image for {ref.familiar()}"})
        svc.events.publish("image", "pull", ref.familiar(), {"name": ref.familiar_name})
        return config_digest


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a task group: the first PydockError, else the first one."""
    leaves: list[BaseException] = []

    def collect(g: BaseExceptionGroup[BaseException]) -> None:
        for exc in g.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                collect(exc)
            else:
                leaves.append(exc)

    collect(group)
    return next((e for e in leaves if isinstance(e, PydockError)), leaves[0])


def _layer_maker(
    svc: ImageService,
    client: RegistryClient,
    repo: str,
    desc: dict[str, Any],
    parent: str | None,
    diff_id: str,
) -> Callable[[LayerJob], Awaitable[LayerRecord]]:
    digest = str(desc["digest"])
    media = str(desc.get("mediaType", ""))
    declared_size = int(desc.get("size") or 0)
    short = hex_of(digest)[:12]

    async def make(job: LayerJob) -> LayerRecord:
        svc.active_blobs[digest] += 1
        try:
            return await _make(job)
        finally:
            svc.active_blobs[digest] -= 1
            if svc.active_blobs[digest] <= 0:
                del svc.active_blobs[digest]

    async def _make(job: LayerJob) -> LayerRecord:
        if svc.store.has_blob(digest):
            record = await _unpack_stored_blob(svc, digest, media, parent, diff_id, short, job)
        else:
            record = await _download_and_unpack(
                svc, client, repo, (digest, media, declared_size), parent, diff_id, short, job
            )
        svc.blob_sources.setdefault(digest, set()).add(f"{client.host}/{repo}")
        job.emit(layer_message(short, "Pull complete"))
        return record

    return make


async def _unpack_stored_blob(
    svc: ImageService, digest: str, media: str, parent: str | None, diff_id: str, short: str, job: LayerJob
) -> LayerRecord:
    """A layer from a blob already in the store (left by an earlier pull, or shared by a layer
    with another parent)."""
    size = svc.store.blob_path(digest).stat().st_size
    loop = asyncio.get_running_loop()

    def report(done: int) -> None:
        loop.call_soon_threadsafe(job.emit, layer_message(short, "Extracting", done, size))

    def opener() -> IO[bytes]:
        raw = open(svc.store.blob_path(digest), "rb", buffering=0)  # noqa: SIM115 - closed by the unpack
        return cast(IO[bytes], ProgressReader(raw, report))

    try:
        return await asyncio.to_thread(
            svc.store.create_layer_blocking,
            parent,
            opener,
            blob=(digest, media, size),
            expected_diff_id=diff_id,
        )
    except PydockError:
        # A blob that does not unpack to its diff ID is useless: drop it so a retry refetches.
        with contextlib.suppress(OSError):
            svc.store.blob_path(digest).unlink()
        raise


async def _download_and_unpack(
    svc: ImageService,
    client: RegistryClient,
    repo: str,
    blob: tuple[str, str, int],
    parent: str | None,
    diff_id: str,
    short: str,
    job: LayerJob,
) -> LayerRecord:
    """Download a layer blob and unpack it at the same time.

    The event loop receives the body and hands its chunks to a thread of this layer
    (`_BodyPipe`), which writes them to a new blob (hashing them) and unpacks them into a
    temp layer dir as they come. Only when the whole body is in and its digest is right do
    the blob and then the layer land (`ImageStore.create_layer_blocking` with a `blob`
    callable); otherwise both temp files are thrown away. A SIGKILL at any point leaves temp
    names only, which the startup sweep removes.
    """
    if svc.unpack_slots.locked() or svc.download_slots.locked():
        job.emit(layer_message(short, "Waiting"))
    async with svc.unpack_slots:
        return await _stream_layer(svc, client, repo, blob, parent, diff_id, short, job)


async def _stream_layer(
    svc: ImageService,
    client: RegistryClient,
    repo: str,
    blob: tuple[str, str, int],
    parent: str | None,
    diff_id: str,
    short: str,
    job: LayerJob,
) -> LayerRecord:
    digest, media, declared_size = blob
    async with svc.download_slots:  # for the transfer only: the unpacking may finish after it
        pipe = _BodyPipe(asyncio.get_running_loop())

        def work() -> LayerRecord:
            writer = svc.store.new_blob_writer()
            source = _StreamedBlob(pipe, writer)

            def land() -> tuple[str, str, int]:
                actual = source.finish()
                if actual != digest:
                    raise RegistryError(verification_failed(digest, actual))
                writer.commit(digest)
                return digest, media, writer.size

            try:
                try:
                    return svc.store.create_layer_blocking(
                        parent, lambda: cast(IO[bytes], source), blob=land, expected_diff_id=diff_id
                    )
                except layers.InvalidLayer as exc:
                    # Bytes that are not the blob the registry named usually break the layer
                    # before the end: when the digest is wrong, that is what to report.
                    writer.stop_storing()
                    actual = source.finish()
                    if actual != digest:
                        raise RegistryError(verification_failed(digest, actual)) from exc
                    raise
            finally:
                writer.abort()  # nothing left after a commit
                pipe.abandon()

        unpacked = _run_in_thread(work, f"pull {short}")
        throttle = Throttle()
        got = total = 0
        try:
            async with client.blob_body(repo, digest) as (chunks, length):
                total = declared_size or max(length, 0)
                async for chunk in chunks:
                    if not await pipe.put(chunk):
                        break  # the unpacking failed: its error is raised below
                    got += len(chunk)
                    if throttle.ready():
                        job.emit(layer_message(short, "Downloading", got, total))
            pipe.close()
        except BaseException as exc:
            pipe.fail(RegistryError(f"download of {digest} stopped: {exc!r}"))
            with contextlib.suppress(Exception):
                await asyncio.shield(unpacked)
            raise
    if not pipe.abandoned:
        job.emit(layer_message(short, "Downloading", got, total))  # the bar ends full, as dockerd's
        job.emit(layer_message(short, "Verifying Checksum"))
    try:
        record = await asyncio.shield(unpacked)
    except asyncio.CancelledError:
        pipe.fail(RegistryError(f"pull of {digest} cancelled"))
        with contextlib.suppress(Exception):
            await unpacked
        raise
    job.emit(layer_message(short, "Download complete"))
    job.emit(layer_message(short, "Extracting", record.blob_size, record.blob_size))
    return record


T = TypeVar("T")


def _run_in_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """`fn()` in a thread of its own (not the default executor: it may wait for the loop to
    feed it, and a pool could be full of such waiters); its outcome as a future."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if future.cancelled():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(cast(T, result))

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


PIPE_BYTES = 8 << 20  # per layer: how far the download may run ahead of the unpacking


class _BodyPipe:
    """Chunks of a response body, from the event loop to the one thread that reads them.

    Back-pressure: `put` waits while PIPE_BYTES are buffered. The thread takes what has
    arrived, up to a size, in one piece (few, large buffers: hashing, writing and inflating
    them release the GIL for longer stretches). Either side can stop the other: the loop with
    `fail` (the thread's next `take` raises) or `close` (end of body), the thread with
    `abandon` (the loop's next `put` says so).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = PIPE_BYTES) -> None:
        self._loop = loop
        self._limit = limit
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._space = asyncio.Event()
        self._putter_waits = False
        self.abandoned = False

    async def put(self, chunk: bytes) -> bool:
        """Queue a chunk; False when the reader has gone (stop sending)."""
        while True:
            with self._lock:
                if self.abandoned:
                    return False
                if self._buffered < self._limit:
                    self._chunks.append(chunk)
                    self._buffered += len(chunk)
                    self._arrived.notify()
                    return True
                self._putter_waits = True
                self._space.clear()
            await self._space.wait()

    def close(self) -> None:
        with self._lock:
            self._eof = True
            self._arrived.notify()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
            self._arrived.notify()

    def abandon(self) -> None:
        """The reader stops (from its thread): drop what is buffered, release the loop."""
        with self._lock:
            self.abandoned = True
            self._chunks.clear()
            self._buffered = 0
            self._wake_putter()

    def _wake_putter(self) -> None:
        if self._putter_waits:
            self._putter_waits = False
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._space.set)

    def take(self, n: int) -> bytes:
        """Up to `n` bytes (blocking until some arrive); b"" at the end of the body."""
        with self._lock:
            while not self._chunks and not self._eof and self._error is None:
                self._arrived.wait()
            if self._error is not None:
                raise self._error
            parts: list[bytes] = []
            got = 0
            while self._chunks and got < n:
                chunk = self._chunks[0]
                if got + len(chunk) > n:
                    if not parts:  # one chunk larger than asked for: split it
                        parts.append(chunk[:n])
                        self._chunks[0] = chunk[n:]
                        got = n
                    break
                parts.append(self._chunks.popleft())
                got += len(chunk)
            self._buffered -= got
            self._wake_putter()
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _StreamedBlob:
    """What the unpacking thread reads: the body as it arrives, written to a new blob on the
    way (the BlobWriter hashes it)."""

    def __init__(self, pipe: _BodyPipe, writer: BlobWriter) -> None:
        self._pipe = pipe
        self._writer = writer

    def __enter__(self) -> _StreamedBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # the pipe may still be drained (`finish`)

    def read(self, n: int = -1) -> bytes:
        data = self._pipe.take(n if n > 0 else layers.CHUNK)
        if data:
            self._writer.write(data)
        return data

    def finish(self) -> str:
        """Read the body to its end; the digest of all of it."""
        while self.read(layers.CHUNK):
            pass
        return self._writer.digest


# --- push ----------------------------------------------------------------------------------------


async def push(
    svc: ImageService, ref: reference.Reference, tag: str | None, auth: AuthConfig, emit: Progress
) -> None:
    """Push one tag (or every tag of the repository when `tag` is empty)."""
    repo = ref.repository()
    if tag:
        tags = [reference.check_tag(tag)]
    elif ref.tag:
        tags = [ref.tag]
    else:
        tags = sorted(
            t.tag
            for t in (reference.parse(r) for r in svc.store.refs)
            if t.name == repo.name and t.tag and not t.digest
        )
    images = []
    for t in tags:
        image_id = svc.store.refs.get(str(repo.with_tag(t)))
        if image_id is None or image_id not in svc.store.images:
            raise NotFound(f"An image does not exist locally with the tag: {repo.with_tag(t).familiar()}")
        images.append((t, svc.store.images[image_id]))
    if not images:
        raise NotFound(f"An image does not exist locally with the tag: {repo.familiar_name}")
    emit({"status": f"The push refers to repository [{repo.name}]"})
    host = reference.registry_host(repo)
    async with RegistryClient(host, auth, insecure_registries=svc.config.insecure_registries) as client:
        for t, image in images:
            with svc.store.pinned(image.chain_ids):
                for chain in reversed(image.chain_ids):
                    emit(layer_message(hex_of(svc.store.layers[chain].diff_id)[:12], "Preparing"))
                descs: list[dict[str, Any]] = [{} for _ in image.chain_ids]

                async def one(i: int, chain: str, descs: list[dict[str, Any]] = descs) -> None:
                    descs[i] = await _push_layer(svc, client, repo, svc.store.layers[chain], emit)

                try:
                    async with asyncio.TaskGroup() as tg:
                        for i, chain in enumerate(image.chain_ids):
                            tg.create_task(one(i, chain))
                except BaseExceptionGroup as group:
                    raise _first_error(group) from group
                config_bytes = await asyncio.to_thread(svc.store.config_bytes_blocking, image.image_id)
                if not await client.blob_exists(repo.path, image.image_id):
                    await client.upload_blob(
                        repo.path, image.image_id, len(config_bytes), _one_chunk(config_bytes)
                    )
                manifest = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": MT_DOCKER_MANIFEST,
                        "config": {
                            "mediaType": MT_DOCKER_CONFIG,
                            "size": len(config_bytes),
                            "digest": image.image_id,
                        },
                        "layers": descs,
                    },
                    indent=3,
                ).encode()
                digest = await client.put_manifest(repo.path, t, manifest, MT_DOCKER_MANIFEST)
            await svc.add_image(config_bytes, digests=[repo.with_digest(digest)])
            emit({"status": f"{t}: digest: {digest} size: {len(manifest)}"})
            emit({"progressDetail": {}, "aux": {"Tag": t, "Digest": digest, "Size": len(manifest)}})
            svc.events.publish("image", "push", repo.with_tag(t).familiar(), {"name": repo.familiar_name})


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _push_layer(
    svc: ImageService, client: RegistryClient, repo: reference.Reference, layer: LayerRecord, emit: Progress
) -> dict[str, Any]:
    short = hex_of(layer.diff_id)[:12]
    digest, size = await _gzip_blob(svc, layer)
    desc = {"mediaType": MEDIA_TAR_GZIP, "size": size, "digest": digest}
    async with svc.upload_slots:
        if await client.blob_exists(repo.path, digest):
            emit(layer_message(short, "Layer already exists"))
            return desc
        for source in sorted(svc.blob_sources.get(digest, ())):
            src_host, _, src_repo = source.partition("/")
            if (
                src_host == client.host
                and src_repo != repo.path
                and await client.mount_blob(repo.path, digest, src_repo)
            ):
                emit(layer_message(short, f"Mounted from {src_repo}"))
                return desc
        throttle = Throttle()

        def progress(done: int) -> None:
            if throttle.ready() or done >= size:
                emit(layer_message(short, "Pushing", done, size))

        await client.upload_blob(
            repo.path, digest, size, _file_chunks(svc.store.blob_path(digest)), progress=progress
        )
    svc.blob_sources.setdefault(digest, set()).add(f"{client.host}/{repo.path}")
    emit(layer_message(short, "Pushed"))
    return desc


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, layers.CHUNK):
            yield chunk
    finally:
        f.close()


async def _gzip_blob(svc: ImageService, layer: LayerRecord) -> tuple[str, int]:
    """A gzip blob of the layer: the one pulled, or one made (deterministically) once and kept."""
    for digest, size in layer.compressed.items():
        if svc.store.has_blob(digest):
            return digest, size
    if layer.blob_media_type in (MEDIA_TAR_GZIP, MEDIA_OCI_GZIP) and svc.store.has_blob(layer.blob):
        return layer.blob, layer.blob_size

    def make() -> tuple[str, int]:
        writer = svc.store.new_blob_writer()
        try:
            compressed = layer.blob != layer.diff_id
            chunks = layers.read_file_chunks(svc.store.blob_path(layer.blob), decompress=compressed)
            digest, size = layers.gzip_stream(chunks, cast(BinaryIO, _WriterFile(writer)))
            writer.commit(digest)
            return digest, size
        except BaseException:
            writer.abort()
            raise

    digest, size = await asyncio.to_thread(make)
    layer.compressed[digest] = size
    await asyncio.to_thread(svc.store.save_layer_meta_blocking, layer)
    return digest, size


class _WriterFile:
    def __init__(self, writer: Any) -> None:
        self._w = writer

    def write(self, data: bytes) -> int:
        self._w.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def parse_pull_ref(from_image: str, tag: str | None) -> reference.Reference:
    """`fromImage` + `tag` of `POST /images/create` into one reference (tag may be a digest)."""
    ref = reference.parse(from_image)
    if tag:
        if reference.is_digest(tag):
            ref = ref.with_digest(tag)
        elif ref.tag is None and ref.digest is None:
            ref = ref.with_tag(reference.check_tag(tag))
        elif ref.tag != tag and ref.digest is None:
            raise InvalidParameter("invalid reference format")
    return ref.tagged_or_latest()
