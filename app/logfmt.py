"""Daemon log lines: readable `time=... level=... msg=...` text (as dockerd) or JSON lines.

Context goes in `extra` (`container`, `image`, `pid`, `exit_code`, `duration_ms`, ...) and is
printed as key=value pairs. `X-Registry-Auth` and credentials never reach a log call.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

# Attributes every LogRecord has; anything else came from `extra`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}
_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "error", "CRITICAL": "fatal"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    return (
        dt.datetime.fromtimestamp(record.created, dt.UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        parts = [
            f"time={_timestamp(record)!s}",
            f"level={_LEVELS.get(record.levelname, 'info')}",
            f"msg={json.dumps(msg)}",
        ]
        for key, value in _extras(record).items():
            text = str(value)
            parts.append(f"{key}={json.dumps(text) if (' ' in text or '=' in text or not text) else text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": _timestamp(record),
            "level": _LEVELS.get(record.levelname, "info"),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        out.update(
            {k: v if isinstance(v, int | float | bool) else str(v) for k, v in _extras(record).items()}
        )
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warn": logging.WARNING,
        "error": logging.ERROR,
        "fatal": logging.CRITICAL,
    }.get(level, logging.INFO)
    root.setLevel(numeric)
    # uvicorn's own loggers: keep errors, drop its per-request access log unless debugging.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = numeric <= logging.DEBUG
    access.disabled = numeric > logging.DEBUG
    # Libraries' chatter: httpx logs every registry request at INFO, httpcore its transport
    # states at DEBUG (a dozen lines per blob). Registry requests show only when debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
