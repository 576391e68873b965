"""Generate `openapi/openapi.json`, the spec of what pydock serves, from the routers.

`python -m app.openapi` rewrites the file; `tests/unit/test_openapi.py` fails when the checked-in
spec and the code differ. Paths are listed unprefixed; every one is also served under `/vX.Y`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from app.api import create_fastapi

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def generate() -> dict[str, Any]:
    app = create_fastapi(None)
    app.openapi_schema = None
    spec: dict[str, Any] = app.openapi()
    _docker_errors(spec)
    spec["info"]["description"] = (
        "The Docker Engine API subset pydock serves. Every path is also served with a `/v{major}.{minor}` "
        'prefix (1.24 up to the advertised version). Errors are `{"message": ...}`. Attach and exec '
        "start upgrade the connection (`Connection: Upgrade`, `Upgrade: tcp` → `101 UPGRADED`)."
    )
    return spec


ERROR_SCHEMA = {
    "type": "object",
    "title": "ErrorResponse",
    "description": "Every error: Docker's format",
    "required": ["message"],
    "properties": {"message": {"type": "string", "description": "The error message."}},
}


def _docker_errors(spec: dict[str, Any]) -> None:
    """Replace FastAPI's 422 validation shape with Docker's `{"message"}` errors on every operation."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorResponse"] = ERROR_SCHEMA
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = {
                "description": "An error (400 bad parameter, 404 no such object, 409 conflict, 500 ...)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
            }


def render() -> str:
    return json.dumps(generate(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    SPEC_PATH.parent.mkdir(exist_ok=True)
    SPEC_PATH.write_text(render())
    print(f"wrote {SPEC_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
