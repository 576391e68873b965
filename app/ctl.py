"""`pydockctl`: a debugging CLI over pydock's runtime state (the `ctr` role).

It reads what pydockd persisted and what the kernel and the OCI runtime know, without going
through the API (so it works when the daemon is down or wedged):

    pydockctl ps                      containers: record status, init pid and whether it lives
    pydockctl inspect CID             record + OCI runtime state + mounts + cgroup + network
    pydockctl mounts                  mounts under the data and exec roots
    pydockctl ports                   published ports and the rules that carry them
    pydockctl iptables                every rule in the chains pydock owns
    pydockctl runtime-state CID       `runc state` of a container
    pydockctl run BUNDLE [--id ID]    run a raw OCI bundle through the runtime, in the foreground

Paths and names default to the daemon's defaults; pass the daemon's flags when they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from runtime.config import DEFAULT_CHAIN_PREFIX, DEFAULT_DATA_ROOT, DEFAULT_EXEC_ROOT
from runtime.ids import is_full_id


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _records(data_root: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    base = data_root / "containers"
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        if is_full_id(entry.name):
            config = _read_json(entry / "config.json") or {"Id": entry.name}
            state = _read_json(entry / "state.json") or {}
            out.append((config, state))
    return out


def _runtime(args: argparse.Namespace) -> str:
    name = str(args.runtime)
    return shutil.which(name) or name


def _runtime_state(args: argparse.Namespace, cid: str) -> Any:
    root = Path(args.exec_root) / "runtime"
    result = subprocess.run(
        [_runtime(args), "--root", str(root), "state", cid], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return {"error": result.stderr.strip() or f"exit {result.returncode}"}
    return json.loads(result.stdout)


def _mounts(roots: list[str]) -> list[dict[str, str]]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        target = fields[4]
        if any(target == r or target.startswith(r.rstrip("/") + "/") for r in roots):
            fstype, source = ([*right.split(), "", ""])[:2]
            out.append({"target": target, "type": fstype, "source": source})
    return out


def cmd_ps(args: argparse.Namespace) -> int:
    rows = [("CONTAINER ID", "NAME", "STATUS", "PID", "ALIVE", "BUNDLE")]
    bundles = Path(args.exec_root) / "containers"
    for config, state in _records(Path(args.data_root)):
        cid = config.get("Id", "?")
        pid = int(state.get("pid", 0) or 0)
        rows.append(
            (
                cid[:12],
                str(config.get("Name", "")),
                str(state.get("status", "?")),
                str(pid or "-"),
                "yes" if _alive(pid) else "no",
                "yes" if (bundles / cid / "config.json").exists() else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(col.ljust(widths[i]) for i, col in enumerate(row)).rstrip())
    return 0


def _resolve(args: argparse.Namespace, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
    matches = [
        (c, s)
        for c, s in _records(Path(args.data_root))
        if c.get("Id", "").startswith(ref) or c.get("Name") == ref
    ]
    if len(matches) != 1:
        raise SystemExit(f"pydockctl: {'no' if not matches else 'more than one'} container matches {ref!r}")
    return matches[0]


def cmd_inspect(args: argparse.Namespace) -> int:
    config, state = _resolve(args, args.container)
    cid = config["Id"]
    rdir = Path(args.exec_root) / "containers" / cid
    cgroup = f"/pydock/{cid}"
    cgroup_dirs = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*{cgroup}") if p.is_dir()]
    cgroup_dirs += [str(p) for p in [Path("/sys/fs/cgroup") / cgroup.lstrip("/")] if p.is_dir()]
    pid = int(state.get("pid", 0) or 0)
    report = {
        "record": {"config": config, "state": state},
        "init": {"pid": pid, "alive": _alive(pid)},
        "bundle": str(rdir) if rdir.exists() else None,
        "bundle_files": sorted(p.name for p in rdir.iterdir()) if rdir.is_dir() else [],
        "runtime_state": _runtime_state(args, cid),
        "mounts": _mounts([str(rdir), str(Path(args.data_root) / "containers" / cid)]),
        "cgroups": sorted(set(cgroup_dirs)),
        "network": config.get("NetworkSettings"),
    }
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def cmd_mounts(args: argparse.Namespace) -> int:
    for m in _mounts([args.data_root, args.exec_root]):
        print(f"{m['type']:<10} {m['target']}  ({m['source']})")
    return 0


def _owned_rules(prefix: str) -> list[str]:
    lines = []
    for table in ("filter", "nat"):
        saved = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=False)
        for line in saved.stdout.splitlines():
            words = line.split()
            if line.startswith(":") and line[1:].split()[0].startswith(prefix):
                lines.append(f"{table}: chain {line[1:].split()[0]}")
            elif line.startswith("-A ") and (
                words[1].startswith(prefix) or f"-j {prefix}" in line or f"-g {prefix}" in line
            ):
                lines.append(f"{table}: {line}")
    return lines


def cmd_iptables(args: argparse.Namespace) -> int:
    for line in _owned_rules(args.chain_prefix):
        print(line)
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    found = False
    for config, state in _records(Path(args.data_root)):
        ports = (config.get("NetworkSettings") or {}).get("Ports") or {}
        for key, bindings in ports.items():
            for b in bindings or []:
                found = True
                print(f"{config['Id'][:12]}  {config.get('Name', '')}  {key} -> {b.get('HostIp', '')}:"
                      f"{b.get('HostPort', '')}  ({state.get('status', '?')})")  # fmt: skip
    dnat = [line for line in _owned_rules(args.chain_prefix) if "DNAT" in line]
    if dnat:
        print("\nDNAT rules:")
        for line in dnat:
            print("  " + line)
    if not found and not dnat:
        print("no published ports")
    return 0


def cmd_runtime_state(args: argparse.Namespace) -> int:
    config, _ = _resolve(args, args.container)
    print(json.dumps(_runtime_state(args, config["Id"]), indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a raw bundle in the foreground with the daemon's runtime, under a separate --root."""
    bundle = Path(args.bundle).resolve()
    if not (bundle / "config.json").exists():
        raise SystemExit(f"pydockctl: {bundle}/config.json not found")
    root = Path(args.exec_root) / "runtime-debug"
    root.mkdir(parents=True, exist_ok=True)
    cid = args.id or f"pydockctl-{secrets.token_hex(4)}"
    argv = [_runtime(args), "--root", str(root), "run", "--bundle", str(bundle), cid]
    print(f"+ {' '.join(argv)}", file=sys.stderr)
    return subprocess.call(argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pydockctl", description="Debug pydock's runtime state directly.")
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="the daemon's --data-root")
    p.add_argument("--exec-root", default=str(DEFAULT_EXEC_ROOT), help="the daemon's --exec-root")
    p.add_argument("--iptables-chain-prefix", dest="chain_prefix", default=DEFAULT_CHAIN_PREFIX)
    p.add_argument("--runtime", default="runc", help="OCI runtime binary (default runc)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("ps", help="containers, their init pids and whether they live").set_defaults(fn=cmd_ps)
    inspect = sub.add_parser("inspect", help="everything pydock knows about one container")
    inspect.add_argument("container")
    inspect.set_defaults(fn=cmd_inspect)
    sub.add_parser("mounts", help="mounts under the data and exec roots").set_defaults(fn=cmd_mounts)
    sub.add_parser("ports", help="published ports and their DNAT rules").set_defaults(fn=cmd_ports)
    sub.add_parser("iptables", help="rules in the chains pydock owns").set_defaults(fn=cmd_iptables)
    state = sub.add_parser("runtime-state", help="the OCI runtime's state of a container")
    state.add_argument("container")
    state.set_defaults(fn=cmd_runtime_state)
    run = sub.add_parser("run", help="run a raw OCI bundle in the foreground")
    run.add_argument("bundle")
    run.add_argument("--id", help="container id for the runtime (default: random)")
    run.set_defaults(fn=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0 and args.command in ("run", "inspect", "runtime-state", "iptables", "ports"):
        print("pydockctl: this command needs root", file=sys.stderr)
        return 1
    code: int = args.fn(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
