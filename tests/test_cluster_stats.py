"""Typed node stats merged into cluster samples (pure logic, no processes, injected clocks)."""

from __future__ import annotations

from typing import Any

import pytest

from wsconsole.harness.cluster import ClusterConfig, Limits, NodeInfo
from wsconsole.harness.stats import (
    BalancerFigures,
    ClusterSample,
    NodeFigures,
    NodeSnapshot,
    ShardSnapshot,
    StatsMerger,
)


def snap(
    node: str, t: float, conns: int, msgs_in: int, msgs_out: int, **extra: Any
) -> NodeSnapshot:
    """A node's push, as the supervisor parses it off the wire."""
    return NodeSnapshot(node, t, conns, msgs_in, msgs_out, rooms=1, broker="up", **extra)


def test_a_snapshot_survives_the_wire_and_bad_fields_are_named() -> None:
    original = snap("n1", 100.5, 3, 10, 20, errors={"bad_json": 2}, draining=True)
    message = original.message()
    assert message["type"] == "stats" and message["msgs_in"] == 10
    assert NodeSnapshot.from_message(message) == original
    assert original.errors_total == 2
    with pytest.raises(ValueError, match="'connections'"):
        NodeSnapshot.from_message({**message, "connections": "many"})
    with pytest.raises(ValueError, match="'t'"):
        NodeSnapshot.from_message({**message, "t": None})
    with pytest.raises(ValueError, match="'errors'"):
        NodeSnapshot.from_message({**message, "errors": [1]})


def test_pushes_make_a_sample_once_per_interval_without_a_timer() -> None:
    merger = StatsMerger(interval=0.5)
    first = merger.node_pushed(snap("n1", 100.0, 2, 0, 0), now=1000.0, mono=0.0)
    assert first is not None and first.t == 1000.0  # the first push samples at once
    assert merger.node_pushed(snap("n2", 100.0, 3, 0, 0), now=1000.2, mono=0.2) is None
    second = merger.node_pushed(snap("n1", 100.5, 2, 0, 0), now=1000.5, mono=0.5)
    assert second is not None and second.total.connections == 5
    assert merger.latest is second
    rates = ("msgs_in_per_s", "msgs_out_per_s", "bytes_in_per_s", "bytes_out_per_s")
    assert dict(second.points()) == {
        "connections.n1": 2, "connections.n2": 3, "connections.total": 5,
        **{f"{rate}.{node}": 0.0 for rate in rates for node in ("n1", "n2", "total")},
    }  # fmt: skip


def test_rates_come_from_counter_deltas_over_the_nodes_own_clock() -> None:
    merger = StatsMerger(interval=0.5)
    merger.node_pushed(snap("n1", 100.0, 2, 0, 0), now=1.0, mono=0.0)
    assert merger.node_pushed(snap("n2", 100.0, 3, 0, 0), now=1.0, mono=0.0) is None
    first = merger.sample(now=1.1, mono=0.1)  # a baseline for both
    assert first.total.connections == 5 and first.total.msgs_in_per_s == 0.0
    merger.node_pushed(snap("n1", 102.0, 2, 200, 400, errors={"bad_json": 4}), 1.5, 0.4)
    second = merger.node_pushed(snap("n2", 101.0, 4, 50, 0), now=2.0, mono=0.6)
    assert second is not None  # 0.5 s after the baseline
    n1, n2 = second.nodes["n1"], second.nodes["n2"]
    assert n1.msgs_in_per_s == pytest.approx(100.0) and n1.msgs_out_per_s == pytest.approx(200.0)
    assert n1.errors_per_s == pytest.approx(2.0) and n1.errors == 4
    assert n2.msgs_in_per_s == pytest.approx(50.0)
    assert second.total.msgs_in_per_s == pytest.approx(150.0)
    assert second.total.connections == 6


