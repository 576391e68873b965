"""hypothesis fuzzing of the parsers that read untrusted bytes and strings.

Stream framing, the hijack protocol's chunked decoder, layer tars and image archives, image
references, `filters`/booleans, signals, durations and timestamps. The property is always the
same: a parser either returns a sane result or raises the one error kind it documents (an
`InvalidParameter`, i.e. a 400), never anything else (a 500), and for round-trips the result is
what went in. Derandomized and bounded in count; the counts are in the terminal summary.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import itertools
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.hijack import MAX_CHUNK_LINE, _ChunkedDecoder
from app.params import docker_bool, parse_filters
from app.routers.attach import parse_detach_keys
from app.routers.system import parse_timestamp_ns
from app.streams import MAX_FRAME, frame, parse_frames
from runtime import archive, layers, reference
from runtime.errors import InvalidParameter
from runtime.ids import check_container_name, check_object_name
from runtime.signals import parse_signal
from tests.fuzzstats import count

SUITE = "hypothesis (parsers)"
F = TypeVar("F", bound=Callable[..., Any])


def fuzz(examples: int, *strategies: Any, **named: Any) -> Callable[[F], F]:
    """`given(...)` with bounded, reproducible settings; every example counts as an input tried."""

    def wrap(test: F) -> F:
        @functools.wraps(test)
        def counted(*args: Any, **kwargs: Any) -> Any:
            count(SUITE, "inputs tried")
            return test(*args, **kwargs)

        return settings(  # type: ignore[no-any-return]
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.filter_too_much,
            ],
        )(given(*strategies, **named)(counted))

    return wrap


def only_invalid_parameter(fn: Callable[[], Any]) -> Any:
    """Run `fn`; an `InvalidParameter` is a fine answer, any other exception is a bug."""
    try:
        return fn()
    except InvalidParameter:
        return None


# --- stream framing --------------------------------------------------------------------------


@fuzz(
    200, st.lists(st.tuples(st.sampled_from([0, 1, 2, 3]), st.binary(max_size=3000)), max_size=8), st.data()
)
def test_frames_round_trip_through_any_split(payloads: list[tuple[int, bytes]], data: st.DataObject) -> None:
    wire = b"".join(frame(stream, chunk) for stream, chunk in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    got: list[tuple[int, bytes]] = []
    rest = b""
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        frames, rest = parse_frames(rest + wire[start:end])
        got += frames
    assert rest == b""
    joined: dict[int, bytes] = {}
    for stream, chunk in got:
        joined[stream] = joined.get(stream, b"") + chunk
    expected: dict[int, bytes] = {}
    for stream, chunk in payloads:
        expected[stream] = expected.get(stream, b"") + chunk
    assert {k: v for k, v in joined.items() if v} == {k: v for k, v in expected.items() if v}


def test_large_payloads_are_split_into_bounded_frames() -> None:
    count(SUITE, "inputs tried")
    frames, rest = parse_frames(frame(1, b"x" * (MAX_FRAME * 2 + 5)))
    assert rest == b""
    assert [len(c) for _, c in frames] == [MAX_FRAME, MAX_FRAME, 5]


@fuzz(300, st.binary(max_size=4096))
def test_parse_frames_of_garbage_never_raises_and_loses_nothing(raw: bytes) -> None:
    frames, rest = parse_frames(raw)
    assert sum(8 + len(c) for _, c in frames) + len(rest) == len(raw)
    assert raw.endswith(rest)


# --- the hijack protocol's chunked decoder ----------------------------------------------------


def _chunked(body: bytes, sizes: list[int], ext: bool, trailers: list[bytes]) -> bytes:
    out = bytearray()
    pos = 0
    for size in sizes:
        piece = body[pos : pos + size]
        if not piece:
            break
        out += b"%x%s\r\n%s\r\n" % (len(piece), b";x=y" if ext else b"", piece)
        pos += len(piece)
    if pos < len(body):
        out += b"%X\r\n%s\r\n" % (len(body) - pos, body[pos:])
    out += b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
    return bytes(out)


@fuzz(
    300,
    body=st.binary(max_size=2000),
    sizes=st.lists(st.integers(1, 500), max_size=10),
    ext=st.booleans(),
    trailers=st.lists(st.sampled_from([b"X-T: 1", b"Y: z"]), max_size=2),
    after=st.binary(max_size=100),
    data=st.data(),
)
def test_chunked_decoder_round_trips_through_any_split(
    body: bytes, sizes: list[int], ext: bool, trailers: list[bytes], after: bytes, data: st.DataObject
) -> None:
    wire = _chunked(body, sizes, ext, trailers) + after
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    decoder = _ChunkedDecoder()
    rest = b""
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        if decoder.done:
            rest += wire[start:end]
        else:
            rest += decoder.feed(wire[start:end])
    assert decoder.done
    assert bytes(decoder.body) == body
    assert rest == after


@fuzz(400, st.binary(max_size=3000), st.integers(1, 64))
def test_chunked_decoder_on_garbage_raises_only_value_error_and_stays_bounded(raw: bytes, step: int) -> None:
    decoder = _ChunkedDecoder(max_body=1024)
    try:
        for i in range(0, len(raw), step):
            decoder.feed(raw[i : i + step])
            if decoder.done:
                break
            # nothing is held back without bound: a line is at most MAX_CHUNK_LINE, a chunk
            # at most the body limit
            assert len(decoder._buf) <= MAX_CHUNK_LINE + 1024 + 2 + step
    except ValueError:
        pass
    assert len(decoder.body) <= 1024


@fuzz(20, st.sampled_from([b"0x10", b"-1", b"1_0", b"+5", b" ", b"", b"g", b"\xff", b"1" * 17]))
def test_chunked_decoder_refuses_sizes_int_would_take(size: bytes) -> None:
    decoder = _ChunkedDecoder()
    try:
        decoder.feed(size + b"\r\n" + b"a" * 20 + b"\r\n0\r\n\r\n")
    except ValueError:
        return
    raise AssertionError(f"chunk size {size!r} was accepted")


# --- layer tars -------------------------------------------------------------------------------

TAR_TYPES = [
    tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
    tarfile.BLKTYPE, tarfile.FIFOTYPE, b"x", b"L", b"K", b"V",
]  # fmt: skip
NAME_PARTS = ["a", "b", "..", ".", "", "etc", ".wh.a", ".wh..wh..opq", "outside", "/", "\x00", "é", "x" * 300]


@st.composite
def member_names(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(NAME_PARTS), min_size=1, max_size=5))
    return ("/" if draw(st.booleans()) else "") + "/".join(parts)


@st.composite
def hostile_tars(draw: st.DrawFn) -> bytes:
    buf = io.BytesIO()
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for _ in range(draw(st.integers(0, 6))):
            info = tarfile.TarInfo(draw(member_names()))
            info.type = draw(st.sampled_from(TAR_TYPES))
            info.linkname = draw(st.one_of(member_names(), st.just("../../outside/canary")))
            payload = draw(st.binary(max_size=64)) if info.type == tarfile.REGTYPE else b""
            info.size = len(payload)
            info.mode = draw(st.sampled_from([0o644, 0o755, 0o4755, 0o000, 0o7777]))
            info.uid = draw(st.sampled_from([0, 1000, 65534]))
            try:
                tf.addfile(info, io.BytesIO(payload))
            except (ValueError, tarfile.TarError, UnicodeError):
                continue  # tarfile itself refused to write this header
    raw = buf.getvalue()
    if draw(st.booleans()) and raw:  # then damage it: truncate or flip bytes
        if draw(st.booleans()):
            raw = raw[: draw(st.integers(0, len(raw)))]
        else:
            pos = draw(st.integers(0, len(raw) - 1))
            raw = raw[:pos] + bytes([draw(st.integers(0, 255))]) + raw[pos + 1 :]
    return raw


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st_ = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        out[str(path.relative_to(root))] = (st_.st_mode, data)
    return out


@fuzz(150, hostile_tars())
def test_unpack_of_hostile_tars_stays_inside_and_fails_cleanly(tmp_path_factory: Any, raw: bytes) -> None:
    base = tmp_path_factory.mktemp("unpack")
    outside = base / "outside"
    outside.mkdir()
    (outside / "canary").write_text("canary")
    target = base / "layer" / "root"
    target.mkdir(parents=True)
    before = _snapshot(outside)
    try:
        layers.unpack(io.BytesIO(raw), target)
    except layers.InvalidLayer:
        pass
    except InvalidParameter:
        pass
    assert _snapshot(outside) == before, "unpacking wrote outside its target"
    for path in target.rglob("*"):
        resolved = path.parent.resolve() / path.name
        assert str(resolved).startswith(str(target.resolve())), f"{path} is outside the target"


class _Dribble:
    """A source giving at most `step` bytes per read (a body arriving in pieces)."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._step = step

    def read(self, n: int = -1) -> bytes:
        take = self._step if n < 0 else min(n, self._step)
        out, self._data = self._data[:take], self._data[take:]
        return out


