"""`ContainerFs`: a container's files from the outside: `docker cp` both ways, `export`, `diff`,
`commit`.

Paths are resolved inside the container (`ctrpath.py`), with its volumes and bind mounts where
the container sees them, for running and stopped containers alike (`ContainerMounts.hold`
gives the live rootfs or a private mount of a stopped one). Tar streams are produced and
consumed in threads; the HTTP layer only moves bytes.

Errors as dockerd words them: `Could not find the file P in container X` (404),
`extraction point is not a directory` (400), `mounted volume is marked read-only` (400),
`container rootfs is marked read-only`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import IO, Any, cast

from app.models.containers import ContainerConfig
from runtime import cparchive, cpextract, layers
from runtime.aiters import closing
from runtime.archive import apply_changes
from runtime.changes import container_changes
from runtime.containers import ContainerService
from runtime.errors import FileNotFoundInContainer, PydockError, SystemError_
from runtime.images import ImageService
from runtime.records import Container, Status
from runtime.spec import merge_image_config
from runtime.userdb import resolve_user

_END = object()


async def iterate_in_thread(gen: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """Drive a blocking generator from threads, one chunk at a time. However the iteration ends
    (done, closed, cancelled), the generator is closed once no thread is inside it any more."""
    pending: asyncio.Future[object] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(asyncio.to_thread(next, gen, _END))
            chunk = await asyncio.shield(pending)
            pending = None
            if chunk is _END:
                return
            assert isinstance(chunk, bytes)
            yield chunk
    finally:
        await asyncio.shield(_close_after(pending, gen))


async def _close_after(pending: asyncio.Future[object] | None, gen: Generator[bytes, None, None]) -> None:
    if pending is not None:
        with contextlib.suppress(BaseException):
            await pending
    await asyncio.to_thread(gen.close)


async def _finish_thread(work: asyncio.Future[None], on_cancel: Callable[[], None]) -> None:
    """Await work running in a thread; if we are cancelled, tell it and still wait for it to end
    (the caller then releases what the thread is using)."""
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        on_cancel()
        with contextlib.suppress(BaseException):
            await work
        raise


class _BodyReader:
    """A blocking `read()` over an async body, for the extraction thread (it waits on the loop)."""

    def __init__(self, body: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._body = body
        self._loop = loop
        self._buf = b""
        self._done = False
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    async def _next(self) -> bytes | None:
        try:
            return await anext(self._body)
        except StopAsyncIteration:
            return None

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            if self.aborted:
                raise OSError(errno.ECONNRESET, "the client went away")
            chunk = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
            if chunk is None:
                self._done = True
            else:
                self._buf += chunk
        if n < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data


def _not_found(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError | NotADirectoryError) or exc.errno in (
        errno.ENOENT,
        errno.ENOTDIR,
    )


class ContainerFs:
    def __init__(self, containers: ContainerService, images: ImageService) -> None:
        self.containers = containers
        self.images = images
        self.mounts = containers.mounts

    # --- cp -------------------------------------------------------------------------------------

    async def stat(self, ref: str, path: str) -> dict[str, Any]:
        sup = self.containers.get(ref)
        async with self.mounts.hold(sup.container) as tree:
            try:
                return await asyncio.to_thread(cparchive.stat_resource, tree, path)
            except OSError as exc:
                if _not_found(exc):
                    raise FileNotFoundInContainer(path, ref) from exc
                raise SystemError_(f"stat {path}: {exc.strerror or exc}") from exc

    async def archive(self, ref: str, path: str) -> tuple[dict[str, Any], AsyncIterator[bytes]]:
        """The stat of `path` and its tar stream. The stream holds the container's files only
        while it runs (a stream that is never started holds nothing)."""
        sup = self.containers.get(ref)
        body = await self.stat(ref, path)

        async def stream() -> AsyncIterator[bytes]:
            async with self.mounts.hold(sup.container) as tree:
                try:
                    _body, gen = await asyncio.to_thread(cparchive.archive_resource, tree, path)
                except OSError:
                    return  # gone since the stat: an empty body, the 200 is already out
                chunks = iterate_in_thread(gen)
                async with closing(chunks):
                    async for chunk in chunks:
                        yield chunk

        sup.event("archive-path")
        return body, stream()

    async def extract(
        self,
        ref: str,
        path: str,
        body: AsyncIterator[bytes],
        *,
        no_overwrite_dir_non_dir: bool,
        copy_uid_gid: bool,
    ) -> None:
        sup = self.containers.get(ref)
        container = sup.container
        async with self.mounts.hold(container) as tree:
            owner = None
            if copy_uid_gid and container.config.User:
                user = await asyncio.to_thread(resolve_user, tree.root, container.config.User)
                owner = (user.uid, user.gid)
            reader = _BodyReader(body, asyncio.get_running_loop())
            work = asyncio.ensure_future(
                asyncio.to_thread(
                    cpextract.extract,
                    tree,
                    path,
                    _as_io(reader),
                    no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
                    owner=owner,
                )
            )
            try:
                await _finish_thread(work, reader.abort)
            except OSError as exc:
                if _not_found(exc) and exc.filename == path:
                    raise FileNotFoundInContainer(path, ref) from exc
                raise SystemError_(f"extracting into {path}: {exc.strerror or exc}") from exc
        sup.event("extract-to-dir")

    # --- export / diff / commit ---------------------------------------------------------------------

    async def export(self, ref: str) -> AsyncIterator[bytes]:
        """The rootfs as a tar stream (raises NoSuchContainer before any byte is sent)."""
        sup = self.containers.get(ref)

        async def stream() -> AsyncIterator[bytes]:
            async with self.mounts.hold(sup.container) as tree:
                chunks = iterate_in_thread(cparchive.export_rootfs(tree))
                async with closing(chunks):
                    async for chunk in chunks:
                        yield chunk

        sup.event("export")
        return stream()

    async def changes(self, ref: str) -> list[dict[str, Any]]:
        container = self.containers.get(ref).container
        rootfs = self.containers.launcher.rootfs(container)
        lowers = self.containers.launcher.lower_dirs(container)
        return await asyncio.to_thread(container_changes, rootfs.upper, lowers)

    async def commit(
        self,
        ref: str,
        *,
        repo: str | None,
        tag: str | None,
        comment: str,
        author: str,
        pause: bool,
        changes: list[str],
        config: dict[str, Any] | None,
    ) -> str:
        """`docker commit`: the container's upper dir as a new layer on its image. Returns the ID."""
        sup = self.containers.get(ref)
        container = sup.container
        paused_here = False
        if pause and container.state.status == Status.RUNNING:
            await self.containers.pause(container.cid)
            paused_here = True
        try:
            image_id = await self._commit(container, repo, tag, comment, author, changes, config)
        finally:
            if paused_here:
                with contextlib.suppress(PydockError):
                    await self.containers.unpause(container.cid)
        attrs = {"comment": comment, "imageID": image_id}
        if repo:
            attrs["imageRef"] = f"{repo}:{tag or 'latest'}"
        sup.event("commit", **attrs)
        return image_id

    async def _commit(
        self,
        container: Container,
        repo: str | None,
        tag: str | None,
        comment: str,
        author: str,
        changes: list[str],
        config: dict[str, Any] | None,
    ) -> str:
        upper = self.containers.launcher.rootfs(container).upper
        own = container.config.wire()
        # dockerd (daemon/commit.go): the given config (else the container's), the changes on
        # it, then the container's config fills what is still unset (`merge`).
        changed = apply_changes(dict(config) if config else dict(own), changes)
        merged = merge_image_config(ContainerConfig.model_validate(changed), own).wire()

        def layer_tar() -> Iterator[bytes]:
            if upper.is_dir():
                return layers.tar_directory_diff(upper)
            return iter([b"\0" * 1024])

        return await self.images.commit(
            parent=container.image_id,
            layer_tar=layer_tar,
            config=merged,
            changes=[],
            comment=comment,
            author=author,
            repo=repo,
            tag=tag,
            container_id=container.cid,
            container_config=own,
        )


def _as_io(reader: _BodyReader) -> IO[bytes]:
    return cast(IO[bytes], reader)
