"""The OCI runtime wrapper against a fake runtime script (no root, no kernel features)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from runtime.cgroups import CgroupLayout, CgroupMode
from runtime.config import RuntimeSpec
from runtime.console import ConsoleSocket, receive_console_master
from runtime.errors import OciContainerNotFound, OciRuntimeError
from runtime.oci import RuncRuntime, Stdio, last_error, runtime_usable
from runtime.ocispec import Pids, Process, Resources

# A stand-in for runc: records its argv and stdin, writes JSON log lines like runc, and behaves
# according to the subcommand.
FAKE = r"""#!/bin/sh
log=""
prev=""
for a in "$@"; do
  if [ "$prev" = "--log" ]; then log="$a"; fi
  prev="$a"
done
printf '%s\n' "$*" >> "$FAKE_DIR/argv"
case "$*" in
  *" state missing"*)
    echo '{"level":"error","msg":"container \"missing\" does not exist","time":"t"}' >> "$log"; exit 1 ;;
  *" state "*)
    printf '%s%s\n' '{"ociVersion":"1.0.2","id":"c1","pid":42,"status":"running",' \
      '"bundle":"/b","rootfs":"/r","created":"x","owner":""}'
    exit 0 ;;
  *" create "*)
    echo '{"level":"info","msg":"starting","time":"t"}' >> "$log"
    case "$*" in *nonexist*)
      printf '%s%s\n' '{"level":"error","msg":"runc create failed: unable to start container process: ' \
        'exec: \"nonexist\": executable file not found in $PATH","time":"t"}' >> "$log"
      exit 1 ;;
    esac
    pidfile=""; prev=""
    for a in "$@"; do if [ "$prev" = "--pid-file" ]; then pidfile="$a"; fi; prev="$a"; done
    echo 4242 > "$pidfile"
    echo container-stdout
    echo container-stderr >&2
    exit 0 ;;
  *" update "*)
    cat > "$FAKE_DIR/stdin"; exit 0 ;;
  *" ps "*)
    echo '[1,2,3]'; exit 0 ;;
  *" exec "*)
    proc=""; pidfile=""; prev=""
    for a in "$@"; do
      if [ "$prev" = "--process" ]; then proc="$a"; fi
      if [ "$prev" = "--pid-file" ]; then pidfile="$a"; fi
      prev="$a"
    done
    cp "$proc" "$FAKE_DIR/process.json"; echo 99 > "$pidfile"; exit 0 ;;
  *" pause "*)
    exec sleep 30 ;;
  *" kill "*|*" delete "*|*" start "*|*" resume "*)
    exit 0 ;;
esac
echo "unexpected: $*" >&2
exit 2
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RuncRuntime:
    script = tmp_path / "fake-runc"
    script.write_text(FAKE)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    logs = tmp_path / "logs"
    logs.mkdir()
    return RuncRuntime(str(script), tmp_path / "root", logs)


def argv(tmp_path: Path) -> list[str]:
    return (tmp_path / "argv").read_text().splitlines()


def test_last_error() -> None:
    log = (
        '{"level":"info","msg":"a"}\n{"level":"error","msg":"first"}\n'
        '{"level":"warning","msg":"w"}\n{"level":"error","msg":"second"}\n\n'
    )
    assert last_error(log) == "second"
    assert last_error("plain text failure\n") == "plain text failure"
    assert last_error("") == ""


