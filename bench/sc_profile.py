"""`--profile DIR`: py-spy records pydockd while each scenario runs, one collapsed-stack file each.

    DIR/<scenario>.txt      py-spy's raw format: "frame;frame;... count" per line (flamegraph input)
    python -m bench.profsummary DIR/run_rm.txt     # where the samples go, ranked

py-spy samples the live daemon from outside without pausing it (`--nonblocking`: a blocking
sampler at 250 Hz cuts pydock's requests/s by 10x), still the numbers of a profiled run are a
little slower than a plain one; the run's JSON says `"profiled": true`.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(out_dir: Path, scenario: str, pid: int, rate_hz: int = 250) -> subprocess.Popen[bytes] | None:
    binary = py_spy()
    if binary is None:
        print("[bench] py-spy is not installed (pip install -e '.[bench]'): no profile", file=sys.stderr)
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--rate", str(rate_hz), "--format", "raw",
         "--output", str(out_dir / f"{scenario}.txt"), "--threads", "--nonblocking"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    """py-spy writes its file when interrupted."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
