"""`ImageService`: the facade the API and the container code use for images.

Resolving references, listing, inspecting, history, tagging and disk usage live here; removal
and prune in `imagedelete.py`, load/save/import/commit in `imagefiles.py`, pull and push in
`distribution.py` (the methods here delegate, so callers see one facade).
It owns the `ImageStore` and its in-memory indexes, changes them on the event loop only, and
sends blocking work to threads. Layer creation is de-duplicated: one job per chain ID, shared
by everyone who needs that layer. Image events go to the `EventBus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from runtime import imagedelete, imagefiles, reference
from runtime.config import DaemonConfig
from runtime.errors import AmbiguousRef, InvalidParameter, NoSuchImage, NotFound, SystemError_
from runtime.events import EventBus
from runtime.imagestore import ImageRecord, ImageStore, LayerRecord, labels_match, now_rfc3339, unix_time

log = logging.getLogger("pydock.images")

UsageProbe = Callable[[str], list[tuple[str, bool]]]
Progress = Callable[[dict[str, Any]], None]
NONE_TAG = "<none>:<none>"
NONE_DIGEST = "<none>@<none>"


def _no_containers(_image_id: str) -> list[tuple[str, bool]]:
    return []


@dataclass(slots=True)
class LayerJob:
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
        self.containers_using: UsageProbe = _no_containers
        self.meta_lock = asyncio.Lock()  # metadata changes and deletions, one at a time
        self.layer_jobs: dict[str, LayerJob] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.creating = 0  # layer creations outside layer jobs (import, commit) in flight
        self.active_blobs: Counter[str] = Counter()  # blobs a layer job is fetching or unpacking
        self.download_slots = asyncio.Semaphore(max(1, config.max_concurrent_downloads))
        # Layers being unpacked as they download: a transfer frees its download slot when the
        # body is in, while its thread still works through what it buffered; this bounds those
        # threads (and their buffers) however many small layers an image has.
        self.unpack_slots = asyncio.Semaphore(2 * max(1, config.max_concurrent_downloads))
        self.upload_slots = asyncio.Semaphore(max(1, config.max_concurrent_uploads))
        self.blob_sources: dict[str, set[str]] = {}  # blob digest -> {"host/repo"} (cross-repo mount)

    # --- lifetime ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.store.recover_blocking)
        log.info(
            "image store ready", extra={"images": len(self.store.images), "layers": len(self.store.layers)}
        )

    async def close(self) -> None:
        """Cancel the layer jobs still running and wait for them (they clean up after themselves)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def set_usage_probe(self, probe: UsageProbe) -> None:
        """The container service tells which containers use an image: [(container id, running)]."""
        self.containers_using = probe

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
        make: Callable[[LayerJob], Awaitable[LayerRecord]],
        listener: Progress | None = None,
    ) -> LayerRecord:
        """The layer with this chain ID, made once by `make` however many callers want it.

        A caller that is cancelled stops waiting; the job itself goes on for the others (and
        is cancelled at shutdown).
        """
        existing = self.store.layers.get(chain_id)
        if existing is not None:
            return existing
        job = self.layer_jobs.get(chain_id)
        if job is None:
            loop_job: LayerJob | None = None

            async def run() -> LayerRecord:
                assert loop_job is not None
                async with self.meta_lock:  # no deletion runs while the layer is being made
                    pass
                record = await make(loop_job)
                self.store.register_layer(record)
                return record

            task: asyncio.Task[LayerRecord] = asyncio.ensure_future(run())
            loop_job = job = LayerJob(task)
            self.layer_jobs[chain_id] = job
            self._tasks.add(task)

            def done(t: asyncio.Task[LayerRecord]) -> None:
                self._tasks.discard(t)
                self.layer_jobs.pop(chain_id, None)
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

    async def create_layer(self, parent: str | None, opener: Callable[[], IO[bytes]]) -> LayerRecord:
        """A layer from an uncompressed stream that no other job can share (import, commit)."""
        self.creating += 1
        try:
            for _ in range(3):
                record = await asyncio.to_thread(self.store.create_layer_blocking, parent, opener, blob=None)
                if record.fresh or record.chain_id in self.store.layers:
                    return record
                # The same layer exists but is being deleted (a prune took it as unused):
                # wait for the deletion, then make it again.
                async with self.meta_lock:
                    pass
            raise SystemError_(f"layer {record.chain_id} kept disappearing while it was being made")
        finally:
            self.creating -= 1

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
        async with self.meta_lock:
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
        async with self.meta_lock:
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
            if not labels_match(
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

    # --- removal (imagedelete.py) and archives (imagefiles.py) -----------------------------------------

    async def remove(self, ref: str, *, force: bool = False, noprune: bool = False) -> list[dict[str, str]]:
        """`docker rmi`: untag, or delete when the last reference goes (Docker's 409 rules)."""
        return await imagedelete.remove(self, ref, force=force, noprune=noprune)

    async def prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        """`POST /images/prune`: dangling images (or all unused with dangling=false)."""
        return await imagedelete.prune(self, filters)

    async def load(self, body: AsyncIterator[bytes], emit: Progress | None = None) -> list[dict[str, Any]]:
        """`docker load` of a Docker or OCI archive; returns the result messages (`emit` gets
        per-layer "Loading layer" progress)."""
        return await imagefiles.load(self, body, emit)

    async def save(self, names: list[str]) -> AsyncIterator[bytes]:
        """`docker save`: every name is resolved first (NoSuchImage before any byte is sent)."""
        return await imagefiles.save(self, names)

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
        return await imagefiles.import_(
            self, body, repo=repo, tag=tag, changes=changes, message=message, platform=platform
        )

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
        return await imagefiles.commit(
            self,
            parent=parent,
            layer_tar=layer_tar,
            config=config,
            changes=changes,
            comment=comment,
            author=author,
            repo=repo,
            tag=tag,
            container_id=container_id,
            container_config=container_config,
        )

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
            summary["Containers"] = len(self.containers_using(image.image_id))
            summary["SharedSize"] = sum(
                self.store.layers[c].size for c in image.chain_ids if layer_users.get(c, 0) > 1
            )
            out.append(summary)
        return {"LayersSize": self.store.layers_size(), "Images": out}

    def image_count(self) -> int:
        return len(self.store.images)


def _reference_match(pattern: str, familiar_tag: str) -> bool:
    """Docker's FamiliarMatch: the pattern against `name:tag` or just `name`."""
    name = familiar_tag.rsplit(":", 1)[0] if ":" in familiar_tag.rsplit("/", 1)[-1] else familiar_tag
    return fnmatch.fnmatchcase(familiar_tag, pattern) or fnmatch.fnmatchcase(name, pattern)


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
