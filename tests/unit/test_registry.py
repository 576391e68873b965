from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from runtime.distribution import parse_pull_ref
from runtime.errors import NotFound, Unauthorized
from runtime.progress import human_size, progress_text
from runtime.registry import (
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    AuthConfig,
    ManifestUnknown,
    RegistryClient,
    RegistryError,
    decode_registry_auth,
    is_insecure,
    parse_challenge,
    select_platform,
)


def test_insecure_hosts() -> None:
    assert is_insecure("127.0.0.1:5000") and is_insecure("127.8.9.1") and is_insecure("localhost:5000")
    assert is_insecure("[::1]:5000")
    assert not is_insecure("registry-1.docker.io") and not is_insecure("10.0.0.5:5000")
    assert is_insecure("10.0.0.5:5000", ("10.0.0.0/8",))
    assert is_insecure("myreg:5000", ("myreg:5000",)) and not is_insecure("myreg:5001", ("myreg:5000",))
    assert is_insecure("myreg", ("http://myreg",))


def test_decode_registry_auth() -> None:
    assert decode_registry_auth("e30=").is_anonymous
    assert decode_registry_auth(None).is_anonymous
    assert decode_registry_auth("!!!not base64").is_anonymous
    raw = base64.urlsafe_b64encode(
        json.dumps({"username": "u", "password": "p+/?", "serveraddress": "h"}).encode()
    )
    auth = decode_registry_auth(raw.decode().rstrip("="))
    assert (auth.username, auth.password, auth.serveraddress) == ("u", "p+/?", "h")


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.io/token",service="registry.io",scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.io/token",
        "service": "registry.io",
        "scope": "repository:a/b:pull",
    }
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_select_platform() -> None:
    index = {
        "manifests": [
            {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
            {"digest": "sha256:arm7", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    }
    assert select_platform(index, ("linux", "amd64", ""))["digest"] == "sha256:amd"
    assert select_platform(index, ("linux", "arm", "v7"))["digest"] == "sha256:arm7"
    with pytest.raises(RegistryError, match="no matching manifest for linux/s390x"):
        select_platform(index, ("linux", "s390x", ""))


def test_progress_text_like_docker() -> None:
    assert human_size(36638) == "36.64kB" and human_size(1032403) == "1.032MB" and human_size(512) == "512B"
    text = progress_text(36638, 1032403)
    assert text.startswith("[=>") and text.endswith("36.64kB/1.032MB")


def test_parse_pull_ref() -> None:
    assert str(parse_pull_ref("docker.io/library/busybox", "latest")) == "docker.io/library/busybox:latest"
    assert str(parse_pull_ref("busybox", None)) == "docker.io/library/busybox:latest"
    digest = "sha256:" + "a" * 64
    assert parse_pull_ref("127.0.0.1:5000/x", digest).digest == digest


class FakeRegistry:
    """A token-auth registry in a MockTransport: /v2/ asks for a bearer token from /token."""

    def __init__(self) -> None:
        self.config = b'{"rootfs":{"diff_ids":[]}}'
        self.config_digest = "sha256:" + hashlib.sha256(self.config).hexdigest()
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MT_DOCKER_MANIFEST,
                "config": {"digest": self.config_digest},
                "layers": [],
            }
        ).encode()
        self.manifest_digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        self.token_requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/token":
            self.token_requests.append(request)
            if request.headers.get("authorization") != "Basic " + base64.b64encode(b"u:pw").decode():
                return httpx.Response(
                    401, json={"errors": [{"code": "UNAUTHORIZED", "message": "bad creds"}]}
                )
            return httpx.Response(200, json={"token": "tok-" + request.url.params.get("scope", "")})
        if not request.headers.get("authorization", "").startswith("Bearer tok-"):
            challenge = 'Bearer realm="https://reg.test/token",service="reg.test"'
            if path != "/v2/":
                challenge += ',scope="repository:ns/app:pull"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if path == "/v2/":
            return httpx.Response(200)
        if path in ("/v2/ns/app/manifests/v1", "/v2/ns/app/manifests/sha256:" + "1" * 64):
            return httpx.Response(200, content=self.manifest, headers={"Content-Type": MT_DOCKER_MANIFEST})
        if path == "/v2/ns/app/manifests/list":
            body = {"mediaType": MT_DOCKER_LIST, "manifests": []}
            return httpx.Response(200, json=body, headers={"Content-Type": MT_DOCKER_LIST})
        if path == f"/v2/ns/app/blobs/{self.config_digest}":
            return httpx.Response(200, content=self.config)
        if path == "/v2/ns/app/blobs/sha256:" + "0" * 64:
            return httpx.Response(200, content=b"not what the digest says")
        return httpx.Response(
            404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
        )


async def test_bearer_token_flow() -> None:
    fake = FakeRegistry()
    auth = AuthConfig(username="u", password="pw")
    async with RegistryClient("reg.test", auth, transport=httpx.MockTransport(fake.handler)) as client:
        assert client.scheme == "https"
        manifest = await client.get_manifest("ns/app", "v1")
        assert manifest.digest == fake.manifest_digest and manifest.media_type == MT_DOCKER_MANIFEST
        assert await client.get_blob_bytes("ns/app", fake.config_digest) == fake.config
        assert (await client.get_manifest("ns/app", "list")).media_type == MT_DOCKER_LIST
        with pytest.raises(ManifestUnknown):
            await client.get_manifest("ns/app", "nope")
        with pytest.raises(RegistryError, match="verification failed"):
            await client.get_blob_bytes("ns/app", "sha256:" + "0" * 64)
        with pytest.raises(RegistryError, match="digest mismatch"):
            await client.get_manifest("ns/app", "sha256:" + "1" * 64)
    scopes = {r.url.params.get("scope") for r in fake.token_requests}
    assert scopes == {"repository:ns/app:pull"}, "one token per scope, cached"
    assert all(r.url.params.get("service") == "reg.test" for r in fake.token_requests)


async def test_bad_credentials() -> None:
    fake = FakeRegistry()
    transport = httpx.MockTransport(fake.handler)
    async with RegistryClient(
        "reg.test", AuthConfig(username="u", password="no"), transport=transport
    ) as client:
        with pytest.raises(Unauthorized, match="bad creds"):
            await client.login()
    async with RegistryClient(
        "reg.test", AuthConfig(username="u", password="pw"), transport=transport
    ) as client:
        await client.login()


def test_pull_denied_is_404() -> None:
    from runtime.registry import pull_error

    err = pull_error("x:1", "x", Unauthorized("denied: requested access to the resource is denied"))
    assert isinstance(err, NotFound) and "pull access denied for x" in str(err)


async def test_blob_body_is_the_stored_bytes_in_the_connection_chunks() -> None:
    blob = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    asked: list[str | None] = []

    async def pieces(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        asked.append(request.headers.get("accept-encoding"))
        if request.url.path.endswith(digest):
            return httpx.Response(200, content=pieces(blob), headers={"Content-Length": str(len(blob))})
        # a server that compresses anyway: the bytes handed on are the blob's own
        coded = gzip.compress(blob)
        return httpx.Response(200, content=pieces(coded), headers={"Content-Encoding": "gzip"})

    async with RegistryClient("127.0.0.1:5000", transport=httpx.MockTransport(handler)) as client:
        async with client.blob_body("ns/app", digest) as (chunks, total):
            got = [chunk async for chunk in chunks]
        assert total == len(blob) and b"".join(got) == blob
        assert [len(c) for c in got] == [65536] * 4 + [len(blob) - 4 * 65536]  # no re-chunking
        async with client.blob_body("ns/app", "sha256:" + "2" * 64) as (chunks, total):
            assert total == -1 and b"".join([chunk async for chunk in chunks]) == blob
    assert asked == ["identity", "identity"]
