"""The balancer's command line: backends, options and their validation."""

from __future__ import annotations

import argparse

import pytest

from wsconsole.harness.balancer import add_arguments, config_from_args, parse_backend


def test_parse_backend_and_options():
    assert parse_backend("n1=127.0.0.1:8001") == ("n1", "127.0.0.1", 8001)
    for bad in ("n1", "=127.0.0.1:1", "n1=127.0.0.1", "n1=127.0.0.1:0", "n1=h:99999", "n1=:5"):
        with pytest.raises(ValueError):
            parse_backend(bad)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(
        parser.parse_args(["--backend", "a=h:1", "--sticky", "sid", "--control", "127.0.0.1:9"])
    )
    assert config.backends == [("a", "h", 1)] and config.control == ("127.0.0.1", 9)
    for argv in (
        ["--backend", "a=h:1", "--backend", "a=h:2"],
        ["--backend", "all=h:1"],
        ["--health-interval", "0"],
        ["--control", "nowhere"],
        ["--sticky", "least-conn"],
    ):
        with pytest.raises(ValueError):
            config_from_args(parser.parse_args(argv))
