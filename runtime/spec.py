"""Building a container's OCI runtime spec (`config.json`) the way dockerd does.

Inputs:
- `config` (`ContainerConfig`): the container's Config *after* `merge_image_config` merged the
  image's config into the create body (do that once, at create, and store the result: inspect
  shows the merged Config and merging again is not idempotent for `--entrypoint ""`).
- `hc` (`HostConfig`): as stored at create (after `runtime.validation.adapt_host_config`).
- `inputs` (`SpecInputs`): what only the daemon knows: the mounted rootfs, the cgroup path, the
  resolved user (`runtime.userdb.resolve_user`), host paths of /etc/hostname, /etc/hosts and
  /etc/resolv.conf, namespace paths to join (network, and `container:<id>` pid/ipc modes),
  bind and volume mounts resolved to host paths, device nodes (`runtime.devices`), the init
  binary for `--init`, and `HostFacts`.

The image's Volumes, StopSignal and Healthcheck are not the spec's business: the caller turns
volumes into `inputs.binds` and the supervisor handles stop signals and health checks.

Everything here is pure (no file system, no processes): golden tests pin the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.models.containers import ContainerConfig
from app.models.exec import ExecConfig
from app.models.hostconfig import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, HostConfig
from runtime import caps as capabilities
from runtime.devices import DeviceNode
from runtime.errors import InvalidParameter, SystemError_
from runtime.hostfacts import HostFacts
from runtime.ocispec import Box, Capabilities, Device, Linux, Namespace, Process, Rlimit, Root, Spec, User
from runtime.seccomp import seccomp_for
from runtime.secopts import SecurityOptions, parse_security_opts
from runtime.specmounts import INIT_PATH_IN_CONTAINER, BindMount, MountPlan, build_mounts
from runtime.specresources import build_resources
from runtime.userdb import ProcessUser

NETNS_HOST = "host"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ULIMIT_NAMES = frozenset(
    {
        *("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice"),
        *("nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"),
    }
)
_IPC_SYSCTLS = frozenset(
    {
        *("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem"),
        *("kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"),
    }
)


@dataclass(frozen=True, slots=True)
class SpecInputs:
    """Daemon-side inputs of `build_spec`; see the module docstring."""

    rootfs: Path
    cgroups_path: str
    user: ProcessUser = field(default_factory=ProcessUser)
    hostname_path: Path | None = None
    hosts_path: Path | None = None
    resolv_conf_path: Path | None = None
    netns: str | None = None  # NETNS_HOST, a netns path to join, or None for a new empty one
    pid_ns_path: str | None = None  # PidMode container:<id> → /proc/<pid>/ns/pid of that one
    ipc_ns_path: str | None = None  # IpcMode container:<id>
    # A host dir bound at /dev/shm: pass it for IpcMode "shareable" (so others can join) and
    # "container:<id>" (the other's); otherwise /dev/shm is a private tmpfs of ShmSize.
    shm_path: Path | None = None
    binds: tuple[BindMount, ...] = ()
    devices: tuple[DeviceNode, ...] = ()  # --device, from devices.lookup_devices
    host_devices: tuple[DeviceNode, ...] = ()  # --privileged, from devices.host_devices
    block_devices: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    init_path: Path | None = None  # host path of the init binary, used when HostConfig.Init
    host: HostFacts = field(default_factory=HostFacts)
    default_ulimits: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # name → (soft, hard)
    default_no_new_privileges: bool = False
    link_env: tuple[str, ...] = ()  # `--link` variables (runtime/links.py): under Config.Env


# --- Config: image merge, command, environment ------------------------------------------------


def merge_image_config(config: ContainerConfig, image: Mapping[str, object] | None) -> ContainerConfig:
    """Fill the create body's gaps from the image config (moby `merge` + `mergeAndVerifyConfig`).

    Raises InvalidParameter("No command specified") when neither has a command.
    """
    img = ContainerConfig.model_validate(image or {})
    c = config.model_copy(deep=True)
    if not c.User:
        c.User = img.User
    if img.ExposedPorts:
        c.ExposedPorts = {**img.ExposedPorts, **(c.ExposedPorts or {})}
    if not c.Env:
        c.Env = list(img.Env) if img.Env is not None else c.Env
    else:
        keys = {e.partition("=")[0] for e in c.Env}
        c.Env = c.Env + [e for e in img.Env or [] if e.partition("=")[0] not in keys]
    labels = dict(img.Labels or {})
    labels.update(c.Labels or {})
    c.Labels = labels
    if not c.Entrypoint:
        if not c.Cmd:
            c.Cmd = img.Cmd
            c.ArgsEscaped = img.ArgsEscaped
        if c.Entrypoint is None:
            c.Entrypoint = img.Entrypoint
    if img.Healthcheck is not None:
        if c.Healthcheck is None:
            c.Healthcheck = img.Healthcheck
        else:
            hc, base = c.Healthcheck, img.Healthcheck
            hc.Test = hc.Test or base.Test
            hc.Interval = hc.Interval or base.Interval
            hc.Timeout = hc.Timeout or base.Timeout
            hc.StartPeriod = hc.StartPeriod or base.StartPeriod
            hc.StartInterval = hc.StartInterval or base.StartInterval
            hc.Retries = hc.Retries or base.Retries
    if not c.WorkingDir:
        c.WorkingDir = img.WorkingDir
    if img.Volumes:
        c.Volumes = {**(c.Volumes or {}), **img.Volumes}
    if not c.StopSignal:
        c.StopSignal = img.StopSignal
    if c.Entrypoint == [""]:
        c.Entrypoint = None
    if not c.Entrypoint and not c.Cmd:
        raise InvalidParameter("No command specified")
    return c


def entrypoint_and_args(config: ContainerConfig) -> tuple[str, list[str]]:
    """Inspect's `Path` and `Args`: the command the container runs (without `--init`)."""
    argv = [*(config.Entrypoint or []), *(config.Cmd or [])]
    if not argv:
        raise InvalidParameter("No command specified")
    return argv[0], argv[1:]


