"""The exec helper: a small process that starts processes inside running containers as `runc exec`
does, without runc's cost (two Go start-ups and a libseccomp compile of the profile, ~30 ms).

pydockd starts it once (`python -m runtime.nsexec <fd>`) and talks to it over a SOCK_SEQPACKET
socket: one JSON request per message, file descriptors (the process's stdio) as SCM_RIGHTS, one
JSON answer back (plus the pty master for a TTY). It is a separate, small, single-threaded
process because forking pydockd itself (threads, ~60 MB) is slow and unsafe.

`exec` follows runc 1.1's setns path step by step (nsexec.c, setns_init_linux.go,
init_linux.go `finalizeNamespace`/`setupUser`, process_linux.go `setnsProcess.start`):
1. a child A opens the init's namespace files, stops being dumpable, joins them (mount last),
   and forks B, which is inside the container's pid namespace; A exits, so B is reparented to
   pydockd (the child subreaper), which reaps it;
2. the helper writes B's pid into every cgroup of the container (runc's `cgroup_paths`) before
   B may go on: B is limited from its first instruction;
3. B: default signal dispositions and an empty signal mask; a new session; the session keyring
   `_ses.<id>`; the pty (opened in the container's devpts and sent back) or the given stdio;
   oom_score_adj, rlimits, no_new_privs, umask; the seccomp filter (the very BPF program runc
   loaded into the container's init, read back by `PTRACE_SECCOMP_GET_FILTER`) before the
   privilege drop, or last with no_new_privs; fds >= 3 closed; chdir; bounding set, keep-caps,
   stdio ownership, groups, gid, uid, capabilities (effective, permitted, inheritable, ambient);
   HOME from the container's /etc/passwd; the command looked up in the process's PATH as the
   target user; execve;
4. errors come back over a close-on-exec pipe with runc's wording (`exec: "x": executable file
   not found in $PATH`, `chdir to cwd ("/x") set in config.json failed: ...`).

`filter` reads a process's oldest seccomp filter (ptrace seize, interrupt, get, detach).
What this helper cannot do like runc (user namespaces, AppArmor/SELinux labels, seccomp flags or
notify listeners) pydockd never asks of it: it uses runc then (`runtime/fastexec.py`).

Only the standard library: it starts in ~20 ms and forks in well under one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gc
import json
import os
import resource
import select
import signal
import socket
import stat
import struct
import sys
import termios
from typing import Any

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.syscall.restype = ctypes.c_long

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_DUMPABLE = 4
SECCOMP_MODE_FILTER = 2
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_SECCOMP_GET_FILTER = 0x420C
WALL = 0x40000000
CAP_VERSION_3 = 0x20080522
KEYCTL_JOIN_SESSION_KEYRING = 1
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "ppc64le": 280, "s390x": 280, "riscv64": 219}
TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
NS_FLAGS = {
    "NEWUSER": 0x10000000,
    "NEWIPC": 0x08000000,
    "NEWUTS": 0x04000000,
    "NEWNET": 0x40000000,
    "NEWPID": 0x20000000,
    "NEWCGROUP": 0x02000000,
    "NEWNS": 0x00020000,
}
NS_ORDER = ("NEWIPC", "NEWUTS", "NEWNET", "NEWPID", "NEWCGROUP", "NEWNS")  # runc's; mount last
RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}  # fmt: skip
STEP_TIMEOUT_S = 10.0
MAX_FD = 1 << 20  # above any fd this process can hold
MAX_MESSAGE = 1 << 20


class ExecError(Exception):
    """A failure to report with this text (runc's wording)."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _errcheck(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    return _errcheck(libc.prctl(option, arg2, arg3, 0, 0), f"prctl({option})")


# --- seccomp filters -------------------------------------------------------------------------------


def filter_count(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Seccomp_filters:"):
                return int(line.split()[1])
    return 0


def get_filter(pid: int) -> bytes:
    """The oldest seccomp filter of `pid` (the one runc installed) as raw `sock_filter`s."""
    count = filter_count(pid)
    if count == 0:
        return b""
    _errcheck(libc.ptrace(PTRACE_SEIZE, pid, None, None), "ptrace seize")
    try:
        _errcheck(libc.ptrace(PTRACE_INTERRUPT, pid, None, None), "ptrace interrupt")
        deadline = STEP_TIMEOUT_S
        while True:  # wait for the interrupt stop (bounded: a frozen task never stops)
            got, _status = os.waitpid(pid, os.WNOHANG | WALL)
            if got == pid:
                break
            if deadline <= 0:
                raise ExecError("timed out stopping the container's init")
            select.select([], [], [], 0.001)
            deadline -= 0.001
        index = ctypes.c_void_p(count - 1)
        n = _errcheck(libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, None), "seccomp get filter")
        buf = ctypes.create_string_buffer(n * 8)
        _errcheck(libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, buf), "seccomp get filter")
        return buf.raw
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


