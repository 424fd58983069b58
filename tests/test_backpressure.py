"""Backpressure on a real node: a subscriber that stops reading costs the node a bounded send
buffer, is told it is `lagging` and closed 1013, and recovers every message from history,
judged by the independent client and ledger of tests/protoclient.py (docs/protocol.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.nodekit import NodeProc, broker, http_get, module_procs, start_node
from tests.protoclient import Ledger, Peer
from tests.support import SCALE, ProcessRegistry, until
from wsconsole.harness.auth import issue_token, new_secret
from wsconsole.harness.broker import Broker

__all__ = ["broker", "module_procs"]

SECRET = new_secret()
LIMIT = 64 * 1024  # the node's send buffer per connection (--max-buffered)
ROOM = "flow"


@pytest.fixture(scope="module")
def node(broker: Broker, module_procs: ProcessRegistry) -> Iterator[NodeProc]:
    """One node with a small send buffer and no message rate limit."""
    yield start_node(module_procs, broker.url, "bp", "--max-buffered", str(LIMIT),
                     "--rate", "0", secret=SECRET)  # fmt: skip


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
