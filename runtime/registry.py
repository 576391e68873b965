"""A client of the distribution (registry v2) API over `httpx.AsyncClient`.

Ping `/v2/`, authenticate the way the registry asks (`WWW-Authenticate: Bearer realm=..,
service=.., scope=..` for a token, or `Basic`), fetch manifests (Docker schema2, OCI, manifest
lists / OCI indexes with platform selection), stream blobs with digest verification, check,
upload (chunked, or by cross-repo mount) and put manifests. Plain HTTP only for loopback
registries and `--insecure-registry` entries (CIDRs or host[:port]); HTTPS otherwise.

Registry failures become PydockErrors here (where httpx is called). Credentials are never logged.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import ipaddress
import json
import logging
import platform
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin

import httpx

from runtime.errors import NotFound, PydockError, SystemError_, Unauthorized

log = logging.getLogger("pydock.registry")

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MANIFEST_ACCEPT = ", ".join([MT_DOCKER_MANIFEST, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_OCI_INDEX])
INDEX_TYPES = (MT_DOCKER_LIST, MT_OCI_INDEX)
MANIFEST_TYPES = (MT_DOCKER_MANIFEST, MT_OCI_MANIFEST)
MAX_MANIFEST_BYTES = 4 << 20
UPLOAD_CHUNK = 8 << 20
USER_AGENT = "pydock/0.1 (linux)"


class RegistryError(SystemError_):
    """A registry said no or could not be reached (500, or the stream's in-band error)."""


class ManifestUnknown(NotFound):
    pass


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Credentials from `X-Registry-Auth` or `POST /auth` (Docker's AuthConfig)."""

    username: str = ""
    password: str = ""
    serveraddress: str = ""
    identitytoken: str = ""
    registrytoken: str = ""

    @property
    def is_anonymous(self) -> bool:
        return not (self.username or self.password or self.identitytoken or self.registrytoken)

    @classmethod
    def from_mapping(cls, obj: dict[str, Any]) -> AuthConfig:
        def get(key: str) -> str:
            for k, v in obj.items():
                if k.lower() == key and isinstance(v, str):
                    return v
            return ""

        return cls(
            username=get("username"),
            password=get("password"),
            serveraddress=get("serveraddress"),
            identitytoken=get("identitytoken"),
            registrytoken=get("registrytoken"),
        )


def decode_registry_auth(header: str | None) -> AuthConfig:
    """Decode `X-Registry-Auth`: base64url (padding optional) JSON; empty or `{}` is anonymous."""
    if not header:
        return AuthConfig()
    raw = header.strip()
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        obj = json.loads(decoded)
    except (ValueError, TypeError):
        # Docker falls back to anonymous access for an undecodable header.
        log.debug("ignoring an undecodable X-Registry-Auth header")
        return AuthConfig()
    return AuthConfig.from_mapping(obj) if isinstance(obj, dict) else AuthConfig()


# --- where to connect ---------------------------------------------------------------------------


def _host_only(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_insecure(host: str, insecure_registries: tuple[str, ...] = ()) -> bool:
    """Plain HTTP allowed: loopback hosts, `localhost`, and `--insecure-registry` entries."""
    name = _host_only(host)
    if name == "localhost":
        return True
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name)
    except ValueError:
        addr = None
    if addr is not None and addr.is_loopback:
        return True
    for entry in insecure_registries:
        entry = entry.removeprefix("http://").removeprefix("https://").rstrip("/")
        if entry in (host, name):
            return True
        if addr is not None and "/" in entry:
            try:
                if addr in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def host_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) of this host in OCI terms."""
    machine = platform.machine().lower()
    arch, variant = {
        "x86_64": ("amd64", ""),
        "amd64": ("amd64", ""),
        "aarch64": ("arm64", "v8"),
        "arm64": ("arm64", "v8"),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "i686": ("386", ""),
        "i386": ("386", ""),
        "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""),
        "riscv64": ("riscv64", ""),
    }.get(machine, (machine, ""))
    return "linux", arch, variant


def select_platform(index: dict[str, Any], wanted: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """The descriptor in a manifest list / OCI index for the wanted (or this host's) platform."""
    want_os, want_arch, want_variant = wanted or host_platform()
    best: tuple[int, dict[str, Any]] | None = None
    manifests = index.get("manifests") or []
    if not isinstance(manifests, list):
        raise RegistryError("invalid manifest list: manifests is not a list")
    for desc in manifests:
        plat = desc.get("platform") if isinstance(desc, dict) else None
        if not isinstance(plat, dict):
            continue  # malformed entries match no platform (untrusted input, issue 8)
        if plat.get("os") != want_os or plat.get("architecture") != want_arch:
            continue
        variant = plat.get("variant") or ""
        if want_variant and variant and variant != want_variant:
            continue
        score = 2 if variant == want_variant else 1
        if best is None or score > best[0]:
            best = (score, desc)
    if best is None:
        variant = f"/{want_variant}" if want_variant else ""
        raise RegistryError(
            f"no matching manifest for {want_os}/{want_arch}{variant} in the manifest list entries"
        )
    return best[1]


# --- auth -----------------------------------------------------------------------------------------

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


@dataclass(slots=True)
class _Authorizer:
    auth: AuthConfig
    client: httpx.AsyncClient
    challenge: tuple[str, dict[str, str]] | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    def _basic(self) -> str:
        raw = f"{self.auth.username}:{self.auth.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def header(self, scope: str) -> str | None:
        if self.auth.registrytoken:
            return f"Bearer {self.auth.registrytoken}"
        if self.challenge is None:
            return None
        scheme, params = self.challenge
        if scheme == "basic":
            return None if self.auth.is_anonymous else self._basic()
        if scheme != "bearer":
            return None
        token = self.tokens.get(scope)
        if token is None:
            token = await self._fetch_token(params, scope)
            self.tokens[scope] = token
        return f"Bearer {token}"

    async def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryError("registry sent a bearer challenge without a realm")
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        scopes = [s for s in scope.split(" ") if s]
        try:
            if self.auth.identitytoken:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": self.auth.identitytoken,
                    "client_id": "pydock",
                }
                if scopes:
                    form["scope"] = " ".join(scopes)
                form.update(query)
                resp = await self.client.post(realm, data=form)
            else:
                url = (
                    realm
                    + ("&" if "?" in realm else "?")
                    + urlencode([*query.items(), *(("scope", s) for s in scopes)])
                )
                headers = {} if self.auth.is_anonymous else {"Authorization": self._basic()}
                resp = await self.client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(f'Get "{realm}": {exc}') from exc
        if resp.status_code in (401, 403):
            raise Unauthorized(f"unauthorized: {_error_text(resp) or 'authentication required'}")
        if resp.status_code != 200:
            raise RegistryError(f"token request to {realm} failed with status: {resp.status_code}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise RegistryError(f"invalid token response from {realm}") from exc
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"no token in the response from {realm}")
        return token


def _error_text(resp: httpx.Response) -> str:
    """`code: message` of a registry error body, as dockerd prints them."""
    try:
        errors = resp.json().get("errors") or []
    except (ValueError, AttributeError):
        return ""
    parts = []
    for err in errors:
        if isinstance(err, dict):
            code = str(err.get("code", "")).lower().replace("_", " ")
            msg = str(err.get("message", ""))
            parts.append(f"{code}: {msg}" if code else msg)
    return "; ".join(parts)


# --- the client -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Manifest:
    raw: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        obj = json.loads(self.raw)
        if not isinstance(obj, dict):
            raise RegistryError("manifest is not a JSON object")
        return obj


class RegistryClient:
    """One registry host, one set of credentials; use as `async with RegistryClient(...)`."""

    def __init__(
        self,
        host: str,
        auth: AuthConfig | None = None,
        *,
        insecure_registries: tuple[str, ...] = (),
        timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.host = host
        self.scheme = "http" if is_insecure(host, insecure_registries) else "https"
        self.base = f"{self.scheme}://{host}"
        self._client = httpx.AsyncClient(
            verify=_tls_context(),
            timeout=httpx.Timeout(timeout_s, connect=15.0),
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        )
        self._auth = _Authorizer(auth or AuthConfig(), self._client)
        self._pinged = False

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    def _url(self, path: str) -> str:
        return urljoin(self.base + "/", path.lstrip("/"))

    async def ping(self) -> None:
        """GET /v2/ and remember the auth challenge (RegistryError when unreachable)."""
        url = self._url("/v2/")
        try:
            resp = await self._client.get(url)
        except httpx.HTTPError as exc:
            raise RegistryError(f'Get "{url}": {_describe(exc)}') from exc
        if resp.status_code == 401:
            header = resp.headers.get("www-authenticate", "")
            self._auth.challenge = parse_challenge(header) if header else None
        elif resp.status_code >= 400:
            raise RegistryError(f'Get "{url}": registry answered {resp.status_code}')
        self._pinged = True

    async def login(self) -> None:
        """Check the credentials (Unauthorized when refused)."""
        await self.ping()
        url = self._url("/v2/")
        if self._auth.challenge is None:
            return  # an open registry accepts anyone
        header = await self._auth.header("")
        resp = await self._client.get(url, headers={"Authorization": header} if header else {})
        if resp.status_code in (401, 403):
            raise Unauthorized(
                f"login attempt to {url} failed with status: {resp.status_code} {resp.reason_phrase}"
            )
        if resp.status_code >= 400:
            raise RegistryError(f"login attempt to {url} failed with status: {resp.status_code}")

    async def _request(
        self,
        method: str,
        url: str,
        scope: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        if not self._pinged:
            await self.ping()
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = await self._auth.header(scope)
            if auth:
                hdrs["Authorization"] = auth
            req = self._client.build_request(method, url, headers=hdrs, content=content)
            try:
                resp = await self._client.send(req, stream=stream)
            except httpx.HTTPError as exc:
                raise RegistryError(f'{method.capitalize()} "{url}": {_describe(exc)}') from exc
            if resp.status_code == 401 and attempt == 0 and not isinstance(content, AsyncIterator):
                header = resp.headers.get("www-authenticate", "")
                await resp.aclose()
                if header:
                    self._auth.challenge = parse_challenge(header)
                    self._auth.tokens.pop(scope, None)
                    continue
            return resp
        return resp

    async def get_manifest(self, repo: str, reference: str) -> Manifest:
        """Fetch a manifest (or list) by tag or digest; verify it when fetched by digest."""
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        resp = await self._request("GET", url, _scope(repo, "pull"), headers={"Accept": MANIFEST_ACCEPT})
        if resp.status_code == 404:
            raise ManifestUnknown(_error_text(resp) or "manifest unknown: manifest unknown")
        if resp.status_code in (401, 403):
            raise Unauthorized(_error_text(resp) or "denied: requested access to the resource is denied")
        if resp.status_code != 200:
            raise RegistryError(
                f"unexpected status {resp.status_code} fetching manifest {repo}:{reference}: "
                f"{_error_text(resp)}"
            )
        raw = resp.content
        if len(raw) > MAX_MANIFEST_BYTES:
            raise RegistryError("manifest too large")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"manifest digest mismatch: expected {reference}, got {digest}")
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        try:
            declared = json.loads(raw).get("mediaType")
        except (ValueError, AttributeError) as exc:
            raise RegistryError(f"invalid manifest JSON: {exc}") from exc
        if isinstance(declared, str) and declared:
            media_type = declared
        if media_type in MT_SCHEMA1:
            raise RegistryError(
                "Docker Image Format v1 and Docker Image manifest version 2, schema 1 are not supported "
                f"({repo}:{reference})"
            )
        if media_type not in INDEX_TYPES + MANIFEST_TYPES:
            obj = json.loads(raw)
            media_type = (
                MT_OCI_INDEX if "manifests" in obj else MT_OCI_MANIFEST if "config" in obj else media_type
            )
        if media_type not in INDEX_TYPES + MANIFEST_TYPES:
            raise RegistryError(f"unsupported manifest media type {media_type!r}")
        return Manifest(raw, media_type, digest)

    async def get_blob_bytes(self, repo: str, digest: str, max_bytes: int = 16 << 20) -> bytes:
        chunks = []
        size = 0
        async for chunk in self.stream_blob(repo, digest):
            size += len(chunk)
            if size > max_bytes:
                raise RegistryError(f"blob {digest} is larger than expected")
            chunks.append(chunk)
        data = b"".join(chunks)
        return data

    async def stream_blob(
        self, repo: str, digest: str, on_total: Callable[[int], None] | None = None
    ) -> AsyncIterator[bytes]:
        """Yield a blob's bytes; the digest is verified at the end (RegistryError on mismatch)."""
        async with self.blob_body(repo, digest) as (chunks, total):
            if on_total is not None:
                on_total(total)
            hasher = hashlib.sha256()
            async for chunk in chunks:
                hasher.update(chunk)
                yield chunk
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise RegistryError(verification_failed(digest, actual))

    @contextlib.asynccontextmanager
    async def blob_body(self, repo: str, digest: str) -> AsyncIterator[tuple[AsyncIterator[bytes], int]]:
        """The body of a blob as the response's own chunks (not verified: the caller hashes
        them, see `verification_failed`) and its Content-Length (-1 when not sent)."""
        url = self._url(f"/v2/{repo}/blobs/{digest}")
        # Bytes as stored (a blob is compressed already); its digest is over exactly these.
        headers = {"Accept-Encoding": "identity"}
        resp = await self._request("GET", url, _scope(repo, "pull"), headers=headers, stream=True)
        try:
            if resp.status_code != 200:
                await resp.aread()
                if resp.status_code == 404:
                    raise RegistryError(
                        f"blob unknown: {digest}: {_error_text(resp) or 'blob unknown to registry'}"
                    )
                raise RegistryError(
                    f"fetching blob {digest} failed with status {resp.status_code}: {_error_text(resp)}"
                )
            length = resp.headers.get("content-length")
            yield _body_chunks(resp, digest), int(length) if length and length.isdigit() else -1
        finally:
            await resp.aclose()

    async def blob_exists(self, repo: str, digest: str) -> bool:
        url = self._url(f"/v2/{repo}/blobs/{digest}")
        resp = await self._request("HEAD", url, _scope(repo, "pull,push"))
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        if resp.status_code in (401, 403):
            raise Unauthorized("denied: requested access to the resource is denied")
        raise RegistryError(f"checking blob {digest} failed with status {resp.status_code}")

    async def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repo mount; True when the registry mounted it (201)."""
        scope = f"{_scope(repo, 'pull,push')} {_scope(from_repo, 'pull')}"
        url = self._url(f"/v2/{repo}/blobs/uploads/?" + urlencode({"mount": digest, "from": from_repo}))
        resp = await self._request("POST", url, scope, headers={"Content-Length": "0"})
        if resp.status_code == 201:
            return True
        if resp.status_code == 202:  # not mountable: the registry opened an upload; cancel it
            location = resp.headers.get("location")
            if location:
                await self._request("DELETE", self._url_from_location(location), _scope(repo, "pull,push"))
        return False

    def _url_from_location(self, location: str) -> str:
        return urljoin(self.base + "/", location)

    async def upload_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        chunks: AsyncIterator[bytes],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload a blob in chunks (POST, PATCH..., PUT ?digest=)."""
        scope = _scope(repo, "pull,push")
        resp = await self._request(
            "POST", self._url(f"/v2/{repo}/blobs/uploads/"), scope, headers={"Content-Length": "0"}
        )
        if resp.status_code in (401, 403):
            raise Unauthorized(_error_text(resp) or "denied: requested access to the resource is denied")
        if resp.status_code != 202 or "location" not in resp.headers:
            raise RegistryError(
                f"starting an upload to {repo} failed with status {resp.status_code}: {_error_text(resp)}"
            )
        location = self._url_from_location(resp.headers["location"])
        offset = 0
        buf = bytearray()

        async def send(data: bytes) -> None:
            nonlocal location, offset
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(data) - 1}",
                "Content-Length": str(len(data)),
            }
            r = await self._request("PATCH", location, scope, headers=headers, content=bytes(data))
            if r.status_code != 202:
                raise RegistryError(
                    f"uploading blob {digest} failed with status {r.status_code}: {_error_text(r)}"
                )
            location = self._url_from_location(r.headers.get("location", location))
            offset += len(data)
            if progress is not None:
                progress(offset)

        async for chunk in chunks:
            buf += chunk
            if len(buf) >= UPLOAD_CHUNK:
                await send(bytes(buf))
                buf.clear()
        if buf:
            await send(bytes(buf))
        sep = "&" if "?" in location else "?"
        r = await self._request(
            "PUT",
            location + sep + urlencode({"digest": digest}),
            scope,
            headers={"Content-Length": "0"},
            content=b"",
        )
        if r.status_code != 201:
            raise RegistryError(
                f"committing blob {digest} failed with status {r.status_code}: {_error_text(r)}"
            )

    async def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> str:
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        resp = await self._request(
            "PUT", url, _scope(repo, "pull,push"), headers={"Content-Type": media_type}, content=raw
        )
        if resp.status_code in (401, 403):
            raise Unauthorized(_error_text(resp) or "denied: requested access to the resource is denied")
        if resp.status_code not in (200, 201, 202):
            raise RegistryError(
                f"putting manifest {repo}:{reference} failed with status {resp.status_code}: "
                f"{_error_text(resp)}"
            )
        return "sha256:" + hashlib.sha256(raw).hexdigest()


