"""The swarm's accounting, fed events by hand: loss, duplicates, order, latency, reconnects."""

from __future__ import annotations

import pytest

from wsconsole.swarm.accounting import Accounting

PRECISION = 0.01  # the latency histogram's relative precision (core/metrics.py)


def _room_with_two_subscribers(messages: int) -> Accounting:
    acc = Accounting(started_at=0.0)
    for name in ("a", "b"):
        acc.client_added(name)
        acc.transition(name, "CONNECTING", 0.0)
        acc.transition(name, "OPEN", 0.1)
        acc.joined(name, "r", 0)
    for n in range(1, messages + 1):
        ident = f"a-{n}"
        acc.published("a", "r", ident)
        acc.acked(ident, n)
    return acc


def test_every_message_received_once_is_clean() -> None:
    acc = _room_with_two_subscribers(5)
    for name in ("a", "b"):
        for n in range(1, 6):
            acc.delivered_message(name, "r", n, f"a-{n}", 0.002 * n)
    summary = acc.summary(1.0)
    assert summary["sent"] == summary["acknowledged"] == 5
    assert summary["expected"] == summary["delivered"] == 10
    assert summary["lost"] == summary["duplicated"] == summary["out_of_order"] == 0
    assert summary["p50_latency_ms"] == pytest.approx(6.0, rel=PRECISION)  # nearest rank
    assert summary["max_latency_ms"] == 10.0
    assert acc.settled()


def test_missing_duplicate_and_reordered_deliveries_are_each_counted() -> None:
    acc = _room_with_two_subscribers(4)
    for n in (1, 2, 3, 4):
        acc.delivered_message("a", "r", n, f"a-{n}", None)
    # b: misses 2, gets 4 before 3, gets 1 twice
    for n in (1, 4, 3, 1):
        acc.delivered_message("b", "r", n, f"a-{n}", None)
    summary = acc.summary(1.0)
    assert summary["lost"] == 1
    assert summary["duplicated"] == 1
    assert summary["out_of_order"] == 1
    assert summary["delivered"] == 7
    assert not acc.settled()


def test_same_id_under_a_second_seq_is_a_duplicate() -> None:
    acc = _room_with_two_subscribers(1)
    acc.delivered_message("a", "r", 1, "a-1", None)
    acc.delivered_message("a", "r", 2, "a-1", None)  # the idempotency key failed
    assert acc.duplicated == 1


def test_messages_before_joining_are_not_owed() -> None:
    acc = Accounting()
    acc.client_added("late")
    for n in range(1, 4):
        acc.published("x", "r", f"x-{n}")
        acc.acked(f"x-{n}", n)
    acc.joined("late", "r", 3)  # joined after seq 3: owes nothing yet
    assert acc.lost() == 0
    acc.published("x", "r", "x-4")
    acc.acked("x-4", 4)
    assert acc.lost() == 1
    acc.delivered_message("late", "r", 4, "x-4", None)
    assert acc.lost() == 0 and acc.expected() == 1


def test_unacknowledged_and_foreign_messages() -> None:
    acc = Accounting()
    acc.joined("a", "r", 0)
    acc.published("a", "r", "a-1")
    acc.published("a", "r", "a-1")  # a re-send of the same id is not a second publish
    assert acc.sent == 1 and acc.unacknowledged == 1
    acc.delivered_message("a", "r", 1, "someone-else", None)
    assert acc.foreign == 1 and acc.delivered == 0
    acc.acked("a-1", 1)
    acc.acked("a-1", 1)  # re-ack after a replay: counted once
    acc.acked("a-1", 7)  # the same id acked under another seq: flagged
    assert acc.acknowledged == 1 and acc.seq_mismatch == 1


def test_reconnect_clock_runs_from_leaving_open_to_open_again() -> None:
    acc = Accounting(started_at=10.0)
    acc.client_added("c")
    acc.transition("c", "CONNECTING", 10.0)
    acc.transition("c", "OPEN", 10.2)
    acc.transition("c", "RECONNECTING", 12.0)
    acc.transition("c", "CONNECTING", 12.5)
    assert acc.down_clients() == ["c"]
    acc.transition("c", "OPEN", 13.5)
    summary = acc.summary(20.0)
    assert summary["reconnects"] == 1
    assert summary["reconnect_max_ms"] == 1500.0
    assert acc.reconnect_moments() == [3.5]
    assert summary["disconnected_at_end"] == 0
    assert summary["connect_max_ms"] == 200.0


