"""Images through the real docker CLI and docker-py against a live pydockd, and pull/push/login
against a real `docker-registry` on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import docker
import httpx
import pytest

from tests.archives import ArchivePair
from tests.integration.daemon import Daemon, wait_for
from tests.integration.registry import Registry, build_docker_archive, layer_tar, registry_auth_header


def out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode()


def image_ids(d: Daemon) -> set[str]:
    return set(out(d.docker("images", "-a", "-q", "--no-trunc")).split())


def store_leftovers(d: Daemon) -> list[str]:
    images = d.data_root / "images"
    return [str(p) for p in images.rglob(".tmp-*")] + [str(p) for p in images.rglob("*.removing")]


# --- load / save / import -------------------------------------------------------------------------


def test_load_archives_with_cli(fresh_daemon: Daemon, archives: ArchivePair) -> None:
    d = fresh_daemon
    image_id, oci_id = archives.docker_save.image_id, archives.oci.image_id
    assert "Loaded image: busybox:latest" in out(d.docker("load", "-i", str(archives.docker_save.path)))
    assert image_ids(d) == {image_id}
    r = d.docker("load", "-q", "-i", str(archives.oci.path))
    assert "busybox:latest" in out(r)
    assert image_ids(d) == {image_id, oci_id}
    assert out(d.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "busybox")).split() == [
        "busybox:latest",
        oci_id[7:19],
    ]
    # stdin works too, and a broken archive is a clean error that registers nothing.
    assert d.docker("load", input=b"not a tar" * 100, check=False).returncode != 0
    assert image_ids(d) == {image_id, oci_id}
    assert store_leftovers(d) == []


def test_save_then_load_round_trip(fresh_daemon: Daemon, tmp_root: Path, archives: ArchivePair) -> None:
    d = fresh_daemon
    image_id = archives.docker_save.image_id
    d.docker("load", "-i", str(archives.docker_save.path))
    d.docker("tag", "busybox", "proto-img:v1")
    saved = tmp_root / "saved.tar"
    d.docker("save", "-o", str(saved), "busybox", "proto-img:v1")
    inspected = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"docker-archive:{saved}:proto-img:v1"], capture_output=True, check=True
        ).stdout
    )
    assert inspected["Layers"] == list(archives.docker_save.diff_ids)
    d.docker("rmi", "busybox", "proto-img:v1")
    assert image_ids(d) == set()
    loaded = out(d.docker("load", "-i", str(saved)))
    assert "Loaded image: busybox:latest" in loaded and "Loaded image: proto-img:v1" in loaded
    assert out(d.docker("image", "inspect", "-f", "{{.Id}}", "proto-img:v1")).strip() == image_id
    # `docker save` to stdout, of an ID: loads as an untagged image.
    raw = d.docker("save", image_id[7:19]).stdout
    d.docker("rmi", "busybox", "proto-img:v1")
    assert "Loaded image ID: " + image_id in out(d.docker("load", input=raw))


def test_import_with_changes_and_message(fresh_daemon: Daemon, tmp_root: Path) -> None:
    d = fresh_daemon
    rootfs = tmp_root / "rootfs.tar"
    rootfs.write_bytes(layer_tar({"etc/hello": b"hi\n", "bin/tool": b"#!/bin/sh\necho tool\n"}))
    changes = ['CMD ["sh"]', "ENV A=1", "WORKDIR /srv", "EXPOSE 8080", "LABEL team=core", "USER nobody",
               "VOLUME /data", "ENTRYPOINT /bin/tool"]  # fmt: skip
    flags = [arg for change in changes for arg in ("-c", change)]
    image_id = out(d.docker("import", *flags, "-m", "proto msg", str(rootfs), "proto-imp:v1")).strip()
    assert image_id.startswith("sha256:")
    info = json.loads(out(d.docker("image", "inspect", "proto-imp:v1")))[0]
    cfg = info["Config"]
    assert info["Id"] == image_id and info["Comment"] == "proto msg"
    assert cfg["Cmd"] == ["sh"] and cfg["Env"] == ["A=1"] and cfg["WorkingDir"] == "/srv"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}} and cfg["Labels"] == {"team": "core"}
    assert cfg["User"] == "nobody" and cfg["Volumes"] == {"/data": {}}
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "/bin/tool"]
    assert info["RootFS"]["Layers"] == ["sha256:" + hashlib.sha256(rootfs.read_bytes()).hexdigest()]
    history = out(d.docker("history", "--format", "{{.Comment}}", "proto-imp:v1")).strip()
    assert history == "proto msg"
    # From stdin, and a gzipped tarball.
    r = d.docker("import", "-", "proto-imp:gz", input=gzip.compress(rootfs.read_bytes()))
    assert (
        out(d.docker("image", "inspect", "-f", "{{index .RootFS.Layers 0}}", "proto-imp:gz")).strip()
        == (info["RootFS"]["Layers"][0])
    )
    assert r.returncode == 0
    bad = d.docker("import", "-c", "RUN rm -rf /", str(rootfs), "proto-imp:bad", check=False)
    assert bad.returncode != 0 and "RUN is not a valid change command" in bad.stderr.decode()


# --- tag, rmi, images, inspect, history, prune ---------------------------------------------------


def test_tag_rmi_images_inspect_history(fresh_daemon: Daemon, archives: ArchivePair) -> None:
    d = fresh_daemon
    image_id, (diff_id,) = archives.docker_save.image_id, archives.docker_save.diff_ids
    d.docker("load", "-i", str(archives.docker_save.path))
    d.docker("tag", "busybox", "proto-img:v1")
    d.docker("tag", "busybox", "localhost:5000/ns/proto-x:1.0")
    rows = out(d.docker("images", "--format", "{{.Repository}}:{{.Tag}}")).split()
    assert sorted(rows) == ["busybox:latest", "localhost:5000/ns/proto-x:1.0", "proto-img:v1"]
    assert out(
        d.docker("images", "--format", "{{.Repository}}", "--filter", "reference=proto-*")
    ).split() == ["proto-img"]
    assert out(d.docker("images", "-q", "--filter", "dangling=true")).split() == []
    assert "<none>" in out(d.docker("images", "--digests"))
    info = json.loads(out(d.docker("image", "inspect", "proto-img:v1")))[0]
    assert info["Id"] == image_id and info["RootFS"] == {"Type": "layers", "Layers": [diff_id]}
    assert info["Architecture"] == "amd64" and info["Os"] == "linux" and info["Size"] > 1_000_000
    assert sorted(info["RepoTags"]) == ["busybox:latest", "localhost:5000/ns/proto-x:1.0", "proto-img:v1"]
    hist = out(d.docker("history", "--no-trunc", "--format", "{{.ID}} {{.Comment}}", "busybox")).strip()
    assert hist == archives.docker_save.history_output()
    assert out(d.docker("rmi", "proto-img:v1")).strip() == "Untagged: proto-img:v1"
    missing = d.docker("rmi", "proto-img:nope", check=False)
    assert missing.returncode == 1 and "No such image: proto-img:nope" in missing.stderr.decode()
    inspect_missing = d.docker("image", "inspect", "nope", check=False)
    assert inspect_missing.returncode == 1 and "No such image: nope" in inspect_missing.stderr.decode()
    # An ID with two repositories needs -f; then every name goes with it.
    conflict = d.docker("rmi", image_id[7:19], check=False)
    assert conflict.returncode == 1 and "must be forced" in conflict.stderr.decode()
    removed = out(d.docker("rmi", "-f", image_id[7:19]))
    assert "Untagged: busybox:latest" in removed and f"Deleted: {image_id}" in removed
    assert f"Deleted: {diff_id}" in removed
    assert image_ids(d) == set()
    assert list((d.data_root / "images" / "layers").iterdir()) == []


def test_prune_dangling_and_all(fresh_daemon: Daemon, archives: ArchivePair) -> None:
    d = fresh_daemon
    image_id, oci_id = archives.docker_save.image_id, archives.oci.image_id
    d.docker("load", "-i", str(archives.docker_save.path))
    d.docker(
        "load", "-i", str(archives.oci.path)
    )  # takes busybox:latest: the docker-save image is now dangling
    assert out(d.docker("images", "-q", "--no-trunc", "--filter", "dangling=true")).split() == [image_id]
    pruned = out(d.docker("image", "prune", "-f"))
    assert f"deleted: {image_id}" in pruned
    assert image_ids(d) == {oci_id}
    pruned = out(d.docker("image", "prune", "-a", "-f"))
    assert "untagged: busybox:latest" in pruned and f"deleted: {oci_id}" in pruned
    assert image_ids(d) == set()


def test_docker_py_image_api(fresh_daemon: Daemon, archives: ArchivePair) -> None:
    image_id = archives.docker_save.image_id
    client = fresh_daemon.client()
    try:
        (image,) = client.images.load(archives.docker_save.path.read_bytes())
        assert image.id == image_id and image.tags == ["busybox:latest"]
        assert image.tag("dpy/proto", "v2")
        assert client.images.get("dpy/proto:v2").id == image_id
        assert [i.id for i in client.images.list(name="dpy/proto")] == [image_id]
        assert image.history()[0]["Id"] == image_id
        saved = b"".join(image.save(named=True))
        client.images.remove("dpy/proto:v2")
        client.images.remove("busybox", force=True)
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("busybox")
        (again,) = client.images.load(saved)
        assert again.id == image_id
        assert client.images.prune(filters={"dangling": False})["ImagesDeleted"]
    finally:
        client.close()


# --- registries -----------------------------------------------------------------------------------


def test_pull_push_with_cli_and_docker_py(
    fresh_daemon: Daemon, registry: Registry, built_archives: ArchivePair
) -> None:
    d = fresh_daemon
    ref = f"{registry.host}/busybox"
    pulled = out(d.docker("pull", ref))
    assert "latest: Pulling from busybox" in pulled
    assert "Pull complete" in pulled and f"Status: Downloaded newer image for {ref}:latest" in pulled
    _, manifest_digest = registry.manifest("busybox", "latest")
    assert f"Digest: {manifest_digest}" in pulled
    info = json.loads(out(d.docker("image", "inspect", ref)))[0]
    assert info["Id"] == built_archives.docker_save.image_id
    assert info["RepoDigests"] == [f"{ref}@{manifest_digest}"]
    assert "Image is up to date" in out(d.docker("pull", ref))
    # By digest, and through docker-py (which reads the stream and then inspects).
    d.docker("rmi", f"{ref}:latest")
    assert "Downloaded newer image" in out(d.docker("pull", f"{ref}@{manifest_digest}"))
    client = d.client()
    try:
        image = client.images.pull(f"{registry.host}/oci/busybox", tag="latest")
        assert image.id == built_archives.oci.image_id
    finally:
        client.close()
    # Push to a new repository (the layer is mounted from where it was pulled), and back.
    d.docker("tag", ref + f"@{manifest_digest}", f"{registry.host}/proto-push:v1")
    pushed = out(d.docker("push", f"{registry.host}/proto-push:v1"))
    assert f"The push refers to repository [{registry.host}/proto-push]" in pushed
    assert "v1: digest: sha256:" in pushed
    assert "Layer already exists" in out(d.docker("push", f"{registry.host}/proto-push:v1"))
    missing = d.docker("push", f"{registry.host}/proto-nothere:v1", check=False)
    assert (
        missing.returncode != 0 and "An image does not exist locally with the tag" in missing.stderr.decode()
    )
    unknown = d.docker("pull", f"{registry.host}/proto-nothere", check=False)
    assert unknown.returncode == 1 and "not found" in unknown.stderr.decode()


def test_pull_multilayer_and_manifest_list(fresh_daemon: Daemon, registry: Registry, tmp_root: Path) -> None:
    d = fresh_daemon
    layers = [
        layer_tar({"etc/base": b"base\n", "etc/gone": b"x", "opq/old": b"old"}),
        layer_tar({"etc/.wh.gone": b"", "opq/.wh..wh..opq": b"", "opq/new": b"new"}),
        layer_tar({"app/data.bin": os.urandom(300_000)}),
    ]
    archive = tmp_root / "multi.tar"
    image_id = build_docker_archive(archive, layers, "proto-multi:1", {"Env": ["X=1"]})
    registry.copy_archive(archive, "proto-multi:1")
    other = tmp_root / "other.tar"
    other_id = build_docker_archive(other, [layer_tar({"arm": b"64"})], "proto-multi:arm")
    registry.copy_archive(other, "proto-multi:arm")
    _, amd_digest = registry.manifest("proto-multi", "1")
    _, arm_digest = registry.manifest("proto-multi", "arm")
    list_digest = registry.put_manifest_list(
        "proto-multi", "multi", [(arm_digest, "linux", "arm64"), (amd_digest, "linux", "amd64")]
    )
    assert other_id != image_id
    ref = f"{registry.host}/proto-multi:multi"
    dist = d.json("GET", f"/v1.41/distribution/{ref}/json")
    assert dist["Descriptor"]["digest"] == list_digest
    assert {p["architecture"] for p in dist["Platforms"]} == {"amd64", "arm64"}
    pulled = out(d.docker("pull", ref))
    assert pulled.count("Pull complete") == 3 and f"Digest: {list_digest}" in pulled
    info = json.loads(out(d.docker("image", "inspect", ref)))[0]
    assert info["Id"] == image_id and len(info["RootFS"]["Layers"]) == 3
    assert info["RepoDigests"] == [f"{registry.host}/proto-multi@{list_digest}"]
    # The layers are overlay lower dirs with overlay whiteouts.
    upper = Path(info["GraphDriver"]["Data"]["UpperDir"])
    lowers = [Path(p) for p in info["GraphDriver"]["Data"]["LowerDir"].split(":")]
    assert (upper / "app" / "data.bin").stat().st_size == 300_000
    assert (
        os.stat(lowers[0] / "etc" / "gone").st_rdev == 0
        and (lowers[0] / "opq" / "new").read_bytes() == b"new"
    )
    assert os.getxattr(lowers[0] / "opq", "trusted.overlay.opaque") == b"y"
    assert (lowers[1] / "etc" / "base").read_bytes() == b"base\n"
    # A second image sharing the lower layers reuses them.
    again = out(d.docker("pull", f"{registry.host}/proto-multi:1"))
    assert "Pull complete" not in again


def test_login_and_pull_push_with_basic_auth(fresh_daemon: Daemon, auth_registry: Registry) -> None:
    d = fresh_daemon
    host = auth_registry.host
    denied = d.docker("pull", f"{host}/private/busybox", input=b"", check=False)
    assert denied.returncode == 1 and "pull access denied" in denied.stderr.decode()
    wrong = d.docker("login", "-u", "pydock", "--password-stdin", host, input=b"wrong\n", check=False)
    assert wrong.returncode != 0
    ok = d.docker("login", "-u", "pydock", "--password-stdin", host, input=b"s3cret\n")
    assert "Login Succeeded" in out(ok)
    assert "Downloaded newer image" in out(d.docker("pull", f"{host}/private/busybox"))
    d.docker("tag", f"{host}/private/busybox", f"{host}/private/pushed:1")
    assert "1: digest: sha256:" in out(d.docker("push", f"{host}/private/pushed:1"))
    # The raw API: /auth answers as dockerd does; X-Registry-Auth carries the credentials.
    body = {"username": "pydock", "password": "s3cret", "serveraddress": host}
    assert d.json("POST", "/v1.41/auth", json=body) == {"Status": "Login Succeeded", "IdentityToken": ""}
    assert d.request("POST", "/v1.41/auth", json={**body, "password": "bad"}).status_code == 401
    header = registry_auth_header("pydock", "s3cret", host)
    d.docker("rmi", f"{host}/private/pushed:1", f"{host}/private/busybox")
    params = {"fromImage": f"{host}/private/pushed", "tag": "1"}
    r = d.request("POST", "/v1.41/images/create", params=params, headers={"X-Registry-Auth": header})
    assert r.status_code == 200 and b"Downloaded newer image" in r.content


@pytest.mark.slow
@pytest.mark.parametrize("when", ["Downloading", "Pull complete"])
def test_pull_killed_half_way_is_completed_by_the_next_pull(
    fresh_daemon: Daemon, registry: Registry, tmp_root: Path, when: str
) -> None:
    """SIGKILL while layers stream in (temp blobs and half-unpacked temp layer dirs), or once
    a first layer has landed and the others are still on their way."""
    d = fresh_daemon
    blobs = [os.urandom(12 << 20) for _ in range(3)]
    layers = [layer_tar({f"data/{i}.bin": blob}) for i, blob in enumerate(blobs)]
    archive = tmp_root / "big.tar"
    repo = "proto-big-" + when.split()[-1].lower()
    image_id = build_docker_archive(archive, layers, f"{repo}:1")
    registry.copy_archive(archive, f"{repo}:1")
    ref = f"{registry.host}/{repo}"
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(d.sock)), base_url="http://d", timeout=60)
    with client, client.stream("POST", "/v1.41/images/create", params={"fromImage": ref, "tag": "1"}) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if f'"{when}"' in line:
                d.kill()
                break
        else:
            pytest.fail(f"the pull never said {when!r}")
    d.start()
    assert image_id not in image_ids(d)
    wait_for(lambda: store_leftovers(d) == [], 10, "startup sweep")
    pulled = out(d.docker("pull", f"{ref}:1"))
    assert "Downloaded newer image" in pulled
    info = json.loads(out(d.docker("image", "inspect", f"{ref}:1")))[0]
    assert info["Id"] == image_id
    dirs = [
        Path(info["GraphDriver"]["Data"]["UpperDir"]),
        *map(Path, info["GraphDriver"]["Data"]["LowerDir"].split(":")),
    ]
    for i, blob in enumerate(blobs):
        assert (dirs[2 - i] / "data" / f"{i}.bin").read_bytes() == blob
    assert store_leftovers(d) == []


def test_pull_of_a_corrupted_blob_fails_and_lands_nothing(
    fresh_daemon: Daemon, registry: Registry, tmp_root: Path
) -> None:
    d = fresh_daemon
    payload = os.urandom(3 << 20)
    archive = tmp_root / "corrupt.tar"
    image_id = build_docker_archive(archive, [layer_tar({"data.bin": payload})], "proto-corrupt:1")
    registry.copy_archive(archive, "proto-corrupt:1")
    raw, _ = registry.manifest("proto-corrupt", "1")
    digest = json.loads(raw)["layers"][0]["digest"]
    stored = registry.root / "storage/docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    good = stored.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x55  # same length: only the digest (and gzip's CRC) can tell
    stored.write_bytes(bytes(bad))
    ref = f"{registry.host}/proto-corrupt:1"
    try:
        failed = d.docker("pull", ref, check=False)
    finally:
        stored.write_bytes(good)
    assert failed.returncode == 1
    assert f"filesystem layer verification failed for digest {digest}" in failed.stderr.decode()
    images = d.data_root / "images"
    assert image_id not in image_ids(d)
    assert [p.name for p in (images / "layers").iterdir()] == []
    assert not (images / "blobs" / "sha256" / digest[7:]).exists()
    assert store_leftovers(d) == []
    assert "Downloaded newer image" in out(d.docker("pull", ref))
    info = json.loads(out(d.docker("image", "inspect", ref)))[0]
    assert (Path(info["GraphDriver"]["Data"]["UpperDir"]) / "data.bin").read_bytes() == payload


def test_concurrent_pulls_share_one_download(
    fresh_daemon: Daemon, registry: Registry, tmp_root: Path
) -> None:
    d = fresh_daemon
    layers = [layer_tar({f"c/{i}": os.urandom(2 << 20)}) for i in range(3)]
    archive = tmp_root / "conc.tar"
    image_id = build_docker_archive(archive, layers, "proto-conc:1")
    registry.copy_archive(archive, "proto-conc:1")
    ref = f"{registry.host}/proto-conc:1"
    procs = [
        subprocess.Popen(["docker", "pull", ref], env=d.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    assert image_ids(d) == {image_id}
    raw, _ = registry.manifest("proto-conc", "1")
    for desc in json.loads(raw)["layers"]:
        assert registry.blob_fetches("proto-conc", desc["digest"]) == 1
    # Events were published for the pull and for a tag.
    d.docker("tag", ref, "proto-conc:evt")
    until = str(int(time.time()) + 1)
    events = d.request(
        "GET", "/v1.41/events", params={"since": "0", "until": until, "filters": '{"type":["image"]}'}
    )
    actions = [json.loads(line)["Action"] for line in events.text.splitlines() if line.strip()]
    assert "pull" in actions and "tag" in actions
