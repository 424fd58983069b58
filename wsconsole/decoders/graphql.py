"""GraphQL over WebSocket: `graphql-transport-ws` (the graphql-ws library's protocol) and the
older `graphql-ws` (Apollo's subscriptions-transport-ws). Both send JSON objects with a
`type`; they differ in the type names and their fields:

| graphql-transport-ws | graphql-ws (legacy) |
|---|---|
| connection_init, connection_ack | connection_init, connection_ack, connection_error |
| ping, pong | ka (keep-alive), connection_terminate |
| subscribe {id, payload: {query}} | start {id, payload: {query}} |
| next {id, payload} | data {id, payload} |
| error {id, payload: [errors]} | error {id, payload} |
| complete {id} (both ways) | complete {id} (server), stop {id} (client) |

The tree is the message itself, checked against its protocol: an unknown type (or one of
the other protocol's, which is named in the error), a missing `id`, a subscribe without a
query, or an error payload that is not a list is refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

from wsconsole.decoders.base import (
    Context,
    DecodeError,
    Decoder,
    EncodeError,
    Message,
    Payload,
    shorten,
)
from wsconsole.decoders.tree import compact, parse_json

_OBJECT = "object"
_LIST = "list"
_QUERY = "query"  # an object with a string `query`
# type -> (needs an id, what its payload must be, or None when it has none / it is optional)
Spec = dict[str, tuple[bool, str | None]]


class _GraphqlDecoder(Decoder):
    """A JSON message protocol with a table of message types."""

    types: ClassVar[Spec]
    other: ClassVar[tuple[str, Spec]]  # the sibling protocol, to name it in errors
    binary = False

    def sniff(self, msg: Message) -> bool:
        """A JSON object whose `type` is one of this protocol's (checked by decoding)."""
        return msg.payload[:1] == b"{" and b'"type"' in msg.payload[:256]

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """The message, checked against the protocol's table."""
        value = parse_json(msg.payload, f"a {self.title} message")
        self._check(value, DecodeError)
        return value, _summary(value)

    def encode(self, value: Any, ctx: Context) -> Payload:
        """Compact JSON of a message that passes the same checks."""
        self._check(value, EncodeError)
        return compact(value)

    def _check(self, value: Any, error: type[Exception]) -> None:
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            raise error(f'a {self.title} message is an object with a string "type"')
        kind = value["type"]
        spec = self.types.get(kind)
        if spec is None:
            other_name, other_types = self.other
            hint = f" (it is a {other_name} message)" if kind in other_types else ""
            raise error(f"unknown {self.title} message type {kind!r}{hint}")
        needs_id, payload = spec
        if needs_id and not isinstance(value.get("id"), str):
            raise error(f'{kind} needs a string "id"')
        body = value.get("payload")
        if payload == _QUERY and not (isinstance(body, dict)
                                      and isinstance(body.get("query"), str)):
            raise error(f'{kind} needs a payload with a string "query"')
        if payload == _LIST and not isinstance(body, list):
            raise error(f"{kind} needs a list of errors as payload")
        if payload == _OBJECT and "payload" in value and not isinstance(body, dict | None):
            raise error(f"{kind} payload must be an object")


TRANSPORT_WS: Spec = {
    "connection_init": (False, _OBJECT), "connection_ack": (False, _OBJECT),
    "ping": (False, _OBJECT), "pong": (False, _OBJECT),
    "subscribe": (True, _QUERY), "next": (True, _OBJECT), "error": (True, _LIST),
    "complete": (True, None),
}
LEGACY_WS: Spec = {
    "connection_init": (False, _OBJECT), "connection_ack": (False, _OBJECT),
    "connection_error": (False, None), "ka": (False, None),
    "connection_terminate": (False, None), "start": (True, _QUERY), "data": (True, _OBJECT),
    "error": (True, None), "complete": (True, None), "stop": (True, None),
}


class GraphqlTransportWsDecoder(_GraphqlDecoder):
    """`graphql-transport-ws`: the current GraphQL over WebSocket protocol."""

    name = "graphql-transport-ws"
    title = "graphql-transport-ws"
    subprotocols = ("graphql-transport-ws",)
    types = TRANSPORT_WS
    other = ("graphql-ws", LEGACY_WS)


class GraphqlWsDecoder(_GraphqlDecoder):
    """`graphql-ws`: Apollo's legacy subscriptions-transport-ws protocol."""

    name = "graphql-ws"
    title = "graphql-ws"
    subprotocols = ("graphql-ws",)
    types = LEGACY_WS
    other = ("graphql-transport-ws", TRANSPORT_WS)


def _summary(value: dict[str, Any]) -> str:
    bits = [value["type"]]
    if "id" in value:
        bits.append(f"#{value['id']}")
    payload = value.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("query"), str):
        name = payload.get("operationName")
        bits.append(name if isinstance(name, str) else shorten(payload["query"], 60))
    elif payload is not None:
        bits.append(shorten(compact(payload), 60))
    return " ".join(bits)
