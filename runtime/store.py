"""Durable files: atomic replace, crash-safe removal, startup sweep.

Every durable file under the data root is written through `write_atomic` (after a crash the old
or the new content exists, never a mix) and removed through `remove_tree` (renamed aside first,
so a half-deleted directory is never mistaken for a live one). These are blocking calls: async
callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"
REMOVING_SUFFIX = ".removing"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `path` with `data`; after a crash the old or the new file exists, never half.

    `durable=False` skips the fsyncs for files whose loss after a power cut is harmless
    (the rename still makes the replacement atomic against crashes of this process).
    """
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def write_json(path: Path, obj: Any, *, durable: bool = True) -> None:
    write_atomic(path, json.dumps(obj, separators=(",", ":")).encode(), durable=durable)


def read_json(path: Path) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


def set_aside(path: Path) -> Path | None:
    """First half of a crash-safe removal: rename to `.<name>.<rand>.removing` (swept at startup).

    Returns the new path, or None when there was nothing to remove.
    """
    if not path.exists() and not path.is_symlink():
        return None
    # Unique: an earlier removal of the same name may still be deleting in the background.
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{REMOVING_SUFFIX}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    return aside


def delete(path: Path) -> None:
    """Second half: delete what `set_aside` renamed (a file or a whole tree)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_tree(path: Path) -> None:
    """Remove a file or directory crash-safely: rename to `.<name>.removing`, then delete."""
    aside = set_aside(path)
    if aside is not None:
        delete(aside)


def sweep(directory: Path) -> list[Path]:
    """Delete leftovers of interrupted writes and removals directly inside `directory`."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        name = entry.name
        if name.startswith(TMP_PREFIX) or (name.startswith(".") and name.endswith(REMOVING_SUFFIX)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
    return removed
