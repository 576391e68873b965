"""Volumes without a kernel: the local driver's options, the volume service, mount planning."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.models.hostconfig import HostConfig
from runtime.config import DaemonConfig
from runtime.errors import Conflict, InvalidParameter, NotFound
from runtime.events import EventBus
from runtime.mountplan import plan_mounts
from runtime.volumedriver import (
    MS_BIND,
    MS_NOEXEC,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    check_options,
    parse_mount_options,
)
from runtime.volumes import ANONYMOUS_LABEL, VolumeService

# --- local driver options ----------------------------------------------------------------------


def test_tmpfs_and_bind_options_are_accepted() -> None:
    check_options({"type": "tmpfs", "device": "tmpfs", "o": "size=64m"})
    check_options({"type": "none", "device": "/srv", "o": "bind"})


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"bogus": "1"}, 'invalid option: "bogus"'),
        ({"type": "tmpfs"}, 'missing required option: "device"'),
        ({"device": "/dev/sdb"}, 'missing required option: "type"'),
        ({"o": "size=1m", "type": "tmpfs"}, 'missing required option: "device"'),
        ({"size": "10G"}, "quota size requested but no quota support"),
    ],
)
def test_bad_options_use_dockerd_wording(opts: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        check_options(opts)


def test_mount_options_split_into_flags_and_data() -> None:
    assert parse_mount_options("size=64m,uid=1000") == (0, "size=64m,uid=1000")
    assert parse_mount_options("bind,ro") == (MS_BIND | MS_RDONLY, "")
    assert parse_mount_options("rbind,rprivate,noexec,exec") == (MS_BIND | MS_REC | MS_PRIVATE, "")
    flags, data = parse_mount_options("noexec,addr=10.0.0.1,nfsvers=4")
    assert flags == MS_NOEXEC and data == "addr=10.0.0.1,nfsvers=4"


# --- the service -----------------------------------------------------------------------------------


@pytest.fixture
async def volumes(tmp_path: Path) -> VolumeService:
    svc = VolumeService(DaemonConfig(data_root=tmp_path, exec_root=tmp_path / "exec"), EventBus())
    await svc.open()
    return svc


async def test_create_inspect_and_reload(volumes: VolumeService, tmp_path: Path) -> None:
    vol, created = await volumes.create("data1", labels={"a": "b"}, options=None)
    assert created
    body = volumes.body(vol)
    assert body["Name"] == "data1" and body["Driver"] == "local" and body["Scope"] == "local"
    assert body["Labels"] == {"a": "b"} and body["Options"] is None
    assert body["Mountpoint"] == str(tmp_path / "volumes" / "data1" / "_data")
    assert (tmp_path / "volumes" / "data1" / "_data").is_dir()
    again, created = await volumes.create("data1", labels={"x": "y"})
    assert not created and again is vol  # dockerd answers with the existing volume
    reloaded = VolumeService(DaemonConfig(data_root=tmp_path), EventBus())
    await reloaded.open()
    assert reloaded.body(reloaded.get("data1")) == body


async def test_anonymous_volume_has_a_hex_name_and_the_label(volumes: VolumeService) -> None:
    vol, _ = await volumes.create(None)
    assert len(vol.name) == 64 and int(vol.name, 16) >= 0
    assert vol.labels == {ANONYMOUS_LABEL: ""}
    assert volumes.is_anonymous(vol.name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a", "volume name is too short"),
        ("bad/name", '"bad/name" includes invalid characters for a local volume name'),
        ("../x", "includes invalid characters"),
    ],
)
async def test_bad_names(volumes: VolumeService, name: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        await volumes.create(name)


async def test_unknown_driver_is_404(volumes: VolumeService) -> None:
    with pytest.raises(NotFound, match='error looking up volume plugin nfsplug: plugin "nfsplug" not found'):
        await volumes.create("v1", driver="nfsplug")


async def test_remove_not_found_and_in_use(volumes: VolumeService) -> None:
    with pytest.raises(NotFound, match=r"^get nope: no such volume$"):
        await volumes.remove("nope")
    await volumes.remove("nope", force=True)
    await volumes.create("busy")
    volumes.set_usage_probe(lambda: {"busy": ["c2", "c1"]})
    with pytest.raises(Conflict, match=r"^remove busy: volume is in use - \[c1, c2\]$"):
        await volumes.remove("busy")
    volumes.set_usage_probe(dict)
    await volumes.remove("busy")
    assert not volumes.exists("busy")


async def test_list_filters(volumes: VolumeService) -> None:
    await volumes.create("web-data", labels={"app": "web"})
    await volumes.create("db-data", labels={"app": "db", "tier": "x"})
    await volumes.create(None)
    volumes.set_usage_probe(lambda: {"db-data": ["c1"]})

    def names(filters: dict[str, list[str]]) -> list[str]:
        return sorted(v["Name"] for v in volumes.list_volumes(filters)["Volumes"])

    assert names({"name": ["data"]}) == ["db-data", "web-data"]
    assert names({"name": ["^web"]}) == ["web-data"]
    assert names({"label": ["app=db"]}) == ["db-data"]
    assert names({"label": ["tier"]}) == ["db-data"]
    assert names({"driver": ["local"]}) == names({})
    assert names({"driver": ["other"]}) == []
    assert "db-data" not in names({"dangling": ["true"]})
    assert names({"dangling": ["false"]}) == ["db-data"]
    assert volumes.list_volumes({})["Warnings"] is None
    with pytest.raises(InvalidParameter, match="invalid filter 'bogus'"):
        volumes.list_volumes({"bogus": ["x"]})


async def test_prune_anonymous_only_from_api_1_42(volumes: VolumeService) -> None:
    named, _ = await volumes.create("keepme")
    anon, _ = await volumes.create(None)
    used, _ = await volumes.create(None)
    opts, _ = await volumes.create("tmp1", options={"type": "tmpfs", "device": "tmpfs"})
    (Path(anon.data_path) / "f").write_bytes(b"x" * 5000)
    volumes.set_usage_probe(lambda: {used.name: ["c1"]})
    report = await volumes.prune({}, api_version="1.42")
    assert report["VolumesDeleted"] == [anon.name]
    assert report["SpaceReclaimed"] >= 5000
    assert volumes.exists(named.name) and volumes.exists(used.name) and volumes.exists(opts.name)
    # API 1.41 (what the CLI negotiates with pydock): every unused local volume without options.
    report = await volumes.prune({"label!": ["nope"]}, api_version="1.41")
    assert report["VolumesDeleted"] == ["keepme"]
    assert volumes.exists("tmp1")


async def test_prune_all_and_label_filters(volumes: VolumeService) -> None:
    await volumes.create("a1", labels={"k": "v"})
    await volumes.create("a2")
    report = await volumes.prune({"all": ["true"], "label": ["k=v"]}, api_version="1.42")
    assert report["VolumesDeleted"] == ["a1"]
    report = await volumes.prune({}, api_version="1.42")
    assert report == {"VolumesDeleted": None, "SpaceReclaimed": 0}
    with pytest.raises(InvalidParameter):
        await volumes.prune({"all": ["maybe"]}, api_version="1.42")
    with pytest.raises(InvalidParameter, match="invalid filter 'dangling'"):
        await volumes.prune({"dangling": ["true"]}, api_version="1.42")


async def test_events(tmp_path: Path) -> None:
    bus = EventBus()
    svc = VolumeService(DaemonConfig(data_root=tmp_path), bus)
    await svc.open()
    await svc.create("ev1")
    await svc.remove("ev1")
    seen = [(e.type, e.action, e.actor_id, e.attributes) for e in bus.past(None, None)]
    assert seen == [
        ("volume", "create", "ev1", {"driver": "local"}),
        ("volume", "destroy", "ev1", {"driver": "local"}),
    ]


# --- mount planning --------------------------------------------------------------------------------


def _hc(**kwargs: object) -> HostConfig:
    return HostConfig.model_validate(kwargs)


def test_plan_binds_volumes_and_image_volumes() -> None:
    hc = _hc(Binds=["named:/data", "/srv/x:/x:ro,rslave", "/anon"], Tmpfs={"/t": ""})
    plan = {p.destination: p for p in plan_mounts(hc, ["/data", "/img", "/t"], {})}
    assert sorted(plan) == ["/anon", "/data", "/img", "/x"]
    data = plan["/data"].inspect()
    assert data == {
        "Type": "volume",
        "Name": "named",
        "Source": "",
        "Destination": "/data",
        "Driver": "local",
        "Mode": "z",
        "RW": True,
        "Propagation": "",
    }
    assert plan["/x"].inspect() == {
        "Type": "bind",
        "Source": "/srv/x",
        "Destination": "/x",
        "Mode": "ro,rslave",
        "RW": False,
        "Propagation": "rslave",
    }
    assert plan["/anon"].name == "" and plan["/anon"].copy_data and plan["/anon"].mode == "z"
    img = plan["/img"]
    assert img.name == "" and img.mode == "" and img.copy_data  # image volumes: Mode ""


def test_plan_mounts_api() -> None:
    hc = _hc(
        Mounts=[
            {
                "Type": "volume",
                "Source": "v",
                "Target": "/v",
                "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}},
            },
            {"Type": "bind", "Source": "/h", "Target": "/b", "ReadOnly": True},
            {"Type": "tmpfs", "Target": "/tm"},
            {
                "Type": "volume",
                "Target": "/anon",
                "VolumeOptions": {"DriverConfig": {"Options": {"type": "tmpfs"}}},
            },
        ]
    )
    plan = {p.destination: p for p in plan_mounts(hc, [], {})}
    assert not plan["/v"].copy_data and plan["/v"].labels == {"a": "b"} and plan["/v"].mode == "z"
    assert plan["/b"].inspect()["Propagation"] == "rprivate" and not plan["/b"].rw
    assert plan["/tm"].inspect() == {
        "Type": "tmpfs",
        "Source": "",
        "Destination": "/tm",
        "Mode": "",
        "RW": True,
        "Propagation": "",
    }
    assert plan["/anon"].driver_options == {"type": "tmpfs"}


def test_plan_duplicates_and_drivers() -> None:
    with pytest.raises(InvalidParameter, match=r"^Duplicate mount point: /a$"):
        plan_mounts(_hc(Binds=["v:/a", "w:/a"]), [], {})
    with pytest.raises(InvalidParameter, match=r"^Duplicate mount point: /a$"):
        plan_mounts(_hc(Binds=["v:/a"], Mounts=[{"Type": "volume", "Source": "w", "Target": "/a"}]), [], {})
    with pytest.raises(NotFound, match="plugin"):
        plan_mounts(_hc(VolumeDriver="convoy"), [], {})
    with pytest.raises(NotFound, match="plugin"):
        plan_mounts(
            _hc(
                Mounts=[{"Type": "volume", "Target": "/a", "VolumeOptions": {"DriverConfig": {"Name": "x"}}}]
            ),
            [],
            {},
        )


def test_plan_volumes_from() -> None:
    theirs = [
        {"Type": "volume", "Name": "v1", "Source": "/vols/v1/_data", "Destination": "/d", "Driver": "local",
         "Mode": "z", "RW": True, "Propagation": ""},
        {"Type": "bind", "Source": "/h", "Destination": "/b", "Mode": "", "RW": True,
         "Propagation": "rprivate"},
    ]  # fmt: skip
    plan = {p.destination: p for p in plan_mounts(_hc(VolumesFrom=["other:ro"]), ["/d"], {"other": theirs})}
    assert not plan["/d"].rw and not plan["/b"].rw
    assert plan["/d"].name == "v1" and plan["/d"].source == "/vols/v1/_data" and not plan["/d"].copy_data
    # A -v at the same destination replaces what --volumes-from brought.
    plan = {
        p.destination: p
        for p in plan_mounts(_hc(VolumesFrom=["other"], Binds=["mine:/d"]), [], {"other": theirs})
    }
    assert plan["/d"].name == "mine" and plan["/b"].rw