@fuzz(
    60,
    st.binary(max_size=50_000),
    st.lists(st.integers(0, 50_000), max_size=3),
    st.integers(0, 9),
    st.integers(1, 70_000),
    st.booleans(),
)
def test_gzip_members_round_trip_in_any_pieces(
    data: bytes, cuts: list[int], level: int, step: int, padded: bool
) -> None:
    bounds = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    blob = b"".join(gzip.compress(data[a:b], compresslevel=level) for a, b in itertools.pairwise(bounds))
    blob = blob or gzip.compress(b"")
    if padded:
        blob += b"\0" * 512
    chunks, kind = layers.decompressed_chunks(cast(IO[bytes], _Dribble(blob, step)))
    got = list(chunks)
    assert kind == "gzip" and b"".join(got) == data
    assert all(0 < len(c) <= layers.CHUNK for c in got)


@fuzz(120, st.binary(min_size=1, max_size=5000), st.integers(0, 10_000), st.integers(0, 255), st.booleans())
def test_damaged_gzip_decodes_or_is_invalid(data: bytes, where: int, xor: int, truncate: bool) -> None:
    blob = bytearray(gzip.compress(data))
    i = where % len(blob)
    if truncate:
        del blob[i:]
    else:
        blob[i] ^= xor or 1
    with contextlib.suppress(layers.InvalidLayer):
        b"".join(layers.decompressed_chunks(io.BytesIO(bytes(blob)))[0])


