"""json-file logs: writing, reading back (decode, filters, tail, rotation), rendering frames."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.streams import log_renderer, parse_frames
from runtime.logread import LogQuery, decode_line, read_logs
from runtime.logs import LogWriter, encode_record


def test_decode_plain_escaped_and_binary() -> None:
    assert decode_line(encode_record(b"hi\n", "stdout", 0).rstrip(b"\n")) == (
        b"stdout",
        b"hi\n",
        b"1970-01-01T00:00:00.000000000Z",
    )
    tricky = b'quote " backslash \\ tab \t \xff\xfe bytes\n'
    stream, payload, _ = decode_line(encode_record(tricky, "stderr", 5).rstrip(b"\n")) or (b"", b"", b"")
    assert (stream, payload) == (b"stderr", tricky)
    assert decode_line(b'{"log":"torn') is None
    assert decode_line(b"garbage") is None


async def collect(path: Path, query: LogQuery, writer: LogWriter | None = None, **kw: bool) -> bytes:
    out = b""
    async for chunk in read_logs(path, query, writer, log_renderer(tty=False, **kw)):
        out += chunk
    return out


async def test_filters_tail_and_coalesced_frames(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    w = LogWriter(path)
    base = 1_700_000_000 * 10**9
    for i in range(10):
        w.write("stdout", b"o%d\n" % i, now_ns=base + i * 10**9)
        w.write("stderr", b"e%d\n" % i, now_ns=base + i * 10**9)
    w.close()
    frames, rest = parse_frames(await collect(path, LogQuery()))
    assert rest == b""
    assert b"".join(p for s, p in frames if s == 1) == b"".join(b"o%d\n" % i for i in range(10))
    assert b"".join(p for s, p in frames if s == 2) == b"".join(b"e%d\n" % i for i in range(10))
    assert len(frames) == 20  # alternating streams: one frame per record
    only_out, _ = parse_frames(await collect(path, LogQuery(stderr=False)))
    assert len(only_out) == 1 and only_out[0][1].count(b"\n") == 10  # merged into one frame
    since = LogQuery(since_ns=base + 8 * 10**9)
    assert b"o7" not in await collect(path, since) and b"o8" in await collect(path, since)
    until = LogQuery(until_ns=base + 1 * 10**9)
    assert b"o2" not in await collect(path, until) and b"e1" in await collect(path, until)
    tail, _ = parse_frames(await collect(path, LogQuery(tail=3)))
    assert b"".join(p for _, p in tail) == b"e8\no9\ne9\n"
    # as dockerd: the tail counts both streams, then the selection applies
    assert await collect(path, LogQuery(stderr=False, tail=1)) == b""
    stamped = await collect(path, LogQuery(stderr=False, tail=2), timestamps=True)
    assert stamped.endswith(b"Z o9\n")


async def test_rotation_and_follow(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    w = LogWriter(path, max_size=1500, max_file=3)  # a rotation every ~19 records
    for i in range(20):
        w.write("stdout", b"line-%02d\n" % i)
    got = b""

    async def follow() -> None:
        nonlocal got
        async for chunk in read_logs(path, LogQuery(follow=True, tail=0), w, log_renderer(tty=True)):
            got += chunk

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    for i in range(20, 30):
        w.write("stdout", b"line-%02d\n" % i)
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    w.close()
    await asyncio.wait_for(task, 5)
    assert got == b"".join(b"line-%02d\n" % i for i in range(20, 30))
    everything = b""
    async for chunk in read_logs(path, LogQuery(), None, log_renderer(tty=True)):
        everything += chunk
    lines = everything.split()
    assert lines[-1] == b"line-29" and lines == sorted(lines)


def test_records_round_trip_any_bytes() -> None:
    import random

    rng = random.Random(7)
    samples = [
        b"plain line\n",
        b"no newline",
        b"",
        b"\n",
        b'q"uote\\ and / slash\n',
        b"\t\r\x08\x0c\x00\x1f\n",
    ]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))) for _ in range(500)]
    for data in samples:
        line = encode_record(data, "stdout", 123).rstrip(b"\n")
        assert json_loads_ok(line)
        assert decode_line(line) == (b"stdout", data, b"1970-01-01T00:00:00.000000123Z"), data


def json_loads_ok(line: bytes) -> bool:
    import json

    json.loads(line)  # every record is valid JSON (other tools read these files)
    return True
