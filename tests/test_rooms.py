"""The node's room membership and fan-out decisions, driven without a broker, sockets or loop."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wsconsole.harness.rooms import RoomTable


def frame(room: str, seq: int) -> bytes:
    return f"{room}:{seq}".encode()


def seqs(frames: list[bytes]) -> list[int]:
    return [int(f.rsplit(b":", 1)[1]) for f in frames]


E1, E2 = "e1", "e2"  # two sequence spaces (epochs) of a room


def test_a_join_buffers_live_frames_until_its_snapshot_then_sends_those_after_it() -> None:
    table: RoomTable[str] = RoomTable()
    table.join("a", "r")
    assert table.position("a", "r") is None
    for seq in (4, 5, 6):
        assert table.deliver("r", E1, seq, frame("r", seq)) == [], "joining: buffered, not sent"
    assert seqs(table.joined("a", "r", E1, 5) or []) == [6], "4 and 5 were in the snapshot"
    assert table.position("a", "r") == 6 and table.epoch("r") == E1
    assert table.deliver("r", E1, 7, frame("r", 7)) == ["a"]


def test_a_snapshot_ahead_of_the_live_frames_skips_them() -> None:
    table: RoomTable[str] = RoomTable()
    table.join("old", "r")
    table.joined("old", "r", E1, 0)
    table.join("new", "r")
    assert table.joined("new", "r", E1, 3) == [], "nothing was live yet"
    assert table.deliver("r", E1, 1, frame("r", 1)) == ["old"]
    assert table.deliver("r", E1, 3, frame("r", 3)) == ["old"], "3 was in new's snapshot"
    assert table.deliver("r", E1, 4, frame("r", 4)) == ["old", "new"]


def test_a_snapshot_behind_the_frames_the_stream_went_past_is_told() -> None:
    table: RoomTable[str] = RoomTable()
    table.join("a", "r")
    assert not table.behind("a", "r", E1, 3, None), "nothing buffered, nothing handed over"
    assert not table.behind("a", "r", E1, 3, 3)
    assert table.behind("a", "r", E1, 3, 5), "4 and 5 went past the member"
    table.deliver("r", E1, 5, frame("r", 5))
    assert table.behind("a", "r", E1, 3, 5), "4 is missing before the buffered 5"
    assert not table.behind("a", "r", E1, 4, 5)
    table.deliver("r", E1, 6, frame("r", 6))
    assert not table.behind("a", "r", E1, 5, 6), "5 was in the snapshot"
    assert table.behind("a", "r", E1, 4, 7)
    assert not table.behind("a", "r", E2, 1, None), "another epoch's frames are not its own"
    assert not table.behind("gone", "r", E1, 0, 9), "not joining: nothing to read again"


def test_leave_says_when_the_last_local_member_went() -> None:
    table: RoomTable[str] = RoomTable()
    for member in ("a", "b"):
        table.join(member, "r")
        table.joined(member, "r", E1, 0)
    table.join("a", "other")
    assert table.rooms_of("a") == ["other", "r"] and table.names() == ["other", "r"]
    assert len(table) == 2
    assert table.leave("a", "r") is False
    assert table.leave("b", "r") is True, "unsubscribe now"
    assert table.leave("b", "r") is False, "leaving twice is harmless"
    assert table.deliver("r", E1, 1, frame("r", 1)) == []
    assert table.names() == ["other"] and table.rooms_of("b") == []
    assert table.leave("a", "other") is True
    assert len(table) == 0 and table.rooms_of("a") == []


def test_a_join_that_finishes_after_a_leave_sends_nothing() -> None:
    table: RoomTable[str] = RoomTable()
    table.join("a", "r")
    table.deliver("r", E1, 1, frame("r", 1))
    assert table.leave("a", "r") is True
    assert table.joined("a", "r", E1, 1) is None
    assert table.members("r") == []


def test_joining_again_starts_over() -> None:
    table: RoomTable[str] = RoomTable()
    table.join("a", "r")
    table.joined("a", "r", E1, 10)
    table.join("a", "r")
    assert table.deliver("r", E1, 11, frame("r", 11)) == [], "buffered for the new join"
    assert seqs(table.joined("a", "r", E1, 10) or []) == [11]
    assert table.members("r") == ["a"]


def test_a_reset_restarts_members_of_the_old_epoch_at_zero() -> None:
    table: RoomTable[str] = RoomTable()
    table.join("in", "r")
    table.joined("in", "r", E1, 0)
    table.join("joining", "r")
    table.deliver("r", E1, 1, frame("r", 1))
    assert table.reset("r", E2) == ["in"] and table.reset("unknown", E2) == []
    assert table.position("in", "r") == 0 and table.epoch("r") == E2
    assert table.joined("joining", "r", E2, 0) == [], "frame 1 of the old epoch is not sent"
    assert table.deliver("r", E2, 1, frame("r", 1)) == ["in", "joining"], "the new 1 is"
    assert table.reset("r", E2) == [], "a reset to the room's own epoch tells nobody"


def test_a_frame_of_another_epoch_reaches_no_member() -> None:
    table: RoomTable[str] = RoomTable()
    table.join("in", "r")
    table.joined("in", "r", E1, 4)
    assert table.deliver("r", E2, 5, frame("r", 5)) == [], "the adapter resets first"
    assert table.position("in", "r") == 4


def test_a_snapshot_of_another_epoch_makes_a_stray_until_a_reset_or_a_rejoin() -> None:
    table: RoomTable[str] = RoomTable()
    table.join("old", "r")
    table.joined("old", "r", E1, 7)
    table.join("ahead", "r")  # its snapshot already saw the broker's new epoch
    table.deliver("r", E2, 1, frame("r", 1))
    assert seqs(table.joined("ahead", "r", E2, 0) or []) == [1], "its own epoch's frames"
    assert table.strays("r") == [("ahead", E2, 1)]
    assert table.deliver("r", E1, 8, frame("r", 8)) == ["old"], "strays get nothing"
    assert table.reset("r", E2) == ["old"], "the stray joins in at its position, untold"
    assert table.strays("r") == [] and table.position("ahead", "r") == 1
    assert table.deliver("r", E2, 1, frame("r", 1)) == ["old"]
    assert table.deliver("r", E2, 2, frame("r", 2)) == ["old", "ahead"]
    # a stray left behind in an old epoch is brought back by joining again
    table.join("late", "r")
    table.joined("late", "r", E1, 3)
    assert table.strays("r") == [("late", E1, 3)]
    table.join("late", "r")
    table.joined("late", "r", E2, 2)
    assert table.strays("r") == [] and table.position("late", "r") == 2


def test_a_gap_beyond_the_history_moves_members_past_it() -> None:
    table: RoomTable[str] = RoomTable()
    table.join("in", "r")
    table.joined("in", "r", E1, 2)
    table.join("joining", "r")
    assert table.skip_to("r", E1, 9) == [("in", False)]
    assert table.position("in", "r") == 9 and table.position("joining", "r") is None
    assert table.deliver("r", E1, 9, frame("r", 9)) == []
    assert table.deliver("r", E1, 10, frame("r", 10)) == ["in"]
    assert table.skip_to("r", E2, 4) == [("in", True)], "into a new epoch: a reset to tell"
    assert table.deliver("r", E2, 5, frame("r", 5)) == ["in"]
    assert table.skip_to("nowhere", E1, 3) == []


MEMBERS = ("a", "b", "c")
ROOMS = ("r1", "r2")


class RoomsAgainstAModel(RuleBasedStateMachine):
    """Random joins, snapshots, frames, leaves and resets against a model of what each client
    must see: after a snapshot at S, every seq after S exactly once, in order, nothing else.

    The broker side is modelled as it behaves: seqs are published densely and delivered in
    order; a snapshot is taken at some point between the join and now, so its seq lies between
    the room's seq when the join began and the room's seq now.
    """

    def __init__(self) -> None:
        super().__init__()
        self.table: RoomTable[str] = RoomTable()
        self.published = dict.fromkeys(ROOMS, 0)
        self.delivered = dict.fromkeys(ROOMS, 0)
        self.epochs = dict.fromkeys(ROOMS, 0)  # each reset starts a new epoch
        self.joining: dict[tuple[str, str], int] = {}  # (member, room) -> seq at join time
        self.snapshot: dict[tuple[str, str], int] = {}  # (member, room) in -> its snapshot seq
        self.received: dict[tuple[str, str], list[int]] = {}

    @rule(room=st.sampled_from(ROOMS), count=st.integers(1, 3))
    def publish(self, room: str, count: int) -> None:
        self.published[room] += count

    @precondition(lambda self: any(self.delivered[r] < self.published[r] for r in ROOMS))
    @rule(room=st.sampled_from(ROOMS))
    def deliver(self, room: str) -> None:
        if self.delivered[room] == self.published[room]:
            return
        self.delivered[room] += 1
        seq = self.delivered[room]
        epoch = f"e{self.epochs[room]}"
        for member in self.table.deliver(room, epoch, seq, frame(room, seq)):
            self.received[(member, room)].append(seq)

    @rule(member=st.sampled_from(MEMBERS), room=st.sampled_from(ROOMS))
    def join(self, member: str, room: str) -> None:
        self.table.join(member, room)
        self.snapshot.pop((member, room), None)
        self.joining[(member, room)] = self.published[room]

    @precondition(lambda self: bool(self.joining))
    @rule(data=st.data())
    def snapshot_arrives(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.joining)))
        member, room = key
        seq = data.draw(st.integers(self.joining.pop(key), self.published[room]))
        buffered = self.table.joined(member, room, f"e{self.epochs[room]}", seq)
        assert buffered is not None
        self.snapshot[key] = seq
        self.received[key] = seqs(buffered)

    @rule(member=st.sampled_from(MEMBERS), room=st.sampled_from(ROOMS))
    def leave(self, member: str, room: str) -> None:
        was_member = (member, room) in self.joining or (member, room) in self.snapshot
        self.joining.pop((member, room), None)
        self.snapshot.pop((member, room), None)
        self.received.pop((member, room), None)
        others = [k for k in (*self.joining, *self.snapshot) if k[1] == room]
        assert self.table.leave(member, room) is (was_member and not others)

    @rule(room=st.sampled_from(ROOMS))
    def broker_reset(self, room: str) -> None:
        self.published[room] = self.delivered[room] = 0
        self.epochs[room] += 1
        told = self.table.reset(room, f"e{self.epochs[room]}")
        assert sorted(told) == sorted(m for m, r in self.snapshot if r == room)
        for key in self.snapshot:
            if key[1] == room:
                self.snapshot[key] = 0
                self.received[key] = []
        for key in self.joining:
            if key[1] == room:
                self.joining[key] = 0

    @invariant()
    def each_client_sees_every_seq_after_its_snapshot_once_in_order(self) -> None:
        for (member, room), start in self.snapshot.items():
            expected = list(range(start + 1, self.delivered[room] + 1))
            assert self.received[(member, room)] == expected, (member, room, start)
            assert self.table.position(member, room) == max(start, self.delivered[room])

    @invariant()
    def membership_matches(self) -> None:
        keys = [*self.joining, *self.snapshot]
        assert self.table.names() == sorted({room for _, room in keys})
        for member in MEMBERS:
            assert self.table.rooms_of(member) == sorted(r for m, r in keys if m == member)


RoomsAgainstAModel.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
test_rooms_against_a_model = RoomsAgainstAModel.TestCase
