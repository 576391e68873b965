"""What every scenario gets: the engines that run, the OCI floors, the sizes of this run.

Scenarios are functions `scenario(ctx) -> list[Metric]`; they leave no containers behind (the
runner also sweeps every engine's bench containers after each scenario).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.engines import Engine
from bench.floor import OciFloor
from bench.harness import Metric, Progress, Sampler, interleave, timed


@dataclass(slots=True)
class Sizes:
    """How much each scenario does; `quick()` is for a smoke run of the harness."""

    iterations: int = 20  # latency samples per engine (after warm-up)
    containers: int = 200  # the many-containers scenario
    api_containers: int = 10  # containers listed by the requests/s scenario
    api_seconds: float = 4.0  # per load run
    api_connections: int = 32
    log_bytes: int = 50 * 1000 * 1000
    log_rounds: int = 3
    proxy_mib: int = 256
    proxy_repeat: int = 2
    proxy_rtt_rounds: int = 2000
    pull_rounds: int = 3

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            iterations=4,
            containers=12,
            api_containers=3,
            api_seconds=1.5,
            log_bytes=5 * 1000 * 1000,
            log_rounds=1,
            proxy_mib=32,
            proxy_repeat=1,
            proxy_rtt_rounds=300,
            pull_rounds=1,
        )


@dataclass(slots=True)
class Context:
    work: Path
    engines: list[Engine]
    floors: list[OciFloor]
    sizes: Sizes
    progress: Progress
    busybox_tar: Path
    skipped_engines: dict[str, str] = field(default_factory=dict)

    def engine(self, name: str) -> Engine | None:
        return next((e for e in self.engines if e.name == name), None)

    def skip_absent(self, metric: Metric, *, floors: bool = True) -> None:
        """Record why engines that do not run at all have no numbers in `metric`."""
        for name, reason in self.skipped_engines.items():
            if floors or name not in ("runc", "crun"):
                metric.skipped.setdefault(name, reason)

    def sample(
        self,
        metric: Metric,
        samplers: dict[str, Sampler],
        *,
        iterations: int | None = None,
        warmup: int = 1,
        scale: float = 1000.0,
    ) -> Metric:
        interleave(
            metric,
            samplers,
            self.sizes.iterations if iterations is None else iterations,
            warmup=warmup,
            progress=self.progress,
            scale=scale,
        )
        return metric


def cli_sampler(engine: Engine, *args: str) -> Sampler:
    """Seconds one `docker ARGS` takes (output discarded)."""

    def sample() -> float:
        return timed(lambda: engine.docker(*args, capture=False))

    return sample


Scenario = Callable[[Context], list[Metric]]
