"""Error kinds of pydock and their concrete situations.

Every deliberate error is a `PydockError` of one kind; `app/errors.py` maps the kind to an HTTP
status. Messages use Docker's wording because clients parse them (docker-py tells "no such image"
from other 404s by the text, the CLI turns OCI errors into exit codes 126/127).

This module imports nothing from pydock: every layer may raise these.
"""

from __future__ import annotations

from typing import ClassVar


class PydockError(Exception):
    """Base of every deliberate error; `status` is the HTTP status of its kind."""

    status: int = 500
    kind: ClassVar[str] = "system"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidParameter(PydockError):
    status = 400
    kind = "invalid-parameter"


class Unauthorized(PydockError):
    status = 401
    kind = "unauthorized"


class Forbidden(PydockError):
    status = 403
    kind = "forbidden"


class NotFound(PydockError):
    status = 404
    kind = "not-found"


class Conflict(PydockError):
    status = 409
    kind = "conflict"


class NotModified(PydockError):
    status = 304
    kind = "not-modified"

    def __init__(self, message: str = "not modified") -> None:
        super().__init__(message)


class SystemError_(PydockError):  # noqa: N801 - "SystemError" is a builtin
    status = 500
    kind = "system"


class Unsupported(PydockError):
    status = 501
    kind = "not-implemented"


class Unavailable(PydockError):
    status = 503
    kind = "unavailable"


# --- concrete situations -------------------------------------------------------------------------


class NoSuchContainer(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such container: {ref}")


class NoSuchImage(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such image: {ref}")


class NoSuchExec(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such exec instance: {ref}")


class NoSuchVolume(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"get {ref}: no such volume")


class NoSuchNetwork(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"network {ref} not found")


class NameInUse(Conflict):
    def __init__(self, name: str, owner_id: str) -> None:
        super().__init__(
            f'Conflict. The container name "/{name}" is already in use by container "{owner_id}". '
            "You have to remove (or rename) that container to be able to reuse that name."
        )


class NotRunning(Conflict):
    def __init__(self, cid: str) -> None:
        super().__init__(f"Container {cid} is not running")


class AmbiguousRef(NotFound):
    """Docker answers an ambiguous ID prefix like a missing object, with its own wording."""

    def __init__(self, kind_name: str, ref: str) -> None:
        super().__init__(f"multiple {kind_name}s found with provided prefix: {ref}")


class OciRuntimeError(SystemError_):
    """The OCI runtime failed; the message carries runc's last error line.

    Start failures are reported with status 400 (as dockerd does) so the CLI can map
    "executable file not found" / "permission denied" to exit codes 127 / 126.
    """

    def __init__(self, action: str, detail: str, *, status: int = 500) -> None:
        super().__init__(f"OCI runtime {action} failed: {detail}")
        self.status = status
        self.action = action
        self.detail = detail


class OciContainerNotFound(OciRuntimeError):
    """The OCI runtime has no state for the container (`container "x" does not exist`)."""


# --- networking (netproxy/) ----------------------------------------------------------------------


class AddressInUse(Forbidden):
    def __init__(self) -> None:
        super().__init__("Address already in use")


class AddressOutOfSubnet(InvalidParameter):
    def __init__(self, ip: str) -> None:
        super().__init__(f"Invalid address {ip}: It does not belong to any of this network's subnets")


class NoAvailableAddress(Unavailable):
    def __init__(self, network: str) -> None:
        super().__init__(f"no available IPv4 addresses on this network's address pools: {network}")


class PoolOverlap(Forbidden):
    def __init__(self) -> None:
        super().__init__("invalid pool request: Pool overlaps with other one on this address space")


class NoAvailablePool(SystemError_):
    def __init__(self) -> None:
        super().__init__(
            "could not find an available, non-overlapping IPv4 address pool among the defaults "
            "to assign to the network"
        )


class PortAlreadyAllocated(SystemError_):
    """The host port is held by another mapping of this daemon (Docker's port allocator)."""

    def __init__(self, host_ip: str, host_port: int) -> None:
        super().__init__(f"Bind for {host_ip}:{host_port} failed: port is already allocated")


class HostPortBindFailed(SystemError_):
    """bind(2) of a host port failed (another program holds it), in dockerd 28's words."""

    def __init__(self, host_ip: str, host_port: int, target: str, proto: str, reason: str) -> None:
        super().__init__(f"failed to bind host port for {host_ip}:{host_port}:{target}/{proto}: {reason}")


class ExternalConnectivityFailed(SystemError_):
    """What dockerd wraps port-mapping failures in when an endpoint is named."""

    def __init__(self, endpoint: str, endpoint_id: str, detail: str) -> None:
        super().__init__(
            "failed to set up container networking: driver failed programming external "
            f"connectivity on endpoint {endpoint} ({endpoint_id}): {detail}"
        )


# --- networks (runtime/networks.py) --------------------------------------------------------------


class NetworkNameInUse(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"network with name {name} already exists")


class PredefinedNetwork(Forbidden):
    def __init__(self, name: str, action: str) -> None:
        super().__init__(f"{name} is a pre-defined network and cannot be {action}")


class NetworkHasActiveEndpoints(Forbidden):
    def __init__(self, name: str, nid: str) -> None:
        super().__init__(f"error while removing network: network {name} id {nid} has active endpoints")


class EndpointExists(Forbidden):
    def __init__(self, container_name: str, network: str) -> None:
        super().__init__(f"endpoint with name {container_name} already exists in network {network}")


class NotConnected(SystemError_):
    def __init__(self, cid: str, network: str) -> None:
        super().__init__(f"container {cid} is not connected to network {network}")


class UserIpNotAllowed(InvalidParameter):
    def __init__(self, *, default_bridge: bool) -> None:
        super().__init__(
            "user specified IP address is supported on user defined networks only"
            if default_bridge
            else "user specified IP address is supported only when connecting to networks with user "
            "configured subnets"
        )


# --- volumes and container files (runtime/volumes.py, runtime/containerfs.py) ----------------------


class VolumeInUse(Conflict):
    def __init__(self, name: str, users: list[str]) -> None:
        super().__init__(f"remove {name}: volume is in use - [{', '.join(users)}]")


class NoSuchVolumePlugin(NotFound):
    def __init__(self, driver: str) -> None:
        super().__init__(f'error looking up volume plugin {driver}: plugin "{driver}" not found')


class FileNotFoundInContainer(NotFound):
    def __init__(self, path: str, ref: str) -> None:
        super().__init__(f"Could not find the file {path} in container {ref}")


class HostileArchive(InvalidParameter):
    """A tar entry that would write outside its destination or create what cp must not."""


class NotADirectoryTarget(InvalidParameter):
    def __init__(self) -> None:
        super().__init__("extraction point is not a directory")


class VolumeReadOnly(InvalidParameter):
    def __init__(self) -> None:
        super().__init__("mounted volume is marked read-only")


class RootfsReadOnly(SystemError_):
    def __init__(self) -> None:
        super().__init__("container rootfs is marked read-only")


class ClientGone(InvalidParameter):
    def __init__(self) -> None:
        super().__init__("the client went away before the end of the archive")
