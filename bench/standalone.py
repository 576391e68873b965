"""The command line the single-scenario bench modules share (`python -m bench.bench_exec`, ...):
a pydock of their own unless `--pydock-host`, a throwaway dockerd with `--start-dockerd`, and the
result as a table or `--json`."""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

Runner = Callable[[argparse.Namespace, str, "str | None"], dict[str, Any]]


def main(
    doc: str | None,
    run: Runner,
    argv: list[str] | None = None,
    *,
    rounds: int = 3,
    add_arguments: Callable[[argparse.ArgumentParser], object] | None = None,
) -> int:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--pydock-host")
    parser.add_argument("--dockerd-host")
    parser.add_argument("--start-dockerd", action="store_true", help="start a throwaway dockerd to compare")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--json", action="store_true")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        host = args.pydock_host
        if host is None:
            from tests.integration.daemon import running_daemon

            host = stack.enter_context(running_daemon()).host
        dockerd_host = args.dockerd_host
        if dockerd_host is None and args.start_dockerd:
            from bench.dockerd import DockerdEngine

            engine = DockerdEngine(
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pdbench-dd-")))
            )
            stack.callback(engine.close)
            engine.start_daemon()
            dockerd_host = engine.host
        result = run(args, host, dockerd_host)
    if args.json:
        print(json.dumps(result))
    else:
        width = max((len(k) for k in result), default=0) + 2
        for key, value in result.items():
            print(f"{key:{width}} {value}")
    return 0
