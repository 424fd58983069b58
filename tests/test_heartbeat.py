"""The heartbeat lab in the core: pong policies against a real websockets server that pings,
custom pings and bursts, unsolicited pongs, and what the client learns of the server's
heartbeat (interval, how long it keeps a client that stopped answering)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.servers import server_port, start
from tests.test_client import WAIT, Recorder, client_factory  # noqa: F401 - the fixture
from wsconsole.core.client import ClientError, NotConnected, ReconnectingClient
from wsconsole.core.errors import ClientOptionsError
from wsconsole.core.events import Direction, FrameRecord, HeartbeatEvent, Opcode
from wsconsole.core.heartbeat import (
    PROXY_IDLE_TIMEOUT,
    WRONG_PAYLOAD,
    PongPolicy,
    ServerHeartbeat,
    pong_share,
)
from wsconsole.core.lifecycle import State, Transition
from wsconsole.core.options import ClientOptions

# the test server pings every 0.1 s and closes a client whose pong is 0.3 s late
PING, TIMEOUT = 0.1, 0.3


def kinds(rec: Recorder) -> list[str]:
    return [h.kind for h in rec.of(HeartbeatEvent)]


def pongs_out(rec: Recorder) -> list[bytes]:
    return [f.payload for f in rec.of(FrameRecord)
            if f.opcode is Opcode.PONG and f.direction is Direction.OUT]


def test_pong_policy_text_round_trip_and_refusals() -> None:
    for text in ("auto", "off", "delay:1500", "wrong", "wrong:xyz"):
        assert PongPolicy.parse(text).text() == text
    assert PongPolicy.parse("delay:250").delay == pytest.approx(0.25)
    assert PongPolicy.parse("wrong:abc").payload == b"abc"
    assert PongPolicy.parse("WRONG").payload == WRONG_PAYLOAD
    assert not PongPolicy.parse("off").answers and PongPolicy().answers
    for bad, words in (("sometimes", "one of auto, off, delay, wrong"),
                       ("delay:soon", "milliseconds"), ("delay:-5", "0 to"),
                       ("off:1", "takes no value"), ("wrong:" + "x" * 126, "125 bytes")):
        with pytest.raises(ClientOptionsError, match=words):
            PongPolicy.parse(bad)


def test_pong_share_spreads_evenly() -> None:
    picked = [i for i in range(20) if pong_share(i, 0.25)]
    assert picked == [3, 7, 11, 15, 19]
    assert not any(pong_share(i, 0.0) for i in range(10))
    assert all(pong_share(i, 1.0) for i in range(10))


def test_server_heartbeat_interval_drops_and_warnings() -> None:
    beat = ServerHeartbeat()
    beat.opened(0.0)
    assert beat.verdict(10.0) == ("no ping from the server in 10 s", None)
    warning = beat.verdict(PROXY_IDLE_TIMEOUT + 1)[1]
    assert warning is not None and "no heartbeat of its own" in warning
    for t in (5.0, 7.0, 9.0, 11.0):
        beat.ping(t, answered=True)
    assert beat.interval == pytest.approx(2.0)
    assert beat.verdict(12.0) == ("the server pings every 2.0 s", None)
    beat.policy_changed(11.5, answering=False)
    beat.ping(13.0, answered=False)
    beat.ping(15.0, answered=False)
    assert beat.unanswered == 2 and beat.silent_for(15.5) == pytest.approx(2.5)
    drop = beat.closed(16.0, by_server=True, code=1011)
    assert drop is not None and (drop.after, drop.code, drop.unanswered) == (3.0, 1011, 2)
    assert "stopped answering after 3.0 s (close 1011)" in beat.verdict(16.0)[0]
    # a slow heartbeat is worth a warning
    slow = ServerHeartbeat()
    slow.opened(0.0)
    slow.ping(0.0, True)
    slow.ping(90.0, True)
    assert "longer than typical proxy idle timeouts" in (slow.verdict(91.0)[1] or "")
    # our own close of a silent connection is no drop
    beat.opened(20.0, answering=False)
    assert beat.closed(21.0, by_server=False, code=None) is None


async def _pinging_server() -> Any:
    server, _ = await start("echo", ping_interval=PING, ping_timeout=TIMEOUT)
    return server


async def _open(factory: Any, server: Any, **kwargs: Any
                ) -> tuple[ReconnectingClient, Recorder]:
    client, rec = factory(f"ws://127.0.0.1:{server_port(server)}", **kwargs)
    await client.start()
    await client.wait_state(State.OPEN, WAIT)
    return client, rec


async def test_pongs_off_the_server_drops_the_silent_client(client_factory: Any) -> None:  # noqa: F811
    server = await _pinging_server()
    try:
        client, rec = await _open(client_factory, server, pongs=PongPolicy("off"))
        await rec.until(lambda: "server_dropped" in kinds(rec))
        assert pongs_out(rec) == []  # not one pong went out
        assert "pong_withheld" in kinds(rec)
        dropped = next(h for h in rec.of(HeartbeatEvent) if h.kind == "server_dropped")
        # the server's timeout runs from its first unanswered ping: 0.3 s, give or take
        # a ping interval and the scheduler
        assert TIMEOUT * 0.8 <= (dropped.delay or 0) <= TIMEOUT + WAIT / 10
        leaving = next(t for t in rec.of(Transition) if t.state is State.RECONNECTING)
        assert leaving.code == 1011
        assert client.server_heartbeat.drops[-1].code == 1011
        assert "closed a client that stopped answering" in client.server_heartbeat.verdict(
            0)[0]
    finally:
        server.close()


async def test_pongs_auto_and_short_delay_keep_the_client(client_factory: Any) -> None:  # noqa: F811
    server = await _pinging_server()
    try:
        client, rec = await _open(client_factory, server)
        await rec.until(lambda: len(pongs_out(rec)) >= 3)
        assert client.server_heartbeat.interval == pytest.approx(PING, abs=0.08)
        client.set_pongs(PongPolicy("delay", delay=TIMEOUT / 3))
        delayed = len([k for k in kinds(rec) if k == "pong_delayed"])
        await rec.until(lambda: kinds(rec).count("pong_delayed") >= delayed + 4)
        await rec.until(lambda: len(pongs_out(rec)) >= 7)  # the late pongs do go out
        assert client.state is State.OPEN and "server_dropped" not in kinds(rec)
        assert next(h.delay for h in rec.of(HeartbeatEvent)
                    if h.kind == "pong_delayed") == pytest.approx(TIMEOUT / 3)
    finally:
        server.close()


async def test_a_delay_past_the_timeout_and_a_wrong_payload_get_dropped(
        client_factory: Any) -> None:  # noqa: F811
    server = await _pinging_server()
    try:
        client, rec = await _open(client_factory, server,
                                  pongs=PongPolicy("wrong", payload=b"not yours"))
        await rec.until(lambda: "server_dropped" in kinds(rec))
        assert set(pongs_out(rec)) == {b"not yours"} and "pong_altered" in kinds(rec)
        client.set_pongs(PongPolicy("delay", delay=TIMEOUT * 3))
        await client.wait_state(State.OPEN, WAIT)
        before = kinds(rec).count("server_dropped")
        await rec.until(lambda: kinds(rec).count("server_dropped") > before)
    finally:
        server.close()


async def test_custom_pings_bursts_and_unsolicited_pongs(client_factory: Any) -> None:  # noqa: F811
    server, _ = await start("echo")  # websockets answers pings itself
    try:
        client, rec = await _open(client_factory, server)
        rtts = await client.send_ping(b"lab", count=3)
        assert len(rtts) == 3 and all(r is not None and r >= 0 for r in rtts)
        pings = [f.payload for f in rec.of(FrameRecord) if f.opcode is Opcode.PING]
        assert pings == [b"lab#1", b"lab#2", b"lab#3"]
        [single] = await client.send_ping(b"one")
        assert single is not None
        await client.send_pong(b"unsolicited")
        await rec.until(lambda: b"unsolicited" in pongs_out(rec))
        await client.send("still here")  # the server did not mind the unsolicited pong
        await rec.until(lambda: "still here" in rec.texts(Direction.IN))
        with pytest.raises(ClientError, match="125 bytes"):
            await client.send_ping(b"x" * 126)
        with pytest.raises(ClientOptionsError, match="1 to 1000"):
            await client.send_ping(count=0)
        await client.stop()
        with pytest.raises(NotConnected):
            await client.send_pong()
    finally:
        server.close()


def test_client_options_refuse_a_policy_of_another_type() -> None:
    with pytest.raises(ClientOptionsError, match="PongPolicy"):
        ClientOptions("ws://127.0.0.1:1/", pongs="off")  # type: ignore[arg-type]