async def test_create_passes_stdio_and_reads_pid(fake: RuncRuntime, tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        pid = await fake.create(
            "c1", tmp_path / "bundle", pid_file=tmp_path / "init.pid", stdio=Stdio(None, w, w)
        )
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as out:
        assert out.read() == b"container-stdout\ncontainer-stderr\n"
    assert pid == 4242
    line = argv(tmp_path)[-1]
    assert line.startswith(f"--root {tmp_path / 'root'} --log {tmp_path / 'logs'}/c1.create.")
    assert "--log-format json create --bundle" in line and line.endswith(" c1")
    assert list((tmp_path / "logs").iterdir()) == []  # per-call logs are removed


async def test_runtime_error_keeps_runcs_text(fake: RuncRuntime, tmp_path: Path) -> None:
    with pytest.raises(OciRuntimeError) as info:
        await fake.create("nonexist", tmp_path / "b", pid_file=tmp_path / "p")
    assert info.value.status == 400
    assert str(info.value) == (
        "OCI runtime create failed: runc create failed: unable to start container process: "
        'exec: "nonexist": executable file not found in $PATH'
    )
    with pytest.raises(OciContainerNotFound, match="does not exist"):
        await fake.state("missing")
    with pytest.raises(OciRuntimeError, match="unexpected: "):
        await fake._run("bogus", "bogus", cid="c1", timeout_s=5)


async def test_state_kill_delete_update_ps(fake: RuncRuntime, tmp_path: Path) -> None:
    state = await fake.state("c1")
    assert (state.id, state.pid, state.status) == ("c1", 42, "running")
    await fake.kill("c1", "SIGTERM", all_processes=True)
    await fake.kill("c1", 9)
    await fake.delete("c1", force=True)
    await fake.update("c1", Resources(pids=Pids(limit=50)))
    assert json.loads((tmp_path / "stdin").read_text()) == {"pids": {"limit": 50}}
    assert await fake.ps("c1") == [1, 2, 3]
    commands = [" ".join(line.split()[6:]) for line in argv(tmp_path)]
    assert commands[1:5] == ["kill --all c1 15", "kill c1 9", "delete --force c1", "update --resources - c1"]


async def test_exec_writes_process_json(fake: RuncRuntime, tmp_path: Path) -> None:
    proc = Process(args=["echo", "hi"], env=["A=1"], cwd="/tmp")
    pid = await fake.exec("c1", proc, pid_file=tmp_path / "exec.pid")
    assert pid == 99
    written = json.loads((tmp_path / "process.json").read_text())
    assert written["args"] == ["echo", "hi"] and written["cwd"] == "/tmp"
    assert "exec --detach --process" in argv(tmp_path)[-1]
    assert list((tmp_path / "logs").iterdir()) == []


async def test_timeout_terminates_the_runtime(fake: RuncRuntime, tmp_path: Path) -> None:
    with pytest.raises(TimeoutError):
        await fake.pause("c1", timeout_s=0.2)
    assert list((tmp_path / "logs").iterdir()) == []


async def test_console_socket_receives_the_master_fd(tmp_path: Path) -> None:
    path = tmp_path / "console.sock"
    task = receive_console_master(path, timeout_s=5)
    r, w = os.pipe()
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        with client:
            await asyncio.get_running_loop().sock_connect(client, str(path))
            socket.send_fds(client, [b"/dev/pts/7"], [w])
        received = await task
        try:
            os.write(received, b"through the passed fd")
            assert os.read(r, 100) == b"through the passed fd"
            assert os.get_inheritable(received) is False
        finally:
            os.close(received)
    finally:
        os.close(r)
        os.close(w)
    assert not path.exists()


async def test_console_socket_cancel_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    task = receive_console_master(path)
    assert path.exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not path.exists()
    with ConsoleSocket(tmp_path / "d.sock") as listener, pytest.raises(TimeoutError):
        await listener.receive(timeout_s=0.05)
    assert not (tmp_path / "d.sock").exists()


def test_runtime_usable(tmp_path: Path) -> None:
    hybrid = CgroupLayout(
        CgroupMode.HYBRID, {"memory": Path("/sys/fs/cgroup/memory")}, Path("/sys/fs/cgroup/unified")
    )
    v2 = CgroupLayout(CgroupMode.V2, {}, Path("/sys/fs/cgroup"))
    crun = tmp_path / "crun"
    crun.write_text("#!/bin/sh\n")
    crun.chmod(0o755)
    ok, reason = runtime_usable(RuntimeSpec("crun", str(crun)), layout=hybrid)
    assert not ok and "hybrid" in reason and "crun" in reason
    assert runtime_usable(RuntimeSpec("crun", str(crun)), layout=v2) == (True, "")
    missing = runtime_usable(RuntimeSpec("runc", str(tmp_path / "nope")), layout=hybrid)
    assert missing[0] is False and "not installed" in missing[1]