# --- image archives (docker load) ---------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def _tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@st.composite
def archive_files(draw: st.DrawFn) -> dict[str, bytes]:
    """A docker-save or OCI layout archive whose JSON documents are partly random."""
    config = json.dumps(draw(st.one_of(JSON, st.just({"rootfs": {"diff_ids": []}})))).encode()
    config_digest = layers.sha256_digest(config)
    files: dict[str, bytes] = {"config.json": config, f"blobs/sha256/{config_digest[7:]}": config}
    if draw(st.booleans()):
        entry = draw(
            st.one_of(
                JSON,
                st.fixed_dictionaries(
                    {"Config": st.sampled_from(["config.json", "missing.json", "../x"])},
                    optional={"Layers": JSON, "RepoTags": st.one_of(JSON, st.lists(st.text(max_size=30)))},
                ),
            )
        )
        files["manifest.json"] = json.dumps(draw(st.one_of(JSON, st.just([entry])))).encode()
    else:
        manifest = draw(
            st.one_of(
                JSON,
                st.fixed_dictionaries(
                    {"config": st.one_of(JSON, st.just({"digest": config_digest}))},
                    optional={"layers": st.one_of(JSON, st.lists(JSON, max_size=3)), "mediaType": JSON},
                ),
            )
        )
        manifest_bytes = json.dumps(manifest).encode() if draw(st.booleans()) else b"{not json"
        manifest_digest = layers.sha256_digest(manifest_bytes)
        files[f"blobs/sha256/{manifest_digest[7:]}"] = manifest_bytes
        desc = draw(
            st.one_of(
                JSON,
                st.fixed_dictionaries(
                    {"digest": st.sampled_from([manifest_digest, "sha256:zz", "md5:1", ""])},
                    optional={"annotations": JSON, "mediaType": JSON},
                ),
            )
        )
        index = draw(st.one_of(JSON, st.fixed_dictionaries({"manifests": st.one_of(JSON, st.just([desc]))})))
        files["index.json"] = json.dumps(index).encode()
    return files


