"""A client that goes away mid-stream: the body generator's cleanup runs at once, not at GC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from app.streams import ClosingStreamingResponse
from runtime.aiters import closing


async def test_abandoned_stream_closes_nested_generators() -> None:
    cleaned: list[str] = []
    sent = asyncio.Event()

    async def inner() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"x" * 1024
        finally:
            cleaned.append("inner")

    async def outer() -> AsyncIterator[bytes]:
        try:
            async with closing(inner()) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            cleaned.append("outer")

    async def send(message: object) -> None:
        if isinstance(message, dict) and message.get("type") == "http.response.body":
            sent.set()
            await asyncio.Event().wait()  # a stalled client: the body is never taken

    async def receive() -> dict[str, object]:
        await sent.wait()
        return {"type": "http.disconnect"}

    scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "GET"}
    await asyncio.wait_for(ClosingStreamingResponse(outer())(scope, receive, send), 5)
    assert cleaned == ["inner", "outer"]
