"""Image archives: reading `docker save` / OCI layout tars (`docker load`), writing them
(`docker save`), and the config of `docker import` (its `--change` instructions).

Reading is random-access over a spooled tar file; writing streams a tar in which every blob has
its size known up front. The layout written is Docker 25's: an OCI image layout
(`oci-layout`, `index.json`, `blobs/sha256/...`) plus the `manifest.json` and `repositories`
that older dockerd, `docker load` and `skopeo ... docker-archive:` read.

Blocking functions (run them in threads); the store is read, never changed here.
"""

from __future__ import annotations

import json
import shlex
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from runtime import layers, reference
from runtime.errors import InvalidParameter
from runtime.imagestore import ImageRecord, ImageStore, hex_of
from runtime.registry import (
    INDEX_TYPES,
    MT_OCI_CONFIG,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    RegistryError,
    select_platform,
)

MAX_JSON_BYTES = 8 << 20
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


class InvalidArchive(InvalidParameter):
    pass


@dataclass(slots=True)
class ArchiveImage:
    """One image found in an archive: its config, layer members (bottom first), names."""

    config_bytes: bytes
    layer_members: list[str]
    tags: list[reference.Reference] = field(default_factory=list)


class Archive:
    """A spooled image archive, opened for random access."""

    def __init__(self, path: Path) -> None:
        try:
            self._tf = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close()
        except tarfile.TarError as exc:
            raise InvalidArchive(f"invalid archive: {exc}") from exc
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            for m in self._tf.getmembers():
                self._members[_norm(m.name)] = m
        except tarfile.TarError as exc:
            self._tf.close()
            raise InvalidArchive(f"invalid archive: {exc}") from exc

    def close(self) -> None:
        self._tf.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has(self, name: str) -> bool:
        return _norm(name) in self._members

    def open_member(self, name: str) -> IO[bytes]:
        member = self._members.get(_norm(name))
        if member is None:
            raise InvalidArchive(f"invalid archive: {name} is missing")
        try:
            f = self._tf.extractfile(member)
        except (tarfile.TarError, KeyError) as exc:
            raise InvalidArchive(f"invalid archive: cannot read {name}: {exc}") from exc
        if f is None:
            raise InvalidArchive(f"invalid archive: {name} is not a file")
        return f

    def read_small(self, name: str) -> bytes:
        member = self._members.get(_norm(name))
        if member is not None and member.size > MAX_JSON_BYTES:
            raise InvalidArchive(f"invalid archive: {name} is too large")
        with self.open_member(name) as f:
            return f.read(MAX_JSON_BYTES + 1)

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.read_small(name))
        except ValueError as exc:
            raise InvalidArchive(f"invalid archive: {name} is not valid JSON: {exc}") from exc

    def images(self) -> list[ArchiveImage]:
        """The images it holds: from `manifest.json` (Docker) or `index.json` (OCI layout)."""
        if self.has("manifest.json"):
            return self._docker_images()
        if self.has("index.json"):
            return self._oci_images()
        raise InvalidArchive(
            "invalid archive: neither manifest.json nor index.json found "
            "(not a docker save or OCI layout tar)"
        )

    def _docker_images(self) -> list[ArchiveImage]:
        manifest = self.read_json("manifest.json")
        if not isinstance(manifest, list):
            raise InvalidArchive("invalid archive: manifest.json is not a list")
        out: list[ArchiveImage] = []
        for entry in manifest:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                raise InvalidArchive("invalid archive: bad manifest.json entry")
            layer_paths = entry.get("Layers") or []
            if not isinstance(layer_paths, list) or not all(isinstance(p, str) for p in layer_paths):
                raise InvalidArchive("invalid archive: bad Layers in manifest.json")
            repo_tags = entry.get("RepoTags") or []
            if not isinstance(repo_tags, list):
                raise InvalidArchive("invalid archive: bad RepoTags in manifest.json")
            tags = [reference.parse(t) for t in repo_tags if isinstance(t, str)]
            out.append(ArchiveImage(self.read_small(entry["Config"]), list(layer_paths), tags))
        return out

    def _blob(self, digest: str, max_bytes: int = MAX_JSON_BYTES) -> bytes:
        data = self.read_small(f"blobs/sha256/{hex_of(digest)}")
        if layers.sha256_digest(data) != digest:
            raise InvalidArchive(f"invalid archive: blob {digest} does not match its digest")
        return data

    def _oci_images(self) -> list[ArchiveImage]:
        index = self.read_json("index.json")
        if not isinstance(index, dict):
            raise InvalidArchive("invalid archive: index.json is not an object")
        out: list[ArchiveImage] = []
        descriptors = index.get("manifests") or []
        if not isinstance(descriptors, list) or not all(isinstance(d, dict) for d in descriptors):
            raise InvalidArchive("invalid archive: bad manifests in index.json")
        for desc in descriptors:
            annotations = desc.get("annotations") or {}
            names = _oci_names(annotations if isinstance(annotations, dict) else {})
            manifest = self._resolve_manifest(desc)
            config_desc = manifest.get("config") or {}
            layer_descs = manifest.get("layers") or []
            if not isinstance(config_desc, dict):
                raise InvalidArchive("invalid archive: bad config in manifest")
            if not isinstance(layer_descs, list) or not all(isinstance(d, dict) for d in layer_descs):
                raise InvalidArchive("invalid archive: bad layers in manifest")
            config = self._blob(str(config_desc.get("digest", "")))
            members = [f"blobs/sha256/{hex_of(str(layer.get('digest', '')))}" for layer in layer_descs]
            out.append(ArchiveImage(config, members, names))
        if not out:
            raise InvalidArchive("invalid archive: index.json lists no images")
        return out

    def _resolve_manifest(self, desc: dict[str, Any]) -> dict[str, Any]:
        for _ in range(4):  # nested indexes, a few levels at most
            try:
                obj = json.loads(self._blob(str(desc.get("digest", ""))))
            except ValueError as exc:
                raise InvalidArchive(f"invalid archive: manifest is not valid JSON: {exc}") from exc
            if not isinstance(obj, dict):
                raise InvalidArchive("invalid archive: manifest is not an object")
            media = desc.get("mediaType") or obj.get("mediaType") or ""
            if (isinstance(media, str) and media in INDEX_TYPES) or "manifests" in obj:
                try:
                    desc = select_platform(obj)
                except RegistryError as exc:
                    raise InvalidArchive(f"invalid archive: {exc}") from exc
                continue
            return obj
        raise InvalidArchive("invalid archive: indexes nested too deep")


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _oci_names(annotations: dict[str, Any]) -> list[reference.Reference]:
    """Names of an OCI index entry: containerd's full name, else a ref.name that is a reference."""
    for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
        value = annotations.get(key)
        if not isinstance(value, str) or not value:
            continue
        if key.endswith("ref.name") and ":" not in value and "/" not in value:
            continue  # a bare tag (skopeo's default) names no repository
        try:
            ref = reference.parse(value)
        except InvalidParameter:
            continue
        if ref.digest is None:
            return [ref.tagged_or_latest()]
    return []


