from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.flags import ConfigError, parse_args


def test_defaults() -> None:
    config, fmt = parse_args(["--config-file", "/nonexistent-default"] if False else [])
    assert config.hosts == ("unix:///var/run/pydock.sock",)
    assert config.bridge == "pydock0"
    assert config.chain_prefix == "PYDOCK"
    assert config.iptables is True
    assert fmt == "text"


def test_dockerd_style_flags(tmp_path: Path) -> None:
    config, _ = parse_args(
        [
            "-H",
            "unix:///tmp/a.sock",
            "-H",
            "tcp://127.0.0.1:2376",
            "--data-root",
            str(tmp_path / "d"),
            "--exec-root",
            str(tmp_path / "e"),
            "-b",
            "pdtest0",
            "--bip",
            "10.99.0.1/24",
            "--iptables=false",
            "--userland-proxy=false",
            "--iptables-chain-prefix",
            "PDT",
            "--insecure-registry",
            "10.0.0.0/8",
            "--live-restore",
            "-D",
            "--add-runtime",
            "mine=/usr/bin/runc",
            "--default-runtime",
            "mine",
        ]
    )
    assert config.hosts == ("unix:///tmp/a.sock", "tcp://127.0.0.1:2376")
    assert config.data_root == tmp_path / "d"
    assert config.bridge == "pdtest0"
    assert config.iptables is False
    assert config.userland_proxy is False
    assert config.chain_prefix == "PDT"
    assert config.insecure_registries == ("10.0.0.0/8",)
    assert config.live_restore is True
    assert config.log_level == "debug"
    assert config.runtime() is not None and config.runtime().path == "/usr/bin/runc"  # type: ignore[union-attr]


def test_config_file_keys(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(
        json.dumps(
            {
                "bridge": "pdx0",
                "live-restore": True,
                "insecure-registries": ["r:5000"],
                "runtimes": {"other": {"path": "/bin/true"}},
            }
        )
    )
    config, _ = parse_args(["--config-file", str(path)])
    assert config.bridge == "pdx0"
    assert config.live_restore is True
    assert config.insecure_registries == ("r:5000",)
    assert config.runtime("other") is not None


def test_config_file_conflicts_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"bridge": "pdx0"}))
    with pytest.raises(ConfigError, match="both as a flag and in the configuration file: bridge"):
        parse_args(["--config-file", str(path), "-b", "other0"])
    path.write_text(json.dumps({"brdge": "pdx0"}))
    with pytest.raises(ConfigError, match="don't match any configuration option: brdge"):
        parse_args(["--config-file", str(path)])
    with pytest.raises(ConfigError, match="no such file"):
        parse_args(["--config-file", str(tmp_path / "missing.json")])


def test_unknown_default_runtime() -> None:
    with pytest.raises(ConfigError, match="not a known runtime"):
        parse_args(["--default-runtime", "nope"])


def test_cgroup_parent(tmp_path: Path) -> None:
    assert parse_args([])[0].cgroup_parent == "/pydock"
    assert parse_args(["--cgroup-parent", "/pdt-1/sub"])[0].cgroup_parent == "/pdt-1/sub"
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"cgroup-parent": "mine"}))
    assert parse_args(["--config-file", str(path)])[0].cgroup_parent == "mine"
    for bad in ("/a/../b", "/a b"):
        with pytest.raises(ConfigError, match="invalid cgroup parent"):
            parse_args(["--cgroup-parent", bad])
