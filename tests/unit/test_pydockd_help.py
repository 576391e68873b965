"""`pydockd --help` reads like dockerd's (pflag layout)."""

from __future__ import annotations

from app.flags import build_parser


def test_help_reads_like_dockerd() -> None:
    text = build_parser().format_help()
    lines = text.splitlines()
    assert lines[0] == "Usage:  pydockd [OPTIONS]"
    assert any(line.startswith("  -H, --host list ") for line in lines)
    assert any(line.startswith("      --data-root string ") for line in lines)
    assert any(line.startswith("  -b, --bridge string ") for line in lines)
    # booleans take no placeholder, as in dockerd (`--iptables=false` still parses)
    assert any(line.split()[:2] == ["--iptables", "Enable"] for line in lines)
    assert "[]" not in text
    for group in ("Options:", "Networking:", "Registries:", "Security:", "Logging:"):
        assert group in lines