# --- save ---------------------------------------------------------------------------------------


def _tar_entry(name: str, size: int, *, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size = 0 if directory else size
    info.mtime = 0
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _file(name: str, data: bytes) -> Iterator[bytes]:
    yield _tar_entry(name, len(data))
    yield data
    yield b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def save_stream_blocking(
    image_store: ImageStore, images: list[tuple[ImageRecord, list[reference.Reference]]]
) -> Iterator[bytes]:
    """Stream a docker-save archive of these images (with the names to record for each)."""
    yield _tar_entry("blobs", 0, directory=True)
    yield _tar_entry("blobs/sha256", 0, directory=True)
    written: set[str] = set()
    manifest_json: list[dict[str, Any]] = []
    index_manifests: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for record, names in images:
        config_bytes = image_store.config_bytes_blocking(record.image_id)
        if record.image_id not in written:
            written.add(record.image_id)
            yield from _file(f"blobs/sha256/{hex_of(record.image_id)}", config_bytes)
        layer_descs = []
        for chain in record.chain_ids:
            layer = image_store.layers[chain]
            layer_descs.append(
                {"mediaType": MEDIA_OCI_LAYER, "digest": layer.diff_id, "size": layer.tar_size}
            )
            if layer.diff_id in written:
                continue
            written.add(layer.diff_id)
            yield _tar_entry(f"blobs/sha256/{hex_of(layer.diff_id)}", layer.tar_size)
            sent = 0
            compressed = layer.blob != layer.diff_id
            for chunk in layers.read_file_chunks(image_store.blob_path(layer.blob), decompress=compressed):
                sent += len(chunk)
                if sent > layer.tar_size:
                    raise InvalidArchive(f"layer {layer.diff_id} is larger than recorded")
                yield chunk
            if sent != layer.tar_size:
                raise InvalidArchive(f"layer {layer.diff_id} is shorter than recorded")
            yield b"\0" * (-sent % tarfile.BLOCKSIZE)
        oci_manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG, "digest": record.image_id, "size": record.config_size},
                "layers": layer_descs,
            },
            separators=(",", ":"),
        ).encode()
        manifest_digest = layers.sha256_digest(oci_manifest)
        if manifest_digest not in written:
            written.add(manifest_digest)
            yield from _file(f"blobs/sha256/{hex_of(manifest_digest)}", oci_manifest)
        desc_base = {"mediaType": MT_OCI_MANIFEST, "digest": manifest_digest, "size": len(oci_manifest)}
        if not names:
            index_manifests.append(dict(desc_base))
        for name in names:
            index_manifests.append(
                {
                    **desc_base,
                    "annotations": {
                        "io.containerd.image.name": str(name),
                        "org.opencontainers.image.ref.name": name.tag or "",
                    },
                }
            )
            top = hex_of(image_store.layers[record.chain_ids[-1]].diff_id) if record.chain_ids else ""
            repositories.setdefault(name.familiar_name, {})[name.tag or "latest"] = top
        manifest_json.append(
            {
                "Config": f"blobs/sha256/{hex_of(record.image_id)}",
                "RepoTags": [n.familiar() for n in names] or None,
                "Layers": [f"blobs/sha256/{hex_of(image_store.layers[c].diff_id)}" for c in record.chain_ids],
            }
        )
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": index_manifests}
    yield from _file("index.json", json.dumps(index, separators=(",", ":")).encode())
    yield from _file("manifest.json", json.dumps(manifest_json, separators=(",", ":")).encode())
    yield from _file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    if repositories:
        yield from _file("repositories", json.dumps(repositories, separators=(",", ":")).encode())
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


