"""The README's tables of supported docker commands and API endpoints, generated from the routers.

`python -m app.endpoints` prints the Markdown; `python -m app.endpoints --write` (`make docs`)
replaces the block between the markers in README.md. `tests/unit/test_endpoints_doc.py` fails when
the README and the code differ, so the table never drifts from what pydockd serves.

What pydock serves comes from the app itself (its OpenAPI view of the routes, in router order);
which docker commands send which operations is Docker's knowledge, written down once in `COMMANDS`
(from PROTOCOL.md's captures). A command is listed as supported only when every operation it needs
is served. This module must not import the engine's services: it only reads routes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.api import create_fastapi

README_PATH = Path(__file__).resolve().parent.parent / "README.md"
START_MARKER = "<!-- endpoints:start -->"
END_MARKER = "<!-- endpoints:end -->"

# docker CLI command → the Engine API operations it sends (beyond the `HEAD /_ping` every command
# starts with). Optional follow-ups (a pull when the image is missing, a resize on a TTY) are left out.
COMMANDS: dict[str, tuple[str, ...]] = {
    "docker version": ("SystemVersion",),
    "docker info": ("SystemInfo",),
    "docker events": ("SystemEvents",),
    "docker system df": ("SystemDataUsage",),
    "docker system prune": ("ContainerPrune", "NetworkPrune", "ImagePrune", "BuildPrune"),
    "docker login": ("SystemAuth",),
    "docker run": ("ContainerCreate", "ContainerAttach", "ContainerStart", "ContainerWait"),
    "docker run -d": ("ContainerCreate", "ContainerStart"),
    "docker run -it": (
        "ContainerCreate",
        "ContainerAttach",
        "ContainerStart",
        "ContainerResize",
        "ContainerWait",
    ),
    "docker create": ("ContainerCreate",),
    "docker start": ("ContainerStart",),
    "docker stop": ("ContainerStop",),
    "docker restart": ("ContainerRestart",),
    "docker kill": ("ContainerKill",),
    "docker pause": ("ContainerPause",),
    "docker unpause": ("ContainerUnpause",),
    "docker rename": ("ContainerRename",),
    "docker rm": ("ContainerDelete",),
    "docker ps": ("ContainerList",),
    "docker inspect": ("ContainerInspect", "ImageInspect", "NetworkInspect", "VolumeInspect"),
    "docker container inspect": ("ContainerInspect",),
    "docker port": ("ContainerInspect",),
    "docker logs": ("ContainerLogs",),
    "docker attach": ("ContainerInspect", "ContainerAttach"),
    "docker wait": ("ContainerWait",),
    "docker top": ("ContainerTop",),
    "docker diff": ("ContainerChanges",),
    "docker export": ("ContainerExport",),
    "docker stats": ("ContainerStats",),
    "docker update": ("ContainerUpdate",),
    "docker cp": ("ContainerArchiveInfo", "ContainerArchive", "PutContainerArchive"),
    "docker exec": ("ContainerInspect", "ContainerExec", "ExecStart", "ExecInspect"),
    "docker exec -it": ("ContainerInspect", "ContainerExec", "ExecStart", "ExecResize", "ExecInspect"),
    "docker container prune": ("ContainerPrune",),
    "docker commit": ("ImageCommit",),
    "docker pull": ("ImageCreate",),
    "docker import": ("ImageCreate",),
    "docker push": ("ImagePush",),
    "docker images": ("ImageList",),
    "docker image inspect": ("ImageInspect",),
    "docker history": ("ImageHistory",),
    "docker tag": ("ImageTag",),
    "docker rmi": ("ImageDelete",),
    "docker save": ("ImageGetAll",),
    "docker load": ("ImageLoad",),
    "docker image prune": ("ImagePrune",),
    "docker build": ("ImageBuild",),
    "docker search": ("ImageSearch",),
    "docker builder prune": ("BuildPrune",),
    "docker network create": ("NetworkCreate",),
    "docker network ls": ("NetworkList",),
    "docker network inspect": ("NetworkInspect",),
    "docker network rm": ("NetworkDelete",),
    "docker network connect": ("NetworkConnect",),
    "docker network disconnect": ("NetworkDisconnect",),
    "docker network prune": ("NetworkPrune",),
    "docker volume create": ("VolumeCreate",),
    "docker volume ls": ("VolumeList",),
    "docker volume inspect": ("VolumeInspect",),
    "docker volume rm": ("VolumeDelete",),
    "docker volume prune": ("VolumePrune",),
}

# Operations no CLI command sends, but other clients do (named in the endpoints table).
OTHER_CLIENTS: dict[str, str] = {
    "SystemPing": "every client (`GET /_ping`)",
    "SystemPingHead": "every docker CLI command (`HEAD /_ping`)",
    "ImageGet": "docker-py `Image.save()`",
    "DistributionInspect": "docker-py `images.get_registry_data()`",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    operation_id: str


def served_endpoints() -> list[Endpoint]:
    """Every operation the API serves, in router order (from the app's own routes)."""
    spec: dict[str, Any] = create_fastapi(None).openapi()
    return [
        Endpoint(method.upper(), path, operation["operationId"])
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    ]


def _code(text: str) -> str:
    return f"`{text}`"


def render(endpoints: list[Endpoint] | None = None) -> str:
    """The Markdown between the README markers: supported commands, then every endpoint."""
    endpoints = served_endpoints() if endpoints is None else endpoints
    served = {e.operation_id for e in endpoints}
    supported = {cmd: ops for cmd, ops in COMMANDS.items() if set(ops) <= served}
    missing = [cmd for cmd in COMMANDS if cmd not in supported]

    lines = [
        "<!-- generated by `make docs` (python -m app.endpoints --write): do not edit by hand -->",
        "",
        f"**docker commands** ({len(supported)} of the {len(COMMANDS)} listed are served in full):",
        "",
        "| docker command | operations it sends |",
        "|---|---|",
    ]
    lines += [f"| {_code(cmd)} | {', '.join(ops)} |" for cmd, ops in supported.items()]
    if missing:
        lines += ["", "Not served yet: " + ", ".join(_code(cmd) for cmd in missing) + "."]

    used_by: dict[str, list[str]] = {}
    for cmd, ops in supported.items():
        for op in ops:
            used_by.setdefault(op, []).append(cmd)
    lines += [
        "",
        f"**API endpoints** ({len(endpoints)}; each is also served under `/v1.24` ... `/v1.41`):",
        "",
        "| method | path | operation | used by |",
        "|---|---|---|---|",
    ]
    for e in endpoints:
        users = [_code(cmd) for cmd in used_by.get(e.operation_id, [])] or [
            OTHER_CLIENTS.get(e.operation_id, "")
        ]
        lines.append(f"| {e.method} | {_code(e.path)} | {e.operation_id} | {', '.join(users)} |")
    return "\n".join(lines) + "\n"


def splice(readme: str, table: str) -> str:
    """README text with the block between the markers replaced by `table`."""
    head, start, rest = readme.partition(START_MARKER)
    _, end, tail = rest.partition(END_MARKER)
    if not start or not end:
        raise ValueError(f"README.md has no {START_MARKER} ... {END_MARKER} block")
    return f"{head}{START_MARKER}\n{table}{END_MARKER}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.endpoints", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args(argv)
    table = render()
    if not args.write:
        sys.stdout.write(table)
        return 0
    README_PATH.write_text(splice(README_PATH.read_text(), table))
    print(f"wrote the endpoints table in {README_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
