from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from runtime import layers
from runtime.layers import InvalidLayer

IS_ROOT = os.geteuid() == 0


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def reg(
    name: str, data: bytes = b"x", mode: int = 0o644, mtime: int = 1_000_000
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid = mode, mtime, 1234, 5678
    return info, data


def special(name: str, kind: bytes, linkname: str = "", mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, mode, 2_000_000
    return info, None


def unpack_bytes(data: bytes, target: Path, **kw: object) -> layers.UnpackResult:
    target.mkdir(exist_ok=True)
    return layers.unpack(io.BytesIO(data), target, **kw)  # type: ignore[arg-type]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def test_regular_tree_metadata_and_diff_id(root: Path) -> None:
    data = make_tar(
        [
            special("etc", tarfile.DIRTYPE, mode=0o750),
            reg("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mode=0o4755),
            special("etc/link", tarfile.SYMTYPE, linkname="passwd"),
            special("etc/hard", tarfile.LNKTYPE, linkname="etc/passwd"),
            special("etc/fifo", tarfile.FIFOTYPE, mode=0o600),
            reg("deep/er/file", b"implicit parents"),
        ]
    )
    result = unpack_bytes(data, root)
    assert result.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert result.tar_bytes == len(data)
    assert result.compression == "none"
    st = os.lstat(root / "etc/passwd")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert st.st_mtime == 1_000_000
    if IS_ROOT:
        assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert os.readlink(root / "etc/link") == "passwd"
    assert os.lstat(root / "etc/hard").st_ino == st.st_ino
    assert stat.S_ISFIFO(os.lstat(root / "etc/fifo").st_mode)
    dst = os.lstat(root / "etc")
    assert stat.S_IMODE(dst.st_mode) == 0o750
    assert dst.st_mtime == 2_000_000  # directory times are applied after its children
    assert (root / "deep/er/file").read_bytes() == b"implicit parents"


@pytest.mark.skipif(not IS_ROOT, reason="device nodes need root")
def test_device_nodes_as_root(root: Path) -> None:
    info, _ = special("dev/null", tarfile.CHRTYPE, mode=0o666)
    info.devmajor, info.devminor = 1, 3
    unpack_bytes(make_tar([info_pair(info)]), root)
    st = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3


def info_pair(info: tarfile.TarInfo) -> tuple[tarfile.TarInfo, None]:
    return info, None


def test_xattrs_applied(root: Path) -> None:
    info, data = reg("f", b"data")
    info.pax_headers = {"SCHILY.xattr.user.pydock": "yes"}
    unpack_bytes(make_tar([(info, data)]), root)
    try:
        assert os.getxattr(root / "f", "user.pydock") == b"yes"
    except OSError:
        pytest.skip("filesystem without user xattrs")


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_layers(root: Path, compress: str) -> None:
    data = make_tar([reg("a", b"hello" * 1000)])
    blob = gzip.compress(data) if compress == "gzip" else zstandard.ZstdCompressor().compress(data)
    result = unpack_bytes(blob, root)
    assert result.compression == compress
    assert result.diff_id == layers.sha256_digest(data)
    assert (root / "a").read_bytes() == b"hello" * 1000


def test_empty_stream_is_an_empty_layer(root: Path) -> None:
    assert unpack_bytes(b"", root).diff_id == layers.sha256_digest(b"")


def assert_nothing_outside(tmp_path: Path, root: Path) -> None:
    outside = [p for p in tmp_path.rglob("*") if root not in p.parents and p != root]
    assert outside == [], outside


def test_dotdot_refused(tmp_path: Path, root: Path) -> None:
    with pytest.raises(InvalidLayer, match="escapes the layer"):
        unpack_bytes(make_tar([reg("a/../../evil")]), root)
    assert_nothing_outside(tmp_path, root)


def test_absolute_refused(tmp_path: Path, root: Path) -> None:
    with pytest.raises(InvalidLayer, match="absolute path"):
        unpack_bytes(make_tar([reg(str(tmp_path / "evil"))]), root)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("target", ["ABSOLUTE", "../..", "../outside", "sub/../../outside", "loop"])
def test_write_through_escaping_symlink_refused(tmp_path: Path, root: Path, target: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    link_target = str(outside) if target == "ABSOLUTE" else target
    entries = [
        special("sub", tarfile.DIRTYPE),
        special("evil", tarfile.SYMTYPE, linkname=link_target),
        reg("evil/pwned", b"owned"),
    ]
    if target == "loop":
        entries.insert(1, special("loop", tarfile.SYMTYPE, linkname="evil"))
        entries[2] = special("evil", tarfile.SYMTYPE, linkname="loop")
    with pytest.raises(InvalidLayer):
        unpack_bytes(make_tar(entries), root)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "pwned").exists()


def test_write_through_inner_symlink_stays_inside(root: Path) -> None:
    unpack_bytes(
        make_tar(
            [
                special("real", tarfile.DIRTYPE),
                special("alias", tarfile.SYMTYPE, linkname="./real"),
                reg("alias/f", b"in"),
            ]
        ),
        root,
    )
    assert (root / "real/f").read_bytes() == b"in"
    assert os.path.islink(root / "alias")


def test_existing_symlink_in_target_is_not_followed(tmp_path: Path, root: Path) -> None:
    """The check is on the real filesystem: a symlink already in the target counts too."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / "pre").symlink_to(outside)
    with pytest.raises(InvalidLayer, match="points outside"):
        unpack_bytes(make_tar([reg("pre/f", b"x")]), root)
    assert list(outside.iterdir()) == []


def test_file_replacing_symlink_does_not_write_through(tmp_path: Path, root: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"original")
    unpack_bytes(make_tar([special("f", tarfile.SYMTYPE, linkname=str(victim)), reg("f", b"replaced")]), root)
    assert victim.read_bytes() == b"original"
    assert (root / "f").read_bytes() == b"replaced"


@pytest.mark.parametrize("linkname", ["../../victim", "../victim", "missing"])
def test_hardlink_out_refused(tmp_path: Path, root: Path, linkname: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret")
    with pytest.raises(InvalidLayer):
        unpack_bytes(make_tar([special("h", tarfile.LNKTYPE, linkname=linkname)]), root)
    assert victim.stat().st_nlink == 1
    assert not (root / "h").exists()


def test_hardlink_through_symlink_refused(tmp_path: Path, root: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret")
    entries = [
        special("d", tarfile.SYMTYPE, linkname=str(tmp_path)),
        special("h", tarfile.LNKTYPE, linkname="d/victim"),
    ]
    with pytest.raises(InvalidLayer):
        unpack_bytes(make_tar(entries), root)
    assert victim.stat().st_nlink == 1


def test_hardlink_to_symlink_links_the_symlink(tmp_path: Path, root: Path) -> None:
    unpack_bytes(
        make_tar(
            [
                special("s", tarfile.SYMTYPE, linkname="/etc/shadow"),
                special("h", tarfile.LNKTYPE, linkname="s"),
            ]
        ),
        root,
    )
    assert os.path.islink(root / "h")


def test_overlay_whiteouts(root: Path) -> None:
    unpack_bytes(
        make_tar(
            [
                special("d", tarfile.DIRTYPE),
                reg("d/.wh..wh..opq", b""),
                reg("d/kept", b"k"),
                reg(".wh.gone", b""),
                reg(".wh..wh.plnk", b""),
            ]
        ),
        root,
    )
    st = os.lstat(root / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (root / ".wh..wh.plnk").exists()
    if IS_ROOT:
        assert os.getxattr(root / "d", layers.OPAQUE_XATTR) == b"y"
    assert (root / "d/kept").read_bytes() == b"k"


def test_apply_whiteouts(root: Path) -> None:
    root.mkdir()
    (root / "gone").write_bytes(b"old")
    (root / "d").mkdir()
    (root / "d/old").write_bytes(b"old")
    unpack_bytes(
        make_tar(
            [
                special("d", tarfile.DIRTYPE),
                reg("d/new", b"n"),
                reg("d/.wh..wh..opq", b""),
                reg(".wh.gone", b""),
            ]
        ),
        root,
        whiteouts="apply",
    )
    assert not (root / "gone").exists()
    assert sorted(p.name for p in (root / "d").iterdir()) == ["new"]


def test_huge_pax_header_refused(root: Path) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 4 << 30  # claims 4 GiB of header
    header = info.tobuf(tarfile.USTAR_FORMAT)
    with pytest.raises(InvalidLayer, match="too large"):
        unpack_bytes(header + b"\0" * 4096, root)


def test_huge_gnu_longname_refused(root: Path) -> None:
    info = tarfile.TarInfo("././@LongLink")
    info.type = tarfile.GNUTYPE_LONGNAME
    info.size = 1 << 30
    with pytest.raises(InvalidLayer, match="too large"):
        unpack_bytes(info.tobuf(tarfile.GNU_FORMAT) + b"\0" * 1024, root)


def test_truncated_gzip(root: Path) -> None:
    blob = gzip.compress(make_tar([reg("big", os.urandom(200_000))]))
    with pytest.raises(InvalidLayer, match=r"truncated|unexpected end|EOF"):
        unpack_bytes(blob[: len(blob) // 2], root)


def test_truncated_plain_tar(root: Path) -> None:
    data = make_tar([reg("big", os.urandom(100_000))])
    with pytest.raises(InvalidLayer):
        unpack_bytes(data[:50_000], root)


def test_garbage_is_invalid(root: Path) -> None:
    with pytest.raises(InvalidLayer):
        unpack_bytes(b"this is not a tar archive at all" * 100, root)
    with pytest.raises(InvalidLayer):
        unpack_bytes(b"\x1f\x8b" + b"\xff" * 100, root)


def test_gzip_bomb_capped(root: Path) -> None:
    bomb = gzip.compress(make_tar([reg("zeros", b"\0" * (20 << 20))]), compresslevel=9)
    assert len(bomb) < 100_000
    with pytest.raises(InvalidLayer, match="larger than the limit"):
        unpack_bytes(bomb, root, max_bytes=1 << 20)


def test_chain_ids() -> None:
    d = ["sha256:" + c * 64 for c in "abc"]
    chains = layers.chain_ids(d)
    assert chains[0] == d[0]
    assert chains[1] == "sha256:" + hashlib.sha256(f"{d[0]} {d[1]}".encode()).hexdigest()
    assert chains[2] == "sha256:" + hashlib.sha256(f"{chains[1]} {d[2]}".encode()).hexdigest()


def test_tar_directory_diff_round_trip(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/conf").write_bytes(b"conf")
    os.link(upper / "etc/conf", upper / "etc/conf2")
    (upper / "lnk").symlink_to("etc/conf")
    (upper / "opq").mkdir()
    (upper / "opq/inside").write_bytes(b"i")
    if IS_ROOT:
        os.mknod(upper / "deleted", stat.S_IFCHR, os.makedev(0, 0))
        os.setxattr(upper / "opq", layers.OPAQUE_XATTR, b"y")
    first = b"".join(layers.tar_directory_diff(upper))
    assert first == b"".join(layers.tar_directory_diff(upper)), "deterministic"
    with tarfile.open(fileobj=io.BytesIO(first)) as tf:
        names = {m.name: m for m in tf.getmembers()}
    assert names["etc/conf2"].islnk() and names["etc/conf2"].linkname == "etc/conf"
    assert names["lnk"].issym()
    if IS_ROOT:
        assert ".wh.deleted" in names and names[".wh.deleted"].isreg()
        assert "opq/.wh..wh..opq" in names
        assert "deleted" not in names
    # And back: the overlay form is restored by unpacking.
    out = tmp_path / "out"
    result = unpack_bytes(first, out)
    assert result.diff_id == layers.sha256_digest(first)
    assert (out / "etc/conf").read_bytes() == b"conf"
    if IS_ROOT:
        assert stat.S_ISCHR(os.lstat(out / "deleted").st_mode)
        assert os.getxattr(out / "opq", layers.OPAQUE_XATTR) == b"y"


def test_gzip_stream_deterministic(tmp_path: Path) -> None:
    data = make_tar([reg("a", b"abc" * 100)])
    out1, out2 = io.BytesIO(), io.BytesIO()
    d1 = layers.gzip_stream(iter([data]), out1)
    d2 = layers.gzip_stream(iter([data]), out2)
    assert d1 == d2 and d1[0] == layers.sha256_digest(out1.getvalue())
    assert gzip.decompress(out1.getvalue()) == data


# --- the chunked reader -------------------------------------------------------------------------


class Dribble(io.RawIOBase):
    """A source that hands out at most `step` bytes per read (a network body arriving)."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        take = self._step if n < 0 else min(n, self._step)
        out, self._data = bytes(self._data[:take]), self._data[take:]
        return out


def test_short_reads_from_the_source(root: Path) -> None:
    payload = os.urandom(300_000)
    data = make_tar([reg("d/file", payload), reg("d/small", b"s")])
    blob = gzip.compress(data, compresslevel=1)
    root.mkdir()
    result = layers.unpack(Dribble(blob, 3), root)  # type: ignore[arg-type]
    assert result.diff_id == layers.sha256_digest(data) and result.compression == "gzip"
    assert (root / "d/file").read_bytes() == payload


def test_multi_member_gzip_and_zero_padding(root: Path) -> None:
    data = make_tar([reg("a", b"first" * 5000), reg("b", b"second" * 5000)])
    cut = len(data) // 3
    blob = gzip.compress(data[:cut]) + gzip.compress(data[cut:]) + b"\0" * 1024
    result = unpack_bytes(blob, root)
    assert result.diff_id == layers.sha256_digest(data)
    assert (root / "b").read_bytes() == b"second" * 5000
    with pytest.raises(InvalidLayer, match="gzip"):
        unpack_bytes(blob + b"trailing garbage", root.parent / "other")


def test_zstd_frames_are_all_read(root: Path) -> None:
    data = make_tar([reg("a", os.urandom(100_000)), reg("b", b"tail")])
    cut = len(data) // 2
    zc = zstandard.ZstdCompressor()
    result = unpack_bytes(zc.compress(data[:cut]) + zc.compress(data[cut:]), root)
    assert result.diff_id == layers.sha256_digest(data) and result.tar_bytes == len(data)
    assert (root / "b").read_bytes() == b"tail"


def test_highly_compressible_layer_in_bounded_chunks(tmp_path: Path) -> None:
    data = make_tar([reg("zeros", b"\0" * (24 << 20)), reg("after", b"a")])
    blob = gzip.compress(data, compresslevel=9)
    chunks, kind = layers.decompressed_chunks(io.BytesIO(blob))
    sizes = [len(c) for c in chunks]
    assert kind == "gzip" and sum(sizes) == len(data) and max(sizes) <= layers.CHUNK
    result = unpack_bytes(blob, tmp_path / "root")
    assert result.diff_id == layers.sha256_digest(data)
    assert os.stat(tmp_path / "root" / "zeros").st_size == 24 << 20


def test_layer_stream_is_forward_only() -> None:
    stream = layers._LayerStream(iter([b"abc", b"defgh", b"ij"]), max_bytes=100)
    assert stream.read(2) == b"ab" and stream.read(4) == b"cdef"
    assert stream.seek(8) == 8 and stream.read(5) == b"ij" and stream.read(1) == b""
    with pytest.raises(InvalidLayer, match="backwards"):
        stream.seek(3)
    assert stream.count == 10 and stream.digest == layers.sha256_digest(b"abcdefghij")


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_sparse_members(tmp_path: Path, fmt: str) -> None:
    tar_bin = shutil.which("tar")
    if tar_bin is None:
        pytest.skip("no tar(1) to make a sparse archive")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(1 << 20)
        f.write(b"middle")
        f.seek(3 << 20)
        f.write(b"end")
    archive = tmp_path / "sparse.tar"
    subprocess.run(
        [tar_bin, f"--format={fmt}", "-S", "-cf", str(archive), "-C", str(src), "sparse", "--owner=0"],
        check=True,
    )
    with tarfile.open(archive) as tf:
        assert tf.getmember("sparse").sparse, "tar(1) made no sparse member"
    unpack_bytes(gzip.compress(archive.read_bytes()), tmp_path / "root")
    out = tmp_path / "root" / "sparse"
    assert out.read_bytes() == (src / "sparse").read_bytes()
    assert out.stat().st_blocks * 512 < 1 << 20, "the holes were written out"


def pax_sparse(name: str, real_size: int, segments: list[tuple[int, bytes]]) -> bytes:
    """A GNU PAX 1.0 sparse member as GNU tar writes one: the map, then the segments' data."""
    listing = f"{len(segments)}\n" + "".join(f"{off}\n{len(data)}\n" for off, data in segments)
    block = listing.encode().ljust(-(-len(listing) // 512) * 512, b"\0")
    data = block + b"".join(d for _, d in segments)
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    info.size, info.mode = len(data), 0o644
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(real_size),
    }
    return make_tar([(info, data)])


def test_sparse_holes_are_not_written(root: Path) -> None:
    """A small layer declaring a huge sparse file must not fill the disk with its holes."""
    size = (1 << 30) + 3
    unpack_bytes(pax_sparse("big", size, [(10, b"start"), (1 << 30, b"end")]), root)
    st = os.stat(root / "big")
    assert st.st_size == size and st.st_blocks * 512 < 1 << 20
    with open(root / "big", "rb") as f:
        assert f.read(15) == b"\0" * 10 + b"start"
        f.seek(1 << 30)
        assert f.read() == b"end"


def test_sparse_map_past_the_end_refused(root: Path) -> None:
    with pytest.raises(InvalidLayer, match="sparse map"):
        unpack_bytes(pax_sparse("bad", 100, [(98, b"toolong")]), root)
