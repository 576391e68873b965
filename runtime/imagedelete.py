"""Removing images with Docker's rules: `docker rmi` (untag vs delete, the 409 conflicts) and
`docker image prune`, plus the garbage left by interrupted pulls (orphan layers, stray blobs).

The rules follow moby's image_delete.go: a name is untagged first; the image goes when its last
reference goes; running containers are a hard conflict, stopped ones and other names a soft one
(`-f` overrides). Functions of the `ImageService` (they hold its metadata lock), not a service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from runtime import reference
from runtime.errors import Conflict, InvalidParameter, PydockError
from runtime.ids import short_id
from runtime.imagestore import labels_match, unix_time

if TYPE_CHECKING:
    from runtime.images import ImageService

log = logging.getLogger("pydock.images")


async def remove(
    svc: ImageService, ref: str, *, force: bool = False, noprune: bool = False
) -> list[dict[str, str]]:
    """`docker rmi`: untag, or delete when the last reference goes (Docker's 409 rules)."""
    image = svc.resolve(ref)
    image_id = image.image_id
    records: list[dict[str, str]] = []
    async with svc.meta_lock:
        refs = svc.refs_of(image_id)
        by_id = ref.startswith("sha256:") or (
            image_id[7:].startswith(ref) and not _is_named(svc, ref, image_id)
        )
        if not by_id:
            using = svc.containers_using(image_id)
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
            svc.store.refs.pop(str(parsed), None)
            records.append({"Untagged": parsed.familiar()})
            svc.events.publish("image", "untag", image_id, {"name": image_id})
            remaining = svc.refs_of(image_id)
            if parsed.digest is None and not any(
                r.digest is None and r.name == parsed.name for r in remaining
            ):
                for r in remaining:
                    if r.digest is not None and r.name == parsed.name:
                        svc.store.refs.pop(str(r), None)
                        records.append({"Untagged": r.familiar()})
                remaining = svc.refs_of(image_id)
            if remaining:
                await asyncio.to_thread(svc.store.save_refs_blocking, dict(svc.store.refs))
                return records
        elif _is_single_reference(refs):
            _check_conflict(svc, image_id, hard_only=force, check_refs=False)
            for r in refs:
                svc.store.refs.pop(str(r), None)
                records.append({"Untagged": r.familiar()})
                svc.events.publish("image", "untag", image_id, {"name": image_id})
        await _delete_helper(svc, image_id, records, force=force, prune=not noprune, quiet=False)
        await asyncio.to_thread(svc.store.save_refs_blocking, dict(svc.store.refs))
    return records


def _is_named(svc: ImageService, ref: str, image_id: str) -> bool:
    try:
        parsed = reference.parse(ref)
    except InvalidParameter:
        return False
    return svc.store.refs.get(str(parsed.tagged_or_latest())) == image_id


def _check_conflict(
    svc: ImageService, image_id: str, *, hard_only: bool, check_refs: bool = True
) -> str | None:
    """Raise Docker's conflict for deleting this image; hard ones can't be forced."""
    sid = short_id(image_id)
    if svc.children(image_id):
        raise Conflict(
            f"conflict: unable to delete {sid} (cannot be forced) - image has dependent child images"
        )
    using = svc.containers_using(image_id)
    running = [c for c, is_running in using if is_running]
    if running:
        raise Conflict(
            f"conflict: unable to delete {sid} (cannot be forced) - "
            f"image is being used by running container "
            f"{short_id(running[0])}"
        )
    if hard_only:
        return None
    if check_refs and svc.refs_of(image_id):
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
    svc: ImageService,
    image_id: str,
    records: list[dict[str, str]],
    *,
    force: bool,
    prune: bool,
    quiet: bool,
    check_refs: bool = True,
) -> None:
    image = svc.store.images.get(image_id)
    if image is None:
        return
    try:
        _check_conflict(svc, image_id, hard_only=force, check_refs=check_refs)
    except Conflict:
        if quiet:
            return
        raise
    for r in svc.refs_of(image_id):
        svc.store.refs.pop(str(r), None)
        records.append({"Untagged": r.familiar()})
    del svc.store.images[image_id]
    await asyncio.to_thread(svc.store.delete_image_blocking, image_id)
    svc.events.publish("image", "delete", image_id, {"name": image_id})
    records.append({"Deleted": image_id})
    victims = svc.store.unused_layers(reversed(image.chain_ids))
    gone = svc.store.forget_layers(victims)
    await asyncio.to_thread(svc.store.delete_layers_blocking, gone, _blobs_to_keep(svc))
    records.extend({"Deleted": layer.chain_id} for layer in gone)
    if prune and image.parent and not svc.refs_of(image.parent):
        await _delete_helper(svc, image.parent, records, force=False, prune=True, quiet=True)


async def prune(svc: ImageService, filters: dict[str, list[str]]) -> dict[str, Any]:
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
    before = svc.store.layers_size()
    deleted: list[dict[str, str]] = []
    async with svc.meta_lock:
        for image in sorted(svc.store.images.values(), key=lambda i: i.created, reverse=True):
            if image.image_id not in svc.store.images:
                continue
            if dangling_only and svc.refs_of(image.image_id):
                continue
            if svc.containers_using(image.image_id) or svc.children(image.image_id):
                continue
            labels = (image.config.get("config") or {}).get("Labels") or {}
            if not labels_match(filters.get("label", []), labels):
                continue
            if filters.get("label!") and labels_match(filters["label!"], labels, any_=True):
                continue
            if until is not None and unix_time(image.created) >= until:
                continue
            try:
                await _delete_helper(
                    svc, image.image_id, deleted, force=False, prune=True, quiet=True, check_refs=False
                )
            except PydockError as exc:
                log.info("prune skipped %s: %s", image.image_id, exc)
        orphans = svc.store.forget_layers(svc.store.orphan_layers())
        await asyncio.to_thread(svc.store.delete_layers_blocking, orphans, _blobs_to_keep(svc))
        await _delete_stray_blobs(
            svc,
        )
        await asyncio.to_thread(svc.store.save_refs_blocking, dict(svc.store.refs))
    return {"ImagesDeleted": deleted or None, "SpaceReclaimed": max(0, before - svc.store.layers_size())}


def _blobs_to_keep(svc: ImageService) -> set[str]:
    return svc.store.blobs_in_use() | {d for d, n in svc.active_blobs.items() if n > 0}


async def _delete_stray_blobs(svc: ImageService) -> None:
    """Blobs no layer or image uses (a pull killed between download and unpack).

    Only while nothing is making layers: a blob being made is in use by no record yet. The
    directory is listed first, so blobs that land later are never candidates.
    """
    listed = await asyncio.to_thread(svc.store.list_blobs_blocking)
    if svc.creating or svc.layer_jobs:
        return
    keep = _blobs_to_keep(svc)
    stray = [d for d in listed if d not in keep]
    if stray:
        await asyncio.to_thread(svc.store.delete_blobs_blocking, stray)


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
