"""Scenario 8 of issue 9: pulling a 100 MB, 5-layer image from a local registry (bench_pull)."""

from __future__ import annotations

import shutil

from bench import bench_pull
from bench.context import Context
from bench.harness import Goal, Metric
from tests.integration.registry import REGISTRY_BIN, SKOPEO


def pull(ctx: Context) -> list[Metric]:
    m = Metric(
        "pull",
        "pull a 100 MB, 5-layer image from a local registry",
        "s",
        "lower",
        Goal("<=", 1.0),
        floor_label="",
    )
    ctx.skip_absent(m, floors=False)
    missing = [b for b in (REGISTRY_BIN, SKOPEO) if shutil.which(b) is None]
    pydock = ctx.engine("pydock")
    if missing or pydock is None:
        reason = f"{', '.join(missing)} not installed" if missing else "pydock is not running"
        for e in ctx.engines:
            m.skip(e.name, reason)
        return [m]
    dockerd = ctx.engine("dockerd")
    ctx.progress("pull: building the 100 MB image and filling a local registry")
    result = bench_pull.run(pydock.host, dockerd.host if dockerd else None, rounds=ctx.sizes.pull_rounds)
    for name in ("pydock", "dockerd"):
        for value in result.get(f"{name}_samples_s", []):
            m.add(name, value)
    m.notes.append(f"image: {result['layers']} layers, {result['image_bytes'] / 1e6:.1f} MB")
    ctx.progress(
        "pull: "
        + ", ".join(
            f"{n} {result[f'{n}_median_s']} s" for n in ("pydock", "dockerd") if f"{n}_median_s" in result
        )
    )
    return [m]


SCENARIOS = {"pull": pull}
