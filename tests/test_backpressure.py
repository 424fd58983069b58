"""Backpressure on a real node: a subscriber that stops reading costs the node a bounded send
buffer, is told it is `lagging` and closed 1013, and recovers every message from history;
while the node's deliveries run behind, publishes are refused (`broker_busy`) before they
are taken, and re-sent ones are delivered once. Judged by the independent client and ledger
of tests/protoclient.py (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.nodekit import NodeProc, broker, http_get, module_procs, start_node
from tests.protoclient import Ledger, Peer
from tests.support import SCALE, ProcessRegistry, until
from tests.test_client import Recorder
from tests.test_client_node import harness_client
from wsconsole.core.events import DeliveryEvent, Direction
from wsconsole.core.lifecycle import State
from wsconsole.harness.auth import issue_token, new_secret
from wsconsole.harness.broker import Broker
from wsconsole.harness.overload import DeliveryDelay

__all__ = ["broker", "module_procs"]

SECRET = new_secret()
LIMIT = 64 * 1024  # the node's send buffer per connection (--max-buffered)
ROOM = "flow"


@pytest.fixture(scope="module")
def node(broker: Broker, module_procs: ProcessRegistry) -> Iterator[NodeProc]:
    """One node with a small send buffer and no message rate limit."""
    yield start_node(module_procs, broker.url, "bp", "--max-buffered", str(LIMIT),
                     "--rate", "0", secret=SECRET)  # fmt: skip


@pytest.fixture(scope="module")
def busy_node(broker: Broker, module_procs: ProcessRegistry) -> Iterator[NodeProc]:
    """A node that refuses publishes while its deliveries run over 50 ms behind (the default
    is 0.5 s: a quicker test)."""
    yield start_node(module_procs, broker.url, "bz", "--max-delay", "0.05", "--rate", "0",
                     secret=SECRET)  # fmt: skip


async def metrics(node: NodeProc) -> dict[str, float]:
    """The node's /metrics samples by name (errors by `kind`), read off the loop."""
    _, text = await asyncio.to_thread(http_get, node.port, "/metrics")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kind = sample.labels.get("kind")
            samples[f"{sample.name}:{kind}" if kind else sample.name] = sample.value
    return samples


def peer(node: NodeProc, ledger: Ledger, name: str, **kwargs: object) -> Peer:
    """A protoclient Peer on `node`, subscribed to ROOM unless it publishes."""
    publishing = "publish_to" in kwargs
    return Peer(name, f"ws://127.0.0.1:{node.port}", issue_token(SECRET, name),
                [] if publishing else [ROOM], ledger, local_addr="127.0.0.1",
                **kwargs)  # type: ignore[arg-type]  # fmt: skip


