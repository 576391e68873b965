"""`prune` filters shared by containers, volumes and networks: `until` and `label` / `label!`."""

from __future__ import annotations

import time
from collections.abc import Callable

from runtime.errors import InvalidParameter
from runtime.records import Container, parse_rfc3339


def parse_until(values: list[str], now: float | None = None) -> float | None:
    """`until`: a unix timestamp, an RFC 3339 time, or a Go duration ago (`10m`, `1h30m`)."""
    if not values:
        return None
    value = values[-1]
    now = time.time() if now is None else now
    try:
        return float(value)
    except ValueError:
        pass
    seconds = _go_duration(value)
    if seconds is not None:
        return now - seconds
    try:
        return parse_rfc3339(value if value.endswith("Z") or "+" in value else value + "Z")
    except ValueError as exc:
        raise InvalidParameter(f"invalid filter 'until={value}'") from exc


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration(text: str) -> float | None:
    total, number, i = 0.0, "", 0
    if not text:
        return None
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = next((u for u in ("ns", "us", "µs", "ms", "s", "m", "h") if text.startswith(u, i)), None)
        if unit is None or not number:
            return None
        total += float(number) * _UNITS[unit]
        number = ""
        i += len(unit)
    return None if number else total


def labels_accept(filters: dict[str, list[str]]) -> Callable[[dict[str, str]], bool]:
    wanted = filters.get("label", [])
    unwanted = filters.get("label!", [])

    def accept(labels: dict[str, str]) -> bool:
        for item in wanted:
            key, sep, value = item.partition("=")
            if key not in labels or (sep and labels[key] != value):
                return False
        for item in unwanted:
            key, sep, value = item.partition("=")
            if key in labels and (not sep or labels[key] == value):
                return False
        return True

    return accept


def container_prune_filter(filters: dict[str, list[str]]) -> Callable[[Container], bool]:
    for key in filters:
        if key not in ("until", "label", "label!"):
            raise InvalidParameter(f"invalid filter '{key}'")
    until = parse_until(filters.get("until", []))
    labels = labels_accept(filters)

    def accept(c: Container) -> bool:
        if until is not None and parse_rfc3339(c.created) >= until:
            return False
        return labels(c.config.Labels or {})

    return accept
