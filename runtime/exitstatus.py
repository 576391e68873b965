"""A container init's real exit status, also when pydockd is not its parent.

Normally pydockd is the child subreaper that inherits the init once the OCI runtime exits, and
`waitid(P_PIDFD)` reaps it with its status. After a daemon restart the re-adopted init belongs to
someone else (the host's pid 1 or an outer subreaper); the kernel still tells us its status:

1. while it is a zombie (its parent has not reaped it yet), field 52 of /proc/<pid>/stat holds
   the wait status (Linux >= 3.5); the pidfd we hold proves the pid was not reused meanwhile;
2. once reaped, `ioctl(pidfd, PIDFD_GET_INFO)` with `PIDFD_INFO_EXIT` returns it (Linux >= 6.15).

When neither answers (an old kernel, and a parent that reaped it first), the status is lost and
the caller falls back (documented in the README: exit code 255 with an explanatory State.Error,
or 128+signal when pydockd itself had sent a fatal signal).
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct

PIDFD_GET_INFO = 0xC040FF0B  # _IOWR(0xFF, 11, struct pidfd_info) with the 64-byte VER0 struct
PIDFD_INFO_EXIT = 1 << 3
_INFO = struct.Struct("<QQ11Ii4x")


def exit_code_from_wait_status(status: int) -> int:
    """A wait status → the exit code Docker reports (128+signal for a signal death)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _from_waitid(pidfd: int) -> int | None:
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return 128 + result.si_status


def _from_zombie(pidfd: int, pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rsplit(b")", 1)[1].split()
    if not fields or fields[0] != b"Z" or len(fields) < 50:
        return None
    status = int(fields[-1])
    try:
        signal.pidfd_send_signal(pidfd, 0)  # still our process (a zombie keeps its pid)?
    except ProcessLookupError:
        return None
    return exit_code_from_wait_status(status)


def _from_pidfd_info(pidfd: int) -> int | None:
    buf = bytearray(_INFO.pack(PIDFD_INFO_EXIT, 0, *([0] * 11), 0))
    try:
        fcntl.ioctl(pidfd, PIDFD_GET_INFO, buf, True)
    except OSError:
        return None
    values = _INFO.unpack(buf)
    if not values[0] & PIDFD_INFO_EXIT:
        return None
    return exit_code_from_wait_status(values[-1] & 0xFFFFFFFF)


def collect(pidfd: int, pid: int) -> tuple[int, str] | None:
    """(exit code, how it was learned) for an exited process, or None when the kernel won't say.

    Call once the pidfd polls readable. Never blocks.
    """
    code = _from_waitid(pidfd)
    if code is not None:
        return code, "reaped"
    code = _from_zombie(pidfd, pid)
    if code is not None:
        return code, "zombie"
    code = _from_pidfd_info(pidfd)
    if code is not None:
        return code, "pidfd-info"
    return None