async def test_a_stalled_subscriber_is_bounded_told_and_recovers_exactly(node: NodeProc) -> None:
    ledger = Ledger()
    fast = peer(node, ledger, "fast")
    slow = peer(node, ledger, "slow", keepalive=60.0)  # its own pings wait while it stalls
    publisher = peer(node, ledger, "pub", publish_to=ROOM, rate=400.0, padding=2048)
    peers = [fast, slow, publisher]
    try:
        fast.start()
        slow.start()
        await until(lambda: ROOM in fast.position and ROOM in slow.position, "both joined")
        slow.stall()
        publisher.start()
        await until(lambda: publisher.stats.published > 50, "publishing")
        for _ in range(int(100 * SCALE)):
            seen = await metrics(node)
            if seen.get("wsconsole_errors_total:lagging"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the stalled subscriber was never lagging: {seen}")
        await asyncio.sleep(0.5)  # still stuck, still published to: nothing more queues
        peak = (await metrics(node))["wsconsole_send_buffer_peak_bytes"]
        assert 0 < peak <= LIMIT + 16 * 1024, f"send buffer peaked at {peak} bytes"
        slow.resume()  # before the node's close timeout: it reads the notice, then the close
        await until(lambda: slow.stats.connects >= 2, "the lagging subscriber reconnected")
        publisher.stop_publishing()
        await until(lambda: not publisher.outbox, "every publish acknowledged")
        await until(lambda: ledger.judge().ok, "both subscribers caught up",
                    detail=lambda: ledger.judge().problems())  # fmt: skip
        verdict = ledger.judge()
        assert verdict.acknowledged == publisher.stats.published
        assert verdict.checked == 2 * verdict.acknowledged  # every message owed to both...
        assert verdict.covered == verdict.windows == verdict.resets == 0  # ...none excused
        assert not ledger.unexpected_errors
        assert slow.stats.lagging >= 1, "the notice came before the close"
        assert fast.stats.connects == 1, "the reader that kept up was not disturbed"
    finally:
        for p in peers:
            await p.close()


async def test_publishes_are_refused_while_deliveries_run_behind_never_half_done(
    busy_node: NodeProc,
) -> None:
    ledger = Ledger()
    readers = [peer(busy_node, ledger, f"reader{i}", keepalive=60.0) for i in range(3)]
    publisher = peer(busy_node, ledger, "busy-pub", publish_to=ROOM, rate=100.0)
    rec = Recorder()
    console = harness_client(busy_node.url, rec, token=issue_token(SECRET, "console"))
    try:
        for reader in readers:
            reader.start()
        await until(lambda: all(ROOM in r.position for r in readers), "the readers joined")
        publisher.start()  # the node's probe learns the readers' round trip...
        await until(lambda: publisher.stats.published > 30, "publishing")
        for reader in readers:  # ...then every recipient stops reading: deliveries fall behind
            reader.stall()
        await until(lambda: publisher.stats.errors["broker_busy"] > 0, "a publish refused",
                    timeout=10 * SCALE)  # fmt: skip
        url = f"{busy_node.url}/?token={issue_token(SECRET, 'raw')}"
        async with websockets.connect(url) as raw:  # what a publisher gets, on the wire
            await raw.send(json.dumps({"type": "publish", "room": ROOM, "id": "raw-1",
                                       "data": {"n": 0}}))  # fmt: skip
            reply = json.loads(await asyncio.wait_for(raw.recv(), 5 * SCALE))
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "broker_busy", "raw-1")
        assert reply["retry_after"] > 0
        await console.start()  # the product's client: it re-sends a refused publish itself
        await console.wait_state(State.OPEN, 10 * SCALE)
        ident = await console.publish(ROOM, {"from": "console"})
        await until(lambda: rec.errors().count("server") > 0, "the console's publish refused")
        for reader in readers:
            reader.resume()
        publisher.stop_publishing()
        await until(lambda: not publisher.outbox, "every publish acknowledged after re-sends")
        await until(lambda: any(e.kind == "ack" and e.id == ident
                                for e in rec.of(DeliveryEvent)), "the console's ack")  # fmt: skip
        sent = [t for t in rec.texts(Direction.OUT) if ident in t]
        assert len(sent) >= 2, "the refused publish was sent again with the same id"
        await until(lambda: ledger.judge().ok and ledger.judge().checked
                    == 3 * publisher.stats.published, "the readers caught up",
                    detail=lambda: ledger.judge().problems())  # fmt: skip
        verdict = ledger.judge()  # refused then re-sent: each delivered once, none half-done
        assert verdict.acknowledged == publisher.stats.published
        assert not ledger.unexpected_errors
        seen = await metrics(busy_node)
        assert seen["wsconsole_errors_total:broker_busy"] >= publisher.stats.errors["broker_busy"]
    finally:
        await console.stop()
        for p in [*readers, publisher]:
            await p.close()


def test_the_delay_refuses_only_when_behind_for_a_while() -> None:
    delay = DeliveryDelay(0.05, hold=0.05, probe_every=0.02)  # a sample is fresh for 0.19 s
    delay.record("inbound", 0.4, now=10.0)  # one late sample: the process was not scheduled
    delay.record("inbound", 0.01, now=10.01)
    delay.record("inbound", 0.4, now=10.04)
    assert not delay.busy(10.04)
    delay.record("downstream", 0.2, now=10.07)
    delay.record("downstream", 0.2, now=10.1)  # over 50 ms for the hold: busy
    assert delay.busy(10.1) and delay.retry_after == 0.4
    delay.record("downstream", 0.04, now=10.25)  # 40 ms is not under `low` (25 ms)
    assert delay.busy(10.25)
    assert not delay.busy(10.9), "no fresh sample: nothing to be behind on"
    delay.record("inbound", 0.3, now=11.0)
    delay.record("downstream", 0.01, now=11.03)
    delay.record("downstream", 0.01, now=11.1)  # the larger fresh sample counts
    assert delay.busy(11.1)
    delay.record("downstream", 0.01, now=11.3)  # the inbound one is stale: 10 ms
    assert not delay.busy(11.3)
    delay.record("inbound", 0.3, now=11.35)
    delay.record("inbound", 0.3, now=13.0)  # over again after a pause: a new run of samples
    assert not delay.busy(13.0)