# --- import: Dockerfile-style changes ----------------------------------------------------------

ALLOWED_CHANGES = frozenset(
    {
        "CMD",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "HEALTHCHECK",
        "LABEL",
        "ONBUILD",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)


def _json_or_shell(value: str) -> list[str]:
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return parsed
    return ["/bin/sh", "-c", value]


def _pairs(value: str, instruction: str) -> list[tuple[str, str]]:
    """`k=v k2="v 2"` pairs, or the legacy `key value with spaces` form."""
    try:
        words = shlex.split(value, posix=True)
    except ValueError as exc:
        raise InvalidParameter(f"{instruction} {value}: {exc}") from exc
    if not words:
        raise InvalidParameter(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        key, _, rest = value.strip().partition(" ")
        if not rest.strip():
            raise InvalidParameter(
                f"{instruction} names can not be blank"
                if not key
                else f"{instruction} {key} requires a value"
            )
        return [(key, rest.strip())]
    out = []
    for word in words:
        key, sep, val = word.partition("=")
        if not sep or not key:
            raise InvalidParameter(
                f"{instruction} names can not be blank"
                if not key
                else f"Syntax error - can't find = in {word!r}. Must be of the form: name=value"
            )
        out.append((key, val))
    return out


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply `docker import -c` / `docker commit -c` instructions to a container Config."""
    cfg = dict(config)
    for change in changes:
        change = change.strip()
        if not change:
            continue
        instruction, _, value = change.partition(" ")
        instruction = instruction.upper()
        value = value.strip()
        if instruction not in ALLOWED_CHANGES:
            raise InvalidParameter(f"{instruction} is not a valid change command")
        if instruction == "CMD":
            cfg["Cmd"] = _json_or_shell(value)
        elif instruction == "ENTRYPOINT":
            cfg["Entrypoint"] = _json_or_shell(value)
            cfg.setdefault("Cmd", None)
        elif instruction == "ENV":
            env = [e for e in cfg.get("Env") or []]
            for key, val in _pairs(value, "ENV"):
                env = [e for e in env if e.split("=", 1)[0] != key]
                env.append(f"{key}={val}")
            cfg["Env"] = env
        elif instruction == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(_pairs(value, "LABEL"))
            cfg["Labels"] = labels
        elif instruction == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for port in value.split():
                number, _, proto = port.partition("/")
                if not number.replace("-", "").isdigit():
                    raise InvalidParameter(f"invalid containerPort: {number}")
                ports[f"{number}/{proto or 'tcp'}"] = {}
            cfg["ExposedPorts"] = ports
        elif instruction == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            paths = _json_or_shell(value) if value.startswith("[") and value.endswith("]") else value.split()
            if paths[:2] == ["/bin/sh", "-c"]:
                paths = value.split()
            for p in paths:
                if not p:
                    raise InvalidParameter("VOLUME specified can not be an empty string")
                vols[p] = {}
            cfg["Volumes"] = vols
        elif instruction == "USER":
            cfg["User"] = value
        elif instruction == "WORKDIR":
            cfg["WorkingDir"] = value
        elif instruction == "STOPSIGNAL":
            cfg["StopSignal"] = value
        elif instruction == "ONBUILD":
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), value]
        elif instruction == "HEALTHCHECK":
            if value.upper() == "NONE":
                cfg["Healthcheck"] = {"Test": ["NONE"]}
            else:
                _, _, cmd = value.partition("CMD")
                cfg["Healthcheck"] = {
                    "Test": ["CMD-SHELL", cmd.strip()]
                    if not cmd.strip().startswith("[")
                    else ["CMD", *_json_or_shell(cmd.strip())]
                }
    return cfg


def image_config(
    *,
    diff_ids: list[str],
    created: str,
    config: dict[str, Any],
    history: list[dict[str, Any]],
    architecture: str,
    comment: str = "",
    author: str = "",
    container: str = "",
    container_config: dict[str, Any] | None = None,
) -> bytes:
    """Serialise an image config (Docker's field order; the bytes are the image ID's preimage)."""
    obj: dict[str, Any] = {"architecture": architecture}
    if author:
        obj["author"] = author
    if comment:
        obj["comment"] = comment
    obj["config"] = config
    if container:
        obj["container"] = container
    if container_config is not None:
        obj["container_config"] = container_config
    obj["created"] = created
    obj["history"] = history
    obj["os"] = "linux"
    obj["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    return json.dumps(obj, separators=(",", ":")).encode()
