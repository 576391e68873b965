"""Fixtures for integration tests: real pydockd daemons, the busybox image, the docker CLI.

Shared file: add fixtures at the end, keep each one self-contained.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.archives import ArchivePair
from tests.integration.daemon import Daemon, running_daemon
from tests.integration.registry import Registry, running_registry


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="integration tests need root"))


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox:latest built from Debian's busybox-static by pydock's own code."""
    from runtime.busybox_image import build_archive

    out = tmp_path_factory.mktemp("images") / "busybox.tar"
    build_archive(out)
    return out


@pytest.fixture(scope="session")
def daemon(busybox_tar: Path) -> Iterator[Daemon]:
    """One pydockd for the session, with busybox:latest loaded."""
    with running_daemon() as d:
        d.docker("load", "-q", "-i", str(busybox_tar))
        yield d


@pytest.fixture
def fresh_daemon() -> Iterator[Daemon]:
    """A pydockd of this test's own (for restarts, crashes, flags), without images."""
    with running_daemon() as d:
        yield d


@pytest.fixture
def tmp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pdt-", dir="/tmp"))
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# --- registries (images) ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def registry(built_archives: ArchivePair) -> Iterator[Registry]:
    """A real `docker-registry` on 127.0.0.1 (no auth), with busybox pushed by skopeo:
    `busybox:latest` (from the docker-save archive) and `oci/busybox:latest` (OCI manifest)."""
    with running_registry() as reg:
        reg.copy_archive(built_archives.docker_save.path, "busybox:latest")
        reg.copy_archive(built_archives.oci.path, "oci/busybox:latest", fmt="oci-archive")
        yield reg


@pytest.fixture(scope="session")
def auth_registry(built_archives: ArchivePair) -> Iterator[Registry]:
    """A real `docker-registry` with htpasswd basic auth (user `pydock`, password `s3cret`)."""
    with running_registry(auth=("pydock", "s3cret")) as reg:
        reg.copy_archive(built_archives.docker_save.path, "private/busybox:latest")
        yield reg


@pytest.fixture
def names(daemon: Daemon) -> Iterator[list[str]]:
    """Container names a test made on the session daemon; removed (force) at the end."""
    made: list[str] = []
    yield made
    if made:
        daemon.docker("rm", "-f", *made, check=False)
