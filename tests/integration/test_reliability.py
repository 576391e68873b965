"""Reliability: daemon restarts keep containers, crashes mid-operation leave consistent state,
concurrency, and `pydockctl`."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon, running_daemon, wait_for

REPO = Path(__file__).resolve().parents[2]
FAILPOINT = REPO / "tests" / "failpoint" / "runtime"
LOGGER = "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.01; done"


def uniq(prefix: str = "r") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def loaded(fresh_daemon: Daemon, busybox_tar: Path) -> Daemon:
    fresh_daemon.docker("load", "-q", "-i", str(busybox_tar))
    return fresh_daemon


def state(d: Daemon, ref: str) -> dict:  # type: ignore[type-arg]
    return json.loads(d.docker("inspect", "--format", "{{json .State}}", ref).stdout)  # type: ignore[no-any-return]


def log_numbers(d: Daemon, ref: str) -> list[int]:
    return [int(line.split("-")[1]) for line in d.docker("logs", ref).stdout.decode().split()]


def assert_contiguous(numbers: list[int]) -> None:
    assert numbers, "no log lines"
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "a log line was lost or duplicated"
    assert numbers[0] == 0


def _published_get(d: Daemon, name: str) -> bytes:
    port = d.docker("port", name, "80/tcp").stdout.decode().split(":")[-1].strip()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=5) as r:
        return r.read()  # type: ignore[no-any-return]


def _container_ip(d: Daemon, name: str) -> str:
    return d.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.decode().strip()


def _direct_get(ip: str) -> bytes:
    with urllib.request.urlopen(f"http://{ip}/passwd", timeout=5) as r:
        return r.read()  # type: ignore[no-any-return]


def test_sigkill_keeps_containers_and_their_output(loaded: Daemon) -> None:
    """Issue 7's acceptance test: 20 containers (some publishing ports, some logging every 10 ms),
    the daemon SIGKILLed for 3 s: all still run and are listed, ports answer, no log line is lost
    or duplicated, stop and kill work, and the exit codes are the real ones."""
    d = loaded
    names = [uniq() for _ in range(20)]
    served = names[1::4]
    for i, n in enumerate(names):
        args = ["-p", "127.0.0.1::80"] if n in served else []
        cmd = (
            LOGGER
            if i % 2 == 0
            else "trap 'exit 3' TERM; httpd -p 80 -h /etc; while true; do sleep 0.05; done"
        )
        d.docker("run", "-d", "--name", n, *args, "busybox", "sh", "-c", cmd)
    for n in served:
        wait_for(lambda n=n: b"root:" in _published_get(d, n), 10, "httpd to answer")  # type: ignore[misc]
    ips = {n: _container_ip(d, n) for n in served}
    time.sleep(0.3)
    d.kill()
    for n in served:  # while the daemon is away, the bridge still carries traffic
        assert b"root:" in _direct_get(ips[n])
    time.sleep(3)
    d.start()
    running = set(d.docker("ps", "--format", "{{.Names}}").stdout.decode().split())
    assert set(names) <= running
    for n in served:
        assert b"root:" in _published_get(d, n)
        assert b"root:" in _direct_get(ips[n])
    time.sleep(0.3)
    for n in names[::2]:
        numbers = log_numbers(d, n)
        assert_contiguous(numbers)
        assert len(numbers) > 300  # kept logging (into the pipe) while the daemon was away
    # stop works and the exit codes are the real ones
    d.docker("stop", "-t", "5", *names[1::2])
    for n in names[1::2]:
        assert state(d, n)["ExitCode"] == 3
    d.docker("kill", names[0])
    assert state(d, names[0])["ExitCode"] == 137
    d.docker("rm", "-f", *names)


def test_sigterm_without_live_restore_stops_gracefully(loaded: Daemon) -> None:
    d = loaded
    n = uniq()
    d.docker(
        "run", "-d", "--name", n, "busybox", "sh", "-c", "trap 'exit 5' TERM; while true; do sleep 0.05; done"
    )
    assert d.stop(signal.SIGTERM) == 0
    d.start()
    s = state(d, n)
    assert s["Status"] == "exited"
    assert s["ExitCode"] == 5
    d.docker("rm", n)


def test_sigterm_with_live_restore_keeps_running(tmp_root: Path, busybox_tar: Path) -> None:
    with running_daemon("--live-restore", root=tmp_root / "d") as d:
        d.docker("load", "-q", "-i", str(busybox_tar))
        n = uniq()
        d.docker("run", "-d", "--name", n, "busybox", "sh", "-c", LOGGER)
        pid = state(d, n)["Pid"]
        assert d.stop(signal.SIGTERM) == 0
        assert Path(f"/proc/{pid}").exists()
        time.sleep(0.5)
        d.start()
        assert state(d, n)["Running"] is True
        assert state(d, n)["Pid"] == pid
        assert_contiguous(log_numbers(d, n))
        d.docker("rm", "-f", n)


def test_restart_policy_applies_to_containers_that_died_while_away(loaded: Daemon) -> None:
    d = loaded
    n = uniq()
    d.docker("run", "-d", "--name", n, "--restart", "always", "busybox", "sleep", "300")
    pid = state(d, n)["Pid"]
    d.kill()
    os.kill(pid, signal.SIGKILL)
    d.start()
    wait_for(lambda: state(d, n)["Running"], 15, "the always-container to come back")
    assert state(d, n)["Pid"] != pid
    d.docker("rm", "-f", n)


@pytest.fixture
def failpoint_daemon(tmp_root: Path, busybox_tar: Path) -> Iterator[tuple[Daemon, Path]]:
    control = tmp_root / "failpoint"
    with running_daemon(
        "--add-runtime", f"failpoint={FAILPOINT}", "--default-runtime", "failpoint",
        root=tmp_root / "d", env={"PYDOCK_FAILPOINT_FILE": str(control)},
    ) as d:  # fmt: skip
        d.docker("load", "-q", "-i", str(busybox_tar))
        yield d, control


def _owned_leftovers(d: Daemon) -> tuple[int, int]:
    mounts = sum(1 for line in Path("/proc/self/mountinfo").read_text().splitlines()
                 if str(d.exec_root) in line.split()[4])  # fmt: skip
    runtime_root = d.exec_root / "runtime"
    states = len(list(runtime_root.iterdir())) if runtime_root.is_dir() else 0
    return mounts, states


def test_sigkill_during_start_is_cleaned_up(failpoint_daemon: tuple[Daemon, Path]) -> None:
    d, control = failpoint_daemon
    n = uniq()
    d.docker("create", "--name", n, "busybox", "sleep", "300")
    control.write_text("run kill-daemon\n")
    r = d.docker("start", n, check=False)
    assert r.returncode != 0  # the daemon died under the request
    wait_for(lambda: d.proc is not None and d.proc.poll() is not None, 10, "the daemon to die")
    d.proc = None
    d.start()
    s = state(d, n)
    assert s["Status"] in ("created", "exited")
    assert s["Running"] is False
    assert _owned_leftovers(d) == (0, 0)
    d.docker("start", n)  # and it starts normally now
    assert state(d, n)["Running"] is True
    d.docker("rm", "-f", n)
    assert _owned_leftovers(d) == (0, 0)


def test_sigkill_during_stop_is_cleaned_up(failpoint_daemon: tuple[Daemon, Path]) -> None:
    d, control = failpoint_daemon
    n = uniq()
    d.docker("run", "-d", "--name", n, "busybox", "sleep", "300")
    control.write_text("delete kill-daemon\n")  # dies while tearing the stopped container down
    d.docker("stop", "-t", "0", n, check=False)
    wait_for(lambda: d.proc is not None and d.proc.poll() is not None, 10, "the daemon to die")
    d.proc = None
    d.start()
    s = state(d, n)
    assert s["Status"] == "exited"
    assert _owned_leftovers(d) == (0, 0)
    d.docker("start", n)
    assert state(d, n)["Running"] is True
    d.docker("rm", "-f", n)
    assert _owned_leftovers(d) == (0, 0)


def test_runtime_failure_is_clear_and_leaves_nothing(failpoint_daemon: tuple[Daemon, Path]) -> None:
    d, control = failpoint_daemon
    control.write_text("run fail\n")
    r = d.docker("run", "--rm", "busybox", "true", check=False)
    assert r.returncode == 125
    assert b"failpoint: injected run failure" in r.stderr
    assert _owned_leftovers(d) == (0, 0)
    control.unlink()
    assert d.docker("run", "--rm", "busybox", "echo", "ok").stdout == b"ok\n"


def test_sigkill_during_create_and_rm(loaded: Daemon) -> None:
    """Crash while many creates and removals are in flight: the restarted daemon lists a consistent set."""
    d = loaded
    names = [uniq() for _ in range(10)]
    for n in names[:5]:
        d.docker("create", "--name", n, "busybox", "true")

    def create(n: str) -> None:
        d.docker("create", "--name", n, "busybox", "true", check=False)

    def remove(n: str) -> None:
        d.docker("rm", n, check=False)

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(create, n) for n in names[5:]] + [pool.submit(remove, n) for n in names[:5]]
        time.sleep(0.05)
        d.kill()
        for f in futures:
            f.result()
    d.start()
    listed = json.loads(d.request("GET", "/v1.41/containers/json", params={"all": 1}).text)
    for item in listed:
        # every listed container is whole: inspect works, its files are there
        body = json.loads(d.docker("inspect", item["Id"]).stdout)[0]
        assert body["Name"] == item["Names"][0]
    leftovers = [p.name for p in (d.data_root / "containers").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    for item in listed:
        d.docker("rm", "-f", item["Id"])


def test_concurrent_runs_removes_and_name_races(loaded: Daemon) -> None:
    d = loaded
    names = [uniq("cc") for _ in range(50)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda n: d.docker("run", "-d", "--name", n, "busybox", "sleep", "60",
                                                   check=False), names))  # fmt: skip
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    running = set(d.docker("ps", "--format", "{{.Names}}").stdout.decode().split())
    assert set(names) <= running
    # 20 racers for one name: exactly one wins, the others get the 409 text
    racer = uniq("race")

    def create_racer(_: int) -> subprocess.CompletedProcess[bytes]:
        return d.docker("create", "--name", racer, "busybox", "true", check=False)

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(create_racer, range(20)))
    assert sum(r.returncode == 0 for r in outcomes) == 1
    assert all(b"is already in use by container" in r.stderr for r in outcomes if r.returncode)
    with ThreadPoolExecutor(16) as pool:
        removed = list(pool.map(lambda n: d.docker("rm", "-f", n, check=False), [*names, racer]))
    assert all(r.returncode == 0 for r in removed)
    assert d.docker("ps", "-aq").stdout == b""


def test_pydockctl(loaded: Daemon, tmp_root: Path) -> None:
    d = loaded
    n = uniq()
    cid = d.docker("run", "-d", "--name", n, "busybox", "sleep", "60").stdout.decode().strip()
    base = [str(REPO / ".venv" / "bin" / "pydockctl"), "--data-root", str(d.data_root),
            "--exec-root", str(d.exec_root), "--iptables-chain-prefix", d.chain_prefix]  # fmt: skip

    def ctl(*args: str) -> str:
        return subprocess.run([*base, *args], capture_output=True, text=True, check=True, timeout=30).stdout

    ps = ctl("ps")
    assert cid[:12] in ps and "running" in ps and "yes" in ps
    report = json.loads(ctl("inspect", n))
    assert report["init"]["alive"] is True
    assert report["runtime_state"]["status"] == "running"
    assert report["bundle_files"] and "config.json" in report["bundle_files"]
    assert any(m["type"] == "overlay" for m in report["mounts"])
    assert "overlay" in ctl("mounts")
    d.docker("rm", "-f", n)
    # a raw bundle through the runtime
    bundle = tmp_root / "bundle"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    subprocess.run(["cp", "/bin/busybox", str(bundle / "rootfs" / "bin" / "busybox")], check=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/busybox", "echo", "raw-bundle-ok"]
    (bundle / "config.json").write_text(json.dumps(spec))
    out = subprocess.run([*base, "run", str(bundle)], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "raw-bundle-ok"


def test_tty_container_survives_a_daemon_crash(loaded: Daemon) -> None:
    """The pty master outlives the daemon in the fd keeper: the shell gets no SIGHUP."""
    d = loaded
    n = uniq()
    d.docker("run", "-dit", "--name", n, "busybox", "sh")
    pid = state(d, n)["Pid"]
    d.kill()
    time.sleep(1)
    assert Path(f"/proc/{pid}").exists()
    d.start()
    assert state(d, n)["Running"] is True
    client = d.client()
    try:
        sock = client.api.attach_socket(n, params={"stdin": 1, "stdout": 1, "stream": 1})
        raw = sock._sock
        raw.settimeout(10)
        raw.sendall(b"echo still-$((20+1))\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"still-21" not in got and time.monotonic() < deadline:
            got += raw.recv(4096)
        assert b"still-21" in got
        sock.close()
        raw.close()
    finally:
        client.close()
    d.docker("rm", "-f", n)
    assert not (d.exec_root / "fdkeeper.json").exists()  # the keeper went with the last TTY container


def test_full_disk_gives_clear_errors_and_recovers(tmp_root: Path, busybox_tar: Path) -> None:
    data = tmp_root / "d" / "data"
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(data)], check=True)
    try:
        with running_daemon(root=tmp_root / "d") as d:
            d.docker("load", "-q", "-i", str(busybox_tar))
            logger = uniq()
            d.docker("run", "-d", "--name", logger, "busybox", "sh", "-c", LOGGER)
            filler = data / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=100"],
                           capture_output=True, check=False)  # fmt: skip
            r = d.docker("run", "--rm", "busybox", "true", check=False)
            assert r.returncode == 125
            assert b"no space left on device" in r.stderr.lower()
            # the daemon keeps serving and the running container keeps running
            assert logger in d.docker("ps", "--format", "{{.Names}}").stdout.decode()
            time.sleep(0.3)
            filler.unlink()
            assert d.docker("run", "--rm", "busybox", "echo", "recovered").stdout == b"recovered\n"
            assert state(d, logger)["Running"] is True
            assert not [p for p in (d.data_root / "containers").iterdir() if p.name.startswith(".")]
            d.docker("rm", "-f", logger)
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_clients_that_disconnect_mid_stream_leave_nothing(loaded: Daemon) -> None:
    import socket as socketlib

    d = loaded
    n = uniq()
    d.docker("run", "-d", "--name", n, "busybox", "sh", "-c", LOGGER)

    def counts() -> tuple[int, int]:
        info = d.json("GET", "/v1.41/info")
        return int(info["NGoroutines"]), len(os.listdir(f"/proc/{d.pid}/fd"))

    before = counts()
    requests = [
        f"GET /v1.41/containers/{n}/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1.41/events HTTP/1.1\r\nHost: x\r\n\r\n",
        f"POST /v1.41/containers/{n}/wait HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        f"POST /v1.41/containers/{n}/attach?stream=1&stdout=1&stdin=1 HTTP/1.1\r\nHost: x\r\n"
        "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n",
    ]
    for _ in range(5):
        socks = []
        for req in requests:
            s = socketlib.socket(socketlib.AF_UNIX)
            s.connect(str(d.sock))
            s.sendall(req.encode())
            assert s.recv(12).startswith(b"HTTP/1.1 ")
            socks.append(s)
        for s in socks:
            s.close()
    wait_for(lambda: counts() <= before, 10, "tasks and fds back to the baseline")
    assert state(d, n)["Running"] is True
    d.docker("rm", "-f", n)


def _tmp_leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".tmp-*")]


def _kill_during(d: Daemon, delay_s: float, operation: Callable[[], object]) -> None:
    """Run `operation` against the daemon and SIGKILL the daemon `delay_s` into it."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(operation)
        time.sleep(delay_s)
        d.kill()
        with contextlib.suppress(Exception):
            future.result(timeout=60)
    d.start()


