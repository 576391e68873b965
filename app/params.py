"""Query-string conventions of the Engine API: booleans and `filters`.

Booleans: the CLI sends `1`, docker-py `True`/`False` or `0`/`1`; moby treats "", 0, no, false and
none (any case) as false and anything else as true. `filters` is JSON in either the map form
`{"name":{"a":true}}` (CLI) or the list form `{"name":["a"]}` (docker-py); both become
`{key: [values]}` here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Query
from pydantic import BeforeValidator

from runtime.errors import InvalidParameter

FALSE_WORDS = frozenset({"", "0", "no", "false", "none"})


def docker_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() not in FALSE_WORDS


DockerBool = Annotated[bool, BeforeValidator(docker_bool)]

Filters = dict[str, list[str]]


def parse_filters(raw: str | None) -> Filters:
    """Decode the `filters` query parameter into `{key: [values]}`; 400 when malformed."""
    if raw is None or raw.strip() == "":
        return {}
    try:
        decoded = json.loads(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid filter: {exc}") from exc
    if not isinstance(decoded, dict):
        raise InvalidParameter("invalid filter: expected a JSON object")
    out: Filters = {}
    for key, values in decoded.items():
        if isinstance(values, dict):
            out[str(key)] = [str(v) for v, on in values.items() if on]
        elif isinstance(values, list):
            out[str(key)] = [str(v) for v in values]
        elif isinstance(values, str):
            out[str(key)] = [values]
        else:
            raise InvalidParameter(f"invalid filter: bad value for {key!r}")
    return out


def check_filter_keys(filters: Filters, allowed: set[str]) -> None:
    """Reject unknown filter keys as moby does (`invalid filter 'x'`)."""
    for key in filters:
        if key not in allowed:
            raise InvalidParameter(f"invalid filter '{key}'")


FiltersQuery = Annotated[str | None, Query(alias="filters")]
