"""Suite-wide pytest options and fixtures."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files (tests/unit/golden/) from the current output instead of comparing",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fuzzing and hostile-input suites' counts (tests/fuzzstats.py), shown without `-s`."""
    from tests.fuzzstats import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("fuzzing and hostile inputs")
        for line in lines:
            terminalreporter.write_line(line)
