"""The content-addressed image store under `<data-root>/images/`.

    blobs/sha256/<hex>          blobs by digest (layer tars as received, image configs); a blob
                                is hashed while it is written and lands only if the digest matches
    layers/<chain-hex>/diff/    an unpacked layer: an overlayfs lower dir (overlay whiteouts)
    layers/<chain-hex>/meta.json  diff ID, parent chain, size, the blob holding its tar
    l/<short>                   -> ../layers/<chain-hex>/diff, so overlay mount options stay short
    imagedb/<hex>.json          per-image metadata (parent, last tag time); the config is the blob
    repositories.json           references (`docker.io/library/busybox:latest`, `...@sha256:`) -> ID

Everything is made under a `.tmp-*` name and renamed into place; `recover()` sweeps leftovers, so
after a crash a layer or blob exists whole or not at all. Layer refcounts are derived from the
images that use them (never persisted), plus in-memory pins held by operations in flight.

The in-memory indexes are changed on the event loop only; the blocking work (unpacking, hashing,
fsync, deletion) is done by the sync `*_blocking` functions, which callers run in threads. This
module knows nothing of registries, archives or HTTP.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from runtime import layers, store
from runtime.errors import InvalidParameter, SystemError_

log = logging.getLogger("pydock.images")

MEDIA_TAR = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
SHORT_LINK_LEN = 26


class DigestMismatch(InvalidParameter):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"digest mismatch: expected {expected}, got {actual}")


def hex_of(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InvalidParameter(f"invalid digest: {digest!r}")
    return hexpart


def short_link_name(chain_id: str) -> str:
    """A stable short name for a layer (base32 of its chain ID), for `l/`."""
    return base64.b32encode(bytes.fromhex(hex_of(chain_id))).decode()[:SHORT_LINK_LEN]


def now_rfc3339() -> str:
    t = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1_000_000_000)) + f".{t % 1_000_000_000:09d}Z"


def unix_time(rfc3339: str) -> int:
    if not rfc3339:
        return 0
    main = rfc3339.rstrip("Z").partition(".")[0]
    try:
        dt = datetime.fromisoformat(main.replace("T", " ") + "+00:00")
    except ValueError:
        return 0
    return int(dt.timestamp())


def labels_match(wanted: list[str], labels: dict[str, str], *, any_: bool = False) -> bool:
    results = []
    for w in wanted:
        key, sep, value = w.partition("=")
        results.append(key in labels and (not sep or labels[key] == value))
    return (any(results) if any_ else all(results)) if results else True


@dataclass(slots=True)
class LayerRecord:
    chain_id: str
    diff_id: str
    parent: str | None
    size: int  # bytes of content (Docker's layer size)
    blob: str  # digest of the stored blob holding the layer tar (maybe compressed)
    blob_media_type: str
    blob_size: int
    tar_size: int  # length of the uncompressed tar (the diff ID's preimage)
    compressed: dict[str, int] = field(default_factory=dict)  # known gzip blobs: digest -> size
    fresh: bool = field(default=False, compare=False)  # landed by this call (not persisted)

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "diff_id": self.diff_id,
            "parent": self.parent,
            "size": self.size,
            "blob": self.blob,
            "blob_media_type": self.blob_media_type,
            "blob_size": self.blob_size,
            "tar_size": self.tar_size,
            "compressed": self.compressed,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LayerRecord:
        return cls(
            chain_id=str(obj["chain_id"]),
            diff_id=str(obj["diff_id"]),
            parent=obj.get("parent"),
            size=int(obj["size"]),
            blob=str(obj["blob"]),
            blob_media_type=str(obj["blob_media_type"]),
            blob_size=int(obj["blob_size"]),
            tar_size=int(obj["tar_size"]),
            compressed={str(k): int(v) for k, v in (obj.get("compressed") or {}).items()},
        )


@dataclass(slots=True)
class ImageRecord:
    image_id: str  # sha256:<hex of the config bytes>
    config: dict[str, Any]
    config_size: int
    chain_ids: list[str]
    parent: str = ""
    last_tag_time: str = ""
    size: int = 0

    @property
    def diff_ids(self) -> list[str]:
        return [str(d) for d in (self.config.get("rootfs") or {}).get("diff_ids") or []]

    @property
    def created(self) -> str:
        return str(self.config.get("created") or "")


class BlobWriter:
    """Writes one blob under a temp name, hashing as it goes; `commit` lands it by digest."""

    def __init__(self, blobs_dir: Path) -> None:
        self._dir = blobs_dir
        self.tmp = blobs_dir / f"{store.TMP_PREFIX}{uuid.uuid4().hex}"
        self.file: IO[bytes] = open(self.tmp, "xb")  # noqa: SIM115 - closed in commit/abort
        self._hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        if not self.file.closed:
            self.file.write(data)
        self._hasher.update(data)
        self.size += len(data)

    def stop_storing(self) -> None:
        """Hash what follows without writing it (a blob read to the end only to learn its
        digest: it will not be committed)."""
        self.abort()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest()

    def commit(self, expected: str | None = None, *, durable: bool = True) -> str:
        """Land the blob at its digest; DigestMismatch (and nothing landed) when it differs."""
        try:
            self.file.flush()
            if durable:
                os.fsync(self.file.fileno())
            self.file.close()
            digest = self.digest
            if expected is not None and digest != expected:
                raise DigestMismatch(expected, digest)
            os.replace(self.tmp, self._dir / hex_of(digest))
            if durable:
                store.fsync_dir(self._dir)
            return digest
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class TeeBlobWriter:
    """A file-like face of a BlobWriter, for `layers.unpack(tee=...)`."""

    def __init__(self, writer: BlobWriter) -> None:
        self._w = writer

    def write(self, data: bytes) -> int:
        self._w.write(data)
        return len(data)


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs" / "sha256"
        self.layers_dir = root / "layers"
        self.links_dir = root / "l"
        self.imagedb_dir = root / "imagedb"
        self.repositories_file = root / "repositories.json"
        self.images: dict[str, ImageRecord] = {}
        self.layers: dict[str, LayerRecord] = {}
        self.refs: dict[str, str] = {}  # normalised reference string -> image ID
        self._pins: Counter[str] = Counter()

    # --- startup --------------------------------------------------------------------------------

    def recover_blocking(self) -> None:
        """Create the layout, sweep half-made things, load the indexes (blocking; at startup)."""
        for d in (self.blobs_dir, self.layers_dir, self.links_dir, self.imagedb_dir):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.root, self.blobs_dir, self.layers_dir, self.links_dir, self.imagedb_dir):
            for gone in store.sweep(d):
                log.info("removed leftover %s", gone)
        self.layers.clear()
        for entry in self.layers_dir.iterdir():
            try:
                meta = LayerRecord.from_json(store.read_json(entry / "meta.json"))
                if hex_of(meta.chain_id) != entry.name or not (entry / "diff").is_dir():
                    raise ValueError("layer directory does not match its metadata")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("removing broken layer %s: %s", entry.name, exc)
                store.remove_tree(entry)
                continue
            self.layers[meta.chain_id] = meta
        for link in self.links_dir.iterdir():
            if not link.exists():  # dangling: its layer is gone (or never landed)
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
        for layer in self.layers.values():
            self._ensure_link(layer.chain_id)
        self.images.clear()
        for entry in self.imagedb_dir.glob("*.json"):
            image_id = "sha256:" + entry.stem
            try:
                record = self._load_image(image_id, store.read_json(entry))
            except (OSError, ValueError, KeyError, TypeError, InvalidParameter) as exc:
                log.warning("dropping broken image %s: %s", image_id, exc)
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                continue
            self.images[image_id] = record
        try:
            raw = store.read_json(self.repositories_file)
            refs = raw.get("refs", {}) if isinstance(raw, dict) else {}
        except FileNotFoundError:
            refs = {}
        except (OSError, ValueError) as exc:
            log.warning("repositories.json unreadable, starting without tags: %s", exc)
            refs = {}
        self.refs = {str(k): str(v) for k, v in refs.items() if v in self.images}
        if len(self.refs) != len(refs):
            self.save_refs_blocking()

    def _load_image(self, image_id: str, meta: dict[str, Any]) -> ImageRecord:
        config_bytes = self.blob_path(image_id).read_bytes()
        if "sha256:" + hashlib.sha256(config_bytes).hexdigest() != image_id:
            raise ValueError("config blob does not match the image ID")
        config = json.loads(config_bytes)
        diff_ids = [str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or []]
        chains = layers.chain_ids(diff_ids)
        missing = [c for c in chains if c not in self.layers]
        if missing:
            raise ValueError(f"layers missing: {', '.join(missing)}")
        return ImageRecord(
            image_id=image_id,
            config=config,
            config_size=len(config_bytes),
            chain_ids=chains,
            parent=str(meta.get("parent") or ""),
            last_tag_time=str(meta.get("last_tag_time") or ""),
            size=sum(self.layers[c].size for c in chains),
        )

    # --- blobs ----------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / hex_of(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def new_blob_writer(self) -> BlobWriter:
        return BlobWriter(self.blobs_dir)

    def put_blob_blocking(self, data: bytes, expected: str | None = None) -> str:
        writer = self.new_blob_writer()
        writer.write(data)
        return writer.commit(expected)

    # --- layers ---------------------------------------------------------------------------------

    def layer_diff_dir(self, chain_id: str) -> Path:
        return self.layers_dir / hex_of(chain_id) / "diff"

    def layer_link(self, chain_id: str) -> Path:
        return self.links_dir / short_link_name(chain_id)

    def _ensure_link(self, chain_id: str) -> None:
        link = self.layer_link(chain_id)
        target = f"../layers/{hex_of(chain_id)}/diff"
        with contextlib.suppress(OSError):
            if os.readlink(link) == target:
                return
        tmp = self.links_dir / f"{store.TMP_PREFIX}{uuid.uuid4().hex[:12]}"
        tmp.symlink_to(target)
        os.replace(tmp, link)

    def create_layer_blocking(
        self,
        parent: str | None,
        opener: Callable[[], IO[bytes]],
        *,
        blob: tuple[str, str, int] | Callable[[], tuple[str, str, int]] | None,
        expected_diff_id: str | None = None,
        max_bytes: int = layers.DEFAULT_MAX_BYTES,
    ) -> LayerRecord:
        """Unpack a layer tar on top of `parent` (a chain ID) and land it by its chain ID.

        `blob` is (digest, media type, size) of the stored blob that `opener` reads; when None,
        the uncompressed stream is kept as a new blob (its digest is the diff ID). When it is a
        callable, `opener` reads a blob still being downloaded: the callable is called once the
        layer is unpacked and its diff ID checked, and before anything lands; it verifies and
        lands the blob (raising if its digest is wrong) and returns the triple. Raises
        InvalidLayer / DigestMismatch; nothing is left behind on failure.
        """
        tmp = self.layers_dir / f"{store.TMP_PREFIX}{uuid.uuid4().hex}"
        (tmp / "diff").mkdir(parents=True, mode=0o755)
        tee = None if blob is not None else self.new_blob_writer()
        try:
            with opener() as src:
                result = layers.unpack(
                    src,
                    tmp / "diff",
                    max_bytes=max_bytes,
                    tee=TeeBlobWriter(tee) if tee is not None else None,  # type: ignore[arg-type]
                )
            if expected_diff_id is not None and result.diff_id != expected_diff_id:
                raise layers.InvalidLayer(
                    f"layer diff ID mismatch: expected {expected_diff_id}, got {result.diff_id}"
                )
            if tee is not None:
                blob = (tee.commit(result.diff_id), MEDIA_TAR, tee.size)
                tee = None
            elif callable(blob):
                blob = blob()
            assert blob is not None
            chain_id = result.diff_id if parent is None else layers.chain_ids([parent, result.diff_id])[1]
            # chain_ids([p, d])[1] = sha256(p + " " + d): the chain of d on top of chain p.
            record = LayerRecord(
                chain_id=chain_id,
                diff_id=result.diff_id,
                parent=parent,
                size=result.size,
                blob=blob[0],
                blob_media_type=blob[1],
                blob_size=blob[2],
                tar_size=result.tar_bytes,
            )
            if blob[1] in (MEDIA_TAR_GZIP, MEDIA_OCI_GZIP):
                record.compressed[blob[0]] = blob[2]
            store.write_json(tmp / "meta.json", record.to_json())
            final = self.layers_dir / hex_of(chain_id)
            if final.exists():  # someone made it meanwhile (a concurrent load): keep theirs
                store.remove_tree(tmp)
                existing = self.layers.get(chain_id) or LayerRecord.from_json(
                    store.read_json(final / "meta.json")
                )
                return existing
            self._ensure_link(chain_id)
            os.rename(tmp, final)
            store.fsync_dir(self.layers_dir)
            record.fresh = True
            return record
        except BaseException:
            if tee is not None:
                tee.abort()
            store.remove_tree(tmp)
            raise

    def save_layer_meta_blocking(self, record: LayerRecord) -> None:
        store.write_json(self.layers_dir / hex_of(record.chain_id) / "meta.json", record.to_json())

    def register_layer(self, record: LayerRecord) -> None:
        self.layers[record.chain_id] = record

    def layer_refcount(self, chain_id: str) -> int:
        return sum(1 for img in self.images.values() if chain_id in img.chain_ids)

    @contextlib.contextmanager
    def pinned(self, chain_ids: Iterable[str]) -> Iterator[None]:
        """Keep these layers from being deleted while an operation that will use them runs."""
        pinned = list(chain_ids)
        self._pins.update(pinned)
        try:
            yield
        finally:
            self._pins.subtract(pinned)
            for c in pinned:
                if self._pins[c] <= 0:
                    del self._pins[c]

    def unused_layers(self, candidates: Iterable[str]) -> list[str]:
        """Which of `candidates` no image uses and no operation pins (deletable)."""
        used: set[str] = set()
        for img in self.images.values():
            used.update(img.chain_ids)
        return [c for c in candidates if c in self.layers and c not in used and self._pins[c] <= 0]

    def forget_layers(self, chain_ids: Iterable[str]) -> list[LayerRecord]:
        """Drop layers from the index (on the loop); delete them with `delete_layers_blocking`."""
        gone: list[LayerRecord] = []
        for c in chain_ids:
            record = self.layers.pop(c, None)
            if record is not None:
                gone.append(record)
        return gone

    def delete_layers_blocking(self, records: Iterable[LayerRecord], keep_blobs: set[str]) -> None:
        """Delete forgotten layers and their blobs, except `keep_blobs` (computed on the loop)."""
        for record in records:
            with contextlib.suppress(FileNotFoundError):
                self.layer_link(record.chain_id).unlink()
            store.remove_tree(self.layers_dir / hex_of(record.chain_id))
            for digest in {record.blob, *record.compressed}:
                if digest not in keep_blobs:
                    with contextlib.suppress(FileNotFoundError, InvalidParameter):
                        self.blob_path(digest).unlink()

    def blobs_in_use(self) -> set[str]:
        used = set(self.images)
        for layer in self.layers.values():
            used.add(layer.blob)
            used.update(layer.compressed)
        return used

    def list_blobs_blocking(self) -> list[str]:
        return [
            "sha256:" + entry.name
            for entry in os.scandir(self.blobs_dir)
            if not entry.name.startswith(".") and len(entry.name) == 64
        ]

    def delete_blobs_blocking(self, digests: Iterable[str]) -> None:
        for digest in digests:
            with contextlib.suppress(FileNotFoundError):
                self.blob_path(digest).unlink()

    def orphan_layers(self) -> list[str]:
        """Complete layers that no image uses (left by an interrupted pull or load)."""
        return self.unused_layers(list(self.layers))

    # --- images ---------------------------------------------------------------------------------

    def image_record_for(self, config_bytes: bytes, *, parent: str = "") -> ImageRecord:
        """Build the record of an image whose layers are all in the store (InvalidParameter else)."""
        try:
            config = json.loads(config_bytes)
        except ValueError as exc:
            raise InvalidParameter(f"invalid image config: {exc}") from exc
        if not isinstance(config, dict):
            raise InvalidParameter("invalid image config: not a JSON object")
        diff_ids = [str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or []]
        for d in diff_ids:
            hex_of(d)
        chains = layers.chain_ids(diff_ids)
        missing = [c for c in chains if c not in self.layers]
        if missing:
            raise SystemError_(f"image config references layers that are not in the store: {missing}")
        image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        existing = self.images.get(image_id)
        return ImageRecord(
            image_id=image_id,
            config=config,
            config_size=len(config_bytes),
            chain_ids=chains,
            parent=parent or (existing.parent if existing else ""),
            last_tag_time=existing.last_tag_time if existing else "",
            size=sum(self.layers[c].size for c in chains),
        )

    def save_image_blocking(self, record: ImageRecord, config_bytes: bytes) -> None:
        """Persist the config blob (if new) and the image metadata."""
        if not self.has_blob(record.image_id):
            self.put_blob_blocking(config_bytes, record.image_id)
        self.save_image_meta_blocking(record)

    def save_image_meta_blocking(self, record: ImageRecord) -> None:
        store.write_json(
            self.imagedb_dir / f"{hex_of(record.image_id)}.json",
            {"parent": record.parent, "last_tag_time": record.last_tag_time},
        )

    def delete_image_blocking(self, image_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.imagedb_dir / f"{hex_of(image_id)}.json").unlink()
        with contextlib.suppress(FileNotFoundError):
            self.blob_path(image_id).unlink()
        store.fsync_dir(self.imagedb_dir)

    def save_refs_blocking(self, refs: dict[str, str] | None = None) -> None:
        store.write_json(self.repositories_file, {"refs": dict(self.refs if refs is None else refs)})

    def config_bytes_blocking(self, image_id: str) -> bytes:
        return self.blob_path(image_id).read_bytes()

    # --- accounting -----------------------------------------------------------------------------

    def layers_size(self) -> int:
        return sum(layer.size for layer in self.layers.values())

    def blob_usage_blocking(self) -> int:
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.blobs_dir):
                with contextlib.suppress(OSError):
                    total += entry.stat(follow_symlinks=False).st_size
        return total