def replace_or_append_env(defaults: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """moby `ReplaceOrAppendEnvValues`: `K=V` replaces or appends, a bare `K` unsets."""
    env: list[str | None] = list(defaults)
    index = {e.partition("=")[0]: i for i, e in enumerate(defaults)}
    for value in overrides:
        key, sep, _ = value.partition("=")
        if not sep:
            if key in index:
                env[index[key]] = None
            continue
        if key in index:
            env[index[key]] = value
        else:
            env.append(value)
    return [e for e in env if e is not None]


def container_env(config: ContainerConfig, *, tty: bool, link_env: Sequence[str] = ()) -> list[str]:
    """PATH, HOSTNAME and (with a TTY) TERM, then the `--link` variables, overridden and
    extended by Config.Env (dockerd's order)."""
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={config.Hostname}"]
    if tty:
        base.append("TERM=xterm")
    return replace_or_append_env(replace_or_append_env(base, link_env), config.Env or [])


# --- pieces of the spec ------------------------------------------------------------------------


def check_sysctls(sysctls: Mapping[str, str], *, host_net: bool, host_ipc: bool, host_uts: bool) -> None:
    """Refuse sysctls that are not namespaced, as runc does (with runc's wording)."""
    for key in sysctls:
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if host_ipc:
                raise InvalidParameter(f'sysctl "{key}" is not allowed in the hosts ipc namespace')
            continue
        if key.startswith("net."):
            if host_net:
                raise InvalidParameter(f'sysctl "{key}" not allowed in host network namespace')
            continue
        if not host_uts and key == "kernel.domainname":
            continue
        if not host_uts and key == "kernel.hostname":
            raise InvalidParameter(
                f'sysctl "{key}" is not allowed as it conflicts with the OCI "hostname" field'
            )
        raise InvalidParameter(f'sysctl "{key}" is not in a separate kernel namespace')


def rlimits(hc: HostConfig, defaults: Mapping[str, tuple[int, int]], nofile_max: int) -> list[Rlimit]:
    """`--ulimit`s, then the daemon's defaults, then RLIMIT_NOFILE as dockerd's containers get."""
    wanted: dict[str, tuple[int, int]] = {}
    for u in hc.Ulimits or []:
        wanted[u.Name] = (u.Soft, u.Hard)
    for name, limits in sorted(defaults.items()):
        wanted.setdefault(name, limits)
    wanted.setdefault("nofile", (nofile_max, nofile_max))
    out = []
    for name, (soft, hard) in wanted.items():
        if name not in ULIMIT_NAMES:
            raise InvalidParameter(f"invalid ulimit type: {name}")
        if soft > hard:
            raise InvalidParameter(
                f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )
        out.append(Rlimit(type=f"RLIMIT_{name.upper()}", hard=hard, soft=soft))
    return out


def container_capabilities(hc: HostConfig, host: HostFacts) -> list[str]:
    try:
        caps = capabilities.tweak(
            capabilities.DEFAULT_CAPABILITIES,
            hc.CapAdd,
            hc.CapDrop,
            privileged=hc.Privileged,
            last_cap=host.last_cap,
        )
    except InvalidParameter as exc:
        raise InvalidParameter(f"invalid capabilities: {exc}") from exc
    grants_all = hc.Privileged or any(c.upper() == capabilities.ALL for c in hc.CapAdd or [])
    if grants_all and host.bounding_caps is not None:
        # The daemon cannot hand out capabilities it does not hold itself.
        caps = [c for c in caps if c in host.bounding_caps]
    return caps


def _namespaces(hc: HostConfig, inputs: SpecInputs) -> list[Namespace]:
    ns = [Namespace(type="mount")]
    if inputs.netns != NETNS_HOST:
        ns.append(Namespace(type="network", path=inputs.netns))
    if hc.UTSMode != "host":
        ns.append(Namespace(type="uts"))
    if hc.PidMode.startswith("container:"):
        if not inputs.pid_ns_path:
            raise SystemError_(f"no pid namespace path given for PidMode {hc.PidMode}")
        ns.append(Namespace(type="pid", path=inputs.pid_ns_path))
    elif hc.PidMode != "host":
        ns.append(Namespace(type="pid"))
    if hc.IpcMode.startswith("container:"):
        if not inputs.ipc_ns_path:
            raise SystemError_(f"no ipc namespace path given for IpcMode {hc.IpcMode}")
        ns.append(Namespace(type="ipc", path=inputs.ipc_ns_path))
    elif hc.IpcMode != "host":
        ns.append(Namespace(type="ipc"))
    if hc.CgroupnsMode == "private":
        ns.append(Namespace(type="cgroup"))
    return ns


def _devices(inputs: SpecInputs, privileged: bool) -> list[Device] | None:
    nodes: dict[str, DeviceNode] = {}
    for node in [*(inputs.host_devices if privileged else ()), *inputs.devices]:
        nodes[node.path] = node
    devices = [
        Device(
            type=n.type,
            path=n.path,
            major=n.major,
            minor=n.minor,
            file_mode=n.file_mode,
            uid=n.uid,
            gid=n.gid,
        )
        for n in nodes.values()
    ]
    return devices or None


def _console_size(size: Sequence[int] | None) -> Box | None:
    if size and len(size) == 2 and size[0] > 0 and size[1] > 0:
        return Box(height=size[0], width=size[1])
    return None


def _user(user: ProcessUser) -> User:
    return User(uid=user.uid, gid=user.gid, additional_gids=list(user.additional_gids) or None)


def build_spec(config: ContainerConfig, hc: HostConfig, inputs: SpecInputs) -> Spec:
    """The OCI spec for a container; `spec.to_json()` is what goes into `config.json`.

    Raises InvalidParameter (Docker's or runc's wording) for settings that cannot run.
    """
    sec: SecurityOptions = parse_security_opts(
        hc.SecurityOpt, default_no_new_privileges=inputs.default_no_new_privileges
    )
    host = inputs.host
    caps = container_capabilities(hc, host)
    path, args = entrypoint_and_args(config)
    argv = [path, *args]
    if hc.Init:
        if inputs.init_path is None:
            raise SystemError_("--init requested but no init binary is configured")
        argv = [INIT_PATH_IN_CONTAINER, "--", *argv]

    process = Process(
        terminal=config.Tty,
        console_size=_console_size(hc.ConsoleSize) if config.Tty else None,
        user=_user(inputs.user),
        args=argv,
        env=container_env(config, tty=config.Tty, link_env=inputs.link_env),
        cwd=config.WorkingDir or "/",
        capabilities=Capabilities(bounding=caps, effective=caps, permitted=caps),
        rlimits=rlimits(hc, inputs.default_ulimits, host.nofile_max),
        no_new_privileges=sec.no_new_privileges or None,
        oom_score_adj=hc.OomScoreAdj,
    )

    mounts, propagation = build_mounts(
        hc,
        MountPlan(
            binds=inputs.binds,
            resolv_conf_path=inputs.resolv_conf_path,
            hostname_path=inputs.hostname_path,
            hosts_path=inputs.hosts_path,
            shm_path=inputs.shm_path,
            init_path=inputs.init_path if hc.Init else None,
        ),
    )
    if hc.Privileged or sec.writable_cgroups:
        for i, m in enumerate(mounts):
            if m.type == "cgroup" and m.options and "ro" in m.options:
                mounts[i] = m.model_copy(update={"options": [o for o in m.options if o != "ro"]})

    sysctl = dict(hc.Sysctls or {})
    if config.Domainname:
        sysctl["kernel.domainname"] = config.Domainname
    check_sysctls(
        sysctl,
        host_net=inputs.netns == NETNS_HOST,
        host_ipc=hc.IpcMode == "host",
        host_uts=hc.UTSMode == "host",
    )

    unconfined_paths = hc.Privileged or sec.unconfined_systempaths
    masked = (
        None
        if unconfined_paths
        else list(hc.MaskedPaths if hc.MaskedPaths is not None else DEFAULT_MASKED_PATHS)
    )
    readonly = (
        None
        if unconfined_paths
        else list(hc.ReadonlyPaths if hc.ReadonlyPaths is not None else DEFAULT_READONLY_PATHS)
    )
    seccomp = None
    if not hc.Privileged:
        seccomp = seccomp_for(sec.seccomp, caps=caps, machine=host.machine, kernel=host.kernel)

    linux = Linux(
        namespaces=_namespaces(hc, inputs),
        devices=_devices(inputs, hc.Privileged),
        cgroups_path=inputs.cgroups_path,
        resources=build_resources(
            hc,
            devices=inputs.devices,
            privileged=hc.Privileged,
            block_devices=inputs.block_devices,
            cgroup_v2=host.cgroup_v2,
            swap_limit=host.swap_limit,
        ),
        rootfs_propagation=propagation,
        seccomp=seccomp,
        sysctl=sysctl or None,
        masked_paths=masked or None,
        readonly_paths=readonly or None,
    )
    return Spec(
        process=process,
        root=Root(path=str(inputs.rootfs), readonly=hc.ReadonlyRootfs),
        hostname=config.Hostname if hc.UTSMode != "host" else None,
        mounts=mounts,
        annotations=dict(hc.Annotations) if hc.Annotations else None,
        linux=linux,
    )


def build_exec_process(
    container: Process,
    config: ContainerConfig,
    ec: ExecConfig,
    *,
    user: ProcessUser | None = None,
    host: HostFacts | None = None,
) -> Process:
    """The `process.json` of `docker exec`: the container's process with the exec's changes.

    `container` is the container spec's process; `user` the resolved `ec.User` (None: keep the
    container's). A privileged exec gets every capability the daemon holds.
    """
    if not ec.Cmd:
        raise InvalidParameter("No exec command specified")
    facts = host or HostFacts()
    env = replace_or_append_env(container_env(config, tty=ec.Tty), ec.Env or [])
    proc = container.model_copy(deep=True)
    proc.args = list(ec.Cmd)
    proc.env = env
    proc.cwd = ec.WorkingDir or config.WorkingDir or "/"
    proc.terminal = ec.Tty
    proc.console_size = _console_size(ec.ConsoleSize) if ec.Tty else None
    if user is not None:
        proc.user = _user(user)
    if ec.Privileged:
        all_caps = capabilities.all_capabilities(facts.last_cap)
        if facts.bounding_caps is not None:
            all_caps = [c for c in all_caps if c in facts.bounding_caps]
        proc.capabilities = Capabilities(bounding=all_caps, effective=all_caps, permitted=all_caps)
    return proc
