"""ReconnectingClient against real harness nodes (subprocesses) sharing a real valkey broker."""

from __future__ import annotations

import json
import signal
from typing import Any

from tests.nodekit import broker, start_node  # noqa: F401  (broker is a fixture)
from tests.support import MS, ProcessRegistry, free_port
from tests.test_client import Recorder
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.events import DeliveryEvent, Direction
from wsconsole.core.lifecycle import State
from wsconsole.harness.auth import issue_token, new_secret
from wsconsole.harness.broker import Broker

WAIT = 15_000 * MS


def harness_client(url: str, rec: Recorder, **kwargs: Any) -> ReconnectingClient:
    """A harness-mode client with test timings."""
    kwargs.setdefault("backoff", BackoffPolicy(initial=100 * MS, cap=500 * MS, jitter=20 * MS))
    kwargs.setdefault("ping_interval", None)
    return ReconnectingClient(ClientOptions(url, harness=True, **kwargs), observers=[rec])


def delivered(rec: Recorder, room: str) -> list[tuple[int, Any]]:
    """(seq, data) of every `message` envelope received for `room`, in arrival order."""
    out = []
    for text in rec.texts(Direction.IN):
        env = json.loads(text)
        if env.get("type") == "message" and env.get("room") == room:
            out.append((env["seq"], env["data"]))
    return out


async def test_node_killed_client_recovers_exactly_what_it_missed(
    procs: ProcessRegistry, broker: Broker  # noqa: F811
) -> None:
    """Reader on n1, writer on n2. n1 is SIGKILLed; the writer keeps publishing through n2;
    n1 restarts on its port; the reader re-authenticates (token provider called again),
    re-joins with since=<last seq>, and gets every missed message once, in order."""
    secret = new_secret()
    env = {"WSCONSOLE_JWT_SECRET": secret}
    port1 = free_port()
    n1 = start_node(procs, broker.url, "n1", "--port", str(port1), secret=secret)
    n2 = start_node(procs, broker.url, "n2", "--port", "0", secret=secret)
    issued: list[str] = []

    def provider() -> str:
        issued.append("reader")
        return issue_token(secret, "reader")

    r_rec, w_rec = Recorder(), Recorder()
    reader = harness_client(n1.url, r_rec, token=provider, token_mode="header", rooms=["live"])
    writer = harness_client(n2.url, w_rec, token=issue_token(secret, "writer"),
                            token_mode="message")
    await reader.start()
    await writer.start()
    try:
        await reader.wait_state(State.OPEN, WAIT)
        await writer.wait_state(State.OPEN, WAIT)
        await r_rec.until(lambda: reader.rooms_tracker.since("live") is not None, WAIT)
        base = reader.rooms_tracker.since("live") or 0
        for i in range(3):
            await writer.publish("live", f"before-{i}")
        await r_rec.until(lambda: len(delivered(r_rec, "live")) == 3, WAIT)

        n1.proc.send_signal(signal.SIGKILL)
        n1.proc.wait(timeout=WAIT)
        await reader.wait_state(State.RECONNECTING, WAIT)
        for i in range(5):
            await writer.publish("live", f"during-{i}")
        await w_rec.until(lambda: writer.stats.acked == 8, WAIT)

        start_node(procs, broker.url, "n1", "--port", str(port1), env=env)
        await r_rec.until(
            lambda: any(d.kind == "recovered" for d in r_rec.of(DeliveryEvent)), WAIT
        )
        got = delivered(r_rec, "live")
        expected = [f"before-{i}" for i in range(3)] + [f"during-{i}" for i in range(5)]
        assert [data for _, data in got] == expected
        assert [seq for seq, _ in got] == list(range(base + 1, base + 9))
        joins = [json.loads(t) for t in r_rec.texts(Direction.OUT) if '"join"' in t]
        epoch = joins[-1].pop("epoch")  # the sequence space `since` belongs to
        assert joins[-1] == {"type": "join", "room": "live", "since": base + 3}
        assert epoch == reader.rooms_tracker.epoch("live") and isinstance(epoch, str)
        recovered = next(d for d in r_rec.of(DeliveryEvent) if d.kind == "recovered")
        assert recovered.detail == "5 missed"
        assert reader.stats.gaps == reader.stats.duplicates == reader.stats.out_of_order == 0
        assert len(issued) >= 2  # the provider ran again for the reconnect
        assert n2.proc.poll() is None
    finally:
        await reader.stop()
        await writer.stop()


async def test_rpc_and_publish_ack_against_a_node(
    procs: ProcessRegistry, broker: Broker  # noqa: F811
) -> None:
    """The node's rpc echo/time answer through client.rpc; publish is acked with its seq."""
    node = start_node(procs, broker.url, "n3", "--no-auth")
    rec = Recorder()
    client = harness_client(node.url, rec, rooms=["solo"])
    await client.start()
    try:
        await client.wait_state(State.OPEN, WAIT)
        assert (await client.rpc("echo", {"a": 1}, timeout=WAIT))["data"] == {"a": 1}
        assert isinstance((await client.rpc("time", timeout=WAIT))["time"], float)
        ident = await client.publish("solo", None)  # null data is a valid publish
        await rec.until(lambda: client.stats.acked == 1, WAIT)
        ack = next(d for d in rec.of(DeliveryEvent) if d.kind == "ack")
        assert ack.id == ident and ack.seq is not None and ack.seq >= 1
        await rec.until(lambda: delivered(rec, "solo") == [(ack.seq, None)], WAIT)
    finally:
        await client.stop()
