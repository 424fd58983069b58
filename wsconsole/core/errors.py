"""The client's own errors, one small tree under the package's `WsconsoleError`:

    ClientError
    ├── ClientOptionsError (also a ValueError): bad URL, header, token mode, number...
    ├── QueueFull: the offline queue reached `queue_limit`
    ├── NotConnected: an operation needs an open connection (rpc with queueing off)
    ├── RpcError: the server answered an rpc with an `error` envelope
    └── TokenError: the token provider (callback, command or URL) gave no token

Every driver (WebSocket, Socket.IO, SSE) raises these, so a front end catches one base.
"""

from __future__ import annotations

from wsconsole.errors import WsconsoleError


class ClientError(WsconsoleError):
    """Base of the client's own errors."""


class ClientOptionsError(ClientError, ValueError):
    """An option that cannot work (bad URL scheme, malformed header, ...)."""


class QueueFull(ClientError):
    """The offline queue holds `queue_limit` messages already."""


class NotConnected(ClientError):
    """The operation needs an open connection."""


class RpcError(ClientError):
    """The server answered an rpc with an error envelope."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class TokenError(ClientError):
    """The token provider failed or gave no token (the text says which and why)."""
