"""The benchmark harness: metrics, interleaved sampling, summaries, progress and the time budget.

A `Metric` is one row of the report (one thing measured, e.g. `docker run --rm` latency) with raw
samples per engine (`runc`, `crun`, `pydock`, `dockerd`) or the reason an engine was skipped.
`interleave()` takes one sample of every engine per iteration, rotating their order, so that slow
drifts of the machine (page cache, CPU frequency, other tenants) hit every engine alike.

This module knows nothing about daemons or containers; the scenario modules do.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TextIO

ENGINES = ("runc", "crun", "pydock", "dockerd")
FLOORS = ("runc", "crun")
Better = Literal["lower", "higher"]


class Skip(Exception):
    """An engine (or a whole scenario) cannot be measured; the message is the reason."""


@dataclass(slots=True, frozen=True)
class Goal:
    """pydock's target from issue 9: `pydock / versus` must be `op` `ratio`."""

    op: Literal["<=", ">="]
    ratio: float
    versus: str = "dockerd"
    text: str = ""

    def met(self, value: float) -> bool:
        return value <= self.ratio if self.op == "<=" else value >= self.ratio

    def describe(self) -> str:
        return self.text or f"{self.op} {self.ratio:g}x {self.versus}"


@dataclass(slots=True)
class Summary:
    n: int
    median: float
    p90: float
    mean: float
    minimum: float
    maximum: float


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: list[float]) -> Summary:
    return Summary(
        n=len(values),
        median=statistics.median(values),
        p90=percentile(values, 90),
        mean=statistics.fmean(values),
        minimum=min(values),
        maximum=max(values),
    )


@dataclass(slots=True)
class Metric:
    """One row of the report. `floor_label` names what the floor column means for this row."""

    key: str
    title: str
    unit: str
    better: Better
    goal: Goal | None = None
    floor_label: str = "runc"
    samples: dict[str, list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, engine: str, value: float) -> None:
        self.samples.setdefault(engine, []).append(value)

    def skip(self, engine: str, reason: str) -> None:
        """No (more) samples from `engine`; the reason is kept (as a note if it has samples)."""
        if self.samples.get(engine):
            self.notes.append(f"{engine}: stopped after {len(self.samples[engine])} samples: {reason}")
        else:
            self.skipped[engine] = reason

    def summary(self, engine: str) -> Summary | None:
        values = self.samples.get(engine)
        return summarize(values) if values else None

    def ratio(self, engine: str = "pydock", versus: str | None = None) -> float | None:
        """median(engine) / median(versus); None when either is missing."""
        versus = versus or (self.goal.versus if self.goal else "dockerd")
        a, b = self.summary(engine), self.summary(versus)
        if a is None or b is None or b.median == 0:
            return None
        return a.median / b.median

    def met(self) -> bool | None:
        if self.goal is None:
            return None
        r = self.ratio(versus=self.goal.versus)
        return None if r is None else self.goal.met(r)


class Progress:
    """Progress lines on stderr, stamped with the time since the run started."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.started = time.monotonic()
        self._stream = stream

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, message: str) -> None:
        stream = self._stream or sys.stderr
        print(f"[bench {self.elapsed():6.1f}s] {message}", file=stream, flush=True)


Sampler = Callable[[], float]


def interleave(
    metric: Metric,
    samplers: dict[str, Sampler],
    iterations: int,
    *,
    warmup: int = 1,
    progress: Progress | None = None,
    scale: float = 1.0,
) -> None:
    """Take `iterations` samples from every engine, one engine after the other per iteration,
    rotating the order; `warmup` extra rounds first are thrown away. A sampler that raises
    `Skip` is dropped for this metric, with its reason."""
    live = dict(samplers)
    names = list(live)
    total = warmup + iterations
    for i in range(total):
        shift = i % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            if name not in live:
                continue
            try:
                value = live[name]()
            except Exception as exc:  # one engine failing must not stop the others' numbers
                reason = str(exc) if isinstance(exc, Skip) else f"failed: {type(exc).__name__}: {exc}"
                metric.skip(name, reason[:500])
                del live[name]
                if progress:
                    progress(f"{metric.key}: {name} dropped: {reason[:300]}")
                continue
            if i >= warmup:
                metric.add(name, value * scale)
        if progress and (i + 1) % max(1, total // 4) == 0 and i + 1 < total:
            progress(f"{metric.key}: {i + 1}/{total}")
    if progress:
        parts = []
        for name in names:
            s = metric.summary(name)
            if s is not None:
                parts.append(f"{name} {s.median:.4g}{metric.unit}")
        progress(f"{metric.key}: " + (", ".join(parts) or "no samples"))


def timed(fn: Callable[[], object]) -> float:
    """Seconds `fn()` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rotate(items: Iterable[str], i: int) -> list[str]:
    seq = list(items)
    if not seq:
        return seq
    k = i % len(seq)
    return seq[k:] + seq[:k]
