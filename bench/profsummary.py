"""Rank where pydockd's samples go in a py-spy raw (collapsed-stack) file.

    python -m bench.profsummary DIR/run_rm.txt [--rate 250] [--top 25] [--thread MainThread] [--match app/]

Prints, per thread, the busiest functions by inclusive samples (the function or anything it calls
is running) and by self samples (it is the innermost frame), as seconds of CPU at the sampling
rate. `--match` keeps only frames whose file contains the text (e.g. `runtime/`) for the
inclusive ranking, so pydock's own code can be read apart from the libraries under it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# Innermost Python frames of a thread that is blocked, not running: py-spy cannot always tell
# (the wait is in C), so these samples are dropped unless --keep-idle. `Runner.run` alone as the
# leaf of the main thread is uvloop's C loop: idle in epoll_wait or busy in C callbacks, kept.
IDLE_LEAVES = {
    "_worker (concurrent/futures/thread.py)",
    "Condition.wait (threading.py)",
    "Queue.get (queue.py)",
    "EpollSelector.select (selectors.py)",
    "Event.wait (threading.py)",
    "Thread._wait_for_tstate_lock (threading.py)",
}
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def _name(frame: str) -> tuple[str, str]:
    """'func (path/to/file.py:12)' -> ('func', 'path/to/file.py')."""
    m = FRAME.match(frame.strip())
    if m is None:
        return frame.strip(), ""
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return m.group("func"), path


def parse(path: Path, keep_idle: bool = False) -> dict[str, list[tuple[list[tuple[str, str]], int]]]:
    """thread name -> [(frames outermost first, count)]."""
    threads: dict[str, list[tuple[list[tuple[str, str]], int]]] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        thread = parts[0].split(": ", 1)[-1] if parts[0].startswith("thread") else "?"
        thread = re.sub(r"_\d+$", "", thread)  # pool workers: one group per pool
        frames = [_name(p) for p in parts[1:]]
        if not keep_idle and frames and f"{frames[-1][0]} ({frames[-1][1]})" in IDLE_LEAVES:
            continue
        threads.setdefault(thread, []).append((frames, int(count)))
    return threads


def rank(
    stacks: list[tuple[list[tuple[str, str]], int]], match: str | None
) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    for frames, count in stacks:
        total += count
        seen = set()
        for func, file in frames:
            key = f"{func} ({file})"
            if key not in seen and (match is None or match in file):
                inclusive[key] += count
                seen.add(key)
        if frames:
            func, file = frames[-1]
            self_[f"{func} ({file})"] += count
    return total, inclusive, self_


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("profile", type=Path)
    ap.add_argument("--rate", type=float, default=250.0, help="py-spy's --rate (samples/s)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--thread", help="only this thread (e.g. MainThread)")
    ap.add_argument("--match", help="inclusive ranking: only frames whose file contains this")
    ap.add_argument("--keep-idle", action="store_true", help="keep samples of threads blocked in a wait")
    args = ap.parse_args(argv)
    threads = parse(args.profile, args.keep_idle)
    grand = sum(c for stacks in threads.values() for _, c in stacks)
    idle = "" if args.keep_idle else ", idle waits dropped"
    print(f"{args.profile}: {grand} samples = {grand / args.rate:.2f} s at {args.rate:g} Hz{idle}")
    for thread, stacks in sorted(threads.items(), key=lambda kv: -sum(c for _, c in kv[1])):
        if args.thread and thread != args.thread:
            continue
        total, inclusive, self_ = rank(stacks, args.match)
        print(
            f"\n== thread {thread}: {total} samples ({total / args.rate:.2f} s, {100 * total / grand:.0f}%)"
        )
        print("-- inclusive --")
        for key, n in inclusive.most_common(args.top):
            print(f"{n / args.rate:8.3f} s {100 * n / total:5.1f}%  {key}")
        print("-- self --")
        for key, n in self_.most_common(min(args.top, 15)):
            print(f"{n / args.rate:8.3f} s {100 * n / total:5.1f}%  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
