"""The physical floor: the OCI runtime alone (`runc run`, `crun run`) on the same busybox rootfs.

Two bundles share one unpacked busybox rootfs: one whose process is `true` (for `run --rm`), one
whose process is `sleep` (for `run -d` + `delete -f`, and as the target of `exec`). No overlay
mount, no network beyond the runtime's own empty netns, no logs: what is left is what any engine
has to pay. Every container is deleted right after use; `close()` removes the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from bench.harness import Skip
from runtime import busybox_image

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Detached inits are reparented to us (not to PID 1), so we reap them, as an engine does."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def unpack_busybox(rootfs: Path) -> None:
    """The busybox image's single layer, unpacked (the same bytes the engines run)."""
    rootfs.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(busybox_image.layer_tar()), mode="r:") as tf:
        tf.extractall(rootfs, filter="tar")


class OciFloor:
    """`runc` or `crun` driven directly, with its own `--root` state directory."""

    def __init__(self, binary: str, work: Path, rootfs: Path) -> None:
        self.name = Path(binary).name
        self.binary = shutil.which(binary) or binary
        self.work = work / self.name
        self.state = self.work / "state"
        self.rootfs = rootfs
        self.tag = secrets.token_hex(3)
        self._n = 0
        self.detached: dict[str, int] = {}

    def _bundle(self, name: str, args: list[str]) -> Path:
        bundle = self.work / name
        bundle.mkdir(parents=True, exist_ok=True)
        if not (bundle / "config.json").exists():
            subprocess.run([self.binary, "spec", "--bundle", str(bundle)], check=True, capture_output=True)
            spec = json.loads((bundle / "config.json").read_text())
            spec["process"]["terminal"] = False
            spec["process"]["args"] = args
            spec["root"] = {"path": str(self.rootfs), "readonly": True}
            spec["hostname"] = "floor"
            (bundle / "config.json").write_text(json.dumps(spec))
        return bundle

    def setup(self) -> None:
        if shutil.which(self.binary) is None:
            raise Skip(f"{self.name} is not installed")
        self.state.mkdir(parents=True, exist_ok=True)
        self._bundle("true", ["true"])
        self._bundle("sleep", ["sleep", "3600"])
        try:
            self._run("run", "--bundle", str(self.work / "true"), self._next_id())
        except RuntimeError as exc:
            raise Skip(f"{self.name} cannot run containers here: {exc}") from None

    def _next_id(self) -> str:
        self._n += 1
        return f"pdbench-{self.tag}-{self._n}"

    def _run(self, *args: str, timeout_s: float = 60.0) -> None:
        # stderr goes to a file: a detached container inherits it, and a pipe would never see EOF.
        with open(self.work / "stderr", "w+b") as err:
            res = subprocess.run(
                [self.binary, "--root", str(self.state), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=timeout_s,
                check=False,
            )
            if res.returncode != 0:
                err.seek(0)
                lines = err.read().decode(errors="replace").strip().splitlines() or [f"exit {res.returncode}"]
                raise RuntimeError(lines[-1][:300])

    def _run_detached(self, cid: str) -> int:
        """`run --detach` of the sleep bundle; returns the init's PID (our child: we are subreaper)."""
        pid_file = self.work / f"{cid}.pid"
        self._run("run", "--detach", "--pid-file", str(pid_file), "--bundle", str(self.work / "sleep"), cid)
        pid = int(pid_file.read_text())
        pid_file.unlink()
        return pid

    def _delete(self, cid: str, pid: int) -> None:
        self._run("delete", "--force", cid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    # --- samplers (seconds) -----------------------------------------------------------------------

    def run_cmd(self, name: str, args: list[str]) -> float:
        """`runc run` of a bundle whose process is `args` (stdout to /dev/null)."""
        bundle = self._bundle(name, args)
        start = time.perf_counter()
        self._run("run", "--bundle", str(bundle), self._next_id())
        return time.perf_counter() - start

    def run_true(self) -> float:
        """`runc run` of `true`: create, start, wait, delete, in one command."""
        start = time.perf_counter()
        self._run("run", "--bundle", str(self.work / "true"), self._next_id())
        return time.perf_counter() - start

    def run_detached_then_delete(self) -> float:
        """`runc run -d` of `sleep`, then what an engine's `rm -f` needs: `runc kill KILL`, reap the
        init (we are its subreaper), `runc delete`. (`runc delete --force` polls for the exit and
        takes ~150 ms more, so it would not be a floor.)"""
        cid = self._next_id()
        start = time.perf_counter()
        pid = self._run_detached(cid)
        self._run("kill", cid, "KILL")
        os.waitpid(pid, 0)
        self._run("delete", cid)
        return time.perf_counter() - start

    def start_sleeper(self) -> str:
        cid = self._next_id()
        self.detached[cid] = self._run_detached(cid)
        return cid

    def exec_true(self, cid: str) -> float:
        start = time.perf_counter()
        self._run("exec", cid, "true")
        return time.perf_counter() - start

    def close(self) -> None:
        for cid, pid in self.detached.items():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._delete(cid, pid)
        self.detached.clear()
        if self.state.is_dir():
            for entry in self.state.iterdir():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._run("delete", "--force", entry.name)
        shutil.rmtree(self.work, ignore_errors=True)


def floors(work: Path, names: tuple[str, ...] = ("runc", "crun")) -> tuple[list[OciFloor], dict[str, str]]:
    """The runtimes that work here, and why the others do not."""
    become_subreaper()
    rootfs = work / "floor-rootfs"
    unpack_busybox(rootfs)
    usable: list[OciFloor] = []
    skipped: dict[str, str] = {}
    for name in names:
        floor = OciFloor(name, work, rootfs)
        try:
            floor.setup()
        except Skip as exc:
            skipped[name] = str(exc)
            floor.close()
            continue
        usable.append(floor)
    return usable, skipped
