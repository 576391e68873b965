"""Keeping TTY containers' pty masters alive while pydockd is away (live restore).

A TTY container's terminal is a pty whose master runc hands to pydockd. If the only copy of the
master dies with the daemon, the kernel hangs the terminal up and the container's shell gets
SIGHUP. Containers without a TTY need nothing of the sort (their FIFOs are held open by the
container side); TTY containers need someone outside to hold the master.

That someone is one small process per daemon — not per container — that does nothing: `sleep
infinity` with one end of a SOCK_SEQPACKET socketpair inherited. pydockd sends each master
over its own end with SCM_RIGHTS and never lets the keeper read: the messages (container id +
fd) wait in the keeper's receive queue, and a file in flight stays open for as long as the queue
exists. After a restart, pydockd opens the keeper by pidfd, takes a copy of its socket with
pidfd_getfd(2), reads every queued master back, and moves the live ones into a fresh keeper
(the old peer end died with the old daemon, so nothing more could be queued to the old one).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
from pathlib import Path

from runtime import store

log = logging.getLogger("pydock.fdkeeper")

SYS_PIDFD_GETFD = 438
_libc = ctypes.CDLL(None, use_errno=True)


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    fd = int(_libc.syscall(SYS_PIDFD_GETFD, pidfd, target_fd, 0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd: {os.strerror(err)}")
    return fd


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


class FdKeeper:
    """Holds fds (pty masters) in a keeper process's socket queue, keyed by container id.

    Blocking but short calls (socket sends, one process spawn at start): call from the loop.
    """

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self._sock: socket.socket | None = None  # our end; the keeper holds the peer
        self._pid = 0
        self._held: dict[str, int] = {}  # cid → our own copy of the fd

    def open(self) -> dict[str, int]:
        """Returns the masters a previous daemon's keeper still held (cid → fd, now the
        caller's), which a new keeper holds again. The keeper process exists only while it holds
        something."""
        recovered = self._recover()
        if recovered:
            self._spawn()
            for cid, fd in recovered.items():
                self._held[cid] = os.dup(fd)  # our copy for re-sending; the caller owns `fd`
            self._resend()
        return recovered

    def keep(self, cid: str, fd: int) -> None:
        """Hold a copy of `fd` for `cid` (the caller keeps using its own)."""
        if self._sock is None:
            self._spawn()
        assert self._sock is not None
        self._held[cid] = os.dup(fd)
        socket.send_fds(self._sock, [cid.encode()], [fd])

    def release(self, cid: str) -> None:
        """Drop the copy held for `cid` (its container stopped)."""
        fd = self._held.pop(cid, None)
        if fd is None:
            return
        os.close(fd)
        old_pid, old_sock = self._pid, self._sock
        self._pid, self._sock = 0, None
        if self._held:
            # A queued message cannot be taken out alone: rebuild the queue in a fresh keeper.
            self._spawn()
            self._resend()
        else:
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()
        self._stop_keeper(old_pid, old_sock)

    def close(self, *, keep_running: bool) -> None:
        """Daemon shutdown. With live restore the keeper stays (the next daemon recovers it)."""
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()
        if not keep_running:
            self._stop_keeper(self._pid, self._sock)
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()
        elif self._sock is not None:
            self._sock.close()
        self._sock = None

    # --- internals ------------------------------------------------------------------------------

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Large queues: each held fd is one small message.
        for s in (ours, theirs):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        keeper_fd = theirs.fileno()  # pass_fds keeps the number in the child
        proc = subprocess.Popen(
            ["sleep", "infinity"],
            pass_fds=(keeper_fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the daemon's terminal must not reach it
        )
        theirs.close()
        proc.returncode = 0  # never waited for by Popen: pydockd reaps it in _stop_keeper
        self._sock, self._pid = ours, proc.pid
        store.write_json(
            self.state_path, {"pid": proc.pid, "start_time": _start_time(proc.pid), "fd": keeper_fd}
        )

    def _resend(self) -> None:
        if self._sock is None:
            return
        for cid, fd in self._held.items():
            socket.send_fds(self._sock, [cid.encode()], [fd])

    def _stop_keeper(self, pid: int, sock: socket.socket | None) -> None:
        if sock is not None:
            sock.close()
        if pid <= 0:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def _recover(self) -> dict[str, int]:
        """Read back what the keeper of a previous daemon holds, then end that keeper."""
        try:
            state = json.loads(self.state_path.read_text())
            pid, start, keeper_fd = int(state["pid"]), int(state["start_time"]), int(state["fd"])
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        if pid <= 0 or _start_time(pid) != start:
            return {}
        recovered: dict[str, int] = {}
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return {}
        try:
            sock = socket.socket(fileno=pidfd_getfd(pidfd, keeper_fd))
        except OSError as exc:
            log.warning("could not recover the previous fd keeper: %s", exc)
            os.close(pidfd)
            return {}
        try:
            sock.setblocking(False)
            while True:
                try:
                    payload, fds, _flags, _addr = socket.recv_fds(sock, 256, 4)
                except BlockingIOError:
                    break
                if not payload:
                    break
                for extra in fds[1:]:
                    os.close(extra)
                if fds:
                    cid = payload.decode(errors="replace")
                    if cid in recovered:
                        os.close(recovered[cid])
                    recovered[cid] = fds[0]
        finally:
            sock.close()
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        log.info("recovered pty masters from the previous fd keeper", extra={"count": len(recovered)})
        return recovered
