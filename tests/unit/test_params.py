from __future__ import annotations

import pytest

from app.params import docker_bool, parse_filters
from runtime.errors import InvalidParameter


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("True", True),
        ("yes", True),
        ("0", False),
        ("False", False),
        ("", False),
        ("none", False),
        ("NO", False),
    ],
)
def test_docker_bool(raw: str, expected: bool) -> None:
    assert docker_bool(raw) is expected


def test_filters_map_and_list_forms_agree() -> None:
    assert parse_filters('{"name":{"a":true,"b":false}}') == {"name": ["a"]}
    assert parse_filters('{"name":["a"]}') == {"name": ["a"]}
    assert parse_filters(None) == {}
    assert parse_filters("") == {}


@pytest.mark.parametrize("raw", ["{", "[1]", '{"a": 3}'])
def test_filters_malformed(raw: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_filters(raw)
