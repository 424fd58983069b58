"""The client's plain decision objects, without a loop: RoomTracker, Outbox, classify_error."""

from __future__ import annotations

import socket
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.http11 import Response

from wsconsole.core.client import Outbox, QueueFull, RoomTracker, classify_error


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


def test_classify_error_kinds() -> None:
    """Connect failures map to stable kinds."""
    assert classify_error(ConnectionRefusedError())[0] == "refused"
    assert classify_error(OSError("Multiple exceptions: Connect call failed, refused"))[0] == (
        "refused"
    )
    assert classify_error(socket.gaierror(-2, "Name or service not known"))[0] == "dns"
    assert classify_error(ssl.SSLCertVerificationError("bad cert"))[0] == "tls"
    assert classify_error(TimeoutError())[0] == "timeout"
    assert classify_error(InvalidMessage("did not receive a valid HTTP response"))[0] == (
        "protocol"
    )
    assert classify_error(OSError(113, "No route to host"))[0] == "network"
    denied = InvalidStatus(Response(401, "Unauthorized", Headers(), b"no token\n"))
    assert classify_error(denied) == ("handshake_rejected", "HTTP 401 Unauthorized")
    proto = InvalidStatus(
        Response(
            400,
            "Bad Request",
            Headers(),
            b"Failed to open a WebSocket connection: invalid subprotocol",
        )
    )
    assert classify_error(proto)[0] == "subprotocol"
