"""The daemon itself through real clients: docker CLI, docker-py, curl; listeners, TLS, fd://."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemon import PYDOCKD, Daemon, running_daemon, wait_for


def test_cli_version_and_info(fresh_daemon: Daemon) -> None:
    out = fresh_daemon.docker("version", "--format", "{{json .}}").stdout
    version = json.loads(out)
    assert version["Server"]["ApiVersion"] == "1.41"
    assert version["Server"]["Version"] == "0.1.0"
    assert version["Server"]["Platform"]["Name"].startswith("pydock")
    info = json.loads(fresh_daemon.docker("info", "--format", "{{json .}}").stdout)
    assert info["DockerRootDir"] == str(fresh_daemon.data_root)
    assert info["NCPU"] >= 1
    assert not info.get("ServerErrors")


def test_docker_py_ping_and_version(fresh_daemon: Daemon) -> None:
    client = fresh_daemon.client()
    try:
        assert client.ping() is True
        assert client.version()["ApiVersion"] == "1.41"
        assert client.info()["Driver"] == "overlay2"
    finally:
        client.close()


def test_curl_ping(fresh_daemon: Daemon) -> None:
    out = subprocess.run(["curl", "-s", "--unix-socket", str(fresh_daemon.sock), "http://x/v1.41/_ping"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out == "OK"


def test_socket_mode_and_group(tmp_root: Path) -> None:
    with running_daemon("-G", "daemon", root=tmp_root / "d") as d:
        st = d.sock.stat()
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        import grp

        assert st.st_gid == grp.getgrnam("daemon").gr_gid
        assert st.st_uid == 0


def test_second_daemon_on_same_socket_refuses(fresh_daemon: Daemon, tmp_root: Path) -> None:
    result = subprocess.run(
        [str(PYDOCKD), "-H", fresh_daemon.host, "--data-root", str(tmp_root / "d"),
         "--exec-root", str(tmp_root / "e")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "already listening" in result.stderr
    assert fresh_daemon.request("GET", "/_ping").text == "OK"


def test_plain_tcp_refused_without_force(tmp_root: Path) -> None:
    result = subprocess.run(
        [str(PYDOCKD), "-H", "tcp://127.0.0.1:0", "--data-root", str(tmp_root / "d"),
         "--exec-root", str(tmp_root / "e")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "without mutual TLS" in result.stderr


@pytest.mark.parametrize("address", ["0.0.0.0", "[::]", "192.0.2.1"])
def test_plain_tcp_refused_off_loopback_even_when_forced(tmp_root: Path, address: str) -> None:
    """--insecure-tcp is for loopback only; a TLS server without client certificates is no better."""
    for extra in (["--insecure-tcp"], ["--insecure-tcp", "--tls"]):
        result = subprocess.run(
            [str(PYDOCKD), "-H", f"tcp://{address}:0", "--data-root", str(tmp_root / "d"),
             "--exec-root", str(tmp_root / "e"), *extra],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert "without mutual TLS" in result.stderr and "only for loopback" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_pki(root: Path) -> dict[str, Path]:
    """A CA, a server cert for 127.0.0.1 and a client cert, with openssl."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=pydock-test-ca",
    )
    (root / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (root / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{who}-key.pem",
            "-out",
            f"{who}.csr",
            "-subj",
            f"/CN={who}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{who}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            f"{who}.pem",
            "-days",
            "2",
            "-extfile",
            f"{who}.ext",
        )
    # a client cert from a CA the daemon does not trust
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "rogue-key.pem",
        "-out",
        "rogue.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rogue",
    )
    return {
        name: root / f"{name}.pem"
        for name in ("ca", "server", "server-key", "client", "client-key", "rogue", "rogue-key")
    }


def test_mutual_tls(tmp_root: Path) -> None:
    pki_dir = tmp_root / "pki"
    pki_dir.mkdir()
    pki = _make_pki(pki_dir)
    port = _free_port()
    with running_daemon("-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(pki["ca"]),
                        "--tlscert", str(pki["server"]), "--tlskey", str(pki["server-key"]),
                        root=tmp_root / "d") as d:  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(tmp_root / "cfg")
        base = ["docker", "--tlsverify", "--tlscacert", str(pki["ca"]), "-H", f"tcp://127.0.0.1:{port}"]
        ok = subprocess.run([*base, "--tlscert", str(pki["client"]), "--tlskey", str(pki["client-key"]),
                             "version", "--format", "{{.Server.APIVersion}}"],
                            capture_output=True, text=True, env=env, timeout=60, check=False)  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == "1.41"
        (tmp_root / "empty").mkdir()
        no_cert = subprocess.run(
            ["docker", "-H", f"tcp://127.0.0.1:{port}", "--tls", "--tlscacert", str(pki["ca"]), "version"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert no_cert.returncode != 0
        rogue = subprocess.run([*base, "--tlscert", str(pki["rogue"]), "--tlskey", str(pki["rogue-key"]),
                                "version"], capture_output=True, text=True, env=env, timeout=60,
                               check=False)  # fmt: skip
        assert rogue.returncode != 0
        assert d.request("GET", "/_ping").text == "OK"  # the unix socket still serves


def test_fd_socket_activation(tmp_root: Path) -> None:
    """systemd-style activation: a listening socket as fd 3 with LISTEN_FDS/LISTEN_PID."""
    path = tmp_root / "act.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    fd = listener.fileno()
    d = Daemon(tmp_root / "d")
    d.root.mkdir()
    args = [a if a != d.host else "fd://" for a in d.args()]

    # a tiny exec wrapper puts the socket on fd 3 and exports its own PID, which execv keeps
    code = (
        "import os, sys; fd = int(sys.argv[1]); "
        "(fd != 3) and (os.dup2(fd, 3), os.close(fd)); "
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); os.execv(sys.argv[2], sys.argv[2:])"
    )
    wrapper = [sys.executable, "-c", code, str(fd), *args]
    with open(d.log_path, "wb") as log:
        proc = subprocess.Popen(wrapper, pass_fds=(fd,), stdout=subprocess.DEVNULL, stderr=log)
    listener.close()
    try:

        def ping() -> bool:
            r = subprocess.run(["curl", "-s", "--unix-socket", str(path), "http://x/_ping"],
                               capture_output=True, text=True, check=False)  # fmt: skip
            return r.stdout == "OK"

        wait_for(ping, 30, "activated pydockd")
        out = subprocess.run(["docker", "-H", f"unix://{path}", "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, timeout=60, check=True,
                             env=dict(os.environ, DOCKER_CONFIG=str(tmp_root / "cfg"))).stdout  # fmt: skip
        assert out.strip() == "0.1.0"
    finally:
        proc.terminate()
        proc.wait(30)
        d.cleanup_host()


@pytest.mark.parametrize("path", ["/v1.41/definitely/not/here", "/definitely/not/here"])
def test_unknown_paths_are_docker_404(fresh_daemon: Daemon, path: str) -> None:
    r = fresh_daemon.request("GET", path)
    assert r.status_code == 404
    assert r.json() == {"message": "page not found"}
