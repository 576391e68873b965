"""What a container's supervisor tells the services that live beside it: started, paused, stopped.

Exec sessions and health checks belong to a running container: the exec service ends a stopped
container's execs and the health monitor probes only while the container runs unpaused. The
supervisor calls these hooks from its own turn (synchronously: a hook never awaits, it may
spawn tasks it owns), so they see the container's state exactly as the supervisor just set it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from runtime.supervisor import Supervisor


class LifecycleHooks(Protocol):
    def container_started(self, sup: Supervisor) -> None:
        """The container's init runs (start, restart-policy restart, re-adoption after a restart)."""

    def container_paused(self, sup: Supervisor, paused: bool) -> None:
        """The container was frozen (True) or thawed (False)."""

    def container_stopped(self, sup: Supervisor) -> None:
        """The init exited; its cgroup and namespaces are about to be torn down."""


class NoLifecycle:
    """The hooks of a container service that has no exec service (unit tests)."""

    def container_started(self, sup: Supervisor) -> None:
        return None

    def container_paused(self, sup: Supervisor, paused: bool) -> None:
        return None

    def container_stopped(self, sup: Supervisor) -> None:
        return None
