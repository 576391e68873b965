"""The outputs of a run: `latest.json` (raw samples + summaries), `latest.md` (the table the README
shows) and `latest.png` (a chart; needs matplotlib, the `bench` extra, and is skipped without it).

    python -m bench.report bench/results/latest.json    # re-render the .md and .png from the JSON
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.harness import FLOORS, Goal, Metric

DAEMONS = ("pydock", "dockerd")


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _floor_engine(m: Metric) -> str | None:
    return next((f for f in FLOORS if m.samples.get(f)), None)


def metric_json(m: Metric) -> dict[str, Any]:
    engines: dict[str, Any] = {}
    for name, values in m.samples.items():
        s = m.summary(name)
        assert s is not None
        engines[name] = {
            "samples": [round(v, 6) for v in values],
            **{k: round(v, 6) for k, v in asdict(s).items()},
        }
    ratio = m.ratio(versus="dockerd")
    floor = _floor_engine(m)
    return {
        "key": m.key,
        "title": m.title,
        "unit": m.unit,
        "better": m.better,
        "goal": asdict(m.goal) if m.goal else None,
        "floor": m.floor_label,
        "engines": engines,
        "skipped": m.skipped,
        "notes": m.notes,
        "ratio_pydock_over_dockerd": None if ratio is None else round(ratio, 4),
        "ratio_pydock_over_floor": None if floor is None or m.ratio(versus=floor) is None
        else round(m.ratio(versus=floor) or 0.0, 4),
        "met": m.met(),
    }  # fmt: skip


def write_json(path: Path, meta: dict[str, Any], metrics: list[Metric]) -> None:
    path.write_text(json.dumps({**meta, "metrics": [metric_json(m) for m in metrics]}, indent=1) + "\n")


def _cell(m: Metric, engine: str) -> str:
    s = m.summary(engine)
    if s is None:
        return "skipped" if engine in m.skipped else "—"
    if s.n == 1:
        return _fmt(s.median)
    return f"{_fmt(s.median)} (p90 {_fmt(s.p90)})"


def markdown(meta: dict[str, Any], metrics: list[Metric]) -> str:
    lines = [
        "# pydock benchmarks",
        "",
        f"{meta['date']} on {meta['machine']['summary']}; "
        f"`{meta['command']}` took {meta['duration_s']:.0f} s.",
        "Engines interleaved (one sample of each per iteration, order rotating); cells are "
        "median (p90) of the samples; ratios are of medians.",
        "",
        "| scenario | unit | floor | pydock | dockerd | pydock/dockerd | target | met? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in metrics:
        floor = _floor_engine(m)
        floor_cell = f"{_cell(m, floor)} ({m.floor_label})" if floor else "—"
        ratio = m.ratio(versus="dockerd")
        goal = m.goal.describe() if m.goal else "—"
        met = m.met()
        met_cell = "—" if met is None else ("yes" if met else "**no**")
        lines.append(
            f"| {m.title} | {m.unit} | {floor_cell} | {_cell(m, 'pydock')} | {_cell(m, 'dockerd')} | "
            f"{'—' if ratio is None else f'{ratio:.2f}'} | {goal} | {met_cell} |"
        )
    lines += ["", "Engines:", ""]
    for name, status in meta["engines"].items():
        lines.append(f"- **{name}**: {status}")
    details = []
    for m in metrics:
        for engine, reason in m.skipped.items():
            if meta["engines"].get(engine, "").startswith("running"):
                details.append(f"- {m.title}: {engine} skipped: {reason}")
        details += [f"- {m.title}: {note}" for note in m.notes]
    if details:
        lines += ["", "Notes:", "", *details]
    return "\n".join(lines) + "\n"


def write_png(path: Path, meta: dict[str, Any], metrics: list[Metric]) -> str | None:
    """Ratios pydock/dockerd (or pydock/floor without dockerd) against the targets, log scale.
    Returns why no chart was drawn, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    rows: list[tuple[str, float, Metric]] = []
    versus = "dockerd" if any(m.samples.get("dockerd") for m in metrics) else None
    for m in metrics:
        base = versus or _floor_engine(m)
        r = m.ratio(versus=base) if base else None
        if r is not None and r > 0:
            # "higher is better" rows are flipped so that, on every row, left of 1 is pydock winning
            rows.append((m.title.replace("`", ""), r if m.better == "lower" else 1 / r, m))
    if not rows:
        return "no ratios to draw"
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.6))
    labels = [r[0] for r in rows]
    values = [r[1] for r in rows]
    colors = []
    for _, _, m in rows:
        met = m.met() if versus else None
        colors.append("#2e7d32" if met else "#c62828" if met is False else "#607d8b")
    y = list(range(len(rows)))
    ax.barh(y, values, color=colors)
    for i, (_, _, m) in enumerate(rows):
        if versus and m.goal is not None and m.goal.versus == versus:
            target = m.goal.ratio if m.better == "lower" else 1 / m.goal.ratio
            ax.plot([target, target], [i - 0.4, i + 0.4], color="black", linewidth=2)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    who = "dockerd" if versus else "the floor"
    ax.set_xlabel(f"pydock cost relative to {who} (log; < 1 is better; black tick = target)")
    box = meta["machine"]
    ax.set_title(
        f"pydock vs {who}: {meta['date']}, {box['cores']}-core {box['cpu']}, cgroup {box['cgroup']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def load_json(path: Path) -> tuple[dict[str, Any], list[Metric]]:
    data = json.loads(path.read_text())
    metrics = []
    for item in data.pop("metrics"):
        m = Metric(
            item["key"],
            item["title"],
            item["unit"],
            item["better"],
            Goal(**item["goal"]) if item["goal"] else None,
            floor_label=item["floor"],
            skipped=item["skipped"],
            notes=item["notes"],
        )
        for engine, values in item["engines"].items():
            m.samples[engine] = list(values["samples"])
        metrics.append(m)
    return data, metrics


def main(argv: list[str] | None = None) -> int:
    path = Path((argv if argv is not None else sys.argv[1:])[0])
    meta, metrics = load_json(path)
    path.with_suffix(".md").write_text(markdown(meta, metrics))
    why = write_png(path.with_suffix(".png"), meta, metrics)
    if why:
        print(f"no chart: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