@fuzz(300, archive_files())
def test_archive_reader_refuses_malformed_documents_with_400(
    tmp_path_factory: Any, files: dict[str, bytes]
) -> None:
    path = tmp_path_factory.mktemp("ar") / "a.tar"
    path.write_bytes(_tar_of(files))

    def read() -> None:
        with archive.Archive(path) as ar:
            for image in ar.images():
                assert isinstance(image.config_bytes, bytes)
                assert all(isinstance(m, str) for m in image.layer_members)

    only_invalid_parameter(read)


@fuzz(100, st.binary(max_size=2048))
def test_archive_reader_on_garbage_bytes(tmp_path_factory: Any, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("ar") / "a.tar"
    path.write_bytes(raw)

    def read() -> None:
        with archive.Archive(path) as ar:
            ar.images()

    only_invalid_parameter(read)


# --- references, names, filters, booleans, signals, durations ---------------------------------

REF_ALPHABET = st.sampled_from([*"abcXYZ019-_.:/@+ ", "sha256:", "a" * 64, "localhost", "é", "\x00"])


@fuzz(600, st.one_of(st.text(max_size=80), st.lists(REF_ALPHABET, max_size=12).map("".join)))
def test_reference_parse_is_400_or_round_trips(text: str) -> None:
    ref = only_invalid_parameter(lambda: reference.parse(text))
    if ref is None:
        return
    again = reference.parse(str(ref))
    assert again == ref
    assert reference.parse(ref.familiar()) == ref


@fuzz(300, st.text(max_size=40))
def test_names_are_validated_or_refused_with_400(text: str) -> None:
    for check in (check_container_name, lambda n: check_object_name(n, "volume")):
        name = only_invalid_parameter(lambda check=check: check(text))
        if name is not None:
            assert "/" not in name and name not in (".", "..") and "\x00" not in name


@fuzz(400, st.one_of(st.text(max_size=60), JSON.map(json.dumps)))
def test_filters_parse_or_400(raw: str) -> None:
    parsed = only_invalid_parameter(lambda: parse_filters(raw))
    if parsed is not None:
        assert all(isinstance(k, str) and all(isinstance(v, str) for v in vs) for k, vs in parsed.items())


@fuzz(200, st.one_of(st.text(max_size=20), st.none(), st.booleans(), st.integers()))
def test_docker_bool_never_raises(value: Any) -> None:
    assert isinstance(docker_bool(value), bool)


@fuzz(
    300,
    st.one_of(
        st.text(max_size=20), st.integers(-(2**70), 2**70), st.sampled_from(["SIGTERM", "rtmin+3", "9"])
    ),
)
def test_signal_parse_is_a_real_signal_or_400(raw: str | int) -> None:
    number = only_invalid_parameter(lambda: parse_signal(raw))
    if number is not None:
        assert 1 <= number <= 64, f"{raw!r} parsed to signal {number}"


@fuzz(
    400,
    st.one_of(
        st.text(max_size=30),
        st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{0,12})?", fullmatch=True),
        st.from_regex(r"[0-9]{1,20}(\.[0-9]{1,5})?(ns|us|ms|s|m|h)", fullmatch=True),
        st.sampled_from(["2024-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1e400"]),
    ),
)
def test_timestamps_and_durations_parse_or_400(raw: str) -> None:
    value = only_invalid_parameter(lambda: parse_timestamp_ns(raw, now=1_700_000_000.0))
    if value is not None:
        assert isinstance(value, int)  # compared with event/log times only: any size is fine


@fuzz(200, st.text(max_size=20))
def test_detach_keys_parse_or_400(raw: str) -> None:
    keys = only_invalid_parameter(lambda: parse_detach_keys(raw))
    if keys is not None:
        assert isinstance(keys, bytes) and keys
