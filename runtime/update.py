"""`docker update`: change a container's resources and restart policy, live when it runs.

dockerd's rules (moby daemon/update.go, container.UpdateContainer, update_linux.go): the body's
zero values mean "unchanged"; the checks are create's (`check_resources` in update mode, the
restart policy's); Nano CPUs cannot be mixed with an existing CPU period/quota (and vice versa);
a memory limit above the current memory+swap limit needs `--memory-swap` too; a restart policy
cannot be added to an `AutoRemove` container. A running (or paused) container gets the new limits
at once through `runc update` (the body's resources only); the new HostConfig is saved either
way, and a failed `runc update` leaves the old one. The update runs in the container's
supervisor turn (`Call`), so it never races a start or a stop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from app.models.hostconfig import ContainerUpdate, HostConfig
from runtime.errors import Conflict, OciRuntimeError, SystemError_
from runtime.records import Status
from runtime.specresources import update_resources
from runtime.validation import CreateLimits, check_resources, check_restart_policy

if TYPE_CHECKING:
    from runtime.supervisor import Supervisor


def _conflict(cid: str, message: str) -> Conflict:
    return Conflict(f"Cannot update container {cid}: {message}")


def merged_host_config(current: HostConfig, body: ContainerUpdate, cid: str) -> HostConfig:
    """The HostConfig after the update (moby UpdateContainer). Raises Conflict."""
    old = current
    if body.NanoCpus > 0 and old.CpuPeriod > 0:
        raise _conflict(
            cid, "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set"
        )
    if body.NanoCpus > 0 and old.CpuQuota > 0:
        raise _conflict(
            cid, "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set"
        )
    if body.CpuPeriod > 0 and old.NanoCpus > 0:
        raise _conflict(
            cid, "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set"
        )
    if body.CpuQuota > 0 and old.NanoCpus > 0:
        raise _conflict(
            cid, "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set"
        )
    new = old.model_copy(deep=True)
    for name in (
        "BlkioWeight",
        "CpuShares",
        "NanoCpus",
        "CpuPeriod",
        "CpuQuota",
        "MemoryReservation",
        "KernelMemory",
        "CpuRealtimePeriod",
        "CpuRealtimeRuntime",
    ):
        value = getattr(body, name)
        if value:
            setattr(new, name, value)
    if body.CpusetCpus:
        new.CpusetCpus = body.CpusetCpus
    if body.CpusetMems:
        new.CpusetMems = body.CpusetMems
    if body.Memory:
        if body.Memory > old.MemorySwap and body.MemorySwap == 0:
            raise _conflict(
                cid,
                "Memory limit should be smaller than already set memoryswap limit, "
                "update the memoryswap at the same time",
            )
        new.Memory = body.Memory
    if body.MemorySwap:
        new.MemorySwap = body.MemorySwap
    if body.PidsLimit is not None:
        new.PidsLimit = body.PidsLimit if body.PidsLimit > 0 else None  # 0 and -1: unlimited
    if body.RestartPolicy is not None and body.RestartPolicy.Name:
        if old.AutoRemove and body.RestartPolicy.Name != "no":
            raise _conflict(
                cid, "Restart policy cannot be updated because AutoRemove is enabled for the container"
            )
        new.RestartPolicy = body.RestartPolicy.model_copy()
    return new


def check_update(body: ContainerUpdate, limits: CreateLimits) -> list[str]:
    """Create's checks in update mode; returns dockerd's warnings. Raises InvalidParameter."""
    warnings = check_resources(body, limits, update=True)
    if body.RestartPolicy is not None:
        check_restart_policy(body.RestartPolicy)
    return warnings


async def apply_update(sup: Supervisor, body: ContainerUpdate, *, cgroup_v2: bool, swap_limit: bool) -> None:
    """Inside the supervisor's turn: merge, apply live (runc update), save, emit `update`."""
    c = sup.container
    if c.state.status in (Status.REMOVING, Status.DEAD):
        raise SystemError_(
            f'Cannot update container {c.cid}: container is marked for removal and cannot be "update"'
        )
    new = merged_host_config(c.host_config, body, c.cid)
    if c.state.status in (Status.RUNNING, Status.PAUSED):
        resources = update_resources(body, cgroup_v2=cgroup_v2, swap_limit=swap_limit)
        try:
            await sup.launcher.runtime(c).update(c.cid, resources)
        except OciRuntimeError as exc:
            raise SystemError_(f"Cannot update container {c.cid}: {exc.detail}") from exc
    old = c.host_config
    c.host_config = new
    try:
        await asyncio.to_thread(c.save_config)
    except BaseException:
        c.host_config = old
        raise
    sup.event("update")
