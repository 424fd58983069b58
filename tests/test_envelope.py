"""The harness envelope codec: round trips, validation and the error code of each refusal."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsconsole.core.client import encode_publish
from wsconsole.core.envelope import MAX_NAME, EnvelopeError, encode, parse_client, parse_server

names = st.text(min_size=1, max_size=MAX_NAME)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10,
)


@given(room=names, ident=names, data=json_values)
def test_publish_round_trip(room: str, ident: str, data: object) -> None:
    """The client's publish frame parses back to the same publish, null data included
    (envelope.encode leaves None fields out, so it cannot build a publish of null)."""
    parsed = parse_client(encode_publish(room, data, ident))
    assert parsed == {"type": "publish", "room": room, "id": ident, "data": data}
    if data is not None:
        assert parse_client(encode("publish", room=room, id=ident, data=data)) == parsed


@given(room=names, since=st.none() | st.integers(min_value=0, max_value=2**62))
def test_join_round_trip(room: str, since: int | None) -> None:
    """join keeps an optional since; None is left out of the frame."""
    frame = encode("join", room=room, since=since)
    assert ("since" in orjson.loads(frame)) == (since is not None)
    assert parse_client(frame) == {"type": "join", "room": room, "since": since}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_envelope"),
        ('{"room": "r"}', "bad_envelope"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "join", "room": ""}', "bad_envelope"),
        ('{"type": "join", "room": "r", "since": -1}', "bad_envelope"),
        ('{"type": "join", "room": "r", "since": true}', "bad_envelope"),
        ('{"type": "publish", "room": "r", "id": "1"}', "bad_envelope"),
        ('{"type": "auth", "token": 5}', "bad_envelope"),
        ('{"type": "rpc", "id": "1"}', "bad_envelope"),
        ('{"type": "leave", "room": "' + "x" * (MAX_NAME + 1) + '"}', "oversized_field"),
    ],
)
def test_client_envelopes_refused_with_code(frame: str, code: str) -> None:
    """Each malformed client envelope raises EnvelopeError with the reply's code."""
    with pytest.raises(EnvelopeError) as info:
        parse_client(frame)
    assert info.value.code == code


def test_error_keeps_the_id_for_the_reply() -> None:
    """A publish missing data names its id so the error reply can refer to it."""
    with pytest.raises(EnvelopeError) as info:
        parse_client('{"type": "publish", "room": "r", "id": "abc"}')
    assert info.value.id == "abc"


def test_server_envelopes() -> None:
    """parse_server accepts the node's types with extra fields and refuses bad ones."""
    msg = parse_server(encode("message", room="r", seq=3, id="x", node="n1", ts=1.0, data=[1]))
    assert msg["seq"] == 3 and msg["node"] == "n1"
    assert parse_server(encode("ack", id="x", seq=1))["id"] == "x"
    assert parse_server(encode("error", code="rate_limited", detail="slow down"))["code"]
    lagging = parse_server(encode("lagging", room="r", epoch="e1", first=4, seq=9))
    assert (lagging["first"], lagging["seq"]) == (4, 9)
    for bad in (encode("message", room="r"), encode("ack", id="x"), encode("error", detail="d"),
                encode("lagging", room="r", seq=9), encode("hello")):
        with pytest.raises(EnvelopeError):
            parse_server(bad)


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_parsers_never_raise_anything_else(junk: bytes | str) -> None:
    """Whatever arrives, the parsers either return a dict or raise EnvelopeError."""
    for parse in (parse_client, parse_server):
        try:
            assert isinstance(parse(junk), dict)
        except EnvelopeError:
            pass
