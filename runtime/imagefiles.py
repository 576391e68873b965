"""Images in and out of the store without a registry: `docker load`, `docker save`,
`docker import`, and `commit` (an image from a container's upper dir).

Uploads are spooled to a temp file under the image store first (archives need random access;
a crash leaves only a `.tmp-*` that startup sweeps). Layers go through the shared layer jobs of
`ImageService`; the archive formats themselves are in `archive.py`.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from runtime import archive, layers, reference, store
from runtime.aiters import closing
from runtime.chunks import ChunkReader
from runtime.errors import InvalidParameter
from runtime.imagestore import ImageRecord, LayerRecord, now_rfc3339
from runtime.progress import ProgressReader, layer_message
from runtime.registry import host_platform

if TYPE_CHECKING:
    from runtime.images import ImageService, LayerJob, Progress

SPOOL_CHUNK = 1 << 20


async def spool(svc: ImageService, body: AsyncIterator[bytes]) -> Path:
    """Write an upload to a temp file under the image store (swept at startup if we die)."""
    path = svc.store.root / f"{store.TMP_PREFIX}upload-{uuid.uuid4().hex}"
    f = await asyncio.to_thread(open, path, "xb")
    try:
        buf = bytearray()
        async for chunk in body:
            buf += chunk
            if len(buf) >= SPOOL_CHUNK:
                await asyncio.to_thread(f.write, bytes(buf))
                buf.clear()
        if buf:
            await asyncio.to_thread(f.write, bytes(buf))
    except BaseException:
        f.close()
        path.unlink(missing_ok=True)
        raise
    f.close()
    return path


async def load(
    svc: ImageService, body: AsyncIterator[bytes], emit: Progress | None = None
) -> list[dict[str, Any]]:
    """`docker load` of a Docker or OCI archive; returns the result messages. With `emit` (a
    load that is not quiet), each layer unpacked reports "Loading layer" progress as dockerd does."""
    path = await spool(svc, body)
    try:
        ar = await asyncio.to_thread(archive.Archive, path)
        try:
            return await _load_archive(svc, ar, emit)
        finally:
            ar.close()
    finally:
        await asyncio.to_thread(path.unlink, True)


async def _load_archive(
    svc: ImageService, ar: archive.Archive, emit: Progress | None
) -> list[dict[str, Any]]:
    entries = await asyncio.to_thread(ar.images)
    messages: list[dict[str, Any]] = []
    for entry in entries:
        try:
            cfg = json.loads(entry.config_bytes)
            diff_ids = [str(d) for d in (cfg.get("rootfs") or {}).get("diff_ids") or []]
        except (ValueError, AttributeError) as exc:
            raise archive.InvalidArchive(f"invalid image config in archive: {exc}") from exc
        if len(diff_ids) != len(entry.layer_members):
            raise archive.InvalidArchive(
                "invalid archive: the config and manifest disagree on the layer count"
            )
        chains = layers.chain_ids(diff_ids)
        with svc.store.pinned(chains):
            for i, member in enumerate(entry.layer_members):
                parent = chains[i - 1] if i else None

                async def make(
                    job: LayerJob,
                    member: str = member,
                    parent: str | None = parent,
                    diff: str = diff_ids[i],
                ) -> LayerRecord:
                    opener = _layer_opener(ar, member, job if emit else None, diff)
                    return await asyncio.to_thread(
                        svc.store.create_layer_blocking, parent, opener, blob=None, expected_diff_id=diff
                    )

                await svc.ensure_layer(chains[i], make, emit)

            def retag(ref: str, old: str) -> None:
                messages.append(
                    {
                        "stream": f"The image {reference.familiar(ref)} already exists, renaming "
                        f"the old one with ID {old} to empty string\n"
                    }
                )

            record = await svc.add_image(entry.config_bytes, tags=entry.tags, on_retag=retag)
        if entry.tags:
            for tag in entry.tags:
                messages.append({"stream": f"Loaded image: {tag.familiar()}\n"})
                svc.events.publish("image", "load", record.image_id, {"name": tag.familiar()})
        else:
            messages.append({"stream": f"Loaded image ID: {record.image_id}\n"})
            svc.events.publish("image", "load", record.image_id, {"name": record.image_id})
    return messages


def _layer_opener(
    ar: archive.Archive, member: str, job: LayerJob | None, diff_id: str
) -> Callable[[], IO[bytes]]:
    """Opens a layer member; with a job, reading it reports "Loading layer" progress to the job's
    listeners (in bytes of the member, as dockerd counts). Call from the loop, open in a thread."""
    if job is None:
        return lambda: ar.open_member(member)
    loop = asyncio.get_running_loop()
    short = diff_id.removeprefix("sha256:")[:12]
    emit = job.emit

    def opener() -> IO[bytes]:
        f = ar.open_member(member)
        size = f.seek(0, io.SEEK_END)
        f.seek(0)

        def report(done: int) -> None:
            loop.call_soon_threadsafe(emit, layer_message(short, "Loading layer", done, size))

        return io.BufferedReader(ProgressReader(f, report), layers.CHUNK)

    return opener


def save_targets(svc: ImageService, names: list[str]) -> list[tuple[ImageRecord, list[reference.Reference]]]:
    """What `docker save NAME...` writes: each image once, with the names that selected it."""
    chosen: dict[str, list[reference.Reference]] = {}
    for name in names:
        image = svc.resolve(name)
        refs = chosen.setdefault(image.image_id, [])
        try:
            parsed = reference.parse(name)
        except InvalidParameter:
            continue
        if svc.store.refs.get(str(parsed.tagged_or_latest())) != image.image_id:
            continue  # selected by ID: saved without names
        if parsed.tag is None and parsed.digest is None:
            # A bare repository name saves every tag of it (as Docker does).
            for image_id, rlist in _tags_of_repo(svc, parsed).items():
                chosen.setdefault(image_id, []).extend(r for r in rlist if r not in chosen.get(image_id, []))
        elif parsed.digest is None and parsed not in refs:
            refs.append(parsed)
    return [(svc.store.images[i], refs) for i, refs in chosen.items()]


def _tags_of_repo(svc: ImageService, repo: reference.Reference) -> dict[str, list[reference.Reference]]:
    out: dict[str, list[reference.Reference]] = {}
    for ref, image_id in svc.store.refs.items():
        parsed = reference.parse(ref)
        if parsed.name == repo.name and parsed.digest is None:
            out.setdefault(image_id, []).append(parsed)
    return out


async def save(svc: ImageService, names: list[str]) -> AsyncIterator[bytes]:
    """`docker save`: resolves every name first (NoSuchImage before any byte is sent)."""
    targets = save_targets(svc, names)
    chains = [c for image, _ in targets for c in image.chain_ids]

    async def stream() -> AsyncIterator[bytes]:
        with svc.store.pinned(chains):
            chunks = _iterate_in_thread(archive.save_stream_blocking(svc.store, targets))
            async with closing(chunks):
                async for chunk in chunks:
                    yield chunk
        for image, refs in targets:
            svc.events.publish(
                "image", "save", image.image_id, {"name": refs[0].familiar() if refs else image.image_id}
            )

    return stream()


async def import_(
    svc: ImageService,
    body: AsyncIterator[bytes],
    *,
    repo: str | None,
    tag: str | None,
    changes: list[str],
    message: str,
    platform: str | None = None,
) -> str:
    """`docker import`: a rootfs tarball becomes a one-layer image; returns the image ID."""
    target = _target_ref(svc, repo, tag)
    config = archive.apply_changes({}, changes)
    path = await spool(svc, body)
    try:

        def opener() -> IO[bytes]:
            return open(path, "rb")

        record = await svc.create_layer(None, opener)
    finally:
        await asyncio.to_thread(path.unlink, True)
    with svc.store.pinned([record.chain_id]):
        svc.store.register_layer(record)
        created = now_rfc3339()
        arch = platform.split("/")[1] if platform and "/" in platform else host_platform()[1]
        config_bytes = archive.image_config(
            diff_ids=[record.diff_id],
            created=created,
            config=config,
            history=[{"created": created, "comment": message or "Imported from -"}],
            architecture=arch,
            comment=message,
        )
        image = await svc.add_image(config_bytes, tags=[target] if target else [])
    svc.events.publish("image", "import", image.image_id, {"name": image.image_id})
    return image.image_id


def _target_ref(svc: ImageService, repo: str | None, tag: str | None) -> reference.Reference | None:
    if not repo:
        return None
    parsed = reference.parse(repo)
    if tag:
        parsed = parsed.with_tag(reference.check_tag(tag))
    return parsed.tagged_or_latest()


async def commit(
    svc: ImageService,
    *,
    parent: str | None,
    layer_tar: Callable[[], Iterator[bytes]],
    config: dict[str, Any],
    changes: list[str] | None = None,
    comment: str = "",
    author: str = "",
    repo: str | None = None,
    tag: str | None = None,
    container_id: str = "",
    container_config: dict[str, Any] | None = None,
) -> str:
    """Create an image from `parent` (an image ID or ref, or None) plus one layer.

    `layer_tar` makes the layer's tar chunks (e.g. `layers.tar_directory_diff(upper)`); it is
    run in a thread. `config` is the new image's container Config before `changes`.
    Returns the image ID.
    """
    target = _target_ref(svc, repo, tag)
    base = svc.resolve(parent) if parent else None
    parent_chain = base.chain_ids[-1] if base and base.chain_ids else None
    with svc.store.pinned(base.chain_ids if base else []):

        def opener() -> IO[bytes]:
            return cast(IO[bytes], ChunkReader(layer_tar()))

        record = await svc.create_layer(parent_chain, opener)
        svc.store.register_layer(record)
        with svc.store.pinned([record.chain_id]):
            created = now_rfc3339()
            base_cfg = base.config if base else {}
            history = [*(base_cfg.get("history") or [])]
            history.append(
                {"created": created, "author": author, "comment": comment}
                if author
                else {"created": created, "comment": comment}
            )
            history[-1] = {k: v for k, v in history[-1].items() if v}
            history[-1]["created"] = created
            config_bytes = archive.image_config(
                diff_ids=[*(base.diff_ids if base else []), record.diff_id],
                created=created,
                config=archive.apply_changes(config, changes or []),
                history=history,
                architecture=str(base_cfg.get("architecture") or host_platform()[1]),
                comment=comment,
                author=author,
                container=container_id,
                container_config=container_config,
            )
            image = await svc.add_image(
                config_bytes, tags=[target] if target else [], parent=base.image_id if base else ""
            )
    return image.image_id


_END = object()


async def _iterate_in_thread(gen: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Drive a blocking generator from threads, a chunk at a time."""
    try:
        while True:
            chunk = await asyncio.to_thread(next, gen, _END)
            if chunk is _END:
                return
            assert isinstance(chunk, bytes)
            yield chunk
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
