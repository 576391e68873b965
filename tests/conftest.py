"""Suite-wide pytest options and fixtures."""

from __future__ import annotations

import pytest

from tests.archives import ArchivePair, built_pair, fixture_pair


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


@pytest.fixture(scope="session")
def built_archives(tmp_path_factory: pytest.TempPathFactory) -> ArchivePair:
    """busybox archives made here (docker-save and OCI): what the suite needs, nothing beside it."""
    return built_pair(tmp_path_factory.mktemp("archives"))


@pytest.fixture(scope="session", params=["built", "fixtures"])
def archives(request: pytest.FixtureRequest, built_archives: ArchivePair) -> ArchivePair:
    """Each archive test twice: on the archives built here, and on ../shared/fixtures (real
    archives made by Docker and skopeo) when they are there."""
    if request.param == "built":
        return built_archives
    pair = fixture_pair()
    if pair is None:
        pytest.skip("../shared/fixtures is not there (the extra compatibility check with real archives)")
    return pair
