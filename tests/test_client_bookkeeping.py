"""classify_error without a loop (RoomTracker and Outbox: tests/test_recovery.py)."""

from __future__ import annotations

import socket
import ssl

from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.http11 import Response

from wsconsole.core.reconnect import classify_error


def test_classify_error_kinds() -> None:
    """Connect failures map to stable kinds."""
    assert classify_error(ConnectionRefusedError()).kind == "refused"
    assert classify_error(OSError("Multiple exceptions: Connect call failed, refused")).kind == (
        "refused"
    )
    assert classify_error(socket.gaierror(-2, "Name or service not known")).kind == "dns"
    assert classify_error(ssl.SSLCertVerificationError("bad cert")).kind == "tls"
    assert classify_error(TimeoutError()).kind == "timeout"
    assert classify_error(InvalidMessage("did not receive a valid HTTP response")).kind == (
        "protocol"
    )
    assert classify_error(OSError(113, "No route to host")).kind == "network"
    denied = InvalidStatus(Response(401, "Unauthorized", Headers(), b"no token\n"))
    failure = classify_error(denied)
    assert (failure.kind, failure.detail, failure.status) == (
        "handshake_rejected", "HTTP 401 Unauthorized", 401)
    proto = InvalidStatus(
        Response(
            400,
            "Bad Request",
            Headers(),
            b"Failed to open a WebSocket connection: invalid subprotocol",
        )
    )
    assert classify_error(proto).kind == "subprotocol"
