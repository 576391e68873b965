"""Pull A/B: the working tree's pydockd against an older revision's, and dockerd, interleaved.

    python -m bench.pull_ab [--rounds 12] [--baseline REV] [--no-dockerd] [--profile DIR]

The baseline's `app/`, `runtime/` and `netproxy/` come from `git archive REV` into a temp dir put
first on the baseline daemon's PYTHONPATH (same venv). Every daemon pulls the bench_pull image
once to warm the registry's page cache, then each round pulls with every daemon, the order
rotating. Prints per-round times, medians and ratios to dockerd (of the medians, and the median
of the per-round ratios). `--profile` records py-spy per pydockd (see bench.profsummary).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import bench_pull, sc_profile
from bench.dockerd import DockerdEngine
from bench.engines import Engine, PydockEngine
from tests.integration.registry import running_registry

REPO = Path(__file__).resolve().parents[1]


def snapshot(rev: str, dest: Path) -> None:
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "app", "runtime", "netproxy"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--baseline", help="a git revision to compare with (e.g. HEAD~3)")
    ap.add_argument("--no-dockerd", action="store_true")
    ap.add_argument("--profile", type=Path)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pdab-", dir="/tmp"))
    engines: dict[str, Engine] = {}
    profiled: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: subprocess.run(["rm", "-rf", str(work)], check=False))
        if args.baseline:
            snapshot(args.baseline, work / "baseline-src")
            base = PydockEngine(work / "baseline")
            base.daemon.env_extra["PYTHONPATH"] = str(work / "baseline-src")
            stack.callback(base.close)
            base.start_daemon()
            engines[f"pydock@{args.baseline}"] = base
            profiled[f"pydock@{args.baseline}"] = base.pid
        new = PydockEngine(work / "new")
        stack.callback(new.close)
        new.start_daemon()
        engines["pydock"] = new
        profiled["pydock"] = new.pid
        if not args.no_dockerd:
            dockerd = DockerdEngine(work)
            stack.callback(dockerd.close)
            dockerd.start_daemon()
            engines["dockerd"] = dockerd
        reg = stack.enter_context(running_registry())
        ref, size = bench_pull._prepare(reg, work)
        print(f"image {size / 1e6:.1f} MB, {bench_pull.LAYERS} layers", flush=True)
        for e in engines.values():
            bench_pull._pull_once(e.host, ref)
        profilers = (
            [sc_profile.start(args.profile, n.replace("@", "-"), pid) for n, pid in profiled.items()]
            if args.profile
            else []
        )
        samples: dict[str, list[float]] = {n: [] for n in engines}
        names = list(engines)
        for i in range(args.rounds):
            for n in names[i % len(names) :] + names[: i % len(names)]:
                samples[n].append(bench_pull._pull_once(engines[n].host, ref))
            print(f"round {i:2}: " + "  ".join(f"{n} {samples[n][-1]:.3f}" for n in names), flush=True)
            time.sleep(0.2)
        for p in profilers:
            if p is not None:
                sc_profile.stop(p)
        for n, ts in samples.items():
            print(f"{n:24} median {statistics.median(ts):.3f}  min {min(ts):.3f}  max {max(ts):.3f}")
        if "dockerd" in samples:
            ref_median = statistics.median(samples["dockerd"])
            for n, ts in samples.items():
                if n != "dockerd":
                    paired = statistics.median(a / b for a, b in zip(ts, samples["dockerd"], strict=True))
                    print(
                        f"{n}/dockerd: ratio of medians {statistics.median(ts) / ref_median:.3f}, "
                        f"median of per-round ratios {paired:.3f}"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
