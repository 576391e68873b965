"""The health-check state machine (moby handleProbeResult), its timing and its texts."""

from __future__ import annotations

from typing import Any

import pytest

from app.models.containers import HealthConfig
from runtime.health import (
    HealthSettings,
    LimitedBuffer,
    apply_result,
    go_duration,
    probe_command,
    probe_kind,
    reset,
)

S = 1_000_000_000


def result(code: int, output: str = "") -> dict[str, Any]:
    return {"Start": "t0", "End": "t1", "ExitCode": code, "Output": output}


def test_settings_defaults_and_conversion() -> None:
    assert HealthSettings.from_config(HealthConfig(Test=["CMD", "true"])) == HealthSettings(30, 30, 0, 5, 3)
    c = HealthConfig(Test=["CMD", "x"], Interval=2 * S, Timeout=S // 2, StartPeriod=10 * S, Retries=5)
    s = HealthSettings.from_config(c)
    assert (s.interval_s, s.timeout_s, s.start_period_s, s.retries) == (2.0, 0.5, 10.0, 5)
    assert HealthSettings.from_config(HealthConfig(Test=["CMD", "x"], Retries=-1)).retries == 3


def test_probe_kinds_and_commands() -> None:
    assert probe_kind(None) is None
    assert probe_kind(HealthConfig(Test=["NONE"])) is None
    assert probe_kind(HealthConfig(Test=[])) is None
    assert probe_kind(HealthConfig(Test=["BOGUS", "x"])) is None
    assert probe_kind(HealthConfig(Test=["CMD", "true"])) == "CMD"
    assert probe_kind(HealthConfig(Test=["CMD-SHELL", "exit 0"])) == "CMD-SHELL"
    assert probe_command(["CMD", "curl", "-f", "x"], None) == ["curl", "-f", "x"]
    assert probe_command(["CMD-SHELL", "test -f /a"], None) == ["/bin/sh", "-c", "test -f /a"]
    assert probe_command(["CMD-SHELL", "x"], ["/bin/bash", "-ec"]) == ["/bin/bash", "-ec", "x"]


def test_healthy_unhealthy_and_back() -> None:
    settings = HealthSettings(retries=2)
    h = reset(None)
    assert h == {"Status": "starting", "FailingStreak": 0, "Log": []}
    kw = {"started_at_s": 0.0, "probe_start_s": 100.0}
    assert apply_result(h, result(1), settings, **kw) is None
    assert (h["Status"], h["FailingStreak"]) == ("starting", 1)
    assert apply_result(h, result(1), settings, **kw) == "unhealthy"
    assert apply_result(h, result(1), settings, **kw) is None
    assert h["FailingStreak"] == 3
    assert apply_result(h, result(0), settings, **kw) == "healthy"
    assert h["FailingStreak"] == 0
    assert apply_result(h, result(-1, "boom"), settings, **kw) is None  # healthy survives one failure
    assert h["Status"] == "healthy"


def test_start_period_failures_do_not_count_while_starting() -> None:
    settings = HealthSettings(retries=1, start_period_s=60)
    h = reset(None)
    assert apply_result(h, result(1), settings, started_at_s=0.0, probe_start_s=10.0) is None
    assert (h["Status"], h["FailingStreak"]) == ("starting", 0)
    assert apply_result(h, result(1), settings, started_at_s=0.0, probe_start_s=61.0) == "unhealthy"
    # once healthy, a failure inside the start period counts
    h = reset(None)
    apply_result(h, result(0), settings, started_at_s=0.0, probe_start_s=1.0)
    assert apply_result(h, result(1), settings, started_at_s=0.0, probe_start_s=2.0) == "unhealthy"


def test_log_keeps_the_last_five_and_reset_keeps_it() -> None:
    h = reset(None)
    for i in range(8):
        apply_result(h, result(0, str(i)), HealthSettings(), started_at_s=0, probe_start_s=1)
    assert [e["Output"] for e in h["Log"]] == ["3", "4", "5", "6", "7"]
    again = reset({**h, "Status": "unhealthy", "FailingStreak": 9})
    assert (again["Status"], again["FailingStreak"], len(again["Log"])) == ("starting", 0, 5)


@pytest.mark.parametrize(
    ("elapsed", "status", "expected"),
    [
        (0.0, "starting", 5.0),  # start interval while starting in the start period
        (0.0, "healthy", 30.0),
        (95.0, "starting", 5.0),  # 5 s of start period left < the 30 s interval: probe at its end
        (100.0, "starting", 30.0),
        (500.0, "starting", 30.0),
    ],
)
def test_next_interval(elapsed: float, status: str, expected: float) -> None:
    assert HealthSettings(start_period_s=100.0).next_interval(elapsed, status) == expected


def test_next_interval_without_start_period() -> None:
    assert HealthSettings(interval_s=1.0).next_interval(0.0, "starting") == 1.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1, "1s"),
        (0.5, "500ms"),
        (1.5, "1.5s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (0.0000015, "1.5µs"),
        (30, "30s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_limited_buffer_truncates_with_dots() -> None:
    buf = LimitedBuffer(limit=8)
    buf.send(1, b"hello ")
    buf.send(2, b"world")
    assert buf.text() == "hello wo..."
    assert buf.timeout_text(1) == "Health check exceeded timeout (1s): hello wo..."
    assert LimitedBuffer().timeout_text(0.25) == "Health check exceeded timeout (250ms)"
