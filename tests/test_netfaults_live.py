"""Every network fault through the real balancer process, against real websockets backends.

Each fault is switched on over the control channel, its effect measured from a real client, then
switched off and normal flow checked. Timing assertions are lower bounds caused by the fault
(safe on a loaded machine) or generous upper bounds scaled by MS.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import socket
import statistics
import time

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidMessage

from tests.balancerkit import (
    TIMEOUT,
    BalancerProc,
    local_backends,
    open_client,
    served_by,
    start_balancer,
)
from tests.support import MS, until
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.lifecycle import State, Transition
from wsconsole.harness.control import ControlError

__all__ = ["local_backends", "start_balancer"]


async def rtt(ws: ClientConnection, samples: int = 3) -> float:
    """Median WebSocket ping round trip, seconds."""
    times = []
    for _ in range(samples):
        waiter = await ws.ping()
        times.append(await asyncio.wait_for(waiter, TIMEOUT))
    return statistics.median(times)


async def echo_time(ws: ClientConnection, payload: bytes | str) -> float:
    """Seconds to send `payload` and get the identical echo back."""
    started = time.monotonic()
    await ws.send(payload)
    assert await asyncio.wait_for(ws.recv(), TIMEOUT * 3) == payload
    return time.monotonic() - started


async def no_message_within(ws: ClientConnection, seconds: float) -> bool:
    """True if nothing arrives on `ws` for `seconds`."""
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


async def two_backends(local_backends, start_balancer) -> tuple[dict, BalancerProc, dict]:
    """Two backends behind a balancer, plus a source address that lands on each."""
    backends = await local_backends(2)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    source_for: dict[str, str] = {}
    for n in range(10, 60):
        src = f"127.0.0.{n}"
        source_for.setdefault(await served_by(balancer.url, src), src)
        if len(source_for) == 2:
            break
    assert set(source_for) == {"n1", "n2"}
    return backends, balancer, source_for


async def test_latency_shows_in_rtt_only_on_its_target(local_backends, start_balancer):
    _, balancer, src = await two_backends(local_backends, start_balancer)
    ws1, _ = await open_client(balancer.url, src["n1"])
    ws2, _ = await open_client(balancer.url, src["n2"])
    baseline = await rtt(ws1)
    await balancer.fault("n1", "latency", ms=150)
    assert await rtt(ws1) >= 0.29  # 150 ms each way
    assert await rtt(ws2) < 0.15  # the other backend is untouched
    await balancer.fault("all", "latency", ms=100)
    assert await rtt(ws2) >= 0.19  # "all" reaches it now
    assert await rtt(ws1) >= 0.29  # n1's own fault overrides "all"
    await balancer.clear("all")
    await balancer.clear("n1", "latency")
    restored = await rtt(ws1)
    assert restored < 0.15, f"rtt {restored:.3f} s after clearing (baseline {baseline:.3f})"
    await ws1.close()
    await ws2.close()


async def test_latency_with_jitter_keeps_order(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    ws, _ = await open_client(balancer.url)
    await balancer.fault("all", "latency", ms=20, jitter_ms=80)
    samples = [await rtt(ws, samples=1) for _ in range(8)]
    assert min(samples) >= 0.039
    assert max(samples) - min(samples) > 0.01, f"no jitter seen in {samples}"
    messages = [f"m{n}" for n in range(60)]
    for message in messages:
        await ws.send(message)
    echoed = [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in messages]
    assert echoed == messages
    assert backends["n1"].received == messages
    await ws.close()


async def test_bandwidth_cap_limits_throughput(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    ws, _ = await open_client(balancer.url, max_size=None)
    payload = os.urandom(150_000)
    unshaped = await echo_time(ws, payload)
    await balancer.fault("n1", "bandwidth", bytes_per_s=100_000)
    shaped = await echo_time(ws, payload)
    # up must pass 150 kB at 100 kB/s before the echo can start: at least ~1.4 s
    assert shaped >= 1.35, f"capped echo took {shaped:.2f} s"
    await balancer.clear("n1", "bandwidth")
    after = await echo_time(ws, payload)
    assert after < shaped / 2, f"uncapped {unshaped:.2f} s, capped {shaped:.2f}, after {after:.2f}"
    await ws.close()


def raw_upgrade(port: int) -> socket.socket:
    """A WebSocket connection opened by hand through the balancer (101 read, hello skipped)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 101 "), received[:60]
    hello = received.partition(b"\r\n\r\n")[2]
    while len(hello) < 2 or len(hello) < 2 + hello[1]:  # a short unmasked text frame
        hello += sock.recv(4096)
    assert b'"backend"' in hello  # read it all: closing with unread data would send an RST
    return sock


