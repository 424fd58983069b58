"""A stack node's own /metrics (harness/scrape.py): matching families summed over their label
sets, counters as rates, and the values riding on the node's snapshot to the plotted points."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from wsconsole.harness.scrape import MetricsScraper, select
from wsconsole.harness.stackfile import MetricsSpec
from wsconsole.harness.stats import BackendFigures, StatsMerger

TEXT = """\
# HELP app_rooms Rooms open
# TYPE app_rooms gauge
app_rooms{shard="a"} 3
app_rooms{shard="b"} 4
# HELP app_messages_total Messages handled
# TYPE app_messages_total counter
app_messages_total{kind="chat"} {chat}
app_messages_total{kind="join"} 10
# HELP process_resident_memory_bytes Resident memory
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 5e+07
"""


def test_matching_families_summed_and_counters_as_rates() -> None:
    gauges, counters = select(TEXT.replace("{chat}", "90"), ("app_*",))
    assert gauges == {"app_rooms": 7.0} and counters == {"app_messages": 100.0}
    now = [100.0]
    scraper = MetricsScraper(MetricsSpec("/metrics", ("app_*", "process_*")), lambda: now[0])
    scraper.take("n1", TEXT.replace("{chat}", "90"))
    assert scraper.values("n1")["app_messages_per_s"] == 0.0  # the first scrape: a baseline
    now[0] = 102.0
    scraper.take("n1", TEXT.replace("{chat}", "190"))
    assert scraper.values("n1") == {"app_rooms": 7.0, "process_resident_memory_bytes": 5e7,
                                    "app_messages_per_s": 50.0}
    with pytest.raises(ValueError):
        scraper.take("n1", "this is { not the exposition format")
    scraper.forget("n1")
    assert scraper.values("n1") == {}


def test_a_stack_nodes_figures_reach_the_points_through_the_one_pipeline() -> None:
    merger = StatsMerger(interval=0.5)
    backend = BackendFigures(healthy=True, connections=4, bytes_up=0, bytes_down=0)
    merger.record(backend.snapshot("n1", 10.0, {"app_rooms": 7.0}), mono=0.0)
    merger.sample(now=1000.0, mono=0.0)
    busier = BackendFigures(healthy=True, connections=5, bytes_up=2000, bytes_down=8000,
                            msgs_up=20, msgs_down=80)
    merger.record(busier.snapshot("n1", 12.0, {"app_rooms": 8.0}), mono=0.5)
    points = dict(merger.sample(now=1002.0, mono=0.5).points())
    assert points["connections.n1"] == 5 and points["metric.app_rooms.n1"] == 8.0
    assert points["msgs_in_per_s.n1"] == 10.0 and points["msgs_out_per_s.n1"] == 40.0
    assert points["bytes_in_per_s.n1"] == 1000.0 and points["bytes_out_per_s.total"] == 4000.0


def test_the_python_clients_created_stamps_are_not_series() -> None:
    registry = CollectorRegistry()
    Counter("app_sent", "Messages sent", registry=registry).inc(5)
    Gauge("app_created", "a gauge of that name is a series", registry=registry).set(2)
    text = generate_latest(registry).decode()
    assert "app_sent_created" in text  # written beside the counter: a time stamp
    assert select(text, ("app_*",)) == ({"app_created": 2.0}, {"app_sent": 5.0})
