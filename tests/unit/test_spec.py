"""OCI spec generation: golden files for whole specs, plain asserts for the rules inside."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from app.models.containers import ContainerConfig, ContainerCreateRequest
from app.models.exec import ExecConfig
from app.models.hostconfig import HostConfig
from runtime.caps import capability_mask
from runtime.devices import DeviceNode
from runtime.errors import InvalidParameter
from runtime.hostfacts import HostFacts
from runtime.spec import (
    NETNS_HOST,
    SpecInputs,
    build_exec_process,
    build_spec,
    check_sysctls,
    container_env,
    entrypoint_and_args,
    merge_image_config,
    replace_or_append_env,
)
from runtime.specmounts import BindMount, merge_tmpfs_options
from runtime.userdb import ProcessUser
from runtime.validation import adapt_host_config

GOLDEN = Path(__file__).parent / "golden" / "spec"
FACTS = HostFacts(machine="x86_64", kernel=(6, 1), last_cap=40, nofile_max=1048576)
BUSYBOX = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}
CID = "0123456789ab" + "cd" * 26


def create(
    body: dict[str, object], image: Mapping[str, object] | None = None
) -> tuple[ContainerConfig, HostConfig]:
    req = ContainerCreateRequest.model_validate({"Image": "busybox", "Hostname": CID[:12], **body})
    hc = adapt_host_config(req.HostConfig or HostConfig())
    return merge_image_config(req.config(), image if image is not None else BUSYBOX), hc


def inputs(**kw: object) -> SpecInputs:
    base: dict[str, object] = {
        "rootfs": Path("/run/pydock/containers/c/rootfs"),
        "cgroups_path": f"/pydock/{CID}",
        "hostname_path": Path("/var/lib/pydock/containers/c/hostname"),
        "hosts_path": Path("/var/lib/pydock/containers/c/hosts"),
        "resolv_conf_path": Path("/var/lib/pydock/containers/c/resolv.conf"),
        "netns": "/run/pydock/netns/c",
        "host": FACTS,
    }
    base.update(kw)
    return SpecInputs(**base)  # type: ignore[arg-type]  # test helper: keyword bag


def rendered(config: ContainerConfig, hc: HostConfig, spec_inputs: SpecInputs) -> dict[str, object]:
    out = build_spec(config, hc, spec_inputs).to_json()
    linux = out["linux"]
    assert isinstance(linux, dict)
    seccomp = linux.get("seccomp")
    if isinstance(seccomp, dict):
        # The profile has its own tests; goldens keep only its shape.
        rules = seccomp.get("syscalls")
        seccomp["syscalls"] = f"<{len(rules) if isinstance(rules, list) else 0} rules>"
    return out


def check_golden(name: str, data: dict[str, object], update: bool) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    if update or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not update:
            pytest.fail(f"golden file {path} was missing and has been written; re-run")
    assert json.loads(path.read_text()) == json.loads(text), f"{name} differs from {path}"


CASES: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "default": ({}, {}),
    "tty_init_env_user": (
        {
            "Tty": True,
            "OpenStdin": True,
            "Env": ["FOO=bar", "PATH=/opt/bin", "UNSET_ME"],
            "WorkingDir": "/tmp",
            "User": "1000:1000",
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo hi"],
            "Domainname": "example.org",
            "HostConfig": {"Init": True, "ConsoleSize": [40, 120], "OomScoreAdj": 100},
        },
        {
            "init_path": Path("/usr/bin/tini-static"),
            "user": ProcessUser(uid=1000, gid=1000, additional_gids=(50,)),
        },
    ),
    "privileged": (
        {"HostConfig": {"Privileged": True}},
        {
            "host_devices": (
                DeviceNode("/dev/sda", "b", 8, 0, 0o660, 0, 6),
                DeviceNode("/dev/kvm", "c", 10, 232, 0o660, 0, 108),
            )
        },
    ),
    "resources": (
        {
            "HostConfig": {
                "Memory": 64 * 1024 * 1024,
                "MemoryReservation": 32 * 1024 * 1024,
                "MemorySwappiness": 10,
                "OomKillDisable": True,
                "NanoCpus": 1_500_000_000,
                "CpuShares": 512,
                "CpusetCpus": "0-1",
                "PidsLimit": 64,
                "BlkioWeight": 300,
                "BlkioDeviceReadBps": [{"Path": "/dev/sda", "Rate": 1048576}],
                "Devices": [
                    {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rw"}
                ],
                "DeviceCgroupRules": ["c 42:* rmw"],
                "Ulimits": [
                    {"Name": "nproc", "Soft": 100, "Hard": 200},
                    {"Name": "nofile", "Soft": 1024, "Hard": 4096},
                ],
                "ShmSize": 128 * 1024 * 1024,
            }
        },
        {
            "devices": (DeviceNode("/dev/fuse", "c", 10, 229, 0o666, 0, 0, "rw"),),
            "block_devices": {"/dev/sda": (8, 0)},
            "default_ulimits": {"core": (0, 0)},
        },
    ),
    "host_namespaces": (
        {
            "HostConfig": {
                "NetworkMode": "host",
                "PidMode": "host",
                "IpcMode": "host",
                "UTSMode": "host",
            }
        },
        {"netns": NETNS_HOST},
    ),
    "shared_namespaces_private_cgroupns": (
        {
            "HostConfig": {
                "NetworkMode": "container:abc",
                "PidMode": "container:abc",
                "IpcMode": "container:abc",
                "CgroupnsMode": "private",
                "Sysctls": {"net.ipv4.ip_forward": "1"},
            }
        },
        {
            "netns": "/proc/4242/ns/net",
            "pid_ns_path": "/proc/4242/ns/pid",
            "ipc_ns_path": "/proc/4242/ns/ipc",
            "shm_path": Path("/var/lib/pydock/containers/abc/mounts/shm"),
        },
    ),
    "readonly_mounts": (
        {
            "HostConfig": {
                "ReadonlyRootfs": True,
                "Tmpfs": {"/run": "size=64m,exec", "/tmp": ""},
                "Mounts": [
                    {"Type": "tmpfs", "Target": "/cache", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 448}}
                ],
            }
        },
        {
            "binds": (
                BindMount("/data", "/var/lib/pydock/volumes/v/_data"),
                BindMount("/data/sub", "/srv/sub", readonly=True, propagation="rslave"),
                BindMount("/etc/hosts", "/srv/hosts", readonly=True),
            )
        },
    ),
    "caps_and_security": (
        {
            "HostConfig": {
                "CapAdd": ["net_admin", "CAP_SYS_TIME"],
                "CapDrop": ["mknod", "NET_RAW"],
                "SecurityOpt": ["no-new-privileges", "seccomp=unconfined", "systempaths=unconfined"],
                "Annotations": {"org.example/a": "b"},
            }
        },
        {},
    ),
    "cap_drop_all_ipc_none": (
        {"HostConfig": {"CapDrop": ["ALL"], "CapAdd": ["chown"], "IpcMode": "none"}},
        {"netns": None},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_spec(name: str, update_golden: bool) -> None:
    body, extra = CASES[name]
    config, hc = create(body)
    check_golden(name, rendered(config, hc, inputs(**extra)), update_golden)


def test_golden_exec_process(update_golden: bool) -> None:
    config, hc = create({"Env": ["A=1"], "WorkingDir": "/srv"})
    spec = build_spec(config, hc, inputs())
    ec = ExecConfig.model_validate(
        {
            "Cmd": ["sh", "-c", "id"],
            "Env": ["B=2", "A=3"],
            "Tty": True,
            "ConsoleSize": [24, 80],
            "Privileged": True,
        }
    )
    proc = build_exec_process(spec.process, config, ec, user=ProcessUser(uid=5, gid=6), host=FACTS)
    check_golden("exec_privileged_tty", proc.to_json(), update_golden)


# --- rules -------------------------------------------------------------------------------------


def test_default_capabilities_are_dockers_set() -> None:
    config, hc = create({})
    caps = build_spec(config, hc, inputs()).process.capabilities
    assert caps is not None and caps.effective is not None
    assert capability_mask(caps.effective) == 0xA80425FB
    assert caps.inheritable is None and caps.ambient is None


def test_privileged_is_clamped_to_daemon_bounding_set() -> None:
    facts = HostFacts(bounding_caps=frozenset({"CAP_CHOWN", "CAP_SYS_ADMIN"}))
    config, hc = create({"HostConfig": {"Privileged": True}})
    spec = build_spec(config, hc, inputs(host=facts))
    assert spec.process.capabilities is not None
    assert spec.process.capabilities.bounding == ["CAP_CHOWN", "CAP_SYS_ADMIN"]
    assert (
        spec.linux.seccomp is None and spec.linux.masked_paths is None and spec.linux.readonly_paths is None
    )
    sys_mount = next(m for m in spec.mounts if m.destination == "/sys")
    cgroup_mount = next(m for m in spec.mounts if m.destination == "/sys/fs/cgroup")
    assert "ro" not in (sys_mount.options or []) and "ro" not in (cgroup_mount.options or [])


def test_unknown_capability_is_refused() -> None:
    config, hc = create({"HostConfig": {"CapAdd": ["FLY"]}})
    with pytest.raises(InvalidParameter, match='unknown capability: "CAP_FLY"'):
        build_spec(config, hc, inputs())


def test_entrypoint_and_cmd_semantics() -> None:
    image = {"Entrypoint": ["/entry"], "Cmd": ["default"]}
    assert entrypoint_and_args(create({}, image)[0]) == ("/entry", ["default"])
    assert entrypoint_and_args(create({"Cmd": ["x", "y"]}, image)[0]) == ("/entry", ["x", "y"])
    # A new entrypoint drops the image's Cmd.
    assert entrypoint_and_args(create({"Entrypoint": ["/bin/sh"]}, image)[0]) == ("/bin/sh", [])
    # --entrypoint "" resets it; the user's Cmd runs alone.
    assert entrypoint_and_args(create({"Entrypoint": [""], "Cmd": ["echo", "hi"]}, image)[0]) == (
        "echo",
        ["hi"],
    )
    with pytest.raises(InvalidParameter, match="No command specified"):
        create({"Entrypoint": [""]}, {"Entrypoint": ["/entry"]})
    with pytest.raises(InvalidParameter, match="No command specified"):
        create({}, {})


def test_init_wraps_the_command() -> None:
    config, hc = create({"Cmd": ["sleep", "1"], "HostConfig": {"Init": True}})
    spec = build_spec(config, hc, inputs(init_path=Path("/usr/bin/tini-static")))
    assert spec.process.args == ["/sbin/docker-init", "--", "sleep", "1"]
    init = next(m for m in spec.mounts if m.destination == "/sbin/docker-init")
    assert init.source == "/usr/bin/tini-static" and init.options == ["bind", "ro"]


def test_env_merge_and_defaults() -> None:
    config, _ = create({"Env": ["PATH=/x", "NEW=1"]}, {"Env": ["PATH=/img", "IMG=1"], "Cmd": ["sh"]})
    assert config.Env == ["PATH=/x", "NEW=1", "IMG=1"]
    env = container_env(config, tty=True)
    assert env == ["PATH=/x", f"HOSTNAME={CID[:12]}", "TERM=xterm", "NEW=1", "IMG=1"]
    assert replace_or_append_env(["A=1", "B=2"], ["B", "C=3", "A=0"]) == ["A=0", "C=3"]
    no_path, _ = create({}, {"Cmd": ["sh"]})
    assert container_env(no_path, tty=False)[0].startswith("PATH=/usr/local/sbin:")


def test_memory_swap_defaults_and_unlimited() -> None:
    config, hc = create({"HostConfig": {"Memory": 64 << 20}})
    assert hc.MemorySwap == 128 << 20
    mem = build_spec(config, hc, inputs()).linux.resources.memory  # type: ignore[union-attr]
    assert mem is not None and mem.limit == 64 << 20 and mem.swap == 128 << 20
    config, hc = create({"HostConfig": {"Memory": 64 << 20, "MemorySwap": -1}})
    mem = build_spec(config, hc, inputs()).linux.resources.memory  # type: ignore[union-attr]
    assert mem is not None and mem.swap is None  # no swap limit at all
    no_swap_acct = HostFacts(swap_limit=False)
    config, hc = create({"HostConfig": {"Memory": 64 << 20}})
    mem = build_spec(config, hc, inputs(host=no_swap_acct)).linux.resources.memory  # type: ignore[union-attr]
    assert mem is not None and mem.swap is None


def test_pids_limit_zero_and_negative_mean_unlimited() -> None:
    for value in (0, -1):
        config, hc = create({"HostConfig": {"PidsLimit": value}})
        assert hc.PidsLimit is None
        assert build_spec(config, hc, inputs()).linux.resources.pids is None  # type: ignore[union-attr]


def test_nofile_default_is_clamped_to_host() -> None:
    config, hc = create({})
    spec = build_spec(config, hc, inputs(host=HostFacts(nofile_max=20000)))
    assert [(r.type, r.soft, r.hard) for r in spec.process.rlimits or []] == [("RLIMIT_NOFILE", 20000, 20000)]


def test_bad_ulimit() -> None:
    config, hc = create({"HostConfig": {"Ulimits": [{"Name": "bogus", "Soft": 1, "Hard": 1}]}})
    with pytest.raises(InvalidParameter, match="invalid ulimit type: bogus"):
        build_spec(config, hc, inputs())
    config, hc = create({"HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 1}]}})
    with pytest.raises(InvalidParameter, match="soft limit must be less than or equal to hard limit"):
        build_spec(config, hc, inputs())


def test_sysctls_must_be_namespaced() -> None:
    check_sysctls(
        {"net.core.somaxconn": "1024", "kernel.msgmax": "1"}, host_net=False, host_ipc=False, host_uts=False
    )
    with pytest.raises(
        InvalidParameter, match=r'sysctl "net\.core\.somaxconn" not allowed in host network namespace'
    ):
        check_sysctls({"net.core.somaxconn": "1"}, host_net=True, host_ipc=False, host_uts=False)
    with pytest.raises(InvalidParameter, match="is not in a separate kernel namespace"):
        check_sysctls({"vm.swappiness": "1"}, host_net=False, host_ipc=False, host_uts=False)
    with pytest.raises(InvalidParameter, match="hosts ipc namespace"):
        check_sysctls({"fs.mqueue.msg_max": "1"}, host_net=False, host_ipc=True, host_uts=False)
    with pytest.raises(InvalidParameter, match="conflicts with the OCI"):
        check_sysctls({"kernel.hostname": "x"}, host_net=False, host_ipc=False, host_uts=False)
    config, hc = create({"HostConfig": {"NetworkMode": "host", "Sysctls": {"net.ipv4.ip_forward": "1"}}})
    with pytest.raises(InvalidParameter, match="not allowed in host network namespace"):
        build_spec(config, hc, inputs(netns=NETNS_HOST))


def test_user_mount_replaces_default_and_dev_mount_replaces_dev_children() -> None:
    config, hc = create({})
    spec = build_spec(config, hc, inputs(binds=(BindMount("/dev", "/dev"), BindMount("/proc", "/tmp/p"))))
    destinations = [m.destination for m in spec.mounts]
    assert destinations.count("/dev") == 1 and destinations.count("/proc") == 1
    assert "/dev/pts" not in destinations and "/dev/shm" not in destinations
    assert "/sys" in destinations


def test_mounts_are_sorted_parent_first() -> None:
    config, hc = create({})
    binds = (BindMount("/a/b/c", "/x"), BindMount("/a", "/y"), BindMount("/a/b", "/z"))
    spec = build_spec(config, hc, inputs(binds=binds))
    user = [m.destination for m in spec.mounts if m.destination.startswith("/a")]
    assert user == ["/a", "/a/b", "/a/b/c"]


def test_shared_propagation_sets_rootfs_propagation() -> None:
    config, hc = create({})
    spec = build_spec(config, hc, inputs(binds=(BindMount("/m", "/srv", propagation="rshared"),)))
    assert spec.linux.rootfs_propagation == "shared"
    with pytest.raises(InvalidParameter, match="invalid propagation mode: sideways"):
        build_spec(config, hc, inputs(binds=(BindMount("/m", "/srv", propagation="sideways"),)))


def test_merge_tmpfs_options_last_wins() -> None:
    assert merge_tmpfs_options(["noexec", "nosuid", "size=1m", "exec", "size=2m"]) == [
        "nosuid",
        "exec",
        "size=2m",
    ]
    with pytest.raises(InvalidParameter, match="Invalid tmpfs option"):
        merge_tmpfs_options(["bogus=1"])


def test_device_requests_are_refused() -> None:
    config, hc = create(
        {"HostConfig": {"DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]}}
    )
    with pytest.raises(InvalidParameter, match="could not select device driver"):
        build_spec(config, hc, inputs())


def test_uts_host_has_no_hostname_and_domainname_is_a_sysctl() -> None:
    config, hc = create({"Domainname": "corp"})
    spec = build_spec(config, hc, inputs())
    assert spec.hostname == CID[:12] and spec.linux.sysctl == {"kernel.domainname": "corp"}
    config, hc = create({"HostConfig": {"UTSMode": "host"}})
    assert build_spec(config, hc, inputs()).hostname is None


def test_exec_inherits_container_process() -> None:
    config, hc = create({"User": "7", "Env": ["A=1"]})
    spec = build_spec(config, hc, inputs(user=ProcessUser(uid=7)))
    ec = ExecConfig.model_validate({"Cmd": "true"})
    proc = build_exec_process(spec.process, config, ec)
    assert proc.args == ["true"] and proc.user.uid == 7 and proc.cwd == "/"
    assert proc.capabilities == spec.process.capabilities and not proc.terminal
    assert "A=1" in proc.env
    with pytest.raises(InvalidParameter, match="No exec command specified"):
        build_exec_process(spec.process, config, ExecConfig())
