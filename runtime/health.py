"""Health checks: `State.Health` as dockerd keeps it, and the monitor that probes a container.

The state machine (`apply_result`) is moby's `handleProbeResult`: a probe exiting 0 makes the
container `healthy` and resets `FailingStreak`; any other result adds to the streak (not while
`starting` within the start period) and `Retries` failures in a row make it `unhealthy`. The
last five results are kept (`Log`), each output cut at 4096 bytes ("..." marks the cut). Status
changes emit `health_status: <status>` events. Defaults: interval 30 s, timeout 30 s, retries 3,
start period 0, start interval 5 s (moby daemon/health.go).

`HealthMonitor` is one task per container with a `CMD`/`CMD-SHELL` test (`NONE` and an empty test
disable it): started when the container starts (status `starting`, streak 0, the log kept),
stopped while it is paused and when it stops; the first probe runs one interval after the start.
Probes run through the exec service (an exec with the container's user, workdir and env).
Results are applied synchronously on the event loop, so a stop never races a result; like
dockerd, the health state is not written to disk on every probe (it is saved with the next
state change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.models.containers import HealthConfig
from runtime.errors import PydockError
from runtime.records import now_rfc3339, parse_rfc3339
from runtime.stdio import Sink

if TYPE_CHECKING:
    from runtime.supervisor import Supervisor

log = logging.getLogger("pydock.health")

NS = 1_000_000_000
DEFAULT_INTERVAL_S = 30.0
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_START_PERIOD_S = 0.0
DEFAULT_START_INTERVAL_S = 5.0
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
DEFAULT_SHELL = ("/bin/sh", "-c")

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"

Probe = Callable[["Supervisor", list[str], float], Awaitable[tuple[int, str]]]


# --- pure parts ------------------------------------------------------------------------------------


def probe_kind(config: HealthConfig | None) -> str | None:
    """ "CMD" or "CMD-SHELL" when the container has a runnable check, else None."""
    if config is None or not config.Test:
        return None
    kind = config.Test[0]
    if kind in ("CMD", "CMD-SHELL") and len(config.Test) > 1:
        return kind
    if kind not in ("NONE", "CMD", "CMD-SHELL"):
        log.warning("unknown healthcheck type %r (expected 'CMD')", kind)
    return None


def probe_command(test: Sequence[str], shell: Sequence[str] | None) -> list[str]:
    """The argv of a probe: `CMD` runs its arguments, `CMD-SHELL` runs them with the shell."""
    cmd = list(test[1:])
    if test and test[0] == "CMD-SHELL":
        return [*(shell or DEFAULT_SHELL), *cmd]
    return cmd


@dataclass(frozen=True, slots=True)
class HealthSettings:
    interval_s: float = DEFAULT_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    start_period_s: float = DEFAULT_START_PERIOD_S
    start_interval_s: float = DEFAULT_START_INTERVAL_S
    retries: int = DEFAULT_RETRIES

    @classmethod
    def from_config(cls, c: HealthConfig) -> HealthSettings:
        return cls(
            interval_s=c.Interval / NS if c.Interval else DEFAULT_INTERVAL_S,
            timeout_s=c.Timeout / NS if c.Timeout else DEFAULT_TIMEOUT_S,
            start_period_s=c.StartPeriod / NS if c.StartPeriod else DEFAULT_START_PERIOD_S,
            start_interval_s=c.StartInterval / NS if c.StartInterval else DEFAULT_START_INTERVAL_S,
            retries=c.Retries if c.Retries > 0 else DEFAULT_RETRIES,
        )

    def next_interval(self, elapsed_s: float, status: str) -> float:
        """Seconds to the next probe, `elapsed_s` after the container started (moby getInterval)."""
        if elapsed_s >= self.start_period_s:
            return self.interval_s
        remaining = self.start_period_s - elapsed_s
        if remaining < self.interval_s:
            return remaining
        return self.start_interval_s if status == STARTING else self.interval_s


def reset(health: dict[str, Any] | None) -> dict[str, Any]:
    """The health of a (re)started container: `starting`, no failures, the old log kept."""
    return {"Status": STARTING, "FailingStreak": 0, "Log": list((health or {}).get("Log") or [])}


def apply_result(
    health: dict[str, Any],
    result: dict[str, Any],
    settings: HealthSettings,
    *,
    started_at_s: float,
    probe_start_s: float,
) -> str | None:
    """Record one probe result (moby handleProbeResult); returns the new status if it changed."""
    old = health.get("Status") or STARTING
    entries = list(health.get("Log") or [])
    entries.append(result)
    health["Log"] = entries[-MAX_LOG_ENTRIES:]
    if result["ExitCode"] == 0:
        health["FailingStreak"] = 0
        health["Status"] = HEALTHY
    else:
        within_start = old == STARTING and probe_start_s - started_at_s < settings.start_period_s
        if not within_start:
            streak = int(health.get("FailingStreak") or 0) + 1
            health["FailingStreak"] = streak
            if streak >= settings.retries:
                health["Status"] = UNHEALTHY
    new = health.get("Status") or STARTING
    return new if new != old else None


def go_duration(seconds: float) -> str:
    """Go's `time.Duration.String()` (1s, 500ms, 1m30s, 2h0m0s), as dockerd's messages show it."""
    ns = round(seconds * NS)
    if ns == 0:
        return "0s"
    sign, u = ("-", -ns) if ns < 0 else ("", ns)
    if u < 1000:
        text = f"{u}ns"
    elif u < 1_000_000:
        text = _fraction(u, 1000) + "µs"
    elif u < NS:
        text = _fraction(u, 1_000_000) + "ms"
    else:
        hours, rest = divmod(u, 3600 * NS)
        minutes, rest = divmod(rest, 60 * NS)
        secs = _fraction(rest, NS) + "s"
        text = f"{hours}h{minutes}m{secs}" if hours else (f"{minutes}m{secs}" if minutes else secs)
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = f"{frac:0{len(str(unit)) - 1}d}".rstrip("0")
    return f"{whole}.{digits}"


class LimitedBuffer(Sink):
    """A probe's output: stdout and stderr together, the first 4096 bytes kept."""

    def __init__(self, limit: int = MAX_OUTPUT) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def send(self, stream: int, data: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += data[:room]
        if len(data) > max(room, 0):
            self.truncated = True

    def text(self) -> str:
        out = self.data.decode(errors="replace")
        return out + "..." if self.truncated else out

    def timeout_text(self, timeout_s: float) -> str:
        out = self.text()
        base = f"Health check exceeded timeout ({go_duration(timeout_s)})"
        return f"{base}: {out}" if out else base


# --- the monitor -----------------------------------------------------------------------------------


class HealthMonitor:
    """The health checks of one container while it runs unpaused; see the module docstring."""

    def __init__(self, sup: Supervisor, test: list[str], settings: HealthSettings, probe: Probe) -> None:
        self.sup = sup
        self.test = test
        self.settings = settings
        self._probe = probe
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_container(cls, sup: Supervisor, probe: Probe) -> HealthMonitor | None:
        """A monitor for a container that just started (its health reset to `starting`), or None
        when it has no check."""
        config = sup.container.config.Healthcheck
        if probe_kind(config) is None:
            return None
        assert config is not None and config.Test is not None
        state = sup.container.state
        state.health = reset(state.health)
        return cls(sup, list(config.Test), HealthSettings.from_config(config), probe)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._run(), name=f"health-{self.sup.container.short_id}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def wait_stopped(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        state = self.sup.container.state
        started_at_s = parse_rfc3339(state.started_at) or time.time()
        while True:
            status = (state.health or {}).get("Status") or STARTING
            await asyncio.sleep(self.settings.next_interval(time.time() - started_at_s, status))
            probe_start_s = time.time()
            start_text = now_rfc3339()
            try:
                code, output = await self._probe(self.sup, self.test, self.settings.timeout_s)
            except PydockError as exc:
                log.warning("health check error: %s", exc, extra={"container": self.sup.container.short_id})
                code, output = -1, exc.message
            result = {"Start": start_text, "End": now_rfc3339(), "ExitCode": code, "Output": output}
            if state.health is None:
                state.health = reset(None)
            changed = apply_result(
                state.health,
                result,
                self.settings,
                started_at_s=started_at_s,
                probe_start_s=probe_start_s,
            )
            if changed is not None:
                self.sup.event(f"health_status: {changed}")