def test_stopping_is_not_a_disconnection() -> None:
    acc = Accounting()
    acc.transition("c", "CONNECTING", 0.0)
    acc.transition("c", "OPEN", 0.1)
    acc.begin_stop()
    acc.transition("c", "CLOSING", 1.0)
    acc.transition("c", "CLOSED", 1.1)
    assert acc.summary(2.0)["disconnected_at_end"] == 0


def test_still_down_at_the_end_is_reported() -> None:
    acc = Accounting()
    acc.transition("c", "CONNECTING", 0.0)
    acc.transition("c", "OPEN", 0.1)
    acc.transition("c", "RECONNECTING", 1.0)
    assert acc.summary(5.0)["disconnected_at_end"] == 1


def test_snapshot_reports_interval_deltas_and_latency() -> None:
    acc = _room_with_two_subscribers(3)
    acc.delivered_message("a", "r", 1, "a-1", 0.010)
    first = acc.snapshot(1.0)
    assert first["sent_delta"] == 3 and first["delivered_delta"] == 1
    assert first["p99_latency_ms"] == 10.0  # the only sample: the histogram's exact max
    second = acc.snapshot(2.0)
    assert second["sent_delta"] == 0 and second["p99_latency_ms"] is None


def test_reconnect_spread_separates_synchronised_from_jittered() -> None:
    tight, spread = Accounting(), Accounting()
    for i in range(20):
        for acc, delay in ((tight, 0.5 + 0.001 * i), (spread, 0.5 + 0.05 * i)):
            name = f"c{i}"
            acc.transition(name, "CONNECTING", 0.0)
            acc.transition(name, "OPEN", 0.0)
            acc.transition(name, "RECONNECTING", 1.0)
            acc.transition(name, "OPEN", 1.0 + delay)
    assert tight.summary(5)["reconnect_spread_ms"] < 20
    assert spread.summary(5)["reconnect_spread_ms"] > 500


def test_a_broker_that_lost_its_state_opens_a_new_epoch() -> None:
    acc = _room_with_two_subscribers(3)
    for name in ("a", "b"):
        for n in (1, 2, 3):
            acc.delivered_message(name, "r", n, f"a-{n}", None)
    # the broker restarted empty: new publishes get seq 1, 2 again
    for n, seq in ((4, 1), (5, 2)):
        acc.published("a", "r", f"a-{n}")
        acc.acked(f"a-{n}", seq)
    assert acc.epochs() == {"r": 1}
    acc.joined("a", "r", 0)  # a re-joined and was told the room is at 0
    acc.delivered_message("a", "r", 1, "a-4", None)
    acc.delivered_message("a", "r", 2, "a-5", None)
    acc.delivered_message("b", "r", 1, "a-4", None)  # b was not told: sees seq go back
    summary = acc.summary(1.0)
    assert summary["expected"] == 10
    assert summary["lost"] == 1  # b never got a-5
    assert summary["duplicated"] == 0
    assert summary["out_of_order"] == 1
    assert summary["seq_restarts"] == 1


