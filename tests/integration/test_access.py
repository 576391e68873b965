"""Who may talk to the daemon: TLS startup errors, TLS 1.2+ only, hostile query and body values.

(Socket mode/group and mutual-TLS client refusal are in `test_daemon.py`.)
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.integration.daemon import PYDOCKD, Daemon, running_daemon
from tests.integration.test_daemon import _free_port, _make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    return _make_pki(root)


def _start(tmp_root: Path, *tls_args: str) -> subprocess.CompletedProcess[str]:
    port = _free_port()
    return subprocess.run(
        [str(PYDOCKD), "-H", f"tcp://127.0.0.1:{port}", "--data-root", str(tmp_root / "d"),
         "--exec-root", str(tmp_root / "e"), "--pidfile", str(tmp_root / "pid"), *tls_args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("missing-cert", "could not load TLS certificate"),
        ("garbage-cert", "could not load TLS certificate"),
        ("mismatched-key", "could not load TLS certificate"),
        ("missing-ca", "could not load TLS CA certificate"),
        ("garbage-ca", "could not load TLS CA certificate"),
    ],
)
def test_bad_tls_material_is_a_clear_startup_error(
    tmp_root: Path, pki: dict[str, Path], which: str, expected: str
) -> None:
    garbage = tmp_root / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    files = {"ca": pki["ca"], "cert": pki["server"], "key": pki["server-key"]}
    if which == "missing-cert":
        files["cert"] = tmp_root / "nope.pem"
    elif which == "garbage-cert":
        files["cert"] = garbage
    elif which == "mismatched-key":
        files["key"] = pki["client-key"]
    elif which == "missing-ca":
        files["ca"] = tmp_root / "nope-ca.pem"
    else:
        files["ca"] = garbage
    result = _start(tmp_root, "--tlsverify", "--tlscacert", str(files["ca"]), "--tlscert", str(files["cert"]),
                    "--tlskey", str(files["key"]))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def tls_daemon(pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Daemon, int]:
    port = _free_port()
    root = tmp_path_factory.mktemp("tlsd")
    with running_daemon("-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(pki["ca"]),
                        "--tlscert", str(pki["server"]), "--tlskey", str(pki["server-key"]),
                        root=root / "d") as d:  # fmt: skip
        yield d, port  # type: ignore[misc]


def _client_context(pki: dict[str, Path], version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki["ca"])
    ctx.load_cert_chain(pki["client"], pki["client-key"])
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer it; the server must say no
    return ctx


def _ping_over_tls(port: int, ctx: ssl.SSLContext) -> tuple[str, bytes]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
        return str(tls.version()), data


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_are_served(
    tls_daemon: tuple[Daemon, int], pki: dict[str, Path], version: ssl.TLSVersion
) -> None:
    _, port = tls_daemon
    negotiated, data = _ping_over_tls(port, _client_context(pki, version))
    assert negotiated == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    assert data.endswith(b"OK")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1.0", "tls1.1"])
def test_tls_below_12_is_refused(
    tls_daemon: tuple[Daemon, int], pki: dict[str, Path], version: ssl.TLSVersion
) -> None:
    daemon, port = tls_daemon
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _ping_over_tls(port, _client_context(pki, version))
    assert daemon.raw_ping()


# --- hostile values in query strings and bodies ------------------------------------------------------


@pytest.fixture(scope="module")
def tty_container(daemon: Daemon) -> str:
    name = "hostile-params-tty"
    daemon.docker("run", "-d", "-t", "--name", name, "busybox", "sleep", "300")
    yield name  # type: ignore[misc]
    daemon.docker("rm", "-f", name, check=False)


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("POST", "/containers/{c}/resize?h=99999999&w=10", None, "invalid terminal size"),
        ("POST", "/containers/{c}/resize?h=-1&w=10", None, "invalid terminal size"),
        ("POST", "/containers/{c}/resize?h=abc&w=10", None, "invalid parameter"),
        ("POST", "/containers/{c}/kill?signal=65", None, "does not support signal 65"),
        ("POST", "/containers/{c}/kill?signal=SIGNOPE", None, "Invalid signal: SIGNOPE"),
        ("POST", "/containers/{c}/kill?signal=0", None, "Invalid signal: 0"),
        ("POST", "/containers/{c}/stop?t=soon", None, "invalid parameter"),
        ("POST", "/containers/{c}/rename?name=a%20b", None, "Invalid container name"),
        ("POST", "/containers/{c}/rename?name=..", None, "Invalid container name"),
        ("POST", "/containers/{c}/wait?condition=never", None, "invalid condition"),
        ("GET", "/containers/{c}/logs?stdout=1&tail=some", None, "invalid tail value"),
        ("GET", "/containers/{c}/logs?stdout=1&since=yesterday", None, "invalid time value"),
        ("GET", "/containers/json?filters=%7Bnot-json", None, "invalid filter"),
        ("GET", "/containers/json?limit=many", None, "invalid parameter"),
        ("POST", "/containers/create?name=a/b", {"Image": "busybox"}, "Invalid container name"),
        ("POST", "/containers/create", {"Image": "busybox", "HostConfig": {"Memory": 2**70}}, "int64"),
        ("POST", "/containers/create", {"Image": "busybox", "StopTimeout": -(2**70)}, "int64"),
        ("POST", "/containers/create", {"Image": "busybox", "StopSignal": "SIGNOPE"}, "Invalid signal"),
        ("POST", "/containers/create", b"{not json", "invalid JSON"),
        ("POST", "/images/busybox/tag?repo=UPPER", None, "must be lowercase"),
        ("POST", "/images/busybox/tag?repo=ok&tag=-bad", None, "invalid reference format"),
        ("GET", "/events?since=someday", None, "invalid time value"),
        ("GET", "/events?filters=%7B%22nope%22%3A%5B%22x%22%5D%7D", None, "invalid filter 'nope'"),
    ],
)
def test_hostile_values_are_docker_400s(
    daemon: Daemon, tty_container: str, method: str, path: str, body: object, message: str
) -> None:
    kwargs: dict[str, object] = {}
    if isinstance(body, bytes):
        kwargs = {"content": body, "headers": {"Content-Type": "application/json"}}
    elif body is not None:
        kwargs = {"json": body}
    r = daemon.request(method, path.format(c=tty_container), **kwargs)  # type: ignore[arg-type]
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"message"}
    assert message in r.json()["message"]
