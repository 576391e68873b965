"""The daemon's event bus: what `GET /events` streams.

Services publish lifecycle events (container create/start/die/..., image pull/tag/delete/...,
network and volume events); subscribers get every later event through an unbounded-by-count but
bounded-by-time ring of past events plus a live queue. Publishing never blocks and never awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

# Docker keeps the last 256 events for `--since`; we keep a few more.
HISTORY = 1024
SUBSCRIBER_QUEUE = 4096


@dataclass(slots=True, frozen=True)
class Event:
    type: str  # container | image | network | volume | daemon
    action: str  # create, start, die, pull, tag, ...
    actor_id: str
    attributes: dict[str, str]
    time_ns: int
    scope: str = "local"

    def to_wire(self) -> dict[str, Any]:
        """Docker's JSON shape; container and image events carry the legacy status/id/from."""
        out: dict[str, Any] = {}
        if self.type in ("container", "image"):
            out["status"] = self.action
            out["id"] = self.actor_id
            if "image" in self.attributes and self.type == "container":
                out["from"] = self.attributes["image"]
        out["Type"] = self.type
        out["Action"] = self.action
        out["Actor"] = {"ID": self.actor_id, "Attributes": dict(self.attributes)}
        out["scope"] = self.scope
        out["time"] = self.time_ns // 1_000_000_000
        out["timeNano"] = self.time_ns
        return out


@dataclass(slots=True, eq=False)
class _Subscriber:
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    dropped: bool = False


class EventBus:
    def __init__(self) -> None:
        self._history: deque[Event] = deque(maxlen=HISTORY)
        self._subscribers: set[_Subscriber] = set()

    @property
    def listener_count(self) -> int:
        return len(self._subscribers)

    def publish(
        self, type_: str, action: str, actor_id: str, attributes: dict[str, str] | None = None
    ) -> Event:
        event = Event(type_, action, actor_id, dict(attributes or {}), time.time_ns())
        self._history.append(event)
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                # A subscriber that does not read is cut off rather than buffered without bound.
                sub.dropped = True
                self._subscribers.discard(sub)
        return event

    def past(self, since_ns: int | None, until_ns: int | None) -> list[Event]:
        return [
            e
            for e in self._history
            if (since_ns is None or e.time_ns >= since_ns) and (until_ns is None or e.time_ns <= until_ns)
        ]

    async def subscribe(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        accept: Callable[[Event], bool] = lambda _e: True,
    ) -> AsyncIterator[Event]:
        """Past events from `since_ns`, then live ones until `until_ns` (or forever).

        Cancellation (the client went away) ends the subscription cleanly.
        """
        sub = _Subscriber()
        # Register before replaying so no event falls between history and live.
        self._subscribers.add(sub)
        try:
            replay_until = time.time_ns()
            if since_ns is not None:
                for e in self.past(since_ns, until_ns):
                    if e.time_ns <= replay_until and accept(e):
                        yield e
            if until_ns is not None and until_ns <= time.time_ns():
                return
            while True:
                timeout = None if until_ns is None else max(0.0, (until_ns - time.time_ns()) / 1e9)
                try:
                    async with asyncio.timeout(timeout):
                        event = await sub.queue.get()
                except TimeoutError:
                    return
                if event is None:
                    return
                if event.time_ns <= replay_until and since_ns is not None:
                    continue  # already replayed from history
                if until_ns is not None and event.time_ns > until_ns:
                    return
                if accept(event):
                    yield event
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """End every live subscription (daemon shutdown)."""
        for sub in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)
        self._subscribers.clear()
