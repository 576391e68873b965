"""schemathesis against pydock's own `openapi/openapi.json`, on a live pydockd.

Every operation that cannot reach outside the test daemon's roots is fuzzed with data that fits
the spec (positive: no 5xx, and status, content type, headers and body must match the spec) and
with data that does not (negative: no 5xx, and errors are Docker's `{"message"}`). Bounded in
count (`EXAMPLES` per operation and mode) and in time (`BUDGET_S` overall); the counts show in
the terminal summary.

Operations left out, and why:
- reach the network: `ImageCreate` (pull), `ImagePush`, `SystemAuth`, `DistributionInspect`;
- run a process from a fuzzed config (binds, devices, privileged): `ContainerStart`,
  `ContainerRestart`, `ContainerUnpause`; `ContainerAttach` (a hijacked stream);
- never end by design: `SystemEvents`.
Hostile archives for `ImageLoad`/`ImageCreate` import are `test_hostile_archives.py`.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzzstats import count
from tests.integration.daemon import REPO, Daemon, running_daemon

SPEC = REPO / "openapi" / "openapi.json"
SUITE = "schemathesis (live pydockd, openapi/openapi.json)"
EXAMPLES = 50
BUDGET_S = 90.0
REQUEST_TIMEOUT_S = 15.0

SAFE_OPERATIONS = (
    "SystemPing", "SystemPingHead", "SystemVersion", "SystemInfo", "BuildPrune",
    "ContainerCreate", "ContainerList", "ContainerPrune", "ContainerDelete", "ContainerInspect",
    "ContainerKill", "ContainerLogs", "ContainerPause", "ContainerRename", "ContainerResize",
    "ContainerStop", "ContainerWait",
    "ImageList", "ImageLoad", "ImagePrune", "ImageDelete", "ImageGet", "ImageGetAll",
    "ImageHistory", "ImageInspect", "ImageTag",
)  # fmt: skip
POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fuzz_daemon(busybox_tar: Path) -> Iterator[tuple[Daemon, str]]:
    """A pydockd of its own, also on plain TCP on loopback (schemathesis speaks TCP)."""
    port = _free_port()
    with running_daemon("-H", f"tcp://127.0.0.1:{port}", "--insecure-tcp") as d:
        d.docker("load", "-q", "-i", str(busybox_tar))
        d.docker("create", "--name", "fuzz-created", "busybox")
        yield d, f"http://127.0.0.1:{port}"


def _operations() -> list[Any]:
    schema = schemathesis.openapi.from_path(SPEC)
    wanted = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") in SAFE_OPERATIONS:
            wanted.append(operation)
    return wanted


# Operations that may remove what other operations are steered at run last.
DESTRUCTIVE_LAST = ("ContainerDelete", "ContainerPrune", "ImageDelete", "ImagePrune")
# Path parameters pointed at real objects now and then, so fuzzing reaches past the lookup.
# (Not ContainerWait: `next-exit` on a container that never runs waits by design.)
STEERED_REF = ("ContainerInspect", "ContainerLogs", "ContainerKill", "ContainerPause", "ContainerResize",
               "ContainerStop")  # fmt: skip
STEERED_IMAGE = ("ImageInspect", "ImageHistory", "ImageGet", "ImageTag")


def _operation_id(case_or_op: Any) -> str:
    operation = getattr(case_or_op, "operation", case_or_op)
    return str(operation.definition.raw.get("operationId"))


def _steer(case: Any, target: str | None) -> Any:
    """Point some cases at real objects: the busybox image, the `fuzz-created` container."""
    if target is None:
        return case
    op = _operation_id(case)
    if op == "ContainerCreate" and isinstance(case.body, dict):
        case.body["Image"] = "busybox"
    elif op in STEERED_REF and case.path_parameters:
        case.path_parameters["ref"] = "fuzz-created"
    elif op in STEERED_IMAGE and case.path_parameters:
        case.path_parameters["name"] = "busybox"
    return case


def test_schemathesis_finds_no_5xx_and_no_schema_violations(fuzz_daemon: tuple[Daemon, str]) -> None:
    daemon, base_url = fuzz_daemon
    operations = sorted(_operations(), key=lambda op: _operation_id(op) in DESTRUCTIVE_LAST)
    names = {op.definition.raw.get("operationId") for op in operations}
    assert names == set(SAFE_OPERATIONS), f"not in the spec: {set(SAFE_OPERATIONS) - names}"
    count(SUITE, "operations", len(operations))
    deadline = time.monotonic() + BUDGET_S
    failures: list[str] = []
    session = requests.Session()
    try:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if time.monotonic() > deadline:
                    break
                failures += _fuzz(operation, mode, base_url, session, deadline)
    finally:
        session.close()
    count(SUITE, "failures found", len(failures))
    assert daemon.raw_ping(), "the daemon stopped answering"
    assert not failures, "\n\n".join(failures[:10])


def _fuzz(
    operation: Any, mode: GenerationMode, base_url: str, session: requests.Session, deadline: float
) -> list[str]:
    failures: list[str] = []
    strategy = st.tuples(operation.as_strategy(generation_mode=mode), st.sampled_from([None, "real"]))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    @given(strategy)
    def run(args: tuple[Any, str | None]) -> None:
        if time.monotonic() > deadline:
            return
        case = _steer(*args)
        count(SUITE, "inputs tried")
        try:
            response = case.call(base_url=base_url, session=session, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            failures.append(
                f"{operation.label} ({mode}): {type(exc).__name__}: {exc}\n{case.as_curl_command()}"
            )
            return
        finally:
            count(SUITE, "requests sent")
        count(SUITE, f"answers {response.status_code // 100}xx")
        try:
            if mode is GenerationMode.POSITIVE:
                case.validate_response(response, checks=POSITIVE_CHECKS)
            else:
                case.validate_response(response, checks=[not_a_server_error])
                _check_docker_error(response)
        except AssertionError as exc:
            failures.append(f"{operation.label} ({mode}): {exc}")
        except FailureGroup as group:  # a BaseExceptionGroup of schemathesis' check failures
            failures.append(f"{operation.label} ({mode}): {group}")

    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()  # Unsatisfiable: nothing to negate, the operation takes no parameters and no body
    return failures


def _check_docker_error(response: requests.Response) -> None:
    """A refused request is `{"message": "..."}` (or empty for 304/HEAD), never FastAPI's shape."""
    if response.status_code < 400 or response.request.method == "HEAD":
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} is not JSON: {response.content[:200]!r}") from None
    if not (isinstance(body, dict) and set(body) == {"message"} and isinstance(body["message"], str)):
        raise AssertionError(f"{response.status_code} is not Docker's error format: {body!r}")


