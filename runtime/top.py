"""`docker top`: the host's `ps`, restricted to the processes of a container's cgroup.

As dockerd (moby daemon/top_unix.go): `ps_args` defaults to `-ef`, the container's pids go to
`ps` as `-q<pid,...>` (a retry without it for options that refuse `-q`), the header line gives
`Titles` (there must be a `PID` column), and only lines whose PID is the container's are kept;
the last column takes the rest of the line (commands have spaces). Thread lines (`-` in the PID
column, `ps -m`) follow the process they belong to. `pid=...` format keys other than `pid`
are refused, as dockerd does.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from runtime import procs
from runtime.cgroups import CgroupLayout, CgroupMode
from runtime.errors import Conflict, InvalidParameter, NotRunning, SystemError_
from runtime.launch import cgroups_path
from runtime.records import Status

if TYPE_CHECKING:
    from runtime.supervisor import Supervisor

DEFAULT_PS_ARGS = "-ef"
PS_TIMEOUT_S = 30.0
_PS_ARG_ALIAS = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")
_ASCII_SPACE = re.compile(r"[\t\n\f\r ]+")


def validate_ps_args(ps_args: str) -> None:
    for key, value in _PS_ARG_ALIAS.findall(ps_args):
        if key != "pid":
            raise InvalidParameter(f'specifying "{key}={value}" is not allowed')


def _fields(line: str) -> list[str]:
    return [f for f in _ASCII_SPACE.split(line) if f]


def parse_ps_output(output: str, pids: set[int]) -> dict[str, object]:
    """`ps` output → `{"Titles": [...], "Processes": [[...], ...]}` for the given pids."""
    lines = output.split("\n")
    titles = _fields(lines[0]) if lines else []
    if "PID" not in titles:
        raise SystemError_("Couldn't find PID field in ps output")
    pid_index = titles.index("PID")
    processes: list[list[str]] = []
    previous_kept = False
    for line in lines[1:]:
        if not line:
            continue
        fields = _fields(line)
        if len(fields) <= pid_index:
            continue
        if fields[pid_index] == "-":
            if previous_kept:
                processes.append(_fit(fields, len(titles)))
            continue
        try:
            pid = int(fields[pid_index])
        except ValueError as exc:
            raise SystemError_(f"Unexpected pid '{fields[pid_index]}': {exc}") from exc
        previous_kept = pid in pids
        if previous_kept:
            processes.append(_fit(fields, len(titles)))
    return {"Titles": titles, "Processes": processes}


def _fit(fields: list[str], columns: int) -> list[str]:
    """Merge the overhanging fields into the last column (moby appendProcess2ProcList)."""
    if columns <= 0:
        return fields
    head = fields[: columns - 1]
    return [*head, " ".join(fields[columns - 1 :])]


def cgroup_pids(layout: CgroupLayout, cgroup: str) -> list[int]:
    """Every process of the cgroup and its sub-cgroups (as `runc ps`). Blocking: small reads."""
    base = layout.dir("" if layout.mode is CgroupMode.V2 else "pids", cgroup)
    if base is None:
        return []
    pids: list[int] = []
    for dirpath, _dirs, _files in os.walk(base):
        try:
            text = (Path(dirpath) / "cgroup.procs").read_text()
        except OSError:
            continue
        pids.extend(int(p) for p in text.split() if p.isdigit())
    return pids


async def container_top(sup: Supervisor, layout: CgroupLayout, ps_args: str | None) -> dict[str, object]:
    """The `GET /containers/{id}/top` body. 409 when the container is not running."""
    c = sup.container
    args_text = ps_args or DEFAULT_PS_ARGS
    validate_ps_args(args_text)
    if c.state.status == Status.RESTARTING:
        raise Conflict(f"Container {c.cid} is restarting, wait until the container is running")
    if not c.state.running:
        raise NotRunning(c.cid)
    pids = await asyncio.to_thread(cgroup_pids, layout, cgroups_path(c))
    args = [a for a in args_text.split(" ") if a]
    result = await procs.run(["ps", *args, "-q" + ",".join(str(p) for p in pids)], timeout_s=PS_TIMEOUT_S)
    if result.returncode != 0:
        # Some options (such as f) refuse -q: ask for every process and filter.
        result = await procs.run(["ps", *args], timeout_s=PS_TIMEOUT_S)
        if result.returncode != 0:
            first = result.stderr.decode(errors="replace").split("\n", 1)[0].strip()
            raise SystemError_(f"ps: {first or f'exit status {result.returncode}'}")
    body = parse_ps_output(result.stdout.decode(errors="replace"), set(pids))
    sup.event("top")
    return body
