"""`ImageService`: the facade the API and the container code use for images.

Resolving references, listing, inspecting, history, tagging, removal with Docker's conflict
rules, prune, load/save/import/commit, disk usage; pull and push live in `distribution.py`.
It owns the `ImageStore` and its in-memory indexes, changes them on the event loop only, and
sends blocking work to threads. Layer creation is de-duplicated: one job per chain ID, shared
by everyone who needs that layer. Image events go to the `EventBus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

from runtime import archive, layers, reference, store
from runtime.config import DaemonConfig
from runtime.errors import AmbiguousRef, Conflict, InvalidParameter, NoSuchImage, NotFound, PydockError
from runtime.events import EventBus
from runtime.ids import short_id
from runtime.imagestore import ImageRecord, ImageStore, LayerRecord, now_rfc3339
from runtime.registry import host_platform

log = logging.getLogger("pydock.images")

UsageProbe = Callable[[str], list[tuple[str, bool]]]
Progress = Callable[[dict[str, Any]], None]
NONE_TAG = "<none>:<none>"
NONE_DIGEST = "<none>@<none>"
SPOOL_CHUNK = 1 << 20


def _no_containers(_image_id: str) -> list[tuple[str, bool]]:
    return []


def unix_time(rfc3339: str) -> int:
    if not rfc3339:
        return 0
    text = rfc3339.rstrip("Z")
    main, _, frac = text.partition(".")
    try:
        dt = datetime.fromisoformat(main.replace("T", " ") + "+00:00")
    except ValueError:
        return 0
    del frac
    return int(dt.timestamp())


@dataclass(slots=True)
class _LayerJob:
    task: asyncio.Task[LayerRecord]
    listeners: list[Progress] = field(default_factory=list)

    def emit(self, message: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(message)


class ImageService:
    def __init__(self, config: DaemonConfig, events: EventBus) -> None:
        self.config = config
        self.events = events
        self.store = ImageStore(config.images_dir)
        self._usage_probe: UsageProbe = _no_containers
        self._lock = asyncio.Lock()  # metadata changes and deletions, one at a time
        self._layer_jobs: dict[str, _LayerJob] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._creating = 0  # layer creations outside layer jobs (import, commit) in flight
        self.active_blobs: Counter[str] = Counter()  # blobs a layer job is fetching or unpacking
        self.download_slots = asyncio.Semaphore(max(1, config.max_concurrent_downloads))
        self.upload_slots = asyncio.Semaphore(max(1, config.max_concurrent_uploads))
        self.blob_sources: dict[str, set[str]] = {}  # blob digest -> {"host/repo"} (cross-repo mount)

    # --- lifetime ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.store.recover_blocking)
        log.info(
            "image store ready", extra={"images": len(self.store.images), "layers": len(self.store.layers)}
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def set_usage_probe(self, probe: UsageProbe) -> None:
        """The container service tells which containers use an image: [(container id, running)]."""
        self._usage_probe = probe

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- resolving --------------------------------------------------------------------------------

    def resolve(self, ref: str) -> ImageRecord:
        """An image by name[:tag], name@digest, full or short ID, or `sha256:` ID.

        Raises NoSuchImage(ref) (404 `No such image: <ref>`), AmbiguousRef for a short ID with
        several matches.
        """
        images = self.store.images
        if ref.startswith("sha256:"):
            hexpart = ref[7:]
            if len(hexpart) == 64 and ref in images:
                return images[ref]
            return self._by_prefix(hexpart, ref) if hexpart else self._missing(ref)
        if len(ref) == 64 and ("sha256:" + ref) in images:
            return images["sha256:" + ref]
        try:
            parsed = reference.parse(ref)
        except InvalidParameter:
            parsed = None
        if parsed is not None:
            image_id = self.store.refs.get(str(parsed.tagged_or_latest()))
            if parsed.tag and parsed.digest:
                image_id = self.store.refs.get(str(parsed.with_digest(parsed.digest)))
            if image_id is not None and image_id in images:
                return images[image_id]
            if parsed.digest and parsed.digest in images:  # name@<image id>
                return images[parsed.digest]
        return self._by_prefix(ref, ref)

    def _by_prefix(self, prefix: str, ref: str) -> ImageRecord:
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            self._missing(ref)
        found = [i for i in self.store.images if i[7:].startswith(prefix)]
        if len(found) > 1:
            raise AmbiguousRef("image", ref)
        if not found:
            self._missing(ref)
        return self.store.images[found[0]]

    @staticmethod
    def _missing(ref: str) -> ImageRecord:
        raise NoSuchImage(ref)

    def layer_dirs(self, image: ImageRecord) -> list[Path]:
        """Overlay lower dirs of an image, top-most first (as `lowerdir=` wants).

        Each is a short symlink `<images>/l/<26 chars>` to the layer's `diff/` dir.
        """
        return [self.store.layer_link(c) for c in reversed(image.chain_ids)]

    def refs_of(self, image_id: str) -> list[reference.Reference]:
        out = []
        for ref, target in self.store.refs.items():
            if target == image_id:
                with contextlib.suppress(InvalidParameter):
                    out.append(reference.parse(ref))
        return sorted(out, key=str)

    def repo_tags(self, image_id: str) -> list[str]:
        return [r.familiar() for r in self.refs_of(image_id) if r.digest is None]

    def repo_digests(self, image_id: str) -> list[str]:
        return [r.familiar() for r in self.refs_of(image_id) if r.digest is not None]

    def children(self, image_id: str) -> list[str]:
        return [i for i, rec in self.store.images.items() if rec.parent == image_id]

    # --- layer jobs (shared, de-duplicated) -------------------------------------------------------

    async def ensure_layer(
        self,
        chain_id: str,
        make: Callable[[_LayerJob], Awaitable[LayerRecord]],
        listener: Progress | None = None,
    ) -> LayerRecord:
        """The layer with this chain ID, made once by `make` however many callers want it.

        A caller that is cancelled stops waiting; the job itself goes on for the others (and
        is cancelled at shutdown).
        """
        existing = self.store.layers.get(chain_id)
        if existing is not None:
            return existing
        job = self._layer_jobs.get(chain_id)
        if job is None:
            loop_job: _LayerJob | None = None

            async def run() -> LayerRecord:
                assert loop_job is not None
                async with self._lock:  # no deletion runs while the layer is being made
                    pass
                record = await make(loop_job)
                self.store.register_layer(record)
                return record

            task: asyncio.Task[LayerRecord] = asyncio.ensure_future(run())
            loop_job = job = _LayerJob(task)
            self._layer_jobs[chain_id] = job
            self._tasks.add(task)

            def done(t: asyncio.Task[LayerRecord]) -> None:
                self._tasks.discard(t)
                self._layer_jobs.pop(chain_id, None)
                if not t.cancelled():
                    t.exception()  # retrieved here too: the waiters may all be gone

            task.add_done_callback(done)
        if listener is not None:
            job.listeners.append(listener)
        try:
            return await asyncio.shield(job.task)
        finally:
            if listener is not None:
                with contextlib.suppress(ValueError):
                    job.listeners.remove(listener)

    async def _create_layer(self, parent: str | None, opener: Callable[[], IO[bytes]]) -> LayerRecord:
        """A layer from an uncompressed stream that no other job can share (import, commit)."""
        self._creating += 1
        try:
            return await asyncio.to_thread(self.store.create_layer_blocking, parent, opener, blob=None)
        finally:
            self._creating -= 1

    # --- registering images -----------------------------------------------------------------------

    async def add_image(
        self,
        config_bytes: bytes,
        *,
        tags: Iterable[reference.Reference] = (),
        digests: Iterable[reference.Reference] = (),
        parent: str = "",
        on_retag: Callable[[str, str], None] | None = None,
    ) -> ImageRecord:
        """Register an image whose layers are in the store, and point refs at it."""
        async with self._lock:
            record = self.store.image_record_for(config_bytes, parent=parent)
            await asyncio.to_thread(self.store.save_image_blocking, record, config_bytes)
            self.store.images[record.image_id] = record
            changed = False
            for ref in tags:
                old = self.store.refs.get(str(ref))
                if old != record.image_id:
                    if old is not None and on_retag is not None:
                        on_retag(str(ref), old)
                    self.store.refs[str(ref)] = record.image_id
                    changed = True
            for ref in digests:
                if self.store.refs.get(str(ref)) != record.image_id:
                    self.store.refs[str(ref)] = record.image_id
                    changed = True
            if changed:
                record.last_tag_time = now_rfc3339() if tags else record.last_tag_time
                await asyncio.to_thread(self.store.save_refs_blocking, dict(self.store.refs))
                await asyncio.to_thread(self.store.save_image_meta_blocking, record)
            return record

    async def tag(self, source: str, repo: str, tag: str | None) -> None:
        """Docker's `POST /images/{name}/tag` (InvalidParameter, NoSuchImage)."""
        image = self.resolve(source)
        target = reference.parse_repository_name(repo) if repo else None
        if target is None:
            raise InvalidParameter("repository name must have at least one component")
        new_ref = target.with_tag(reference.check_tag(tag) if tag else reference.DEFAULT_TAG)
        async with self._lock:
            self.store.refs[str(new_ref)] = image.image_id
            image.last_tag_time = now_rfc3339()
            await asyncio.to_thread(self.store.save_refs_blocking, dict(self.store.refs))
            await asyncio.to_thread(self.store.save_image_meta_blocking, image)
        self.events.publish("image", "tag", image.image_id, {"name": new_ref.familiar()})

    # --- listing and inspecting --------------------------------------------------------------------

    def summary(self, image: ImageRecord, *, tags: list[str] | None = None) -> dict[str, Any]:
        repo_tags = self.repo_tags(image.image_id) if tags is None else tags
        repo_digests = self.repo_digests(image.image_id)
        if not repo_tags and not repo_digests:
            repo_tags, repo_digests = [NONE_TAG], [NONE_DIGEST]
        elif not repo_tags:
            repo_tags = [NONE_TAG]
        return {
            "Containers": -1,
            "Created": unix_time(image.created),
            "Id": image.image_id,
            "Labels": (image.config.get("config") or {}).get("Labels") or None,
            "ParentId": image.parent,
            "RepoDigests": repo_digests,
            "RepoTags": repo_tags,
            "SharedSize": -1,
            "Size": image.size,
            "VirtualSize": image.size,
        }

    def list_images(
        self, filters: dict[str, list[str]], *, all_: bool = False, digests: bool = False
    ) -> list[dict[str, Any]]:
        """`GET /images/json` with dangling, label, before, since and reference filters."""
        for key in filters:
            if key not in ("dangling", "label", "before", "since", "reference", "until"):
                raise InvalidParameter(f"invalid filter '{key}'")
        dangling_values = filters.get("dangling", [])
        for value in dangling_values:
            if value.lower() not in ("true", "false", "1", "0"):
                raise InvalidParameter(f"invalid filter 'dangling={value}'")
        want_dangling = None if not dangling_values else dangling_values[0].lower() in ("true", "1")
        before = min((unix_time(self.resolve(r).created) for r in filters.get("before", [])), default=None)
        since = max((unix_time(self.resolve(r).created) for r in filters.get("since", [])), default=None)
        out = []
        for image in sorted(self.store.images.values(), key=lambda i: i.created, reverse=True):
            tags = self.repo_tags(image.image_id)
            is_dangling = not tags and not self.repo_digests(image.image_id)
            if want_dangling is not None and is_dangling != want_dangling:
                continue
            if not all_ and not tags and self.children(image.image_id):
                continue  # an intermediate image, shown only with -a
            created = unix_time(image.created)
            if before is not None and created >= before:
                continue
            if since is not None and created <= since:
                continue
            if not _labels_match(
                filters.get("label", []), (image.config.get("config") or {}).get("Labels") or {}
            ):
                continue
            patterns = filters.get("reference", [])
            if patterns:
                tags = [t for t in tags if any(_reference_match(p, t) for p in patterns)]
                if not tags:
                    continue
            out.append(self.summary(image, tags=tags))
        del digests  # RepoDigests are always sent; the CLI shows them with --digests
        return out

    def inspect(self, ref: str) -> dict[str, Any]:
        try:
            image = self.resolve(ref)
        except NoSuchImage:
            shown = ref
            with contextlib.suppress(InvalidParameter):
                parsed = reference.parse(ref)
                shown = parsed.tagged_or_latest().familiar()
            raise NotFound(f"no such image: {ref}: No such image: {shown}") from None
        cfg = image.config
        lower = [str(self.store.layer_diff_dir(c)) for c in reversed(image.chain_ids)]
        graph: dict[str, Any] = {"Name": "overlay2", "Data": {}}
        if lower:
            graph["Data"] = {"MergedDir": "", "UpperDir": lower[0], "WorkDir": ""}
            if len(lower) > 1:
                graph["Data"]["LowerDir"] = ":".join(lower[1:])
        out: dict[str, Any] = {
            "Id": image.image_id,
            "RepoTags": self.repo_tags(image.image_id),
            "RepoDigests": self.repo_digests(image.image_id),
            "Parent": image.parent,
            "Comment": cfg.get("comment", ""),
            "Created": image.created,
            "Container": cfg.get("container", ""),
            "ContainerConfig": cfg.get("container_config") or _empty_config(),
            "DockerVersion": cfg.get("docker_version", ""),
            "Author": cfg.get("author", ""),
            "Config": _full_config(cfg.get("config") or {}),
            "Architecture": cfg.get("architecture", ""),
            "Os": cfg.get("os", "linux"),
            "Size": image.size,
            "VirtualSize": image.size,
            "GraphDriver": graph,
            "RootFS": {"Type": "layers", "Layers": image.diff_ids},
            "Metadata": {"LastTagTime": image.last_tag_time or "0001-01-01T00:00:00Z"},
        }
        if cfg.get("variant"):
            out["Variant"] = cfg["variant"]
        return out

    def history(self, ref: str) -> list[dict[str, Any]]:
        image = self.resolve(ref)
        entries = image.config.get("history") or []
        layer_sizes = [self.store.layers[c].size for c in image.chain_ids]
        out: list[dict[str, Any]] = []
        layer_index = 0
        for entry in entries:
            empty = bool(entry.get("empty_layer"))
            size = 0
            if not empty and layer_index < len(layer_sizes):
                size = layer_sizes[layer_index]
                layer_index += 1
            out.append(
                {
                    "Comment": entry.get("comment", ""),
                    "Created": unix_time(str(entry.get("created", ""))),
                    "CreatedBy": entry.get("created_by", ""),
                    "Id": "<missing>",
                    "Size": size,
                    "Tags": None,
                }
            )
        if not out:  # no history recorded: one line per layer
            for size in layer_sizes:
                out.append(
                    {
                        "Comment": "",
                        "Created": unix_time(image.created),
                        "CreatedBy": "",
                        "Id": "<missing>",
                        "Size": size,
                        "Tags": None,
                    }
                )
        out.reverse()
        if out:
            out[0]["Id"] = image.image_id
            out[0]["Tags"] = self.repo_tags(image.image_id) or None
        return out

    # --- removal ------------------------------------------------------------------------------------

    async def remove(self, ref: str, *, force: bool = False, noprune: bool = False) -> list[dict[str, str]]:
        """`docker rmi`: untag, or delete when the last reference goes (Docker's 409 rules)."""
        image = self.resolve(ref)
        image_id = image.image_id
        records: list[dict[str, str]] = []
        async with self._lock:
            refs = self.refs_of(image_id)
            by_id = ref.startswith("sha256:") or (
                image_id[7:].startswith(ref) and not self._is_named(ref, image_id)
            )
            if not by_id:
                using = self._usage_probe(image_id)
                if not force and _is_single_reference(refs) and using:
                    raise Conflict(
                        f'conflict: unable to remove repository reference "{ref}" (must force) - container '
                        f"{short_id(using[0][0])} is using its referenced image {short_id(image_id)}"
                    )
                parsed = reference.parse(ref)
                if parsed.digest is None:
                    parsed = parsed.tagged_or_latest()
                elif parsed.tag is not None:
                    parsed = parsed.with_digest(parsed.digest)
                self.store.refs.pop(str(parsed), None)
                records.append({"Untagged": parsed.familiar()})
                self.events.publish("image", "untag", image_id, {"name": image_id})
                remaining = self.refs_of(image_id)
                if parsed.digest is None and not any(
                    r.digest is None and r.name == parsed.name for r in remaining
                ):
                    for r in remaining:
                        if r.digest is not None and r.name == parsed.name:
                            self.store.refs.pop(str(r), None)
                            records.append({"Untagged": r.familiar()})
                    remaining = self.refs_of(image_id)
                if remaining:
                    await asyncio.to_thread(self.store.save_refs_blocking, dict(self.store.refs))
                    return records
            elif _is_single_reference(refs):
                self._check_conflict(image_id, hard_only=force, check_refs=False)
                for r in refs:
                    self.store.refs.pop(str(r), None)
                    records.append({"Untagged": r.familiar()})
                    self.events.publish("image", "untag", image_id, {"name": image_id})
            await self._delete_helper(image_id, records, force=force, prune=not noprune, quiet=False)
            await asyncio.to_thread(self.store.save_refs_blocking, dict(self.store.refs))
        return records

    def _is_named(self, ref: str, image_id: str) -> bool:
        try:
            parsed = reference.parse(ref)
        except InvalidParameter:
            return False
        return self.store.refs.get(str(parsed.tagged_or_latest())) == image_id

    def _check_conflict(self, image_id: str, *, hard_only: bool, check_refs: bool = True) -> str | None:
        """Raise Docker's conflict for deleting this image; hard ones can't be forced."""
        sid = short_id(image_id)
        if self.children(image_id):
            raise Conflict(
                f"conflict: unable to delete {sid} (cannot be forced) - image has dependent child images"
            )
        using = self._usage_probe(image_id)
        running = [c for c, is_running in using if is_running]
        if running:
            raise Conflict(
                f"conflict: unable to delete {sid} (cannot be forced) - "
                f"image is being used by running container "
                f"{short_id(running[0])}"
            )
        if hard_only:
            return None
        if check_refs and self.refs_of(image_id):
            raise Conflict(
                f"conflict: unable to delete {sid} (must be forced) - "
                "image is referenced in multiple repositories"
            )
        if using:
            raise Conflict(
                f"conflict: unable to delete {sid} (must be forced) - "
                f"image is being used by stopped container "
                f"{short_id(using[0][0])}"
            )
        return None

    async def _delete_helper(
        self,
        image_id: str,
        records: list[dict[str, str]],
        *,
        force: bool,
        prune: bool,
        quiet: bool,
        check_refs: bool = True,
    ) -> None:
        image = self.store.images.get(image_id)
        if image is None:
            return
        try:
            self._check_conflict(image_id, hard_only=force, check_refs=check_refs)
        except Conflict:
            if quiet:
                return
            raise
        for r in self.refs_of(image_id):
            self.store.refs.pop(str(r), None)
            records.append({"Untagged": r.familiar()})
        del self.store.images[image_id]
        await asyncio.to_thread(self.store.delete_image_blocking, image_id)
        self.events.publish("image", "delete", image_id, {"name": image_id})
        records.append({"Deleted": image_id})
        victims = self.store.unused_layers(reversed(image.chain_ids))
        gone = self.store.forget_layers(victims)
        await asyncio.to_thread(self.store.delete_layers_blocking, gone, self._blobs_to_keep())
        records.extend({"Deleted": layer.chain_id} for layer in gone)
        if prune and image.parent and not self.refs_of(image.parent):
            await self._delete_helper(image.parent, records, force=False, prune=True, quiet=True)

    async def prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        """`POST /images/prune`: dangling images (or all unused with dangling=false)."""
        for key in filters:
            if key not in ("dangling", "label", "label!", "until"):
                raise InvalidParameter(f"invalid filter '{key}'")
        dangling_only = True
        for value in filters.get("dangling", []):
            if value.lower() not in ("true", "false", "1", "0"):
                raise InvalidParameter(f"invalid filter 'dangling={value}'")
            dangling_only = value.lower() in ("true", "1")
        until = _until(filters.get("until", []))
        before = self.store.layers_size()
        deleted: list[dict[str, str]] = []
        async with self._lock:
            for image in sorted(self.store.images.values(), key=lambda i: i.created, reverse=True):
                if image.image_id not in self.store.images:
                    continue
                if dangling_only and self.refs_of(image.image_id):
                    continue
                if self._usage_probe(image.image_id) or self.children(image.image_id):
                    continue
                labels = (image.config.get("config") or {}).get("Labels") or {}
                if not _labels_match(filters.get("label", []), labels):
                    continue
                if filters.get("label!") and _labels_match(filters["label!"], labels, any_=True):
                    continue
                if until is not None and unix_time(image.created) >= until:
                    continue
                try:
                    await self._delete_helper(
                        image.image_id, deleted, force=False, prune=True, quiet=True, check_refs=False
                    )
                except PydockError as exc:
                    log.info("prune skipped %s: %s", image.image_id, exc)
            orphans = self.store.forget_layers(self.store.orphan_layers())
            await asyncio.to_thread(self.store.delete_layers_blocking, orphans, self._blobs_to_keep())
            await self._delete_stray_blobs()
            await asyncio.to_thread(self.store.save_refs_blocking, dict(self.store.refs))
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": max(0, before - self.store.layers_size())}

    def _blobs_to_keep(self) -> set[str]:
        return self.store.blobs_in_use() | {d for d, n in self.active_blobs.items() if n > 0}

    async def _delete_stray_blobs(self) -> None:
        """Blobs no layer or image uses (a pull killed between download and unpack).

        Only while nothing is making layers: a blob being made is in use by no record yet. The
        directory is listed first, so blobs that land later are never candidates.
        """
        listed = await asyncio.to_thread(self.store.list_blobs_blocking)
        if self._creating or self._layer_jobs:
            return
        keep = self._blobs_to_keep()
        stray = [d for d in listed if d not in keep]
        if stray:
            await asyncio.to_thread(self.store.delete_blobs_blocking, stray)

    # --- load / save / import / commit ---------------------------------------------------------------

    async def spool(self, body: AsyncIterator[bytes]) -> Path:
        """Write an upload to a temp file under the image store (swept at startup if we die)."""
        path = self.store.root / f"{store.TMP_PREFIX}upload-{uuid.uuid4().hex}"
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

    async def load(self, body: AsyncIterator[bytes]) -> list[dict[str, Any]]:
        """`docker load` of a Docker or OCI archive; returns the stream messages."""
        path = await self.spool(body)
        try:
            ar = await asyncio.to_thread(archive.Archive, path)
            try:
                return await self._load_archive(ar)
            finally:
                ar.close()
        finally:
            await asyncio.to_thread(path.unlink, True)

    async def _load_archive(self, ar: archive.Archive) -> list[dict[str, Any]]:
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
            with self.store.pinned(chains):
                for i, member in enumerate(entry.layer_members):
                    parent = chains[i - 1] if i else None

                    async def make(
                        _job: _LayerJob,
                        member: str = member,
                        parent: str | None = parent,
                        diff: str = diff_ids[i],
                    ) -> LayerRecord:
                        return await asyncio.to_thread(
                            self.store.create_layer_blocking,
                            parent,
                            lambda: ar.open_member(member),
                            blob=None,
                            expected_diff_id=diff,
                        )

                    await self.ensure_layer(chains[i], make)

                def retag(ref: str, old: str) -> None:
                    messages.append(
                        {
                            "stream": f"The image {reference.familiar(ref)} already exists, renaming "
                            f"the old one with ID {old} to empty string\n"
                        }
                    )

                record = await self.add_image(entry.config_bytes, tags=entry.tags, on_retag=retag)
            if entry.tags:
                for tag in entry.tags:
                    messages.append({"stream": f"Loaded image: {tag.familiar()}\n"})
                    self.events.publish("image", "load", record.image_id, {"name": tag.familiar()})
            else:
                messages.append({"stream": f"Loaded image ID: {record.image_id}\n"})
                self.events.publish("image", "load", record.image_id, {"name": record.image_id})
        return messages

    def save_targets(self, names: list[str]) -> list[tuple[ImageRecord, list[reference.Reference]]]:
        """What `docker save NAME...` writes: each image once, with the names that selected it."""
        chosen: dict[str, list[reference.Reference]] = {}
        for name in names:
            image = self.resolve(name)
            refs = chosen.setdefault(image.image_id, [])
            try:
                parsed = reference.parse(name)
            except InvalidParameter:
                continue
            if self.store.refs.get(str(parsed.tagged_or_latest())) != image.image_id:
                continue  # selected by ID: saved without names
            if parsed.tag is None and parsed.digest is None:
                # A bare repository name saves every tag of it (as Docker does).
                for image_id, rlist in self._tags_of_repo(parsed).items():
                    chosen.setdefault(image_id, []).extend(
                        r for r in rlist if r not in chosen.get(image_id, [])
                    )
            elif parsed.digest is None and parsed not in refs:
                refs.append(parsed)
        return [(self.store.images[i], refs) for i, refs in chosen.items()]

    def _tags_of_repo(self, repo: reference.Reference) -> dict[str, list[reference.Reference]]:
        out: dict[str, list[reference.Reference]] = {}
        for ref, image_id in self.store.refs.items():
            parsed = reference.parse(ref)
            if parsed.name == repo.name and parsed.digest is None:
                out.setdefault(image_id, []).append(parsed)
        return out

    async def save(self, names: list[str]) -> AsyncIterator[bytes]:
        """`docker save`: resolves every name first (NoSuchImage before any byte is sent)."""
        targets = self.save_targets(names)
        chains = [c for image, _ in targets for c in image.chain_ids]

        async def stream() -> AsyncIterator[bytes]:
            with self.store.pinned(chains):
                gen = archive.save_stream_blocking(self.store, targets)
                async for chunk in _iterate_in_thread(gen):
                    yield chunk
            for image, refs in targets:
                self.events.publish(
                    "image", "save", image.image_id, {"name": refs[0].familiar() if refs else image.image_id}
                )

        return stream()

    async def import_(
        self,
        body: AsyncIterator[bytes],
        *,
        repo: str | None,
        tag: str | None,
        changes: list[str],
        message: str,
        platform: str | None = None,
    ) -> str:
        """`docker import`: a rootfs tarball becomes a one-layer image; returns the image ID."""
        target = self._target_ref(repo, tag)
        config = archive.apply_changes({}, changes)
        path = await self.spool(body)
        try:

            def opener() -> IO[bytes]:
                return open(path, "rb")

            record = await self._create_layer(None, opener)
        finally:
            await asyncio.to_thread(path.unlink, True)
        with self.store.pinned([record.chain_id]):
            self.store.register_layer(record)
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
            image = await self.add_image(config_bytes, tags=[target] if target else [])
        self.events.publish("image", "import", image.image_id, {"name": image.image_id})
        return image.image_id

    def _target_ref(self, repo: str | None, tag: str | None) -> reference.Reference | None:
        if not repo:
            return None
        parsed = reference.parse(repo)
        if tag:
            parsed = parsed.with_tag(reference.check_tag(tag))
        return parsed.tagged_or_latest()

    async def commit(
        self,
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
        target = self._target_ref(repo, tag)
        base = self.resolve(parent) if parent else None
        parent_chain = base.chain_ids[-1] if base and base.chain_ids else None
        with self.store.pinned(base.chain_ids if base else []):

            def opener() -> IO[bytes]:
                return cast(IO[bytes], _IterReader(layer_tar()))

            record = await self._create_layer(parent_chain, opener)
            self.store.register_layer(record)
            with self.store.pinned([record.chain_id]):
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
                image = await self.add_image(
                    config_bytes, tags=[target] if target else [], parent=base.image_id if base else ""
                )
        return image.image_id

    # --- accounting ---------------------------------------------------------------------------------

    def disk_usage(self) -> dict[str, Any]:
        """The images part of `GET /system/df`: LayersSize and per-image summaries."""
        layer_users: dict[str, int] = {}
        for image in self.store.images.values():
            for c in image.chain_ids:
                layer_users[c] = layer_users.get(c, 0) + 1
        out = []
        for image in self.store.images.values():
            summary = self.summary(image)
            summary["Containers"] = len(self._usage_probe(image.image_id))
            summary["SharedSize"] = sum(
                self.store.layers[c].size for c in image.chain_ids if layer_users.get(c, 0) > 1
            )
            out.append(summary)
        return {"LayersSize": self.store.layers_size(), "Images": out}

    def image_count(self) -> int:
        return len(self.store.images)


def _is_single_reference(refs: list[reference.Reference]) -> bool:
    if len(refs) <= 1:
        return len(refs) == 1
    single: reference.Reference | None = None
    canonical: set[str] = set()
    for r in refs:
        if r.digest is not None:
            canonical.add(r.name)
        elif single is None:
            single = r
        else:
            return False
    if single is None:
        single = refs[0]
    return len(canonical) == 1 and single.name in canonical


def _labels_match(wanted: list[str], labels: dict[str, str], *, any_: bool = False) -> bool:
    results = []
    for w in wanted:
        key, sep, value = w.partition("=")
        results.append(key in labels and (not sep or labels[key] == value))
    return (any(results) if any_ else all(results)) if results else True


def _reference_match(pattern: str, familiar_tag: str) -> bool:
    """Docker's FamiliarMatch: the pattern against `name:tag` or just `name`."""
    name = familiar_tag.rsplit(":", 1)[0] if ":" in familiar_tag.rsplit("/", 1)[-1] else familiar_tag
    return fnmatch.fnmatchcase(familiar_tag, pattern) or fnmatch.fnmatchcase(name, pattern)


def _until(values: list[str]) -> int | None:
    if not values:
        return None
    value = values[0]
    try:
        return int(float(value))
    except ValueError:
        pass
    units = {"s": 1, "m": 60, "h": 3600}
    if value and value[-1] in units and value[:-1].replace(".", "").isdigit():
        return int(time.time() - float(value[:-1]) * units[value[-1]])
    t = unix_time(value if "T" in value else value + "T00:00:00Z")
    if t == 0:
        raise InvalidParameter(f"invalid filter 'until={value}'")
    return t


def _empty_config() -> dict[str, Any]:
    return _full_config({})


def _full_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The container Config with every field Docker shows (nulls where unset)."""
    base: dict[str, Any] = {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": None,
        "Cmd": None,
        "Image": "",
        "Volumes": None,
        "WorkingDir": "",
        "Entrypoint": None,
        "OnBuild": None,
        "Labels": None,
    }
    base.update(cfg)
    return base


class _IterReader:
    """A read()-able face of an iterator of byte chunks (for unpacking a generated tar)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def __enter__(self) -> _IterReader:
        return self

    def __exit__(self, *exc: object) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


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
