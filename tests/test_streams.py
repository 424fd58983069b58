"""The adapter's per-room order of frames across gaps and epochs, driven without a broker."""

from __future__ import annotations

from wsconsole.harness.streams import CATCH_UP, DELIVER, DROP, HOLD, RoomStreams


def f(epoch: str, seq: int) -> bytes:
    return f"{epoch}/{seq}".encode()


def streams_at(epoch: str, seq: int, room: str = "r") -> RoomStreams:
    streams = RoomStreams()
    streams.want(room)
    assert streams.note(room, epoch, seq)
    return streams


def test_in_order_frames_pass_repeats_and_unwanted_rooms_do_not() -> None:
    streams = streams_at("e1", 3)
    assert streams.incoming("r", "e1", 4, f("e1", 4)) == DELIVER
    assert streams.incoming("r", "e1", 4, f("e1", 4)) == DROP
    assert streams.incoming("r", "e1", 2, f("e1", 2)) == DROP
    assert streams.incoming("other", "e1", 1, f("e1", 1)) == DROP
    assert streams.position("r") == ("e1", 4)
    streams.forget("r")
    assert streams.incoming("r", "e1", 5, f("e1", 5)) == DROP and streams.rooms() == []


def test_the_first_frame_of_an_unknown_room_is_its_start() -> None:
    streams = RoomStreams()
    streams.want("r")
    assert streams.incoming("r", "e1", 9, f("e1", 9)) == DELIVER
    assert streams.position("r") == ("e1", 9)
    assert streams.note("r", "e1", 4), "a known room keeps its position"
    assert streams.position("r") == ("e1", 9)
    assert not streams.note("r", "e2", 1), "a join in another epoch: out of step"


def test_a_gap_is_caught_up_from_the_history_then_the_held_frames_follow() -> None:
    streams = streams_at("e1", 3)
    assert streams.incoming("r", "e1", 6, f("e1", 6)) == CATCH_UP
    assert streams.incoming("r", "e1", 7, f("e1", 7)) == HOLD
    assert streams.begin_catch_up("r") == ("e1", 3)
    assert streams.incoming("r", "e1", 8, f("e1", 8)) == HOLD
    for seq in (4, 5, 6):  # what the history gave
        streams.moved("r", "e1", seq)
    frames, again = streams.end_catch_up("r")
    assert [seq for _, seq, _ in frames] == [7, 8] and not again, "6 came from the history"
    assert streams.incoming("r", "e1", 9, f("e1", 9)) == DELIVER


def test_a_new_epoch_is_seen_through_a_catch_up_and_the_old_one_is_left_behind() -> None:
    streams = streams_at("e1", 10)
    assert streams.incoming("r", "e2", 1, f("e2", 1)) == CATCH_UP
    assert streams.begin_catch_up("r") == ("e1", 10)
    streams.moved("r", "e2", 0)  # the snapshot said: reset to e2
    streams.moved("r", "e2", 1)
    assert streams.incoming("r", "e2", 2, f("e2", 2)) == HOLD
    frames, again = streams.end_catch_up("r")
    assert [(e, s) for e, s, _ in frames] == [("e2", 2)] and not again
    assert streams.incoming("r", "e1", 11, f("e1", 11)) == DROP, "a late frame of e1"
    assert streams.position("r") == ("e2", 2)


def test_an_epoch_the_catch_up_did_not_find_was_already_superseded() -> None:
    streams = streams_at("e1", 10)
    assert streams.incoming("r", "e2", 1, f("e2", 1)) == CATCH_UP  # before the snapshot
    streams.begin_catch_up("r")
    streams.moved("r", "e3", 0)  # the broker had moved on to e3 already
    frames, again = streams.end_catch_up("r")
    assert frames == [] and not again, "e2 is dropped, no endless catching up"
    assert streams.incoming("r", "e2", 2, f("e2", 2)) == DROP


def test_an_epoch_first_seen_after_the_snapshot_was_asked_for_needs_another_catch_up() -> None:
    streams = streams_at("e1", 10)
    assert streams.incoming("r", "e1", 12, f("e1", 12)) == CATCH_UP
    streams.begin_catch_up("r")
    assert streams.incoming("r", "e2", 1, f("e2", 1)) == HOLD  # after the snapshot was asked
    streams.moved("r", "e1", 11)
    streams.moved("r", "e1", 12)
    frames, again = streams.end_catch_up("r")
    assert frames == [] and again, "e2 may be newer than what the snapshot saw"
    assert streams.incoming("r", "e2", 2, f("e2", 2)) == HOLD, "held for that catch-up"


def test_a_reconnect_holds_frames_until_its_catch_up_even_without_a_position() -> None:
    streams = RoomStreams()
    streams.want("r")
    streams.hold("r")
    assert streams.incoming("r", "e1", 5, f("e1", 5)) == HOLD
    assert streams.begin_catch_up("r") is None, "nothing known: no history to read"
    assert streams.incoming("r", "e1", 6, f("e1", 6)) == HOLD
    frames, again = streams.end_catch_up("r")
    assert [seq for _, seq, _ in frames] == [5, 6] and not again
