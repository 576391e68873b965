from __future__ import annotations

import pytest

from app.endpoints import COMMANDS, END_MARKER, README_PATH, START_MARKER, Endpoint, render, splice


def test_readme_table_matches_the_routers() -> None:
    readme = README_PATH.read_text()
    assert START_MARKER in readme and END_MARKER in readme, "README.md lost its endpoints markers"
    assert splice(readme, render()) == readme, "the README's endpoints table is stale: run `make docs`"


def test_a_command_is_supported_only_when_all_its_operations_are_served() -> None:
    served = [
        Endpoint("POST", "/containers/create", "ContainerCreate"),
        Endpoint("POST", "/containers/{ref}/start", "ContainerStart"),
    ]
    table = render(served)
    assert "| `docker run -d` | ContainerCreate, ContainerStart |" in table
    assert "| `docker create` | ContainerCreate |" in table
    assert "| `docker run` |" not in table  # attach and wait are missing
    assert "`docker run`," in table.split("Not served yet:")[1]
    assert "| POST | `/containers/create` | ContainerCreate | `docker run -d`, `docker create` |" in table


def test_splice_keeps_the_text_around_the_markers() -> None:
    readme = f"intro\n{START_MARKER}\nold\n{END_MARKER}\noutro\n"
    assert splice(readme, "new\n") == f"intro\n{START_MARKER}\nnew\n{END_MARKER}\noutro\n"
    with pytest.raises(ValueError):
        splice("no markers", "new\n")


def test_command_table_names_only_docker_operations() -> None:
    for cmd, ops in COMMANDS.items():
        assert cmd.startswith("docker ")
        assert ops and all(op[0].isupper() and op.isalnum() for op in ops)