def test_epochs_from_the_server_and_its_notices_decide_what_is_owed() -> None:
    acc = Accounting(started_at=0.0)
    for name in ("told", "silent", "late"):
        acc.joined(name, "r", 0, epoch="e1")
    for n in (1, 2, 3):
        acc.published("p", "r", f"m{n}")
        acc.acked(f"m{n}", n, epoch="e1")
    for name in ("told", "silent", "late"):
        acc.delivered_message(name, "r", 1, "m1", None, epoch="e1")
    # the broker came back empty: e2 starts at 1 again
    for n, seq in ((4, 1), (5, 2)):
        acc.published("p", "r", f"m{n}")
        acc.acked(f"m{n}", seq, epoch="e2")
    assert acc.epochs() == {"r": 1}
    acc.joined("told", "r", 2, epoch="e2", reset=True)  # the rest of e1 is gone: told so
    acc.joined("silent", "r", 2, epoch="e2")  # a server splicing e2 onto e1: m2, m3 are lost
    # late: its new epoch's start is beyond the history: the window error, then the reset
    acc.window_exceeded("late", "r", 1, epoch="e2")
    acc.joined("late", "r", 1, epoch="e2", reset=True)
    for name in ("told", "silent"):
        acc.delivered_message(name, "r", 1, "m4", None, epoch="e2")
    for name in ("told", "silent", "late"):
        acc.delivered_message(name, "r", 2, "m5", None, epoch="e2")
    summary = acc.summary(1.0)
    assert acc.expected_for("told", "r") == ["m1", "m4", "m5"]
    assert acc.expected_for("silent", "r") == ["m1", "m2", "m3", "m4", "m5"]
    assert acc.expected_for("late", "r") == ["m1", "m5"]
    assert summary["lost"] == 2 and summary["reset_notices"] == 2
    # told: m2, m3 (its reset); late: m2, m3 (its reset) and m4 (the window error)
    assert summary["announced_lost"] == 5
    assert summary["out_of_order"] == summary["duplicated"] == 0
    acc.delivered_message("told", "r", 3, "m3", None, epoch="e1")  # an epoch it left behind
    assert acc.summary(1.0)["out_of_order"] == 1


def test_compaction_keeps_verdicts_and_bounds_memory() -> None:
    acc = Accounting(horizon=10.0, compact_above=0)
    for name in ("a", "b"):
        acc.joined(name, "r", 0)
    for n in range(1, 101):
        acc.published("a", "r", f"a-{n}")
        acc.acked(f"a-{n}", n, at=float(n))
        acc.delivered_message("a", "r", n, f"a-{n}", 0.001 * n)
        if n != 7:  # b misses one
            acc.delivered_message("b", "r", n, f"a-{n}", 0.001 * n)
    before = (acc.expected(), acc.lost(), acc.delivered)
    forgotten = acc.compact(now=100.0)  # everything acked before t=90 is final
    assert forgotten == 89
    assert (acc.expected(), acc.lost(), acc.delivered) == before == (200, 1, 199)
    assert len(acc._room_of) == 11 and len(acc.subs[("b", "r")].ids) == 11
    assert acc.latencies.count == 199  # every sample counted, in fixed memory
    summary = acc.summary(100.0)
    assert summary["p50_latency_ms"] == pytest.approx(51.0, rel=PRECISION)  # 100th of 199
    # a broker restart after compaction is still seen as a new epoch (seq 1 was taken)
    acc.published("a", "r", "a-new")
    acc.acked("a-new", 1, at=101.0)
    assert acc.epochs() == {"r": 1}
    assert acc.lost() == 1 + 2  # both subscribers now owe the first message of the new epoch


def test_compaction_keeps_the_announced_losses_apart_from_the_silent_ones() -> None:
    acc = Accounting(started_at=0.0, horizon=0.0, compact_above=0)
    acc.joined("a", "r", 0, epoch="e1")
    for n in (1, 2, 3):
        acc.published("p", "r", f"m{n}")
        acc.acked(f"m{n}", n, epoch="e1")
    acc.window_exceeded("a", "r", 2, epoch="e1")  # m1, m2 will not come: told so
    before = (acc.announced_lost(), acc.lost())
    assert acc.compact(now=1e9) == 3
    assert before == (acc.announced_lost(), acc.lost()) == (2, 1)


def test_the_joined_after_a_window_error_is_the_new_position() -> None:
    """A publish can land between the node's window error (seq 3) and its `joined` (seq 4):
    per protocol.md the `joined` is the client's new position, so 4 is announced, 5 owed."""
    acc = Accounting(started_at=0.0)
    acc.joined("a", "r", 0, epoch="e1")
    for n in range(1, 6):
        acc.published("p", "r", f"m{n}")
        acc.acked(f"m{n}", n, epoch="e1")
    acc.window_exceeded("a", "r", 3, epoch="e1")
    acc.joined("a", "r", 4, epoch="e1")
    assert acc.expected_for("a", "r") == ["m5"]
    assert (acc.lost(), acc.announced_lost()) == (1, 4)
    acc.joined("a", "r", 5, epoch="e1")  # a later plain rejoin moves nothing
    assert acc.expected_for("a", "r") == ["m5"]
