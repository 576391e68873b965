"""The busybox image archives that tests load, save and push: built here, or the shared fixtures.

`built_pair(dir)` makes two with pydock's own builder (runtime/busybox_image.py, from Debian's
busybox-static), so the suite needs nothing beside the clone: a docker-save archive (as
`docker save` 25+ writes it: manifest.json and an OCI index) and an OCI archive written by
skopeo from a second image of another config (another ID, the same name). `fixture_pair()` gives
the real archives made by Docker and skopeo in `../shared/fixtures` (or `$PYDOCK_FIXTURES`) when
they are there: an extra compatibility check that the same tests run on.

What a test expects (IDs, diff IDs, history) is read from the archive itself, never hard-coded.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.busybox_image import build_archive

REPO = Path(__file__).resolve().parents[1]
DOCKER_SAVE_NAME = "busybox-docker-save.tar"
OCI_NAME = "busybox-oci.tar"
TAG = "busybox:latest"


def fixtures_dir() -> Path | None:
    """Where the shared fixtures are: `$PYDOCK_FIXTURES` when set (`PYDOCK_FIXTURES=none` runs the
    suite as on a machine without them), else `../shared/fixtures` or `/work/shared/fixtures`."""
    if "PYDOCK_FIXTURES" in os.environ:
        candidates = [Path(os.environ["PYDOCK_FIXTURES"])]
    else:
        candidates = [REPO.parent / "shared" / "fixtures", Path("/work/shared/fixtures")]
    for candidate in candidates:
        if (candidate / DOCKER_SAVE_NAME).is_file() and (candidate / OCI_NAME).is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Archive:
    path: Path
    image_id: str  # sha256 of the config
    diff_ids: tuple[str, ...]
    history: tuple[dict[str, Any], ...]

    def history_output(self) -> str:
        """What `docker history --no-trunc --format '{{.ID}} {{.Comment}}'` prints (stripped)."""
        lines = [
            f"{self.image_id if i == 0 else '<missing>'} {entry.get('comment', '')}"
            for i, entry in enumerate(reversed(self.history))
        ]
        return "\n".join(lines).strip()


@dataclass(frozen=True)
class ArchivePair:
    source: str  # "built" or "fixtures"
    docker_save: Archive
    oci: Archive  # another image, also named busybox:latest


def describe(path: Path) -> Archive:
    """The image in a single-image archive: from manifest.json (docker-save) or index.json (OCI)."""
    with tarfile.open(path) as tf:

        def read(name: str) -> bytes:
            member = tf.extractfile(name.removeprefix("./"))
            assert member is not None, name
            return member.read()

        names = set(tf.getnames())
        if "manifest.json" in names:
            config_name = json.loads(read("manifest.json"))[0]["Config"]
        else:
            index = json.loads(read("index.json"))
            digest = index["manifests"][0]["digest"]
            manifest = json.loads(read(f"blobs/sha256/{digest[7:]}"))
            config_name = f"blobs/sha256/{manifest['config']['digest'][7:]}"
        raw = read(config_name)
    config = json.loads(raw)
    return Archive(
        path=path,
        image_id="sha256:" + hashlib.sha256(raw).hexdigest(),
        diff_ids=tuple(config["rootfs"]["diff_ids"]),
        history=tuple(config.get("history") or ()),
    )


def built_pair(directory: Path) -> ArchivePair:
    directory.mkdir(parents=True, exist_ok=True)
    docker_save = directory / DOCKER_SAVE_NAME
    build_archive(docker_save, tag=TAG)
    variant = directory / "busybox-variant.tar"
    build_archive(variant, tag=TAG, config_extra={"Labels": {"org.pydock.test.variant": "oci"}})
    oci = directory / OCI_NAME
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"docker-archive:{variant}", f"oci-archive:{oci}:{TAG}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    variant.unlink()
    return ArchivePair("built", describe(docker_save), describe(oci))


def fixture_pair() -> ArchivePair | None:
    directory = fixtures_dir()
    if directory is None:
        return None
    return ArchivePair("fixtures", describe(directory / DOCKER_SAVE_NAME), describe(directory / OCI_NAME))
