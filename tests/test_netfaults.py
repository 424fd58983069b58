"""Pure fault logic: validation, the text form, merging by target, the token bucket, delays."""

from __future__ import annotations

import random

import pytest

from wsconsole.harness.netfaults import (
    DOWN,
    UP,
    Bandwidth,
    FaultBoard,
    FaultError,
    HalfOpen,
    Latency,
    Reset,
    Slice,
    fault_from_words,
    merge,
    parse_fault,
)


def test_parse_fault_builds_each_kind():
    assert parse_fault("latency", {"ms": 200, "jitter_ms": 50}) == Latency(200.0, 50.0)
    assert parse_fault("bandwidth", {"bytes_per_s": 1000}) == Bandwidth(1000)
    assert parse_fault("reset", {}) == Reset(persist=False)
    assert parse_fault("slice", {"size": 16, "delay_ms": 5}) == Slice(16, 5.0)
    assert parse_fault("half_open", {"direction": "down"}) == HalfOpen("down")
    assert parse_fault("blackhole", {}).to_dict() == {"kind": "blackhole"}
    assert Latency(1, 2).to_dict() == {"kind": "latency", "ms": 1, "jitter_ms": 2}


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("quake", {}, "unknown fault kind"),
        (None, {}, "unknown fault kind"),
        ("latency", {}, "missing parameter 'ms'"),
        ("latency", {"ms": -5}, ">= 0"),
        ("latency", {"ms": float("nan")}, ">= 0"),
        ("latency", {"ms": float("inf")}, ">= 0"),
        ("latency", {"ms": True}, "must be a number"),
        ("latency", {"ms": "200"}, "must be a number"),
        ("bandwidth", {"bytes_per_s": 0.5}, ">= 1"),
        ("slice", {"size": 0}, "integer >= 1"),
        ("slice", {"size": 2.5}, "integer >= 1"),
        ("half_open", {}, "'up' or 'down'"),
        ("reset", {"persist": 1}, "true or false"),
    ],
)
def test_parse_fault_rejects_bad_requests(kind, params, message):
    with pytest.raises(FaultError, match=message):
        parse_fault(kind, params)


def test_fault_from_words_reads_the_stdin_form():
    assert fault_from_words(["latency", "200ms", "1s"]) == (
        "latency",
        {"ms": 200.0, "jitter_ms": 1000.0},
    )
    assert fault_from_words(["bandwidth", "100kB/s"]) == ("bandwidth", {"bytes_per_s": 100_000.0})
    assert fault_from_words(["bandwidth", "1MiB/s"]) == ("bandwidth", {"bytes_per_s": 1048576.0})
    assert fault_from_words(["reset", "persist"]) == ("reset", {"persist": True})
    assert fault_from_words(["slice", "16", "5ms"]) == ("slice", {"size": 16.0, "delay_ms": 5.0})
    assert fault_from_words(["half-open", "up"]) == ("half_open", {"direction": "up"})
    assert fault_from_words(["blackhole"]) == ("blackhole", {})
    for words in (
        [],
        ["latency"],
        ["latency", "fast"],
        ["latency", "2h"],
        ["blackhole", "now"],
        ["bandwidth", "10 parsecs"],
        ["slice", "1", "2", "3"],
        ["reset", "twice"],
    ):
        with pytest.raises(FaultError):
            fault_from_words(words)


def test_board_merges_own_over_all_and_lists_everything():
    board = FaultBoard()
    assert board.effective("n1") is None
    board.set("all", Latency(100))
    board.set("n1", Latency(5))
    board.set("n2", HalfOpen(UP))
    board.set("n1", Reset(persist=False))  # one-shot: not a state
    n1, n2, n3 = (board.effective(n) for n in ("n1", "n2", "n3"))
    assert n1 is not None and n1.latency == Latency(5) and not n1.reset
    assert n2 is not None and n2.latency == Latency(100) and n2.stalls(UP) and not n2.stalls(DOWN)
    assert n3 is not None and n3.latency == Latency(100) and not n3.stalls(UP)
    assert [(f["target"], f["kind"]) for f in board.listing()] == [
        ("all", "latency"),
        ("n1", "latency"),
        ("n2", "half_open"),
    ]
    assert board.clear("n2", "latency") == 0
    assert board.clear("all") == 1
    assert board.effective("n3") is None
    board.forget("n1")
    assert board.effective("n1") is None


def test_merge_flags():
    assert merge({}) is None
    blackhole = merge({"blackhole": parse_fault("blackhole", {})})
    assert blackhole is not None and blackhole.stalls(UP) and blackhole.stalls(DOWN)
    assert not blackhole.shapes()
    shaped = merge({"slice": Slice(4)})
    assert shaped is not None and shaped.shapes() and not shaped.stalls(UP)
    persistent = merge({"reset": Reset(persist=True)})
    assert persistent is not None and persistent.reset


def test_delay_is_latency_plus_bounded_jitter():
    rng = random.Random(7)
    active = merge({"latency": Latency(100, 50)})
    assert active is not None
    delays = [active.delay(rng) for _ in range(1000)]
    assert 0.1 <= min(delays) < 0.11 and 0.14 < max(delays) <= 0.15
    fixed = merge({"latency": Latency(20)})
    assert fixed is not None and fixed.delay(rng) == 0.02
    no_latency = merge({"slice": Slice(1)})
    assert no_latency is not None and no_latency.delay(rng) == 0.0
