"""Image references: parsing, normalisation and the familiar form shown to users.

`busybox` is `docker.io/library/busybox:latest`; `127.0.0.1:5000/ns/x@sha256:..` keeps its
registry. The grammar is distribution/reference's (what dockerd and the CLI use), so the same
strings are accepted and refused, with the same `invalid reference format` wording.

This module is pure: no I/O, no pydock imports but errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.errors import InvalidParameter

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

# Anchored like distribution's ReferenceRegexp: name, optional :tag, optional @digest.
_REFERENCE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_ANCHORED_NAME = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_ONLY = re.compile(rf"^{_TAG}$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_SHA256_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


class InvalidReference(InvalidParameter):
    def __init__(self, detail: str = "") -> None:
        super().__init__("invalid reference format" + (f": {detail}" if detail else ""))


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised reference: `domain/path[:tag][@digest]` with Docker Hub defaults applied."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full repository name, `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as users write it: `busybox`, `user/app`, `127.0.0.1:5000/x`."""
        if self.domain == DEFAULT_DOMAIN:
            return self.path.removeprefix(OFFICIAL_PREFIX)
        return self.name

    def __str__(self) -> str:
        return self.name + self._suffix()

    def familiar(self) -> str:
        """`busybox:latest`, `busybox@sha256:...` - what `docker images` and messages show."""
        return self.familiar_name + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def repository(self) -> Reference:
        return Reference(self.domain, self.path)

    def tagged_or_latest(self) -> Reference:
        """Add `:latest` when there is neither tag nor digest (TagNameOnly)."""
        if self.tag is None and self.digest is None:
            return Reference(self.domain, self.path, DEFAULT_TAG)
        return self

    @property
    def is_official(self) -> bool:
        return self.domain == DEFAULT_DOMAIN and self.path.startswith(OFFICIAL_PREFIX)


def _split_domain(name: str) -> tuple[str, str]:
    """distribution's splitDockerDomain: the first component is a registry host when it looks
    like one (has `.` or `:`, is `localhost`, or has upper case)."""
    head, sep, rest = name.partition("/")
    if not sep or ("." not in head and ":" not in head and head != "localhost" and head.lower() == head):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = head, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(ref: str) -> Reference:
    """Parse and normalise what a user typed (ParseNormalizedNamed); no default tag is added.

    Raises InvalidReference (400) with Docker's wording.
    """
    if not ref:
        raise InvalidReference()
    if _HEX64.match(ref):
        raise InvalidParameter(f"invalid repository name ({ref}), cannot specify 64-byte hexadecimal strings")
    name_part, tag_and_digest = _cut_name(ref)
    domain, remainder = _split_domain(name_part)
    if remainder.lower() != remainder:
        raise InvalidReference(f"repository name ({remainder}) must be lowercase")
    normalised = f"{domain}/{remainder}{tag_and_digest}"
    m = _REFERENCE.match(normalised)
    if m is None:
        raise InvalidReference()
    if len(m.group("name")) > NAME_TOTAL_MAX:
        raise InvalidReference(f"repository name must not be more than {NAME_TOTAL_MAX} characters")
    digest = m.group("digest")
    if digest is not None and not _SHA256_DIGEST.match(digest):
        raise InvalidParameter(f"unsupported digest algorithm or format: {digest}")
    return Reference(domain, remainder, m.group("tag"), digest)


def _cut_name(ref: str) -> tuple[str, str]:
    """Split `name` from `:tag@digest` (a `:` after the last `/` starts the tag)."""
    at = ref.find("@")
    before_digest = ref if at < 0 else ref[:at]
    digest_part = "" if at < 0 else ref[at:]
    colon = before_digest.rfind(":")
    if colon > before_digest.rfind("/"):
        return before_digest[:colon], before_digest[colon:] + digest_part
    return before_digest, digest_part


def parse_repository_name(name: str) -> Reference:
    """A bare repository (no tag, no digest), e.g. the `repo` of `POST /images/{id}/tag`."""
    ref = parse(name)
    if ref.tag is not None or ref.digest is not None:
        raise InvalidReference()
    return ref


def check_tag(tag: str) -> str:
    if not _TAG_ONLY.match(tag):
        raise InvalidReference()
    return tag


def is_name_only(value: str) -> bool:
    """True when `value` is syntactically a repository name without tag or digest."""
    return _ANCHORED_NAME.match(value) is not None


def is_digest(value: str) -> bool:
    return _SHA256_DIGEST.match(value) is not None


def familiar(full: str) -> str:
    """Familiar form of a stored normalised reference string."""
    try:
        return parse(full).familiar()
    except InvalidParameter:
        return full


def registry_host(ref: Reference) -> str:
    """The host[:port] to talk to for this reference's domain."""
    return "registry-1.docker.io" if ref.domain == DEFAULT_DOMAIN else ref.domain