def load_filter(program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _errcheck(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0), "seccomp")


# --- the new process (B) -------------------------------------------------------------------------


def _caps_word(caps: list[int], word: int) -> int:
    mask = 0
    for cap in caps:
        if cap // 32 == word:
            mask |= 1 << (cap % 32)
    return mask


def apply_caps(caps: dict[str, list[int]]) -> None:
    header = _CapHeader(CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    for word in (0, 1):
        data[word].effective = _caps_word(caps.get("effective", []), word)
        data[word].permitted = _caps_word(caps.get("permitted", []), word)
        data[word].inheritable = _caps_word(caps.get("inheritable", []), word)
    _errcheck(libc.capset(ctypes.byref(header), data), "capset")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in caps.get("ambient", []):
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def drop_bounding(keep: list[int], last_cap: int) -> None:
    wanted = set(keep)
    for cap in range(last_cap + 1):
        if cap not in wanted:
            try:
                prctl(PR_CAPBSET_DROP, cap)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise


def passwd_home(uid: int) -> str:
    """The home directory of `uid` in the container's /etc/passwd ("/" when not listed)."""
    try:
        with open("/etc/passwd", "rb") as f:
            data = f.read(4 << 20)
    except OSError:
        return "/"
    for raw in data.splitlines():
        parts = raw.decode(errors="replace").split(":")
        if len(parts) >= 6 and parts[2].strip().isdigit() and int(parts[2]) == uid:
            return parts[5] or "/"
    return "/"


def _executable(path: str) -> None:
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
        raise PermissionError(errno.EACCES, "permission denied")


def look_path(name: str, env: list[str]) -> str:
    """Go's `exec.LookPath` with the process's PATH, and its error texts."""
    if "/" in name:
        try:
            _executable(name)
        except PermissionError:
            raise ExecError(f'exec: "{name}": permission denied') from None
        except OSError as exc:
            raise ExecError(f'exec: "{name}": stat {name}: {os.strerror(exc.errno or 0).lower()}') from None
        return name
    path_env = ""
    for entry in env:
        if entry.startswith("PATH="):
            path_env = entry[5:]
    for directory in path_env.split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            _executable(candidate)
        except OSError:
            continue
        return candidate
    raise ExecError(f'exec: "{name}": executable file not found in $PATH')


def open_pty(size: list[int] | None) -> tuple[int, int]:
    """A pty from the container's devpts: (master, slave)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    if size and size[0] > 0 and size[1] > 0:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    return master, slave


def fix_stdio_owner(uid: int) -> None:
    """runc's fixStdioPermissions: the new user owns its stdio (not /dev/null)."""
    null = os.stat("/dev/null").st_rdev
    for fd in (0, 1, 2):
        st = os.fstat(fd)
        if st.st_uid == uid or (st.st_rdev == null and stat.S_ISCHR(st.st_mode)):
            continue
        try:
            os.fchown(fd, uid, -1)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                raise


def become(
    req: dict[str, Any], stdio: list[int], go: int, report: int, console: socket.socket | None
) -> None:
    """B: set the process up and execve. Never returns; errors go to `report`."""
    try:
        if os.read(go, 1) != b"g":  # the helper gave up (its cgroup writes failed)
            os._exit(1)
        os.close(go)
        proc = req["process"]
        # execve keeps ignored signals ignored and the signal mask: give the process the defaults
        # (this Python ignores SIGPIPE, SIGXFSZ and SIGINT; runc's processes ignore nothing).
        for signum in signal.valid_signals():
            if signum not in (signal.SIGKILL, signal.SIGSTOP):
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.setsid()
        if req.get("keyring"):
            number = SYS_KEYCTL.get(os.uname().machine)
            if number is not None:
                ret = libc.syscall(number, KEYCTL_JOIN_SESSION_KEYRING, req["keyring"].encode())
                if ret < 0 and ctypes.get_errno() != errno.ENOSYS:
                    raise ExecError(f"unable to join session keyring: {os.strerror(ctypes.get_errno())}")
        if proc.get("terminal"):
            assert console is not None
            master, slave = open_pty(proc.get("console_size"))
            socket.send_fds(console, [b"pty"], [master])
            os.close(master)
            console.close()
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            os.close(slave)
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        else:
            for fd, source in enumerate(stdio):
                os.dup2(source, fd)
        if proc.get("oom_score_adj") is not None:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(proc["oom_score_adj"]))
        for limit in proc.get("rlimits") or []:
            resource.setrlimit(RLIMITS[limit["type"]], (limit["soft"], limit["hard"]))
        nnp = bool(proc.get("no_new_privileges"))
        if nnp:
            prctl(PR_SET_NO_NEW_PRIVS, 1)
        if proc.get("umask") is not None:
            os.umask(proc["umask"])
        uid, gid = proc["uid"], proc["gid"]
        env = list(proc["env"])
        if not any(e.startswith("HOME=") for e in env):
            env.append(f"HOME={passwd_home(uid)}")
        # Close every fd we do not hand on (the helper's socket above all) before anything runs.
        # close_range(2) under os.closerange: no /proc listing, which a privileged container
        # could have mounted over.
        os.closerange(3, report)
        os.closerange(report + 1, MAX_FD)
        program: bytes = bytes.fromhex(req.get("seccomp") or "")
        if program and not nnp:
            load_filter(program)  # a privileged operation without no_new_privs: before the drop
        cwd = proc.get("cwd") or "/"
        chdir_later = False
        try:
            os.chdir(cwd)
        except PermissionError:
            chdir_later = True
        except OSError as exc:
            raise ExecError(f'chdir to cwd ("{cwd}") set in config.json failed: {_strerror(exc)}') from None
        caps = proc.get("capabilities") or {}
        drop_bounding(caps.get("bounding", []), req["last_cap"])
        prctl(PR_SET_KEEPCAPS, 1)
        fix_stdio_owner(uid)
        os.setgroups(list(proc.get("additional_gids") or []))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if chdir_later:
            try:
                os.chdir(cwd)
            except OSError as exc:
                raise ExecError(
                    f'chdir to cwd ("{cwd}") set in config.json failed: {_strerror(exc)}'
                ) from None
        prctl(PR_SET_KEEPCAPS, 0)
        apply_caps(caps)
        path = look_path(proc["args"][0], env)
        if program and nnp:
            load_filter(program)  # as late as possible: fewer syscalls for the profile to allow
        try:
            os.execve(path, proc["args"], dict(e.split("=", 1) for e in env if "=" in e))  # noqa: S606
        except OSError as exc:
            raise ExecError(f"exec {path}: {_strerror(exc)}") from None
    except ExecError as exc:
        _report(report, str(exc))
    except BaseException as exc:  # whatever happened: say it, never return
        _report(report, f"{type(exc).__name__}: {exc}")
    os._exit(1)


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return -1


