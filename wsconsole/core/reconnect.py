"""Why a connection attempt failed or an open connection ended, as one plain record.

`Failure` is what every driver (WebSocket, Socket.IO, SSE) hands its reconnect loop;
`classify_error` turns a `websockets` connect/handshake exception into one. No I/O here.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    NegotiationError,
)

from wsconsole.core.events import describe_close


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed or a connection ended.

    kind: a stable word ("refused", "dns", "tls", "timeout", "handshake_rejected",
    "subprotocol", "protocol", "protocol_mismatch", "network", "closed", "liveness",
    "auth", "stopped"); detail: plain words; code / reason: the close frame received (or
    why a stream ended); status: the HTTP status of a refused handshake; final: the server
    said "do not reconnect" (SSE's 204).
    """

    kind: str
    detail: str
    code: int | None = None
    reason: str | None = None
    status: int | None = None
    final: bool = False

    @property
    def error(self) -> str | None:
        """The transition's `error` text: None when a close code or reason says it all."""
        if self.code is not None or self.reason is not None:
            return None
        return f"{self.kind}: {self.detail}"

    @property
    def summary(self) -> str:
        """One line naming the failure, for messages that end a session."""
        return self.error or self.detail


def classify_error(exc: BaseException) -> Failure:
    """Map a `websockets` connect/handshake exception to a stable Failure."""
    if isinstance(exc, InvalidStatus):
        response = exc.response
        status = response.status_code
        body = bytes(response.body or b"").decode("utf-8", "replace").strip()
        if "subprotocol" in body.lower():
            return Failure("subprotocol", f"HTTP {status}: {body[:200]}", status=status)
        return Failure("handshake_rejected", f"HTTP {status} {response.reason_phrase}",
                       status=status)
    if isinstance(exc, NegotiationError) and "subprotocol" in str(exc).lower():
        return Failure("subprotocol", str(exc))
    if isinstance(exc, InvalidMessage):
        cause = exc.__cause__
        return Failure("protocol", f"{exc}" + (f" ({cause})" if cause else ""))
    if isinstance(exc, InvalidHandshake):
        if "subprotocol" in str(exc).lower():
            return Failure("subprotocol", str(exc))
        return Failure("protocol", str(exc))
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return Failure("tls", str(exc))
    if isinstance(exc, socket.gaierror):
        return Failure("dns", f"cannot resolve host: {exc.strerror or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return Failure("refused", "connection refused")
    if isinstance(exc, TimeoutError):
        return Failure("timeout", "timed out opening the connection")
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        if rcvd is None:
            return Failure("closed", "connection lost without a close frame")
        return Failure("closed", describe_close(rcvd.code, rcvd.reason), code=rcvd.code,
                       reason=rcvd.reason)
    if isinstance(exc, OSError):
        # multiple addresses each refused give a generic OSError with this text
        if "refused" in str(exc).lower():
            return Failure("refused", "connection refused")
        return Failure("network", exc.strerror or str(exc))
    return Failure("protocol", f"{type(exc).__name__}: {exc}")
