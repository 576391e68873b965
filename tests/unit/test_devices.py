"""Device lookups (`--device`) and device cgroup rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.models.hostconfig import DeviceMapping
from runtime.devices import lookup_devices, parse_cgroup_rule
from runtime.errors import InvalidParameter
from runtime.ocispec import DeviceCgroup


def test_parse_cgroup_rule() -> None:
    assert parse_cgroup_rule("c 1:3 rwm") == DeviceCgroup(
        allow=True, type="c", major=1, minor=3, access="rwm"
    )
    assert parse_cgroup_rule("a *:* r") == DeviceCgroup(allow=True, type="a", access="r")
    assert parse_cgroup_rule("b 8:* mw").minor is None
    for bad in ("c 1:3", "x 1:3 rwm", "c a:3 rwm", "c 1:3 rwmx"):
        with pytest.raises(InvalidParameter, match="invalid device cgroup format"):
            parse_cgroup_rule(bad)


def test_lookup_devices(tmp_path: Path) -> None:
    (node,) = lookup_devices([DeviceMapping(PathOnHost="/dev/null", PathInContainer="/dev/xnull")])
    assert (node.path, node.type, node.major, node.minor, node.permissions) == (
        "/dev/xnull",
        "c",
        1,
        3,
        "rwm",
    )
    (same,) = lookup_devices([DeviceMapping(PathOnHost="/dev/null", CgroupPermissions="r")])
    assert same.path == "/dev/null" and same.permissions == "r"
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidParameter, match="not a device node"):
        lookup_devices([DeviceMapping(PathOnHost=str(tmp_path / "file"))])
    with pytest.raises(InvalidParameter, match="error gathering device information"):
        lookup_devices([DeviceMapping(PathOnHost=str(tmp_path / "missing"))])
    with pytest.raises(InvalidParameter, match="invalid device mode: rwx"):
        lookup_devices([DeviceMapping(PathOnHost="/dev/null", CgroupPermissions="rwx")])
    assert lookup_devices([DeviceMapping(PathOnHost=str(tmp_path))]) == []  # a directory without devices
