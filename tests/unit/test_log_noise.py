"""Daemon logs stay readable: libraries' per-request chatter is kept out (issue 10)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from app import logfmt


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_registry_request_lines_only_when_debugging() -> None:
    logfmt.setup("info", "text")
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert not logging.getLogger("httpcore").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("pydock.images").isEnabledFor(logging.INFO)
    logfmt.setup("debug", "text")
    assert logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert not logging.getLogger("httpcore").isEnabledFor(logging.DEBUG)  # transport internals, never


def test_text_lines_read_like_dockerd() -> None:
    record = logging.LogRecord("pydock.containers", logging.INFO, __file__, 1, "container exited", None, None)
    record.container = "3f2a1b4c5d6e"
    record.exit_code = 0
    line = logfmt.TextFormatter().format(record)
    assert line.startswith("time=") and line.endswith(
        'level=info msg="container exited" container=3f2a1b4c5d6e exit_code=0'
    )
