"""`closing(it)`: iterate an async generator and close it however the iteration ends.

An `async for` that is left early (an exception, a cancellation, a client gone) leaves the
generator suspended at its `yield`, and its `finally` (a container's files held, an event
subscription, an open log file) waits for the garbage collector. Nested generators need this at
every level. A leaf module: anything may import it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


@contextlib.asynccontextmanager
async def closing(it: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    try:
        yield it
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
