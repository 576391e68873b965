"""The Python clients people already use, unchanged, against a live pydockd: testcontainers,
aiodocker, python-on-whales. Only the daemon address differs from what they'd do with Docker.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon import DOCKER, Daemon


@pytest.fixture
def label() -> Iterator[dict[str, str]]:
    yield {"pydock.test": f"pdcl{secrets.token_hex(3)}"}


@pytest.fixture
def sweep(daemon: Daemon, label: dict[str, str]) -> Iterator[None]:
    """Remove what a failed test left (its containers carry the label)."""
    yield
    client = daemon.client()
    try:
        key, value = next(iter(label.items()))
        for c in client.containers.list(all=True, filters={"label": f"{key}={value}"}):
            c.remove(force=True)
    finally:
        client.close()


# --- testcontainers ------------------------------------------------------------------------------


@pytest.fixture
def testcontainers_env(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """testcontainers finds the daemon through DOCKER_HOST; its Ryuk reaper is an image we don't
    have offline, so it is disabled (as its docs say for rootless or restricted hosts)."""
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    # This test host is itself a container (/.dockerenv), where testcontainers would aim at the
    # bridge gateway; pydockd runs on this host, so its published ports are on the host's
    # loopback (a user outside a container gets this mode by default).
    monkeypatch.setattr(testcontainers_config, "connection_mode_override", ConnectionMode.docker_host)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    monkeypatch.setenv("DOCKER_CONFIG", str(daemon.root / "docker-config"))
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    yield


def test_testcontainers_generic_container_with_a_published_port(
    testcontainers_env: None, label: dict[str, str], sweep: None
) -> None:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import HttpWaitStrategy

    container = (
        DockerContainer("busybox")
        .with_command(["httpd", "-f", "-v", "-p", "8080", "-h", "/etc"])
        .with_exposed_ports(8080)
        .with_kwargs(labels=label)
        .waiting_for(HttpWaitStrategy(8080, "/hostname").for_status_code(200))
    )
    with container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(8080)
        assert host in ("localhost", "127.0.0.1") and int(port) > 0
        with urllib.request.urlopen(f"http://{host}:{port}/hostname", timeout=10) as response:
            hostname = response.read().decode().strip()
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        assert hostname == wrapped.attrs["Config"]["Hostname"]
        stdout, stderr = container.get_logs()
        assert b"response:200" in stdout + stderr  # httpd -v logs each answer
        container_id = wrapped.id
    client = container.get_docker_client().client
    assert container_id not in [c.id for c in client.containers.list(all=True)]


def test_testcontainers_server_container(
    testcontainers_env: None, label: dict[str, str], sweep: None
) -> None:
    """The generic `ServerContainer` waits for an HTTP answer (404 on `/` here: an empty docroot)."""
    from testcontainers.community.generic import ServerContainer

    server = ServerContainer(port=80, image="busybox").with_command(["httpd", "-f", "-p", "80", "-h", "/var"])
    server.with_kwargs(labels=label)
    with server:
        url = server._create_connection_url()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url}/nothing-here", timeout=10)
        assert info.value.code == 404
        info.value.close()


# --- aiodocker -----------------------------------------------------------------------------------


async def test_aiodocker_basics(daemon: Daemon, label: dict[str, str], sweep: None) -> None:
    import aiodocker

    async with aiodocker.Docker(url=daemon.host) as docker:
        version = await docker.version()
        assert version["ApiVersion"] == "1.41"
        info = await docker.system.info()
        assert info["DockerRootDir"] == str(daemon.data_root)
        async with docker._query("_ping") as ping:  # aiodocker has no ping helper: its own request path
            assert ping.status == 200 and await ping.text() == "OK"

        container = await docker.containers.run(
            config={
                "Image": "busybox",
                "Cmd": ["sh", "-c", "echo from aiodocker; echo err >&2"],
                "Labels": label,
            },
            name=f"{label['pydock.test']}-aio",
        )
        try:
            result = await container.wait(timeout=60)
            assert result["StatusCode"] == 0
            assert await container.log(stdout=True) == ["from aiodocker\n"]
            assert await container.log(stderr=True) == ["err\n"]
            listed = await docker.containers.list(
                all=True, filters={"label": [f"pydock.test={label['pydock.test']}"]}
            )
            assert [c.id for c in listed] == [container.id]
            details = await container.show()
            assert (
                details["State"]["Status"] == "exited" and details["Name"] == f"/{label['pydock.test']}-aio"
            )
        finally:
            await container.delete(force=True)
        listed = await docker.containers.list(
            all=True, filters={"label": [f"pydock.test={label['pydock.test']}"]}
        )
        assert listed == []
        images = await docker.images.list()
        assert any("busybox:latest" in (i.get("RepoTags") or []) for i in images)


# --- python-on-whales ----------------------------------------------------------------------------


def test_python_on_whales_basics(daemon: Daemon, label: dict[str, str], sweep: None, tmp_path: Path) -> None:
    from python_on_whales import DockerClient

    docker: Any = DockerClient(host=daemon.host, config=tmp_path / "docker-config", client_call=[DOCKER])
    version = docker.version()
    assert version.server is not None and version.server.api_version == "1.41"
    assert docker.system.info().docker_root_dir == daemon.data_root

    out = docker.run("busybox", ["echo", "from whales"], remove=True, labels=label)
    assert out == "from whales"
    name = f"{label['pydock.test']}-whale"
    container = docker.run(
        "busybox", ["sh", "-c", "echo ready; sleep 300"], detach=True, name=name, labels=label
    )
    try:
        assert container.name == name and container.state.running
        listed = docker.container.list(filters=[("label", f"pydock.test={label['pydock.test']}")])
        assert [c.id for c in listed] == [container.id]
        assert docker.container.logs(container) == "ready\n"
        assert docker.container.exists(name)
    finally:
        docker.container.remove(container, force=True)
    assert not docker.container.exists(name)
    assert "busybox" in [tag.split(":")[0] for image in docker.image.list() for tag in image.repo_tags]
