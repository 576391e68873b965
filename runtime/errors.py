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