async def _body_chunks(resp: httpx.Response, digest: str) -> AsyncIterator[bytes]:
    # The raw chunks, as the connection delivers them (no re-chunking); decoded only when a
    # server applied a content coding despite `Accept-Encoding: identity` (or when a transport
    # handed over a body read already).
    coded = resp.headers.get("content-encoding", "identity").lower() not in ("", "identity")
    try:
        async for chunk in resp.aiter_bytes() if coded or resp.is_stream_consumed else resp.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        raise RegistryError(f"reading blob {digest}: {_describe(exc)}") from exc


def verification_failed(digest: str, actual: str) -> str:
    """dockerd's message for a blob whose bytes do not match its digest."""
    return f"filesystem layer verification failed for digest {digest} (got {actual})"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, made once: loading the CA bundle takes ~20 ms,
    which every pull paid when each client made its own."""
    return httpx.create_ssl_context()


def _scope(repo: str, actions: str) -> str:
    return f"repository:{repo}:{actions}"


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"dial tcp: {text}"
    return text


def pull_error(ref_familiar: str, repo_path: str, exc: PydockError) -> PydockError:
    """Docker's wording for a failed manifest fetch."""
    if isinstance(exc, ManifestUnknown):
        return NotFound(f"manifest for {ref_familiar} not found: {exc}")
    if isinstance(exc, Unauthorized):
        # dockerd answers 404 here (not 401, which would make the CLI prompt for a login).
        return NotFound(
            f"pull access denied for {repo_path}, repository does not exist or may require "
            f"'docker login': {exc}"
        )
    return exc
