"""runtime/procs.py: spawning helper programs from the loop (also under uvloop)."""

from __future__ import annotations

import os
import time

import pytest
import uvloop

from runtime import procs


async def test_output_status_and_input() -> None:
    r = await procs.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    big = os.urandom(1 << 20)
    r = await procs.run(["cat"], input=big)
    assert r.returncode == 0 and r.stdout == big


async def test_signal_death_is_negative() -> None:
    r = await procs.run(["sh", "-c", "kill -9 $$"])
    assert r.returncode == -9


async def test_timeout_kills_and_reaps() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await procs.run(["sh", "-c", "trap '' TERM; sleep 30"], timeout_s=0.2, kill_grace_s=0.2)
    assert time.monotonic() - started < 5


async def test_grandchild_holding_the_pipe_does_not_hang() -> None:
    started = time.monotonic()
    r = await procs.run(["sh", "-c", "sleep 30 & echo bg"], timeout_s=10)
    assert r.returncode == 0 and r.stdout == b"bg\n"
    assert time.monotonic() - started < procs.EOF_GRACE_S + 2


async def test_missing_program() -> None:
    with pytest.raises(FileNotFoundError):
        await procs.run(["/nonexistent/program"])


def test_works_under_uvloop_and_is_fast() -> None:
    async def many() -> float:
        await procs.run(["true"])
        started = time.perf_counter()
        for _ in range(20):
            r = await procs.run(["true"])
            assert r.returncode == 0
        return (time.perf_counter() - started) / 20

    per_call = uvloop.run(many())
    assert per_call < 0.05
