"""Health checks end to end: `--health-*` flags and an image's HEALTHCHECK, `State.Health`,
`docker ps` status and `--filter health=`, `health_status` events, probe timeouts, pause/stop."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from runtime.busybox_image import build_archive
from tests.integration.daemon import Daemon, wait_for

FAST = ["--health-interval", "300ms", "--health-timeout", "2s"]


def uniq(prefix: str = "hc") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def health(daemon: Daemon, name: str) -> dict[str, Any] | None:
    state = json.loads(daemon.docker("inspect", name).stdout)[0]["State"]
    return state.get("Health")  # type: ignore[no-any-return]


def status_of(daemon: Daemon, name: str) -> str:
    return (
        daemon.docker("ps", "-a", "--filter", f"name={name}", "--format", "{{.Status}}")
        .stdout.decode()
        .strip()
    )


def run(daemon: Daemon, names: list[str], *args: str) -> str:
    name = uniq()
    names.append(name)
    daemon.docker("run", "-d", "--name", name, *args)
    return name


def test_starting_unhealthy_healthy_with_ps_events_and_filter(daemon: Daemon, names: list[str]) -> None:
    since = str(time.time())
    name = run(daemon, names, "--health-cmd", "test -f /tmp/ok", *FAST, "--health-retries", "2",
               "busybox", "sleep", "1000")  # fmt: skip
    h = health(daemon, name)
    assert h is not None and h["Status"] in ("starting", "unhealthy")
    wait_for(lambda: (health(daemon, name) or {}).get("Status") == "unhealthy", 15, "unhealthy")
    h = health(daemon, name)
    assert h is not None and h["FailingStreak"] >= 2
    assert "(unhealthy)" in status_of(daemon, name)
    listed = daemon.docker("ps", "--filter", "health=unhealthy", "--format", "{{.Names}}").stdout.decode()
    assert name in listed.split()
    daemon.docker("exec", name, "touch", "/tmp/ok")
    wait_for(lambda: (health(daemon, name) or {}).get("Status") == "healthy", 15, "healthy")
    assert status_of(daemon, name).endswith("(healthy)")
    assert name in daemon.docker("ps", "--filter", "health=healthy", "--format", "{{.Names}}").stdout.decode()
    h = health(daemon, name)
    assert h is not None and h["FailingStreak"] == 0
    assert 1 <= len(h["Log"]) <= 5
    last = h["Log"][-1]
    assert last["ExitCode"] == 0 and last["Start"] <= last["End"]
    out = daemon.docker("events", "--since", since, "--until", str(time.time() + 0.1),
                        "--filter", f"container={name}", "--filter", "event=health_status",
                        "--format", "{{.Action}}").stdout.decode().split("\n")  # fmt: skip
    assert [a for a in out if a] == ["health_status: unhealthy", "health_status: healthy"]


def test_probe_output_log_and_cmd_form(daemon: Daemon, names: list[str]) -> None:
    name = run(daemon, names, "--health-cmd", "echo probe-out; echo probe-err >&2; exit 3", *FAST,
               "--health-retries", "1", "busybox", "sleep", "1000")  # fmt: skip
    wait_for(lambda: len((health(daemon, name) or {}).get("Log") or []) >= 5, 20, "five results")
    wait_for(lambda: len((health(daemon, name) or {}).get("Log") or []) == 5, 5, "the log to stay at five")
    h = health(daemon, name)
    assert h is not None and h["Status"] == "unhealthy"
    assert h["Log"][-1]["ExitCode"] == 3
    assert h["Log"][-1]["Output"] == "probe-out\nprobe-err\n"
    # the exec form runs without a shell; the probe gets the container's env and user
    client = daemon.client()
    try:
        c = client.containers.run(
            "busybox", "sleep 1000", detach=True, name=uniq(), environment={"WANTED": "yes"}, user="nobody",
            healthcheck={"test": ["CMD", "sh", "-c", "test $WANTED = yes && test $(id -u) = 65534"],
                         "interval": 300_000_000, "retries": 1},
        )  # fmt: skip
        names.append(c.name)

        def py_status() -> str:
            c.reload()
            return str(c.attrs["State"].get("Health", {}).get("Status"))

        wait_for(lambda: py_status() == "healthy", 15, "healthy through docker-py")
    finally:
        client.close()


def test_timeout_kills_the_probe(daemon: Daemon, names: list[str]) -> None:
    name = run(daemon, names, "--health-cmd", "sleep 77", "--health-interval", "300ms",
               "--health-timeout", "500ms", "--health-retries", "1", "busybox", "sleep", "1000")  # fmt: skip
    wait_for(lambda: (health(daemon, name) or {}).get("Status") == "unhealthy", 15, "unhealthy by timeout")
    h = health(daemon, name)
    assert h is not None
    assert h["Log"][0]["ExitCode"] == -1
    assert h["Log"][0]["Output"] == "Health check exceeded timeout (500ms)"
    daemon.docker("pause", name)  # no probe runs while paused
    try:
        top = daemon.docker("top", name, "-o", "pid,args").stdout.decode()
        assert top.count("sleep 77") <= 1  # timed-out probes were killed, not piled up
    finally:
        daemon.docker("unpause", name)


def test_image_healthcheck_and_no_healthcheck(daemon: Daemon, names: list[str], tmp_root: Path) -> None:
    tag = f"pdt-health-{secrets.token_hex(3)}:latest"
    check = {"Test": ["CMD-SHELL", "exit 0"], "Interval": 300_000_000, "Retries": 1}
    build_archive(tmp_root / "hc.tar", tag=tag, config_extra={"Healthcheck": check})
    daemon.docker("load", "-q", "-i", str(tmp_root / "hc.tar"))
    try:
        name = run(daemon, names, tag, "sleep", "1000")
        cfg = json.loads(daemon.docker("inspect", name).stdout)[0]["Config"]["Healthcheck"]
        assert cfg["Test"] == ["CMD-SHELL", "exit 0"]
        wait_for(
            lambda: (health(daemon, name) or {}).get("Status") == "healthy", 15, "healthy from the image"
        )
        off = run(daemon, names, "--no-healthcheck", tag, "sleep", "1000")
        assert json.loads(daemon.docker("inspect", off).stdout)[0]["Config"]["Healthcheck"]["Test"] == [
            "NONE"
        ]
        assert health(daemon, off) is None
        assert "health" not in status_of(daemon, off)
        assert off in daemon.docker("ps", "--filter", "health=none", "--format", "{{.Names}}").stdout.decode()
    finally:
        daemon.docker("rm", "-f", *names, check=False)
        names.clear()
        daemon.docker("rmi", tag, check=False)


def test_stop_ends_the_monitor_and_restart_resets_it(daemon: Daemon, names: list[str]) -> None:
    name = run(daemon, names, "--health-cmd", "true", *FAST, "busybox", "sleep", "1000")
    wait_for(lambda: (health(daemon, name) or {}).get("Status") == "healthy", 15, "healthy")
    daemon.docker("kill", name)
    since = str(time.time())
    before = health(daemon, name)
    assert before is not None and before["Status"] == "healthy"  # kept on stop, as dockerd does
    time.sleep(1.0)  # several intervals: no probe may run on a stopped container
    args = ["--since", since, "--until", str(time.time()), "--filter", f"container={name}"]
    out = daemon.docker("events", *args, "--format", "{{.Action}}").stdout.decode()
    assert "exec_create" not in out
    assert health(daemon, name) == before
    daemon.docker("start", name)
    assert (health(daemon, name) or {}).get("Status") in ("starting", "healthy")
    wait_for(lambda: (health(daemon, name) or {}).get("Status") == "healthy", 15, "healthy again")