def test_a_node_without_a_new_push_keeps_its_rate() -> None:
    merger = StatsMerger(interval=0.5)
    merger.node_pushed(snap("n1", 10.0, 1, 0, 0), now=1.0, mono=0.0)
    merger.node_pushed(snap("n1", 11.0, 1, 100, 0), now=2.0, mono=1.0)
    held = merger.sample(now=2.5, mono=1.2)  # nothing new from n1 since the last sample
    assert held.nodes["n1"].msgs_in_per_s == pytest.approx(100.0)


def test_a_restarted_node_counts_from_zero_not_negative() -> None:
    merger = StatsMerger(interval=0.0)
    merger.node_pushed(snap("n1", 10.0, 1, 1000, 1000), now=1.0, mono=0.0)
    merger.node_gone("n1")
    gone = merger.sample(now=2.0, mono=0.1)
    assert gone.nodes["n1"] == NodeFigures() and not gone.nodes["n1"].up
    merger.node_pushed(snap("n1", 20.0, 1, 10, 10), now=3.0, mono=0.3)  # new counters
    back = merger.node_pushed(snap("n1", 21.0, 1, 30, 10), now=4.0, mono=0.5)
    assert back is not None and back.nodes["n1"].msgs_in_per_s == pytest.approx(20.0)
    assert all(n.msgs_in_per_s >= 0 for n in (gone.nodes["n1"], back.nodes["n1"]))


def test_a_silent_node_is_flagged_stale_and_has_zero_rate() -> None:
    merger = StatsMerger(interval=0.5, stale_after=1.0)
    merger.node_pushed(snap("n1", 10.0, 4, 100, 100), now=1.0, mono=0.0)
    merger.node_pushed(snap("n1", 10.5, 4, 200, 100), now=1.5, mono=0.5)
    paused = merger.sample(now=2.0, mono=5.0)  # no push for 4.5 s: SIGSTOPped
    assert paused.nodes["n1"].stale and paused.nodes["n1"].up
    assert paused.nodes["n1"].msgs_in_per_s == 0.0
    assert paused.nodes["n1"].connections == 4  # its sockets are still open


def test_balancer_pushes_are_typed_and_sample_too() -> None:
    merger = StatsMerger(interval=0.5)
    figures = BalancerFigures.from_message(
        {
            "type": "stats",
            "sticky": "ip",
            "backends": {
                "n1": {"healthy": True, "connections": 3, "total": 9},
                "n2": {"healthy": False, "connections": 0, "total": 2},
            },
            "faults": [{"target": "n1", "kind": "blackhole"}],
        }
    )
    sample = merger.balancer_pushed(figures, now=1.0, mono=0.0)
    assert sample is not None and sample.balancer.sticky == "ip"
    assert sample.balancer.backends["n2"].healthy is False
    assert sample.balancer.backends["n1"].connections == 3
    assert sample.balancer.faults == [{"target": "n1", "kind": "blackhole"}]
    with pytest.raises(ValueError, match="backends"):
        BalancerFigures.from_message({"backends": [1]})


def test_shard_rates_are_plotted_per_shard_and_restart_with_a_new_primary() -> None:
    merger = StatsMerger(interval=0.5)
    merger.shard_pushed(ShardSnapshot("s1", 10.0, 100, 40, "s1a"), now=1.0, mono=0.0)
    sample = merger.shard_pushed(ShardSnapshot("s1", 11.0, 300, 140, "s1a"), now=1.5, mono=0.5)
    assert sample is not None and sample.shards["s1"].publishes_per_s == 100.0
    assert dict(sample.points())["publishes_per_s.s1"] == 100.0
    # after a failover the counters are the new primary's: no rate across the change
    sample = merger.shard_pushed(
        ShardSnapshot("s1", 12.0, 5, 1, "s1b", "degraded"), now=2.0, mono=1.0
    )
    assert sample is not None
    assert (sample.shards["s1"].publishes_per_s, sample.shards["s1"].state) == (0.0, "degraded")


def test_samples_are_json_ready() -> None:
    empty = ClusterSample()
    assert empty.as_dict()["total"]["connections"] == 0 and next(empty.points()) == (
        "connections.total",
        0,
    )


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
        ("broker_cluster", 17, "1 to 16 shards"),
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
