"""Merging node and balancer snapshots into samples and series (pure logic, no processes)."""

from __future__ import annotations

import numpy as np
import pytest

from wsconsole.harness.cluster import ClusterConfig, Limits, NodeInfo
from wsconsole.harness.stats import StatsMerger


def snap(t: float, conns: int, msgs_in: int, msgs_out: int, **extra: object) -> dict:
    """A node stats push as the node sends it."""
    return {
        "type": "stats",
        "t": t,
        "connections": conns,
        "msgs_in": msgs_in,
        "msgs_out": msgs_out,
        "bytes_in": 0,
        "bytes_out": 0,
        "errors": extra.pop("errors", {}),
        "rate_limited": 0,
        "auth_failures": 0,
        "broker": extra.pop("broker", "up"),
        "draining": False,
        "rooms": 1,
        **extra,
    }


def test_rates_come_from_counter_deltas_over_the_nodes_own_clock() -> None:
    merger = StatsMerger()
    merger.node_snapshot("n1", snap(100.0, 2, 0, 0), now=0.0)
    merger.node_snapshot("n2", snap(100.0, 3, 0, 0), now=0.0)
    first = merger.sample(now=1.0, mono=0.1)
    assert first["total"]["connections"] == 5
    assert first["total"]["msgs_in_per_s"] == 0.0  # no previous point yet
    merger.node_snapshot("n1", snap(102.0, 2, 200, 400, errors={"bad_json": 4}), now=0.5)
    merger.node_snapshot("n2", snap(101.0, 4, 50, 0), now=0.5)
    second = merger.sample(now=2.0, mono=0.6)
    assert second["nodes"]["n1"]["msgs_in_per_s"] == pytest.approx(100.0)
    assert second["nodes"]["n1"]["msgs_out_per_s"] == pytest.approx(200.0)
    assert second["nodes"]["n1"]["errors_per_s"] == pytest.approx(2.0)
    assert second["nodes"]["n2"]["msgs_in_per_s"] == pytest.approx(50.0)
    assert second["total"]["msgs_in_per_s"] == pytest.approx(150.0)
    assert second["total"]["connections"] == 6
    t, v = merger.series("connections", "total")
    assert list(t) == [1.0, 2.0] and list(v) == [5.0, 6.0]
    assert merger.keys("msgs_in_per_s") == ["n1", "n2", "total"]


def test_a_restarted_node_counts_from_zero_not_negative() -> None:
    merger = StatsMerger()
    merger.node_snapshot("n1", snap(10.0, 1, 1000, 1000), now=0.0)
    merger.sample(now=1.0, mono=0.0)
    merger.node_gone("n1")
    gone = merger.sample(now=2.0, mono=0.1)
    assert gone["nodes"]["n1"]["connections"] == 0 and not gone["nodes"]["n1"]["up"]
    merger.node_snapshot("n1", snap(20.0, 1, 10, 10), now=0.2)  # new process, new counters
    merger.sample(now=3.0, mono=0.3)
    merger.node_snapshot("n1", snap(21.0, 1, 30, 10), now=0.4)
    back = merger.sample(now=4.0, mono=0.5)
    assert back["nodes"]["n1"]["msgs_in_per_s"] == pytest.approx(20.0)
    _, rates = merger.series("msgs_in_per_s", "n1")
    assert (rates >= 0).all()


def test_a_silent_node_is_flagged_stale_and_has_zero_rate() -> None:
    merger = StatsMerger(stale_after=1.0)
    merger.node_snapshot("n1", snap(10.0, 4, 100, 100), now=0.0)
    merger.sample(now=1.0, mono=0.1)
    paused = merger.sample(now=2.0, mono=5.0)  # no push for 5 s: SIGSTOPped
    assert paused["nodes"]["n1"]["stale"]
    assert paused["nodes"]["n1"]["msgs_in_per_s"] == 0.0
    assert paused["nodes"]["n1"]["connections"] == 4  # its sockets are still open


def test_balancer_backends_get_their_own_series() -> None:
    merger = StatsMerger()
    merger.balancer_snapshot(
        {
            "type": "stats",
            "sticky": "ip",
            "backends": {
                "n1": {"healthy": True, "connections": 3, "total": 9},
                "n2": {"healthy": False, "connections": 0, "total": 2},
            },
            "faults": [],
        }
    )
    sample = merger.sample(now=1.0, mono=0.0)
    assert sample["balancer"]["backends"]["n2"]["healthy"] is False
    _, v = merger.series("balancer_connections", "n1")
    assert list(v) == [3.0]
    assert merger.series("connections", "nope")[0].size == 0


def test_series_are_bounded() -> None:
    merger = StatsMerger(capacity=4)
    merger.node_snapshot("n1", snap(0.0, 1, 0, 0), now=0.0)
    for i in range(10):
        merger.sample(now=float(i), mono=0.0)
    t, _ = merger.series("connections", "n1")
    assert np.array_equal(t, [6.0, 7.0, 8.0, 9.0])


def test_config_defaults_follow_the_design_table() -> None:
    config = ClusterConfig()
    assert (config.nodes, config.sticky, config.ping_interval, config.ping_timeout) == (
        3,
        "ip",
        25.0,
        10.0,
    )
    limits = config.limits
    assert (limits.max_size, limits.rate, limits.per_user, limits.soft_limit) == (
        1 << 20,
        100.0,
        5,
        10_000,
    )
    demo = ClusterConfig.demo(nodes=2)
    assert (demo.ping_interval, demo.ping_timeout, demo.nodes) == (2.0, 1.0, 2)
    assert config.secret and config.secret != ClusterConfig().secret  # one per cluster


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("nodes", 0, "nodes"),
        ("port", 70000, "port"),
        ("sticky", "round-robin", "sticky"),
        ("redis_url", "http://localhost", "Redis URL"),
        ("ping_timeout", 0, "ping_timeout"),
    ],
)
def test_config_refuses_what_cannot_work(field: str, value: object, message: str) -> None:
    config = ClusterConfig(**{field: value})
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_limits_become_node_flags() -> None:
    argv = Limits(rate=5.5, auth=False, origins=("http://example.test",), compression=True).argv()
    assert argv[argv.index("--rate") + 1] == "5.5"
    assert argv[argv.index("--max-size") + 1] == str(1 << 20)
    assert "--no-auth" in argv and "--compression" in argv
    assert argv[argv.index("--origin") + 1] == "http://example.test"
    assert "--no-auth" not in Limits().argv()


def test_node_info_metrics_url() -> None:
    assert NodeInfo("n1").metrics_url is None
    assert NodeInfo("n1", port=8123).metrics_url == "http://127.0.0.1:8123/metrics"
