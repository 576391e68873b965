"""Dockerd's copy-up: a new, empty volume receives the image's content at the path it is mounted on.

`image_view` mounts the image's layers read-only (an overlay needs two lower dirs at least, so an
empty one joins them); `populate_volume` copies the directory found there, resolved inside the
image (`inroot`), into the volume through a generated tar and the hardened unpacker of
`layers.py`, then gives the volume's root the directory's owner and mode, as dockerd does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, cast

from runtime import inroot, layers
from runtime import rootfs as mounting
from runtime.chunks import ChunkReader
from runtime.volumedriver import MS_RDONLY


@contextlib.asynccontextmanager
async def image_view(lowers: list[Path], fs_dir: Path) -> AsyncIterator[Path]:
    """The image's files, read-only: an overlay of its layers (plus an empty one) at a temp dir."""
    target = fs_dir / f"img-{secrets.token_hex(6)}"
    empty = fs_dir / "empty"

    def mount() -> None:
        target.mkdir(parents=True, exist_ok=True)
        empty.mkdir(exist_ok=True)
        data = "lowerdir=" + ":".join([*(str(p) for p in lowers), str(empty)])
        mounting.mount("overlay", target, "overlay", MS_RDONLY, data)

    def unmount() -> None:
        with contextlib.suppress(OSError):
            mounting.unmount(target)
        with contextlib.suppress(OSError):
            target.rmdir()

    try:
        await asyncio.to_thread(mount)
    except OSError:
        await asyncio.to_thread(unmount)
        raise
    try:
        yield target
    finally:
        await asyncio.shield(asyncio.to_thread(unmount))


def populate_volume(view: Path, destination: str, volume_dir: Path) -> None:
    """dockerd's copy-up: the image's directory at `destination` into an empty volume, with
    the directory's owner and mode. Nothing happens when the volume has content or the image
    has no directory there. Blocking."""
    try:
        fd = inroot.open_in_root(view, destination, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with os.scandir(volume_dir) as it:
            if any(True for _ in it):
                return
        src = Path(f"/proc/self/fd/{fd}")
        chunks = layers.tar_directory_diff(src, overlay_whiteouts=False)
        layers.unpack(cast(IO[bytes], ChunkReader(chunks)), volume_dir, whiteouts="apply")
        st = os.fstat(fd)
        os.chown(volume_dir, st.st_uid, st.st_gid)
        os.chmod(volume_dir, stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)