@pytest.mark.parametrize("delay_s", [0.0, 0.02, 0.08])
def test_sigkill_during_load_commit_and_connect(loaded: Daemon, tmp_root: Path, delay_s: float) -> None:
    """Crash mid-operation: the restarted daemon reports a consistent state and the operation can
    be done again; nothing half-made stays registered or on disk."""
    d = loaded
    # load: a multi-MB archive of a fresh image
    archive = tmp_root / "big.tar"
    base = uniq("big")
    d.docker("run", "--name", base, "busybox", "dd", "if=/dev/urandom", "of=/blob", "bs=1M", "count=24")
    d.docker("commit", base, f"{base}:v1")
    d.docker("save", "-o", str(archive), f"{base}:v1")
    d.docker("rmi", f"{base}:v1")
    _kill_during(d, delay_s, lambda: d.docker("load", "-q", "-i", str(archive), check=False))
    images = d.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode().split()
    if f"{base}:v1" in images:
        assert d.docker("run", "--rm", f"{base}:v1", "test", "-s", "/blob").returncode == 0
    d.docker("load", "-q", "-i", str(archive))
    assert d.docker("run", "--rm", f"{base}:v1", "test", "-s", "/blob").returncode == 0
    # commit of a container with a big upper dir
    image = f"{base}-c:v1"
    _kill_during(d, delay_s, lambda: d.docker("commit", base, image, check=False))
    assert d.docker("inspect", base).returncode == 0  # the container is still there
    if d.docker("image", "inspect", image, check=False).returncode == 0:
        assert d.docker("run", "--rm", image, "test", "-s", "/blob").returncode == 0
    d.docker("commit", base, image)
    assert d.docker("run", "--rm", image, "test", "-s", "/blob").returncode == 0
    # network connect of a running container
    net = uniq("net")
    d.docker("network", "create", net)
    runner = uniq()
    d.docker("run", "-d", "--name", runner, "busybox", "sleep", "300")
    _kill_during(d, delay_s, lambda: d.docker("network", "connect", net, runner, check=False))
    attached = json.loads(d.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", runner).stdout)
    members = json.loads(d.docker("network", "inspect", "-f", "{{json .Containers}}", net).stdout) or {}
    cid = json.loads(d.docker("inspect", runner).stdout)[0]["Id"]
    assert (net in attached) == (cid in members)  # both views agree
    if net not in attached:
        d.docker("network", "connect", net, runner)
    d.docker("network", "disconnect", net, runner)
    d.docker("rm", "-f", runner, base)
    d.docker("network", "rm", net)
    d.docker("rmi", "-f", f"{base}:v1", image)
    assert _tmp_leftovers(d.data_root) == []
