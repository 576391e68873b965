"""`-v` strings (`HostConfig.Binds`) and `--volumes-from` entries, parsed as dockerd parses them.

`parse_bind` follows moby's Linux `ParseMountRaw`: `[source:]destination[:mode]`, where an
absolute source is a bind mount and anything else names a volume (none: an anonymous volume);
the mode is a comma list of at most one each of `rw|ro` (plus `ro-non-recursive`,
`ro-force-recursive`, `rro`), `z|Z`, a propagation, `nocopy`, and a consistency. Errors are
InvalidParameter with dockerd's wording (`invalid volume specification: '...'`,
`invalid mode: ...`). Pure: whether a bind source exists is the caller's business (dockerd
creates a missing `-v` source directory, unlike `--mount`).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Literal

from runtime.errors import InvalidParameter

_RW = {"rw", "ro", "ro-non-recursive", "ro-force-recursive", "rro"}
_LABEL = {"z", "Z"}
_PROPAGATION = {"private", "rprivate", "shared", "rshared", "slave", "rslave"}
_COPY = {"nocopy"}
_CONSISTENCY = {"consistent", "cached", "delegated"}
DEFAULT_PROPAGATION = "rprivate"


@dataclass(frozen=True, slots=True)
class BindSpec:
    """One parsed `-v` entry."""

    type: Literal["bind", "volume"]
    source: str  # host path (bind), volume name, or "" for an anonymous volume
    destination: str  # cleaned absolute path in the container
    read_only: bool
    mode: str  # as written after the second colon (inspect shows it as `Mode`)
    propagation: str  # binds: the given one or rprivate; volumes: ""
    copy_data: bool  # volumes: populate a new volume from the image (false with `nocopy`)
    non_recursive_ro: bool = False  # ro-non-recursive
    force_recursive_ro: bool = False  # ro-force-recursive / rro


def _invalid_spec(raw: str) -> InvalidParameter:
    return InvalidParameter(f"invalid volume specification: '{raw}'")


def valid_mode(mode: str) -> bool:
    """moby `linuxValidMountMode`: known options, at most one of each kind."""
    if mode == "":
        return True
    counts = {"rw": 0, "label": 0, "propagation": 0, "copy": 0, "consistency": 0}
    for option in mode.split(","):
        if option in _RW:
            kind = "rw"
        elif option in _LABEL:
            kind = "label"
        elif option in _PROPAGATION:
            kind = "propagation"
        elif option in _COPY:
            kind = "copy"
        elif option in _CONSISTENCY:
            kind = "consistency"
        else:
            return False
        counts[kind] += 1
    return all(n <= 1 for n in counts.values())


def parse_bind(raw: str) -> BindSpec:
    """Parse one `HostConfig.Binds` entry (e.g. `vol:/data`, `/host:/bind:ro,rslave`, `/anon`)."""
    parts = raw.split(":", 3)
    if not parts[0]:
        raise _invalid_spec(raw)
    mode = ""
    if len(parts) == 1:
        source, target = "", parts[0]
    elif len(parts) == 2:
        if valid_mode(parts[1]):
            raise _invalid_spec(raw)  # "/foo:rw" is a destination with a mode, not a volume
        source, target = parts
    elif len(parts) == 3:
        source, target, mode = parts
    else:
        raise _invalid_spec(raw)
    if not valid_mode(mode):
        raise InvalidParameter(f"invalid mode: {mode}")
    options = mode.split(",") if mode else []
    is_bind = source.startswith("/")
    kind: Literal["bind", "volume"] = "bind" if is_bind else "volume"
    if any(o.startswith("ro-") or o == "rro" for o in options) and not is_bind:
        raise InvalidParameter(
            f"mount mode \"{mode}\" requires a bind mount: invalid volume specification: '{raw}'"
        )

    def config_error(detail: str) -> InvalidParameter:
        return InvalidParameter(
            f"invalid volume specification: '{raw}': invalid mount config for type \"{kind}\": {detail}"
        )

    if posixpath.normpath(target) == "/":
        raise config_error("invalid specification: destination can't be '/'")
    if not target.startswith("/"):
        raise config_error(f"invalid mount path: '{target}' mount path must be absolute")
    read_only = any(o == "ro" or o.startswith("ro-") or o == "rro" for o in options)
    if kind == "volume" and not source and read_only:
        raise config_error("must not set ReadOnly mode when using anonymous volumes")
    propagation = next((o for o in options if o in _PROPAGATION), "")
    return BindSpec(
        type=kind,
        source=posixpath.normpath(source) if is_bind else source,
        destination=posixpath.normpath(target),
        read_only=read_only,
        mode=mode,
        propagation=(propagation or DEFAULT_PROPAGATION) if is_bind else "",
        copy_data="nocopy" not in options,
        non_recursive_ro="ro-non-recursive" in options,
        force_recursive_ro="ro-force-recursive" in options or "rro" in options,
    )


def parse_volumes_from(spec: str) -> tuple[str, str]:
    """`container[:ro|rw]` → (container, mode); mode defaults to `rw` (moby `ParseVolumesFrom`)."""
    if not spec:
        raise InvalidParameter("volumes-from specification cannot be an empty string")
    ref, _, mode = spec.partition(":")
    if not mode:
        return ref, "rw"
    if not valid_mode(mode):
        raise InvalidParameter(f"invalid mode: {mode}")
    if mode.startswith("ro-") or mode == "rro":
        raise InvalidParameter(
            f'mount mode "{mode}" is not supported for volumes-from mounts: invalid mode: {mode}'
        )
    options = mode.split(",")
    if any(o in _PROPAGATION or o in _COPY for o in options):
        raise InvalidParameter(f"invalid mode: {mode}")
    return ref, mode
