from __future__ import annotations

import pytest

from runtime import reference
from runtime.errors import InvalidParameter

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("given", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox", "busybox"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox", "busybox"),
        ("docker.io/busybox", "docker.io/library/busybox", "busybox"),
        ("index.docker.io/library/busybox:x", "docker.io/library/busybox:x", "busybox:x"),
        ("user/app", "docker.io/user/app", "user/app"),
        ("localhost/app", "localhost/app", "localhost/app"),
        ("localhost:5000/ns/x:1.0", "localhost:5000/ns/x:1.0", "localhost:5000/ns/x:1.0"),
        ("127.0.0.1:5000/ns/x", "127.0.0.1:5000/ns/x", "127.0.0.1:5000/ns/x"),
        ("quay.io/a/b/c:t", "quay.io/a/b/c:t", "quay.io/a/b/c:t"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
        (f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}", f"busybox:1@{DIGEST}"),
        ("[::1]:5000/x:y", "[::1]:5000/x:y", "[::1]:5000/x:y"),
        ("ab__c-d---e/f_g.h", "docker.io/ab__c-d---e/f_g.h", "ab__c-d---e/f_g.h"),
    ],
)
def test_parse_normalises(given: str, full: str, familiar: str) -> None:
    ref = reference.parse(given)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert reference.parse(full) == ref


def test_parts() -> None:
    ref = reference.parse("127.0.0.1:5000/ns/x:v1")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("127.0.0.1:5000", "ns/x", "v1", None)
    assert ref.tagged_or_latest().tag == "v1"
    assert reference.parse("busybox").tagged_or_latest().tag == "latest"
    assert reference.parse(f"busybox@{DIGEST}").tagged_or_latest().tag is None
    assert reference.registry_host(reference.parse("busybox")) == "registry-1.docker.io"


@pytest.mark.parametrize(
    "bad",
    ["", "Busybox", "busybox:", ":tag", "a//b", "-a", "busybox@sha256:abc", "x/Y", "a:b:c", "a b", "x/"],
)
def test_invalid(bad: str) -> None:
    with pytest.raises(InvalidParameter) as exc:
        reference.parse(bad)
    assert "invalid" in str(exc.value) or "must be lowercase" in str(exc.value)


def test_uppercase_message_and_hex() -> None:
    with pytest.raises(InvalidParameter, match=r"repository name \(library/Busybox\) must be lowercase"):
        reference.parse("Busybox")
    with pytest.raises(InvalidParameter, match="64-byte hexadecimal"):
        reference.parse("a" * 64)


def test_repository_name_and_tag() -> None:
    assert reference.parse_repository_name("docker.io/library/x").familiar() == "x"
    with pytest.raises(InvalidParameter):
        reference.parse_repository_name("x:1")
    assert reference.check_tag("v1.0_a-b") == "v1.0_a-b"
    with pytest.raises(InvalidParameter):
        reference.check_tag(".bad")