# --- raw request bytes ----------------------------------------------------------------------------

RAW_SUITE = "raw HTTP bytes (live pydockd)"
RAW_EXAMPLES = 150
# Only paths that cannot start anything or reach the network, whatever the rest of the bytes say.
RAW_PATHS = [
    b"/_ping", b"/v1.41/_ping", b"/v9.99/_ping", b"/v1.12/version", b"/version", b"/info",
    b"/containers/json", b"/images/json", b"/containers/create", b"/containers/fuzz-missing/attach",
    b"/containers/fuzz-missing/json", b"/images/load", b"/%00", b"/..%2f..%2fetc%2fpasswd", b"*", b"",
    b"/" + b"a" * 70000,
]  # fmt: skip
RAW_HEADERS = [
    b"Host: x", b"Host: x\r\nHost: y", b"Content-Length: 0", b"Content-Length: 5", b"Content-Length: -1",
    b"Content-Length: 99999999999999999999", b"Content-Length: 3\r\nContent-Length: 4",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked\r\nContent-Length: 3",
    b"Connection: Upgrade\r\nUpgrade: tcp", b"Connection: Upgrade\r\nUpgrade: websocket", b"Upgrade: h2c",
    b"Connection: close", b"Connection: keep-alive", b"Expect: 100-continue",
    b"Content-Type: application/json",
    b"Content-Type: application/x-tar", b"X-Registry-Auth: e30=", b"X-Registry-Auth: !!!notbase64",
    b"X-Folded: a\r\n b", b"Bad Header: x", b"X-Nul: a\x00b", b"X-Lf: a\nb", b"X-Long: " + b"v" * 300000,
]  # fmt: skip


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"G\x00T", b""]))
    path = draw(st.sampled_from(RAW_PATHS))
    if draw(st.booleans()):
        path += b"?" + draw(st.binary(max_size=40)).replace(b" ", b"+").replace(b"\r", b"").replace(
            b"\n", b""
        )
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b""]))
    headers = draw(st.lists(st.sampled_from(RAW_HEADERS), max_size=5))
    body = draw(
        st.one_of(
            st.binary(max_size=300),
            st.just(b"5\r\nhello\r\n0\r\n\r\n"),
            st.just(b'{"Image":"busybox","Cmd":["true"]}'),
            st.just(b"ffffffffffffffff\r\n"),
        )
    )
    tail = b"\r\n".join(headers) + b"\r\n\r\n" + body
    if tail and draw(st.booleans()):  # damage the headers or the body, never the request line
        pos = draw(st.integers(0, len(tail) - 1))
        tail = tail[:pos] + draw(st.binary(min_size=0, max_size=3)) + tail[pos + 1 :]
    return method + b" " + path + b" " + version + b"\r\n" + tail


def _exchange(sock_path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        with contextlib.suppress(OSError):
            s.sendall(data)
        out = b""
        s.settimeout(0.3)  # complete requests are answered at once; then half-close for the rest
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
            return out
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
        return out


STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/1\.1 (\d{3}) ")


def test_raw_request_bytes_get_no_5xx_and_the_daemon_survives(fuzz_daemon: tuple[Daemon, str]) -> None:
    daemon, _ = fuzz_daemon
    failures: list[str] = []

    @settings(
        max_examples=RAW_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    @given(raw_requests())
    def run(data: bytes) -> None:
        count(RAW_SUITE, "inputs tried")
        count(RAW_SUITE, "requests sent")
        answer = _exchange(daemon.sock, data)
        for status in STATUS_LINE.findall(answer):
            if int(status) >= 500:
                failures.append(f"{int(status)} for {data[:300]!r}:\n{answer[:500]!r}")
        if b"Traceback" in answer:
            failures.append(f"a traceback for {data[:300]!r}:\n{answer[:500]!r}")

    run()
    count(RAW_SUITE, "failures found", len(failures))
    assert daemon.raw_ping(), "the daemon stopped answering"
    assert not failures, "\n\n".join(failures[:10])
