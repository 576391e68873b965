"""`make bench`: every scenario of issue 9 in one run, engines interleaved.

    python -m bench [--compare dockerd] [--quick] [--only run_rm,many] [--profile DIR]

Starts its own pydockd (and, with `--compare dockerd`, its own dockerd + containerd) on temp
sockets, roots, bridges, subnets and chain prefixes, measures, writes bench/results/latest.{json,md,png}
and removes everything it made. Progress goes to stderr. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import report, sc_api, sc_lifecycle, sc_logs, sc_profile, sc_proxy, sc_pull, sc_scale
from bench.context import Context, Scenario, Sizes
from bench.dockerd import DockerdEngine
from bench.engines import DOCKER, Engine, PydockEngine
from bench.floor import floors
from bench.harness import Metric, Progress, Skip
from runtime import busybox_image

REPO = Path(__file__).resolve().parents[1]
SCENARIOS: dict[str, Scenario] = {
    **sc_scale.SCENARIOS,  # first: memory per container is measured on fresh daemons
    **sc_lifecycle.SCENARIOS,
    **sc_logs.SCENARIOS,
    **sc_api.SCENARIOS,
    **sc_proxy.SCENARIOS,
    **sc_pull.SCENARIOS,
}

# the report lists scenarios in the order, whatever order they ran in
REPORT_ORDER = ("cli", "run_rm", "run_d_rm", "exec", "many", "proxy", "logs", "api", "pull")
assert set(REPORT_ORDER) == set(SCENARIOS)


def _sh(*argv: str) -> str:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown CPU",
    )  # fmt: skip
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    os_name = next(
        (line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
         if line.startswith("PRETTY_NAME=")),
        "Linux",
    )  # fmt: skip
    cgroup = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1"
    if cgroup == "v1" and Path("/sys/fs/cgroup/unified").is_dir():
        cgroup = "v1 hybrid"
    cores = os.cpu_count() or 1
    info = {
        "cpu": cpu,
        "cores": cores,
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": os.uname().release,
        "os": os_name,
        "cgroup": cgroup,
    }
    info["summary"] = (
        f"{cores}-core {cpu}, {info['memory_gib']} GiB, {os_name}, kernel {info['kernel']}, cgroup {cgroup}"
    )
    return info


def versions() -> dict[str, str]:
    return {
        "pydock": _sh("git", "-C", str(REPO), "describe", "--always", "--dirty"),
        "python": sys.version.split()[0],
        "docker_cli": _sh(DOCKER, "--version"),
        "dockerd": _sh("dockerd", "--version"),
        "runc": _sh("runc", "--version").splitlines()[0] if _sh("runc", "--version") else "",
        "crun": _sh("crun", "--version").splitlines()[0] if _sh("crun", "--version") else "",
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    ap.add_argument("--compare", choices=("dockerd",), help="also start a real dockerd and compare")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the harness")
    ap.add_argument("--only", help=f"comma-separated scenarios (of: {', '.join(SCENARIOS)})")
    ap.add_argument("--iterations", type=int, help="latency samples per engine")
    ap.add_argument("--containers", type=int, help="containers in the 'many' scenario")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where latest.* go")
    ap.add_argument("--profile", type=Path, help="py-spy record pydockd per scenario into this dir")
    args = ap.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(SCENARIOS)
        if unknown:
            ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup


def run(args: argparse.Namespace) -> int:
    progress = Progress()
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.iterations:
        sizes.iterations = args.iterations
    if args.containers:
        sizes.containers = args.containers
    chosen = args.only.split(",") if args.only else list(SCENARIOS)
    work = Path(tempfile.mkdtemp(prefix="pdbench-", dir="/tmp"))
    by_scenario: dict[str, list[Metric]] = {}
    errors: dict[str, str] = {}
    engine_status: dict[str, str] = {}
    started = time.monotonic()
    found = versions()
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: subprocess.run(["rm", "-rf", str(work)], check=False))
        tar = work / "busybox.tar"
        busybox_image.build_archive(tar)
        progress("OCI runtimes (the floor)")
        usable, unusable = floors(work)
        for f in usable:
            stack.callback(f.close)
            engine_status[f.name] = "running (raw OCI runtime: the floor)"
        skipped: dict[str, str] = dict(unusable)
        engines: list[Engine] = []
        progress("starting pydockd")
        pydock = PydockEngine(work)
        stack.callback(pydock.close)
        pydock.start_daemon()
        pydock.load_image(tar)
        engines.append(pydock)
        engine_status["pydock"] = f"running ({found['pydock'] or 'working tree'}, uvloop, log level info)"
        if args.compare == "dockerd":
            progress("starting dockerd (+ its own containerd)")
            dockerd = DockerdEngine(work)
            try:
                stack.callback(dockerd.close)
                dockerd.start_daemon()
                dockerd.load_image(tar)
                engines.append(dockerd)
                engine_status["dockerd"] = f"running ({found['dockerd']}, own containerd, --iptables)"
            except Skip as exc:
                skipped["dockerd"] = str(exc)
        else:
            skipped["dockerd"] = "not asked for (make bench COMPARE=dockerd)"
        for name, reason in skipped.items():
            engine_status[name] = f"not measured: {reason}"
        ctx = Context(work, engines, usable, sizes, progress, tar, skipped_engines=skipped)
        for name in chosen:
            progress(f"scenario {name}")
            profiler = sc_profile.start(args.profile, name, pydock.pid) if args.profile else None
            try:
                by_scenario[name] = SCENARIOS[name](ctx)
            except Exception as exc:  # one broken scenario must not lose the others' numbers
                errors[name] = f"{type(exc).__name__}: {exc}"
                progress(f"scenario {name} FAILED: {errors[name]}")
                traceback.print_exc(file=sys.stderr)
            finally:
                if profiler is not None:
                    sc_profile.stop(profiler)
                for e in engines:
                    with contextlib.suppress(Exception):
                        e.remove_bench_containers()
        progress("stopping daemons and cleaning up")
    metrics = [m for name in REPORT_ORDER for m in by_scenario.get(name, [])]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "make bench"
        + (f" COMPARE={args.compare}" if args.compare else "")
        + (" (quick)" if args.quick else ""),
        "duration_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "versions": found,
        "sizes": asdict(sizes),
        "engines": engine_status,
        "profiled": bool(args.profile),
        "errors": errors,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(args.out / "latest.json", meta, metrics)
    (args.out / "latest.md").write_text(report.markdown(meta, metrics))
    why = report.write_png(args.out / "latest.png", meta, metrics)
    if why:
        progress(f"no chart: {why}")
    progress(f"done in {meta['duration_s']} s: {args.out / 'latest.md'}")
    sys.stdout.write(report.markdown(meta, metrics))
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("make bench needs root (it runs containers, bridges and iptables rules)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
