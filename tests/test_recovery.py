"""core.recovery without a loop: RoomTracker (sequence and epoch bookkeeping) and Outbox."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsconsole.core.errors import QueueFull
from wsconsole.core.recovery import Outbox, RoomTracker


def kinds(decisions: list[tuple[str, str]]) -> list[str]:
    return [k for k, _ in decisions]


def test_in_order_gap_out_of_order_duplicate() -> None:
    """Dense seqs pass; a jump is a gap; a late fill is out of order; a repeat a duplicate."""
    rooms = RoomTracker()
    assert rooms.joined("r", 10, since=None) == []
    assert kinds(rooms.message("r", 11)) == ["in_order"]
    gap = rooms.message("r", 14)
    assert kinds(gap) == ["gap"] and gap[0][1] == "missing 12..13 (2)"
    assert rooms.missing_total == 2
    assert kinds(rooms.message("r", 12)) == ["out_of_order"]
    assert kinds(rooms.message("r", 12)) == ["duplicate"]
    assert kinds(rooms.message("r", 14)) == ["duplicate"]
    assert kinds(rooms.message("r", 13)) == ["out_of_order"]
    assert rooms.since("r") == 14 and rooms.since("other") is None


def test_rejoin_recovery_completes_at_the_head() -> None:
    """After joined(seq=head) with since, "recovered" is reported once the head is reached."""
    rooms = RoomTracker()
    rooms.joined("r", 0, since=None)
    rooms.message("r", 1)
    assert rooms.joined("r", 4, since=1) == []
    assert kinds(rooms.message("r", 2)) == ["in_order"]
    assert kinds(rooms.message("r", 3)) == ["in_order"]
    assert rooms.message("r", 4) == [("in_order", ""), ("recovered", "3 missed")]
    assert kinds(rooms.message("r", 5)) == ["in_order"]
    assert rooms.joined("r", 5, since=5) == [("recovered", "0 missed")]


def test_window_exceeded_resets_the_baseline() -> None:
    """Beyond the history the next message starts a new baseline (reported, not a gap)."""
    rooms = RoomTracker()
    rooms.joined("r", 0, since=None)
    rooms.message("r", 1)
    rooms.window_exceeded("r")
    assert kinds(rooms.message("r", 50)) == ["in_order"]
    assert rooms.since("r") == 50


@given(st.permutations(list(range(1, 30))))
def test_any_delivery_order_is_fully_accounted(order: list[int]) -> None:
    """Whatever the order, each seq is counted once: no duplicates, nothing left missing."""
    rooms = RoomTracker()
    rooms.joined("r", 0, since=None)
    counts = {"in_order": 0, "gap": 0, "out_of_order": 0, "duplicate": 0}
    for seq in order:
        for kind, _ in rooms.message("r", seq):
            counts[kind] += 1
    assert counts["duplicate"] == 0
    assert counts["in_order"] + counts["gap"] + counts["out_of_order"] == 29
    assert counts["out_of_order"] == rooms.missing_total
    assert not rooms.rooms["r"].missing and rooms.since("r") == 29


# -- epochs (issue 13: `since` belongs to an epoch; a reset restarts the sequence space)


def test_join_carries_since_with_its_epoch() -> None:
    """A position is (epoch, seq): the join sends both, and nothing before one is known."""
    rooms = RoomTracker()
    assert rooms.join_fields("r") == {"since": None, "epoch": None}
    rooms.joined("r", 4, since=None, epoch="e1")
    assert rooms.join_fields("r") == {"since": 4, "epoch": "e1"}
    rooms.message("r", 5, epoch="e1")
    assert rooms.join_fields("r") == {"since": 5, "epoch": "e1"}
    rooms.window_exceeded("r")
    assert rooms.join_fields("r") == {"since": None, "epoch": None}  # no position to resume


def test_reset_to_a_new_epoch_replays_it_from_the_start() -> None:
    """joined{reset, epoch e2, seq 3} after 57 messages of e1: the position restarts at 0
    in e2, 1..3 arrive in order and complete the recovery; no gap, no duplicate."""
    rooms = RoomTracker()
    rooms.joined("r", 50, since=None, epoch="e1")
    for seq in range(51, 58):
        rooms.message("r", seq, epoch="e1")
    [(kind, detail)] = rooms.joined("r", 3, since=57, epoch="e2", reset=True)
    assert kind == "reset" and "e1 -> e2" in detail and "replaying 1..3" in detail
    assert rooms.epoch("r") == "e2" and rooms.since("r") == 0 and rooms.resets == 1
    assert kinds(rooms.message("r", 1, epoch="e2")) == ["in_order"]
    assert kinds(rooms.message("r", 2, epoch="e2")) == ["in_order"]
    assert rooms.message("r", 3, epoch="e2") == [("in_order", ""), ("recovered", "3 missed")]
    assert rooms.join_fields("r") == {"since": 3, "epoch": "e2"}


def test_reset_without_a_position_or_after_the_window_is_a_baseline() -> None:
    """When nothing before the head will come (first join; window exceeded just before),
    the reset is still reported and the head becomes the baseline."""
    rooms = RoomTracker()
    assert kinds(rooms.joined("fresh", 9, since=None, epoch="e2", reset=True)) == ["reset"]
    assert rooms.since("fresh") == 9
    rooms.joined("r", 5, since=None, epoch="e1")
    rooms.window_exceeded("r")
    assert kinds(rooms.joined("r", 40, since=5, epoch="e2", reset=True)) == ["reset"]
    assert kinds(rooms.message("r", 41, epoch="e2")) == ["in_order"]


def test_a_changed_epoch_without_reset_is_never_spliced() -> None:
    """A server answering a rejoin with another epoch but no reset flag: still a reset
    (the old `since` means nothing in the new space), never a silent continuation."""
    rooms = RoomTracker()
    rooms.joined("r", 10, since=None, epoch=1)
    [(kind, detail)] = rooms.joined("r", 12, since=10, epoch=2)
    assert kind == "reset" and "without a reset notice" in detail
    assert rooms.since("r") == 0 and rooms.epoch("r") == 2


def test_a_message_from_a_new_epoch_restarts_and_an_old_one_is_stale() -> None:
    """Live messages of a new epoch before any notice: reset reported, seqs counted from 1
    (a first seq of 3 is a gap of 1..2); a late message of the old epoch is stale."""
    rooms = RoomTracker()
    rooms.joined("r", 0, since=None, epoch="a")
    rooms.message("r", 1, epoch="a")
    found = rooms.message("r", 3, epoch="b")
    assert kinds(found) == ["reset", "gap"] and found[1][1] == "missing 1..2 (2)"
    assert kinds(rooms.message("r", 2, epoch="a")) == ["stale"]
    assert rooms.epoch("r") == "b" and rooms.since("r") == 3


def test_without_epochs_the_current_servers_reset_still_works() -> None:
    """A server that sends no epoch: joined{reset, seq 0} restarts at 0 (today's nodes)."""
    rooms = RoomTracker()
    rooms.joined("r", 0, since=None)
    rooms.message("r", 1)
    assert kinds(rooms.joined("r", 0, since=None, reset=True)) == ["reset"]
    assert kinds(rooms.message("r", 1)) == ["in_order"]


# -- outbox


def test_outbox_order_limit_ack_and_resend() -> None:
    """Sends leave once written; publishes stay until acked and are re-sent after a drop."""
    box = Outbox(limit=3)
    box.add("a")
    pub = box.add('{"publish": 1}', publish_id="p1")
    assert box.add("dup", publish_id="p1") is pub  # same id: one entry
    box.add("b")
    with pytest.raises(QueueFull):
        box.add("c")
    written = []
    while (entry := box.next_unsent()) is not None:
        written.append(entry.data)
        box.written(entry)
    assert written == ["a", '{"publish": 1}', "b"]
    assert box.unacked == ["p1"] and len(box) == 1
    assert box.connection_lost() == 1
    entry = box.next_unsent()
    assert entry is not None and entry.publish_id == "p1"
    box.written(entry)
    assert box.ack("p1") and not box.ack("p1") and len(box) == 0


def test_unbounded_outbox() -> None:
    """limit=None never refuses."""
    box = Outbox(limit=None)
    for i in range(20_000):
        box.add(str(i))
    assert len(box) == 20_000
