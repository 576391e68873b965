"""`-v` and `--volumes-from` parsing with dockerd's semantics and messages."""

from __future__ import annotations

import pytest

from runtime.binds import BindSpec, parse_bind, parse_volumes_from
from runtime.errors import InvalidParameter


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/data", BindSpec("volume", "", "/data", False, "", "", True)),
        ("vol:/data", BindSpec("volume", "vol", "/data", False, "", "", True)),
        ("vol:/data:ro,nocopy", BindSpec("volume", "vol", "/data", True, "ro,nocopy", "", False)),
        ("/host/:/bind/:ro", BindSpec("bind", "/host", "/bind", True, "ro", "rprivate", True)),
        ("/host:/bind:rw,rslave,z", BindSpec("bind", "/host", "/bind", False, "rw,rslave,z", "rslave", True)),
        ("/h:/b:rro", BindSpec("bind", "/h", "/b", True, "rro", "rprivate", True, force_recursive_ro=True)),
    ],
)
def test_parse_bind(raw: str, expected: BindSpec) -> None:
    assert parse_bind(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (":/x", "invalid volume specification: ':/x'"),
        ("/foo:rw", "invalid volume specification: '/foo:rw'"),
        ("a:b:c:d", "invalid volume specification: 'a:b:c:d'"),
        ("/h:/b:bogus", "invalid mode: bogus"),
        ("/h:/b:ro,rw", "invalid mode: ro,rw"),
        (
            "vol:/b:rro",
            "mount mode \"rro\" requires a bind mount: invalid volume specification: 'vol:/b:rro'",
        ),
        (
            "/h:/",
            "invalid volume specification: '/h:/': invalid mount config for type \"bind\": "
            "invalid specification: destination can't be '/'",
        ),
        (
            "vol:rel",
            "invalid volume specification: 'vol:rel': invalid mount config for type \"volume\": "
            "invalid mount path: 'rel' mount path must be absolute",
        ),
    ],
)
def test_parse_bind_errors(raw: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_bind(raw)
    assert str(info.value) == message


def test_volumes_from() -> None:
    assert parse_volumes_from("data") == ("data", "rw")
    assert parse_volumes_from("data:ro") == ("data", "ro")
    for bad, message in (
        ("", "volumes-from specification cannot be an empty string"),
        ("data:bogus", "invalid mode: bogus"),
        ("data:ro,rshared", "invalid mode: ro,rshared"),
        ("data:nocopy", "invalid mode: nocopy"),
    ):
        with pytest.raises(InvalidParameter) as info:
            parse_volumes_from(bad)
        assert str(info.value) == message
