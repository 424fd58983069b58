"""Payload decoders: WebSocket messages shown, searched and exported as JSON trees.

Headless (no Qt). `base` defines what a decoder is, `registry` which decoder reads which
message (built-ins, plug-ins from the `wsconsole.decoders` entry-point group, schemas the
user loads), `tree` how binary values are written in JSON. The formats: `formats` (JSON,
MessagePack, CBOR), `protobuf`, and the subprotocols `socketio`, `graphql`, `stomp`,
`mqtt`, `signalr`, `phoenix`, `actioncable`. docs/decoders.md is the user's guide.
"""
