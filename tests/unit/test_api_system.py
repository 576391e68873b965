"""HTTP-layer tests of the system endpoints, version prefixes and error format (no root needed)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api import create_app
from runtime.config import DaemonConfig
from runtime.engine import Engine

# Unit tests touch no bridge, sysctl or iptables rule of the host.
NO_HOST_NETWORKING: dict[str, Any] = {"bridge": "none", "iptables": False, "ip_forward": False}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = DaemonConfig(data_root=tmp_path / "data", exec_root=tmp_path / "exec", **NO_HOST_NETWORKING)
    engine = Engine(config)
    await engine.start()
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://docker") as c:
        yield c
    await engine.shutdown()


async def test_ping_get_and_head(client: httpx.AsyncClient) -> None:
    for path in ("/_ping", "/v1.41/_ping", "/v1.24/_ping"):
        r = await client.get(path)
        assert r.status_code == 200
        assert r.text == "OK"
        assert r.headers["cache-control"] == "no-cache, no-store, must-revalidate"
        assert r.headers["pragma"] == "no-cache"
    r = await client.head("/_ping")
    assert r.status_code == 200
    assert r.content == b""


async def test_version_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1.41/version")
    assert r.status_code == 200
    body = r.json()
    assert body["ApiVersion"] == "1.41"
    assert body["MinAPIVersion"] == "1.24"
    assert body["Os"] == "linux"
    assert body["Components"][0]["Name"] == "Engine"
    assert body["Components"][0]["Details"]["ApiVersion"] == "1.41"


async def test_info_has_real_figures(client: httpx.AsyncClient, tmp_path: Path) -> None:
    r = await client.get("/info")
    body = r.json()
    assert body["NCPU"] >= 1
    assert body["MemTotal"] > 0
    assert body["DockerRootDir"] == str(tmp_path / "data")
    assert body["Driver"] == "overlay2"
    assert body["CgroupVersion"] in ("1", "2")
    assert body["OSType"] == "linux"
    assert len(body["ID"]) == 36
    assert body["Swarm"]["LocalNodeState"] == "inactive"


async def test_version_out_of_range(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1.99/version")
    assert r.status_code == 400
    assert r.json() == {"message": "client version 1.99 is too new. Maximum supported API version is 1.41"}
    r = await client.get("/v1.11/version")
    assert r.status_code == 400
    assert r.text.startswith("client version 1.11 is too old. Minimum supported API version is 1.24")


async def test_unknown_path_is_docker_404(client: httpx.AsyncClient) -> None:
    for path in ("/nope", "/v1.41/nope/deeper"):
        r = await client.get(path)
        assert r.status_code == 404
        assert r.json() == {"message": "page not found"}


async def test_bad_filters_are_400(client: httpx.AsyncClient) -> None:
    r = await client.get("/events", params={"filters": "{not json", "until": "1"})
    assert r.status_code == 400
    assert r.json()["message"].startswith("invalid filter")
    r = await client.get("/events", params={"filters": '{"bogus":{"x":true}}', "until": "1"})
    assert r.status_code == 400
    assert r.json() == {"message": "invalid filter 'bogus'"}


async def test_events_since_until_replays_and_ends(tmp_path: Path) -> None:
    config = DaemonConfig(data_root=tmp_path / "data", exec_root=tmp_path / "exec", **NO_HOST_NETWORKING)
    engine = Engine(config)
    await engine.start()
    engine.events.publish("container", "create", "a" * 64, {"name": "one", "image": "busybox"})
    engine.events.publish("network", "create", "b" * 64, {"name": "net", "type": "bridge"})
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://docker") as c:
        until = f"{time.time():.9f}"
        r = await c.get(
            "/v1.41/events", params={"since": "0", "until": until, "filters": '{"type":["container"]}'}
        )
    await engine.shutdown()
    assert r.status_code == 200
    lines = [line for line in r.text.split("\n") if line]
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["status"] == "create"
    assert event["from"] == "busybox"
    assert event["Actor"]["Attributes"]["name"] == "one"
    assert event["Type"] == "container"


async def test_build_prune_answers(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1.41/build/prune", params={"filters": ""})
    assert r.status_code == 200
    assert r.json() == {"CachesDeleted": [], "SpaceReclaimed": 0}
