from __future__ import annotations

from app.openapi import SPEC_PATH, render


def test_checked_in_spec_matches_the_code() -> None:
    assert SPEC_PATH.exists(), "openapi/openapi.json is missing: run `make openapi`"
    assert SPEC_PATH.read_text() == render(), "openapi/openapi.json is stale: run `make openapi`"