def _strerror(exc: OSError) -> str:
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


def _report(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, message.encode(errors="replace")[:4096])


# --- the helper ------------------------------------------------------------------------------------


def _read_exact(fd: int, n: int, timeout_s: float) -> bytes:
    data = b""
    while len(data) < n:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            raise ExecError("timed out entering the container")
        chunk = os.read(fd, n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _read_all(fd: int, timeout_s: float) -> bytes | None:
    """Everything until EOF, or None on timeout."""
    data = b""
    while True:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk


def do_exec(req: dict[str, Any], stdio: list[int]) -> tuple[dict[str, Any], list[int]]:
    ns_paths: list[tuple[str, str]] = [(kind, path) for kind, path in req["namespaces"]]
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    console_ours: socket.socket | None = None
    console_theirs: socket.socket | None = None
    if req["process"].get("terminal"):
        console_ours, console_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a = os.fork()
    if a == 0:  # A: join the namespaces, fork B, report its pid, go
        try:
            prctl(PR_SET_DUMPABLE, 0)
            # Inside the container's mount namespace, an import would read the image's files
            # with every capability still held: forbid imports in A and B altogether.
            sys.meta_path.clear()
            sys.path_hooks.clear()
            sys.path_importer_cache.clear()
            sys.path.clear()
            fds = [(os.open(path, os.O_RDONLY | os.O_CLOEXEC), NS_FLAGS[kind]) for kind, path in ns_paths]
            # The namespaces must be the init's: if its pid was reused before the opens, the start
            # time differs now (after them, the fds hold the right namespaces whatever happens).
            if _start_time(int(req["init_pid"])) != int(req["init_start"]):
                raise ExecError("the container's init is gone")
            for fd, flag in fds:
                _errcheck(libc.setns(fd, flag), "setns")
                os.close(fd)
            b = os.fork()
            if b == 0:
                become(req, stdio, go_r, err_w, console_theirs)
            os.write(pid_w, struct.pack("i", b))
            os._exit(0)
        except BaseException as exc:
            _report(err_w, f"entering the container's namespaces: {exc}")
            os._exit(1)
    for fd in (go_r, err_w, pid_w):
        os.close(fd)
    if console_theirs is not None:
        console_theirs.close()
    b = 0
    try:
        raw = _read_exact(pid_r, 4, STEP_TIMEOUT_S)
        os.waitpid(a, 0)
        if len(raw) != 4:
            message = _read_all(err_r, STEP_TIMEOUT_S) or b""
            raise ExecError(message.decode(errors="replace") or "could not enter the container")
        b = struct.unpack("i", raw)[0]
        for path in req["cgroup_procs"]:
            with open(path, "w") as f:
                f.write(str(b))
        os.write(go_w, b"g")
        os.close(go_w)
        go_w = -1
        master: list[int] = []
        if console_ours is not None:
            console_ours.settimeout(STEP_TIMEOUT_S)
            try:
                _msg, pty_fds, _flags, _addr = socket.recv_fds(console_ours, 16, 1)
                master = list(pty_fds)
            except (OSError, ValueError):
                master = []
        failure = _read_all(err_r, STEP_TIMEOUT_S)
        if failure is None:
            os.kill(b, signal.SIGKILL)
            raise ExecError("timed out starting the process")
        if failure:
            for fd in master:
                os.close(fd)
            return {"error": failure.decode(errors="replace"), "pid": b}, []
        return {"pid": b}, master
    except BaseException as exc:
        if b:
            with contextlib.suppress(ProcessLookupError):
                os.kill(b, signal.SIGKILL)
        text = str(exc) if isinstance(exc, ExecError) else f"{type(exc).__name__}: {exc}"
        return {"error": text, "pid": b}, []
    finally:
        if go_w >= 0:
            os.close(go_w)
        os.close(err_r)
        os.close(pid_r)
        if console_ours is not None:
            console_ours.close()


def serve(sock: socket.socket) -> None:
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 8)
        except InterruptedError:
            continue
        if not msg:
            return  # pydockd went away
        out_fds: list[int] = []
        req: Any = None
        try:
            req = json.loads(msg)
            if req["op"] == "exec":
                answer, out_fds = do_exec(req, list(fds))
            elif req["op"] == "filter":
                answer = {"filter": get_filter(int(req["pid"])).hex()}
            else:
                answer = {"error": f"unknown op {req['op']!r}"}
        except Exception as exc:  # a bad request must not end the helper
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        answer["id"] = req.get("id") if isinstance(req, dict) else None
        try:
            socket.send_fds(sock, [json.dumps(answer).encode()], out_fds)
        finally:
            for fd in out_fds:
                os.close(fd)


def main() -> None:
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # No collector runs and every object lives in the permanent generation: a forked child does
    # not touch (and so copy) the helper's pages, which keeps fork-to-exec short.
    gc.disable()
    gc.freeze()
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)  # never reaches a process started in a container
    sock = socket.socket(fileno=fd)
    serve(sock)


if __name__ == "__main__":
    main()