async def test_reset_closes_open_connections_with_rst(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    ws, _ = await open_client(balancer.url)
    raw = await asyncio.to_thread(raw_upgrade, balancer.port)
    try:
        await balancer.stats_until(lambda s: s["n1"]["connections"] == 2)
        reply = await balancer.fault("n1", "reset")
        assert reply["faults"] == []  # one-shot: an action, not a lasting state
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1006  # no close frame: the TCP connection was reset

        def read_until_error() -> None:
            while sock_data := raw.recv(65536):
                del sock_data

        with pytest.raises(ConnectionResetError):
            await asyncio.to_thread(read_until_error)
    finally:
        raw.close()
    # one-shot: the client can reconnect straight away
    assert await served_by(balancer.url) == "n1"
    # persistent: every new connection is reset until cleared
    await balancer.fault("n1", "reset", persist=True)
    with pytest.raises((InvalidMessage, ConnectionClosed, OSError)):
        await served_by(balancer.url)
    await balancer.clear("n1", "reset")
    assert await served_by(balancer.url) == "n1"


async def test_blackhole_is_caught_by_liveness_and_clears(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    live, _ = await open_client(
        balancer.url, ping_interval=200 * MS, ping_timeout=300 * MS, close_timeout=300 * MS
    )
    quiet, _ = await open_client(balancer.url, ping_interval=None)
    await balancer.fault("all", "blackhole")
    await quiet.send("held")
    # the pinging client notices the silence by itself
    started = time.monotonic()
    await asyncio.wait_for(live.wait_closed(), TIMEOUT)
    assert time.monotonic() - started >= 0.2
    assert live.close_code in (None, 1006, 1011)
    # a new connection is accepted but its handshake never completes
    with pytest.raises(TimeoutError):
        await open_client(balancer.url, open_timeout=500 * MS)
    assert await no_message_within(quiet, 300 * MS)
    assert "held" not in backends["n1"].received
    await balancer.clear("all", "blackhole")
    # held bytes flow again, in order, and the connection lives on
    assert await asyncio.wait_for(quiet.recv(), TIMEOUT) == "held"
    assert await echo_time(quiet, "after") < 2.0
    assert await served_by(balancer.url) == "n1"
    await quiet.close()


async def test_blackholed_connection_ends_when_both_peers_leave(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    raw = await asyncio.to_thread(raw_upgrade, balancer.port)
    await balancer.stats_until(lambda s: s["n1"]["connections"] == 1)
    await balancer.fault("n1", "blackhole")
    raw.close()  # the client leaves: its FIN is held like any other byte
    await asyncio.sleep(300 * MS)  # an observation window: the held FIN must not end it
    assert balancer.stats[-1]["backends"]["n1"]["connections"] == 1  # the backend is still there
    await backends["n1"].stop()  # now the backend leaves too: nothing can flow any more
    await balancer.stats_until(lambda s: s["n1"]["connections"] == 0)
    assert balancer.stats[-1]["faults"] == [{"target": "n1", "kind": "blackhole"}]


async def test_slice_still_delivers_intact_messages(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    ws, _ = await open_client(balancer.url)
    await balancer.fault("n1", "slice", size=16, delay_ms=2)
    text = secrets.token_hex(1000)  # 2000 characters: 126 pieces each way
    elapsed = await echo_time(ws, text)
    assert elapsed >= 2 * 120 * 0.002, f"sliced echo took only {elapsed:.3f} s"
    for n in range(5):
        assert await echo_time(ws, f"small {n}") < TIMEOUT
    await balancer.clear("n1")
    assert await echo_time(ws, text) < elapsed
    await ws.close()


async def test_half_open_up_stalls_only_client_to_backend(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    ws, _ = await open_client(balancer.url)
    await ws.send("ticks:200:20")
    assert (await asyncio.wait_for(ws.recv(), TIMEOUT)).startswith("tick")
    await balancer.fault("n1", "half_open", direction="up")
    await ws.send("probe-up")
    ticks = []
    deadline = time.monotonic() + 500 * MS
    while time.monotonic() < deadline:
        message = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert message != "probe-up", "the stalled direction leaked"
        ticks.append(message)
    assert len(ticks) >= 5, "down direction must keep flowing"
    assert "probe-up" not in backends["n1"].received
    await balancer.clear("n1", "half_open")
    while (message := await asyncio.wait_for(ws.recv(), TIMEOUT)) != "probe-up":
        assert message.startswith("tick")
    assert backends["n1"].received == ["probe-up"]
    await ws.close()


async def test_half_open_down_stalls_only_backend_to_client(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    ws, _ = await open_client(balancer.url)
    await balancer.fault("n1", "half_open", direction="down")
    await ws.send("probe-down")
    await until(lambda: "probe-down" in backends["n1"].received, "up still flowing")
    assert await no_message_within(ws, 300 * MS)  # the echo is held
    await balancer.clear("n1")
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "probe-down"
    await ws.close()


async def test_fault_requests_are_validated(local_backends, start_balancer):
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    for kind, params in [
        ("bandwidth", {"bytes_per_s": 0}),
        ("slice", {"size": 0}),
        ("slice", {"size": 1.5}),
        ("latency", {"ms": "200ms"}),
        ("reset", {"persist": "yes"}),
    ]:
        with pytest.raises(ControlError, match="refused"):
            await balancer.fault("n1", kind, **params)
    reply = await balancer.fault("all", "slice", size=4)
    await balancer.fault("n1", "latency", ms=1, jitter_ms=1)
    listing = (await balancer.request("stats"))["faults"]
    assert {(f["target"], f["kind"]) for f in listing} == {("all", "slice"), ("n1", "latency")}
    assert reply["faults"] == [{"target": "all", "kind": "slice", "size": 4, "delay_ms": 0.0}]
    assert (await balancer.clear("n1"))["removed"] == 1
    assert (await balancer.clear("all"))["faults"] == []


async def test_project_client_reconnects_after_reset_and_catches_a_blackhole(
    local_backends, start_balancer
):
    """The console's own ReconnectingClient through the faulted balancer (issue 5's proofs)."""
    backends = await local_backends(1)
    balancer = await start_balancer({b.id: b.port for b in backends.values()})
    options = ClientOptions(
        url=balancer.url,
        backoff=BackoffPolicy(initial=0.1, cap=0.5, jitter=0.05),
        ping_interval=300 * MS,
        ping_timeout=300 * MS,
        close_timeout=300 * MS,
        connect_timeout=1000 * MS,
        compression=False,
    )
    client = ReconnectingClient(options, name="through-balancer")
    seen: list[Transition] = []
    client.subscribe(lambda event: seen.append(event) if isinstance(event, Transition) else None)

    async def next_state(state: State, after: int) -> int:
        """The index of the first transition to `state` after `after`, once there is one."""

        def first() -> int | None:
            return next((i for i in range(after, len(seen)) if seen[i].state is state), None)

        await until(
            lambda: first() is not None,
            f"{state.value} after transition {after}",
            detail=lambda: [t.state.value for t in seen[after:]],
        )
        return first()  # type: ignore[return-value]

    await client.start()
    try:
        opened = await next_state(State.OPEN, 0)
        await balancer.fault("n1", "reset")
        dropped = await next_state(State.RECONNECTING, opened)
        reopened = await next_state(State.OPEN, dropped)
        assert seen[dropped].previous in (State.OPEN, State.CLOSING)

        await balancer.fault("n1", "blackhole")
        started = time.monotonic()
        lost = await next_state(State.RECONNECTING, reopened)
        assert time.monotonic() - started >= 0.3  # noticed by its own liveness check, not a close
        assert await balancer.stats_until(lambda b: b["n1"]["total"] >= 3)
        await balancer.clear("n1")
        await next_state(State.OPEN, lost)
    finally:
        await client.stop()
