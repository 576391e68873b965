"""The benchmark harness's own logic: statistics, interleaving, goals, loadgen parsing, the report."""

from __future__ import annotations

import asyncio

import pytest

from bench import report
from bench.harness import Goal, Metric, Skip, interleave, percentile, summarize
from bench.loadgen import _Conn, _Stats


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert summarize([3.0, 1.0, 2.0]).median == 2.0


def test_interleave_rotates_order_and_drops_warmup() -> None:
    calls: list[str] = []

    def sampler(name: str) -> float:
        calls.append(name)
        return 1.0

    m = Metric("k", "t", "ms", "lower")
    interleave(m, {"a": lambda: sampler("a"), "b": lambda: sampler("b")}, 2, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert m.samples == {"a": [1.0, 1.0], "b": [1.0, 1.0]}


def test_a_failing_engine_is_dropped_with_its_reason_and_keeps_its_samples() -> None:
    n = {"b": 0}

    def flaky() -> float:
        n["b"] += 1
        if n["b"] > 1:
            raise RuntimeError("boom")
        return 2.0

    def absent() -> float:
        raise Skip("not installed")

    m = Metric("k", "t", "ms", "lower")
    interleave(m, {"a": lambda: 1.0, "b": flaky, "c": absent}, 3, warmup=0)
    assert m.samples["a"] == [1.0, 1.0, 1.0]
    assert m.samples["b"] == [2.0]
    assert m.skipped == {"c": "not installed"}
    assert any("boom" in note for note in m.notes)


def test_goal_and_ratio() -> None:
    m = Metric("run", "run", "ms", "lower", Goal("<=", 0.35))
    for v in (30.0, 40.0, 35.0):
        m.add("pydock", v)
    for v in (100.0, 120.0, 110.0):
        m.add("dockerd", v)
    assert m.ratio() == pytest.approx(35 / 110)
    assert m.met() is True
    rate = Metric("rps", "rps", "req/s", "higher", Goal(">=", 1.0))
    rate.add("pydock", 50.0)
    assert rate.met() is None  # no dockerd: no verdict


def test_markdown_table_has_one_row_per_metric() -> None:
    m = Metric("run", "`docker run`", "ms", "lower", Goal("<=", 0.35))
    m.add("runc", 26.0)
    m.add("pydock", 90.0)
    m.add("dockerd", 300.0)
    m.skip("crun", "hybrid cgroups")
    meta = {
        "date": "2024-01-01",
        "command": "make bench",
        "duration_s": 1.0,
        "machine": {"summary": "test box"},
        "engines": {"pydock": "running", "dockerd": "running"},
    }
    text = report.markdown(meta, [m])
    row = next(line for line in text.splitlines() if line.startswith("| `docker run`"))
    assert "| 26.0 (runc) |" in row
    assert "0.30" in row and "yes" in row
    assert report.metric_json(m)["ratio_pydock_over_floor"] == pytest.approx(90 / 26, rel=1e-3)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1]\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_loadgen_finds_the_end_of_a_response(response: bytes) -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = _Conn(b"", 0.0, _Stats(), loop.create_future())
        conn.buf += response[:-1]
        assert conn._complete() == 0
        conn.buf += response[-1:]
        assert conn._complete() == len(response)
    finally:
        loop.close()
