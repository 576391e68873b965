"""Docker's per-layer progress messages (pull, push, load), as the docker CLI renders them.

The CLI (`jsonmessage.DisplayJSONMessagesStream`) draws one line per `id` on a TTY and moves the
cursor between them; it draws the bar itself from `progressDetail` (`current`/`total`) when the
terminal is wider than 110 columns, and prints `progress` as is otherwise. So every update of a
layer carries its `id`, and the last update of a read reports `current == total` (a bar left at
98% looks like a hang). This module only shapes messages; it sends nothing.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import IO, Any

PROGRESS_INTERVAL_S = 0.1


def human_size(n: float) -> str:
    """go-units HumanSize: decimal units, 4 significant digits (`36.64kB`, `1.032MB`)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.4g}{units[i]}"


def progress_text(current: int, total: int) -> str:
    if total <= 0:
        return f"{human_size(current):>8}"
    pct = min(50, int(current / total * 100) // 2)
    return f"[{'=' * pct}>{' ' * (50 - pct)}] {human_size(current):>8}/{human_size(total)}"


def layer_message(
    layer_id: str, status: str, current: int | None = None, total: int | None = None
) -> dict[str, Any]:
    msg: dict[str, Any] = {"status": status, "progressDetail": {}, "id": layer_id}
    if current is not None:
        msg["progressDetail"] = {"current": current, "total": total or 0}
        msg["progress"] = progress_text(current, total or 0)
    return msg


class Throttle:
    """At most one update per PROGRESS_INTERVAL_S (dockerd's progress reader rate)."""

    def __init__(self) -> None:
        self._last = 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            return True
        return False


class ProgressReader(io.RawIOBase):
    """Reads a file (in a worker thread) and reports the bytes read so far, throttled, plus a
    last report at EOF. `report` is called in the reading thread: hand it on thread-safely."""

    def __init__(self, f: IO[bytes], report: Callable[[int], None]) -> None:
        self._f = f
        self._report = report
        self._done = 0
        self._eof_reported = False
        self._throttle = Throttle()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """The bytes as the file returns them (no copy through a buffer, unlike RawIOBase's)."""
        data = self._f.read(-1 if size is None else size)
        self._count(len(data))
        return data

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._f.read(len(buf))
        buf[: len(data)] = data
        self._count(len(data))
        return len(data)

    def _count(self, n: int) -> None:
        self._done += n
        if not n:
            if not self._eof_reported:
                self._eof_reported = True
                self._report(self._done)
        elif self._throttle.ready():
            self._report(self._done)

    def close(self) -> None:
        self._f.close()
        super().close()
